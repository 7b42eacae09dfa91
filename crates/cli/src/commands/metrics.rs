//! `wasi-observe metrics`: the current value of every metric series.

use clap::Parser;
use wasi_observe_store::MetricFilter;
use wasmtime::Result;

use crate::common::{DbOptions, store_err};
use crate::view::{OutputOptions, Style, attributes, cut, printable, timestamp};

/// Show the current value of each instrument, per service and attributes.
#[derive(Parser)]
pub struct MetricsCommand {
    /// Only this instrument.
    #[arg(long)]
    name: Option<String>,

    /// Only this service.
    #[arg(long)]
    service: Option<String>,

    #[command(flatten)]
    db: DbOptions,

    #[command(flatten)]
    output: OutputOptions,
}

impl MetricsCommand {
    /// Prints the values.
    pub fn execute(self) -> Result<()> {
        let store = self.db.open()?;
        let points = store
            .metrics(&MetricFilter {
                name: self.name,
                service: self.service,
                since_ns: None,
            })
            .map_err(store_err)?;
        if self.output.json {
            return self.output.print_json(&points);
        }
        if points.is_empty() {
            println!("no metrics match (store: {})", store.path().display());
            return Ok(());
        }
        let st = Style::detect();
        println!(
            "{}",
            st.bold(&format!(
                "{:<24}  {:<13}  {:<16}  {:<23}  {:<28}  VALUE",
                "NAME", "KIND", "SERVICE", "UPDATED (UTC)", "ATTRIBUTES"
            ))
        );
        for p in &points {
            let unit = if p.unit.is_empty() {
                String::new()
            } else {
                format!(" {}", printable(&p.unit))
            };
            let value = match p.count {
                Some(count) => {
                    let mut v = format!("count={count} sum={}{unit}", p.value);
                    if let (Some(min), Some(max)) = (p.min, p.max) {
                        v.push_str(&format!(" min={min} max={max}"));
                    }
                    v
                }
                None => format!("{}{unit}", p.value),
            };
            let attrs = attributes(&p.attributes);
            println!(
                "{}  {:<13}  {:<16}  {:<23}  {:<28}  {}",
                st.cyan(&format!("{:<24}", cut(&printable(&p.name), 24))),
                printable(&p.kind),
                cut(&printable(&p.service), 16),
                timestamp(p.time_ns),
                cut(if attrs.is_empty() { "-" } else { &attrs }, 28),
                st.bold(&value)
            );
        }
        Ok(())
    }
}

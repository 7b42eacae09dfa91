//! `wasi-observe traces`: the most recent traces in the store.

use clap::Parser;
use wasi_observe_store::TraceFilter;
use wasmtime::Result;

use crate::common::{DbOptions, store_err};
use crate::view::{
    OutputOptions, Style, cut, duration, parse_duration, plural, printable, short_id, timestamp,
};

/// List recent traces: root span, service, start, duration, spans, errors.
#[derive(Parser)]
pub struct TracesCommand {
    /// Only traces of this service.
    #[arg(long)]
    service: Option<String>,

    /// Only traces with a span of exactly this name.
    #[arg(long, value_name = "SPAN")]
    name: Option<String>,

    /// Only traces whose root name contains TEXT, or whose id starts with it.
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,

    /// Only traces lasting at least this long (`10ms`, `2s`, ...).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    min_duration: Option<i64>,

    /// Only traces with a span whose status is error.
    #[arg(long)]
    errors: bool,

    /// Slowest first instead of newest first.
    #[arg(long)]
    slowest: bool,

    /// How many to show.
    #[arg(long, short = 'n', default_value_t = 20)]
    limit: usize,

    #[command(flatten)]
    db: DbOptions,

    #[command(flatten)]
    output: OutputOptions,
}

impl TracesCommand {
    /// Prints the list.
    pub fn execute(self) -> Result<()> {
        let store = self.db.open()?;
        let traces = store
            .traces(&TraceFilter {
                service: self.service,
                span_name: self.name,
                search: self.search,
                min_duration_ns: self.min_duration,
                errors_only: self.errors,
                slowest_first: self.slowest,
                limit: Some(self.limit),
                ..Default::default()
            })
            .map_err(store_err)?;
        if self.output.json {
            return self.output.print_json(&traces);
        }
        if traces.is_empty() {
            println!("no traces match (store: {})", store.path().display());
            return Ok(());
        }
        let st = Style::detect();
        println!(
            "{}",
            st.bold(&format!(
                "{:<12}  {:<23}  {:>9}  {:>5}  {:>6}  {:<16}  ROOT",
                "TRACE", "START (UTC)", "DURATION", "SPANS", "ERRORS", "SERVICE"
            ))
        );
        for t in &traces {
            let errors = format!("{:>6}", t.error_count);
            println!(
                "{}  {:<23}  {:>9}  {:>5}  {}  {:<16}  {}",
                st.cyan(&format!("{:<12}", short_id(&t.trace_id))),
                timestamp(t.start_ns),
                duration(t.duration_ns),
                t.span_count,
                if t.error_count > 0 {
                    st.red(&errors)
                } else {
                    st.dim(&errors)
                },
                cut(&printable(&t.service), 16),
                printable(&t.root_name)
            );
        }
        println!(
            "{}",
            st.dim(&format!(
                "{}; details: wasi-observe trace <TRACE>{}",
                plural(traces.len(), "trace"),
                self.db.flag()
            ))
        );
        Ok(())
    }
}

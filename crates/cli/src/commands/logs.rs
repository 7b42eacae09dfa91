//! `wasi-observe logs`: log records in the store.

use clap::Parser;
use wasi_observe_store::LogFilter;
use wasmtime::Result;

use crate::common::{DbOptions, store_err};
use crate::view::{OutputOptions, Style, cut, message, printable, short_id, timestamp};

/// List log records, oldest first (the most recent that match).
#[derive(Parser)]
pub struct LogsCommand {
    /// At least this level: trace, debug, info, warn, error, critical.
    #[arg(long, value_parser = parse_level)]
    level: Option<i32>,

    /// Only records of this service.
    #[arg(long)]
    service: Option<String>,

    /// Only records emitted in this trace (an id or a prefix of one).
    #[arg(long, value_name = "TRACE")]
    trace: Option<String>,

    /// Only records whose message contains TEXT.
    #[arg(long, value_name = "TEXT")]
    search: Option<String>,

    /// How many to show.
    #[arg(long, short = 'n', default_value_t = 100)]
    limit: usize,

    #[command(flatten)]
    db: DbOptions,

    #[command(flatten)]
    output: OutputOptions,
}

/// A level name to the lowest OpenTelemetry severity number of that level.
pub fn parse_level(s: &str) -> Result<i32, String> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "trace" => 1,
        "debug" => 5,
        "info" => 9,
        "warn" | "warning" => 13,
        "error" => 17,
        "critical" | "fatal" => 21,
        other => {
            return Err(format!(
                "unknown level `{other}` (trace, debug, info, warn, error, critical)"
            ));
        }
    })
}

impl LogsCommand {
    /// Prints the records.
    pub fn execute(self) -> Result<()> {
        let store = self.db.open()?;
        let trace_id =
            match &self.trace {
                Some(id) => Some(store.resolve_trace_id(id).map_err(store_err)?.ok_or_else(
                    || wasmtime::Error::msg(format!("no trace `{id}` in the store")),
                )?),
                None => None,
            };
        let logs = store
            .logs(&LogFilter {
                min_severity: self.level,
                service: self.service,
                trace_id,
                search: self.search,
                limit: Some(self.limit),
                ..Default::default()
            })
            .map_err(store_err)?;
        if self.output.json {
            return self.output.print_json(&logs);
        }
        if logs.is_empty() {
            println!("no log records match (store: {})", store.path().display());
            return Ok(());
        }
        let st = Style::detect();
        for l in &logs {
            let trace = l
                .trace_id
                .as_deref()
                .map(|t| format!(" trace={}", short_id(t)))
                .unwrap_or_default();
            println!(
                "{} {} {} {} {}{}",
                st.dim(&timestamp(l.time_ns)),
                st.severity(l.severity_number, &printable(&l.severity_text)),
                cut(&printable(&l.service), 16),
                st.dim(&format!("[{}]", printable(&l.target))),
                message(&st, &l.body, &l.attributes),
                st.dim(&trace)
            );
        }
        Ok(())
    }
}

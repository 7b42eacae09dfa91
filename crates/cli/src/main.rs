//! The `wasi-observe` command: run WebAssembly components and ship the spans,
//! logs and metrics they emit to OpenTelemetry backends.

use clap::Parser;

mod alloc;
mod commands;
mod common;
mod view;

// glibc's allocator serialises the guest's thread, which allocates telemetry,
// and the export threads, which free it: a span cost several times more
// with it (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run WebAssembly components with WASI Observe: their spans, logs and
/// metrics go to OTLP, the console, a file, or the embedded telemetry store
/// (the default when no OTLP endpoint is set), which `traces`, `trace`,
/// `logs`, `metrics` and `ui` show.
///
/// Exporters follow the OpenTelemetry environment variables
/// (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_EXPORTER, OTEL_SERVICE_NAME, ...).
#[derive(Parser)]
#[command(name = "wasi-observe", version, about, long_about)]
enum WasiObserve {
    Run(commands::run::RunCommand),
    Serve(commands::serve::ServeCommand),
    Instrument(commands::instrument::InstrumentCommand),
    Traces(commands::traces::TracesCommand),
    Trace(commands::trace::TraceCommand),
    Logs(commands::logs::LogsCommand),
    Metrics(commands::metrics::MetricsCommand),
    Ui(commands::ui::UiCommand),
}

fn main() -> wasmtime::Result<()> {
    alloc::tune();
    match WasiObserve::parse() {
        WasiObserve::Run(cmd) => cmd.execute(),
        WasiObserve::Serve(cmd) => cmd.execute(),
        WasiObserve::Instrument(cmd) => cmd.execute(),
        WasiObserve::Traces(cmd) => cmd.execute(),
        WasiObserve::Trace(cmd) => cmd.execute(),
        WasiObserve::Logs(cmd) => cmd.execute(),
        WasiObserve::Metrics(cmd) => cmd.execute(),
        WasiObserve::Ui(cmd) => cmd.execute(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn verify_cli() {
        use clap::CommandFactory;
        super::WasiObserve::command().debug_assert();
    }
}

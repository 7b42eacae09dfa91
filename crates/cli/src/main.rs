//! The `wasi-observe` command: run WebAssembly components and ship the spans,
//! logs and metrics they emit to OpenTelemetry backends.

use clap::Parser;

mod commands;
mod common;

// glibc's allocator serialises the guest's thread, which allocates telemetry,
// and the export threads, which free it: a span cost several times more
// with it (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run WebAssembly components with WASI Observe: their spans, logs and
/// metrics go to OTLP, the console, or a file.
///
/// Exporters follow the OpenTelemetry environment variables
/// (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_EXPORTER, OTEL_SERVICE_NAME, ...).
#[derive(Parser)]
#[command(name = "wasi-observe", version, about, long_about)]
enum WasiObserve {
    Run(commands::run::RunCommand),
}

fn main() -> wasmtime::Result<()> {
    match WasiObserve::parse() {
        WasiObserve::Run(cmd) => cmd.execute(),
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

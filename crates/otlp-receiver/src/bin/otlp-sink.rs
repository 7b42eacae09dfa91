//! `otlp-sink [PORT]`: the OTLP/HTTP receiver as a process, for benchmarks
//! (`scripts/bench-serve.sh`) that need a local collector both servers
//! export to. It decodes every export, as a collector would, but keeps only
//! counts; on SIGINT or SIGTERM it prints how many spans and log records
//! arrived, so a benchmark can tell delivered from dropped.

use otlp_receiver::{OtlpHttpReceiver, ReceiverOptions};
use tokio::signal::unix::{SignalKind, signal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = match std::env::args().nth(1) {
        Some(p) => p.parse()?,
        None => 4318,
    };
    let receiver = OtlpHttpReceiver::try_start_on(port, ReceiverOptions::new().count_only())?;
    eprintln!("otlp-sink: listening on {}", receiver.endpoint());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut sigint = signal(SignalKind::interrupt())?;
            let mut sigterm = signal(SignalKind::terminate())?;
            tokio::select! {
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
            Ok::<_, std::io::Error>(())
        })?;
    println!(
        "{} spans, {} log records",
        receiver.span_count(),
        receiver.log_count()
    );
    Ok(())
}

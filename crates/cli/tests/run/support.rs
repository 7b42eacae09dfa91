//! What the subjects share: the CLI in a clean environment, running it,
//! and looking at what it delivered.

use std::collections::HashMap;
use std::process::{Command, Output};
use std::time::Duration;

use otlp_receiver::{FlatSpan, OtlpHttpReceiver};

pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// The CLI with a clean OpenTelemetry environment (the test runner's own
/// `OTEL_*` variables must not leak in), and a telemetry store in a
/// temporary directory (never the user's).
pub(crate) fn cli() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasi-observe"));
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k.starts_with("WASI_OBSERVE_") {
            cmd.env_remove(k);
        }
    }
    let dir = std::env::temp_dir().join(format!("wasi-observe-run-tests-{}", std::process::id()));
    cmd.env("WASI_OBSERVE_DB", dir.join("telemetry.db"))
        .env("XDG_DATA_HOME", &dir);
    cmd
}

/// The CLI exporting OTLP/HTTP (protobuf) to `receiver`, configured only by
/// the standard variables.
pub(crate) fn cli_http(receiver: &OtlpHttpReceiver) -> Command {
    let mut cmd = cli();
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    cmd
}

pub(crate) fn run(mut cmd: Command, args: &[&str]) -> Output {
    let out = cmd
        .arg("run")
        .args(args)
        .output()
        .expect("running wasi-observe");
    eprintln!("stdout: {}", String::from_utf8_lossy(&out.stdout));
    eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    out
}

pub(crate) fn by_name(spans: &[FlatSpan]) -> HashMap<&str, &FlatSpan> {
    spans.iter().map(|s| (s.name.as_str(), s)).collect()
}

pub(crate) fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wasi-observe-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

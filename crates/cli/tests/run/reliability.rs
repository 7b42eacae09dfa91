//! Reliability (docs/reliability.md): exit paths, collector outages, overload.

use std::process::Command;
use std::time::Duration;

use otlp_receiver::{AnyValueExt, OtlpHttpReceiver, SpanStatusCode};
use test_programs_artifacts::*;

use crate::support::*;

/// The value of the last export of the sum metric `name`, all points added.
fn last_sum(receiver: &OtlpHttpReceiver, name: &str) -> Option<f64> {
    let metrics = receiver.metrics();
    let m = metrics.iter().rev().find(|m| m.name == name)?;
    Some(m.number_values().iter().map(|(_, v)| v).sum())
}

/// The host's `wasi_observe.dropped` self-metric for `signal` and `reason`.
fn self_metric(receiver: &OtlpHttpReceiver, signal: &str, reason: &str) -> f64 {
    let metrics = receiver.metrics();
    let Some(m) = metrics
        .iter()
        .rev()
        .find(|m| m.name == "wasi_observe.dropped")
    else {
        return 0.0;
    };
    assert_eq!(m.scope_name, "wasi-observe.host");
    m.number_values()
        .iter()
        .filter(|(a, _)| {
            a.get("signal").and_then(|v| v.as_str()) == Some(signal)
                && a.get("reason").and_then(|v| v.as_str()) == Some(reason)
        })
        .map(|(_, v)| v)
        .sum()
}

/// `name=N` from the loss line the CLI prints at exit (0 when absent).
fn loss(stderr: &str, name: &str) -> u64 {
    stderr
        .lines()
        .filter(|l| l.contains("telemetry was dropped or cut"))
        .flat_map(|l| l.split([':', ',']))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .sum()
}

/// Everything the exit_paths guest emitted before it ended arrived: N spans
/// and the span it left open, N log records, and a counter at N.
fn assert_exit_paths_delivered(receiver: &OtlpHttpReceiver, n: usize, reason: &str) {
    let spans = receiver.wait_for_spans(n + 1, WAIT);
    assert_eq!(spans.len(), n + 1, "{spans:#?}");
    let open = spans
        .iter()
        .find(|s| s.name == "open")
        .expect("the open span");
    assert_eq!(open.status.code, SpanStatusCode::Error);
    assert!(open.status.message.contains(reason), "{:?}", open.status);
    for i in 0..n {
        assert!(
            spans.iter().any(|s| s.name == format!("span-{i}")),
            "span-{i}"
        );
    }
    assert_eq!(receiver.wait_for_logs(n, WAIT).len(), n);
    assert!(receiver.wait_for_metric("exit_paths.items", WAIT).is_some());
    assert_eq!(last_sum(receiver, "exit_paths.items"), Some(n as f64));
}

#[test]
fn exit_paths_return_exit_and_trap_deliver_everything_emitted() {
    for (how, code, reason) in [
        ("return", 0, "the guest returned"),
        ("exit", 1, "the guest exited with code 1"),
        ("trap", 134, "the guest trapped"),
    ] {
        let receiver = OtlpHttpReceiver::start();
        let out = run(cli_http(&receiver), &[EXIT_PATHS_COMPONENT, "25", how]);
        assert_eq!(out.status.code(), Some(code), "{how}");
        assert_exit_paths_delivered(&receiver, 25, reason);
    }
}

/// The exit_paths guest running in `spin` mode under the CLI, after it
/// emitted its items.
struct Spinning(std::process::Child);

impl Spinning {
    /// Runs `run [extra] exit_paths n spin` and waits until the guest spins.
    fn start(mut cmd: Command, extra: &[&str], n: usize) -> Spinning {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;

        let mut child = cmd
            .arg("run")
            .args(extra)
            .args([EXIT_PATHS_COMPONENT, &n.to_string(), "spin"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("spinning") {
            line.clear();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "the guest ended early"
            );
        }
        Spinning(child)
    }

    /// Sends `signal` (`-INT`, `-TERM`) to the CLI.
    fn signal(&self, signal: &str) {
        let kill = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
    }

    /// Waits for the CLI to exit: its exit code and standard error.
    fn wait(mut self) -> (Option<i32>, String) {
        use std::io::Read;
        let status = self.0.wait().unwrap();
        let mut stderr = String::new();
        self.0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        eprintln!("stderr: {stderr}");
        (status.code(), stderr)
    }
}

/// Runs the exit_paths guest in `spin` mode with `extra` options, then sends
/// `signal` (if any); returns the exit code and standard error.
fn spin_and_stop(
    receiver: &OtlpHttpReceiver,
    extra: &[&str],
    signal: Option<&str>,
) -> (Option<i32>, String) {
    let spinning = Spinning::start(cli_http(receiver), extra, 25);
    if let Some(signal) = signal {
        spinning.signal(signal);
    }
    spinning.wait()
}

#[test]
fn sigint_and_sigterm_are_told_apart_and_deliver_everything_emitted() {
    for (signal, code, name) in [("-INT", 130, "SIGINT"), ("-TERM", 143, "SIGTERM")] {
        let receiver = OtlpHttpReceiver::start();
        let (status, stderr) = spin_and_stop(&receiver, &[], Some(signal));
        assert_eq!(status, Some(code), "{signal}");
        assert!(
            stderr.contains(&format!("interrupted by {name}")),
            "{stderr}"
        );
        assert_exit_paths_delivered(&receiver, 25, &format!("interrupted by {name}"));
    }
}

#[test]
fn timeout_stops_the_guest_with_124_and_delivers_everything_emitted() {
    let receiver = OtlpHttpReceiver::start();
    let (status, stderr) = spin_and_stop(&receiver, &["--timeout", "1s"], None);
    assert_eq!(status, Some(124));
    assert!(stderr.contains("stopped by --timeout 1s"), "{stderr}");
    assert_exit_paths_delivered(&receiver, 25, "stopped by --timeout");
}

#[test]
fn fuel_exhaustion_stops_the_guest_with_124_and_delivers_everything_emitted() {
    let receiver = OtlpHttpReceiver::start();
    let (status, stderr) = spin_and_stop(&receiver, &["--fuel", "200000000"], None);
    assert_eq!(status, Some(124));
    assert!(stderr.contains("ran out of fuel"), "{stderr}");
    assert_exit_paths_delivered(&receiver, 25, "ran out of fuel");
}

/// How long the collector stays down in the outage tests: 3 s by default,
/// `WASI_OBSERVE_TEST_OUTAGE_SECS` for the 30 s run of docs/reliability.md.
fn outage() -> Duration {
    Duration::from_secs(
        std::env::var("WASI_OBSERVE_TEST_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3),
    )
}

/// Runs the exit_paths guest (`n` items, then spinning) against an endpoint
/// where nothing listens, starts the receiver there after the outage, waits
/// until `done` says the receiver has what it should, then stops the guest
/// with SIGTERM. Returns the receiver and the CLI's standard error.
fn through_an_outage(
    n: usize,
    envs: &[(&str, &str)],
    done: impl Fn(&OtlpHttpReceiver) -> bool,
) -> (OtlpHttpReceiver, String) {
    let port = OtlpHttpReceiver::free_port().unwrap();
    let mut cmd = cli();
    cmd.env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{port}"),
    )
    .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    .env("OTEL_BSP_SCHEDULE_DELAY", "200")
    .env("OTEL_BLRP_SCHEDULE_DELAY", "200")
    .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
    .envs(envs.iter().copied());
    let spinning = Spinning::start(cmd, &[], n);
    std::thread::sleep(outage());
    let receiver = OtlpHttpReceiver::try_start_on(port, otlp_receiver::ReceiverOptions::new())
        .expect("the port is still free");
    // Backoff is at most 5 s: everything buffered arrives well within this.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done(&receiver) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(done(&receiver), "not delivered after the outage");
    spinning.signal("-TERM");
    let (code, stderr) = spinning.wait();
    assert_eq!(code, Some(143));
    (receiver, stderr)
}

/// Ctrl-C while exit retries a collector that is down ends the retries
/// (here they would last a minute): `run` exits, and what it gave up is
/// counted and reported.
#[test]
fn ctrl_c_at_exit_ends_the_export_retries_and_reports_the_loss() {
    use std::io::BufRead as _;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut child = cli()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("WASI_OBSERVE_EXIT_RETRY_MS", "60000")
        .args(["run", "--exporter", "otlp", TRACER_FEATURES_COMPONENT])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    // The guest is done and exit retries: exporting failed once.
    let mut seen = Vec::new();
    for line in stderr.by_ref() {
        let line = line.unwrap();
        let retrying = line.contains("retrying with backoff");
        seen.push(line);
        if retrying {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.contains("retrying")),
        "{seen:?}"
    );
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "run kept retrying");
        std::thread::sleep(Duration::from_millis(50));
    };
    seen.extend(stderr.map(Result::unwrap));
    let text = seen.join("\n");
    assert!(status.success(), "the guest's own exit code: {text}");
    assert!(
        text.contains("SIGINT at exit: no more export retries"),
        "{text}"
    );
    assert!(loss(&text, "spans_export_failed") > 0, "{text}");
}

#[test]
fn telemetry_emitted_while_the_collector_is_down_arrives_when_it_is_back() {
    let n = 300;
    let (receiver, stderr) =
        through_an_outage(n, &[], |r| r.span_count() >= n && r.log_count() >= n);
    // Delivered while the guest was still running, from the retry buffer.
    assert_exit_paths_delivered(&receiver, n, "interrupted by SIGTERM");
    assert!(
        stderr.contains("exporting spans failed") && stderr.contains("retrying"),
        "{stderr}"
    );
    assert!(stderr.contains("exporting spans works again"), "{stderr}");
    assert!(!stderr.contains("dropped or cut"), "nothing lost: {stderr}");
}

#[test]
fn a_retry_buffer_too_small_drops_the_oldest_and_counts_them() {
    let n = 400;
    let (receiver, stderr) = through_an_outage(
        n,
        &[
            ("WASI_OBSERVE_RETRY_BUFFER", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "50"),
            ("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "50"),
        ],
        // The newest spans arrive; the span left open comes at exit.
        |r| r.span_count() >= 100 && r.log_count() >= 100,
    );
    assert!(
        stderr.contains("retry buffer (100 items) is full"),
        "{stderr}"
    );
    let spans = receiver.spans();
    let dropped = loss(&stderr, "spans_dropped_retry_buffer");
    assert!(dropped >= (n - 100) as u64, "{stderr}");
    // Delivered + dropped == emitted (n spans and the open one).
    assert_eq!(spans.len() as u64 + dropped, n as u64 + 1, "{stderr}");
    let logs_dropped = loss(&stderr, "logs_dropped_retry_buffer");
    assert_eq!(receiver.logs().len() as u64 + logs_dropped, n as u64);
    // The newest survived, the oldest went.
    assert!(spans.iter().any(|s| s.name == format!("span-{}", n - 1)));
    assert!(!spans.iter().any(|s| s.name == "span-0"));
    // The self-metric says the same, per signal and reason.
    assert_eq!(
        self_metric(&receiver, "traces", "retry_buffer_full"),
        dropped as f64
    );
    assert_eq!(
        self_metric(&receiver, "logs", "retry_buffer_full"),
        logs_dropped as f64
    );
}

/// Peak resident memory of a process, from /proc (0 where unavailable).
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs the flood guest for `ms` milliseconds against a receiver that takes
/// `delay` to answer each export, and checks that every span, log record and
/// measurement it emitted was delivered or counted as dropped. Returns the
/// peak RSS (KiB), and emitted, delivered and dropped per signal.
fn flood(
    ms: u64,
    delay: Duration,
    max_block_ms: Option<u64>,
) -> (u64, [u64; 3], [u64; 3], [u64; 3]) {
    use std::io::Read;
    use std::process::Stdio;

    let receiver = OtlpHttpReceiver::start_with(
        otlp_receiver::ReceiverOptions::new()
            .count_only()
            .delay(delay),
    );
    let mut cmd = cli_http(&receiver);
    if let Some(block) = max_block_ms {
        cmd.env("WASI_OBSERVE_MAX_BLOCK_MS", block.to_string());
    }
    let mut child = cmd
        .env("OTEL_METRIC_EXPORT_INTERVAL", "1000")
        .args(["run", FLOOD_COMPONENT, &ms.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        peak = peak.max(peak_rss_kib(pid));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    eprintln!("stdout: {stdout}\nstderr: {stderr}");
    assert!(status.success());
    let emitted: Vec<u64> = stdout
        .trim()
        .strip_prefix("emitted ")
        .unwrap()
        .split(' ')
        .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    let delivered = [
        receiver.span_count() as u64,
        receiver.log_count() as u64,
        last_sum(&receiver, "flood.items").unwrap_or(0.0) as u64,
    ];
    let dropped = [
        loss(&stderr, "spans_dropped_queue_full")
            + loss(&stderr, "spans_dropped_retry_buffer")
            + loss(&stderr, "spans_export_failed"),
        loss(&stderr, "logs_dropped_queue_full")
            + loss(&stderr, "logs_dropped_retry_buffer")
            + loss(&stderr, "logs_export_failed"),
        loss(&stderr, "measurements_dropped"),
    ];
    let emitted = [emitted[0], emitted[1], emitted[2]];
    eprintln!(
        "flood {ms} ms, exports answered after {delay:?}: peak RSS {} MiB; \
         emitted {emitted:?}, delivered {delivered:?}, dropped {dropped:?} \
         (spans, logs, measurements)",
        peak / 1024
    );
    for i in 0..3 {
        assert_eq!(delivered[i] + dropped[i], emitted[i], "signal {i}");
    }
    (peak, emitted, delivered, dropped)
}

#[test]
fn a_flooding_guest_is_fully_accounted_for_in_bounded_memory() {
    // A collector slower than the guest, and no waiting for room (as the
    // OpenTelemetry SDKs do): the queues fill, and items are shed and counted.
    // (With the default WASI_OBSERVE_MAX_BLOCK_MS, each call waits for room
    // instead, up to that bound, which paces the guest to the collector.)
    let (peak_kib, emitted, _, dropped) = flood(3000, Duration::from_millis(100), Some(0));
    assert!(emitted.iter().all(|&n| n > 0));
    assert!(dropped[0] > 0 && dropped[1] > 0, "the exporter kept up");
    // Queues and retry buffers are bounded; the host stays far below this.
    assert!(peak_kib < 1024 * 1024, "peak RSS {peak_kib} KiB");
}

/// The 60 s overload runs of docs/reliability.md:
/// `cargo test -p wasi-observe-cli --test run -- --ignored --nocapture flood_for_a_minute`;
/// `WASI_OBSERVE_FLOOD_MS` sets the duration, `WASI_OBSERVE_FLOOD_DELAY_MS`
/// how long the receiver takes to answer each export (default 0), and
/// `WASI_OBSERVE_FLOOD_MAX_BLOCK_MS` the host's `WASI_OBSERVE_MAX_BLOCK_MS`.
#[test]
#[ignore]
fn flood_for_a_minute() {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let delay = Duration::from_millis(var("WASI_OBSERVE_FLOOD_DELAY_MS", 0));
    let block = std::env::var("WASI_OBSERVE_FLOOD_MAX_BLOCK_MS")
        .ok()
        .and_then(|v| v.parse().ok());
    let (peak_kib, ..) = flood(var("WASI_OBSERVE_FLOOD_MS", 60_000), delay, block);
    assert!(peak_kib < 1024 * 1024, "peak RSS {peak_kib} KiB");
}

/// A guest that grows its memory past `--max-memory` (or
/// `WASI_OBSERVE_MAX_MEMORY`, or the 256 MiB default) is refused the growth;
/// the Rust guest traps on it, and the run ends as a trap that says which
/// limit it reached, its open span closed with that reason and everything
/// it emitted delivered.
#[test]
fn a_guest_growing_past_max_memory_traps_with_a_clear_message() {
    for (flag, env, named) in [
        (Some("32MiB"), None, "--max-memory 32 MiB"),
        (None, Some("48MiB"), "--max-memory 48 MiB"),
        (Some("40M"), Some("1GiB"), "--max-memory 40 MiB"),
        (None, None, "--max-memory 256 MiB"),
    ] {
        let receiver = OtlpHttpReceiver::start();
        let mut cmd = cli_http(&receiver);
        if let Some(env) = env {
            cmd.env("WASI_OBSERVE_MAX_MEMORY", env);
        }
        let mut args = Vec::new();
        if let Some(flag) = flag {
            args.extend(["--max-memory", flag]);
        }
        args.extend([EXIT_PATHS_COMPONENT, "3", "grow"]);
        let out = run(cmd, &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(134), "{named}: {stderr}");
        assert!(!stdout.contains("grew to"), "{named}: {stdout}");
        assert!(
            stderr.contains(&format!(
                "wasi-observe: the guest reached a limit: its linear memory reached {named}"
            )),
            "{named}: {stderr}"
        );
        assert!(
            stderr.contains("; raise it with --max-memory or WASI_OBSERVE_MAX_MEMORY"),
            "{stderr}"
        );
        assert_exit_paths_delivered(&receiver, 3, named);
    }
}

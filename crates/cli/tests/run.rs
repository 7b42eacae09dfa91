//! End-to-end tests of `wasi-observe run`: the real binary, real guest
//! components built from source, and real OTLP receivers started here.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use otlp_receiver::{
    AnyValueExt, FlatSpan, GrpcCollector, OtlpHttpReceiver, ReceiverOptions, Signal, SpanKind,
    SpanStatusCode,
};
use test_programs_artifacts::*;

const WAIT: Duration = Duration::from_secs(20);

/// The CLI with a clean OpenTelemetry environment (the test runner's own
/// `OTEL_*` variables must not leak in), and a telemetry store in a
/// temporary directory (never the user's).
fn cli() -> Command {
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
fn cli_http(receiver: &OtlpHttpReceiver) -> Command {
    let mut cmd = cli();
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    cmd
}

fn run(mut cmd: Command, args: &[&str]) -> Output {
    let out = cmd
        .arg("run")
        .args(args)
        .output()
        .expect("running wasi-observe");
    eprintln!("stdout: {}", String::from_utf8_lossy(&out.stdout));
    eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn by_name(spans: &[FlatSpan]) -> HashMap<&str, &FlatSpan> {
    spans.iter().map(|s| (s.name.as_str(), s)).collect()
}

/// `name trace span` lines the guest printed.
fn printed_ids(stdout: &[u8]) -> HashMap<String, (String, String)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((
                it.next()?.to_string(),
                (it.next()?.to_string(), it.next()?.to_string()),
            ))
        })
        .collect()
}

#[test]
fn http_protobuf_delivers_spans_logs_and_metrics_as_emitted() {
    let receiver = OtlpHttpReceiver::start();
    let out = run(cli_http(&receiver), &[TRACER_FEATURES_COMPONENT]);
    assert!(out.status.success());

    // The CLI flushed before exiting: everything is there already.
    let spans = receiver.spans();
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let s = by_name(&spans);
    let (root, child, grandchild) = (s["root"], s["child"], s["grandchild-renamed"]);
    let ids = printed_ids(&out.stdout);
    assert_eq!(ids["root"], (root.trace_id.clone(), root.span_id.clone()));
    assert_eq!(ids["grandchild"].1, grandchild.span_id);

    // Three levels of parenting, one trace; new-root starts another.
    assert_eq!(root.parent_span_id, "");
    assert_eq!(child.parent_span_id, root.span_id);
    assert_eq!(grandchild.parent_span_id, child.span_id);
    assert_eq!(s["dropped"].parent_span_id, child.span_id);
    for span in [child, grandchild, s["dropped"]] {
        assert_eq!(span.trace_id, root.trace_id);
    }
    let detached = s["detached"];
    assert_eq!(detached.parent_span_id, "");
    assert_ne!(detached.trace_id, root.trace_id);
    assert_eq!(root.trace_id.len(), 32);
    assert!(
        root.trace_id
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );

    // Kinds, attributes with their OTLP types, overwrite semantics.
    assert_eq!(root.kind, SpanKind::Server);
    assert_eq!(child.kind, SpanKind::Client);
    assert_eq!(grandchild.kind, SpanKind::Producer);
    assert_eq!(s["dropped"].kind, SpanKind::Consumer);
    assert_eq!(detached.kind, SpanKind::Internal);
    assert_eq!(root.attr_str("str"), Some("overwritten"));
    assert_eq!(root.attr_str("late"), Some("yes"));
    assert_eq!(root.attr_bool("bool"), Some(true));
    assert_eq!(root.attr_f64("f64"), Some(1.5));
    assert_eq!(root.attr_i64("s64"), Some(-42));
    let array = |k: &str| {
        root.attr(k)
            .and_then(|v| v.as_array())
            .map(|a| a.to_vec())
            .unwrap()
    };
    assert_eq!(
        array("str-array")
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(
        array("bool-array")
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect::<Vec<_>>(),
        [true, false]
    );
    assert_eq!(
        array("f64-array")
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect::<Vec<_>>(),
        [0.25, -2.0]
    );
    assert_eq!(
        array("s64-array")
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(root.start_time_unix_nano, 1_700_000_000_000_000_000);

    // Events with explicit and current timestamps.
    let event = child.event("explicit-time").unwrap();
    assert_eq!(event.time_unix_nano, 1_700_000_001_000_000_500);
    assert_eq!(event.attr_i64("n"), Some(7));
    assert!(child.event("now").unwrap().time_unix_nano >= child.start_time_unix_nano);

    // Status rules, update-name, explicit end time, links.
    assert_eq!(child.status.code, SpanStatusCode::Ok);
    assert_eq!(grandchild.status.code, SpanStatusCode::Error);
    assert_eq!(grandchild.status.message, "it broke");
    assert_eq!(grandchild.end_time_unix_nano, 4_000_000_000_000_000_000);
    assert!(grandchild.attr("after-end").is_none());
    assert_eq!(grandchild.links.len(), 2);
    let remote = &grandchild.links[0];
    assert_eq!(remote.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(remote.span_id, "00f067aa0ba902b7");
    assert_eq!(remote.trace_state, "vendor=v1");
    assert_eq!(remote.attr_str("link-attr"), Some("start"));
    assert_eq!(grandchild.links[1].span_id, root.span_id);
    assert_eq!(grandchild.links[1].attr_str("link-attr"), Some("added"));

    // service.name defaults to the component's file stem.
    assert_eq!(root.resource_str("service.name"), Some("tracer_features"));

    // Logs: severities, context kept as the scope name, span correlation.
    let mut logs = receiver.logs();
    // OTLP groups records by scope (the context string): restore emission order.
    logs.sort_by_key(|l| l.time_unix_nano);
    assert_eq!(logs.len(), 8, "{logs:#?}");
    let expected = [
        (1, "TRACE", "ctx.trace"),
        (5, "DEBUG", "ctx.debug"),
        (9, "INFO", "ctx.info"),
        (13, "WARN", "ctx.warn"),
        (17, "ERROR", "ctx.error"),
        (21, "CRITICAL", "ctx.critical"),
    ];
    for (log, (number, text, context)) in logs.iter().zip(expected) {
        assert_eq!(log.severity_number, number);
        assert_eq!(log.severity_text, text);
        assert_eq!(log.scope_name, context);
        assert_eq!(log.trace_id, child.trace_id);
        assert_eq!(log.span_id, child.span_id);
    }
    assert_eq!(logs[0].body_str(), Some("a trace message"));
    assert_eq!(logs[6].span_id, root.span_id);
    assert_eq!(logs[7].body_str(), Some("after every span ended"));
    assert_eq!(logs[7].trace_id, "");

    // Metrics: each instrument kind, aggregated by the host.
    let metric = |name: &str| {
        receiver
            .wait_for_metric(name, WAIT)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let requests = metric("requests");
    assert_eq!(requests.unit, "{request}");
    let mut values: Vec<(String, f64)> = requests
        .number_values()
        .into_iter()
        .map(|(attrs, v)| (attrs["route"].as_str().unwrap().to_string(), v))
        .collect();
    values.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(values, [("/a".to_string(), 7.0), ("/b".to_string(), 10.0)]);
    assert_eq!(metric("queue.depth").number_values()[0].1, 3.0);
    assert_eq!(metric("temperature").number_values()[0].1, 42.0);
    let latency = metric("latency");
    let h = &latency.histogram_points()[0];
    assert_eq!(h.count, 4);
    assert_eq!(h.sum, Some(138.0));
    assert_eq!(h.explicit_bounds, [5.0, 10.0, 50.0]);
    assert_eq!(h.bucket_counts, [1, 1, 1, 1]);
}

#[test]
fn grpc_delivers_spans_and_logs() {
    let collector = GrpcCollector::start();
    let mut cmd = cli();
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    let out = run(cmd, &[TRACER_FEATURES_COMPONENT]);
    assert!(out.status.success());
    let spans = collector.wait_for_spans(5, WAIT);
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(spans.len(), 5, "{names:?}");
    let root = spans.iter().find(|s| s.name == "root").unwrap();
    let child = spans.iter().find(|s| s.name == "child").unwrap();
    let grandchild = spans
        .iter()
        .find(|s| s.name == "grandchild-renamed")
        .unwrap();
    assert_eq!(child.parent_span_id, root.span_id);
    assert_eq!(grandchild.parent_span_id, child.span_id);
    let logs = collector.wait_for_logs(8, WAIT);
    assert_eq!(logs.len(), 8);
    let critical = logs.iter().find(|l| l.severity_number == 21).unwrap();
    assert_eq!(critical.severity_text, "CRITICAL");
    assert_eq!(critical.span_id, child.span_id);
}

#[test]
fn a_refused_signal_does_not_break_the_others() {
    // As Arize Phoenix does: traces accepted, logs and metrics answered 405.
    let receiver = OtlpHttpReceiver::start_with(
        ReceiverOptions::new()
            .refuse(Signal::Logs, 405)
            .refuse(Signal::Metrics, 405),
    );
    let out = run(cli_http(&receiver), &[TRACER_FEATURES_COMPONENT]);
    assert!(out.status.success());
    assert_eq!(receiver.spans().len(), 5);
    assert!(!receiver.requests_for(Signal::Logs).is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("logs_export_failed=8"), "{stderr}");
}

#[test]
fn open_spans_of_a_trapping_guest_arrive_with_error_status() {
    let receiver = OtlpHttpReceiver::start();
    let out = run(cli_http(&receiver), &[TRAP_OPEN_SPANS_COMPONENT]);
    assert_eq!(out.status.code(), Some(134));
    let spans = receiver.spans();
    let s = by_name(&spans);
    for name in ["outer", "inner"] {
        assert_eq!(s[name].status.code, SpanStatusCode::Error, "{name}");
        assert!(
            s[name].status.message.starts_with("the guest trapped"),
            "{}",
            s[name].status.message
        );
    }
    assert_eq!(s["inner"].parent_span_id, s["outer"].span_id);
    assert_eq!(s["done-before-trap"].status.code, SpanStatusCode::Unset);
    let logs = receiver.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].span_id, s["inner"].span_id);
}

#[test]
fn exit_code_passes_through_and_telemetry_is_flushed() {
    let receiver = OtlpHttpReceiver::start();
    let out = run(cli_http(&receiver), &[EXIT_CODE_COMPONENT]);
    assert_eq!(out.status.code(), Some(3));
    let spans = receiver.spans();
    let s = by_name(&spans);
    assert_eq!(s["exiting"].status.code, SpanStatusCode::Error);
    assert_eq!(
        s["exiting"].status.message,
        "the guest exited with code 3 while this span was open"
    );
    assert_eq!(s["finished"].status.code, SpanStatusCode::Unset);
    assert_eq!(receiver.logs().len(), 1);
}

#[test]
fn a_burst_of_100k_spans_is_delivered_whole() {
    let receiver = OtlpHttpReceiver::start();
    let out = run(cli_http(&receiver), &[BURST_COMPONENT, "100000"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("dropped"), "{stderr}");
    let spans = receiver.spans();
    assert_eq!(spans.len(), 100_001);
    let root = spans.iter().find(|s| s.name == "burst").unwrap();
    assert!(
        spans
            .iter()
            .filter(|s| s.name == "item")
            .all(|s| s.parent_span_id == root.span_id)
    );
}

#[test]
fn malformed_guest_input_never_crashes_the_host() {
    let receiver = OtlpHttpReceiver::start();
    let out = run(cli_http(&receiver), &[MALFORMED_COMPONENT]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "survived");
    let spans = receiver.spans();
    let s = by_name(&spans);
    let ok = s["valid-after-malformed"];
    assert_eq!(ok.attr_str("still"), Some("works"));
    // The malformed span: renamed to a (cut) huge name, so find it by elimination.
    let bad = spans
        .iter()
        .find(|s| s.name != "valid-after-malformed")
        .unwrap();
    assert_eq!(bad.name.len(), 65536);
    assert_eq!(bad.attr_str("huge").map(str::len), Some(65536));
    assert!(bad.attr("").is_none());
    assert_eq!(
        bad.attr("big-array")
            .and_then(|v| v.as_array())
            .map(|a| a.len()),
        Some(1024)
    );
    // Only the link with valid ids survives, with its bad trace-state emptied.
    assert_eq!(bad.links.len(), 1);
    assert_eq!(bad.links[0].trace_state, "");
    assert_eq!(bad.dropped_links_count, 3);
    // Out-of-range start became "now"; an end before the start is clamped.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(bad.start_time_unix_nano <= now && bad.start_time_unix_nano > now - 600_000_000_000);
    assert_eq!(bad.end_time_unix_nano, bad.start_time_unix_nano);
    let logs = receiver.logs();
    assert_eq!(logs[0].body_str().map(str::len), Some(65536));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid_input="), "{stderr}");
    assert!(stderr.contains("measurements_dropped="), "{stderr}");
}

#[test]
fn sdk_disabled_records_nothing_and_runs_the_guest() {
    let receiver = OtlpHttpReceiver::start();
    let mut cmd = cli_http(&receiver);
    cmd.env("OTEL_SDK_DISABLED", "true");
    // tracer_features asserts root.is_recording(); a disabled host says no.
    let out = run(cmd, &[OPEN_SPANS_COMPONENT, "1000"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "recording 0 of 1000"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(receiver.requests().is_empty());
}

#[test]
fn sampler_from_the_environment_is_honoured() {
    let receiver = OtlpHttpReceiver::start();
    let mut cmd = cli_http(&receiver);
    cmd.env("OTEL_TRACES_SAMPLER", "always_off");
    let out = run(cmd, &[OPEN_SPANS_COMPONENT, "10"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "recording 0 of 10"
    );
    assert!(receiver.spans().is_empty());
}

#[test]
fn service_name_and_resource_attributes_from_the_environment() {
    let receiver = OtlpHttpReceiver::start();
    let mut cmd = cli_http(&receiver);
    cmd.env("OTEL_SERVICE_NAME", "checkout").env(
        "OTEL_RESOURCE_ATTRIBUTES",
        "deployment.environment=test,team=obs",
    );
    let out = run(cmd, &[EXIT_CODE_COMPONENT]);
    assert_eq!(out.status.code(), Some(3));
    let span = &receiver.spans()[0];
    assert_eq!(span.resource_str("service.name"), Some("checkout"));
    assert_eq!(span.resource_str("deployment.environment"), Some("test"));
    assert_eq!(span.resource_str("team"), Some("obs"));
}

#[test]
fn console_exporter_prints_spans_and_logs() {
    let out = run(cli(), &["--exporter", "console", EXIT_CODE_COMPONENT]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("span ") && l.contains(" finished ")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("log ") && l.contains("exiting with 3")),
        "{stderr}"
    );
}

#[test]
fn jsonl_exporter_writes_otlp_json_lines() {
    let dir = std::env::temp_dir().join(format!("wasi-observe-jsonl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("out.jsonl");
    let _ = std::fs::remove_file(&file);
    let out = run(
        cli(),
        &[
            "--exporter",
            &format!("jsonl:{}", file.display()),
            EXIT_CODE_COMPONENT,
        ],
    );
    assert_eq!(out.status.code(), Some(3));
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let spans: Vec<&serde_json::Value> = lines
        .iter()
        .filter_map(|l| l.get("resourceSpans"))
        .flat_map(|rs| rs.as_array().unwrap())
        .flat_map(|rs| rs["scopeSpans"].as_array().unwrap())
        .flat_map(|ss| ss["spans"].as_array().unwrap())
        .collect();
    let names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"finished") && names.contains(&"exiting"));
    assert!(lines.iter().any(|l| l.get("resourceLogs").is_some()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn draft_logging_components_run() {
    let receiver = OtlpHttpReceiver::start();
    let out = run(cli_http(&receiver), &[LOGGING_DRAFT_COMPONENT]);
    assert!(out.status.success());
    let mut logs = receiver.logs();
    logs.sort_by_key(|l| l.time_unix_nano);
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0].body_str(), Some("hello from the draft interface"));
    assert_eq!(logs[1].severity_number, 21);
}

#[test]
fn clear_errors_for_bad_inputs() {
    let dir = std::env::temp_dir().join(format!("wasi-observe-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stderr_of = |path: &Path| {
        let out = run(cli(), &[path.to_str().unwrap()]);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    assert!(stderr_of(&dir.join("missing.wasm")).contains("no such file"));

    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    // Core modules run as WASI preview 1 commands: this one has no `_start`.
    assert!(stderr_of(&core).contains("exports no `_start` function"));

    let text = dir.join("text.wasm");
    std::fs::write(&text, b"hello").unwrap();
    assert!(stderr_of(&text).contains("is not a WebAssembly component"));

    let unknown = dir.join("unknown.wat");
    std::fs::write(
        &unknown,
        r#"(component (import "acme:missing/thing" (instance (export "f" (func)))))"#,
    )
    .unwrap();
    let err = stderr_of(&unknown);
    assert!(err.contains("acme:missing/thing"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_interrupts_the_guest_and_flushes_its_telemetry() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let receiver = OtlpHttpReceiver::start();
    let mut cmd = cli_http(&receiver);
    let mut child = cmd
        .args(["run", SPIN_COMPONENT])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "spinning");
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let spans = receiver.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "spinning");
    assert_eq!(spans[0].status.code, SpanStatusCode::Error);
    assert_eq!(
        spans[0].status.message,
        "the guest was interrupted by SIGINT"
    );
    assert_eq!(receiver.logs().len(), 1);
}

// ---------------------------------------------------------------------------
// Reliability (docs/reliability.md): exit paths, collector outages, overload.

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

#[test]
fn traceparent_in_the_environment_joins_the_pipelines_trace() {
    let receiver = OtlpHttpReceiver::start();
    let mut cmd = cli_http(&receiver);
    cmd.env(
        "TRACEPARENT",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    .env("TRACESTATE", "vendor=opaque");
    let out = run(cmd, &[TRACER_FEATURES_COMPONENT]);
    assert!(out.status.success());
    let spans = receiver.spans();
    let s = by_name(&spans);
    // The guest's root span hangs under the pipeline's span; new-root still
    // starts a trace of its own.
    let root = s["root"];
    assert_eq!(root.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(root.parent_span_id, "b7ad6b7169203331");
    assert_eq!(root.trace_state, "vendor=opaque");
    assert_eq!(s["grandchild-renamed"].trace_id, root.trace_id);
    assert_ne!(s["detached"].trace_id, root.trace_id);
    assert_eq!(s["detached"].parent_span_id, "");

    // A malformed TRACEPARENT is ignored: a new trace, and the run succeeds.
    let receiver = OtlpHttpReceiver::start();
    let mut cmd = cli_http(&receiver);
    cmd.env("TRACEPARENT", "00-not-a-context-01");
    let out = run(cmd, &[TRACER_FEATURES_COMPONENT]);
    assert!(out.status.success());
    let spans = receiver.spans();
    assert_eq!(by_name(&spans)["root"].parent_span_id, "");
}

/// `--trace-calls`: a span for the `run` export with the guest's spans under
/// it, and a span per import call under the guest's current span, named in
/// full; arguments only when asked; filters by glob and minimum duration.
#[test]
fn trace_calls_makes_a_span_per_export_and_import_call() {
    let receiver = OtlpHttpReceiver::start();
    let out = run(
        cli_http(&receiver),
        &["--trace-calls", TRACER_FEATURES_COMPONENT],
    );
    assert!(out.status.success());
    let spans = receiver.spans();
    let run_span = spans
        .iter()
        .find(|s| s.name.starts_with("wasi:cli/run@") && s.name.ends_with("#run"))
        .unwrap_or_else(|| panic!("no run span: {spans:#?}"));
    assert!(run_span.is_root());
    assert_eq!(run_span.attr_str("wasm.call"), Some("export"));
    assert_eq!(run_span.attr_str("wasm.package"), Some("wasi:cli"));
    assert_eq!(run_span.attr_str("wasm.function"), Some("run"));
    assert!(run_span.attr_str("wasm.version").is_some());
    let s = by_name(&spans);
    let root = s["root"];
    assert_eq!(root.parent_span_id, run_span.span_id);

    let imports: Vec<&FlatSpan> = spans
        .iter()
        .filter(|s| s.attr_str("wasm.call") == Some("import"))
        .collect();
    // The guest's `start` calls: the first under the run span, the next
    // under `root` (the guest's current span when it called).
    let starts: Vec<&&FlatSpan> = imports
        .iter()
        .filter(|s| s.name == "wasi:observe/tracer#start")
        .collect();
    assert!(starts.iter().any(|s| s.parent_span_id == run_span.span_id));
    assert!(starts.iter().any(|s| s.parent_span_id == root.span_id));
    // WASI imports are named with their package and version.
    assert!(
        imports
            .iter()
            .any(|s| s.name.starts_with("wasi:cli/stdout@") && s.name.ends_with("#get-stdout")),
        "{:?}",
        imports.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    for span in &imports {
        // Under a span of the run (the run's trace, or the guest's
        // new-root trace when that span was current).
        let parent = spans.iter().find(|p| p.span_id == span.parent_span_id);
        assert!(
            parent.is_some_and(|p| p.trace_id == span.trace_id),
            "{span:#?}"
        );
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        assert!(
            !span.attributes.keys().any(|k| k.starts_with("wasm.arg.")),
            "arguments are not recorded by default: {span:#?}"
        );
    }

    // Arguments on request (not lists); a glob filter.
    let receiver = OtlpHttpReceiver::start();
    let out = run(
        cli_http(&receiver),
        &[
            "--trace-calls=wasi:observe/tracer#start,wasi:cli/run*",
            "--trace-call-arguments",
            TRACER_FEATURES_COMPONENT,
        ],
    );
    assert!(out.status.success());
    let spans = receiver.spans();
    let calls: Vec<&FlatSpan> = spans
        .iter()
        .filter(|s| s.attr_str("wasm.call").is_some())
        .collect();
    assert!(
        calls
            .iter()
            .all(|s| s.name == "wasi:observe/tracer#start" || s.name.starts_with("wasi:cli/run@"))
    );
    assert!(
        calls
            .iter()
            .any(|s| s.attr_str("wasm.arg.name") == Some("\"root\"")),
        "{calls:#?}"
    );

    // A minimum duration no call reaches: only the export span is left.
    let receiver = OtlpHttpReceiver::start();
    let out = run(
        cli_http(&receiver),
        &[
            "--trace-calls",
            "--trace-calls-min",
            "1h",
            TRACER_FEATURES_COMPONENT,
        ],
    );
    assert!(out.status.success());
    let spans = receiver.spans();
    let calls: Vec<&str> = spans
        .iter()
        .filter(|s| s.attr_str("wasm.call").is_some())
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].ends_with("#run"));
}

/// An import that returns an error and an export that fails are error spans.
#[test]
fn trace_calls_marks_errors() {
    let receiver = OtlpHttpReceiver::start();
    let out = run(cli_http(&receiver), &["--trace-calls", EXIT_CODE_COMPONENT]);
    assert_eq!(out.status.code(), Some(3));
    let spans = receiver.spans();
    let exit = spans
        .iter()
        .find(|s| s.name.starts_with("wasi:cli/exit@") && s.name.ends_with("#exit-with-code"))
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(exit.status.code, SpanStatusCode::Error);
    assert_eq!(exit.attr_str("error.type"), Some("error_result"));
    let run_span = spans.iter().find(|s| s.name.ends_with("#run")).unwrap();
    assert_eq!(run_span.status.code, SpanStatusCode::Error);
    assert_eq!(run_span.attr_str("error.type"), Some("exit"));
    // The span the guest left open still nests under the export.
    assert_eq!(by_name(&spans)["exiting"].parent_span_id, run_span.span_id);
}

/// A WASI preview 1 command that writes a line and closes a descriptor it
/// does not have (an error result).
const P1_CALLS_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "hi\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
    (drop (call $fd_close (i32.const 99)))))"#;

/// `--trace-calls` on a core module: its WASI preview 1 calls are spans
/// under the `_start` export's span; an errno result marks its span failed.
#[test]
fn trace_calls_on_a_core_module() {
    let dir = temp_dir("trace-calls-core");
    let wat = dir.join("calls.wat");
    std::fs::write(&wat, P1_CALLS_WAT).unwrap();
    let receiver = OtlpHttpReceiver::start();
    let out = run(
        cli_http(&receiver),
        &[
            "--trace-calls",
            "--trace-call-arguments",
            wat.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    let spans = receiver.spans();
    let start = spans
        .iter()
        .find(|s| s.name == "_start")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert!(start.is_root());
    assert_eq!(start.attr_str("wasm.call"), Some("export"));
    let write = by_name(&spans)["wasi_snapshot_preview1#fd_write"];
    assert_eq!(write.parent_span_id, start.span_id);
    assert_eq!(write.attr_str("wasm.function"), Some("fd_write"));
    assert_eq!(write.attr_str("wasm.call"), Some("import"));
    assert_ne!(write.status.code, SpanStatusCode::Error);
    assert_eq!(write.attr_str("wasm.arg.fd"), Some("Fd(1)"));
    let close = by_name(&spans)["wasi_snapshot_preview1#fd_close"];
    assert_eq!(close.parent_span_id, start.span_id);
    assert_eq!(close.status.code, SpanStatusCode::Error);
    assert_eq!(close.attr_str("error.type"), Some("error_result"));

    // A filter keeps only the matching calls (and here not the export).
    let receiver = OtlpHttpReceiver::start();
    let out = run(
        cli_http(&receiver),
        &["--trace-calls=*#fd_close", wat.to_str().unwrap()],
    );
    assert!(out.status.success());
    let names: Vec<String> = receiver.spans().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["wasi_snapshot_preview1#fd_close"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A WASI preview 1 command: prints `fib(12) = 144` (fib computed by
/// recursion), then traps in a nested call when given any argument.
const FIB_MODULE_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 100) "fib(12) = ")
  (func $fib (param i32) (result i32)
    (if (result i32) (i32.lt_u (local.get 0) (i32.const 2))
      (then (local.get 0))
      (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1)))
                     (call $fib (i32.sub (local.get 0) (i32.const 2)))))))
  (func $print_number (param i32)
    ;; three digits at 110, a newline at 113
    (i32.store8 (i32.const 110) (i32.add (i32.const 48) (i32.div_u (local.get 0) (i32.const 100))))
    (i32.store8 (i32.const 111) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get 0) (i32.const 10)) (i32.const 10))))
    (i32.store8 (i32.const 112) (i32.add (i32.const 48) (i32.rem_u (local.get 0) (i32.const 10))))
    (i32.store8 (i32.const 113) (i32.const 10))
    (i32.store (i32.const 0) (i32.const 100))
    (i32.store (i32.const 4) (i32.const 14))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $crash unreachable)
  (func $deep (call $crash))
  (func $_start (export "_start")
    (call $print_number (call $fib (i32.const 12)))
    (drop (call $args_sizes_get (i32.const 16) (i32.const 20)))
    (if (i32.gt_u (i32.load (i32.const 16)) (i32.const 1)) (then (call $deep)))))"#;

fn instrument_cli(input: &Path, output: &Path, extra: &[&str]) -> Output {
    let out = cli()
        .arg("instrument")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(extra)
        .output()
        .unwrap();
    eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wasi-observe-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn instrumented_core_module_runs_with_a_span_per_function() {
    let dir = temp_dir("instrument-core");
    let wat = dir.join("fib.wat");
    std::fs::write(&wat, FIB_MODULE_WAT).unwrap();
    let out_wasm = dir.join("fib.instrumented.wasm");
    let out = instrument_cli(&wat, &out_wasm, &[]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("instrumented 5 functions in 1 module"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The original runs too (core modules are WASI preview 1 commands).
    let plain = run(cli(), &["--exporter", "none", wat.to_str().unwrap()]);
    assert!(plain.status.success());
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "fib(12) = 144\n");

    let receiver = OtlpHttpReceiver::start();
    let path = out_wasm.to_str().unwrap();
    let traced = run(cli_http(&receiver), &["--min-function-duration", "0", path]);
    assert!(traced.status.success());
    assert_eq!(traced.stdout, plain.stdout, "same output");
    let spans = receiver.spans();
    // fib(12) is 465 calls; print_number and _start.
    assert_eq!(spans.iter().filter(|s| s.name == "fib").count(), 465);
    let start = spans.iter().find(|s| s.name == "_start").unwrap();
    assert!(start.is_root());
    let ids: HashMap<&str, &FlatSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    for s in &spans {
        assert!(
            s.is_root() || ids.contains_key(s.parent_span_id.as_str()),
            "orphan {}",
            s.name
        );
    }

    // The default threshold (100 us) keeps the tree small: not 467 spans.
    let receiver = OtlpHttpReceiver::start();
    let filtered = run(cli_http(&receiver), &[path]);
    assert!(filtered.status.success());
    let spans = receiver.spans();
    assert!(spans.len() < 100, "{} spans", spans.len());

    // A trap: exit code 134, and the frames open at the trap are ended with
    // an error, each under its caller.
    let receiver = OtlpHttpReceiver::start();
    let trapped = run(cli_http(&receiver), &[path, "trap"]);
    assert_eq!(trapped.status.code(), Some(134));
    let spans = receiver.spans();
    let s = by_name(&spans);
    for name in ["crash", "deep", "_start"] {
        assert_eq!(s[name].status.code, SpanStatusCode::Error, "{name}");
    }
    assert_eq!(s["crash"].parent_span_id, s["deep"].span_id);
    assert_eq!(s["deep"].parent_span_id, s["_start"].span_id);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn instrumented_component_runs_with_its_recorder() {
    let dir = temp_dir("instrument-component");
    let out_wasm = dir.join("instrumented.wasm");
    let out = instrument_cli(
        Path::new(INSTRUMENTED_COMPONENT),
        &out_wasm,
        &["--filter", "instrumented::*"],
    );
    assert!(out.status.success());
    let plain = run(cli(), &["--exporter", "none", INSTRUMENTED_COMPONENT, "15"]);
    assert!(plain.status.success());

    let receiver = OtlpHttpReceiver::start();
    let traced = run(
        cli_http(&receiver),
        &[
            "--min-function-duration",
            "0",
            out_wasm.to_str().unwrap(),
            "15",
        ],
    );
    assert!(traced.status.success());
    assert_eq!(traced.stdout, plain.stdout, "same output");
    let spans = receiver.spans();
    // Only the filtered functions are spans (besides the guest's own).
    assert!(
        spans
            .iter()
            .all(|s| s.name.starts_with("instrumented::") || s.name == "guest-span"),
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    assert!(
        spans
            .iter()
            .filter(|s| s.name == "instrumented::fib")
            .count()
            > 10
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn instrument_reports_bad_inputs() {
    let dir = temp_dir("instrument-bad");
    let bad = dir.join("bad.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0\x99").unwrap();
    let out = instrument_cli(&bad, &dir.join("out.wasm"), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not valid WebAssembly"), "{stderr}");
    assert!(!dir.join("out.wasm").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

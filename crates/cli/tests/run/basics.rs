//! Delivery through each exporter, configuration from the environment,
//! exit codes and signals, and bad inputs.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use otlp_receiver::{
    AnyValueExt, GrpcCollector, OtlpHttpReceiver, ReceiverOptions, Signal, SpanKind, SpanStatusCode,
};
use test_programs_artifacts::*;

use crate::support::*;

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

/// A component built for Spin imports Spin's own interfaces: `run` and
/// `serve` refuse it and name them, and say what to do.
#[test]
fn spin_only_imports_get_a_clear_error() {
    for command in ["run", "serve"] {
        let mut cmd = cli();
        cmd.arg(command);
        if command == "serve" {
            cmd.args(["--addr", "127.0.0.1:0"]);
        }
        let out = cmd.arg(SPIN_IMPORT_COMPONENT).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("cannot {command}"))
                && err.contains("imports Spin's own interface fermyon:spin/variables@2.0.0")
                && err.contains("only Spin provides"),
            "{command}: {err}"
        );
    }
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

/// Measurements made outside any span, with nothing recorded after them:
/// the SDK holds their sums, and `run` asks for them when `run` returns.
#[test]
fn held_measurements_arrive_when_the_command_returns() {
    let receiver = OtlpHttpReceiver::start();
    let out = run(cli_http(&receiver), &[SDK_HELD_METRICS_COMPONENT]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("held telemetry"), "{stderr}");
    let metric = |name: &str| {
        receiver
            .wait_for_metric(name, WAIT)
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(metric("depth").number_values()[0].1, 3.0);
    assert_eq!(metric("level").number_values()[0].1, 2.5);
    assert_eq!(metric("hits").number_values().len(), 750);
}

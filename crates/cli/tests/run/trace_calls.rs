//! `--trace-calls`: spans for the export and import calls of components
//! and core modules.

use otlp_receiver::{FlatSpan, OtlpHttpReceiver, SpanStatusCode};
use test_programs_artifacts::*;

use crate::support::*;

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

/// `run` hands the guest's environment (its `--env` variables) to the pipe
/// too, so the SDK's `init()` takes `RUST_LOG` with its configuration and
/// never calls `get-environment` (which `--trace-calls` would show as an
/// import span): `RUST_LOG` given narrows what is recorded, and with none
/// given nothing is narrowed, with no call either way.
#[test]
fn run_hands_the_guest_environment_to_the_pipe() {
    let environment_calls = |args: &[&str]| {
        let receiver = OtlpHttpReceiver::start();
        let mut all = vec!["--trace-calls=wasi:cli/environment*"];
        all.extend_from_slice(args);
        all.push(SDK_SCENARIO_COMPONENT);
        let out = run(cli_http(&receiver), &all);
        assert!(out.status.success());
        let spans = receiver.spans();
        let calls = spans
            .iter()
            .filter(|s| s.name.ends_with("#get-environment"))
            .count();
        let bodies: Vec<String> = receiver
            .logs()
            .iter()
            .filter_map(|r| r.body_str().map(str::to_string))
            .collect();
        (calls, spans, bodies)
    };
    let (calls, spans, bodies) =
        environment_calls(&["--env", "RUST_LOG=warn,scenario::startup=info"]);
    assert_eq!(calls, 0, "{spans:#?}");
    // Narrowed as `RUST_LOG` says: `info` only for one target.
    assert!(
        bodies.iter().any(|b| b == "scenario starting"),
        "{bodies:?}"
    );
    assert!(!bodies.iter().any(|b| b == "scenario done"), "{bodies:?}");
    assert!(!spans.iter().any(|s| s.name == "repeated"));

    let (calls, spans, bodies) = environment_calls(&[]);
    assert_eq!(calls, 0, "{spans:#?}");
    assert!(bodies.iter().any(|b| b == "scenario done"), "{bodies:?}");
    assert!(spans.iter().any(|s| s.name == "repeated"));
}

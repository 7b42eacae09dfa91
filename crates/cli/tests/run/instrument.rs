//! `wasi-observe instrument`, and running what it rewrote.

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;

use otlp_receiver::{FlatSpan, OtlpHttpReceiver, SpanStatusCode};
use test_programs_artifacts::*;

use crate::support::*;

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

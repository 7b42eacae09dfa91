//! The byte budgets, tried as an attacker would: guests that ask the host to
//! keep far more than it may. Each test runs the release-like CLI as a child
//! and reads its peak resident memory from the kernel (`wait4`), so what is
//! asserted is what the process really grew to.

use std::io::Read;
use std::process::Stdio;

use test_programs_artifacts::*;

use crate::support::{cli, temp_dir};

/// The documented defaults (docs/reliability.md).
const STORE_BYTES: u64 = 64 << 20;
const EXPORT_BYTES: u64 = 256 << 20;
/// What a run may use beyond its budgets and the baseline: exporters'
/// transient copies of a batch, allocator slack.
const ALLOWANCE: u64 = 128 << 20;

struct Measured {
    stdout: String,
    stderr: String,
    success: bool,
    /// Peak resident set, bytes.
    peak: u64,
}

/// Runs `wasi-observe run ARGS` exporting to `/dev/null` (so that exporting
/// is exercised but costs no disk), and measures its peak RSS.
#[allow(clippy::zombie_processes, reason = "reaped by `wait4`")]
fn run_measured(args: &[&str]) -> Measured {
    let mut child = cli()
        .args(["run", "--exporter", "jsonl:/dev/null"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running wasi-observe");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let (status, peak) = wait_with_peak(child.id() as i32);
    let m = Measured {
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        success: status == 0,
        peak,
    };
    eprintln!("stdout: {}\nstderr: {}", m.stdout, m.stderr);
    eprintln!("peak RSS: {} MiB", m.peak >> 20);
    m
}

/// Reaps `pid`; its exit status and peak RSS in bytes. `wait4` is the one
/// way to read a child's peak after its last allocation (a zombie's `/proc`
/// entry has no memory figures); std does not wrap it.
#[allow(unsafe_code)]
fn wait_with_peak(pid: i32) -> (i32, u64) {
    let mut status = 0;
    // SAFETY: `rusage` is plain data, filled in by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not reaped elsewhere (`Child::wait` is
    // never called on it).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    // Linux gives `ru_maxrss` in KiB.
    (status, usage.ru_maxrss as u64 * 1024)
}

/// A core module that does nothing: the baseline of a run.
fn baseline() -> u64 {
    let dir = temp_dir("budget-baseline");
    let path = dir.join("empty.wasm");
    std::fs::write(
        &path,
        wat::parse_str(r#"(module (func (export "_start")))"#).unwrap(),
    )
    .unwrap();
    run_measured(&[path.to_str().unwrap()]).peak
}

/// The value of `name=N` in the losses the CLI reports at exit.
fn loss(stderr: &str, name: &str) -> u64 {
    stderr
        .split([' ', ',', '\n'])
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or(0)
}

fn assert_bounded(m: &Measured, base: u64, budgets: u64) {
    let bound = base + budgets + ALLOWANCE;
    assert!(
        m.peak <= bound,
        "peak RSS {} MiB exceeds the baseline {} MiB + budgets {} MiB + allowance {} MiB",
        m.peak >> 20,
        base >> 20,
        budgets >> 20,
        ALLOWANCE >> 20
    );
}

/// Dylibso's ABI: 10 000 nested named spans, each given 128 tags of 64 KiB
/// (80 GB if all were kept; 10.5 GB peak before the budget). The store keeps
/// 64 MiB and refuses the rest without reading it.
#[test]
fn dylibso_frames_with_large_tags_stay_within_the_store_budget() {
    let module = r#"(module
      (import "dylibso:observe/api" "span-enter" (func $enter (param i32 i32)))
      (import "dylibso:observe/api" "span-tags" (func $tags (param i32 i32)))
      (memory (export "memory") 2)
      (data (i32.const 0) "frame")
      (data (i32.const 16) "k:")
      (func (export "_start")
        (local $i i32) (local $j i32)
        (memory.fill (i32.const 18) (i32.const 120) (i32.const 65518))
        (loop $frames
          (call $enter (i32.const 0) (i32.const 5))
          (local.set $j (i32.const 0))
          (loop $each
            (call $tags (i32.const 16) (i32.const 65520))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br_if $each (i32.lt_u (local.get $j) (i32.const 128))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $frames (i32.lt_u (local.get $i) (i32.const 10000))))))"#;
    let dir = temp_dir("budget-dylibso");
    let path = dir.join("frames.wasm");
    std::fs::write(&path, wat::parse_str(module).unwrap()).unwrap();
    let base = baseline();
    let m = run_measured(&[path.to_str().unwrap()]);
    assert!(m.success);
    // About 64 MiB / 64 KiB tags were kept; the rest of the 1.28 M refused.
    let refused = loss(&m.stderr, "values_dropped_store_budget");
    assert!(refused > 1_270_000, "{refused}");
    assert!(m.stderr.contains("WASI_OBSERVE_MAX_STORE_BYTES"));
    assert_bounded(&m, base, STORE_BYTES + EXPORT_BYTES);
}

/// Statsd metrics through Dylibso's ABI: 3 counters x 4 000 distinct tag
/// values of 60 KB (1.76 GB peak before). Values are cut to 256 bytes and
/// each counter keeps 1 000 series; the other measurements are dropped,
/// counted exactly.
#[test]
fn metric_series_with_large_tag_values_are_capped_and_counted() {
    // Line: "a:1|c|#t:" then 4 digits, then 'x' up to 60 000 bytes.
    let module = r#"(module
      (import "dylibso:observe/api" "metric" (func $metric (param i32 i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "a:1|c|#t:")
      (func (export "_start")
        (local $i i32) (local $c i32)
        (memory.fill (i32.const 13) (i32.const 120) (i32.const 59987))
        (loop $values
          (i32.store8 (i32.const 9) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $i) (i32.const 1000)) (i32.const 10))))
          (i32.store8 (i32.const 10) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $i) (i32.const 100)) (i32.const 10))))
          (i32.store8 (i32.const 11) (i32.add (i32.const 48) (i32.rem_u (i32.div_u (local.get $i) (i32.const 10)) (i32.const 10))))
          (i32.store8 (i32.const 12) (i32.add (i32.const 48) (i32.rem_u (local.get $i) (i32.const 10))))
          (local.set $c (i32.const 0))
          (loop $counters
            (i32.store8 (i32.const 0) (i32.add (i32.const 97) (local.get $c)))
            (call $metric (i32.const 1) (i32.const 0) (i32.const 60000))
            (local.set $c (i32.add (local.get $c) (i32.const 1)))
            (br_if $counters (i32.lt_u (local.get $c) (i32.const 3))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $values (i32.lt_u (local.get $i) (i32.const 4000))))))"#;
    let dir = temp_dir("budget-series");
    let path = dir.join("series.wasm");
    std::fs::write(&path, wat::parse_str(module).unwrap()).unwrap();
    let base = baseline();
    let m = run_measured(&[path.to_str().unwrap()]);
    assert!(m.success);
    assert_eq!(loss(&m.stderr, "measurements_dropped_series_limit"), 9000);
    assert!(m.stderr.contains("WASI_OBSERVE_MAX_SERIES"));
    assert_bounded(&m, base, 16 << 20);
}

/// `wasi:observe/tracer`: 1 000 open spans, each set 128 attributes of
/// 64 KiB (8 GB if kept). The spans record; what does not fit is refused.
#[test]
fn guest_spans_with_large_attributes_stay_within_the_store_budget() {
    let base = baseline();
    let m = run_measured(&[HEAVY_SPANS_COMPONENT, "1000"]);
    assert!(m.success);
    assert_eq!(m.stdout.trim(), "recording 1000 of 1000");
    assert!(loss(&m.stderr, "values_dropped_store_budget") > 900);
    assert_bounded(&m, base, STORE_BYTES + EXPORT_BYTES);
}

/// The same with arrays of 1 024 empty strings: tiny in the guest, 24 KiB
/// of string handles each in the host, which the budget counts.
#[test]
fn arrays_of_empty_strings_count_against_the_store_budget() {
    let base = baseline();
    let m = run_measured(&[HEAVY_SPANS_COMPONENT, "2000", "arrays"]);
    assert!(m.success);
    assert!(loss(&m.stderr, "values_dropped_store_budget") > 1000);
    assert_bounded(&m, base, STORE_BYTES + EXPORT_BYTES);
}

//! Function-level instrumentation: modules and components rewritten by
//! `wasi-observe instrument`, and modules using Dylibso's Observe ABI.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::logs::Severity;
use opentelemetry::trace::{SpanContext, SpanId, Status, TraceState};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::trace::SpanData;
use wasi_observe_host::functions::FunctionNames;
use wasi_observe_host::{Limits, Telemetry, WasiObserveCtx, WasiObserveView};
use wasmtime::Store;
use wasmtime::component::Component;

use crate::support::*;

/// A core module's store: `env.print` collects what the guest prints.
struct ModuleHost {
    observe: WasiObserveCtx,
    printed: Vec<i32>,
}

impl WasiObserveView for ModuleHost {
    fn observe(&mut self) -> &mut WasiObserveCtx {
        &mut self.observe
    }
}

/// Runs the module's `main` export, with Dylibso's imports and `env.print`.
fn run_module(
    wasm: &[u8],
    mut observe: WasiObserveCtx,
) -> (wasmtime::Result<i32>, Store<ModuleHost>) {
    observe.set_function_names(Arc::new(FunctionNames::from_wasm(wasm)));
    let module = wasmtime::Module::new(engine(), wasm).unwrap();
    let mut linker = wasmtime::Linker::<ModuleHost>::new(engine());
    wasi_observe_host::dylibso::add_to_linker(&mut linker, &module).unwrap();
    linker.allow_shadowing(true);
    linker
        .func_wrap(
            "env",
            "print",
            |mut c: wasmtime::Caller<'_, ModuleHost>, v: i32| c.data_mut().printed.push(v),
        )
        .unwrap();
    let mut store = Store::new(
        engine(),
        ModuleHost {
            observe,
            printed: Vec::new(),
        },
    );
    let result = linker
        .instantiate(&mut store, &module)
        .and_then(|i| i.get_typed_func::<(), i32>(&mut store, "main"))
        .and_then(|main| main.call(&mut store, ()));
    (result, store)
}

fn rewrite(wasm: &[u8]) -> Vec<u8> {
    let (out, _) =
        wasi_observe_instrument::instrument(wasm, &wasi_observe_instrument::Options::default())
            .unwrap();
    wasmparser::Validator::new_with_features(wasi_observe_instrument::features())
        .validate_all(&out)
        .expect("the rewritten binary validates");
    out
}

/// `(name, parent name)` of every span; the parent must have been exported
/// (no orphans) unless the span is a root.
fn tree(spans: &[SpanData]) -> Vec<(String, String)> {
    let by_id: HashMap<SpanId, &SpanData> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), s))
        .collect();
    let mut edges: Vec<(String, String)> = spans
        .iter()
        .map(|s| {
            let parent = if s.parent_span_id == SpanId::INVALID {
                String::new()
            } else {
                let p = by_id
                    .get(&s.parent_span_id)
                    .unwrap_or_else(|| panic!("span {:?} is orphaned", s.name));
                assert_eq!(p.span_context.trace_id(), s.span_context.trace_id());
                // A guest span may outlive the function that started it
                // (often the bindings' wrapper around `tracer.start`), and
                // the function that ends it outlives it: nesting in time
                // holds between function spans.
                let guest = |n: &str| GUEST_SPANS.contains(&n);
                assert!(
                    guest(&s.name)
                        || guest(&p.name)
                        || p.start_time <= s.start_time && s.end_time <= p.end_time,
                    "{:?} [{:?}, {:?}] is not inside its parent {:?} [{:?}, {:?}]",
                    s.name,
                    s.start_time,
                    s.end_time,
                    p.name,
                    p.start_time,
                    p.end_time
                );
                p.name.to_string()
            };
            (s.name.to_string(), parent)
        })
        .collect();
    edges.sort();
    edges
}

/// Spans the guests below start themselves.
const GUEST_SPANS: [&str; 7] = [
    "guest-span",
    "outer",
    "inner",
    "done-before-trap",
    "sdk-outer",
    "sdk-inner",
    "api-span",
];

fn count(edges: &[(String, String)], name: &str, parent: &str) -> usize {
    edges
        .iter()
        .filter(|(n, p)| n == name && p == parent)
        .count()
}

const FEATURES_WAT: &str = include_str!("../../../instrument/tests/features.wat");

#[test]
fn instrumented_core_module_span_tree() {
    let original = wat::parse_str(FEATURES_WAT).unwrap();
    let wasm = rewrite(&original);
    let (expected, plain) = run_module(&original, WasiObserveCtx::new(&Telemetry::disabled()));

    let p = Pipeline::new();
    let mut ctx = p.ctx();
    ctx.set_min_function_duration(Duration::ZERO);
    let (result, store) = run_module(&wasm, ctx);
    assert_eq!(result.unwrap(), expected.unwrap(), "same result");
    assert_eq!(store.data().printed, plain.data().printed, "same output");
    assert_eq!(store.data().printed, [8, 100, 42, 1, 7]);
    assert_eq!(store.data().observe.open_functions(), 0, "balanced");
    drop(store);

    let spans = p.spans();
    let edges = tree(&spans);
    assert_eq!(spans.len(), 37, "{edges:?}");
    assert_eq!(count(&edges, "main", ""), 1);
    // fib(6): 25 calls, one tree under main.
    assert_eq!(count(&edges, "fib", "main"), 1);
    assert_eq!(count(&edges, "fib", "fib"), 24);
    // Tail calls: each call ends before the next starts, so all four are
    // children of main.
    assert_eq!(count(&edges, "count", "main"), 4);
    // The exception unwinds thrower and middle, which still end, in order.
    assert_eq!(count(&edges, "catcher", "main"), 1);
    assert_eq!(count(&edges, "middle", "catcher"), 1);
    assert_eq!(count(&edges, "thrower", "middle"), 1);
    for name in ["pair", "early", "grow", "wasm-function[13]"] {
        assert_eq!(count(&edges, name, "main"), 1, "{name}");
    }
    assert!(spans.iter().all(|s| s.status == Status::Unset));
    let grow = span(&spans, "grow");
    assert_eq!(grow.events.len(), 1);
    assert_eq!(grow.events[0].name, "memory.grow");
    assert_eq!(
        attr(&grow.events[0].attributes, "wasm.memory.grow.pages"),
        Some(&Value::I64(2))
    );
    assert!(!p.telemetry.stats().has_losses(), "{}", p.telemetry.stats());
}

#[test]
fn instrumented_core_module_trap_unwinds_the_shadow_stack() {
    let wasm = rewrite(
        &wat::parse_str(
            r#"(module
                 (func $main (export "main") (result i32) (call $a) (i32.const 0))
                 (func $a (call $b))
                 (func $b (call $c))
                 (func $c unreachable))"#,
        )
        .unwrap(),
    );
    let p = Pipeline::new();
    let (result, mut store) = run_module(&wasm, p.ctx());
    let err = result.unwrap_err();
    assert!(err.downcast_ref::<wasmtime::Trap>().is_some(), "{err:?}");
    assert_eq!(store.data().observe.open_functions(), 4);
    assert_eq!(store.data_mut().observe.end_open_spans("trapped"), 4);
    assert_eq!(store.data().observe.open_functions(), 0);
    drop(store);
    let spans = p.spans();
    assert_eq!(
        tree(&spans),
        [
            ("a".into(), "main".into()),
            ("b".into(), "a".into()),
            ("c".into(), "b".into()),
            ("main".into(), String::new()),
        ]
    );
    assert!(spans.iter().all(|s| s.status == Status::error("trapped")));
}

#[test]
fn min_function_duration_never_orphans() {
    // With an hour's threshold nothing is long enough; `b` grew memory, so
    // it is kept, and with it the frames it hangs from. `short` is not.
    let wasm = rewrite(
        &wat::parse_str(
            r#"(module
                 (memory 1)
                 (func $main (export "main") (result i32) (call $short) (call $a) (i32.const 0))
                 (func $short)
                 (func $a (call $b))
                 (func $b (drop (memory.grow (i32.const 1)))))"#,
        )
        .unwrap(),
    );
    let p = Pipeline::new();
    let mut ctx = p.ctx();
    ctx.set_min_function_duration(Duration::from_secs(3600));
    let (result, store) = run_module(&wasm, ctx);
    assert_eq!(result.unwrap(), 0);
    drop(store);
    let spans = p.spans();
    assert_eq!(
        tree(&spans),
        [
            ("a".into(), "main".into()),
            ("b".into(), "a".into()),
            ("main".into(), String::new()),
        ]
    );
    assert_eq!(span(&spans, "b").events.len(), 1);
}

/// A module written against Dylibso's Observe SDK, as its `observe-api`
/// guest libraries compile (`i32` pointers), plus the older
/// `dylibso_observe` module (`i64` pointers) and hostile calls.
const DYLIBSO_WAT: &str = r#"(module
  (import "dylibso:observe/instrument" "enter" (func $enter (param i32)))
  (import "dylibso:observe/instrument" "exit" (func $exit (param i32)))
  (import "dylibso:observe/instrument" "memory-grow" (func $grow (param i32)))
  (import "dylibso:observe/api" "span-enter" (func $span_enter (param i32 i32)))
  (import "dylibso:observe/api" "span-exit" (func $span_exit))
  (import "dylibso:observe/api" "span-tags" (func $span_tags (param i32 i32)))
  (import "dylibso:observe/api" "log" (func $log (param i32 i32 i32)))
  (import "dylibso:observe/api" "metric" (func $metric (param i32 i32 i32)))
  (import "dylibso_observe" "span_enter" (func $old_span_enter (param i64 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "request")
  (data (i32.const 16) "user:alice,cached")
  (data (i32.const 48) "hello from dylibso")
  (data (i32.const 80) "vowels.count:3|c|#lang:en\nlatency:2.5|ms")
  (data (i32.const 160) "legacy")
  (func $work (export "main") (result i32)
    (call $enter (i32.const 9))
    (call $span_enter (i32.const 0) (i32.const 7))
    (call $span_tags (i32.const 16) (i32.const 17))
    (call $log (i32.const 3) (i32.const 48) (i32.const 18))
    ;; An unknown level: logged as info, counted.
    (call $log (i32.const 9) (i32.const 48) (i32.const 5))
    (call $metric (i32.const 1) (i32.const 80) (i32.const 40))
    ;; An unknown format: dropped, counted.
    (call $metric (i32.const 7) (i32.const 80) (i32.const 5))
    ;; Strings outside memory: ignored, counted.
    (call $log (i32.const 3) (i32.const 65530) (i32.const 100))
    (call $log (i32.const 3) (i32.const -1) (i32.const -1))
    (call $grow (i32.const 3))
    (call $old_span_enter (i64.const 160) (i32.const 6))
    (call $span_exit)
    (call $span_exit)
    (call $exit (i32.const 9))
    ;; An exit with nothing open: counted.
    (call $exit (i32.const 12345678))
    ;; The largest id, with no name.
    (call $enter (i32.const -1))
    (call $exit (i32.const -1))
    (i32.const 0)))"#;

#[test]
fn dylibso_abi_spans_logs_and_metrics() {
    let wasm = wat::parse_str(DYLIBSO_WAT).unwrap();
    let p = Pipeline::new();
    let mut ctx = p.ctx();
    ctx.set_min_function_duration(Duration::ZERO);
    let (result, store) = run_module(&wasm, ctx);
    assert_eq!(result.unwrap(), 0);
    assert_eq!(store.data().observe.open_functions(), 0);
    drop(store);

    let spans = p.spans();
    assert_eq!(
        tree(&spans),
        [
            ("legacy".into(), "request".into()),
            ("request".into(), "work".into()),
            ("wasm-function[4294967295]".into(), String::new()),
            ("work".into(), String::new()),
        ]
    );
    let request = span(&spans, "request");
    assert_eq!(
        attr(&request.attributes, "user"),
        Some(&Value::String("alice".into()))
    );
    assert_eq!(
        attr(&request.attributes, "cached"),
        Some(&Value::Bool(true))
    );
    assert_eq!(request.events.len(), 1);
    assert_eq!(
        attr(&request.events[0].attributes, "wasm.memory.grow.pages"),
        Some(&Value::I64(3))
    );

    let logs = p.logs();
    assert_eq!(logs.len(), 2);
    let hello = logs
        .iter()
        .find(|l| body(l) == "hello from dylibso")
        .unwrap();
    assert_eq!(hello.severity_number(), Some(Severity::Info));
    assert_eq!(
        hello.trace_context().map(|tc| tc.span_id),
        Some(request.span_context.span_id())
    );
    assert!(logs.iter().any(|l| body(l) == "hello"));

    let metrics = p.metrics();
    let vowels = metric(&metrics, "vowels.count");
    let AggregatedMetrics::F64(MetricData::Sum(sum)) = vowels.data() else {
        panic!("vowels.count is not a sum: {vowels:?}");
    };
    let point = sum.data_points().next().unwrap();
    assert_eq!(point.value(), 3.0);
    assert!(has_attr(point.attributes(), &KeyValue::new("lang", "en")));
    let latency = metric(&metrics, "latency");
    assert!(
        matches!(
            latency.data(),
            AggregatedMetrics::F64(MetricData::Histogram(_))
        ),
        "{latency:?}"
    );

    let stats = p.telemetry.stats();
    // Unknown level, unknown format, two bad strings, an exit without enter.
    assert_eq!(stats.invalid_input, 5, "{stats}");
    assert_eq!(stats.measurements_dropped, 1, "{stats}");
}

#[test]
fn dylibso_imports_with_other_types_are_refused_before_running() {
    let wasm =
        wat::parse_str(r#"(module (import "dylibso:observe/api" "log" (func (param f32))))"#)
            .unwrap();
    let module = wasmtime::Module::new(engine(), &wasm).unwrap();
    let mut linker = wasmtime::Linker::<ModuleHost>::new(engine());
    let err = wasi_observe_host::dylibso::add_to_linker(&mut linker, &module).unwrap_err();
    assert!(err.to_string().contains("unsupported type"), "{err}");
    let wasm = wat::parse_str(r#"(module (import "dylibso:observe/api" "nope" (func)))"#).unwrap();
    let module = wasmtime::Module::new(engine(), &wasm).unwrap();
    let err = wasi_observe_host::dylibso::add_to_linker(&mut linker, &module).unwrap_err();
    assert!(err.to_string().contains("unsupported"), "{err}");
}

/// A recorder batch (16 words) of these events, padded.
fn batch(events: &[wasi_observe_instrument::Event]) -> Vec<u64> {
    let mut words = wasi_observe_instrument::Event::encode_words(events);
    assert!(words.len() <= 16);
    words.resize(16, 0);
    words
}

#[test]
fn hostile_recorder_batches_are_counted() {
    use wasi_observe_instrument::Event;
    let p = Pipeline::new();
    let mut ctx = p.ctx();
    ctx.set_min_function_duration(Duration::ZERO);
    // An exit with nothing open; an enter; an exit of another id (ignored);
    // a grow; the right exit; then a word with its top bit set whose three
    // slots are grows with no frame open, and zero padding.
    let mut words = batch(&[
        Event::Exit(7),
        Event::Enter(3),
        Event::Exit(99),
        Event::MemoryGrow(1),
        Event::Exit(3),
    ]);
    words[5] = u64::MAX;
    ctx.recorder_flush(&words);
    assert_eq!(ctx.open_functions(), 0);
    drop(ctx);
    let spans = p.spans();
    assert_eq!(names(&spans), ["wasm-function[3]"]);
    assert_eq!(spans[0].events.len(), 1);
    // The stray exit, the mismatched exit, the top bit, the three grows
    // with no frame.
    assert_eq!(p.telemetry.stats().invalid_input, 6);
}

/// Values beyond one slot take a `high` slot first, which may end one batch
/// and apply to the first event of the next; a `high` slot overwritten
/// before its event, and values beyond 2^30 - 1, are counted and skipped.
#[test]
fn recorder_high_slots() {
    use wasi_observe_instrument::{Event, MAX_EVENT_VALUE, MAX_SLOT_VALUE};
    let p = Pipeline::new();
    let mut ctx = p.ctx();
    ctx.set_min_function_duration(Duration::ZERO);
    let big = MAX_SLOT_VALUE + 5;
    ctx.recorder_flush(&batch(&[
        Event::Enter(big),
        Event::Enter(MAX_EVENT_VALUE),
        Event::MemoryGrow(1 << 20),
        Event::Exit(MAX_EVENT_VALUE),
    ]));
    assert_eq!(ctx.open_functions(), 1);
    // The exit's `high` slot at the end of one batch, its event slot at the
    // start of the next.
    let (high, slot) = Event::Exit(big).encode();
    let mut words = vec![0u64; 16];
    words[15] = u64::from(high.unwrap()) << 42;
    ctx.recorder_flush(&words);
    assert_eq!(ctx.open_functions(), 1);
    words[15] = 0;
    words[0] = u64::from(slot);
    ctx.recorder_flush(&words);
    assert_eq!(ctx.open_functions(), 0);
    assert_eq!(ctx.function_calls(), 2);
    // Two `high` slots in a row (the first is lost), then a value beyond
    // 2^30 - 1 (a `high` of 2^19 - 1 with an enter), both counted; an enter
    // of id 0 after them is a plain enter.
    let high = |h: u64| h << 2;
    words.fill(0);
    words[0] = high(1) | (high(2) << 21) | ((u64::from(MAX_SLOT_VALUE) << 2 | 1) << 42);
    words[1] = high(u64::from(MAX_SLOT_VALUE)) | (1 << 21) | (1 << 42);
    ctx.recorder_flush(&words);
    assert_eq!(ctx.open_functions(), 2);
    assert_eq!(ctx.end_open_spans("done"), 2);
    drop(ctx);
    let spans = p.spans();
    let mut names = names(&spans);
    names.sort();
    let mut expected = vec![
        format!("wasm-function[{}]", (2 << 19) | MAX_SLOT_VALUE),
        "wasm-function[0]".to_string(),
        format!("wasm-function[{big}]"),
        format!("wasm-function[{MAX_EVENT_VALUE}]"),
    ];
    expected.sort();
    assert_eq!(names, expected);
    let grow = spans
        .iter()
        .flat_map(|s| s.events.iter())
        .find(|e| e.name == "memory.grow")
        .unwrap();
    assert_eq!(
        attr(&grow.attributes, "wasm.memory.grow.pages"),
        Some(&Value::I64(1 << 20))
    );
    // The overwritten `high` slot and the value beyond range.
    assert_eq!(p.telemetry.stats().invalid_input, 2);
}

/// Random words: never a panic, and every frame still ends.
#[test]
fn recorder_random_words() {
    let p = Pipeline::new();
    let mut ctx = p.ctx();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..2000 {
        let mut words = [0u64; 16];
        for w in &mut words {
            let r = next();
            // Small ids in most words, so that enters and exits meet.
            *w = if round % 3 == 0 {
                r
            } else {
                r & 0x0000_3c0f_8001_e07f
            };
        }
        ctx.set_min_function_duration(Duration::from_nanos(next() % 1000));
        ctx.recorder_flush(&words);
    }
    assert!(ctx.function_calls() > 1000, "{}", ctx.function_calls());
    ctx.end_open_spans("done");
    assert_eq!(ctx.open_functions(), 0);
    drop(ctx);
    // What was exported is a tree: no orphan, one trace per root.
    let spans = p.spans();
    assert!(!spans.is_empty());
    tree(&spans);
}

/// A frame is exported under the parent it had when it got its identity,
/// even if that guest span's handle was dropped meanwhile and its key given
/// to a span that hangs from the frame (no cycle).
#[test]
fn a_reused_span_key_does_not_reparent_a_frame() {
    use wasi_observe_host::fuzzing::calls;
    let p = Pipeline::new();
    let mut ctx = p.ctx();
    ctx.set_min_function_duration(Duration::ZERO);
    let s = calls::start(&mut ctx, "outer");
    ctx.hook_enter(1);
    calls::drop_handle(&mut ctx, s);
    let s2 = calls::start(&mut ctx, "inner");
    assert_eq!(s2, s, "the test needs the key to be reused");
    ctx.hook_exit(1);
    calls::end(&mut ctx, s2);
    calls::drop_handle(&mut ctx, s2);
    drop(ctx);
    let spans = p.spans();
    let f = span(&spans, "wasm-function[1]");
    let inner = span(&spans, "inner");
    assert_eq!(inner.parent_span_id, f.span_context.span_id());
    assert_ne!(f.parent_span_id, inner.span_context.span_id(), "a cycle");
    assert_eq!(inner.span_context.trace_id(), f.span_context.trace_id());
}

/// Function frames pass their parent's trace-state on, to themselves and
/// to the guest spans (and outgoing requests) under them.
#[test]
fn function_frames_keep_the_trace_state() {
    use wasi_observe_host::fuzzing::calls;
    let p = Pipeline::new();
    let mut ctx = p.ctx();
    ctx.set_min_function_duration(Duration::ZERO);
    let state = TraceState::from_key_value([("vendor", "v1")]).unwrap();
    let caller = remote_parent();
    ctx.set_parent(Some(SpanContext::new(
        caller.trace_id(),
        caller.span_id(),
        caller.trace_flags(),
        true,
        state.clone(),
    )));
    ctx.hook_enter(1);
    let child = calls::start(&mut ctx, "child");
    calls::end(&mut ctx, child);
    calls::drop_handle(&mut ctx, child);
    ctx.hook_exit(1);
    drop(ctx);
    let spans = p.spans();
    let f = span(&spans, "wasm-function[1]");
    assert_eq!(f.parent_span_id, caller.span_id());
    assert_eq!(f.span_context.trace_state(), &state);
    let child = span(&spans, "child");
    assert_eq!(child.parent_span_id, f.span_context.span_id());
    assert_eq!(child.span_context.trace_state(), &state);
}

/// The minimum duration, at a threshold calls can reach: a call longer than
/// it is a span, a shorter one is not.
#[test]
fn calls_shorter_than_the_minimum_are_not_spans() {
    let p = Pipeline::new();
    let mut ctx = p.ctx();
    ctx.set_min_function_duration(Duration::from_micros(500));
    ctx.hook_enter(1);
    std::thread::sleep(Duration::from_millis(2));
    ctx.hook_exit(1);
    ctx.hook_enter(2);
    ctx.hook_exit(2);
    // The same through recorder batches, whose events share the time since
    // the previous flush evenly: (enter 3, exit 3) right away, then
    // (enter 4, exit 4) 2 ms later, 1 ms apart.
    let pair = |id: u64| (1 | id << 2) | (2 | id << 2) << 21;
    ctx.recorder_flush(&[pair(3)]);
    std::thread::sleep(Duration::from_millis(2));
    ctx.recorder_flush(&[pair(4)]);
    drop(ctx);
    assert_eq!(names(&p.spans()), ["wasm-function[1]", "wasm-function[4]"]);
}

/// An exit that matches a frame below the top ends the frames above it as
/// unwound; frames beyond the depth limit are refused and counted, and
/// exits stay matched.
#[test]
fn unwound_frames_and_the_depth_limit() {
    let p = Pipeline::new();
    let mut ctx = p.ctx();
    ctx.set_min_function_duration(Duration::ZERO);
    ctx.hook_enter(1);
    ctx.hook_enter(2);
    ctx.hook_exit(1);
    assert_eq!(ctx.open_functions(), 0);
    let depth = wasi_observe_host::functions::MAX_DEPTH;
    ctx.set_min_function_duration(Duration::from_secs(3600));
    for _ in 0..=depth {
        ctx.hook_enter(7);
    }
    assert_eq!(ctx.open_functions(), depth);
    for _ in 0..=depth {
        ctx.hook_exit(7);
    }
    assert_eq!(ctx.open_functions(), 0);
    drop(ctx);
    let spans = p.spans();
    assert_eq!(
        tree(&spans),
        [
            ("wasm-function[1]".to_string(), String::new()),
            (
                "wasm-function[2]".to_string(),
                "wasm-function[1]".to_string()
            ),
        ]
    );
    let unwound = span(&spans, "wasm-function[2]");
    assert_eq!(unwound.status, Status::error("unwound without an exit"));
    let stats = p.telemetry.stats();
    assert_eq!(stats.invalid_input, 1);
    assert_eq!(stats.spans_dropped_open_limit, 1);
}

/// Runs a component from bytes (the test linker has the recorder import).
fn run_bytes(wasm: &[u8], observe: WasiObserveCtx, args: &[&str]) -> Run {
    let component = Component::new(engine(), wasm).unwrap();
    Run::component(&component, observe, args)
}

fn instrumented_component_tree(wasm: &[u8]) -> (String, Vec<SpanData>) {
    let p = Pipeline::new();
    let mut ctx = p.ctx();
    ctx.set_function_names(Arc::new(FunctionNames::from_wasm(wasm)));
    ctx.set_min_function_duration(Duration::ZERO);
    let mut r = run_bytes(wasm, ctx, &["instrumented", "12"]);
    r.succeeded();
    assert_eq!(r.store.data().observe.open_functions(), 0, "balanced");
    assert_eq!(r.end_open_spans("left open"), 0);
    drop(r.store);
    assert!(!p.telemetry.stats().has_losses(), "{}", p.telemetry.stats());
    (r.stdout, p.spans())
}

/// The guest SDK's spans in an instrumented component nest in the
/// functions that started them (not in the SDK's own functions, which are
/// frames too), and those functions in the spans they were called in: one
/// trace, `main` -> `sdk-outer` -> `outer_work` -> `sdk-inner` -> `api_work`
/// -> `api-span`, and the log record on `sdk-inner`.
#[test]
pub(crate) fn sdk_instrumented() {
    let original = std::fs::read(test_programs_artifacts::SDK_INSTRUMENTED_COMPONENT).unwrap();
    let wasm = rewrite(&original);
    let p = Pipeline::new();
    let mut ctx = p.ctx();
    ctx.set_function_names(Arc::new(FunctionNames::from_wasm(&wasm)));
    // The default minimum: short frames are kept only where spans need them.
    let mut r = run_bytes(&wasm, ctx, &["sdk_instrumented"]);
    r.succeeded();
    assert_eq!(r.stdout, "done\n");
    assert_eq!(r.end_open_spans("left open"), 0);
    drop(r.store);
    let spans = p.spans();
    let edges = tree(&spans);
    let parent_of = |name: &str| {
        edges
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.as_str())
            .unwrap_or_else(|| panic!("no span {name:?} in {edges:?}"))
    };
    assert_eq!(
        parent_of("sdk-outer"),
        "sdk_instrumented::main",
        "{edges:?}"
    );
    assert_eq!(parent_of("sdk_instrumented::outer_work"), "sdk-outer");
    assert_eq!(parent_of("sdk-inner"), "sdk_instrumented::outer_work");
    assert_eq!(parent_of("sdk_instrumented::api_work"), "sdk-inner");
    assert_eq!(parent_of("api-span"), "sdk_instrumented::api_work");
    let trace = span(&spans, "api-span").span_context.trace_id();
    assert!(spans.iter().all(|s| s.span_context.trace_id() == trace));
    let logs = p.logs();
    let inner = span(&spans, "sdk-inner");
    let log = logs
        .iter()
        .find(|l| body(l) == "inside sdk-inner")
        .expect("the log record");
    assert_eq!(
        log.trace_context().map(|tc| tc.span_id),
        Some(inner.span_context.span_id())
    );
}

#[test]
pub(crate) fn instrumented() {
    let original = std::fs::read(test_programs_artifacts::INSTRUMENTED_COMPONENT).unwrap();
    let wasm = rewrite(&original);
    let plain = run(
        test_programs_artifacts::INSTRUMENTED_COMPONENT,
        Pipeline::new().ctx(),
        &["instrumented", "12"],
    );
    plain.succeeded();

    let (stdout, spans) = instrumented_component_tree(&wasm);
    assert_eq!(stdout, plain.stdout, "same output");
    assert!(stdout.starts_with("fib(12) = 144\n"), "{stdout}");
    let edges = tree(&spans);
    let fib = "instrumented::fib";
    // Every call of fib is a span, nested as the calls were (the compiler
    // may have folded some recursion into loops: count the tree, not calls).
    assert!(count(&edges, fib, fib) > 10, "{edges:?}");
    // The guest span hangs from the function that started it (or from the
    // bindings' wrapper it called, if that was not inlined), and the
    // function called inside it from the guest span.
    let guest = span(&spans, "guest-span");
    assert!(
        ancestors(&spans, guest).contains(&"instrumented::traced".to_string()),
        "{:?}",
        ancestors(&spans, guest)
    );
    assert_eq!(
        count(&edges, "instrumented::inside_guest_span", "guest-span"),
        1
    );
    let inside = span(&spans, "instrumented::inside_guest_span");
    assert!(guest.start_time <= inside.start_time && inside.end_time <= guest.end_time);
    // The allocator's memory.grow is on the span that grew memory.
    let grows: Vec<_> = spans
        .iter()
        .flat_map(|s| s.events.iter().map(move |e| (s, e)))
        .filter(|(_, e)| e.name == "memory.grow")
        .collect();
    assert!(
        grows.iter().any(|(_, e)| matches!(
            attr(&e.attributes, "wasm.memory.grow.pages"),
            Some(Value::I64(n)) if *n >= 64
        )),
        "{grows:?}"
    );

    // Deterministic: the same input gives the same tree.
    let (_, again) = instrumented_component_tree(&wasm);
    assert_eq!(tree(&again), edges);
}

#[test]
fn instrumented_component_trap_ends_open_frames() {
    let original = std::fs::read(test_programs_artifacts::TRAP_OPEN_SPANS_COMPONENT).unwrap();
    let wasm = rewrite(&original);
    let p = Pipeline::new();
    let mut ctx = p.ctx();
    ctx.set_function_names(Arc::new(FunctionNames::from_wasm(&wasm)));
    let mut r = run_bytes(&wasm, ctx, &["trap_open_spans"]);
    assert!(r.result.is_err());
    assert!(r.store.data().observe.open_functions() > 0);
    r.end_open_spans("trapped");
    assert_eq!(r.store.data().observe.open_functions(), 0);
    drop(r);
    let spans = p.spans();
    tree(&spans);
    // The guest's spans are there, under the function that opened them,
    // and every frame open at the trap ended with the trap's status.
    let outer = span(&spans, "outer");
    assert_eq!(outer.status, Status::error("trapped"));
    let up = ancestors(&spans, outer);
    assert!(
        up.iter().any(|n| n.contains("trap_open_spans::main")),
        "{up:?}"
    );
    let main = spans
        .iter()
        .find(|s| s.name.contains("trap_open_spans::main"))
        .unwrap();
    assert_eq!(main.status, Status::error("trapped"));
}

/// Names of a span's ancestors, nearest first.
fn ancestors(spans: &[SpanData], s: &SpanData) -> Vec<String> {
    let mut out = Vec::new();
    let mut parent = s.parent_span_id;
    while let Some(p) = spans.iter().find(|x| x.span_context.span_id() == parent) {
        out.push(p.name.to_string());
        parent = p.parent_span_id;
    }
    out
}

/// A named span refused at the open-span limit refuses the frames entered
/// above it too, so later exits still match their own frames; tags and
/// memory grows on refused frames are dropped (counted), and a module that
/// imports a hook twice still links.
#[test]
fn refused_frames_keep_exits_in_order() {
    let wasm = wat::parse_str(
        r#"(module
  (import "dylibso:observe/instrument" "enter" (func $enter (param i32)))
  (import "dylibso:observe/instrument" "exit" (func $exit (param i32)))
  (import "dylibso:observe/instrument" "exit" (func $exit_again (param i32)))
  (import "dylibso:observe/instrument" "memory-grow" (func $grow (param i32)))
  (import "dylibso:observe/api" "span-enter" (func $span_enter (param i32 i32)))
  (import "dylibso:observe/api" "span-exit" (func $span_exit))
  (import "dylibso:observe/api" "span-tags" (func $span_tags (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "outer")
  (data (i32.const 8) "refused")
  (data (i32.const 16) "k:v")
  (func (export "main") (result i32)
    (call $span_enter (i32.const 0) (i32.const 5))
    ;; The limit is 1: this named span is refused...
    (call $span_enter (i32.const 8) (i32.const 7))
    ;; ...and so is this plain frame above it, with its tags and grows.
    (call $enter (i32.const 1))
    (call $span_tags (i32.const 16) (i32.const 3))
    (call $grow (i32.const 1))
    (call $exit_again (i32.const 1))
    (call $span_exit)
    ;; Tagged on `outer`, which then ends.
    (call $span_tags (i32.const 16) (i32.const 3))
    (call $span_exit)
    (i32.const 0)))"#,
    )
    .unwrap();
    let p = Pipeline::with(|b| {
        b.with_limits(Limits {
            open_spans_per_store: 1,
            ..Limits::default()
        })
    });
    let mut ctx = p.ctx();
    ctx.set_min_function_duration(Duration::ZERO);
    let (result, store) = run_module(&wasm, ctx);
    assert_eq!(result.unwrap(), 0);
    assert_eq!(store.data().observe.open_functions(), 0);
    drop(store);
    let spans = p.spans();
    assert_eq!(names(&spans), ["outer"]);
    assert_eq!(
        attr(&spans[0].attributes, "k"),
        Some(&Value::String("v".into()))
    );
    assert!(spans[0].events.is_empty());
    let stats = p.telemetry.stats();
    assert_eq!(stats.invalid_input, 0);
    assert_eq!(stats.spans_dropped_open_limit, 2);
    // The tag and the grow of the refused frame.
    assert_eq!(stats.attributes_dropped, 1);
    assert_eq!(stats.events_dropped, 1);
}

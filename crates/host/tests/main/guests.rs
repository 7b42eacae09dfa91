//! One test per guest program (the names must match, see `main.rs`), and
//! tests of what the guests share: stores, handles, limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use opentelemetry::logs::{AnyValue, Severity};
use opentelemetry::trace::{SpanId, SpanKind, Status, TraceFlags, TraceId};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLogRecord};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::trace::{Sampler, SpanData};
use wasi_observe_host::export::batch::BatchConfig;
use wasi_observe_host::{Limits, Telemetry, WasiObserveCtx, WasiObserveCtxBuilder};
use wasmtime::component::Component;
use wasmtime::{Engine, Store};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::support::*;

fn hex_trace(id: TraceId) -> String {
    format!("{id:032x}")
}

fn hex_span(id: SpanId) -> String {
    format!("{id:016x}")
}

const TRACER_FEATURES_SPANS: [&str; 5] =
    ["child", "detached", "dropped", "grandchild-renamed", "root"];

#[test]
pub(crate) fn tracer_features() {
    let p = Pipeline::new();
    let r = run(
        test_programs_artifacts::TRACER_FEATURES_COMPONENT,
        p.ctx(),
        &["tracer_features"],
    );
    r.succeeded();
    assert_eq!(r.store.data().observe.open_spans(), 0);
    let spans = p.spans();
    // Each span exactly once: a second `end`, and the drop after `end`, export
    // nothing more.
    assert_eq!(names(&spans), TRACER_FEATURES_SPANS, "{spans:#?}");

    let root = span(&spans, "root");
    let child = span(&spans, "child");
    let grandchild = span(&spans, "grandchild-renamed");
    let dropped = span(&spans, "dropped");
    let detached = span(&spans, "detached");

    // The tree.
    assert_eq!(root.span_kind, SpanKind::Server);
    assert_eq!(child.span_kind, SpanKind::Client);
    assert_eq!(grandchild.span_kind, SpanKind::Producer);
    assert_eq!(dropped.span_kind, SpanKind::Consumer);
    assert_eq!(detached.span_kind, SpanKind::Internal);
    assert_eq!(root.parent_span_id, SpanId::INVALID);
    assert!(!root.parent_span_is_remote);
    assert_eq!(child.parent_span_id, root.span_context.span_id());
    assert_eq!(grandchild.parent_span_id, child.span_context.span_id());
    assert_eq!(dropped.parent_span_id, child.span_context.span_id());
    let trace = root.span_context.trace_id();
    for s in [child, grandchild, dropped] {
        assert_eq!(s.span_context.trace_id(), trace, "{}", s.name);
    }
    assert_eq!(detached.parent_span_id, SpanId::INVALID);
    assert_ne!(detached.span_context.trace_id(), trace);
    for s in &spans {
        assert!(s.span_context.is_valid());
        assert!(s.span_context.is_sampled());
        assert!(!s.span_context.is_remote());
    }

    // The ids the guest saw are the exported ones.
    let printed = printed_ids(&r);
    assert_eq!(printed.len(), 4, "stdout: {}", r.stdout);
    for (name, s) in [
        ("root", root),
        ("child", child),
        ("grandchild", grandchild),
        ("detached", detached),
    ] {
        let (t, id) = &printed[name];
        assert_eq!(*t, hex_trace(s.span_context.trace_id()), "{name}");
        assert_eq!(*id, hex_span(s.span_context.span_id()), "{name}");
    }

    // Root: its explicit start time and attributes of every value kind, with
    // `set-attributes` overwriting in place and appending.
    assert_eq!(root.start_time, at(1_700_000_000, 0));
    assert!(root.end_time > root.start_time);
    let expected = vec![
        KeyValue::new("str", "overwritten"),
        KeyValue::new("bool", true),
        KeyValue::new("f64", 1.5),
        KeyValue::new("s64", -42i64),
        KeyValue::new(
            "str-array",
            Value::Array(Array::String(vec![
                StringValue::from("a"),
                StringValue::from("b"),
            ])),
        ),
        KeyValue::new("bool-array", Value::Array(Array::Bool(vec![true, false]))),
        KeyValue::new("f64-array", Value::Array(Array::F64(vec![0.25, -2.0]))),
        KeyValue::new("s64-array", Value::Array(Array::I64(vec![1, 2, 3]))),
        KeyValue::new("late", "yes"),
    ];
    assert_eq!(root.attributes, expected);
    assert_eq!(root.dropped_attributes_count, 0);
    assert!(matches!(
        attr(&root.attributes, "str"),
        Some(Value::String(_))
    ));
    assert!(matches!(
        attr(&root.attributes, "bool"),
        Some(Value::Bool(true))
    ));
    assert!(matches!(attr(&root.attributes, "f64"), Some(Value::F64(_))));
    assert!(matches!(
        attr(&root.attributes, "s64"),
        Some(Value::I64(-42))
    ));
    assert_eq!(root.status, Status::Unset);

    // Child: two events, Ok status (the later error is ignored).
    let events = &child.events.events;
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[0].name, "explicit-time");
    assert_eq!(events[0].timestamp, at(1_700_000_001, 500));
    assert_eq!(events[0].attributes, vec![KeyValue::new("n", 7i64)]);
    assert_eq!(events[1].name, "now");
    assert!(events[1].attributes.is_empty());
    assert!(events[1].timestamp >= child.start_time);
    assert!(events[1].timestamp <= child.end_time);
    assert_eq!(child.status, Status::Ok);
    assert!(child.start_time <= child.end_time);

    // Grandchild: error status, the two links, the explicit end time, nothing
    // set after the end.
    assert_eq!(grandchild.status, Status::error("it broke"));
    assert_eq!(grandchild.end_time, at(4_000_000_000, 0));
    let links = &grandchild.links.links;
    assert_eq!(links.len(), 2, "{links:#?}");
    assert_eq!(grandchild.links.dropped_count, 0);
    let remote = &links[0].span_context;
    assert_eq!(
        remote.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_eq!(
        remote.span_id(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap()
    );
    assert!(remote.is_remote());
    assert!(remote.is_sampled());
    assert_eq!(remote.trace_state().header(), "vendor=v1");
    assert_eq!(remote.trace_state().get("vendor"), Some("v1"));
    assert_eq!(
        links[0].attributes,
        vec![KeyValue::new("link-attr", "start")]
    );
    let to_root = &links[1].span_context;
    assert_eq!(to_root.trace_id(), root.span_context.trace_id());
    assert_eq!(to_root.span_id(), root.span_context.span_id());
    assert!(!to_root.is_remote());
    assert_eq!(
        links[1].attributes,
        vec![KeyValue::new("link-attr", "added")]
    );
    assert_eq!(attr(&grandchild.attributes, "after-end"), None);
    assert!(grandchild.attributes.is_empty());

    let stats = p.telemetry.stats();
    assert_eq!(stats.spans_ended, 5);
    assert_eq!(stats.spans_exported, 5);
    assert_eq!(stats.invalid_input, 0);
    assert!(!stats.has_losses(), "{stats}");
}

#[test]
fn tracer_features_logs() {
    let p = Pipeline::new();
    let r = run(
        test_programs_artifacts::TRACER_FEATURES_COMPONENT,
        p.ctx(),
        &["tracer_features"],
    );
    r.succeeded();
    let spans = p.spans();
    let root = span(&spans, "root");
    let child = span(&spans, "child");
    let logs = p.logs();
    assert_eq!(logs.len(), 8, "{logs:#?}");

    let expected = [
        (Severity::Trace, 1, "TRACE", "ctx.trace", "a trace message"),
        (Severity::Debug, 5, "DEBUG", "ctx.debug", "a debug message"),
        (Severity::Info, 9, "INFO", "ctx.info", "an info message"),
        (Severity::Warn, 13, "WARN", "ctx.warn", "a warn message"),
        (
            Severity::Error,
            17,
            "ERROR",
            "ctx.error",
            "an error message",
        ),
        (
            Severity::Fatal,
            21,
            "CRITICAL",
            "ctx.critical",
            "a critical message",
        ),
    ];
    for (record, (severity, number, text, target, message)) in logs.iter().zip(expected) {
        assert_eq!(record.severity_number(), Some(severity));
        assert_eq!(record.severity_number().map(|s| s as i32), Some(number));
        assert_eq!(record.severity_text(), Some(text));
        assert_eq!(body(record), message);
        assert_eq!(record.target().map(|t| t.as_ref()), Some(target));
        assert!(record.timestamp().is_some());
        let tc = record.trace_context().expect("logged inside `child`");
        assert_eq!(tc.trace_id, child.span_context.trace_id());
        assert_eq!(tc.span_id, child.span_context.span_id());
        assert_eq!(tc.trace_flags, Some(TraceFlags::SAMPLED));
    }

    // With only the root open, and an empty context: no target.
    let inside_root = &logs[6];
    assert_eq!(body(inside_root), "outside any span? no: root is open");
    assert_eq!(inside_root.target(), None);
    let tc = inside_root.trace_context().expect("logged inside `root`");
    assert_eq!(tc.span_id, root.span_context.span_id());

    // After every span ended: no trace context.
    let last = &logs[7];
    assert_eq!(body(last), "after every span ended");
    assert_eq!(last.target().map(|t| t.as_ref()), Some("main"));
    assert_eq!(last.severity_number(), Some(Severity::Info));
    assert!(last.trace_context().is_none(), "{last:?}");

    let stats = p.telemetry.stats();
    assert_eq!(stats.logs_emitted, 8);
    assert_eq!(stats.logs_exported, 8);
}

#[test]
fn tracer_features_metrics() {
    let p = Pipeline::new();
    let r = run(
        test_programs_artifacts::TRACER_FEATURES_COMPONENT,
        p.ctx(),
        &["tracer_features"],
    );
    r.succeeded();
    let exports = p.metrics();

    // A counter used through an `instrument` and by name: one instrument.
    let requests = metric(&exports, "requests");
    assert_eq!(requests.unit(), "{request}");
    assert_eq!(requests.description(), "requests served");
    let AggregatedMetrics::U64(MetricData::Sum(sum)) = requests.data() else {
        panic!("requests is not an integer sum: {requests:?}");
    };
    assert!(sum.is_monotonic());
    let points: Vec<_> = sum.data_points().collect();
    assert_eq!(points.len(), 2, "{points:?}");
    let value = |route: &str| {
        let kv = KeyValue::new("route", route.to_string());
        points
            .iter()
            .find(|p| has_attr(p.attributes(), &kv))
            .unwrap_or_else(|| panic!("no point for route {route}"))
            .value()
    };
    assert_eq!(value("/a"), 7);
    assert_eq!(value("/b"), 10);

    let depth = metric(&exports, "queue.depth");
    let AggregatedMetrics::F64(MetricData::Sum(sum)) = depth.data() else {
        panic!("queue.depth is not a float sum: {depth:?}");
    };
    assert!(!sum.is_monotonic());
    let points: Vec<_> = sum.data_points().collect();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].value(), 3.0);

    let latency = metric(&exports, "latency");
    assert_eq!(latency.unit(), "ms");
    let AggregatedMetrics::F64(MetricData::Histogram(hist)) = latency.data() else {
        panic!("latency is not a float histogram: {latency:?}");
    };
    let points: Vec<_> = hist.data_points().collect();
    assert_eq!(points.len(), 1);
    let point = points[0];
    assert_eq!(point.bounds().collect::<Vec<_>>(), vec![5.0, 10.0, 50.0]);
    assert_eq!(point.bucket_counts().collect::<Vec<_>>(), vec![1, 1, 1, 1]);
    assert_eq!(point.count(), 4);
    assert_eq!(point.sum(), 138.0);
    assert_eq!(point.min(), Some(1.0));
    assert_eq!(point.max(), Some(100.0));

    let temperature = metric(&exports, "temperature");
    let AggregatedMetrics::I64(MetricData::Gauge(gauge)) = temperature.data() else {
        panic!("temperature is not an integer gauge: {temperature:?}");
    };
    let points: Vec<_> = gauge.data_points().collect();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].value(), 42);

    let stats = p.telemetry.stats();
    assert_eq!(stats.measurements, 11);
    assert_eq!(stats.measurements_dropped, 0);
}

#[test]
fn tracer_features_ambient_parent() {
    let p = Pipeline::new();
    let parent = remote_parent();
    let r = run(
        test_programs_artifacts::TRACER_FEATURES_COMPONENT,
        p.ctx().with_parent(parent.clone()),
        &["tracer_features"],
    );
    r.succeeded();
    let spans = p.spans();
    assert_eq!(names(&spans), TRACER_FEATURES_SPANS);
    let root = span(&spans, "root");
    let child = span(&spans, "child");
    let detached = span(&spans, "detached");

    // The guest's root continues the ambient trace.
    assert_eq!(root.span_context.trace_id(), parent.trace_id());
    assert_eq!(root.parent_span_id, parent.span_id());
    assert!(root.parent_span_is_remote);
    assert_ne!(root.span_context.span_id(), parent.span_id());
    assert_eq!(
        printed_ids(&r)["root"].0,
        hex_trace(parent.trace_id()),
        "the guest sees the ambient trace id"
    );
    // Its children hang under it, not under the ambient parent.
    assert_eq!(child.parent_span_id, root.span_context.span_id());
    assert!(!child.parent_span_is_remote);
    for s in &spans {
        if s.name != "detached" {
            assert_eq!(s.span_context.trace_id(), parent.trace_id(), "{}", s.name);
        }
    }
    // `new-root` ignores the ambient parent.
    assert_eq!(detached.parent_span_id, SpanId::INVALID);
    assert!(!detached.parent_span_is_remote);
    assert_ne!(detached.span_context.trace_id(), parent.trace_id());

    // Log records inside the root carry the guest's span, not the ambient one;
    // after every span ended they carry the ambient parent.
    let logs = p.logs();
    let last = logs.last().unwrap();
    assert_eq!(body(last), "after every span ended");
    let tc = last.trace_context().expect("the ambient parent");
    assert_eq!(tc.trace_id, parent.trace_id());
    assert_eq!(tc.span_id, parent.span_id());
}

#[test]
fn tracer_features_isolated_stores() {
    let p = Pipeline::new();
    let parent = remote_parent();
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| {
            let mut r = run(
                test_programs_artifacts::TRACER_FEATURES_COMPONENT,
                p.ctx().with_parent(parent.clone()),
                &["tracer_features"],
            );
            r.succeeded();
            assert_eq!(r.end_open_spans("unused"), 0);
            printed_ids(&r)
        });
        let b = scope.spawn(|| {
            let r = run(
                test_programs_artifacts::TRACER_FEATURES_COMPONENT,
                p.ctx(),
                &["tracer_features"],
            );
            r.succeeded();
            printed_ids(&r)
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    let spans = p.spans();
    assert_eq!(spans.len(), 10, "{:?}", names(&spans));

    let trace = |ids: &HashMap<String, (String, String)>, name: &str| ids[name].0.clone();
    let a_trace = trace(&a, "root");
    let b_trace = trace(&b, "root");
    assert_eq!(a_trace, hex_trace(parent.trace_id()));
    let traces = [
        a_trace.clone(),
        trace(&a, "detached"),
        b_trace.clone(),
        trace(&b, "detached"),
    ];
    for i in 0..traces.len() {
        for j in i + 1..traces.len() {
            assert_ne!(traces[i], traces[j], "stores share a trace");
        }
    }

    // Each store's main trace holds exactly its own four spans, parented
    // among themselves (and store A's root to the ambient parent only).
    for (store, main, ambient) in [
        ("A", &a_trace, Some(parent.span_id())),
        ("B", &b_trace, None),
    ] {
        let tree: Vec<&SpanData> = spans
            .iter()
            .filter(|s| hex_trace(s.span_context.trace_id()) == *main)
            .collect();
        let mut tree_names: Vec<&str> = tree.iter().map(|s| s.name.as_ref()).collect();
        tree_names.sort();
        assert_eq!(
            tree_names,
            ["child", "dropped", "grandchild-renamed", "root"],
            "store {store}"
        );
        let ids: Vec<SpanId> = tree.iter().map(|s| s.span_context.span_id()).collect();
        for s in &tree {
            if s.name == "root" {
                assert_eq!(
                    s.parent_span_id,
                    ambient.unwrap_or(SpanId::INVALID),
                    "store {store}"
                );
                assert_eq!(s.parent_span_is_remote, ambient.is_some(), "store {store}");
            } else {
                assert!(ids.contains(&s.parent_span_id), "store {store}: {s:?}");
            }
        }
    }
    // The detached roots have no parent at all.
    for s in spans.iter().filter(|s| s.name == "detached") {
        assert_eq!(s.parent_span_id, SpanId::INVALID);
    }
}

#[test]
pub(crate) fn trap_open_spans() {
    let p = Pipeline::new();
    let mut r = run(
        test_programs_artifacts::TRAP_OPEN_SPANS_COMPONENT,
        p.ctx(),
        &["trap_open_spans"],
    );
    let err = r.result.as_ref().expect_err("the guest aborts");
    assert!(
        err.downcast_ref::<wasmtime::Trap>().is_some(),
        "not a trap: {err:?}"
    );
    assert_eq!(r.store.data().observe.open_spans(), 2);
    // Nothing open is exported before the embedder ends it.
    assert_eq!(names(&p.spans()), ["done-before-trap"]);

    let reason = "the guest trapped with this span open";
    assert_eq!(r.end_open_spans(reason), 2);
    assert_eq!(r.store.data().observe.open_spans(), 0);
    assert_eq!(r.end_open_spans(reason), 0, "ending twice does nothing");
    drop(r);

    let spans = p.spans();
    assert_eq!(names(&spans), ["done-before-trap", "inner", "outer"]);
    let outer = span(&spans, "outer");
    let inner = span(&spans, "inner");
    let done = span(&spans, "done-before-trap");
    assert_eq!(outer.status, Status::error(reason));
    assert_eq!(inner.status, Status::error(reason));
    assert_eq!(done.status, Status::Unset);
    assert_eq!(inner.parent_span_id, outer.span_context.span_id());
    assert_eq!(done.parent_span_id, inner.span_context.span_id());
    assert_eq!(outer.end_time, inner.end_time, "ended together");
    assert!(inner.end_time >= done.end_time);

    let logs = p.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(body(&logs[0]), "about to trap");
    assert_eq!(logs[0].severity_number(), Some(Severity::Error));
    assert_eq!(
        logs[0].trace_context().map(|tc| tc.span_id),
        Some(inner.span_context.span_id())
    );
}

#[test]
fn trap_open_spans_ended_when_the_store_drops() {
    let p = Pipeline::new();
    let r = run(
        test_programs_artifacts::TRAP_OPEN_SPANS_COMPONENT,
        p.ctx(),
        &["trap_open_spans"],
    );
    assert!(r.result.is_err());
    assert_eq!(r.store.data().observe.open_spans(), 2);
    // No `end_open_spans`: dropping the store ends them.
    drop(r);
    let spans = p.spans();
    assert_eq!(names(&spans), ["done-before-trap", "inner", "outer"]);
    for name in ["outer", "inner"] {
        assert_eq!(
            span(&spans, name).status,
            Status::error("span still open when its store was dropped"),
            "{name}"
        );
    }
    assert_eq!(span(&spans, "done-before-trap").status, Status::Unset);
}

#[test]
pub(crate) fn exit_code() {
    let p = Pipeline::new();
    let mut r = run(
        test_programs_artifacts::EXIT_CODE_COMPONENT,
        p.ctx(),
        &["exit_code"],
    );
    let err = r.result.as_ref().expect_err("the guest exits with 3");
    assert_eq!(
        err.downcast_ref::<I32Exit>().map(|e| e.0),
        Some(3),
        "{err:?}"
    );
    assert_eq!(r.end_open_spans("the guest exited with 3"), 1);
    drop(r);

    let spans = p.spans();
    assert_eq!(names(&spans), ["exiting", "finished"]);
    let exiting = span(&spans, "exiting");
    let finished = span(&spans, "finished");
    assert_eq!(exiting.status, Status::error("the guest exited with 3"));
    assert_eq!(finished.status, Status::Unset);
    assert_eq!(finished.parent_span_id, exiting.span_context.span_id());

    let logs = p.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(body(&logs[0]), "exiting with 3");
    assert_eq!(logs[0].severity_number(), Some(Severity::Warn));
    assert_eq!(
        logs[0].trace_context().map(|tc| tc.span_id),
        Some(exiting.span_context.span_id())
    );
}

/// A guest that gives its open spans far more than the store may hold: the
/// store keeps what fits its byte budget, refuses the rest (counted), and
/// gives the bytes back as the spans end.
#[test]
pub(crate) fn heavy_spans() {
    const BUDGET: usize = 20 << 20;
    let p = Pipeline::with(|b| {
        b.with_limits(Limits {
            store_bytes: BUDGET,
            ..Limits::default()
        })
    });
    let mut r = run(
        test_programs_artifacts::HEAVY_SPANS_COMPONENT,
        p.ctx(),
        &["heavy_spans", "10"],
    );
    r.succeeded();
    assert_eq!(r.stdout.trim(), "recording 10 of 10");
    // 128 attributes of 64 KiB are about 8 MiB: two spans' worth fit.
    let held = r.store.data().observe.held_bytes();
    assert!(held > 16 << 20 && held <= BUDGET, "{held}");
    assert_eq!(p.telemetry.stats().values_dropped_store_budget, 8 * 128);
    assert_eq!(r.end_open_spans("left open"), 10);
    assert_eq!(r.store.data().observe.held_bytes(), 0);
    drop(r);
    let spans = p.spans();
    let full: Vec<usize> = spans.iter().map(|s| s.attributes.len()).collect();
    assert_eq!(full.iter().filter(|&&n| n == 128).count(), 2, "{full:?}");
    assert_eq!(full.iter().filter(|&&n| n == 0).count(), 8, "{full:?}");

    // Arrays of empty strings cost their elements' handles.
    let p = Pipeline::with(|b| {
        b.with_limits(Limits {
            store_bytes: BUDGET,
            ..Limits::default()
        })
    });
    let r = run(
        test_programs_artifacts::HEAVY_SPANS_COMPONENT,
        p.ctx(),
        &["heavy_spans", "100", "arrays"],
    );
    r.succeeded();
    let held = r.store.data().observe.held_bytes();
    assert!(held <= BUDGET, "{held}");
    let refused = p.telemetry.stats().values_dropped_store_budget;
    assert!(refused >= 90 * 128, "{refused}");
}

#[test]
pub(crate) fn open_spans() {
    let p = Pipeline::with(|b| {
        b.with_limits(Limits {
            open_spans_per_store: 100,
            ..Limits::default()
        })
    });
    let mut r = run(
        test_programs_artifacts::OPEN_SPANS_COMPONENT,
        p.ctx(),
        &["open_spans", "5000"],
    );
    r.succeeded();
    assert_eq!(r.stdout.trim(), "recording 100 of 5000");
    assert_eq!(p.telemetry.stats().spans_dropped_open_limit, 4900);
    assert_eq!(r.store.data().observe.open_spans(), 100);
    assert!(p.spans().is_empty(), "nothing ended yet");

    assert_eq!(r.end_open_spans("left open"), 100);
    drop(r);
    let spans = p.spans();
    assert_eq!(spans.len(), 100);
    assert!(spans.iter().all(|s| s.name == "leak"));
    assert!(spans.iter().all(|s| s.status == Status::error("left open")));
    // They were nested: one trace, each the child of the previous.
    let trace = spans[0].span_context.trace_id();
    assert!(spans.iter().all(|s| s.span_context.trace_id() == trace));
    assert_eq!(
        spans
            .iter()
            .filter(|s| s.parent_span_id == SpanId::INVALID)
            .count(),
        1
    );
    let stats = p.telemetry.stats();
    assert_eq!(stats.spans_exported, 100);
    assert_eq!(stats.spans_dropped_open_limit, 4900);
}

#[test]
fn open_spans_sampled_out() {
    let p = Pipeline::with(|b| b.with_sampler(Sampler::AlwaysOff));
    let mut r = run(
        test_programs_artifacts::OPEN_SPANS_COMPONENT,
        p.ctx(),
        &["open_spans", "1000"],
    );
    r.succeeded();
    assert_eq!(r.stdout.trim(), "recording 0 of 1000");
    r.end_open_spans("left open");
    drop(r);
    assert!(p.spans().is_empty());
    let stats = p.telemetry.stats();
    assert_eq!(stats.spans_ended, 0);
    assert_eq!(stats.spans_exported, 0);
}

#[test]
fn open_spans_disabled() {
    let telemetry = Telemetry::disabled();
    assert!(!telemetry.is_enabled());
    let mut r = run(
        test_programs_artifacts::OPEN_SPANS_COMPONENT,
        WasiObserveCtx::new(&telemetry),
        &["open_spans", "1000"],
    );
    r.succeeded();
    assert_eq!(r.stdout.trim(), "recording 0 of 1000");
    assert_eq!(r.store.data().observe.open_spans(), 0);
    assert_eq!(r.end_open_spans("left open"), 0);
    drop(r);
    let stats = telemetry.stats();
    assert_eq!(stats.spans_ended, 0);
    assert_eq!(stats.spans_dropped_open_limit, 0);
    telemetry.shutdown().unwrap();
}

#[test]
pub(crate) fn logging_draft() {
    let p = Pipeline::new();
    let r = run(
        test_programs_artifacts::LOGGING_DRAFT_COMPONENT,
        p.ctx(),
        &["logging_draft"],
    );
    r.succeeded();
    let logs = p.logs();
    assert_eq!(logs.len(), 2, "{logs:#?}");
    assert_eq!(body(&logs[0]), "hello from the draft interface");
    assert_eq!(logs[0].severity_number(), Some(Severity::Info));
    assert_eq!(logs[0].severity_text(), Some("INFO"));
    assert_eq!(logs[1].severity_number(), Some(Severity::Fatal));
    assert_eq!(logs[1].severity_text(), Some("CRITICAL"));
    assert_eq!(body(&logs[1]), "critical from the draft interface");
    for record in &logs {
        assert_eq!(record.target().map(|t| t.as_ref()), Some("draft"));
        assert!(record.trace_context().is_none());
    }
}

#[test]
pub(crate) fn malformed() {
    let p = Pipeline::new();
    let limits = Limits::default();
    let before = SystemTime::now();
    let r = run(
        test_programs_artifacts::MALFORMED_COMPONENT,
        p.ctx(),
        &["malformed"],
    );
    let after = SystemTime::now();
    r.succeeded();
    assert_eq!(r.stdout.trim(), "survived");
    drop(r);

    let spans = p.spans();
    assert_eq!(spans.len(), 2, "{:?}", names(&spans));
    let cut = "x".repeat(limits.value_length);
    // The span was renamed to a 1 MiB name, cut to the limit.
    let bad = span(&spans, &cut);
    match attr(&bad.attributes, "huge") {
        Some(Value::String(s)) => assert_eq!(s.as_str(), cut),
        other => panic!("huge: {other:?}"),
    }
    assert_eq!(attr(&bad.attributes, ""), None);
    match attr(&bad.attributes, "big-array") {
        Some(Value::Array(Array::I64(a))) => {
            assert_eq!(a.len(), limits.array_length);
            assert!(a.iter().all(|&v| v == 7));
        }
        other => panic!("big-array: {other:?}"),
    }
    assert_eq!(bad.attributes.len(), 2);
    // Three links have malformed ids and are dropped; the fourth only has a
    // malformed trace-state, which becomes empty.
    let links = &bad.links.links;
    assert_eq!(links.len(), 1, "{links:#?}");
    assert_eq!(bad.links.dropped_count, 3);
    let kept = &links[0].span_context;
    assert_eq!(
        kept.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_eq!(
        kept.span_id(),
        SpanId::from_hex("00f067aa0ba902b7").unwrap()
    );
    assert_eq!(kept.trace_state().header(), "");
    assert!(kept.is_remote());
    // The unrepresentable start time became now; the end before the start
    // was clamped to it.
    assert!(
        bad.start_time >= before && bad.start_time <= after,
        "start {:?}",
        bad.start_time
    );
    assert!(bad.end_time >= bad.start_time);
    assert!(bad.end_time <= after);
    // The event with an invalid timestamp is kept, at now, its name cut.
    let events = &bad.events.events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, cut);
    assert!(events[0].timestamp >= before && events[0].timestamp <= after);
    assert_eq!(bad.status, Status::error(cut.clone()));

    let valid = span(&spans, "valid-after-malformed");
    assert_eq!(valid.attributes, vec![KeyValue::new("still", "works")]);
    assert_eq!(valid.parent_span_id, SpanId::INVALID);
    assert_eq!(valid.status, Status::Unset);
    assert!(valid.end_time >= valid.start_time);

    let logs = p.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(body(&logs[0]).len(), limits.value_length);
    assert_eq!(body(&logs[0]), cut);
    assert_eq!(logs[0].target().map(|t| t.len()), Some(limits.value_length));

    // The one valid measurement, on the instrument whose options were bad.
    let exports = p.metrics();
    let bounds = metric(&exports, "bad-bounds");
    assert_eq!(bounds.unit(), "", "an invalid unit is dropped");
    assert_eq!(bounds.description().len(), limits.value_length);
    let AggregatedMetrics::F64(MetricData::Histogram(hist)) = bounds.data() else {
        panic!("bad-bounds: {bounds:?}");
    };
    let point = hist.data_points().next().unwrap();
    assert_eq!(point.count(), 1);
    assert_eq!(point.sum(), 3.0);
    assert!(
        point.bounds().all(|b| b.is_finite()),
        "the invalid boundaries were replaced by the defaults"
    );

    let stats = p.telemetry.stats();
    assert!(stats.invalid_input > 0, "{stats}");
    assert!(stats.values_truncated > 0, "{stats}");
    assert_eq!(stats.links_dropped, 3, "{stats}");
    // "", "9starts-with-digit", a negative counter increment, a NaN, and a
    // measurement on the rejected instrument "has space".
    assert_eq!(stats.measurements_dropped, 5, "{stats}");
    assert_eq!(stats.measurements, 1, "{stats}");
    assert_eq!(stats.spans_exported, 2);
}

#[test]
pub(crate) fn burst() {
    let p = Pipeline::with(|b| {
        b.with_span_batch_config(BatchConfig {
            max_queue_size: 256,
            max_export_batch_size: 128,
            ..BatchConfig::default()
        })
    });
    let r = run(
        test_programs_artifacts::BURST_COMPONENT,
        p.ctx(),
        &["burst", "20000"],
    );
    r.succeeded();
    assert_eq!(r.stdout.trim(), "emitted 20001");
    drop(r);
    let spans = p.spans();
    assert_eq!(spans.len(), 20_001);
    let stats = p.telemetry.stats();
    assert_eq!(stats.spans_dropped_queue_full, 0, "{stats}");
    assert_eq!(stats.spans_exported, 20_001);
    // Every item arrived once, under the root.
    let root = span(&spans, "burst");
    let mut seen = vec![false; 20_000];
    for s in spans.iter().filter(|s| s.name == "item") {
        assert_eq!(s.parent_span_id, root.span_context.span_id());
        let Some(Value::I64(i)) = attr(&s.attributes, "i") else {
            panic!("item without i: {s:?}");
        };
        assert!(
            !std::mem::replace(&mut seen[*i as usize], true),
            "item {i} twice"
        );
    }
    assert!(seen.iter().all(|&s| s));
}

#[test]
pub(crate) fn spin() {
    // The embedder interrupts a guest that does not stop, as the CLI does on
    // Ctrl-C, then ends its open span with the reason.
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    let engine = Engine::new(&config).unwrap();
    let linker = new_linker(&engine);
    let component = Component::from_file(&engine, test_programs_artifacts::SPIN_COMPONENT).unwrap();
    let p = Pipeline::new();
    let stdout = MemoryOutputPipe::new(1 << 16);
    let mut store = Store::new(&engine, host(p.ctx(), &stdout, &["spin"]));
    store.set_epoch_deadline(1);
    store.epoch_deadline_trap();
    let command = Command::instantiate(&mut store, &component, &linker).unwrap();
    let result = std::thread::scope(|scope| {
        scope.spawn(|| {
            // Interrupt once the span is open (or give up waiting, so that a
            // broken guest cannot hang the test).
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !stdout_text(&stdout).contains("spinning") && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            engine.increment_epoch();
        });
        command.wasi_cli_run().call_run(&mut store)
    });
    assert_eq!(stdout_text(&stdout), "spinning\n");
    let err = result.expect_err("the guest was interrupted");
    assert!(
        matches!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ),
        "{err:?}"
    );
    assert!(p.spans().is_empty(), "the span is still open");

    let reason = "the guest was interrupted";
    assert_eq!(store.data_mut().observe.end_open_spans(reason), 1);
    drop(store);
    let spans = p.spans();
    assert_eq!(names(&spans), ["spinning"]);
    assert_eq!(spans[0].status, Status::error(reason));
    let logs = p.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(body(&logs[0]), "spinning until interrupted");
    assert_eq!(
        logs[0].trace_context().map(|tc| tc.span_id),
        Some(spans[0].span_context.span_id())
    );
}

/// The SDK scenario (its span trees are checked against
/// `tracing-opentelemetry` in `crates/sdk/tests/differential.rs`) on a host
/// that records logs but not traces: the SDK asks once, makes no spans, and
/// its log records carry no span.
#[test]
pub(crate) fn sdk_scenario() {
    let logs = InMemoryLogExporter::default();
    let telemetry = Telemetry::builder()
        .with_default_service_name("host-tests")
        .with_log_batch_config(BatchConfig {
            scheduled_delay: Duration::from_millis(50),
            ..BatchConfig::default()
        })
        .with_log_exporter(logs.clone())
        .build()
        .unwrap();
    let mut r = run(
        test_programs_artifacts::SDK_SCENARIO_COMPONENT,
        WasiObserveCtx::new(&telemetry),
        &["sdk_scenario"],
    );
    r.succeeded();
    assert_eq!(r.end_open_spans("unexpected"), 0);
    drop(r);
    telemetry.force_flush().unwrap();
    let records: Vec<SdkLogRecord> = logs
        .get_emitted_logs()
        .unwrap()
        .into_iter()
        .map(|l| l.record)
        .collect();
    let bodies: Vec<&str> = records
        .iter()
        .filter_map(|r| r.body().map(|_| body(r)))
        .collect();
    assert!(bodies.contains(&"scenario starting"), "{bodies:?}");
    assert!(bodies.contains(&"inside root"), "{bodies:?}");
    assert!(records.len() >= 12, "{bodies:?}");
    for r in &records {
        assert!(r.trace_context().is_none(), "a span was made: {r:?}");
    }
    assert_eq!(telemetry.stats().spans_ended, 0);
}

/// Runs the SDK scenario in a store of its own, with `RUST_LOG` set to
/// `in_env` in the component's environment and the ctx as `observe` builds
/// it; returns the pipeline it recorded into.
fn run_scenario(
    in_env: Option<&str>,
    observe: impl FnOnce(WasiObserveCtxBuilder) -> WasiObserveCtxBuilder,
) -> Pipeline {
    let p = Pipeline::new();
    let mut wasi = wasmtime_wasi::WasiCtx::builder();
    wasi.stdout(MemoryOutputPipe::new(1 << 16))
        .inherit_stderr()
        .args(&["sdk_scenario"]);
    if let Some(value) = in_env {
        wasi.env("RUST_LOG", value);
    }
    let observe = observe(WasiObserveCtx::builder(&p.telemetry));
    let mut store = Store::new(engine(), Host::new(wasi.build(), observe.build()));
    run_in(
        &mut store,
        &new_linker(engine()),
        test_programs_artifacts::SDK_SCENARIO_COMPONENT,
    );
    drop(store);
    p
}

/// Runs the SDK scenario with `RUST_LOG` set to `in_env` in the component's
/// environment and, when `told` is given, the environment the host hands
/// the pipe; returns the span names and log bodies recorded.
fn scenario_with_rust_log(
    in_env: Option<&str>,
    told: Option<&[(&str, &str)]>,
) -> (Vec<String>, Vec<String>) {
    let p = run_scenario(in_env, |observe| match told {
        Some(told) => {
            let vars: Vec<(String, String)> = told
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            observe.with_guest_environment(vars.into())
        }
        None => observe,
    });
    let spans = names(&p.spans()).iter().map(|n| n.to_string()).collect();
    let bodies = p
        .logs()
        .iter()
        .filter_map(|r| r.body().map(|_| body(r).to_string()))
        .collect();
    (spans, bodies)
}

/// Runs the SDK scenario and describes what it recorded, ids aside (they
/// are random per instance): each span's name and events, each log record's
/// body, severity, target, attributes and the name of its span; and how
/// many `Event`, `Log` and `EventLog` records crossed.
fn scenario_described(event_log_records: bool) -> (Vec<String>, Vec<String>, [usize; 3]) {
    let tap = Arc::new(Mutex::new(Vec::new()));
    let p = run_scenario(None, |observe| {
        let observe = observe.with_batch_tap(tap.clone());
        if event_log_records {
            observe
        } else {
            observe.without_event_log_records()
        }
    });
    let mut kinds = [0; 3];
    for batch in tap.lock().unwrap().iter() {
        for record in wasi_observe_wire::decode(batch) {
            match record.expect("the SDK writes what the wire reads") {
                wasi_observe_wire::Record::Event(_) => kinds[0] += 1,
                wasi_observe_wire::Record::Log(_) => kinds[1] += 1,
                wasi_observe_wire::Record::EventLog(_) => kinds[2] += 1,
                _ => {}
            }
        }
    }
    let spans = p.spans();
    let span_name: HashMap<SpanId, &str> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), s.name.as_ref()))
        .collect();
    let mut described: Vec<String> = spans
        .iter()
        .map(|s| {
            let events: Vec<String> = s
                .events
                .iter()
                .map(|e| {
                    let attrs: Vec<String> = e
                        .attributes
                        .iter()
                        .map(|kv| format!("{}={}", kv.key.as_str(), kv.value))
                        .collect();
                    format!("{}{attrs:?}", e.name)
                })
                .collect();
            format!("{} {events:?}", s.name)
        })
        .collect();
    described.sort();
    let mut logs: Vec<String> = p
        .logs()
        .iter()
        .map(|r| {
            // Text is compared as text: whether the host kept it
            // (interned) or allocated it depends on what ran before.
            let text = |v: &AnyValue| match v {
                AnyValue::String(s) => s.as_str().to_string(),
                other => format!("{other:?}"),
            };
            let mut attrs: Vec<String> = r
                .attributes_iter()
                .map(|(k, v)| format!("{}={}", k.as_str(), text(v)))
                .collect();
            attrs.sort();
            let span = r
                .trace_context()
                .map(|cx| span_name.get(&cx.span_id).copied().unwrap_or("?"));
            format!(
                "{:?} {:?} {:?} {:?} {attrs:?} in {span:?}",
                r.body().map(text),
                r.severity_number(),
                r.severity_text(),
                r.target()
            )
        })
        .collect();
    logs.sort();
    (described, logs, kinds)
}

/// A `tracing` event inside a span crosses as one `EventLog` record where
/// the host reads those, and as an event and a log record where it does
/// not (an older host): the host exports the same either way.
#[test]
fn event_log_records_export_what_an_event_and_a_log_record_do() {
    let (spans, logs, [events, log_records, together]) = scenario_described(true);
    let (old_spans, old_logs, [old_events, old_log_records, old_together]) =
        scenario_described(false);
    // Each event that went as one record went as two to the older host.
    assert!(together > 0, "no EventLog record crossed");
    assert_eq!(old_together, 0, "an EventLog record went to an older host");
    assert_eq!(old_events, events + together);
    assert_eq!(old_log_records, log_records + together);
    assert!(
        logs.iter()
            .any(|l| l.contains("inside root") && l.ends_with("in Some(\"root\")")),
        "no event inside a span: {logs:#?}"
    );
    assert!(
        spans.iter().any(|s| s.contains("inside root")),
        "{spans:#?}"
    );
    assert_eq!((spans, logs), (old_spans, old_logs));
}

const NARROW: &str = "warn,scenario::startup=info";

/// What the scenario records under [`NARROW`]: warnings and above, and
/// `info` for one target, for `tracing` and `log` alike.
fn assert_narrowed((spans, bodies): (Vec<String>, Vec<String>)) {
    // Every `tracing` span of the scenario is at `info`.
    assert!(
        spans
            .iter()
            .all(|n| !n.starts_with("sibling") && !n.starts_with("ooo_") && n != "repeated"),
        "{spans:?}"
    );
    for kept in ["scenario starting", "a log record inside root", "charging"] {
        assert!(
            bodies.iter().any(|b| b == kept),
            "{kept} is missing: {bodies:?}"
        );
    }
    for filtered in ["inside root", "scenario done", "in a", "in b", "again"] {
        assert!(
            !bodies.iter().any(|b| b == filtered),
            "{filtered} was recorded"
        );
    }
}

/// The component's `RUST_LOG` narrows what `init()` records; here the host
/// does not know the component's environment, so the SDK reads it.
#[test]
fn rust_log_narrows_what_init_records() {
    assert_narrowed(scenario_with_rust_log(Some(NARROW), None));
}

/// A host that knows the component's environment hands `RUST_LOG` over
/// with the pipe's configuration, and the SDK takes it from there without
/// reading its environment: told `RUST_LOG` (absent from the component's
/// environment here), it narrows; told an environment without it, nothing
/// is narrowed, whatever the component's environment says.
#[test]
fn the_host_hands_rust_log_over_with_the_configuration() {
    assert_narrowed(scenario_with_rust_log(None, Some(&[("RUST_LOG", NARROW)])));
    let (spans, bodies) = scenario_with_rust_log(Some(NARROW), Some(&[("OTHER", "1")]));
    assert!(spans.iter().any(|n| n == "repeated"), "{spans:?}");
    for kept in ["inside root", "scenario done", "in a"] {
        assert!(
            bodies.iter().any(|b| b == kept),
            "{kept} is missing: {bodies:?}"
        );
    }
}

#[test]
pub(crate) fn sdk_features() {
    let p = Pipeline::new();
    let started = SystemTime::now();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = run(
        test_programs_artifacts::SDK_FEATURES_COMPONENT,
        p.ctx(),
        &["sdk_features", traceparent],
    );
    r.succeeded();
    let stdout = r.stdout.clone();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "enabled traces=true logs=true metrics=true");
    assert_eq!(lines[1], "first Ok(())");
    assert_eq!(lines[2], "second Err(AlreadyInitialized)");
    let outgoing = lines
        .iter()
        .find_map(|l| l.strip_prefix("outgoing "))
        .expect("the injected traceparent")
        .to_string();
    drop(r);

    let spans = p.spans();
    let remote_trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let remote_span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
    // A `tracing` span moved under the caller's span with `set_parent`.
    let handled = span(&spans, "handle_request");
    assert_eq!(handled.span_context.trace_id(), remote_trace);
    assert_eq!(handled.parent_span_id, remote_span);
    assert!(handled.parent_span_is_remote);
    assert_eq!(
        attr(&handled.attributes, "http.route"),
        Some(&Value::from("/orders"))
    );
    // What it injected into an outgoing request names it.
    assert_eq!(
        outgoing,
        format!(
            "00-{}-{}-01",
            hex_trace(remote_trace),
            hex_span(handled.span_context.span_id())
        )
    );
    // An OpenTelemetry API span started with the remote context.
    let child = span(&spans, "otel_remote_child");
    assert_eq!(child.span_context.trace_id(), remote_trace);
    assert_eq!(child.parent_span_id, remote_span);
    assert_eq!(attr(&child.attributes, "ok"), Some(&Value::Bool(true)));

    // The OpenTelemetry metrics API.
    let exports = p.metrics();
    let requests = metric(&exports, "requests");
    assert_eq!(requests.unit(), "{request}");
    assert_eq!(requests.description(), "requests served");
    let AggregatedMetrics::U64(MetricData::Sum(sum)) = requests.data() else {
        panic!("requests: {requests:?}");
    };
    let points: Vec<_> = sum.data_points().collect();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].value(), 5);
    assert!(has_attr(
        points[0].attributes(),
        &KeyValue::new("route", "/a")
    ));
    let AggregatedMetrics::I64(MetricData::Sum(sum)) = metric(&exports, "inflight").data() else {
        panic!("inflight is not an integer sum");
    };
    assert!(!sum.is_monotonic());
    assert_eq!(sum.data_points().next().unwrap().value(), 3);
    let AggregatedMetrics::F64(MetricData::Histogram(hist)) = metric(&exports, "latency").data()
    else {
        panic!("latency is not a float histogram");
    };
    let point = hist.data_points().next().unwrap();
    assert_eq!(point.bounds().collect::<Vec<_>>(), vec![0.1, 1.0]);
    assert_eq!(point.bucket_counts().collect::<Vec<_>>(), vec![1, 1, 1]);
    let AggregatedMetrics::I64(MetricData::Gauge(gauge)) = metric(&exports, "temperature").data()
    else {
        panic!("temperature is not an integer gauge");
    };
    assert_eq!(gauge.data_points().next().unwrap().value(), 21);
    let AggregatedMetrics::F64(MetricData::Sum(sum)) = metric(&exports, "bytes").data() else {
        panic!("bytes is not a float sum");
    };
    assert_eq!(sum.data_points().next().unwrap().value(), 1.5);

    // `log` key-values become attributes.
    let logs = p.logs();
    let login = logs
        .iter()
        .find(|l| l.body().is_some() && body(l) == "logged in")
        .expect("the log record");
    let attrs: HashMap<String, AnyValue> = login
        .attributes_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(attrs["user"], AnyValue::from("ada"));
    assert_eq!(attrs["retries"], AnyValue::Int(2));
    // Made with no span open, it crossed at once, stamped with the time of
    // that call (the guest read no clock for it): after the last span.
    let stamped = login.timestamp().expect("a timestamp");
    assert!(started <= stamped && stamped <= SystemTime::now());
    assert!(
        stamped >= child.end_time,
        "{stamped:?} {:?}",
        child.end_time
    );

    // The subscriber `init()` installs, at its edges. Fields whose `Debug`
    // records telemetry: recorded, nothing deadlocked or panicked.
    let noisy = span(&spans, "with_noisy_field");
    assert_eq!(
        attr(&noisy.attributes, "noisy"),
        Some(&Value::from("noisy"))
    );
    let inner: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "span_inside_a_field")
        .collect();
    assert_eq!(inner.len(), 2, "one per noisy field");
    // The second was made while `with_noisy_field` was current.
    assert!(
        inner
            .iter()
            .any(|s| s.parent_span_id == noisy.span_context.span_id())
    );
    let bodies: Vec<&str> = logs
        .iter()
        .filter(|l| l.body().is_some())
        .map(body)
        .collect();
    assert!(bodies.contains(&"event with a noisy field"), "{bodies:?}");
    assert_eq!(
        bodies
            .iter()
            .filter(|b| **b == "event inside a field")
            .count(),
        2
    );
    assert!(lines.contains(&"current with_noisy_field"), "{lines:?}");
    // A stale id is no parent, though its slot now holds another span.
    let reuses = span(&spans, "reuses_the_slot");
    let stale = span(&spans, "stale_parent");
    assert_ne!(stale.parent_span_id, reuses.span_context.span_id());
    assert_ne!(
        stale.span_context.trace_id(),
        reuses.span_context.trace_id()
    );
    // Entered twice: still current after the inner guard, ended once.
    let reentered: Vec<&SpanData> = spans.iter().filter(|s| s.name == "reentered").collect();
    assert_eq!(reentered.len(), 1);
    let after = logs
        .iter()
        .find(|l| l.body().is_some() && body(l) == "after the inner guard")
        .expect("the record after the inner guard");
    assert_eq!(
        after.trace_context().map(|t| t.span_id),
        Some(reentered[0].span_context.span_id())
    );
    // Stamped when it was made, by the pipe's `now` on the host's clock,
    // which also gave the span its start and end: within them, and at
    // least the guest's 5 ms sleep before the end (a record without a
    // time would take that of the `close` carrying it, the span's end).
    let stamped = after.timestamp().expect("a timestamp");
    let held = reentered[0];
    assert!(
        held.start_time <= stamped && stamped + Duration::from_millis(5) <= held.end_time,
        "{stamped:?} in {:?}..{:?}",
        held.start_time,
        held.end_time
    );
    // The 20 000-span chain closed without exhausting the guest's stack;
    // the host recorded the spans its open-span limit let in (10 000, one
    // of them `reuses_the_slot`), each ended.
    let chain = spans.iter().filter(|s| s.name == "chain").count();
    assert_eq!(chain, 9_999);
    // The parent dropped first ended after its child.
    let first = span(&spans, "dropped_first");
    let child = span(&spans, "outlives_its_parent");
    assert_eq!(child.parent_span_id, first.span_context.span_id());
    assert!(first.end_time >= child.end_time);
}

#[test]
pub(crate) fn sdk_malformed() {
    let p = Pipeline::new();
    let r = run(
        test_programs_artifacts::SDK_MALFORMED_COMPONENT,
        p.ctx(),
        &["sdk_malformed"],
    );
    r.succeeded();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "zero-parent recording=true",
            "own-parent kept=true",
            "big-shared-kept=17",
            "empty-shared=None",
            "ended-kept=true",
            "survived"
        ]
    );
    drop(r);
    let limits = Limits::default();
    let cut = "y".repeat(limits.value_length);
    let spans = p.spans();
    assert_eq!(spans.len(), 3, "{:?}", names(&spans));
    // Zero ids as a parent: a root span. Renamed and given an error status
    // by `finish`, both cut to the limit; the unrepresentable end time is now.
    let zero = span(&spans, &cut);
    assert_eq!(zero.parent_span_id, SpanId::INVALID);
    assert_eq!(zero.status, Status::error(cut.clone()));
    assert_eq!(attr(&zero.attributes, "after"), Some(&Value::I64(2)));
    assert!(zero.end_time >= zero.start_time);
    // Its event: name cut, the record's attributes (minus the empty key,
    // the huge value cut) and its own.
    let events = &zero.events.events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, cut);
    assert_eq!(attr(&events[0].attributes, "e"), Some(&Value::I64(1)));
    match attr(&events[0].attributes, "big") {
        Some(Value::String(s)) => assert_eq!(s.as_str(), cut),
        other => panic!("big: {other:?}"),
    }
    assert_eq!(events[0].attributes.len(), 2);
    // The bad trace-state was emptied; the parent kept; own-parent refused.
    let bad = span(&spans, "bad-state");
    assert_eq!(bad.parent_span_id, SpanId::from(3u64));
    assert_eq!(
        bad.span_context.trace_id(),
        TraceId::from(((1u128) << 64) | 2)
    );
    assert_eq!(bad.span_context.trace_state().header(), "");
    let to_end = span(&spans, "to-end");
    assert_eq!(
        attr(&to_end.attributes, "shared"),
        Some(&Value::from("yes"))
    );
    // The log records: all kept, strings cut; the one for a zero context has
    // no body and no span; the one for an ended span carries its ids.
    let logs = p.logs();
    assert_eq!(logs.len(), 3);
    assert_eq!(body(&logs[0]).len(), limits.value_length);
    assert!(logs[1].body().is_none());
    assert!(logs[1].trace_context().is_none());
    let ended = span(&spans, "to-end");
    assert_eq!(
        logs[2].trace_context().map(|t| t.span_id),
        Some(ended.span_context.span_id())
    );
    let stats = p.telemetry.stats();
    assert!(stats.invalid_input >= 6, "{stats:?}");
    assert!(stats.values_truncated >= 4, "{stats:?}");
}

/// The benchmark's guest does the work `wasi-observe-bench` says it does:
/// each mode emits one span (2 attributes, 1 event), log record or
/// measurement per operation, warm-up included.
#[test]
pub(crate) fn bench() {
    let n = 20u64;
    let ops = n + n / 10;
    let mut linker = new_linker(engine());
    linker
        .root()
        .instance("wasi-observe:bench/floor")
        .unwrap()
        .func_wrap("noop", |_, (_s,): (String,)| Ok(()))
        .unwrap();
    let run_mode = |mode: &str| {
        let p = Pipeline::new();
        let stdout = MemoryOutputPipe::new(1 << 16);
        let mut store = Store::new(
            engine(),
            host(p.ctx(), &stdout, &["bench", mode, &n.to_string()]),
        );
        // The counter's sum is held until the host asks for it: `run_in`
        // asks.
        run_in(
            &mut store,
            &linker,
            test_programs_artifacts::BENCH_COMPONENT,
        );
        assert!(stdout_text(&stdout).starts_with("elapsed_ns "), "{mode}");
        drop(store);
        p
    };
    for mode in ["raw", "raw5", "tracing", "tracing-lean"] {
        let p = run_mode(mode);
        let spans = p.spans();
        assert_eq!(spans.len() as u64, ops, "{mode}");
        for s in &spans {
            assert_eq!(s.name, "op", "{mode}");
            assert_eq!(attr(&s.attributes, "a"), Some(&Value::I64(1)), "{mode}");
            assert_eq!(attr(&s.attributes, "b"), Some(&Value::from("x")), "{mode}");
            assert_eq!(s.events.events.len(), 1, "{mode}");
            assert_eq!(s.events.events[0].name, "ev", "{mode}");
        }
    }
    for mode in ["log-raw", "log"] {
        let logs = run_mode(mode).logs();
        assert_eq!(logs.len() as u64, ops, "{mode}");
        assert!(logs.iter().all(|l| body(l) == "a log message"), "{mode}");
    }
    let p = run_mode("counter");
    let exports = p.metrics();
    let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric(&exports, "ops").data() else {
        panic!("ops is not an integer sum");
    };
    assert_eq!(sum.data_points().next().unwrap().value(), ops);
    assert_eq!(run_mode("spans").spans().len() as u64, ops);
    assert_eq!(run_mode("floor").spans().len(), 0);
    let p = run_mode("tracing-registry");
    assert_eq!((p.spans().len(), p.logs().len()), (0, 0));
}

#[test]
pub(crate) fn exit_paths() {
    // Every way the guest can end: what it emitted before is exported, and
    // the span it kept open is ended with the embedder's reason.
    for (how, expect_exit) in [("return", None), ("exit", Some(1)), ("trap", None)] {
        let p = Pipeline::new();
        let mut r = run(
            test_programs_artifacts::EXIT_PATHS_COMPONENT,
            p.ctx(),
            &["exit_paths", "20", how],
        );
        match (how, &r.result) {
            ("return", Ok(Ok(()))) => {}
            ("exit", Err(e)) => {
                assert_eq!(e.downcast_ref::<I32Exit>().map(|e| e.0), expect_exit)
            }
            ("trap", Err(e)) => assert!(e.downcast_ref::<wasmtime::Trap>().is_some(), "{e:?}"),
            other => panic!("{how}: {other:?}"),
        }
        assert_eq!(r.end_open_spans(how), 1, "{how}");
        drop(r);
        let spans = p.spans();
        assert_eq!(spans.len(), 21, "{how}");
        assert_eq!(span(&spans, "open").status, Status::error(how));
        assert_eq!(p.logs().len(), 20, "{how}");
        let metrics = p.metrics();
        let m = metric(&metrics, "exit_paths.items");
        let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() else {
            panic!("{how}: not a u64 sum: {m:?}");
        };
        assert_eq!(sum.data_points().map(|d| d.value()).sum::<u64>(), 20);
        let stats = p.telemetry.stats();
        assert!(!stats.has_losses(), "{how}: {stats}");
    }
}

#[test]
pub(crate) fn flood() {
    // A guest emitting as fast as it can: what is delivered and what is
    // counted as dropped add up to what it emitted.
    let p = Pipeline::with(|b| {
        let small = BatchConfig {
            max_queue_size: 512,
            max_export_batch_size: 256,
            scheduled_delay: Duration::from_millis(50),
            max_block: Duration::from_millis(20),
            ..BatchConfig::default()
        };
        b.with_span_batch_config(small.clone())
            .with_log_batch_config(small)
    });
    let r = run(
        test_programs_artifacts::FLOOD_COMPONENT,
        p.ctx(),
        &["flood", "500"],
    );
    r.succeeded();
    let emitted: Vec<u64> = r
        .stdout
        .trim()
        .strip_prefix("emitted ")
        .unwrap()
        .split(' ')
        .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    drop(r);
    let spans = p.spans().len() as u64;
    let logs = p.logs().len() as u64;
    let stats = p.telemetry.stats();
    assert_eq!(
        spans + stats.spans_dropped_queue_full,
        emitted[0],
        "{stats}"
    );
    assert_eq!(logs + stats.logs_dropped_queue_full, emitted[1], "{stats}");
    assert_eq!(stats.measurements, emitted[2], "{stats}");
    let metrics = p.metrics();
    let m = metric(&metrics, "flood.items");
    let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() else {
        panic!("not a u64 sum: {m:?}");
    };
    assert_eq!(
        sum.data_points().map(|d| d.value()).sum::<u64>(),
        emitted[2]
    );
}

#[test]
fn handles_of_one_store_mean_nothing_in_another() {
    use wasi_observe_host::fuzzing::calls;
    let p = Pipeline::new();
    let (mut a, mut b) = (p.ctx(), p.ctx());
    let in_a = calls::start(&mut a, "a");
    let in_b = calls::start(&mut b, "b");
    // Handle numbers are per store: the same number names each store's own
    // span, and a call through B's number never reaches A's span.
    assert_eq!(in_a, in_b);
    calls::set_attribute(&mut b, in_b, "set-by", "b");
    assert_ne!(
        calls::span_context(&mut a, in_a),
        calls::span_context(&mut b, in_b)
    );
    // A number B never handed out names nothing there.
    let (trace, span_id) = calls::span_context(&mut b, in_b + 7);
    assert_eq!(
        (trace.as_str(), span_id.as_str()),
        ("0".repeat(32).as_str(), "0".repeat(16).as_str())
    );
    assert!(!calls::is_recording(&mut b, in_b + 7));
    calls::end(&mut b, in_b + 7);
    // B's ambient parent and open span do not parent A's spans.
    b.set_parent(Some(remote_parent()));
    let a_child = calls::start(&mut a, "a-child");
    calls::end(&mut a, a_child);
    calls::end(&mut a, in_a);
    calls::end(&mut b, in_b);
    drop((a, b));
    let spans = p.spans();
    let (sa, sb, child) = (
        span(&spans, "a"),
        span(&spans, "b"),
        span(&spans, "a-child"),
    );
    assert!(attr(&sa.attributes, "set-by").is_none());
    assert_eq!(
        attr(&sb.attributes, "set-by"),
        Some(&Value::String("b".into()))
    );
    assert_eq!(child.parent_span_id, sa.span_context.span_id());
    assert_eq!(child.span_context.trace_id(), sa.span_context.trace_id());
    assert_ne!(sa.span_context.trace_id(), sb.span_context.trace_id());
}

#[test]
fn the_open_span_limit_applies_per_store() {
    use wasi_observe_host::fuzzing::calls;
    let p = Pipeline::with(|b| {
        b.with_limits(Limits {
            open_spans_per_store: 3,
            ..Limits::default()
        })
    });
    let (mut a, mut b) = (p.ctx(), p.ctx());
    let a_spans: Vec<u32> = (0..4)
        .map(|i| calls::start(&mut a, &format!("a{i}")))
        .collect();
    let recording: Vec<bool> = a_spans
        .iter()
        .map(|&s| calls::is_recording(&mut a, s))
        .collect();
    assert_eq!(recording, [true, true, true, false]);
    // Store A being at its limit does not limit store B.
    let b_spans: Vec<u32> = (0..3)
        .map(|i| calls::start(&mut b, &format!("b{i}")))
        .collect();
    assert!(b_spans.iter().all(|&s| calls::is_recording(&mut b, s)));
    assert_eq!(p.telemetry.stats().spans_dropped_open_limit, 1);
    // Both stores report to the one resource the host configured; the WIT
    // offers guests no call that changes it.
    assert!(std::ptr::eq(
        a.telemetry().resource(),
        b.telemetry().resource()
    ));
}

/// A component that imports Spin's own interfaces cannot be linked by
/// `add_to_linker` (only Spin provides them), and the error names the
/// import; the CLI adds advice (`cli run::basics::spin_only_imports_get_a_clear_error`).
#[test]
pub(crate) fn spin_import() {
    let linker = new_linker(engine());
    let component = component(test_programs_artifacts::SPIN_IMPORT_COMPONENT);
    let err = linker
        .instantiate_pre(&component)
        .err()
        .expect("Spin's interfaces are not in the linker");
    let text = format!("{err:#}");
    assert!(text.contains("fermyon:spin/variables@2.0.0"), "{text}");
}

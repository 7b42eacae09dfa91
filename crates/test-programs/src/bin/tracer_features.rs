//! Exercises every tracer, logging and metrics feature once, printing the ids
//! the host handed out so the test can match them with what was exported.

use test_programs::logging::{Level, log};
use test_programs::metrics::{self, Instrument, InstrumentKind, InstrumentOptions, Number};
use test_programs::tracer::{self, Link, SpanContext, SpanKind, Status, TraceFlags, Value};
use test_programs::{Datetime, kv, opts, s};

fn main() {
    let root = tracer::start(
        "root",
        Some(&tracer::StartOptions {
            span_kind: Some(SpanKind::Server),
            attributes: Some(vec![
                kv("str", Value::String("text".into())),
                kv("bool", Value::Bool(true)),
                kv("f64", Value::Float64(1.5)),
                kv("s64", Value::S64(-42)),
                kv(
                    "str-array",
                    Value::StringArray(vec!["a".into(), "b".into()]),
                ),
                kv("bool-array", Value::BoolArray(vec![true, false])),
                kv("f64-array", Value::Float64Array(vec![0.25, -2.0])),
                kv("s64-array", Value::S64Array(vec![1, 2, 3])),
            ]),
            timestamp: Some(Datetime {
                seconds: 1_700_000_000,
                nanoseconds: 0,
            }),
            ..opts()
        }),
    );
    root.set_attributes(&[s("str", "overwritten"), s("late", "yes")]);
    let rc = root.span_context();
    println!("root {} {}", rc.trace_id, rc.span_id);
    assert!(root.is_recording());

    let child = tracer::start(
        "child",
        Some(&tracer::StartOptions {
            span_kind: Some(SpanKind::Client),
            ..opts()
        }),
    );
    child.add_event(
        "explicit-time",
        Some(Datetime {
            seconds: 1_700_000_001,
            nanoseconds: 500,
        }),
        Some(&[kv("n", Value::S64(7))]),
    );
    child.add_event("now", None, None);
    child.set_status(&Status::Ok);
    child.set_status(&Status::Error("ignored: ok is final".into()));
    log(Level::Trace, "ctx.trace", "a trace message");
    log(Level::Debug, "ctx.debug", "a debug message");
    log(Level::Info, "ctx.info", "an info message");
    log(Level::Warn, "ctx.warn", "a warn message");
    log(Level::Error, "ctx.error", "an error message");
    log(Level::Critical, "ctx.critical", "a critical message");
    let cc = child.span_context();
    println!("child {} {}", cc.trace_id, cc.span_id);

    let grandchild = tracer::start(
        "grandchild",
        Some(&tracer::StartOptions {
            span_kind: Some(SpanKind::Producer),
            links: Some(vec![Link {
                span_context: SpanContext {
                    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                    span_id: "00f067aa0ba902b7".into(),
                    trace_flags: TraceFlags::SAMPLED,
                    is_remote: true,
                    trace_state: vec![("vendor".into(), "v1".into())],
                },
                attributes: vec![s("link-attr", "start")],
            }]),
            ..opts()
        }),
    );
    grandchild.add_link(&Link {
        span_context: rc.clone(),
        attributes: vec![s("link-attr", "added")],
    });
    grandchild.set_status(&Status::Error("it broke".into()));
    grandchild.update_name("grandchild-renamed");
    let gc = grandchild.span_context();
    println!("grandchild {} {}", gc.trace_id, gc.span_id);
    grandchild.end(Some(Datetime {
        seconds: 4_000_000_000,
        nanoseconds: 0,
    }));
    grandchild.end(None); // a second end is a no-op
    grandchild.set_attributes(&[s("after-end", "ignored")]);
    drop(grandchild);

    // Dropped without end: the same as end(none).
    let dropped = tracer::start(
        "dropped",
        Some(&tracer::StartOptions {
            span_kind: Some(SpanKind::Consumer),
            ..opts()
        }),
    );
    drop(dropped);

    child.end(None);
    drop(child);

    let detached = tracer::start(
        "detached",
        Some(&tracer::StartOptions {
            new_root: true,
            ..opts()
        }),
    );
    let dc = detached.span_context();
    println!("detached {} {}", dc.trace_id, dc.span_id);
    drop(detached);

    // Metrics: a registered instrument and record-by-name, each kind.
    let counter = Instrument::new(
        InstrumentKind::Counter,
        "requests",
        Some(&InstrumentOptions {
            description: Some("requests served".into()),
            unit: Some("{request}".into()),
            boundaries: None,
        }),
    );
    counter.record(Number::S64(3), &[s("route", "/a")]);
    counter.record(Number::S64(4), &[s("route", "/a")]);
    metrics::record(
        InstrumentKind::Counter,
        "requests",
        Number::S64(10),
        &[s("route", "/b")],
    );
    metrics::record(
        InstrumentKind::UpDownCounter,
        "queue.depth",
        Number::F64(5.0),
        &[],
    );
    metrics::record(
        InstrumentKind::UpDownCounter,
        "queue.depth",
        Number::F64(-2.0),
        &[],
    );
    let hist = Instrument::new(
        InstrumentKind::Histogram,
        "latency",
        Some(&InstrumentOptions {
            description: None,
            unit: Some("ms".into()),
            boundaries: Some(vec![5.0, 10.0, 50.0]),
        }),
    );
    for v in [1.0, 7.0, 30.0, 100.0] {
        hist.record(Number::F64(v), &[]);
    }
    metrics::record(InstrumentKind::Gauge, "temperature", Number::S64(40), &[]);
    metrics::record(InstrumentKind::Gauge, "temperature", Number::S64(42), &[]);

    log(Level::Info, "", "outside any span? no: root is open");
    root.end(None);
    log(Level::Info, "main", "after every span ended");
}

//! Hands the host every kind of malformed input, then one valid span: the
//! host must neither trap nor crash, and must keep the valid data.

use test_programs::logging::{Level, log};
use test_programs::metrics::{self, Instrument, InstrumentKind, InstrumentOptions, Number};
use test_programs::tracer::{self, Link, SpanContext, Status, TraceFlags, Value};
use test_programs::{Datetime, kv, opts, s};

fn link(trace_id: &str, span_id: &str, state: Vec<(String, String)>) -> Link {
    Link {
        span_context: SpanContext {
            trace_id: trace_id.into(),
            span_id: span_id.into(),
            trace_flags: TraceFlags::empty(),
            is_remote: true,
            trace_state: state,
        },
        attributes: vec![],
    }
}

fn main() {
    let huge = "x".repeat(1 << 20);
    let span = tracer::start(
        "malformed",
        Some(&tracer::StartOptions {
            links: Some(vec![
                link(
                    "not-hex-not-hex-not-hex-not-hex!",
                    "00f067aa0ba902b7",
                    vec![],
                ),
                link("4bf92f3577b34da6a3ce929d0e0e4736", "short", vec![]),
                link(
                    "00000000000000000000000000000000",
                    "00f067aa0ba902b7",
                    vec![],
                ),
                link(
                    "4bf92f3577b34da6a3ce929d0e0e4736",
                    "00f067aa0ba902b7",
                    vec![("BAD KEY".into(), "v,=".into())],
                ),
            ]),
            attributes: Some(vec![
                kv("huge", Value::String(huge.clone())),
                kv("", Value::Bool(true)),
                kv("big-array", Value::S64Array(vec![7; 100_000])),
            ]),
            timestamp: Some(Datetime {
                seconds: u64::MAX,
                nanoseconds: u32::MAX,
            }),
            ..opts()
        }),
    );
    span.add_event(
        &huge,
        Some(Datetime {
            seconds: 1,
            nanoseconds: 2_000_000_000,
        }),
        None,
    );
    span.set_status(&Status::Error(huge.clone()));
    span.update_name(&huge);
    span.end(Some(Datetime {
        seconds: 0,
        nanoseconds: 0,
    }));

    log(Level::Info, &huge, &huge);

    metrics::record(InstrumentKind::Counter, "", Number::S64(1), &[]);
    metrics::record(
        InstrumentKind::Counter,
        "9starts-with-digit",
        Number::S64(1),
        &[],
    );
    metrics::record(InstrumentKind::Counter, "negative", Number::S64(-1), &[]);
    metrics::record(InstrumentKind::Histogram, "nan", Number::F64(f64::NAN), &[]);
    let bad = Instrument::new(
        InstrumentKind::Histogram,
        "bad-bounds",
        Some(&InstrumentOptions {
            description: Some(huge.clone()),
            unit: Some("é".repeat(100)),
            boundaries: Some(vec![10.0, 1.0, f64::INFINITY]),
        }),
    );
    bad.record(Number::F64(3.0), &[]);
    let rejected = Instrument::new(InstrumentKind::Gauge, "has space", None);
    rejected.record(Number::S64(1), &[]);

    let ok = tracer::start("valid-after-malformed", None);
    ok.set_attributes(&[s("still", "works")]);
    drop(ok);
    println!("survived");
}

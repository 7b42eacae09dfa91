//! A `wasi:otel@0.2.0-rc.2` guest written straight against the WIT (as a
//! guest SDK's span processor, log processor and metric exporter would call
//! it): spans of every kind and field, a span left open, logs with and
//! without trace ids, every metric kind, and malformed input the host must
//! survive. Prints the contexts the host handed out.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit-otel",
        world: "wasi:otel/imports",
        generate_all,
    });
}

use bindings::wasi::clocks::wall_clock::Datetime;
use bindings::wasi::otel::logs;
use bindings::wasi::otel::metrics::{self, *};
use bindings::wasi::otel::tracing::{
    self as otel_tracing, Event, Link, SpanContext, SpanData, SpanKind, Status, TraceFlags,
};
use bindings::wasi::otel::types::{InstrumentationScope, KeyValue, Resource};

const ROOT: &str = "b7ad6b7169203331";
const CHILD: &str = "00f067aa0ba902b7";
const UNENDED: &str = "1111111111111111";
const ORPHAN: &str = "2222222222222222";
const FALLBACK_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const LINKED_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn kv(key: &str, json: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: json.into(),
    }
}

fn at(seconds: u64) -> Datetime {
    Datetime {
        seconds,
        nanoseconds: 500,
    }
}

fn cx(trace_id: &str, span_id: &str) -> SpanContext {
    SpanContext {
        trace_id: trace_id.into(),
        span_id: span_id.into(),
        trace_flags: TraceFlags::SAMPLED,
        is_remote: false,
        trace_state: vec![],
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "otel-wit-guest".into(),
        version: Some("1.2.3".into()),
        schema_url: Some("https://opentelemetry.io/schemas/1.30.0".into()),
        attributes: vec![kv("scope.attr", r#""yes""#)],
    }
}

fn span(context: SpanContext, parent: &str, name: &str, kind: SpanKind) -> SpanData {
    SpanData {
        span_context: context,
        parent_span_id: parent.into(),
        span_kind: kind,
        name: name.into(),
        start_time: at(1_700_000_000),
        end_time: at(1_700_000_002),
        attributes: vec![],
        events: vec![],
        links: vec![],
        status: Status::Unset,
        instrumentation_scope: scope(),
        dropped_attributes: 0,
        dropped_events: 0,
        dropped_links: 0,
    }
}

fn show(what: &str, c: &SpanContext) {
    println!("{what} {} {}", c.trace_id, c.span_id);
}

fn main() {
    let outer = otel_tracing::outer_span_context();
    show("outer", &outer);
    let trace = if outer.trace_id.bytes().all(|b| b == b'0') {
        FALLBACK_TRACE.to_string()
    } else {
        outer.trace_id.clone()
    };
    let parent_of_root = if outer.span_id.bytes().all(|b| b == b'0') {
        String::new()
    } else {
        outer.span_id.clone()
    };

    let root = cx(&trace, ROOT);
    otel_tracing::on_start(&root);
    show("inside-root", &otel_tracing::outer_span_context());

    let child = cx(&trace, CHILD);
    otel_tracing::on_start(&child);
    show("inside-child", &otel_tracing::outer_span_context());

    // Correlated by the host (no ids given): the child.
    logs::on_emit(&logs::LogRecord {
        timestamp: Some(at(1_700_000_001)),
        observed_timestamp: None,
        severity_text: Some("WARN".into()),
        severity_number: Some(13),
        body: Some(
            r#"{"msg":"structured","n":3,"raw":"data:application/octet-stream;base64,AAEC"}"#
                .into(),
        ),
        attributes: Some(vec![kv("user", r#""ann""#), kv("tries", "2")]),
        event_name: Some("login.failed".into()),
        resource: None,
        instrumentation_scope: Some(scope()),
        trace_id: None,
        span_id: None,
        trace_flags: None,
    });
    // Correlated by the guest: the root.
    logs::on_emit(&logs::LogRecord {
        timestamp: None,
        observed_timestamp: None,
        severity_text: None,
        severity_number: Some(9),
        body: Some(r#""explicit ids""#.into()),
        attributes: None,
        event_name: None,
        resource: None,
        instrumentation_scope: None,
        trace_id: Some(trace.clone()),
        span_id: Some(ROOT.into()),
        trace_flags: Some(TraceFlags::SAMPLED),
    });

    let mut c = span(child.clone(), ROOT, "child", SpanKind::Internal);
    c.events = vec![Event {
        name: "cache.miss".into(),
        time: at(1_700_000_001),
        attributes: vec![kv("key", r#""k1""#)],
    }];
    c.links = vec![Link {
        span_context: SpanContext {
            trace_state: vec![("vendor".into(), "abc".into())],
            ..cx(LINKED_TRACE, "00f067aa0ba902b9")
        },
        attributes: vec![kv("link.kind", r#""follows""#)],
    }];
    c.status = Status::Ok;
    otel_tracing::on_end(&c);
    show("after-child", &otel_tracing::outer_span_context());

    let mut r = span(root.clone(), &parent_of_root, "root", SpanKind::Server);
    r.attributes = vec![
        kv("str", r#""text""#),
        kv("int", "-42"),
        kv("double", "1.5"),
        kv("bool", "true"),
        kv("strings", r#"["a","b"]"#),
        kv("ints", "[1,2,3]"),
        kv("bytes", r#""data:application/octet-stream;base64,AAEC""#),
        kv("map", r#"{"k":"v"}"#),
        kv("broken", "{not json"),
    ];
    r.status = Status::Error("it failed".into());
    r.dropped_attributes = 3;
    otel_tracing::on_start(&cx(&trace, UNENDED));
    otel_tracing::on_end(&r);

    // Malformed: an end without a start, a start with a bad id.
    otel_tracing::on_end(&span(
        cx(&trace, ORPHAN),
        "nothex",
        "orphan",
        SpanKind::Client,
    ));
    otel_tracing::on_start(&cx("not-hex", ROOT));
    logs::on_emit(&logs::LogRecord {
        timestamp: Some(Datetime {
            seconds: u64::MAX,
            nanoseconds: 0,
        }),
        observed_timestamp: None,
        severity_text: None,
        severity_number: Some(99),
        body: Some("not json at all".into()),
        attributes: Some(vec![kv("", "1")]),
        event_name: None,
        resource: None,
        instrumentation_scope: None,
        trace_id: Some("xyz".into()),
        span_id: None,
        trace_flags: None,
    });

    export_metrics(&trace);
    println!("done");
}

fn exemplar(trace: &str) -> Exemplar {
    Exemplar {
        filtered_attributes: vec![kv("filtered", "true")],
        time: at(1_700_000_001),
        value: MetricNumber::F64(7.5),
        span_id: CHILD.into(),
        trace_id: trace.into(),
    }
}

fn export_metrics(trace: &str) {
    let metric = |name: &str, data: MetricData| Metric {
        name: name.into(),
        description: format!("{name} description"),
        unit: "ms".into(),
        data,
    };
    let result = metrics::export(&ResourceMetrics {
        resource: Resource {
            attributes: vec![
                kv("service.name", r#""unknown_service""#),
                kv("guest.only", r#""kept""#),
            ],
            schema_url: None,
        },
        scope_metrics: vec![ScopeMetrics {
            scope: scope(),
            metrics: vec![
                metric(
                    "requests",
                    MetricData::U64Sum(Sum {
                        data_points: vec![SumDataPoint {
                            attributes: vec![kv("route", r#""/a""#)],
                            value: MetricNumber::U64(5),
                            exemplars: vec![],
                        }],
                        start_time: at(1_700_000_000),
                        time: at(1_700_000_010),
                        temporality: Temporality::Cumulative,
                        is_monotonic: true,
                    }),
                ),
                metric(
                    "queue.depth",
                    MetricData::S64Sum(Sum {
                        data_points: vec![SumDataPoint {
                            attributes: vec![],
                            value: MetricNumber::S64(-3),
                            exemplars: vec![],
                        }],
                        start_time: at(1_700_000_000),
                        time: at(1_700_000_010),
                        temporality: Temporality::Delta,
                        is_monotonic: false,
                    }),
                ),
                metric(
                    "temperature",
                    MetricData::F64Gauge(Gauge {
                        data_points: vec![GaugeDataPoint {
                            attributes: vec![],
                            value: MetricNumber::F64(21.5),
                            exemplars: vec![],
                        }],
                        start_time: None,
                        time: at(1_700_000_010),
                    }),
                ),
                metric(
                    "latency",
                    MetricData::F64Histogram(Histogram {
                        data_points: vec![
                            HistogramDataPoint {
                                attributes: vec![kv("route", r#""/a""#)],
                                count: 6,
                                bounds: vec![1.0, 5.0, 10.0],
                                bucket_counts: vec![1, 2, 0, 3],
                                min: Some(MetricNumber::F64(0.5)),
                                max: Some(MetricNumber::F64(12.0)),
                                sum: MetricNumber::F64(40.0),
                                exemplars: vec![exemplar(trace)],
                            },
                            // Inconsistent: dropped by the host.
                            HistogramDataPoint {
                                attributes: vec![],
                                count: 1,
                                bounds: vec![1.0],
                                bucket_counts: vec![1],
                                min: None,
                                max: None,
                                sum: MetricNumber::F64(1.0),
                                exemplars: vec![],
                            },
                        ],
                        start_time: at(1_700_000_000),
                        time: at(1_700_000_010),
                        temporality: Temporality::Delta,
                    }),
                ),
                metric(
                    "sizes",
                    MetricData::U64ExponentialHistogram(ExponentialHistogram {
                        data_points: vec![ExponentialHistogramDataPoint {
                            attributes: vec![],
                            count: 4,
                            min: Some(MetricNumber::U64(1)),
                            max: Some(MetricNumber::U64(9)),
                            sum: MetricNumber::U64(16),
                            scale: 2,
                            zero_count: 1,
                            positive_bucket: ExponentialBucket {
                                offset: -1,
                                counts: vec![1, 0, 2],
                            },
                            negative_bucket: ExponentialBucket {
                                offset: 0,
                                counts: vec![],
                            },
                            zero_threshold: 0.0,
                            exemplars: vec![],
                        }],
                        start_time: at(1_700_000_000),
                        time: at(1_700_000_010),
                        temporality: Temporality::Cumulative,
                    }),
                ),
            ],
        }],
    });
    println!("export {result:?}");
}

//! A wasi:otel guest written the way real ones are: the application uses the
//! OpenTelemetry Rust SDK (`opentelemetry_sdk` 0.33 on wasm32-wasip2), and
//! this program's wasi:otel span processor, log processor and metric reader
//! hand what the SDK made to the host. Prints the contexts it used.
//!
//! The metric side uses the SDK's manual reader (the periodic one needs a
//! thread): the program collects once before it exits and exports the
//! result, as a guest SDK does at the end of a request.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit-otel",
        world: "wasi:otel/imports",
        generate_all,
    });
}

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bindings::wasi::clocks::wall_clock::Datetime;
use bindings::wasi::otel::{logs as wlogs, metrics as wm, tracing as wt, types as wty};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Array, Context, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogProcessor, SdkLogRecord, SdkLoggerProvider};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, Pipeline, SdkMeterProvider, Temporality,
};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanProcessor};

// ---------------------------------------------------------------------------
// Values: the proposal's JSON encoding.

fn json_value(v: &Value) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::Bool(b) => json!(b),
        Value::I64(i) => json!(i),
        Value::F64(f) => json!(f),
        Value::String(s) => json!(s.as_str()),
        Value::Array(Array::Bool(a)) => json!(a),
        Value::Array(Array::I64(a)) => json!(a),
        Value::Array(Array::F64(a)) => json!(a),
        Value::Array(Array::String(a)) => {
            json!(a.iter().map(|s| s.as_str()).collect::<Vec<_>>())
        }
        other => json!(other.to_string()),
    }
}

fn json_any(v: &AnyValue) -> serde_json::Value {
    use base64::Engine as _;
    use serde_json::json;
    match v {
        AnyValue::Int(i) => json!(i),
        AnyValue::Double(d) => json!(d),
        AnyValue::String(s) => json!(s.as_str()),
        AnyValue::Boolean(b) => json!(b),
        AnyValue::Bytes(b) => json!(format!(
            "data:application/octet-stream;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(b.as_slice())
        )),
        AnyValue::ListAny(l) => serde_json::Value::Array(l.iter().map(json_any).collect()),
        AnyValue::Map(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, v)| (k.to_string(), json_any(v)))
                .collect(),
        ),
        _ => serde_json::Value::Null,
    }
}

fn kvs<'a>(attrs: impl IntoIterator<Item = &'a KeyValue>) -> Vec<wty::KeyValue> {
    attrs
        .into_iter()
        .map(|kv| wty::KeyValue {
            key: kv.key.to_string(),
            value: json_value(&kv.value).to_string(),
        })
        .collect()
}

fn datetime(t: SystemTime) -> Datetime {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Datetime {
        seconds: d.as_secs(),
        nanoseconds: d.subsec_nanos(),
    }
}

fn scope(s: &InstrumentationScope) -> wty::InstrumentationScope {
    wty::InstrumentationScope {
        name: s.name().to_string(),
        version: s.version().map(str::to_string),
        schema_url: s.schema_url().map(str::to_string),
        attributes: kvs(s.attributes()),
    }
}

// ---------------------------------------------------------------------------
// Tracing.

fn to_wit(cx: &SpanContext) -> wt::SpanContext {
    let mut flags = wt::TraceFlags::empty();
    if cx.is_sampled() {
        flags |= wt::TraceFlags::SAMPLED;
    }
    let state = cx.trace_state().header();
    wt::SpanContext {
        trace_id: format!("{:032x}", cx.trace_id()),
        span_id: format!("{:016x}", cx.span_id()),
        trace_flags: flags,
        is_remote: cx.is_remote(),
        trace_state: state
            .split(',')
            .filter_map(|e| e.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// The host's context, as the parent of this invocation's root spans.
fn outer_context() -> Context {
    let o = wt::outer_span_context();
    let (Ok(t), Ok(s)) = (TraceId::from_hex(&o.trace_id), SpanId::from_hex(&o.span_id)) else {
        return Context::new();
    };
    let flags = if o.trace_flags.contains(wt::TraceFlags::SAMPLED) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let cx = SpanContext::new(t, s, flags, true, TraceState::default());
    if cx.is_valid() {
        Context::new().with_remote_span_context(cx)
    } else {
        Context::new()
    }
}

#[derive(Debug)]
struct WasiOtelSpanProcessor;

impl SpanProcessor for WasiOtelSpanProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {
        wt::on_start(&to_wit(span.span_context()));
    }

    fn on_end(&self, span: SpanData) {
        let kind = match span.span_kind {
            SpanKind::Client => wt::SpanKind::Client,
            SpanKind::Server => wt::SpanKind::Server,
            SpanKind::Producer => wt::SpanKind::Producer,
            SpanKind::Consumer => wt::SpanKind::Consumer,
            SpanKind::Internal => wt::SpanKind::Internal,
        };
        let status = match &span.status {
            Status::Unset => wt::Status::Unset,
            Status::Ok => wt::Status::Ok,
            Status::Error { description } => wt::Status::Error(description.to_string()),
        };
        wt::on_end(&wt::SpanData {
            span_context: to_wit(&span.span_context),
            parent_span_id: if span.parent_span_id == SpanId::INVALID {
                String::new()
            } else {
                format!("{:016x}", span.parent_span_id)
            },
            span_kind: kind,
            name: span.name.to_string(),
            start_time: datetime(span.start_time),
            end_time: datetime(span.end_time),
            attributes: kvs(&span.attributes),
            events: span
                .events
                .events
                .iter()
                .map(|e| wt::Event {
                    name: e.name.to_string(),
                    time: datetime(e.timestamp),
                    attributes: kvs(&e.attributes),
                })
                .collect(),
            links: span
                .links
                .links
                .iter()
                .map(|l| wt::Link {
                    span_context: to_wit(&l.span_context),
                    attributes: kvs(&l.attributes),
                })
                .collect(),
            status,
            instrumentation_scope: scope(&span.instrumentation_scope),
            dropped_attributes: span.dropped_attributes_count,
            dropped_events: span.events.dropped_count,
            dropped_links: span.links.dropped_count,
        });
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Logs.

#[derive(Debug)]
struct WasiOtelLogProcessor;

impl LogProcessor for WasiOtelLogProcessor {
    fn emit(&self, r: &mut SdkLogRecord, s: &InstrumentationScope) {
        let tc = r.trace_context();
        wlogs::on_emit(&wlogs::LogRecord {
            timestamp: r.timestamp().map(datetime),
            observed_timestamp: r.observed_timestamp().map(datetime),
            severity_text: r.severity_text().map(str::to_string),
            severity_number: r.severity_number().map(|n| n as u8),
            body: r.body().map(|b| json_any(b).to_string()),
            attributes: Some(
                r.attributes_iter()
                    .map(|(k, v)| wty::KeyValue {
                        key: k.to_string(),
                        value: json_any(v).to_string(),
                    })
                    .collect(),
            ),
            event_name: r.event_name().map(str::to_string),
            resource: None,
            instrumentation_scope: Some(scope(s)),
            trace_id: tc.map(|t| format!("{:032x}", t.trace_id)),
            span_id: tc.map(|t| format!("{:016x}", t.span_id)),
            trace_flags: tc.and_then(|t| t.trace_flags).map(|f| {
                if f.is_sampled() {
                    wt::TraceFlags::SAMPLED
                } else {
                    wt::TraceFlags::empty()
                }
            }),
        });
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Metrics: a manual reader shared with the meter provider.

#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

fn temporality(t: Temporality) -> wm::Temporality {
    match t {
        Temporality::Delta => wm::Temporality::Delta,
        Temporality::LowMemory => wm::Temporality::LowMemory,
        _ => wm::Temporality::Cumulative,
    }
}

trait Num: Copy {
    fn wit(self) -> wm::MetricNumber;
}
impl Num for f64 {
    fn wit(self) -> wm::MetricNumber {
        wm::MetricNumber::F64(self)
    }
}
impl Num for u64 {
    fn wit(self) -> wm::MetricNumber {
        wm::MetricNumber::U64(self)
    }
}
impl Num for i64 {
    fn wit(self) -> wm::MetricNumber {
        wm::MetricNumber::S64(self)
    }
}

fn exemplars<'a, T: Num + 'a>(
    list: impl Iterator<Item = &'a opentelemetry_sdk::metrics::data::Exemplar<T>>,
) -> Vec<wm::Exemplar> {
    list.map(|e| wm::Exemplar {
        filtered_attributes: kvs(e.filtered_attributes()),
        time: datetime(e.time()),
        value: e.value.wit(),
        span_id: e.span_id().iter().map(|b| format!("{b:02x}")).collect(),
        trace_id: e.trace_id().iter().map(|b| format!("{b:02x}")).collect(),
    })
    .collect()
}

/// Which of the WIT's twelve cases: `(gauge, sum, histogram, exponential)`.
type Cases = (
    fn(wm::Gauge) -> wm::MetricData,
    fn(wm::Sum) -> wm::MetricData,
    fn(wm::Histogram) -> wm::MetricData,
    fn(wm::ExponentialHistogram) -> wm::MetricData,
);

fn data<T: Num>(d: &MetricData<T>, cases: Cases) -> wm::MetricData {
    match d {
        MetricData::Gauge(g) => (cases.0)(wm::Gauge {
            data_points: g
                .data_points()
                .map(|p| wm::GaugeDataPoint {
                    attributes: kvs(p.attributes()),
                    value: p.value().wit(),
                    exemplars: exemplars(p.exemplars()),
                })
                .collect(),
            start_time: g.start_time().map(datetime),
            time: datetime(g.time()),
        }),
        MetricData::Sum(s) => (cases.1)(wm::Sum {
            data_points: s
                .data_points()
                .map(|p| wm::SumDataPoint {
                    attributes: kvs(p.attributes()),
                    value: p.value().wit(),
                    exemplars: exemplars(p.exemplars()),
                })
                .collect(),
            start_time: datetime(s.start_time()),
            time: datetime(s.time()),
            temporality: temporality(s.temporality()),
            is_monotonic: s.is_monotonic(),
        }),
        MetricData::Histogram(h) => (cases.2)(wm::Histogram {
            data_points: h
                .data_points()
                .map(|p| wm::HistogramDataPoint {
                    attributes: kvs(p.attributes()),
                    count: p.count(),
                    bounds: p.bounds().collect(),
                    bucket_counts: p.bucket_counts().collect(),
                    min: p.min().map(Num::wit),
                    max: p.max().map(Num::wit),
                    sum: p.sum().wit(),
                    exemplars: exemplars(p.exemplars()),
                })
                .collect(),
            start_time: datetime(h.start_time()),
            time: datetime(h.time()),
            temporality: temporality(h.temporality()),
        }),
        MetricData::ExponentialHistogram(h) => (cases.3)(wm::ExponentialHistogram {
            data_points: h
                .data_points()
                .map(|p| wm::ExponentialHistogramDataPoint {
                    attributes: kvs(p.attributes()),
                    count: p.count() as u64,
                    min: p.min().map(Num::wit),
                    max: p.max().map(Num::wit),
                    sum: p.sum().wit(),
                    scale: p.scale(),
                    zero_count: p.zero_count(),
                    positive_bucket: wm::ExponentialBucket {
                        offset: p.positive_bucket().offset(),
                        counts: p.positive_bucket().counts().collect(),
                    },
                    negative_bucket: wm::ExponentialBucket {
                        offset: p.negative_bucket().offset(),
                        counts: p.negative_bucket().counts().collect(),
                    },
                    zero_threshold: p.zero_threshold(),
                    exemplars: exemplars(p.exemplars()),
                })
                .collect(),
            start_time: datetime(h.start_time()),
            time: datetime(h.time()),
            temporality: temporality(h.temporality()),
        }),
    }
}

fn export_metrics(rm: &ResourceMetrics) -> Result<(), String> {
    use wm::MetricData as D;
    let resource_attributes: Vec<KeyValue> = rm
        .resource()
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    let scope_metrics = rm
        .scope_metrics()
        .map(|sm| wm::ScopeMetrics {
            scope: scope(sm.scope()),
            metrics: sm
                .metrics()
                .map(|m| wm::Metric {
                    name: m.name().to_string(),
                    description: m.description().to_string(),
                    unit: m.unit().to_string(),
                    data: match m.data() {
                        AggregatedMetrics::F64(d) => data(
                            d,
                            (
                                D::F64Gauge,
                                D::F64Sum,
                                D::F64Histogram,
                                D::F64ExponentialHistogram,
                            ),
                        ),
                        AggregatedMetrics::U64(d) => data(
                            d,
                            (
                                D::U64Gauge,
                                D::U64Sum,
                                D::U64Histogram,
                                D::U64ExponentialHistogram,
                            ),
                        ),
                        AggregatedMetrics::I64(d) => data(
                            d,
                            (
                                D::S64Gauge,
                                D::S64Sum,
                                D::S64Histogram,
                                D::S64ExponentialHistogram,
                            ),
                        ),
                    },
                })
                .collect(),
        })
        .collect();
    wm::export(&wm::ResourceMetrics {
        resource: wty::Resource {
            attributes: kvs(&resource_attributes),
            schema_url: rm.resource().schema_url().map(str::to_string),
        },
        scope_metrics,
    })
}

// ---------------------------------------------------------------------------
// The application.

fn main() {
    let resource = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", "unknown_service"),
            KeyValue::new("guest.sdk", "opentelemetry-rust"),
        ])
        .build();
    let tracer_provider = SdkTracerProvider::builder()
        .with_span_processor(WasiOtelSpanProcessor)
        .with_resource(resource.clone())
        .build();
    let logger_provider = SdkLoggerProvider::builder()
        .with_log_processor(WasiOtelLogProcessor)
        .with_resource(resource.clone())
        .build();
    let reader = SharedReader(Arc::new(ManualReader::builder().build()));
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(reader.clone())
        .with_resource(resource)
        .build();

    let tracer = tracer_provider.tracer("sdk-app");
    let logger = logger_provider.logger("sdk-app");
    let meter = meter_provider.meter("sdk-app");
    let requests = meter.u64_counter("app.requests").build();
    let latency = meter
        .f64_histogram("app.latency")
        .with_unit("ms")
        .with_boundaries(vec![1.0, 10.0, 100.0])
        .build();
    let inflight = meter.i64_up_down_counter("app.inflight").build();

    let outer = outer_context();
    let root = tracer
        .span_builder("handle")
        .with_kind(SpanKind::Server)
        .start_with_context(&tracer, &outer);
    let root_cx = outer.with_span(root);
    {
        let _guard = root_cx.clone().attach();
        let sc = root_cx.span().span_context().clone();
        println!("root {:032x} {:016x}", sc.trace_id(), sc.span_id());
        let here = wt::outer_span_context();
        println!("host-sees {} {}", here.trace_id, here.span_id);

        let mut child = tracer.start("query");
        child.set_attribute(KeyValue::new("db.rows", 3i64));
        child.set_attribute(KeyValue::new("db.ok", true));
        child.set_attribute(KeyValue::new(
            "db.tables",
            Value::Array(Array::String(vec!["a".into(), "b".into()])),
        ));
        child.add_event("retry", vec![KeyValue::new("attempt", 2i64)]);
        child.set_status(Status::error("timeout"));
        let child_cx = child.span_context().clone();
        println!(
            "child {:032x} {:016x}",
            child_cx.trace_id(),
            child_cx.span_id()
        );
        let child_context = Context::current().with_span(child);
        {
            let _g = child_context.clone().attach();
            let mut record = logger.create_log_record();
            record.set_severity_number(Severity::Error);
            record.set_severity_text("ERROR");
            record.set_body(AnyValue::from("query timed out"));
            record.add_attribute("bytes", AnyValue::Bytes(Box::new(vec![1, 2, 3])));
            logger.emit(record);
        }
        child_context.span().end();

        requests.add(2, &[KeyValue::new("route", "/a")]);
        inflight.add(-1, &[]);
        for v in [0.5, 5.0, 50.0, 500.0] {
            latency.record(v, &[KeyValue::new("route", "/a")]);
        }
    }
    root_cx.span().end();

    let mut rm = ResourceMetrics::default();
    reader.collect(&mut rm).expect("collecting metrics");
    println!("export {:?}", export_metrics(&rm));
}

//! `wasi:otel@0.2.0-rc.2` guests under an in-memory pipeline: what a guest's
//! SDK hands over (spans, log records, aggregated metrics) comes out with
//! its types, parents, links, status, correlation and metric kinds intact,
//! and bad input is counted, never a trap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::logs::{AnyValue, Severity};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, Key, KeyValue, Value};
use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLogRecord};
use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SpanData};
use wasi_observe_host::AggregatedMetricExporter;
use wasi_observe_host::export::batch::BatchConfig;
use wasi_observe_host::opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use wasi_observe_host::opentelemetry_proto::tonic::common::v1::{AnyValue as PAny, any_value};
use wasi_observe_host::opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, exemplar, metric::Data, number_data_point,
};
use wasi_observe_host::{Limits, Telemetry, WasiObserveCtx, WasiObserveView};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    observe: WasiObserveCtx,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiObserveView for Host {
    fn observe(&mut self) -> &mut WasiObserveCtx {
        &mut self.observe
    }
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

fn linker() -> &'static Linker<Host> {
    static LINKER: OnceLock<Linker<Host>> = OnceLock::new();
    LINKER.get_or_init(|| {
        let mut linker = Linker::<Host>::new(engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        wasi_observe_host::add_to_linker(&mut linker).unwrap();
        linker
    })
}

struct Run {
    result: wasmtime::Result<Result<(), ()>>,
    stdout: String,
    store: Store<Host>,
}

impl Run {
    fn succeeded(&self) {
        match &self.result {
            Ok(Ok(())) => {}
            other => panic!("the guest failed: {other:?}\nstdout: {}", self.stdout),
        }
    }

    /// `name trace-id span-id` lines.
    fn ids(&self) -> HashMap<String, (String, String)> {
        self.stdout
            .lines()
            .filter_map(|line| {
                let w: Vec<&str> = line.split_whitespace().collect();
                (w.len() == 3 && w[1].len() == 32 && w[2].len() == 16)
                    .then(|| (w[0].to_string(), (w[1].to_string(), w[2].to_string())))
            })
            .collect()
    }
}

fn run(program: &str, observe: WasiObserveCtx) -> Run {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let mut wasi = WasiCtx::builder();
    wasi.stdout(stdout.clone()).inherit_stderr();
    let host = Host {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        observe,
    };
    let mut store = Store::new(engine(), host);
    let component = Component::from_file(engine(), program).unwrap();
    let command = Command::instantiate(&mut store, &component, linker()).unwrap();
    let result = command.wasi_cli_run().call_run(&mut store);
    Run {
        result,
        stdout: String::from_utf8(stdout.contents().to_vec()).unwrap(),
        store,
    }
}

/// Guest-aggregated metrics, as exported.
#[derive(Clone, Debug, Default)]
struct Collected(Arc<Mutex<Vec<ExportMetricsServiceRequest>>>);

impl AggregatedMetricExporter for Collected {
    fn export(&self, request: &ExportMetricsServiceRequest) -> Result<(), String> {
        self.0.lock().unwrap().push(request.clone());
        Ok(())
    }
}

struct Pipeline {
    telemetry: Telemetry,
    spans: InMemorySpanExporter,
    logs: InMemoryLogExporter,
    metrics: Collected,
}

impl Pipeline {
    fn new() -> Self {
        let spans = InMemorySpanExporter::default();
        let logs = InMemoryLogExporter::default();
        let metrics = Collected::default();
        let batch = BatchConfig {
            scheduled_delay: Duration::from_millis(50),
            ..BatchConfig::default()
        };
        let telemetry = Telemetry::builder()
            .with_default_service_name("otel-tests")
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_limits(Limits::default())
            .with_span_batch_config(batch.clone())
            .with_log_batch_config(batch)
            .with_span_exporter(spans.clone())
            .with_log_exporter(logs.clone())
            .with_aggregated_metric_exporter(metrics.clone())
            .build()
            .unwrap();
        Pipeline {
            telemetry,
            spans,
            logs,
            metrics,
        }
    }

    fn spans(&self) -> Vec<SpanData> {
        self.telemetry.force_flush().unwrap();
        self.spans.get_finished_spans().unwrap()
    }

    fn logs(&self) -> Vec<SdkLogRecord> {
        self.telemetry.force_flush().unwrap();
        self.logs
            .get_emitted_logs()
            .unwrap()
            .into_iter()
            .map(|l| l.record)
            .collect()
    }

    fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        self.telemetry.force_flush().unwrap();
        self.metrics.0.lock().unwrap().clone()
    }
}

fn span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "{name}: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::new(seconds, 500)
}

fn remote_parent() -> SpanContext {
    SpanContext::new(
        TraceId::from_hex("5b8efff798038103d269b633813fc60c").unwrap(),
        SpanId::from_hex("eee19b7ec3c1b174").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    )
}

const ROOT: &str = "b7ad6b7169203331";
const CHILD: &str = "00f067aa0ba902b7";
const UNENDED: &str = "1111111111111111";

fn metric<'a>(metrics: &'a [Metric], name: &str) -> &'a Metric {
    metrics
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
}

fn sid(hex: &str) -> SpanId {
    SpanId::from_hex(hex).unwrap()
}

#[test]
fn otel_wit() {
    let p = Pipeline::new();
    let ambient = remote_parent();
    let trace = format!("{:032x}", ambient.trace_id());
    let mut run = run(
        test_programs_artifacts::OTEL_WIT_COMPONENT,
        WasiObserveCtx::new(&p.telemetry).with_parent(ambient.clone()),
    );
    run.succeeded();
    assert!(run.stdout.contains("export Ok(())"), "{}", run.stdout);

    // outer-span-context: the ambient parent, then the innermost open span.
    let ids = run.ids();
    assert_eq!(
        ids["outer"],
        (trace.clone(), format!("{:016x}", ambient.span_id()))
    );
    assert_eq!(ids["inside-root"], (trace.clone(), ROOT.into()));
    assert_eq!(ids["inside-child"], (trace.clone(), CHILD.into()));
    assert_eq!(ids["after-child"], (trace.clone(), ROOT.into()));

    // The span announced and never ended is still open, and host-made spans
    // (CLIENT, --trace-calls) would hang under it.
    let open = run.store.data().observe.current_span_context().unwrap();
    assert_eq!(open.span_id(), sid(UNENDED));
    assert_eq!(
        run.store
            .data_mut()
            .observe
            .end_open_spans("the guest returned"),
        1
    );
    drop(run);

    let spans = p.spans();
    let root = span(&spans, "root");
    assert_eq!(root.span_context.trace_id(), ambient.trace_id());
    assert_eq!(root.span_context.span_id(), sid(ROOT));
    assert_eq!(root.parent_span_id, ambient.span_id());
    assert!(
        root.parent_span_is_remote,
        "its parent is the ambient remote context"
    );
    assert_eq!(root.span_kind, SpanKind::Server);
    assert_eq!(root.status, Status::error("it failed"));
    assert_eq!(
        (root.start_time, root.end_time),
        (at(1_700_000_000), at(1_700_000_002))
    );
    let a = &root.attributes;
    assert_eq!(attr(a, "str"), Some(&Value::from("text")));
    assert_eq!(attr(a, "int"), Some(&Value::I64(-42)));
    assert_eq!(attr(a, "double"), Some(&Value::F64(1.5)));
    assert_eq!(attr(a, "bool"), Some(&Value::Bool(true)));
    assert_eq!(
        attr(a, "strings"),
        Some(&Value::Array(Array::String(vec!["a".into(), "b".into()])))
    );
    assert_eq!(
        attr(a, "ints"),
        Some(&Value::Array(Array::I64(vec![1, 2, 3])))
    );
    assert_eq!(
        attr(a, "bytes"),
        Some(&Value::from("data:application/octet-stream;base64,AAEC"))
    );
    assert_eq!(attr(a, "map"), Some(&Value::from(r#"{"k":"v"}"#)));
    assert_eq!(attr(a, "broken"), None);
    assert_eq!(root.dropped_attributes_count, 3);
    let scope = &root.instrumentation_scope;
    assert_eq!(scope.name(), "otel-wit-guest");
    assert_eq!(scope.version(), Some("1.2.3"));
    assert_eq!(
        scope.schema_url(),
        Some("https://opentelemetry.io/schemas/1.30.0")
    );
    assert_eq!(
        scope.attributes().next(),
        Some(&KeyValue::new("scope.attr", "yes"))
    );

    let child = span(&spans, "child");
    assert_eq!(child.parent_span_id, sid(ROOT));
    assert!(!child.parent_span_is_remote);
    assert_eq!(child.span_kind, SpanKind::Internal);
    assert_eq!(child.status, Status::Ok);
    let event = &child.events.events[0];
    assert_eq!(event.name, "cache.miss");
    assert_eq!(event.timestamp, at(1_700_000_001));
    assert_eq!(event.attributes, vec![KeyValue::new("key", "k1")]);
    let link = &child.links.links[0];
    assert_eq!(
        format!("{:032x}", link.span_context.trace_id()),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(link.span_context.trace_state().header(), "vendor=abc");
    assert_eq!(link.attributes, vec![KeyValue::new("link.kind", "follows")]);

    // Never ended: exported with an error status, under the root (the
    // innermost open span of its trace when it started).
    let unended = span(&spans, "wasi:otel span (never ended)");
    assert_eq!(unended.span_context.span_id(), sid(UNENDED));
    assert_eq!(unended.parent_span_id, sid(ROOT));
    assert_eq!(unended.status, Status::error("the guest returned"));

    // Ended without a start, with a malformed parent id: kept, as a root.
    let orphan = span(&spans, "orphan");
    assert_eq!(orphan.parent_span_id, SpanId::INVALID);
    assert_eq!(orphan.span_kind, SpanKind::Client);
    assert_eq!(spans.len(), 4);

    // Logs: correlated by the host, by the guest, and repaired.
    let logs = p.logs();
    assert_eq!(logs.len(), 3);
    let warn = &logs[0];
    assert_eq!(warn.severity_number(), Some(Severity::Warn));
    assert_eq!(warn.severity_text(), Some("WARN"));
    assert_eq!(warn.event_name(), Some("login.failed"));
    assert_eq!(warn.timestamp(), Some(at(1_700_000_001)));
    let tc = warn.trace_context().unwrap();
    assert_eq!((tc.trace_id, tc.span_id), (ambient.trace_id(), sid(CHILD)));
    let Some(AnyValue::Map(body)) = warn.body() else {
        panic!("{:?}", warn.body())
    };
    assert_eq!(body[&Key::from("msg")], AnyValue::from("structured"));
    assert_eq!(body[&Key::from("n")], AnyValue::Int(3));
    assert_eq!(
        body[&Key::from("raw")],
        AnyValue::Bytes(Box::new(vec![0, 1, 2]))
    );
    let attrs: Vec<_> = warn.attributes_iter().cloned().collect();
    assert!(attrs.contains(&(Key::from("user"), AnyValue::from("ann"))));
    assert!(attrs.contains(&(Key::from("tries"), AnyValue::Int(2))));

    let explicit = &logs[1];
    assert_eq!(explicit.body(), Some(&AnyValue::from("explicit ids")));
    assert_eq!(explicit.trace_context().unwrap().span_id, sid(ROOT));
    assert_eq!(explicit.severity_number(), Some(Severity::Info));

    let repaired = &logs[2];
    assert_eq!(repaired.body(), Some(&AnyValue::from("not json at all")));
    assert_eq!(repaired.severity_number(), None);
    assert_eq!(repaired.timestamp(), None);
    // Half the ids: ignored; correlated with the innermost open span.
    assert_eq!(repaired.trace_context().unwrap().span_id, sid(UNENDED));
    assert_eq!(repaired.attributes_iter().count(), 0);

    // Metrics: every kind, as the guest aggregated it.
    let exports = p.metrics();
    assert_eq!(exports.len(), 1);
    let rm = &exports[0].resource_metrics[0];
    let resource: HashMap<&str, &PAny> = rm
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_ref().unwrap()))
        .collect();
    let text = |v: &PAny| match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        text(resource["service.name"]),
        "otel-tests",
        "the host's name wins"
    );
    assert_eq!(text(resource["guest.only"]), "kept");
    let sm = &rm.scope_metrics[0];
    assert_eq!(sm.scope.as_ref().unwrap().name, "otel-wit-guest");
    assert_eq!(sm.scope.as_ref().unwrap().version, "1.2.3");
    let m = |name: &str| metric(&sm.metrics, name);

    let Some(Data::Sum(requests)) = &m("requests").data else {
        panic!()
    };
    assert!(requests.is_monotonic);
    assert_eq!(
        requests.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    let point = &requests.data_points[0];
    assert_eq!(point.value, Some(number_data_point::Value::AsInt(5)));
    assert_eq!(point.start_time_unix_nano, 1_700_000_000_000_000_500);
    assert_eq!(point.time_unix_nano, 1_700_000_010_000_000_500);
    assert_eq!(point.attributes[0].key, "route");
    assert_eq!(m("requests").unit, "ms");
    assert_eq!(m("requests").description, "requests description");

    let Some(Data::Sum(depth)) = &m("queue.depth").data else {
        panic!()
    };
    assert!(!depth.is_monotonic);
    assert_eq!(
        depth.aggregation_temporality,
        AggregationTemporality::Delta as i32
    );
    assert_eq!(
        depth.data_points[0].value,
        Some(number_data_point::Value::AsInt(-3))
    );

    let Some(Data::Gauge(temp)) = &m("temperature").data else {
        panic!()
    };
    assert_eq!(
        temp.data_points[0].value,
        Some(number_data_point::Value::AsDouble(21.5))
    );
    assert_eq!(temp.data_points[0].start_time_unix_nano, 0);

    let Some(Data::Histogram(latency)) = &m("latency").data else {
        panic!()
    };
    assert_eq!(
        latency.aggregation_temporality,
        AggregationTemporality::Delta as i32
    );
    assert_eq!(
        latency.data_points.len(),
        1,
        "the inconsistent point is dropped"
    );
    let h = &latency.data_points[0];
    assert_eq!(h.count, 6);
    assert_eq!(h.explicit_bounds, vec![1.0, 5.0, 10.0]);
    assert_eq!(h.bucket_counts, vec![1, 2, 0, 3]);
    assert_eq!((h.sum, h.min, h.max), (Some(40.0), Some(0.5), Some(12.0)));
    let ex = &h.exemplars[0];
    assert_eq!(ex.value, Some(exemplar::Value::AsDouble(7.5)));
    assert_eq!(ex.span_id, sid(CHILD).to_bytes().to_vec());
    assert_eq!(ex.trace_id, ambient.trace_id().to_bytes().to_vec());
    assert_eq!(ex.filtered_attributes[0].key, "filtered");

    let Some(Data::ExponentialHistogram(sizes)) = &m("sizes").data else {
        panic!()
    };
    assert_eq!(
        sizes.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    let e = &sizes.data_points[0];
    assert_eq!((e.count, e.scale, e.zero_count), (4, 2, 1));
    assert_eq!((e.sum, e.min, e.max), (Some(16.0), Some(1.0), Some(9.0)));
    let pos = e.positive.as_ref().unwrap();
    assert_eq!((pos.offset, pos.bucket_counts.clone()), (-1, vec![1, 0, 2]));

    let stats = p.telemetry.stats();
    assert_eq!(stats.measurements, 5);
    assert_eq!(stats.measurements_dropped, 1);
    assert_eq!(stats.otel_metric_exports_delivered, 1);
    // The bad attribute, the orphan's missing start and bad parent, the bad
    // id of a start, and the repaired log's time, severity, body, empty key
    // and half trace context.
    assert_eq!(stats.invalid_input, 9, "{stats}");
}

#[test]
fn otel_wit_main() {
    let p = Pipeline::new();
    let mut run = run(
        test_programs_artifacts::OTEL_WIT_MAIN_COMPONENT,
        WasiObserveCtx::new(&p.telemetry),
    );
    run.succeeded();
    let ids = run.ids();
    // No ambient context: all zeros, a root for the guest's SDK.
    assert_eq!(ids["outer"], ("0".repeat(32), "0".repeat(16)));
    assert_eq!(
        ids["inside"],
        ("0af7651916cd43dd8448eb211c80319c".into(), ROOT.into())
    );
    let open = run.store.data().observe.current_span_context().unwrap();
    assert_eq!(open.span_id(), sid(ROOT));
    assert_eq!(run.store.data_mut().observe.end_open_spans("trapped"), 1);
    drop(run);
    let spans = p.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].status, Status::error("trapped"));
}

#[test]
fn otel_guests_run_against_a_disabled_pipeline() {
    let telemetry = Telemetry::disabled();
    let mut run = run(
        test_programs_artifacts::OTEL_WIT_COMPONENT,
        WasiObserveCtx::new(&telemetry),
    );
    run.succeeded();
    assert_eq!(run.store.data_mut().observe.end_open_spans("done"), 0);
}

/// The OpenTelemetry Rust SDK in the guest, behind wasi:otel processors and
/// a metric reader: what real wasi:otel guests look like.
#[test]
fn otel_sdk_guest() {
    let p = Pipeline::new();
    let ambient = remote_parent();
    let mut run = run(
        test_programs_artifacts::OTEL_SDK_GUEST_COMPONENT,
        WasiObserveCtx::new(&p.telemetry).with_parent(ambient.clone()),
    );
    run.succeeded();
    assert!(run.stdout.contains("export Ok(())"), "{}", run.stdout);
    let ids = run.ids();
    let (root_trace, root_id) = ids["root"].clone();
    assert_eq!(root_trace, format!("{:032x}", ambient.trace_id()));
    // While the guest's root span is open, the host sees it as innermost.
    assert_eq!(ids["host-sees"], (root_trace.clone(), root_id.clone()));
    let (_, child_id) = ids["child"].clone();
    assert_eq!(run.store.data_mut().observe.end_open_spans("done"), 0);
    drop(run);

    let spans = p.spans();
    assert_eq!(spans.len(), 2);
    let root = span(&spans, "handle");
    assert_eq!(root.span_kind, SpanKind::Server);
    assert_eq!(root.parent_span_id, ambient.span_id());
    assert_eq!(format!("{:016x}", root.span_context.span_id()), root_id);
    let query = span(&spans, "query");
    assert_eq!(query.parent_span_id, root.span_context.span_id());
    assert_eq!(query.instrumentation_scope.name(), "sdk-app");
    assert_eq!(query.status, Status::error("timeout"));
    assert_eq!(attr(&query.attributes, "db.rows"), Some(&Value::I64(3)));
    assert_eq!(attr(&query.attributes, "db.ok"), Some(&Value::Bool(true)));
    assert_eq!(
        attr(&query.attributes, "db.tables"),
        Some(&Value::Array(Array::String(vec!["a".into(), "b".into()])))
    );
    assert_eq!(query.events.events[0].name, "retry");
    assert_eq!(
        query.events.events[0].attributes,
        vec![KeyValue::new("attempt", 2i64)]
    );

    let logs = p.logs();
    assert_eq!(logs.len(), 1);
    let log = &logs[0];
    assert_eq!(log.severity_number(), Some(Severity::Error));
    assert_eq!(log.severity_text(), Some("ERROR"));
    assert_eq!(log.body(), Some(&AnyValue::from("query timed out")));
    assert_eq!(
        format!("{:016x}", log.trace_context().unwrap().span_id),
        child_id
    );
    let attrs: Vec<_> = log.attributes_iter().cloned().collect();
    assert_eq!(
        attrs,
        vec![(Key::from("bytes"), AnyValue::Bytes(Box::new(vec![1, 2, 3])))]
    );

    let exports = p.metrics();
    let rm = &exports[0].resource_metrics[0];
    let keys: Vec<&str> = rm
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .map(|kv| kv.key.as_str())
        .collect();
    assert!(keys.contains(&"guest.sdk"), "{keys:?}");
    let metrics: Vec<Metric> = rm
        .scope_metrics
        .iter()
        .flat_map(|sm| sm.metrics.clone())
        .collect();
    let m = |name: &str| metric(&metrics, name);
    let Some(Data::Histogram(latency)) = &m("app.latency").data else {
        panic!("{:?}", m("app.latency"))
    };
    let h = &latency.data_points[0];
    assert_eq!(h.explicit_bounds, vec![1.0, 10.0, 100.0]);
    assert_eq!(h.bucket_counts, vec![1, 1, 1, 1]);
    assert_eq!(
        (h.count, h.sum, h.min, h.max),
        (4, Some(555.5), Some(0.5), Some(500.0))
    );
    assert_eq!(m("app.latency").unit, "ms");
    let Some(Data::Sum(requests)) = &m("app.requests").data else {
        panic!()
    };
    assert!(requests.is_monotonic);
    assert_eq!(
        requests.data_points[0].value,
        Some(number_data_point::Value::AsInt(2))
    );
    let Some(Data::Sum(inflight)) = &m("app.inflight").data else {
        panic!()
    };
    assert!(!inflight.is_monotonic);
    assert_eq!(
        inflight.data_points[0].value,
        Some(number_data_point::Value::AsInt(-1))
    );
    assert_eq!(p.telemetry.stats().invalid_input, 0);
}

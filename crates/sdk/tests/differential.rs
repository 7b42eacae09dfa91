//! The guest SDK's differential test: the same instrumented library code
//! (`sdk-scenario`) runs natively under `tracing-opentelemetry` (plus the
//! OpenTelemetry appenders for `tracing` events and `log` records) with
//! in-memory exporters, and as a component using `wasi_observe::init()`
//! under the host with in-memory exporters. The span trees (names, parents,
//! kinds, statuses, attributes, events, links) and the log records
//! (severity, target, body, attributes, correlated span) must be equal.
//!
//! The one declared difference: fields holding `u64`s, which
//! `tracing-opentelemetry` records as text and `wasi-observe` as integers
//! (`sdk_scenario::U64_FIELDS`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use opentelemetry::logs::AnyValue;
use opentelemetry::trace::{SpanId, TracerProvider as _};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLogRecord, SdkLoggerProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;
use wasi_observe_host::export::batch::BatchConfig;
use wasi_observe_host::testing::Run;
use wasi_observe_host::{Telemetry, WasiObserveCtx};

/// A span as compared: everything but ids and times.
#[derive(Debug, PartialEq)]
struct Node {
    name: String,
    kind: String,
    status: String,
    attributes: BTreeMap<String, String>,
    events: Vec<(String, BTreeMap<String, String>)>,
    links: Vec<String>,
    children: Vec<Node>,
}

/// A log record as compared.
#[derive(Debug, PartialEq)]
struct Log {
    severity: String,
    target: String,
    body: String,
    attributes: BTreeMap<String, String>,
    /// The name of the span it is correlated with.
    span: Option<String>,
}

/// A value as text that names its type (and not how a string is held).
fn value(key: &str, v: &Value) -> String {
    match v {
        Value::String(s) if sdk_scenario::U64_FIELDS.contains(&key) => {
            match s.as_str().parse::<i64>() {
                Ok(n) => format!("i64 {n}"),
                Err(_) => format!("str {:?}", s.as_str()),
            }
        }
        Value::String(s) => format!("str {:?}", s.as_str()),
        Value::I64(i) => format!("i64 {i}"),
        Value::F64(f) => format!("f64 {f}"),
        Value::Bool(b) => format!("bool {b}"),
        Value::Array(opentelemetry::Array::String(a)) => {
            format!(
                "str[] {:?}",
                a.iter().map(|s| s.as_str()).collect::<Vec<_>>()
            )
        }
        Value::Array(a) => format!("array {a}"),
        other => format!("other {other}"),
    }
}

fn any_value(v: &AnyValue) -> String {
    match v {
        AnyValue::Int(i) => format!("i64 {i}"),
        AnyValue::Double(f) => format!("f64 {f}"),
        AnyValue::Boolean(b) => format!("bool {b}"),
        AnyValue::String(s) => format!("str {:?}", s.as_str()),
        other => format!("other {other:?}"),
    }
}

fn attributes<'a>(
    kvs: impl IntoIterator<Item = &'a opentelemetry::KeyValue>,
) -> BTreeMap<String, String> {
    kvs.into_iter()
        .map(|kv| (kv.key.to_string(), value(kv.key.as_str(), &kv.value)))
        .collect()
}

/// The span trees of `spans`, roots sorted by name, children too.
fn trees(spans: &[SpanData]) -> Vec<Node> {
    let by_id: HashMap<SpanId, &SpanData> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), s))
        .collect();
    let mut children: HashMap<SpanId, Vec<&SpanData>> = HashMap::new();
    let mut roots = Vec::new();
    for s in spans {
        match by_id.get(&s.parent_span_id) {
            Some(parent) => {
                assert_eq!(
                    parent.span_context.trace_id(),
                    s.span_context.trace_id(),
                    "{} is in another trace than its parent",
                    s.name
                );
                children.entry(s.parent_span_id).or_default().push(s);
            }
            None => {
                assert_eq!(
                    s.parent_span_id,
                    SpanId::INVALID,
                    "{} has an unknown parent",
                    s.name
                );
                roots.push(s);
            }
        }
    }
    fn node(
        s: &SpanData,
        children: &HashMap<SpanId, Vec<&SpanData>>,
        by_id: &HashMap<SpanId, &SpanData>,
    ) -> Node {
        let mut kids: Vec<Node> = children
            .get(&s.span_context.span_id())
            .into_iter()
            .flatten()
            .map(|c| node(c, children, by_id))
            .collect();
        kids.sort_by(|a, b| a.name.cmp(&b.name));
        Node {
            name: s.name.to_string(),
            kind: format!("{:?}", s.span_kind),
            status: format!("{:?}", s.status),
            attributes: attributes(&s.attributes),
            events: s
                .events
                .iter()
                .map(|e| (e.name.to_string(), attributes(&e.attributes)))
                .collect(),
            links: s
                .links
                .iter()
                .map(|l| {
                    by_id
                        .get(&l.span_context.span_id())
                        .map_or("?".to_string(), |t| t.name.to_string())
                })
                .collect(),
            children: kids,
        }
    }
    let mut out: Vec<Node> = roots.iter().map(|r| node(r, &children, &by_id)).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn logs(records: &[SdkLogRecord], spans: &[SpanData]) -> Vec<Log> {
    let names: HashMap<SpanId, String> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), s.name.to_string()))
        .collect();
    let mut records: Vec<&SdkLogRecord> = records.iter().collect();
    records.sort_by_key(|r| r.timestamp().or(r.observed_timestamp()));
    records
        .into_iter()
        .map(|r| Log {
            severity: format!(
                "{:?} {}",
                r.severity_number(),
                r.severity_text().unwrap_or_default()
            ),
            target: r.target().map(|t| t.to_string()).unwrap_or_default(),
            body: r.body().map(any_value).unwrap_or_default(),
            attributes: r
                .attributes_iter()
                .map(|(k, v): &(Key, AnyValue)| (k.to_string(), any_value(v)))
                .collect(),
            span: r.trace_context().map(|tc| {
                names
                    .get(&tc.span_id)
                    .cloned()
                    .unwrap_or_else(|| format!("unknown span {}", tc.span_id))
            }),
        })
        .collect()
}

/// The scenario natively, under `tracing-opentelemetry` and the appenders.
fn native() -> (Vec<SpanData>, Vec<SdkLogRecord>) {
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let log_records = InMemoryLogExporter::default();
    let logger_provider = SdkLoggerProvider::builder()
        .with_simple_exporter(log_records.clone())
        .build();
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());
    log::set_boxed_logger(Box::new(
        opentelemetry_appender_log::OpenTelemetryLogBridge::new(&logger_provider),
    ))
    .unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer_provider.tracer("scenario"))
                // A component has one thread, and the SDK does not time
                // idle spans: see the crate documentation.
                .with_threads(false)
                .with_tracked_inactivity(false),
        )
        .with(
            opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(
                &logger_provider,
            ),
        );
    tracing::subscriber::with_default(subscriber, sdk_scenario::run);
    tracer_provider.force_flush().unwrap();
    logger_provider.force_flush().unwrap();
    (
        spans.get_finished_spans().unwrap(),
        log_records
            .get_emitted_logs()
            .unwrap()
            .into_iter()
            .map(|l| l.record)
            .collect(),
    )
}

/// The scenario as a component using the SDK, under the host, run with
/// `args`.
fn component(args: &[&str]) -> (Vec<SpanData>, Vec<SdkLogRecord>) {
    let spans = InMemorySpanExporter::default();
    let log_records = InMemoryLogExporter::default();
    let batch = BatchConfig {
        scheduled_delay: Duration::from_millis(20),
        ..BatchConfig::default()
    };
    let telemetry = Telemetry::builder()
        .with_default_service_name("differential")
        .with_span_batch_config(batch.clone())
        .with_log_batch_config(batch)
        .with_span_exporter(spans.clone())
        .with_log_exporter(log_records.clone())
        .build()
        .unwrap();
    let run = Run::command(
        test_programs_artifacts::SDK_SCENARIO_COMPONENT,
        WasiObserveCtx::new(&telemetry),
        args,
    );
    run.succeeded();
    assert_eq!(
        run.store.data().observe.open_spans(),
        0,
        "the guest left spans open"
    );
    drop(run);
    telemetry.force_flush().unwrap();
    (
        spans.get_finished_spans().unwrap(),
        log_records
            .get_emitted_logs()
            .unwrap()
            .into_iter()
            .map(|l| l.record)
            .collect(),
    )
}

/// The component runs twice: with the subscriber `init()` installs, and
/// with the SDK's layer on a `tracing-subscriber` registry, as users add it
/// to a subscriber of their own (`wasi_observe::layer()`). (One test: the
/// native run installs a global `log` logger, which a process has once.)
#[test]
fn same_spans_and_logs_natively_and_in_a_component() {
    let native = native();
    same_as_native(&native, component(&["sdk_scenario"]));
    same_as_native(&native, component(&["sdk_scenario", "--layer"]));
}

fn same_as_native(
    (native_spans, native_logs): &(Vec<SpanData>, Vec<SdkLogRecord>),
    (guest_spans, guest_logs): (Vec<SpanData>, Vec<SdkLogRecord>),
) {
    let native_trees = trees(native_spans);
    let guest_trees = trees(&guest_spans);
    // The scenario's shape, so that an empty or flat result cannot pass.
    let names: Vec<&str> = native_trees.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["explicit_root", "root"]);
    assert!(native_trees[1].children.len() >= 10, "{native_trees:#?}");
    assert_eq!(native_spans.len(), guest_spans.len());
    for (n, g) in native_trees.iter().zip(&guest_trees) {
        pretty_eq(n, g);
    }
    assert_eq!(native_trees, guest_trees);

    let native_logs = logs(native_logs, native_spans);
    let guest_logs = logs(&guest_logs, &guest_spans);
    assert!(native_logs.len() >= 12, "{native_logs:#?}");
    for (n, g) in native_logs.iter().zip(&guest_logs) {
        assert_eq!(n, g);
    }
    assert_eq!(native_logs.len(), guest_logs.len());
}

/// Compares two trees node by node, so a failure names the first span that
/// differs rather than printing both trees whole.
fn pretty_eq(native: &Node, guest: &Node) {
    assert_eq!(native.name, guest.name);
    let what = &native.name;
    assert_eq!(native.kind, guest.kind, "kind of {what}");
    assert_eq!(native.status, guest.status, "status of {what}");
    assert_eq!(native.attributes, guest.attributes, "attributes of {what}");
    assert_eq!(native.events, guest.events, "events of {what}");
    assert_eq!(native.links, guest.links, "links of {what}");
    let names = |n: &Node| {
        n.children
            .iter()
            .map(|c| c.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(native), names(guest), "children of {what}");
    for (n, g) in native.children.iter().zip(&guest.children) {
        pretty_eq(n, g);
    }
}

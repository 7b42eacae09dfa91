//! The embedded telemetry store as an exporter of every signal
//! (`wasi-observe-store`, an SQLite file the `wasi-observe traces`, `trace`,
//! `logs`, `metrics` and `ui` commands read). Cargo feature `store`.
//!
//! Add it with [`TelemetryBuilder::with_store`](crate::TelemetryBuilder::with_store),
//! which also gives a store-only queue the store's batch sizes.

pub use wasi_observe_store::Store;

/// Opens the telemetry store at `path` (default:
/// [`wasi_observe_store::default_path`]), with retention from the environment.
pub fn open_store(path: Option<&std::path::Path>) -> wasmtime::Result<wasi_observe_store::Store> {
    let open = || {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => wasi_observe_store::default_path()?,
        };
        wasi_observe_store::Store::open(&path, wasi_observe_store::StoreOptions::from_env()?)
    };
    open().map_err(|e| wasmtime::Error::msg(format!("{e:#}")))
}

/// The pipeline's form: the store reads each span batch in place.
impl crate::export::SpanBatchExporter for wasi_observe_store::StoreExporter {
    fn export(&self, batch: &[opentelemetry_sdk::trace::SpanData]) -> OTelSdkResult {
        self.export_spans(batch)
    }

    fn shutdown(&self, timeout: std::time::Duration) -> OTelSdkResult {
        SpanExporter::shutdown_with_timeout(self, timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        SpanExporter::set_resource(self, resource)
    }
}

/// The store takes the metrics `wasi:otel` guests aggregated as points of
/// their own kinds (a histogram with its buckets), like the SDK's.
impl crate::export::aggregated::AggregatedMetricExporter for wasi_observe_store::StoreExporter {
    fn export(
        &self,
        request: &opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
    ) -> Result<(), String> {
        for rm in &request.resource_metrics {
            let service = rm
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(proto_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| "unknown_service".into());
            let mut rows = Vec::new();
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    point_rows(m, &mut rows);
                }
            }
            self.write_points(&service, &rows)
                .map_err(|e| format!("telemetry store: {e}"))?;
        }
        Ok(())
    }
}

use opentelemetry_proto::tonic::common::v1::any_value as proto_value;
use opentelemetry_proto::tonic::metrics::v1::{self as proto, metric::Data, number_data_point};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::SpanExporter;
use wasi_observe_store::PointRow;

fn point_rows(m: &proto::Metric, rows: &mut Vec<PointRow>) {
    let row = |time: u64,
               kind,
               attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
               value| PointRow {
        time_ns: i64::try_from(time).unwrap_or(i64::MAX),
        name: m.name.clone(),
        description: m.description.clone(),
        unit: m.unit.clone(),
        kind,
        attributes: attrs_json(attrs).to_string(),
        value,
        ..PointRow::default()
    };
    let number = |v: &Option<number_data_point::Value>| match v {
        Some(number_data_point::Value::AsDouble(f)) => *f,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => 0.0,
    };
    match &m.data {
        Some(Data::Gauge(g)) => {
            for p in &g.data_points {
                rows.push(row(
                    p.time_unix_nano,
                    "gauge",
                    &p.attributes,
                    number(&p.value),
                ));
            }
        }
        Some(Data::Sum(s)) => {
            let kind = if s.is_monotonic {
                "counter"
            } else {
                "updowncounter"
            };
            for p in &s.data_points {
                rows.push(row(p.time_unix_nano, kind, &p.attributes, number(&p.value)));
            }
        }
        Some(Data::Histogram(h)) => {
            for p in &h.data_points {
                let mut r = row(
                    p.time_unix_nano,
                    "histogram",
                    &p.attributes,
                    p.sum.unwrap_or(0.0),
                );
                r.count = i64::try_from(p.count).ok();
                r.min = p.min;
                r.max = p.max;
                r.buckets = Some(
                    serde_json::json!({"bounds": p.explicit_bounds, "counts": p.bucket_counts})
                        .to_string(),
                );
                rows.push(r);
            }
        }
        Some(Data::ExponentialHistogram(h)) => {
            for p in &h.data_points {
                let mut r = row(
                    p.time_unix_nano,
                    "exp_histogram",
                    &p.attributes,
                    p.sum.unwrap_or(0.0),
                );
                r.count = i64::try_from(p.count).ok();
                r.min = p.min;
                r.max = p.max;
                rows.push(r);
            }
        }
        _ => {}
    }
}

/// Attributes as the store's JSON object (keys sorted, as for SDK data).
fn attrs_json(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> serde_json::Value {
    let map: std::collections::BTreeMap<String, serde_json::Value> = attrs
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                value_json(kv.value.as_ref().and_then(|v| v.value.as_ref())),
            )
        })
        .collect();
    serde_json::Value::Object(map.into_iter().collect())
}

fn value_json(v: Option<&proto_value::Value>) -> serde_json::Value {
    use serde_json::Value as Json;
    match v {
        Some(proto_value::Value::StringValue(s)) => Json::String(s.clone()),
        Some(proto_value::Value::BoolValue(b)) => Json::Bool(*b),
        Some(proto_value::Value::IntValue(i)) => Json::from(*i),
        Some(proto_value::Value::DoubleValue(f)) => {
            serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number)
        }
        Some(proto_value::Value::ArrayValue(a)) => Json::Array(
            a.values
                .iter()
                .map(|v| value_json(v.value.as_ref()))
                .collect(),
        ),
        Some(proto_value::Value::KvlistValue(l)) => attrs_json(&l.values),
        Some(proto_value::Value::BytesValue(b)) => Json::from(b.clone()),
        _ => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Exporter, Signal};

    #[test]
    fn the_store_exporter_opens_its_store_and_refuses_foreign_files() {
        let dir = fresh_dir("store");
        let path = dir.join("t.db");
        let telemetry = crate::Telemetry::builder()
            .with_exporter(Signal::Traces, &Exporter::Store(Some(path.clone())))
            .unwrap()
            .with_exporter(Signal::Logs, &Exporter::Store(Some(path.clone())))
            .unwrap()
            .build()
            .unwrap();
        telemetry.shutdown().unwrap();
        let store = wasi_observe_store::Store::open_existing(&path).unwrap();
        assert_eq!(store.counts().unwrap().traces, 0);

        let foreign = dir.join("notes.txt");
        std::fs::write(&foreign, "not a database").unwrap();
        let err = crate::Telemetry::builder()
            .with_exporter(Signal::Metrics, &Exporter::Store(Some(foreign.clone())))
            .err()
            .expect("a foreign file is refused");
        assert!(
            err.to_string()
                .contains("is not a wasi-observe telemetry store"),
            "{err}"
        );
        assert_eq!(std::fs::read(&foreign).unwrap(), b"not a database");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A queue whose only exporters are stores gets the store's batch
    /// sizes; one with another exporter beside the store does not.
    #[test]
    fn a_store_only_queue_gets_the_store_batch_sizes() {
        let dir = fresh_dir("batch");
        let store = super::open_store(Some(&dir.join("t.db"))).unwrap();
        let only = crate::Telemetry::builder()
            .with_store(Signal::Traces, store.clone())
            .with_store(Signal::Logs, store.clone());
        assert_eq!(only.span_batch_config().max_export_batch_size, 8_192);
        assert_eq!(only.span_batch_config().max_queue_size, 16_384);
        assert_eq!(only.log_batch_config().max_export_batch_size, 8_192);
        let mixed = crate::Telemetry::builder()
            .with_store(Signal::Traces, store)
            .with_exporter(Signal::Traces, &Exporter::Console)
            .unwrap();
        assert_eq!(mixed.span_batch_config().max_export_batch_size, 512);
        // No exporter at all: the ordinary defaults.
        let none = crate::Telemetry::builder();
        assert_eq!(none.log_batch_config().max_export_batch_size, 512);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Emits a span and then a log record in it, with the store taking both
    /// signals (and, if `beside`, an in-memory span exporter beside it),
    /// a span queue that would not export on its own for a minute and a log
    /// queue that exports each record at once. Returns the store's counts
    /// of log records and spans once the record is stored.
    fn stored_when_the_log_record_is(beside: bool) -> (i64, i64) {
        use crate::export::batch::BatchConfig;
        use crate::pipeline::logs::NewLog;
        use opentelemetry::logs::Severity;
        use opentelemetry::trace::SpanKind;
        use std::time::{Duration, Instant};

        let dir = fresh_dir(&format!("order-{beside}"));
        let store = super::open_store(Some(&dir.join("t.db"))).unwrap();
        let mut builder = crate::Telemetry::builder()
            .with_store(Signal::Traces, store.clone())
            .with_store(Signal::Logs, store.clone());
        if beside {
            builder = builder
                .with_span_exporter(opentelemetry_sdk::trace::InMemorySpanExporter::default());
        }
        let telemetry = builder
            .with_span_batch_config(BatchConfig {
                scheduled_delay: Duration::from_secs(60),
                ..BatchConfig::for_store_from_env(false)
            })
            .with_log_batch_config(BatchConfig {
                max_export_batch_size: 1,
                scheduled_delay: Duration::from_secs(60),
                ..BatchConfig::for_store_from_env(true)
            })
            .build()
            .unwrap();
        let span = crate::HostSpan::start(&telemetry, "op".into(), SpanKind::Server, None, vec![]);
        let cx = span.context().clone();
        span.end();
        telemetry.emit_log(NewLog {
            severity: Severity::Info,
            severity_text: "INFO",
            target: "".into(),
            body: Some("in op".into()),
            attributes: Vec::new(),
            span: Some(&cx),
            time: None,
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let counts = loop {
            let counts = store.counts().unwrap();
            if counts.logs > 0 || Instant::now() > deadline {
                break counts;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        telemetry.shutdown().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (counts.logs, counts.spans)
    }

    /// With the store the only span exporter, each log batch waits for the
    /// span queue to export first, so a record finds its trace's row (and
    /// the store writes no stand-in row for it).
    #[test]
    fn spans_reach_the_store_before_the_log_records_in_their_traces() {
        let (logs, spans) = stored_when_the_log_record_is(false);
        assert_eq!(logs, 1, "the log record was not exported at once");
        assert_eq!(spans, 1, "the span was not stored before its log record");
    }

    /// With another span exporter beside the store (a collector that may be
    /// slow), log batches do not wait for the span queue.
    #[test]
    fn log_records_do_not_wait_for_a_span_queue_with_other_exporters() {
        let (logs, spans) = stored_when_the_log_record_is(true);
        assert_eq!(logs, 1, "the log record was not exported at once");
        assert_eq!(spans, 0, "the log batch waited for the span queue");
    }

    /// An empty directory of this test process's own for `name`.
    fn fresh_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wasi-observe-host-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

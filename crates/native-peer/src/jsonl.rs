//! The peer's `jsonl:PATH` exporter: the same work as `wasi-observe`'s
//! JSON-lines exporter (`crates/host/src/export/file.rs`), so that
//! `jsonl:/dev/null` costs both servers the same. Each export converts the
//! batch with `opentelemetry-proto`'s transforms, serializes it with
//! `serde_json`, and writes it as one line, one `write` per batch.
//!
//! Re-implemented rather than imported: the host crate would bring wasmtime
//! into a benchmark peer that must not depend on it.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::logs::tonic::group_logs_by_resource_and_scope;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// Spans and log records written, so the peer can say at exit whether its
/// batch processors dropped any (they drop when their queue is full).
#[derive(Debug, Default)]
pub struct Written {
    pub spans: AtomicU64,
    pub logs: AtomicU64,
}

/// Writes OTLP/JSON lines to a file; one instance per signal, sharing the
/// file and the counts.
#[derive(Debug, Clone)]
pub struct JsonLines {
    file: Arc<Mutex<File>>,
    /// Set by the providers; converted at each export, as the host does.
    resource: Option<Resource>,
    written: Arc<Written>,
}

impl JsonLines {
    pub fn create(path: &str, written: Arc<Written>) -> std::io::Result<JsonLines> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonLines {
            file: Arc::new(Mutex::new(file)),
            resource: None,
            written,
        })
    }

    fn resource(&self) -> ResourceAttributesWithSchema {
        self.resource.as_ref().map(Into::into).unwrap_or_default()
    }

    fn write(&self, json: serde_json::Result<Vec<u8>>) -> OTelSdkResult {
        let mut line = json.map_err(|e| OTelSdkError::InternalFailure(e.to_string()))?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(&line)
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }
}

impl SpanExporter for JsonLines {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource()),
        };
        self.write(serde_json::to_vec(&request))?;
        self.written.spans.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = Some(resource.clone());
    }
}

impl LogExporter for JsonLines {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let n = batch.iter().count() as u64;
        if n == 0 {
            return Ok(());
        }
        let request = ExportLogsServiceRequest {
            resource_logs: group_logs_by_resource_and_scope(&batch, &self.resource()),
        };
        self.write(serde_json::to_vec(&request))?;
        self.written.logs.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = Some(resource.clone());
    }
}

impl PushMetricExporter for JsonLines {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        if metrics.scope_metrics().next().is_none() {
            return Ok(());
        }
        self.write(serde_json::to_vec(&ExportMetricsServiceRequest::from(
            metrics,
        )))
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

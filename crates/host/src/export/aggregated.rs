//! Exporters of metrics that `wasi:otel` guests aggregated themselves,
//! passed on as OTLP protobuf data: the SDK's metric exporters take only
//! what the SDK aggregated (see [`crate::interfaces::otel`]'s metrics).
//! They run on their own export thread, behind a queue that never blocks
//! the guest.

use std::fmt;
use std::io::Write as _;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1 as proto;

use super::batch::{Failure, Sink};
use super::retry::message_is_transient;
use crate::pipeline::budget::Held;

/// A queued export: boxed, as the queue moves items.
pub(crate) type GuestMetrics = Box<proto::ResourceMetrics>;

impl Held for GuestMetrics {
    fn held_bytes(&self) -> usize {
        std::mem::size_of::<proto::ResourceMetrics>() + prost::Message::encoded_len(&**self)
    }
}

/// Where guest-aggregated metrics go: one OTLP export request at a time, on
/// the export thread.
pub trait AggregatedMetricExporter: Send + Sync + fmt::Debug + 'static {
    /// Exports one request. An error is retried while it looks transient, as
    /// for spans and logs (see `export::is_transient`).
    fn export(&self, request: &ExportMetricsServiceRequest) -> Result<(), String>;
    /// Called once, after the last export.
    fn shutdown(&self) {}
}

impl AggregatedMetricExporter for crate::export::jsonl::JsonLinesExporter {
    fn export(&self, request: &ExportMetricsServiceRequest) -> Result<(), String> {
        if request.resource_metrics.is_empty() {
            return Ok(());
        }
        self.write_line(serde_json::to_vec(request))
            .map_err(|e| e.to_string())
    }
}

/// The console's view of guest-aggregated metrics: one line per metric.
#[derive(Debug, Default)]
pub(crate) struct ConsoleAggregated;

impl AggregatedMetricExporter for ConsoleAggregated {
    fn export(&self, request: &ExportMetricsServiceRequest) -> Result<(), String> {
        let mut out = String::new();
        for rm in &request.resource_metrics {
            for sm in &rm.scope_metrics {
                let scope = sm.scope.as_ref().map_or("", |s| s.name.as_str());
                for m in &sm.metrics {
                    let (kind, points) = match &m.data {
                        Some(proto::metric::Data::Sum(s)) => ("sum", s.data_points.len()),
                        Some(proto::metric::Data::Gauge(g)) => ("gauge", g.data_points.len()),
                        Some(proto::metric::Data::Histogram(h)) => {
                            ("histogram", h.data_points.len())
                        }
                        Some(proto::metric::Data::ExponentialHistogram(h)) => {
                            ("exponential histogram", h.data_points.len())
                        }
                        _ => ("other", 0),
                    };
                    out.push_str(&format!(
                        "metric {} ({kind}, {points} points, scope {scope}, from the guest)\n",
                        m.name
                    ));
                }
            }
        }
        std::io::stderr()
            .write_all(out.as_bytes())
            .map_err(|e| e.to_string())
    }
}

/// Delivers queued guest metrics to every [`AggregatedMetricExporter`].
pub(crate) struct AggregatedSink {
    pub(crate) exporters: Vec<Box<dyn AggregatedMetricExporter>>,
}

impl Sink<Box<proto::ResourceMetrics>> for AggregatedSink {
    fn targets(&self) -> usize {
        self.exporters.len()
    }

    fn export(
        &mut self,
        target: usize,
        batch: &[Box<proto::ResourceMetrics>],
        _timeout: std::time::Duration,
    ) -> Result<(), Failure> {
        let Some(e) = self.exporters.get(target) else {
            return Ok(());
        };
        let request = ExportMetricsServiceRequest {
            resource_metrics: batch.iter().map(|rm| (**rm).clone()).collect(),
        };
        e.export(&request).map_err(|message| Failure {
            transient: message_is_transient(&message),
            message: format!("{e:?}: {message}"),
        })
    }

    fn shutdown(&mut self, _timeout: std::time::Duration) {
        for e in &self.exporters {
            e.shutdown();
        }
    }
}

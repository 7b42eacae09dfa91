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

/// OTLP for guest-aggregated metrics, configured by the same standard
/// variables as the host's own OTLP metric exporter (so both go to the same
/// collector): `OTEL_EXPORTER_OTLP[_METRICS]_PROTOCOL` (`http/protobuf`,
/// the default, `http/json` or `grpc`), `_ENDPOINT` (for HTTP, a signal
/// endpoint as is and the general one with `/v1/metrics` appended; for gRPC
/// either as is, default `http://localhost:4317`), `_HEADERS` (`key=value`
/// pairs, values percent-decoded; gRPC metadata for `grpc`) and `_TIMEOUT`
/// (milliseconds, default 10 s).
#[derive(Debug)]
pub(crate) struct OtlpAggregated {
    client: reqwest::Client,
    url: String,
    json: bool,
    /// `grpc`: the channel, connected on first use and kept.
    grpc: Option<tokio::sync::Mutex<Option<tonic::transport::Channel>>>,
    headers: Vec<(String, String)>,
    timeout: std::time::Duration,
    rt: tokio::runtime::Handle,
}

fn otlp_var(signal: &str, general: &str) -> Option<String> {
    [signal, general]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

impl OtlpAggregated {
    pub(crate) fn from_env(rt: tokio::runtime::Handle) -> Self {
        let protocol = otlp_var(
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        )
        .unwrap_or_else(|| "http/protobuf".into());
        let json = protocol.trim() == "http/json";
        let grpc = protocol.trim() == "grpc";
        let url = match std::env::var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
            Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
            _ if grpc => otlp_var("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
                .map_or_else(|| "http://localhost:4317".into(), |v| v.trim().to_string()),
            _ => {
                let base = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .unwrap_or_else(|| "http://localhost:4318".into());
                format!("{}/v1/metrics", base.trim().trim_end_matches('/'))
            }
        };
        let mut headers: Vec<(String, String)> = Vec::new();
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        ] {
            for pair in std::env::var(name).unwrap_or_default().split(',') {
                let Some((k, v)) = pair.split_once('=') else {
                    continue;
                };
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s.trim())
                        .decode_utf8_lossy()
                        .into_owned()
                };
                let (k, v) = (decode(k), decode(v));
                // The signal's own headers win over the general ones.
                headers.retain(|(old, _)| !old.eq_ignore_ascii_case(&k));
                headers.push((k, v));
            }
        }
        let timeout = otlp_var(
            "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        )
        .and_then(|v| v.trim().parse().ok())
        .map_or(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_millis,
        );
        OtlpAggregated {
            client: reqwest::Client::new(),
            url,
            json,
            grpc: grpc.then(|| tokio::sync::Mutex::new(None)),
            headers,
            timeout,
            rt,
        }
    }
}

impl OtlpAggregated {
    /// One export over gRPC, on a channel connected on first use (and
    /// again after a failure).
    async fn export_grpc(
        &self,
        channel: &tokio::sync::Mutex<Option<tonic::transport::Channel>>,
        request: ExportMetricsServiceRequest,
    ) -> Result<(), String> {
        use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
        let failed =
            |e: &dyn fmt::Display| format!("OTLP metrics to {} (gRPC): {e} (connection)", self.url);
        let mut held = channel.lock().await;
        let ch = match held.as_ref() {
            Some(ch) => ch.clone(),
            None => {
                let endpoint = tonic::transport::Endpoint::from_shared(self.url.clone())
                    .map_err(|e| failed(&e))?
                    .timeout(self.timeout)
                    .connect_timeout(self.timeout);
                let ch = endpoint.connect().await.map_err(|e| failed(&e))?;
                *held = Some(ch.clone());
                ch
            }
        };
        drop(held);
        let mut grpc_request = tonic::Request::new(request);
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (
                k.to_ascii_lowercase()
                    .parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
                v.parse(),
            ) {
                grpc_request.metadata_mut().insert(k, v);
            }
        }
        match MetricsServiceClient::new(ch).export(grpc_request).await {
            Ok(_) => Ok(()),
            Err(status) => {
                *channel.lock().await = None;
                // The retry policy reads the code from this text.
                Err(format!(
                    "OTLP metrics to {} (gRPC): gRPC code: {:?}: {}",
                    self.url,
                    status.code(),
                    status.message()
                ))
            }
        }
    }
}

impl AggregatedMetricExporter for OtlpAggregated {
    fn export(&self, request: &ExportMetricsServiceRequest) -> Result<(), String> {
        if request.resource_metrics.is_empty() {
            return Ok(());
        }
        if let Some(channel) = &self.grpc {
            return self.rt.block_on(self.export_grpc(channel, request.clone()));
        }
        let (body, content_type) = if self.json {
            let body = serde_json::to_vec(request).map_err(|e| e.to_string())?;
            (body, "application/json")
        } else {
            (
                prost::Message::encode_to_vec(request),
                "application/x-protobuf",
            )
        };
        let mut post = self
            .client
            .post(&self.url)
            .timeout(self.timeout)
            .header("content-type", content_type)
            .body(body);
        for (k, v) in &self.headers {
            post = post.header(k.as_str(), v.as_str());
        }
        // The request future is made on the runtime: it arms a timer.
        let response = self
            .rt
            .block_on(async move { post.send().await })
            .map_err(|e| format!("OTLP metrics to {}: {e} (connection)", self.url))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            // The retry policy reads the status code from this text.
            Err(format!(
                "OTLP metrics to {}: status code: {}",
                self.url,
                status.as_u16()
            ))
        }
    }
}

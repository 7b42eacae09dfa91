//! Checks of the synchronous wrapper around the fake OTLP/gRPC collector.

use std::time::Duration;

use otlp_receiver::GrpcCollector;
use otlp_receiver::proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use otlp_receiver::proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use otlp_receiver::proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use otlp_receiver::proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use otlp_receiver::proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use otlp_receiver::proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use otlp_receiver::proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use otlp_receiver::proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use otlp_receiver::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

const WAIT: Duration = Duration::from_secs(10);

fn spans(count: usize) -> ExportTraceServiceRequest {
    let spans = (0..count)
        .map(|i| Span {
            trace_id: vec![0x11; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("span-{i}"),
            kind: 1,
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A client-side runtime, separate from the collector's own.
fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn starts_and_reports_an_endpoint() {
    let collector = GrpcCollector::start();
    let endpoint = collector.endpoint();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert_ne!(collector.address().port(), 0);
    assert_eq!(endpoint, format!("http://{}", collector.address()));
    assert!(collector.spans().is_empty());
    assert!(
        collector
            .wait_for_spans(1, Duration::from_millis(50))
            .is_empty()
    );

    // Two collectors can run side by side.
    let other = GrpcCollector::start();
    assert_ne!(other.endpoint(), endpoint);
}

#[test]
fn collects_what_a_grpc_client_exports() {
    let collector = GrpcCollector::start();
    let endpoint = collector.endpoint();
    // More spans than the fake collector's channel holds (64), in one request.
    let count = 150;

    client_runtime().block_on(async {
        let mut traces = TraceServiceClient::connect(endpoint.clone()).await.unwrap();
        traces.export(spans(count)).await.unwrap();

        let mut logs = LogsServiceClient::connect(endpoint.clone()).await.unwrap();
        let record = LogRecord {
            severity_text: "INFO".into(),
            trace_id: vec![0x11; 16],
            span_id: vec![0x22; 8],
            ..Default::default()
        };
        logs.export(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![record],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await
        .unwrap();

        let mut metrics = MetricsServiceClient::connect(endpoint.clone())
            .await
            .unwrap();
        let gauge = Metric {
            name: "temperature".into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint {
                    value: Some(number_data_point::Value::AsDouble(21.5)),
                    ..Default::default()
                }],
            })),
            ..Default::default()
        };
        metrics
            .export(ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    scope_metrics: vec![ScopeMetrics {
                        metrics: vec![gauge],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            })
            .await
            .unwrap();
    });

    let spans = collector.wait_for_spans(count, WAIT);
    assert_eq!(spans.len(), count);
    assert_eq!(spans[0].name, "span-0");
    assert_eq!(spans[0].trace_id, "11".repeat(16));
    assert_eq!(spans[0].span_id, "0000000000000001");
    assert_eq!(spans[0].kind, "SPAN_KIND_INTERNAL");

    let logs = collector.wait_for_logs(1, WAIT);
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].severity_text, "INFO");
    assert_eq!(logs[0].span_id, "22".repeat(8));

    assert!(collector.wait_for_metric("temperature", WAIT));
    assert_eq!(collector.metric_names(), ["temperature"]);
    assert_eq!(collector.metrics().len(), 1);

    collector.clear();
    assert!(collector.spans().is_empty());
}

#[test]
fn dropping_the_collector_closes_the_port() {
    let collector = GrpcCollector::start();
    let address = collector.address();
    drop(collector);
    // Shutdown happens in the background; give it a moment.
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(address).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still listening on {address}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

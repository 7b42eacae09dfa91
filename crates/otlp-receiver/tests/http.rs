//! End-to-end checks of the OTLP/HTTP receiver with a real HTTP client.

use std::io::Write;
use std::time::{Duration, Instant};

use otlp_receiver::proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use otlp_receiver::proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use otlp_receiver::proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use otlp_receiver::proto::tonic::common::v1::InstrumentationScope;
use otlp_receiver::proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use otlp_receiver::proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use otlp_receiver::proto::tonic::resource::v1::Resource;
use otlp_receiver::proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use otlp_receiver::{
    AnyValue, AnyValueExt, KeyValue, OtlpHttpReceiver, ReceiverOptions, SeverityNumber, Signal,
    SpanKind, SpanStatusCode, any_value,
};
use prost::Message;

const WAIT: Duration = Duration::from_secs(10);
const TRACE_ID: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
const ROOT_ID: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
const CHILD_ID: [u8; 8] = [0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 0xd8];

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_owned())),
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv(
            "service.name",
            any_value::Value::StringValue(service.to_owned()),
        )],
        ..Default::default()
    })
}

fn scope(name: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.to_owned(),
        version: "1.2.3".to_owned(),
        ..Default::default()
    })
}

fn span(name: &str, id: [u8; 8], parent: &[u8]) -> Span {
    Span {
        trace_id: TRACE_ID.to_vec(),
        span_id: id.to_vec(),
        parent_span_id: parent.to_vec(),
        name: name.to_owned(),
        kind: span::SpanKind::Internal as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_500_000_000,
        ..Default::default()
    }
}

fn trace_request() -> ExportTraceServiceRequest {
    let root = Span {
        kind: span::SpanKind::Server as i32,
        attributes: vec![
            kv("http.route", any_value::Value::StringValue("/x".into())),
            kv("http.status", any_value::Value::IntValue(200)),
            kv("cached", any_value::Value::BoolValue(true)),
            kv("ratio", any_value::Value::DoubleValue(0.5)),
        ],
        ..span("root", ROOT_ID, &[])
    };
    let child = Span {
        events: vec![span::Event {
            name: "exception".into(),
            time_unix_nano: 1_700_000_000_100_000_000,
            attributes: vec![kv(
                "exception.message",
                any_value::Value::StringValue("boom".into()),
            )],
            ..Default::default()
        }],
        links: vec![span::Link {
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            trace_state: "k=v".into(),
            ..Default::default()
        }],
        status: Some(Status {
            message: "it failed".into(),
            code: 2,
        }),
        ..span("child", CHILD_ID, &ROOT_ID)
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource("svc-a"),
            scope_spans: vec![ScopeSpans {
                scope: scope("test-scope"),
                spans: vec![root, child],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn logs_request() -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("svc-logs"),
            scope_logs: vec![ScopeLogs {
                scope: scope("log-scope"),
                log_records: vec![LogRecord {
                    time_unix_nano: 11,
                    observed_time_unix_nano: 12,
                    severity_number: SeverityNumber::Warn as i32,
                    severity_text: "WARN".into(),
                    body: Some(string("disk almost full")),
                    attributes: vec![kv("free.bytes", any_value::Value::IntValue(42))],
                    trace_id: TRACE_ID.to_vec(),
                    span_id: ROOT_ID.to_vec(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metrics_request() -> ExportMetricsServiceRequest {
    let counter = Metric {
        name: "requests".into(),
        description: "number of requests".into(),
        unit: "{request}".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                attributes: vec![kv("route", any_value::Value::StringValue("/x".into()))],
                time_unix_nano: 5,
                value: Some(number_data_point::Value::AsInt(7)),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    };
    let histogram = Metric {
        name: "latency".into(),
        unit: "ms".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                count: 3,
                sum: Some(12.5),
                bucket_counts: vec![1, 2],
                explicit_bounds: vec![5.0],
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        })),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("svc-metrics"),
            scope_metrics: vec![ScopeMetrics {
                scope: scope("meter"),
                metrics: vec![counter, histogram],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn post(
    receiver: &OtlpHttpReceiver,
    signal: Signal,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::blocking::Response {
    client()
        .post(receiver.signal_endpoint(signal))
        .header("content-type", content_type)
        .body(body)
        .send()
        .expect("request failed")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn protobuf_traces_are_decoded_and_flattened() {
    let receiver = OtlpHttpReceiver::start();
    assert!(receiver.endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(
        receiver.signal_endpoint(Signal::Traces),
        format!("{}/v1/traces", receiver.endpoint())
    );

    let sent = trace_request();
    let response = post(
        &receiver,
        Signal::Traces,
        "application/x-protobuf",
        sent.encode_to_vec(),
    );
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let answer = ExportTraceServiceResponse::decode(response.bytes().unwrap()).unwrap();
    assert_eq!(answer, ExportTraceServiceResponse::default());

    let spans = receiver.wait_for_spans(2, WAIT);
    assert_eq!(spans.len(), 2);
    assert_eq!(receiver.trace_requests(), vec![sent]);

    let root = &spans[0];
    assert_eq!(root.name, "root");
    assert_eq!(root.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(root.span_id, "00f067aa0ba902b7");
    assert_eq!(root.parent_span_id, "");
    assert!(root.is_root());
    assert_eq!(root.kind, SpanKind::Server);
    assert_eq!(root.duration_nanos(), 500_000_000);
    assert_eq!(root.attr_str("http.route"), Some("/x"));
    assert_eq!(root.attr_i64("http.status"), Some(200));
    assert_eq!(root.attr_bool("cached"), Some(true));
    assert_eq!(root.attr_f64("ratio"), Some(0.5));
    assert_eq!(root.status.code, SpanStatusCode::Unset);
    assert_eq!(root.resource_str("service.name"), Some("svc-a"));
    assert_eq!(root.scope_name, "test-scope");
    assert_eq!(root.scope_version, "1.2.3");

    let child = &spans[1];
    assert_eq!(child.parent_span_id, root.span_id);
    assert_eq!(child.kind, SpanKind::Internal);
    let event = child.event("exception").expect("exception event");
    assert_eq!(event.time_unix_nano, 1_700_000_000_100_000_000);
    assert_eq!(event.attr_str("exception.message"), Some("boom"));
    assert_eq!(child.links.len(), 1);
    assert_eq!(child.links[0].trace_id, "ab".repeat(16));
    assert_eq!(child.links[0].span_id, "cd".repeat(8));
    assert_eq!(child.links[0].trace_state, "k=v");
    assert_eq!(child.status.code, SpanStatusCode::Error);
    assert_eq!(child.status.message, "it failed");
    assert_eq!(child.resource_str("service.name"), Some("svc-a"));

    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].signal, Some(Signal::Traces));
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].status, 200);
    assert!(requests[0].accepted());
    assert_eq!(requests[0].content_type(), Some("application/x-protobuf"));
}

#[test]
fn json_logs_are_decoded_and_flattened() {
    let receiver = OtlpHttpReceiver::start();
    let sent = logs_request();
    let json = serde_json::to_vec(&sent).unwrap();
    // OTLP/JSON ids are hex strings.
    assert!(String::from_utf8_lossy(&json).contains("4bf92f3577b34da6a3ce929d0e0e4736"));

    let response = post(&receiver, Signal::Logs, "application/json", json);
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let answer: ExportLogsServiceResponse = serde_json::from_slice(&response.bytes().unwrap())
        .expect("the answer is a JSON export response");
    assert_eq!(answer.partial_success, None);

    let logs = receiver.wait_for_logs(1, WAIT);
    assert_eq!(logs.len(), 1);
    assert_eq!(receiver.log_requests(), vec![sent]);
    let log = &logs[0];
    assert_eq!(log.time_unix_nano, 11);
    assert_eq!(log.observed_time_unix_nano, 12);
    assert_eq!(log.severity(), SeverityNumber::Warn);
    assert_eq!(log.severity_text, "WARN");
    assert_eq!(log.body_str(), Some("disk almost full"));
    assert_eq!(
        log.body.as_ref().unwrap().to_display_string(),
        "disk almost full"
    );
    assert_eq!(log.attr_i64("free.bytes"), Some(42));
    assert_eq!(log.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(log.span_id, "00f067aa0ba902b7");
    assert_eq!(log.scope_name, "log-scope");
    assert_eq!(log.resource_str("service.name"), Some("svc-logs"));
}

#[test]
fn gzip_protobuf_metrics_are_decoded_and_flattened() {
    let receiver = OtlpHttpReceiver::start();
    let sent = metrics_request();
    let response = client()
        .post(receiver.signal_endpoint(Signal::Metrics))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gzip(&sent.encode_to_vec()))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    let metrics = receiver.wait_for_metrics(2, WAIT);
    assert_eq!(metrics.len(), 2);
    assert_eq!(receiver.metric_requests(), vec![sent]);
    assert_eq!(receiver.requests()[0].content_encoding(), Some("gzip"));

    let counter = &metrics[0];
    assert_eq!(counter.name, "requests");
    assert_eq!(counter.description, "number of requests");
    assert_eq!(counter.unit, "{request}");
    assert_eq!(counter.data_kind(), "sum");
    assert_eq!(counter.scope_name, "meter");
    assert_eq!(counter.resource_str("service.name"), Some("svc-metrics"));
    let values = counter.number_values();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].0["route"].as_str(), Some("/x"));
    assert_eq!(values[0].1, 7.0);

    let latency = receiver
        .wait_for_metric("latency", WAIT)
        .expect("latency metric");
    assert_eq!(latency.data_kind(), "histogram");
    assert_eq!(latency.histogram_points()[0].count, 3);
    assert_eq!(latency.histogram_points()[0].sum, Some(12.5));
}

#[test]
fn refused_signals_get_their_status_and_do_not_break_the_others() {
    let receiver = OtlpHttpReceiver::start_with(
        ReceiverOptions::new()
            .refuse(Signal::Logs, 405)
            .refuse(Signal::Metrics, 405),
    );

    let logs = post(
        &receiver,
        Signal::Logs,
        "application/x-protobuf",
        logs_request().encode_to_vec(),
    );
    assert_eq!(logs.status().as_u16(), 405);
    assert_eq!(logs.headers()["allow"], "POST");
    let metrics = post(
        &receiver,
        Signal::Metrics,
        "application/x-protobuf",
        metrics_request().encode_to_vec(),
    );
    assert_eq!(metrics.status().as_u16(), 405);
    let traces = post(
        &receiver,
        Signal::Traces,
        "application/x-protobuf",
        trace_request().encode_to_vec(),
    );
    assert_eq!(traces.status().as_u16(), 200);

    assert_eq!(receiver.wait_for_spans(2, WAIT).len(), 2);
    assert!(receiver.logs().is_empty());
    assert!(receiver.metrics().is_empty());
    assert!(receiver.log_requests().is_empty());
    assert!(receiver.metric_requests().is_empty());

    let refused = receiver.requests_for(Signal::Logs);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].status, 405);
    assert!(!refused[0].accepted());
    assert!(refused[0].error.is_some());
    assert_eq!(receiver.requests_for(Signal::Metrics)[0].status, 405);
    assert_eq!(receiver.requests_for(Signal::Traces)[0].status, 200);
}

#[test]
fn refusal_with_another_status() {
    let receiver = OtlpHttpReceiver::start_with(ReceiverOptions::new().refuse(Signal::Traces, 503));
    let response = post(
        &receiver,
        Signal::Traces,
        "application/x-protobuf",
        trace_request().encode_to_vec(),
    );
    assert_eq!(response.status().as_u16(), 503);
    assert!(receiver.spans().is_empty());
}

#[test]
fn bad_requests_are_answered_and_recorded() {
    let receiver = OtlpHttpReceiver::start();

    let garbage = post(
        &receiver,
        Signal::Traces,
        "application/x-protobuf",
        vec![0xff, 0xff, 0xff],
    );
    assert_eq!(garbage.status().as_u16(), 400);
    let bad_json = post(&receiver, Signal::Logs, "application/json", b"{".to_vec());
    assert_eq!(bad_json.status().as_u16(), 400);
    let bad_type = post(&receiver, Signal::Logs, "text/plain", b"hi".to_vec());
    assert_eq!(bad_type.status().as_u16(), 415);
    let bad_encoding = client()
        .post(receiver.signal_endpoint(Signal::Traces))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "br")
        .body(Vec::new())
        .send()
        .unwrap();
    assert_eq!(bad_encoding.status().as_u16(), 415);
    let not_gzip = client()
        .post(receiver.signal_endpoint(Signal::Traces))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(b"plain".to_vec())
        .send()
        .unwrap();
    assert_eq!(not_gzip.status().as_u16(), 400);
    let unknown_path = client()
        .post(format!("{}/v1/profiles", receiver.endpoint()))
        .body(Vec::new())
        .send()
        .unwrap();
    assert_eq!(unknown_path.status().as_u16(), 404);
    let get = client()
        .get(receiver.signal_endpoint(Signal::Traces))
        .send()
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);

    let requests = receiver.requests();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [400, 400, 415, 415, 400, 404, 405]);
    assert!(requests.iter().all(|r| r.error.is_some()));
    assert_eq!(requests[5].signal, None);
    assert!(receiver.spans().is_empty());
    assert!(receiver.logs().is_empty());

    // An empty protobuf body is a valid (empty) export request.
    let empty = post(&receiver, Signal::Traces, "application/x-protobuf", vec![]);
    assert_eq!(empty.status().as_u16(), 200);
    assert_eq!(receiver.trace_requests().len(), 1);
}

#[test]
fn delay_option_slows_answers_but_records_at_once() {
    let delay = Duration::from_millis(400);
    let receiver =
        OtlpHttpReceiver::start_with(ReceiverOptions::new().delay_signal(Signal::Traces, delay));
    let body = trace_request().encode_to_vec();

    let sender = std::thread::spawn({
        let url = receiver.signal_endpoint(Signal::Traces);
        move || {
            let started = Instant::now();
            let response = client()
                .post(url)
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .unwrap();
            (response.status().as_u16(), started.elapsed())
        }
    });
    // The content is stored before the delay.
    assert_eq!(receiver.wait_for_spans(2, WAIT).len(), 2);
    let (status, elapsed) = sender.join().unwrap();
    assert_eq!(status, 200);
    assert!(elapsed >= delay, "answered after {elapsed:?}");

    // Other signals are not delayed.
    let started = Instant::now();
    let response = post(
        &receiver,
        Signal::Logs,
        "application/x-protobuf",
        logs_request().encode_to_vec(),
    );
    assert_eq!(response.status().as_u16(), 200);
    assert!(started.elapsed() < delay);
}

#[test]
fn waits_give_up_after_the_timeout_and_clear_forgets() {
    let receiver = OtlpHttpReceiver::start();
    let started = Instant::now();
    assert!(
        receiver
            .wait_for_spans(1, Duration::from_millis(200))
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(
        receiver
            .wait_for_metric("nope", Duration::from_millis(50))
            .is_none()
    );

    post(
        &receiver,
        Signal::Traces,
        "application/x-protobuf",
        trace_request().encode_to_vec(),
    );
    // A predicate that is already satisfied returns at once.
    let spans = receiver.wait_for_spans_where(|s| s.iter().any(|s| s.name == "child"), WAIT);
    assert_eq!(spans.len(), 2);
    receiver.clear();
    assert!(receiver.spans().is_empty());
    assert!(receiver.requests().is_empty());
}

#[test]
fn dropping_the_receiver_closes_the_port() {
    let receiver = OtlpHttpReceiver::start();
    let address = receiver.address();
    // Keep a connection open to check that shutdown does not wait for it.
    let _open = std::net::TcpStream::connect(address).unwrap();
    drop(receiver);
    assert!(std::net::TcpStream::connect(address).is_err());
}

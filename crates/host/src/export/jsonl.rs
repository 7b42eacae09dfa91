//! OTLP/JSON "JSON lines" file exporter for spans, logs and metrics.
//!
//! Every non-empty export call appends exactly one line holding the OTLP/JSON
//! encoding of an `ExportTraceServiceRequest`, `ExportLogsServiceRequest` or
//! `ExportMetricsServiceRequest` (the same shape as the body of an OTLP/HTTP
//! JSON request), as produced by `opentelemetry-proto` with its `with-serde`
//! feature: camelCase field names, trace/span ids as lowercase hex strings,
//! enums as integers, 64-bit integers as decimal strings. Such files can be
//! read back with e.g. the collector's `otlpjsonfile` receiver.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
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

type SharedWriter = Arc<Mutex<Box<dyn Write + Send>>>;

/// Exporter writing OTLP/JSON lines; implements [`SpanExporter`],
/// [`LogExporter`] and [`PushMetricExporter`] (cumulative temporality).
///
/// Clones share the underlying writer (so spans, logs and metrics can go to
/// one file, one request per line) but have their own resource and shutdown
/// state. Empty batches write nothing.
///
/// Because the type implements three exporter traits with overlapping method
/// names, call trait methods with fully qualified syntax, e.g.
/// `SpanExporter::shutdown(&exporter)`.
pub struct JsonLinesExporter {
    writer: SharedWriter,
    /// Resource for spans and logs, set by the providers via `set_resource`.
    /// (Metrics carry their resource in `ResourceMetrics`.)
    resource: Option<Resource>,
    is_shutdown: AtomicBool,
}

impl JsonLinesExporter {
    /// Opens (creating it if needed) `path` for appending.
    pub fn create(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self::new(BufWriter::new(file)))
    }

    /// An exporter writing to `writer`.
    pub fn new<W: Write + Send + 'static>(writer: W) -> Self {
        Self {
            writer: Arc::new(Mutex::new(Box::new(writer))),
            resource: None,
            is_shutdown: AtomicBool::new(false),
        }
    }

    fn resource(&self) -> ResourceAttributesWithSchema {
        self.resource.as_ref().map(Into::into).unwrap_or_default()
    }

    /// Writes an already serialized request as one line, then flushes.
    /// (Serializing before taking the lock means a failure never leaves half
    /// a line behind.)
    pub(crate) fn write_line(&self, json: serde_json::Result<Vec<u8>>) -> OTelSdkResult {
        let mut line = json.map_err(|e| {
            OTelSdkError::InternalFailure(format!("json lines exporter: serialize: {e}"))
        })?;
        line.push(b'\n');
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        writer
            .write_all(&line)
            .and_then(|()| writer.flush())
            .map_err(|e| OTelSdkError::InternalFailure(format!("json lines exporter: {e}")))
    }

    fn flush(&self) -> OTelSdkResult {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        writer
            .flush()
            .map_err(|e| OTelSdkError::InternalFailure(format!("json lines exporter: flush: {e}")))
    }

    fn shutdown_inner(&self) -> OTelSdkResult {
        self.is_shutdown.store(true, Ordering::Release);
        self.flush()
    }

    fn check_running(&self) -> OTelSdkResult {
        if self.is_shutdown.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        Ok(())
    }

    fn export_spans(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.check_running()?;
        if batch.is_empty() {
            return Ok(());
        }
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource()),
        };
        self.write_line(serde_json::to_vec(&request))
    }

    fn export_logs(&self, batch: &LogBatch<'_>) -> OTelSdkResult {
        self.check_running()?;
        let mut records = batch.iter().map(|(record, _)| record).peekable();
        if records.peek().is_none() {
            return Ok(());
        }
        // The proto conversion unwraps the observed timestamp. The SDK logger
        // always sets it, but refuse rather than panic if it is missing.
        if records.any(|record| record.observed_timestamp().is_none()) {
            return Err(OTelSdkError::InternalFailure(
                "json lines exporter: log record without observed timestamp".into(),
            ));
        }
        let request = ExportLogsServiceRequest {
            resource_logs: group_logs_by_resource_and_scope(batch, &self.resource()),
        };
        self.write_line(serde_json::to_vec(&request))
    }

    fn export_metrics(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.check_running()?;
        if metrics.scope_metrics().next().is_none() {
            return Ok(());
        }
        let request = ExportMetricsServiceRequest::from(metrics);
        self.write_line(serde_json::to_vec(&request))
    }
}

impl Clone for JsonLinesExporter {
    fn clone(&self) -> Self {
        Self {
            writer: Arc::clone(&self.writer),
            resource: self.resource.clone(),
            is_shutdown: AtomicBool::new(false),
        }
    }
}

impl fmt::Debug for JsonLinesExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesExporter")
            .field("resource", &self.resource)
            .field("is_shutdown", &self.is_shutdown.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SpanExporter for JsonLinesExporter {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        std::future::ready(self.export_spans(batch))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.shutdown_inner()
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = Some(resource.clone());
    }
}

impl LogExporter for JsonLinesExporter {
    fn export(&self, batch: LogBatch<'_>) -> impl Future<Output = OTelSdkResult> + Send {
        std::future::ready(self.export_logs(&batch))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.shutdown_inner()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = Some(resource.clone());
    }
}

impl PushMetricExporter for JsonLinesExporter {
    fn export(&self, metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        std::future::ready(self.export_metrics(metrics))
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush()
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.shutdown_inner()
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;
    use opentelemetry::logs::{
        AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity,
    };
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::trace::{
        SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
    };
    use opentelemetry_sdk::logs::SdkLoggerProvider;
    use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use serde_json::Value as Json;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Buffer {
        fn lines(&self) -> Vec<Json> {
            let bytes = self.0.lock().unwrap().clone();
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.is_empty() || text.ends_with('\n'), "{text}");
            text.lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn exporter() -> (JsonLinesExporter, Buffer) {
        let buffer = Buffer::default();
        (JsonLinesExporter::new(buffer.clone()), buffer)
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_service_name("guest-svc")
            .build()
    }

    fn is_lower_hex(s: &str, len: usize) -> bool {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    fn attr<'a>(attrs: &'a Json, key: &str) -> &'a Json {
        attrs
            .as_array()
            .unwrap()
            .iter()
            .find(|kv| kv["key"] == key)
            .map(|kv| &kv["value"])
            .unwrap_or_else(|| panic!("no attribute {key} in {attrs}"))
    }

    #[test]
    fn spans_are_one_otlp_json_line_per_export() {
        let (exporter, buffer) = exporter();
        let provider = SdkTracerProvider::builder()
            .with_resource(resource())
            .with_simple_exporter(exporter)
            .build();
        let tracer = provider.tracer("guest");
        let (trace_id, parent_id) = tracer.in_span("outer", |cx| {
            let span = tracer
                .span_builder("inner")
                .with_kind(SpanKind::Server)
                .with_attributes([
                    KeyValue::new("http.method", "GET"),
                    KeyValue::new("retries", 3_i64),
                ])
                .start_with_context(&tracer, &cx);
            drop(span);
            let outer = cx.span().span_context().clone();
            cx.span().set_status(Status::error("boom"));
            (outer.trace_id().to_string(), outer.span_id().to_string())
        });
        provider.shutdown().unwrap();

        let lines = buffer.lines();
        assert_eq!(lines.len(), 2, "one line per simple-processor export");
        let resource_spans = &lines[0]["resourceSpans"][0];
        assert_eq!(
            attr(&resource_spans["resource"]["attributes"], "service.name"),
            &serde_json::json!({"stringValue": "guest-svc"})
        );
        let scope_spans = &resource_spans["scopeSpans"][0];
        assert_eq!(scope_spans["scope"]["name"], "guest");
        let inner = &scope_spans["spans"][0];
        assert_eq!(inner["name"], "inner");
        assert!(
            is_lower_hex(inner["traceId"].as_str().unwrap(), 32),
            "{inner}"
        );
        assert!(
            is_lower_hex(inner["spanId"].as_str().unwrap(), 16),
            "{inner}"
        );
        assert_eq!(inner["traceId"], trace_id.as_str());
        assert_eq!(inner["parentSpanId"], parent_id.as_str());
        assert_eq!(inner["kind"], 2, "SPAN_KIND_SERVER as an integer");
        assert!(inner["startTimeUnixNano"].is_string(), "fixed64 as string");
        assert_eq!(
            attr(&inner["attributes"], "http.method"),
            &serde_json::json!({"stringValue": "GET"})
        );
        assert_eq!(
            attr(&inner["attributes"], "retries"),
            &serde_json::json!({"intValue": "3"})
        );

        let outer = &lines[1]["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(outer["name"], "outer");
        assert_eq!(outer["spanId"], parent_id.as_str());
        assert_eq!(outer["parentSpanId"], "");
        assert_eq!(outer["status"]["code"], 2, "STATUS_CODE_ERROR");
        assert_eq!(outer["status"]["message"], "boom");

        // The line is valid input for the proto types' own deserializer too.
        let text = serde_json::to_string(&lines[0]).unwrap();
        let request: ExportTraceServiceRequest = serde_json::from_str(&text).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.name, "inner");
        assert_eq!(span.trace_id.len(), 16);
    }

    #[test]
    fn logs_carry_severity_body_trace_context_and_resource() {
        let (exporter, buffer) = exporter();
        let tracer_provider = SdkTracerProvider::builder().build();
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource())
            .with_simple_exporter(exporter)
            .build();
        let logger = provider.logger("guest");

        let ids = tracer_provider.tracer("t").in_span("work", |cx| {
            let mut record = logger.create_log_record();
            record.set_severity_number(Severity::Warn);
            record.set_severity_text("WARN");
            record.set_body("disk almost full".into());
            record.add_attribute("free_mb", 12_i64);
            record.add_attribute("ok", AnyValue::Boolean(false));
            logger.emit(record); // trace context comes from the active span
            let ctx = cx.span().span_context().clone();
            (ctx.trace_id().to_string(), ctx.span_id().to_string())
        });
        let mut record = logger.create_log_record();
        record.set_severity_number(Severity::Error);
        record.set_target("my::module");
        record.set_body(AnyValue::Int(7));
        logger.emit(record);
        let mut record = logger.create_log_record();
        record.set_severity_number(Severity::Debug);
        logger.emit(record); // no body at all
        provider.shutdown().unwrap();

        let lines = buffer.lines();
        assert_eq!(lines.len(), 3);
        let resource_logs = &lines[0]["resourceLogs"][0];
        assert_eq!(
            attr(&resource_logs["resource"]["attributes"], "service.name"),
            &serde_json::json!({"stringValue": "guest-svc"})
        );
        let scope_logs = &resource_logs["scopeLogs"][0];
        assert_eq!(scope_logs["scope"]["name"], "guest");
        let record = &scope_logs["logRecords"][0];
        assert_eq!(record["severityNumber"], 13, "SEVERITY_NUMBER_WARN");
        assert_eq!(record["severityText"], "WARN");
        assert_eq!(
            record["body"],
            serde_json::json!({"stringValue": "disk almost full"})
        );
        assert!(
            is_lower_hex(record["traceId"].as_str().unwrap(), 32),
            "{record}"
        );
        assert_eq!(record["traceId"], ids.0.as_str());
        assert_eq!(record["spanId"], ids.1.as_str());
        assert_eq!(
            attr(&record["attributes"], "free_mb"),
            &serde_json::json!({"intValue": "12"})
        );
        assert_eq!(
            attr(&record["attributes"], "ok"),
            &serde_json::json!({"boolValue": false})
        );
        assert!(record["observedTimeUnixNano"].is_string());

        // The target becomes the scope name.
        let scope_logs = &lines[1]["resourceLogs"][0]["scopeLogs"][0];
        assert_eq!(scope_logs["scope"]["name"], "my::module");
        let record = &scope_logs["logRecords"][0];
        assert_eq!(record["severityNumber"], 17, "SEVERITY_NUMBER_ERROR");
        assert_eq!(record["body"], serde_json::json!({"intValue": "7"}));
        assert_eq!(record["traceId"], "");

        // Every line (including a record without body) reads back as a request.
        for line in &lines {
            let text = serde_json::to_string(line).unwrap();
            let request: ExportLogsServiceRequest = serde_json::from_str(&text).unwrap();
            assert_eq!(request.resource_logs[0].scope_logs[0].log_records.len(), 1);
        }
        let request: ExportLogsServiceRequest =
            serde_json::from_str(&serde_json::to_string(&lines[2]).unwrap()).unwrap();
        let record = &request.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(record.severity_number, 5, "SEVERITY_NUMBER_DEBUG");
        assert_eq!(record.body, None);
    }

    #[test]
    fn metrics_are_cumulative_otlp_json() {
        let (exporter, buffer) = exporter();
        let provider = SdkMeterProvider::builder()
            .with_resource(resource())
            .with_reader(PeriodicReader::builder(exporter).build())
            .build();
        let meter = provider.meter("guest");
        let counter = meter.u64_counter("requests").build();
        counter.add(2, &[KeyValue::new("route", "/")]);
        let gauge = meter.f64_gauge("temperature").build();
        gauge.record(21.5, &[]);
        let histogram = meter.f64_histogram("latency").with_unit("ms").build();
        histogram.record(1.5, &[]);
        histogram.record(2.5, &[]);
        provider.force_flush().unwrap();
        counter.add(3, &[KeyValue::new("route", "/")]);
        provider.force_flush().unwrap();
        provider.shutdown().unwrap();

        let lines = buffer.lines();
        assert!(lines.len() >= 2, "one line per collection");
        let resource_metrics = &lines[1]["resourceMetrics"][0];
        assert_eq!(
            attr(&resource_metrics["resource"]["attributes"], "service.name"),
            &serde_json::json!({"stringValue": "guest-svc"})
        );
        let scope_metrics = &resource_metrics["scopeMetrics"][0];
        assert_eq!(scope_metrics["scope"]["name"], "guest");
        let metric = |name: &str| {
            scope_metrics["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == name)
                .unwrap_or_else(|| panic!("no metric {name} in {scope_metrics}"))
                .clone()
        };

        let requests = metric("requests");
        let sum = &requests["sum"];
        assert_eq!(sum["aggregationTemporality"], 2, "CUMULATIVE");
        assert_eq!(sum["isMonotonic"], true);
        let point = &sum["dataPoints"][0];
        assert_eq!(point["asInt"], "5", "cumulative total over both flushes");
        assert_eq!(
            attr(&point["attributes"], "route"),
            &serde_json::json!({"stringValue": "/"})
        );

        let temperature = metric("temperature");
        assert_eq!(temperature["gauge"]["dataPoints"][0]["asDouble"], 21.5);

        let latency = metric("latency");
        assert_eq!(latency["unit"], "ms");
        let point = &latency["histogram"]["dataPoints"][0];
        assert_eq!(point["count"], "2");
        assert_eq!(point["sum"], 4.0);
        assert_eq!(point["min"], 1.5);
        assert_eq!(point["max"], 2.5);

        let text = serde_json::to_string(&lines[1]).unwrap();
        let request: ExportMetricsServiceRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(
            request.resource_metrics[0].scope_metrics[0].metrics.len(),
            3
        );
    }

    #[tokio::test]
    async fn empty_batches_write_nothing() {
        let (exporter, buffer) = exporter();
        SpanExporter::export(&exporter, Vec::new()).await.unwrap();
        LogExporter::export(&exporter, LogBatch::new(&[]))
            .await
            .unwrap();
        assert!(buffer.lines().is_empty());
    }

    #[test]
    fn create_appends_to_the_file() {
        let path = std::env::temp_dir().join(format!(
            "wasi-observe-jsonl-test-{}-{:?}.jsonl",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        for name in ["first", "second"] {
            let exporter = JsonLinesExporter::create(&path).unwrap();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter)
                .build();
            drop(provider.tracer("guest").start(name));
            provider.shutdown().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let names: Vec<String> = text
            .lines()
            .map(|line| {
                let json: Json = serde_json::from_str(line).unwrap();
                json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["name"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(names, ["first", "second"]);
    }

    struct FailingWriter;

    impl Write for FailingWriter {
        fn write(&mut self, _buf: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn write_errors_and_shutdown() {
        let exporter = JsonLinesExporter::new(FailingWriter);
        let err = SpanExporter::export(&exporter, vec![test_span()])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, OTelSdkError::InternalFailure(msg) if msg.contains("disk on fire")),
            "{err:?}"
        );

        let (exporter, buffer) = self::exporter();
        let clone = exporter.clone();
        PushMetricExporter::shutdown(&exporter).unwrap();
        assert!(matches!(
            SpanExporter::export(&exporter, vec![test_span()]).await,
            Err(OTelSdkError::AlreadyShutdown)
        ));
        assert!(buffer.lines().is_empty());
        // Clones share the writer but not the shutdown state.
        SpanExporter::export(&clone, vec![test_span()])
            .await
            .unwrap();
        assert_eq!(buffer.lines().len(), 1);
        assert_eq!(
            PushMetricExporter::temporality(&exporter),
            Temporality::Cumulative
        );
    }

    fn test_span() -> SpanData {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        let now = std::time::SystemTime::now();
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
                SpanId::from_hex("b7ad6b7169203331").unwrap(),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "x".into(),
            start_time: now,
            end_time: now,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }
}

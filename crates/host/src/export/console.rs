//! Human-readable exporter for spans, logs and metrics.
//!
//! Every item becomes one compact line (span events and links follow on
//! indented lines), written to a shared writer that is flushed after every
//! export. Intended for local debugging: `wasi-observe run --exporter console`
//! (or `OTEL_TRACES_EXPORTER=console`, and so on per signal).
//!
//! ```text
//! span  4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 parent=- handle kind=server 1.234ms status=error("boom") attrs{http.method="GET"} events=1
//!   event cache-miss +500µs {key="a"}
//! log   INFO  [guest/my::module] hello world trace=4bf92f3577b34da6a3ce929d0e0e4736 span=00f067aa0ba902b7 {user=42}
//! metric requests sum {route="/"} = 3
//! metric latency histogram = count=2 sum=3.5 min=1.5 max=2.0 ms
//! ```

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use opentelemetry::logs::AnyValue;
use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogRecord};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// A writer shared between several exporters (e.g. the span, log and metric
/// pipelines all printing to the same terminal).
pub type SharedWriter = Arc<Mutex<Box<dyn Write + Send>>>;

/// Human-readable exporter implementing [`SpanExporter`], [`LogExporter`] and
/// [`PushMetricExporter`] (cumulative temporality).
///
/// Clones share the underlying writer, so one clone can be handed to each
/// signal's provider. Each clone has its own shutdown state.
///
/// Because the type implements three exporter traits with overlapping method
/// names, call trait methods with fully qualified syntax, e.g.
/// `SpanExporter::shutdown(&exporter)`.
pub struct ConsoleExporter {
    writer: SharedWriter,
    is_shutdown: AtomicBool,
}

impl ConsoleExporter {
    /// An exporter writing to standard error.
    pub fn stderr() -> Self {
        Self::new(io::stderr())
    }

    /// An exporter writing to `writer`.
    pub fn new<W: Write + Send + 'static>(writer: W) -> Self {
        Self::from_shared(Arc::new(Mutex::new(Box::new(writer))))
    }

    /// An exporter writing to an already shared writer.
    pub fn from_shared(writer: SharedWriter) -> Self {
        Self {
            writer,
            is_shutdown: AtomicBool::new(false),
        }
    }

    /// The shared writer this exporter prints to.
    pub fn writer(&self) -> SharedWriter {
        Arc::clone(&self.writer)
    }

    /// Writes `text` in one go (under the lock) and flushes.
    fn emit(&self, text: Result<String, fmt::Error>) -> OTelSdkResult {
        if self.is_shutdown.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let text = text.map_err(|_| {
            OTelSdkError::InternalFailure("console exporter: formatting failed".into())
        })?;
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        writer
            .write_all(text.as_bytes())
            .and_then(|()| writer.flush())
            .map_err(|e| OTelSdkError::InternalFailure(format!("console exporter: {e}")))
    }

    fn flush(&self) -> OTelSdkResult {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        writer
            .flush()
            .map_err(|e| OTelSdkError::InternalFailure(format!("console exporter: flush: {e}")))
    }

    fn shutdown_inner(&self) -> OTelSdkResult {
        self.is_shutdown.store(true, Ordering::Release);
        self.flush()
    }
}

impl Clone for ConsoleExporter {
    fn clone(&self) -> Self {
        Self::from_shared(self.writer())
    }
}

impl fmt::Debug for ConsoleExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleExporter")
            .field("is_shutdown", &self.is_shutdown.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ConsoleExporter {
    fn export_spans(&self, batch: &[SpanData]) -> OTelSdkResult {
        let text = batch.iter().try_fold(String::new(), |mut out, span| {
            format_span(&mut out, span).map(|()| out)
        });
        self.emit(text)
    }
}

impl SpanExporter for ConsoleExporter {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        std::future::ready(self.export_spans(&batch))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.shutdown_inner()
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush()
    }
}

/// The pipeline's form: reads each batch in place.
impl crate::export::SpanBatchExporter for ConsoleExporter {
    fn export(&self, batch: &[SpanData]) -> OTelSdkResult {
        self.export_spans(batch)
    }

    fn shutdown(&self, _timeout: Duration) -> OTelSdkResult {
        self.shutdown_inner()
    }
}

impl LogExporter for ConsoleExporter {
    fn export(&self, batch: LogBatch<'_>) -> impl Future<Output = OTelSdkResult> + Send {
        let text = batch
            .iter()
            .try_fold(String::new(), |mut out, (record, scope)| {
                format_log(&mut out, record, scope).map(|()| out)
            });
        std::future::ready(self.emit(text))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.shutdown_inner()
    }
}

impl PushMetricExporter for ConsoleExporter {
    fn export(&self, metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        let text = metrics
            .scope_metrics()
            .flat_map(|scope| scope.metrics())
            .try_fold(String::new(), |mut out, metric| {
                format_metric(&mut out, metric).map(|()| out)
            });
        std::future::ready(self.emit(text))
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

// ---------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------

/// `1.234ms`, `15µs`, `820ns`, `2.5s`.
struct HumanDuration(Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        let (value, unit) = match nanos {
            0..1_000 => return write!(f, "{nanos}ns"),
            1_000..1_000_000 => (nanos as f64 / 1e3, "µs"),
            1_000_000..1_000_000_000 => (nanos as f64 / 1e6, "ms"),
            _ => (self.0.as_secs_f64(), "s"),
        };
        let digits = format!("{value:.3}");
        let digits = digits.trim_end_matches('0').trim_end_matches('.');
        write!(f, "{digits}{unit}")
    }
}

fn elapsed(from: SystemTime, to: SystemTime) -> HumanDuration {
    HumanDuration(to.duration_since(from).unwrap_or_default())
}

/// Writes `s` verbatim except for control characters (newlines etc.), which
/// are escaped so that every item stays on its own line.
fn push_text(out: &mut String, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c.is_control() {
            write!(out, "{}", c.escape_default())?;
        } else {
            out.push(c);
        }
    }
    Ok(())
}

fn format_value(out: &mut String, value: &Value) -> fmt::Result {
    match value {
        Value::Bool(v) => write!(out, "{v}"),
        Value::I64(v) => write!(out, "{v}"),
        Value::F64(v) => write!(out, "{v:?}"),
        Value::String(v) => write!(out, "{:?}", v.as_str()),
        Value::Array(array) => format_array(out, array),
        other => write!(out, "{other}"),
    }
}

fn format_list<T>(
    out: &mut String,
    items: &[T],
    mut item: impl FnMut(&mut String, &T) -> fmt::Result,
) -> fmt::Result {
    out.push('[');
    for (i, value) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        item(out, value)?;
    }
    out.push(']');
    Ok(())
}

fn format_array(out: &mut String, array: &Array) -> fmt::Result {
    match array {
        Array::Bool(values) => format_list(out, values, |out, v| write!(out, "{v}")),
        Array::I64(values) => format_list(out, values, |out, v| write!(out, "{v}")),
        Array::F64(values) => format_list(out, values, |out, v| write!(out, "{v:?}")),
        Array::String(values) => format_list(out, values, |out, v| write!(out, "{:?}", v.as_str())),
        other => write!(out, "{other}"),
    }
}

fn format_any_value(out: &mut String, value: &AnyValue) -> fmt::Result {
    match value {
        AnyValue::Int(v) => write!(out, "{v}"),
        AnyValue::Double(v) => write!(out, "{v:?}"),
        AnyValue::String(v) => write!(out, "{:?}", v.as_str()),
        AnyValue::Boolean(v) => write!(out, "{v}"),
        AnyValue::Bytes(bytes) => {
            out.push_str("0x");
            bytes.iter().try_for_each(|b| write!(out, "{b:02x}"))
        }
        AnyValue::ListAny(values) => format_list(out, values, format_any_value),
        AnyValue::Map(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_text(out, key.as_str())?;
                out.push('=');
                format_any_value(out, value)?;
            }
            out.push('}');
            Ok(())
        }
        other => write!(out, "{other:?}"),
    }
}

/// `{k=v, k2="s"}`; nothing at all (not even the separator) when empty.
fn format_attrs<'a>(
    out: &mut String,
    prefix: &str,
    attrs: impl IntoIterator<Item = &'a KeyValue>,
) -> fmt::Result {
    let mut attrs = attrs.into_iter().peekable();
    if attrs.peek().is_none() {
        return Ok(());
    }
    out.push_str(prefix);
    out.push('{');
    for (i, kv) in attrs.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_text(out, kv.key.as_str())?;
        out.push('=');
        format_value(out, &kv.value)?;
    }
    out.push('}');
    Ok(())
}

fn kind_name(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Client => "client",
        SpanKind::Server => "server",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}

fn format_span(out: &mut String, span: &SpanData) -> fmt::Result {
    let ctx = &span.span_context;
    write!(out, "span  {} {} parent=", ctx.trace_id(), ctx.span_id())?;
    if span.parent_span_id == SpanId::INVALID {
        out.push('-');
    } else {
        write!(out, "{}", span.parent_span_id)?;
        if span.parent_span_is_remote {
            out.push_str("(remote)");
        }
    }
    out.push(' ');
    push_text(out, &span.name)?;
    write!(
        out,
        " kind={} {} status=",
        kind_name(&span.span_kind),
        elapsed(span.start_time, span.end_time)
    )?;
    match &span.status {
        Status::Unset => out.push_str("unset"),
        Status::Ok => out.push_str("ok"),
        Status::Error { description } if description.is_empty() => out.push_str("error"),
        Status::Error { description } => write!(out, "error({:?})", description.as_ref())?,
    }
    format_attrs(out, " attrs", &span.attributes)?;
    if !span.events.is_empty() {
        write!(out, " events={}", span.events.len())?;
    }
    if !span.links.is_empty() {
        write!(out, " links={}", span.links.len())?;
    }
    let dropped = [
        ("dropped_attrs", span.dropped_attributes_count),
        ("dropped_events", span.events.dropped_count),
        ("dropped_links", span.links.dropped_count),
    ];
    for (label, count) in dropped {
        if count > 0 {
            write!(out, " {label}={count}")?;
        }
    }
    out.push('\n');

    for event in span.events.iter() {
        out.push_str("  event ");
        push_text(out, &event.name)?;
        write!(out, " +{}", elapsed(span.start_time, event.timestamp))?;
        format_attrs(out, " ", &event.attributes)?;
        out.push('\n');
    }
    for link in span.links.iter() {
        let ctx = &link.span_context;
        write!(out, "  link  {} {}", ctx.trace_id(), ctx.span_id())?;
        format_attrs(out, " ", &link.attributes)?;
        out.push('\n');
    }
    Ok(())
}

fn format_log(
    out: &mut String,
    record: &SdkLogRecord,
    scope: &InstrumentationScope,
) -> fmt::Result {
    let severity = match (record.severity_number(), record.severity_text()) {
        (Some(number), _) => number.name(),
        (None, Some(text)) => text,
        (None, None) => "-",
    };
    write!(out, "log   {severity:<5} [")?;
    match record.target().map(|t| t.as_ref()) {
        Some(target) if !target.is_empty() && target != scope.name() => {
            if !scope.name().is_empty() {
                push_text(out, scope.name())?;
                out.push('/');
            }
            push_text(out, target)?;
        }
        _ => push_text(out, scope.name())?,
    }
    out.push(']');
    match record.body() {
        None => {}
        Some(AnyValue::String(message)) => {
            out.push(' ');
            push_text(out, message.as_str())?;
        }
        Some(other) => {
            out.push(' ');
            format_any_value(out, other)?;
        }
    }
    if let Some(name) = record.event_name() {
        out.push_str(" event=");
        push_text(out, name)?;
    }
    if let Some(ctx) = record.trace_context() {
        write!(out, " trace={} span={}", ctx.trace_id, ctx.span_id)?;
    }
    let mut attrs = record.attributes_iter().peekable();
    if attrs.peek().is_some() {
        out.push_str(" {");
        for (i, (key, value)) in attrs.enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            push_text(out, key.as_str())?;
            out.push('=');
            format_any_value(out, value)?;
        }
        out.push('}');
    }
    out.push('\n');
    Ok(())
}

fn format_metric(out: &mut String, metric: &Metric) -> fmt::Result {
    match metric.data() {
        AggregatedMetrics::F64(data) => format_metric_data(out, metric, data),
        AggregatedMetrics::U64(data) => format_metric_data(out, metric, data),
        AggregatedMetrics::I64(data) => format_metric_data(out, metric, data),
    }
}

fn format_metric_data<T: Copy + fmt::Debug>(
    out: &mut String,
    metric: &Metric,
    data: &MetricData<T>,
) -> fmt::Result {
    // `metric <name> <kind> {attrs} = ` ... ` <unit>\n`
    let line = |out: &mut String,
                kind: &str,
                attrs: &mut dyn Iterator<Item = &KeyValue>,
                value: &dyn Fn(&mut String) -> fmt::Result|
     -> fmt::Result {
        out.push_str("metric ");
        push_text(out, metric.name())?;
        write!(out, " {kind}")?;
        format_attrs(out, " ", attrs)?;
        out.push_str(" = ");
        value(out)?;
        if !metric.unit().is_empty() {
            out.push(' ');
            push_text(out, metric.unit())?;
        }
        out.push('\n');
        Ok(())
    };
    let stats = |out: &mut String, count: u64, sum: T, min: Option<T>, max: Option<T>| {
        write!(out, "count={count} sum={sum:?}")?;
        if let Some(min) = min {
            write!(out, " min={min:?}")?;
        }
        if let Some(max) = max {
            write!(out, " max={max:?}")?;
        }
        Ok(())
    };

    match data {
        MetricData::Gauge(gauge) => gauge.data_points().try_for_each(|dp| {
            line(out, "gauge", &mut dp.attributes(), &|out| {
                write!(out, "{:?}", dp.value())
            })
        }),
        MetricData::Sum(sum) => {
            let kind = if sum.is_monotonic() {
                "sum"
            } else {
                "updown_sum"
            };
            sum.data_points().try_for_each(|dp| {
                line(out, kind, &mut dp.attributes(), &|out| {
                    write!(out, "{:?}", dp.value())
                })
            })
        }
        MetricData::Histogram(histogram) => histogram.data_points().try_for_each(|dp| {
            line(out, "histogram", &mut dp.attributes(), &|out| {
                stats(out, dp.count(), dp.sum(), dp.min(), dp.max())
            })
        }),
        MetricData::ExponentialHistogram(histogram) => histogram.data_points().try_for_each(|dp| {
            line(out, "exp_histogram", &mut dp.attributes(), &|out| {
                stats(out, dp.count() as u64, dp.sum(), dp.min(), dp.max())
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry::trace::{
        Event, Link, SpanContext, TraceContextExt as _, TraceFlags, TraceId, TraceState,
        Tracer as _, TracerProvider as _,
    };
    use opentelemetry_sdk::logs::SdkLoggerProvider;
    use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
    use opentelemetry_sdk::trace::{SdkTracerProvider, SpanEvents, SpanLinks};
    use std::time::UNIX_EPOCH;

    /// An in-memory writer whose contents the test can read back.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct FailingWriter;

    impl Write for FailingWriter {
        fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::other("disk on fire"))
        }
    }

    fn exporter() -> (ConsoleExporter, Buffer) {
        let buffer = Buffer::default();
        (ConsoleExporter::new(buffer.clone()), buffer)
    }

    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn span_data() -> SpanData {
        let trace_id = TraceId::from_hex(TRACE_ID).unwrap();
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut events = SpanEvents::default();
        events.events.push(Event::new(
            "cache-miss",
            start + Duration::from_micros(500),
            vec![KeyValue::new("key", "a")],
            0,
        ));
        events.events.push(Event::new(
            "retry",
            start + Duration::from_micros(1_000),
            vec![],
            0,
        ));
        let mut links = SpanLinks::default();
        links.links.push(Link::with_context(SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::NONE,
        )));
        SpanData {
            span_context: SpanContext::new(
                trace_id,
                SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::from_hex("1111111111111111").unwrap(),
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "handle request".into(),
            start_time: start,
            end_time: start + Duration::from_micros(1_234),
            attributes: vec![
                KeyValue::new("http.method", "GET"),
                KeyValue::new("http.status", 500_i64),
                KeyValue::new("ratio", 0.5),
                KeyValue::new("ok", false),
                KeyValue::new(
                    "tags",
                    Value::Array(Array::String(vec!["x".into(), "y".into()])),
                ),
                KeyValue::new("codes", Value::Array(Array::I64(vec![1, 2]))),
            ],
            dropped_attributes_count: 0,
            events,
            links,
            status: Status::error("boom"),
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    #[test]
    fn durations_are_human_readable() {
        let fmt = |d| HumanDuration(d).to_string();
        assert_eq!(fmt(Duration::from_nanos(0)), "0ns");
        assert_eq!(fmt(Duration::from_nanos(820)), "820ns");
        assert_eq!(fmt(Duration::from_nanos(15_000)), "15µs");
        assert_eq!(fmt(Duration::from_nanos(15_250)), "15.25µs");
        assert_eq!(fmt(Duration::from_micros(1_234)), "1.234ms");
        assert_eq!(fmt(Duration::from_millis(2_500)), "2.5s");
        assert_eq!(fmt(Duration::from_secs(61)), "61s");
    }

    #[tokio::test]
    async fn span_line_events_and_links() {
        let (exporter, buffer) = exporter();
        SpanExporter::export(&exporter, vec![span_data()])
            .await
            .unwrap();
        let text = buffer.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "span  4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 parent=1111111111111111 \
                 handle request kind=server 1.234ms status=error(\"boom\") \
                 attrs{http.method=\"GET\", http.status=500, ratio=0.5, ok=false, \
                 tags=[\"x\", \"y\"], codes=[1, 2]} events=2 links=1",
                "  event cache-miss +500µs {key=\"a\"}",
                "  event retry +1ms",
                "  link  0af7651916cd43dd8448eb211c80319c b7ad6b7169203331",
            ]
        );
    }

    #[tokio::test]
    async fn root_span_minimal_line_and_escaping() {
        let (exporter, buffer) = exporter();
        let mut span = span_data();
        span.parent_span_id = SpanId::INVALID;
        span.name = "multi\nline".into();
        span.span_kind = SpanKind::Internal;
        span.status = Status::Unset;
        span.attributes.clear();
        span.events = SpanEvents::default();
        span.links = SpanLinks::default();
        span.end_time = span.start_time - Duration::from_secs(1); // clock skew
        SpanExporter::export(&exporter, vec![span]).await.unwrap();
        assert_eq!(
            buffer.text(),
            "span  4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7 parent=- multi\\nline \
             kind=internal 0ns status=unset\n"
        );
    }

    #[test]
    fn spans_from_a_real_tracer_provider() {
        let (exporter, buffer) = exporter();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .build();
        let tracer = provider.tracer("guest");
        tracer.in_span("outer", |cx| {
            let outer = cx.span().span_context().clone();
            tracer.in_span("inner", |cx| {
                cx.span().set_attribute(KeyValue::new("answer", 42_i64));
                cx.span().add_event("tick", vec![]);
            });
            let text = buffer.text();
            let inner = text.lines().next().unwrap();
            let expected_prefix = format!("span  {} ", outer.trace_id());
            assert!(inner.starts_with(&expected_prefix), "{inner}");
            assert!(
                inner.contains(&format!("parent={} inner kind=internal ", outer.span_id())),
                "{inner}"
            );
            assert!(inner.contains("attrs{answer=42} events=1"), "{inner}");
        });
        let text = buffer.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("  event tick +"), "{text}");
        assert!(
            lines[2].contains(" parent=- outer kind=internal "),
            "{text}"
        );
        provider.shutdown().unwrap();
    }

    #[test]
    fn log_lines() {
        let (exporter, buffer) = exporter();
        let provider = SdkLoggerProvider::builder()
            .with_simple_exporter(exporter)
            .build();
        let logger = provider.logger("guest");

        let mut record = logger.create_log_record();
        record.set_severity_number(Severity::Info);
        record.set_severity_text("info");
        record.set_target("my::module");
        record.set_body("hello world".into());
        record.set_trace_context(
            TraceId::from_hex(TRACE_ID).unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            None,
        );
        record.add_attribute("user", 42_i64);
        record.add_attribute("name", "bob");
        record.add_attribute("raw", AnyValue::Bytes(Box::new(vec![0xde, 0xad])));
        record.add_attribute(
            "list",
            AnyValue::ListAny(Box::new(vec![AnyValue::Int(1), AnyValue::Double(2.5)])),
        );
        logger.emit(record);

        let mut record = logger.create_log_record();
        record.set_severity_number(Severity::Error);
        record.set_body(AnyValue::Int(7));
        record.set_event_name("crash");
        logger.emit(record);

        let mut record = logger.create_log_record();
        record.set_body("no severity".into());
        logger.emit(record);

        let text = buffer.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "log   INFO  [guest/my::module] hello world \
                 trace=4bf92f3577b34da6a3ce929d0e0e4736 span=00f067aa0ba902b7 \
                 {user=42, name=\"bob\", raw=0xdead, list=[1, 2.5]}",
                "log   ERROR [guest] 7 event=crash",
                "log   -     [guest] no severity",
            ]
        );
        provider.shutdown().unwrap();
    }

    #[test]
    fn metric_lines() {
        let (exporter, buffer) = exporter();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter).build())
            .build();
        let meter = provider.meter("guest");

        let counter = meter.u64_counter("requests").build();
        counter.add(2, &[KeyValue::new("route", "/")]);
        counter.add(1, &[KeyValue::new("route", "/")]);
        let updown = meter.i64_up_down_counter("in_flight").build();
        updown.add(-3, &[]);
        let gauge = meter.f64_gauge("temperature").with_unit("Cel").build();
        gauge.record(21.5, &[]);
        let histogram = meter.f64_histogram("latency").with_unit("ms").build();
        histogram.record(1.5, &[]);
        histogram.record(2.0, &[]);

        provider.force_flush().unwrap();
        let text = buffer.text();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            [
                "metric in_flight updown_sum = -3",
                "metric latency histogram = count=2 sum=3.5 min=1.5 max=2.0 ms",
                "metric requests sum {route=\"/\"} = 3",
                "metric temperature gauge = 21.5 Cel",
            ]
        );

        // Cumulative: a second collection still reports the running total.
        counter.add(4, &[KeyValue::new("route", "/")]);
        provider.force_flush().unwrap();
        assert!(
            buffer
                .text()
                .contains("metric requests sum {route=\"/\"} = 7\n")
        );
        provider.shutdown().unwrap();
    }

    #[tokio::test]
    async fn write_errors_become_internal_failures() {
        let exporter = ConsoleExporter::new(FailingWriter);
        let err = SpanExporter::export(&exporter, vec![span_data()])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, OTelSdkError::InternalFailure(msg) if msg.contains("disk on fire")),
            "{err:?}"
        );
        assert!(matches!(
            SpanExporter::force_flush(&exporter),
            Err(OTelSdkError::InternalFailure(_))
        ));
    }

    #[tokio::test]
    async fn shutdown_flushes_and_rejects_further_exports() {
        let (exporter, buffer) = exporter();
        let other = exporter.clone();
        SpanExporter::shutdown(&exporter).unwrap();
        assert!(matches!(
            SpanExporter::export(&exporter, vec![span_data()]).await,
            Err(OTelSdkError::AlreadyShutdown)
        ));
        // Clones share the writer but not the shutdown state.
        SpanExporter::export(&other, vec![span_data()])
            .await
            .unwrap();
        assert!(buffer.text().starts_with("span  "));
        assert_eq!(
            PushMetricExporter::temporality(&other),
            Temporality::Cumulative
        );
    }
}

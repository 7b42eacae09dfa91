//! Log records: the one place a record is made and handed to the log queue.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry::trace::SpanContext;
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogProcessor, SdkLogRecord};

use super::Telemetry;
use super::stats::Stats;
use crate::export::QueuedLog;
use crate::export::batch::BatchQueue;

/// What a producer knows of a log record.
pub(crate) struct NewLog<'a> {
    pub severity: Severity,
    pub severity_text: &'static str,
    /// The record's target (exported as its scope name); empty: none.
    pub target: Cow<'static, str>,
    /// `None`: no body.
    pub body: Option<String>,
    /// Already converted; the count limit is applied here.
    pub attributes: Vec<KeyValue>,
    /// The span it belongs to, if any.
    pub span: Option<&'a SpanContext>,
    /// `None`: now.
    pub time: Option<SystemTime>,
}

impl Telemetry {
    /// Makes one log record and hands it to the log queue (a no-op when no
    /// exporter takes logs). Strings are cut to the value length limit and
    /// attributes to `OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT`.
    pub(crate) fn emit_log(&self, log: NewLog<'_>) {
        let p = &self.inner;
        let Some((logger, queue)) = &p.logger else {
            return;
        };
        let check = self.checker();
        // Made in its box and filled in there: the record is large, and
        // each move of it is a copy.
        let mut item = Box::new((logger.create_log_record(), p.scope.clone()));
        let record = &mut item.0;
        record.set_severity_number(log.severity);
        record.set_severity_text(log.severity_text);
        if let Some(body) = log.body {
            record.set_body(AnyValue::String(check.string(body).into()));
        }
        if !log.target.is_empty() {
            record.set_target(match log.target {
                Cow::Owned(s) => Cow::Owned(check.string(s)),
                kept => kept,
            });
        }
        let now = log.time.unwrap_or_else(SystemTime::now);
        record.set_timestamp(now);
        record.set_observed_timestamp(now);
        if let Some(cx) = log.span.filter(|cx| cx.is_valid()) {
            record.set_trace_context(cx.trace_id(), cx.span_id(), Some(cx.trace_flags()));
        }
        if !log.attributes.is_empty() {
            let mut attrs = log.attributes;
            let max = p.limits.attributes_per_log;
            if attrs.len() > max {
                Stats::add(&p.stats.attributes_dropped, (attrs.len() - max) as u64);
                attrs.truncate(max);
            }
            record.add_attributes(
                attrs
                    .into_iter()
                    .map(|kv| check.bounded(kv))
                    .map(|kv| (kv.key, any_value(kv.value))),
            );
        }
        // Straight to the queue the logger's one processor feeds: through
        // `emit` the processor would copy the record (it gets it by
        // reference) and drop the original. The record has its trace
        // context or none: `emit` would look for a current OpenTelemetry
        // context, which the host never sets.
        queue.push(item);
        Stats::add(&p.stats.logs_emitted, 1);
    }
}

/// An attribute value as a log record holds it.
fn any_value(v: Value) -> AnyValue {
    fn list<T>(items: Vec<T>, f: impl Fn(T) -> AnyValue) -> AnyValue {
        AnyValue::ListAny(Box::new(items.into_iter().map(f).collect()))
    }
    match v {
        Value::Bool(b) => AnyValue::Boolean(b),
        Value::I64(i) => AnyValue::Int(i),
        Value::F64(f) => AnyValue::Double(f),
        Value::String(s) => AnyValue::String(s),
        Value::Array(Array::Bool(a)) => list(a, AnyValue::Boolean),
        Value::Array(Array::I64(a)) => list(a, AnyValue::Int),
        Value::Array(Array::F64(a)) => list(a, AnyValue::Double),
        Value::Array(Array::String(a)) => list(a, AnyValue::String),
        // `Value` is non-exhaustive; a future kind is kept as its text.
        other => AnyValue::String(other.to_string().into()),
    }
}

/// Hands log records to the log batch queue (with backpressure), instead of
/// the SDK's batch processor, which drops at once when its queue is full.
#[derive(Debug)]
pub(super) struct QueueLogProcessor {
    pub queue: Arc<BatchQueue<QueuedLog>>,
    pub flush_timeout: Duration,
}

impl LogProcessor for QueueLogProcessor {
    fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
        self.queue.push(Box::new((record.clone(), scope.clone())));
    }

    fn force_flush(&self) -> OTelSdkResult {
        if self.queue.flush(self.flush_timeout) {
            Ok(())
        } else {
            Err(OTelSdkError::Timeout(self.flush_timeout))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.queue.shutdown(timeout) {
            Ok(())
        } else {
            Err(OTelSdkError::Timeout(timeout))
        }
    }
}

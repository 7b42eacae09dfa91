//! `wasi:logging/logging`: log records as OpenTelemetry log records.
//!
//! Severity: trace, debug, info, warn, error and critical become severity
//! numbers 1, 5, 9, 13, 17 and 21, with the level's name as severity text.
//! The body is the message. The `context` string is the record's target, which
//! OTLP exports as the name of the record's instrumentation scope (the
//! logger name, in OpenTelemetry's terms). A record made while the guest has a
//! span open carries that span's trace and span ids. `wasi:observe/sdk`'s
//! `emit` makes its records here too, with attributes (at most
//! `OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT`), the span it names, and no body
//! when its message is empty.

use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry::trace::SpanContext;
use opentelemetry::{Array, Value};
use wasmtime::component::Linker;

use crate::bindings::logging::{Host, Level};
use crate::bindings::tracer::KeyValue;
use crate::convert::Checker;
use crate::ctx::{WasiObserveCtx, WasiObserveView};
use crate::stats::Stats;

/// The version of `wasi:logging` that existing components import.
const DRAFT: &str = "wasi:logging/logging@0.1.0-draft";

pub(crate) fn severity(level: Level) -> (Severity, &'static str) {
    match level {
        Level::Trace => (Severity::Trace, "TRACE"),
        Level::Debug => (Severity::Debug, "DEBUG"),
        Level::Info => (Severity::Info, "INFO"),
        Level::Warn => (Severity::Warn, "WARN"),
        Level::Error => (Severity::Error, "ERROR"),
        Level::Critical => (Severity::Fatal, "CRITICAL"),
    }
}

impl Host for WasiObserveCtx {
    fn log(&mut self, level: Level, context: String, message: String) -> wasmtime::Result<()> {
        let cx = self.implicit_parent();
        self.emit_log(level, context, Some(message), Vec::new(), cx.as_ref(), None);
        Ok(())
    }
}

impl WasiObserveCtx {
    /// Makes one log record and hands it to the pipeline; `now` is the time
    /// the caller already read (else the clock is read here).
    pub(crate) fn emit_log(
        &self,
        level: Level,
        context: String,
        message: Option<String>,
        attributes: Vec<KeyValue>,
        cx: Option<&SpanContext>,
        now: Option<SystemTime>,
    ) {
        let inner = &self.telemetry.inner;
        let Some(logger) = &inner.logger else {
            return;
        };
        let check = Checker {
            limits: &inner.limits,
            stats: &inner.stats,
        };
        let mut record = logger.create_log_record();
        let (number, text) = severity(level);
        record.set_severity_number(number);
        record.set_severity_text(text);
        if let Some(message) = message {
            record.set_body(AnyValue::String(check.string(message).into()));
        }
        if !context.is_empty() {
            record.set_target(check.string(context));
        }
        let now = now.unwrap_or_else(SystemTime::now);
        record.set_timestamp(now);
        record.set_observed_timestamp(now);
        if let Some(cx) = cx.filter(|cx| cx.is_valid()) {
            record.set_trace_context(cx.trace_id(), cx.span_id(), Some(cx.trace_flags()));
        }
        if !attributes.is_empty() {
            let (attrs, _) = check.attributes(attributes, inner.limits.attributes_per_log);
            record.add_attributes(attrs.into_iter().map(|kv| (kv.key, any_value(kv.value))));
        }
        logger.emit(record);
        Stats::add(&inner.stats.logs_emitted, 1);
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

/// Serves `wasi:logging/logging@0.1.0-draft` with the same implementation:
/// the interface is identical, but a prerelease version never matches another
/// version, so it needs its own name in the linker.
pub(crate) fn add_draft_to_linker<T: WasiObserveView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    let mut root = linker.root();
    let mut instance = root.instance(DRAFT)?;
    instance.func_wrap(
        "log",
        |mut store, (level, context, message): (Level, String, String)| {
            Host::log(store.data_mut().observe(), level, context, message)
        },
    )?;
    Ok(())
}

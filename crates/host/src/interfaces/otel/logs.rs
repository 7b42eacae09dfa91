//! `wasi:otel/logs`: log records a guest's SDK emitted, into the pipeline's
//! log queue under the guest's instrumentation scope.
//!
//! - body and attributes are decoded from JSON ([`values`]) with bytes and
//!   maps intact; a body that is not JSON is kept as its text (counted);
//! - severity number 1-24 as given (others dropped, counted); severity text
//!   and event name as given (the SDK record takes only static text: see
//!   [`values::intern`]);
//! - trace correlation: the ids the guest gives; without them (or with
//!   malformed ones, counted) the innermost span the host knows to be open,
//!   else the invocation's ambient context, as for `wasi:logging`;
//! - the record's resource: the pipeline exports every log record with the
//!   host's resource, so a guest's resource on a log record is not carried
//!   (docs/wasi-otel.md).

use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry::trace::{SpanContext, TraceFlags};

use super::bindings::logs::{Host, LogRecord};
use super::bindings::tracing as wit_tracing;
use super::pipeline_glue as glue;
use super::tracing::{scope, time};
use super::values;
use crate::ctx::WasiObserveCtx;
use crate::interfaces::values::{parse_span_id, parse_trace_id};
use crate::pipeline::limits::Checker;
use crate::pipeline::stats::Stats;

/// OpenTelemetry's severity numbers, 1 to 24.
pub(crate) fn severity(n: u8) -> Option<Severity> {
    use Severity::*;
    const ALL: [Severity; 24] = [
        Trace, Trace2, Trace3, Trace4, Debug, Debug2, Debug3, Debug4, Info, Info2, Info3, Info4,
        Warn, Warn2, Warn3, Warn4, Error, Error2, Error3, Error4, Fatal, Fatal2, Fatal3, Fatal4,
    ];
    ALL.get(usize::from(n).checked_sub(1)?).copied()
}

/// The trace context a guest record names, if whole and well formed.
fn given_context(check: &Checker<'_>, record: &LogRecord) -> Option<SpanContext> {
    let (Some(trace), Some(span)) = (&record.trace_id, &record.span_id) else {
        if record.trace_id.is_some() || record.span_id.is_some() {
            Stats::add(&check.stats.invalid_input, 1);
        }
        return None;
    };
    let (Some(trace_id), Some(span_id)) = (parse_trace_id(trace), parse_span_id(span)) else {
        Stats::add(&check.stats.invalid_input, 1);
        return None;
    };
    let flags = match record.trace_flags {
        Some(f) if f.contains(wit_tracing::TraceFlags::SAMPLED) => TraceFlags::SAMPLED,
        _ => TraceFlags::NOT_SAMPLED,
    };
    Some(SpanContext::new(
        trace_id,
        span_id,
        flags,
        false,
        Default::default(),
    ))
}

/// A log body: its JSON value, or (counted) the raw text when it is not JSON.
fn body(check: &Checker<'_>, raw: String) -> Option<AnyValue> {
    match values::parse(check, &raw) {
        Some(json) => values::any_value(check, json, 0),
        None if raw.trim() == "null" => None,
        None => Some(AnyValue::String(check.string(raw).into())),
    }
}

impl Host for WasiObserveCtx {
    fn on_emit(&mut self, data: LogRecord) -> wasmtime::Result<()> {
        let t = self.scope.telemetry().clone();
        let check = glue::checker(&t);
        let cx = given_context(&check, &data).or_else(|| glue::innermost(self));
        let scope = data.instrumentation_scope.map(|s| scope(&check, s));
        let Some(logger) = glue::logger(&t, scope) else {
            return Ok(());
        };
        let mut record = logger.create_log_record();
        let now = SystemTime::now();
        if let Some(ts) = data.timestamp.and_then(|ts| time(&check, ts)) {
            record.set_timestamp(ts);
        }
        record.set_observed_timestamp(
            data.observed_timestamp
                .and_then(|ts| time(&check, ts))
                .unwrap_or(now),
        );
        if let Some(n) = data.severity_number {
            match severity(n) {
                Some(s) => record.set_severity_number(s),
                None => Stats::add(&check.stats.invalid_input, 1),
            }
        }
        if let Some(text) = data.severity_text.and_then(|s| values::intern(&check, &s)) {
            record.set_severity_text(text);
        }
        if let Some(name) = data.event_name.and_then(|s| values::intern(&check, &s)) {
            record.set_event_name(name);
        }
        if let Some(b) = data.body.and_then(|raw| body(&check, raw)) {
            record.set_body(b);
        }
        if let Some(attrs) = data.attributes {
            record.add_attributes(values::log_attributes(
                &check,
                attrs,
                check.limits.attributes_per_log,
            ));
        }
        if let Some(cx) = cx.filter(SpanContext::is_valid) {
            record.set_trace_context(cx.trace_id(), cx.span_id(), Some(cx.trace_flags()));
        }
        logger.emit(record);
        glue::log_emitted(&t);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Limits;

    #[test]
    fn severities_are_the_specification_numbers() {
        assert_eq!(severity(0), None);
        assert_eq!(severity(1), Some(Severity::Trace));
        assert_eq!(severity(9), Some(Severity::Info));
        assert_eq!(severity(24), Some(Severity::Fatal4));
        assert_eq!(severity(25), None);
        assert_eq!(severity(u8::MAX), None);
        for n in 1..=24u8 {
            assert_eq!(severity(n).unwrap() as u8, n);
        }
    }

    #[test]
    fn bodies_that_are_not_json_are_kept_as_text() {
        let limits = Limits::default();
        let stats = Stats::default();
        let c = Checker {
            limits: &limits,
            stats: &stats,
        };
        assert_eq!(body(&c, r#""hi""#.into()), Some(AnyValue::from("hi")));
        assert_eq!(
            body(&c, "plain text".into()),
            Some(AnyValue::from("plain text"))
        );
        assert_eq!(body(&c, "null".into()), None);
        assert_eq!(stats.snapshot().invalid_input, 2);
    }

    fn record() -> LogRecord {
        LogRecord {
            timestamp: None,
            observed_timestamp: None,
            severity_text: None,
            severity_number: None,
            body: None,
            attributes: None,
            event_name: None,
            resource: None,
            instrumentation_scope: None,
            trace_id: None,
            span_id: None,
            trace_flags: None,
        }
    }

    #[test]
    fn half_or_malformed_trace_context_is_refused() {
        let limits = Limits::default();
        let stats = Stats::default();
        let c = Checker {
            limits: &limits,
            stats: &stats,
        };
        let mut r = record();
        assert!(given_context(&c, &r).is_none());
        r.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        assert!(given_context(&c, &r).is_none());
        r.span_id = Some("nothex".into());
        assert!(given_context(&c, &r).is_none());
        r.span_id = Some("00f067aa0ba902b7".into());
        r.trace_flags = Some(wit_tracing::TraceFlags::SAMPLED);
        let cx = given_context(&c, &r).unwrap();
        assert!(cx.is_sampled());
        assert_eq!(stats.snapshot().invalid_input, 2);
    }
}

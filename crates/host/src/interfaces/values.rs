//! Conversions between the WIT types of `wasi:observe` and OpenTelemetry's,
//! every guest value bounded by the pipeline's
//! [`Checker`](crate::pipeline::limits::Checker) on the way in.

use std::time::SystemTime;

use opentelemetry::trace::{Link, SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry::{Array, Key, KeyValue, StringValue, Value};

use crate::bindings::Datetime;
use crate::bindings::tracer as wit;
use crate::pipeline::Limits;
use crate::pipeline::limits::Checker;
use crate::pipeline::stats::Stats;

/// A guest timestamp as a `SystemTime`, or `None` (counted) when it is not
/// a valid instant OTLP can carry.
pub(crate) fn timestamp(check: &Checker<'_>, t: Datetime) -> Option<SystemTime> {
    check.timestamp(t.seconds, t.nanoseconds)
}

/// A guest timestamp, or now when it is absent or invalid.
pub(crate) fn timestamp_or_now(check: &Checker<'_>, t: Option<Datetime>) -> SystemTime {
    t.and_then(|t| timestamp(check, t))
        .unwrap_or_else(SystemTime::now)
}

/// One attribute, its strings cut to the limits.
fn key_value(check: &Checker<'_>, kv: wit::KeyValue) -> KeyValue {
    let key = Key::from(check.string(kv.key));
    let value = match kv.value {
        wit::Value::String(s) => Value::String(check.string(s).into()),
        wit::Value::Bool(b) => Value::Bool(b),
        wit::Value::Float64(f) => Value::F64(f),
        wit::Value::S64(i) => Value::I64(i),
        wit::Value::StringArray(a) => Value::Array(Array::String(
            check
                .array(a)
                .into_iter()
                .map(|s| StringValue::from(check.string(s)))
                .collect(),
        )),
        wit::Value::BoolArray(a) => Value::Array(Array::Bool(check.array(a))),
        wit::Value::Float64Array(a) => Value::Array(Array::F64(check.array(a))),
        wit::Value::S64Array(a) => Value::Array(Array::I64(check.array(a))),
    };
    KeyValue::new(key, value)
}

/// Applies guest attributes to `attrs` (see
/// [`Checker::merge_attributes`]); returns how many the count limit dropped.
pub(crate) fn merge_attributes(
    check: &Checker<'_>,
    attrs: &mut Vec<KeyValue>,
    new: Vec<wit::KeyValue>,
    max: usize,
) -> u32 {
    // An empty key is rejected before its value is converted.
    let new = new.into_iter().filter_map(|kv| {
        if kv.key.is_empty() {
            check.invalid();
            None
        } else {
            Some(key_value(check, kv))
        }
    });
    check.merge_attributes(attrs, new, max)
}

/// A fresh attribute list from guest attributes, with room for `extra`
/// more (so that appending them does not reallocate), and the dropped count.
pub(crate) fn attributes_with_room(
    check: &Checker<'_>,
    new: Vec<wit::KeyValue>,
    max: usize,
    extra: usize,
) -> (Vec<KeyValue>, u32) {
    let mut attrs = Vec::with_capacity(new.len().saturating_add(extra).min(max));
    let dropped = merge_attributes(check, &mut attrs, new, max);
    (attrs, dropped)
}

/// A fresh attribute list from guest attributes, with the dropped count.
pub(crate) fn attributes(
    check: &Checker<'_>,
    new: Vec<wit::KeyValue>,
    max: usize,
) -> (Vec<KeyValue>, u32) {
    attributes_with_room(check, new, max, 0)
}

/// A span context given by the guest (in a link). Malformed ids make it
/// `None` (counted); a malformed trace-state becomes empty, as the WIT says.
pub(crate) fn span_context(check: &Checker<'_>, sc: wit::SpanContext) -> Option<SpanContext> {
    let (Some(trace_id), Some(span_id)) =
        (parse_trace_id(&sc.trace_id), parse_span_id(&sc.span_id))
    else {
        check.invalid();
        return None;
    };
    let flags = if sc.trace_flags.contains(wit::TraceFlags::SAMPLED) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::NOT_SAMPLED
    };
    let state = check.trace_state(sc.trace_state);
    Some(SpanContext::new(
        trace_id,
        span_id,
        flags,
        sc.is_remote,
        state,
    ))
}

/// Converts guest links: links to malformed span contexts and links beyond
/// `room` are dropped (counted), each link's attributes are bounded.
pub(crate) fn links(
    check: &Checker<'_>,
    limits: &Limits,
    links: Vec<wit::Link>,
    room: usize,
) -> (Vec<Link>, u32) {
    let mut out = Vec::new();
    let mut dropped = 0u32;
    for link in links {
        let Some(cx) = span_context(check, link.span_context) else {
            dropped = dropped.saturating_add(1);
            continue;
        };
        if out.len() >= room {
            dropped = dropped.saturating_add(1);
            continue;
        }
        let (attrs, attrs_dropped) = attributes(check, link.attributes, limits.attributes_per_link);
        out.push(Link::new(cx, attrs, attrs_dropped));
    }
    Stats::add(&check.stats.links_dropped, dropped.into());
    (out, dropped)
}

/// 32 hex digits, not all zero.
pub(crate) fn parse_trace_id(s: &str) -> Option<TraceId> {
    (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u128::from_str_radix(s, 16).ok())
        .flatten()
        .filter(|&v| v != 0)
        .map(|v| TraceId::from_bytes(v.to_be_bytes()))
}

/// 16 hex digits, not all zero.
pub(crate) fn parse_span_id(s: &str) -> Option<SpanId> {
    (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
        .filter(|&v| v != 0)
        .map(|v| SpanId::from_bytes(v.to_be_bytes()))
}

/// A span context as the guest sees it: lowercase hex ids, as exported.
pub(crate) fn to_wit_span_context(sc: &SpanContext) -> wit::SpanContext {
    let mut flags = wit::TraceFlags::empty();
    if sc.is_sampled() {
        flags |= wit::TraceFlags::SAMPLED;
    }
    wit::SpanContext {
        trace_id: format!("{:032x}", sc.trace_id()),
        span_id: format!("{:016x}", sc.span_id()),
        trace_flags: flags,
        is_remote: sc.is_remote(),
        trace_state: trace_state_entries(sc.trace_state()),
    }
}

pub(crate) fn trace_state_entries(state: &TraceState) -> Vec<(String, String)> {
    let header = state.header();
    if header.is_empty() {
        return Vec::new();
    }
    header
        .split(',')
        .filter_map(|entry| {
            let (k, v) = entry.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strict() {
        assert!(parse_trace_id("4bf92f3577b34da6a3ce929d0e0e4736").is_some());
        assert!(parse_trace_id("4BF92F3577B34DA6A3CE929D0E0E4736").is_some());
        assert!(parse_trace_id("00000000000000000000000000000000").is_none());
        assert!(parse_trace_id("+bf92f3577b34da6a3ce929d0e0e4736").is_none());
        assert!(parse_trace_id("4bf92f3577b34da6").is_none());
        assert!(parse_trace_id("zzf92f3577b34da6a3ce929d0e0e4736").is_none());
        assert!(parse_span_id("00f067aa0ba902b7").is_some());
        assert!(parse_span_id("00f067aa0ba902b").is_none());
        assert!(parse_span_id("é0f067aa0ba902b").is_none());
    }

    #[test]
    fn trace_state_round_trips() {
        let limits = Limits::default();
        let stats = Stats::default();
        let c = Checker {
            limits: &limits,
            stats: &stats,
        };
        let ts = c.trace_state(vec![("vendor".into(), "value".into())]);
        assert_eq!(
            trace_state_entries(&ts),
            vec![("vendor".into(), "value".into())]
        );
    }
}

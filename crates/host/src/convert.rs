//! Conversions between the WIT types and OpenTelemetry's, with every guest
//! value checked against the [`Limits`].

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry::{Array, Key, KeyValue, StringValue, Value};

use crate::bindings::Datetime;
use crate::bindings::tracer as wit;
use crate::limits::{Limits, truncate};
use crate::stats::Stats;

/// The latest instant OTLP can carry: nanoseconds since the epoch in a u64.
const MAX_NANOS: u128 = u64::MAX as u128;

/// Checks guest values against the limits and counts what they cut.
pub(crate) struct Checker<'a> {
    pub limits: &'a Limits,
    pub stats: &'a Stats,
}

impl Checker<'_> {
    fn count(&self, counter: &AtomicU64) {
        Stats::add(counter, 1);
    }

    /// Cuts a name or message to the value length limit.
    pub fn string(&self, mut s: String) -> String {
        if truncate(&mut s, self.limits.value_length) {
            self.count(&self.stats.values_truncated);
        }
        s
    }

    /// A guest timestamp as a `SystemTime`, or `None` (counted) when it is
    /// not a valid instant OTLP can carry.
    pub fn timestamp(&self, t: Datetime) -> Option<SystemTime> {
        let nanos = u128::from(t.seconds) * 1_000_000_000 + u128::from(t.nanoseconds);
        if t.nanoseconds >= 1_000_000_000 || nanos > MAX_NANOS {
            self.count(&self.stats.invalid_input);
            return None;
        }
        UNIX_EPOCH.checked_add(Duration::new(t.seconds, t.nanoseconds))
    }

    /// A guest timestamp, or now when it is absent or invalid.
    pub fn timestamp_or_now(&self, t: Option<Datetime>) -> SystemTime {
        t.and_then(|t| self.timestamp(t))
            .unwrap_or_else(SystemTime::now)
    }

    /// Converts one attribute. Empty keys are rejected (counted) as the
    /// OpenTelemetry specification requires.
    pub fn key_value(&self, kv: wit::KeyValue) -> Option<KeyValue> {
        if kv.key.is_empty() {
            self.count(&self.stats.invalid_input);
            return None;
        }
        let key = Key::from(self.string(kv.key));
        Some(KeyValue::new(key, self.value(kv.value)))
    }

    fn value(&self, v: wit::Value) -> Value {
        match v {
            wit::Value::String(s) => Value::String(self.string(s).into()),
            wit::Value::Bool(b) => Value::Bool(b),
            wit::Value::Float64(f) => Value::F64(f),
            wit::Value::S64(i) => Value::I64(i),
            wit::Value::StringArray(a) => Value::Array(Array::String(
                self.array(a)
                    .into_iter()
                    .map(|s| StringValue::from(self.string(s)))
                    .collect(),
            )),
            wit::Value::BoolArray(a) => Value::Array(Array::Bool(self.array(a))),
            wit::Value::Float64Array(a) => Value::Array(Array::F64(self.array(a))),
            wit::Value::S64Array(a) => Value::Array(Array::I64(self.array(a))),
        }
    }

    fn array<T>(&self, mut a: Vec<T>) -> Vec<T> {
        if a.len() > self.limits.array_length {
            a.truncate(self.limits.array_length);
            self.count(&self.stats.values_truncated);
        }
        a
    }

    /// Applies a list of attributes to `attrs`: a key already present is
    /// overwritten in place, a new key is appended while fewer than `max` are
    /// held. Returns how many were dropped by the limit.
    pub fn merge_attributes(
        &self,
        attrs: &mut Vec<KeyValue>,
        new: Vec<wit::KeyValue>,
        max: usize,
    ) -> u32 {
        let mut dropped = 0u32;
        for kv in new {
            let Some(kv) = self.key_value(kv) else {
                continue;
            };
            if let Some(slot) = attrs.iter_mut().find(|a| a.key == kv.key) {
                *slot = kv;
            } else if attrs.len() < max {
                attrs.push(kv);
            } else {
                dropped = dropped.saturating_add(1);
            }
        }
        Stats::add(&self.stats.attributes_dropped, dropped.into());
        dropped
    }

    /// A fresh attribute list from guest attributes, with the dropped count.
    pub fn attributes(&self, new: Vec<wit::KeyValue>, max: usize) -> (Vec<KeyValue>, u32) {
        self.attributes_with_room(new, max, 0)
    }

    /// As [`attributes`](Self::attributes), with room for `extra` more, so
    /// that appending them does not reallocate.
    pub fn attributes_with_room(
        &self,
        new: Vec<wit::KeyValue>,
        max: usize,
        extra: usize,
    ) -> (Vec<KeyValue>, u32) {
        let mut attrs = Vec::with_capacity(new.len().saturating_add(extra).min(max));
        let dropped = self.merge_attributes(&mut attrs, new, max);
        (attrs, dropped)
    }

    /// A span context given by the guest (in a link). Malformed ids make it
    /// `None`; a malformed trace-state becomes empty, as the WIT says.
    pub fn span_context(&self, sc: wit::SpanContext) -> Option<SpanContext> {
        let (Some(trace_id), Some(span_id)) =
            (parse_trace_id(&sc.trace_id), parse_span_id(&sc.span_id))
        else {
            self.count(&self.stats.invalid_input);
            return None;
        };
        let flags = if sc.trace_flags.contains(wit::TraceFlags::SAMPLED) {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::NOT_SAMPLED
        };
        let state = self.trace_state(sc.trace_state);
        Some(SpanContext::new(
            trace_id,
            span_id,
            flags,
            sc.is_remote,
            state,
        ))
    }

    /// A guest trace-state; invalid entries make the whole state empty.
    pub fn trace_state(&self, entries: Vec<(String, String)>) -> TraceState {
        if entries.is_empty() {
            return TraceState::NONE;
        }
        match TraceState::from_key_value(entries) {
            Ok(state) => state,
            Err(_) => {
                self.count(&self.stats.invalid_input);
                TraceState::NONE
            }
        }
    }
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
    fn timestamps_out_of_range_are_rejected() {
        let limits = Limits::default();
        let stats = Stats::default();
        let c = Checker {
            limits: &limits,
            stats: &stats,
        };
        let ok = Datetime {
            seconds: 1_700_000_000,
            nanoseconds: 5,
        };
        assert_eq!(
            c.timestamp(ok),
            Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5))
        );
        for bad in [
            Datetime {
                seconds: u64::MAX,
                nanoseconds: 0,
            },
            Datetime {
                seconds: 1,
                nanoseconds: 1_000_000_000,
            },
            Datetime {
                seconds: 18_446_744_074,
                nanoseconds: 0,
            },
        ] {
            assert_eq!(c.timestamp(bad), None);
        }
        assert_eq!(stats.snapshot().invalid_input, 3);
    }

    #[test]
    fn trace_state_round_trips_and_rejects_garbage() {
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
        let bad = c.trace_state(vec![("BAD KEY".into(), "v=,".into())]);
        assert_eq!(bad.header(), "");
        assert_eq!(stats.snapshot().invalid_input, 1);
    }
}

//! The limit policy: bounds on what a guest (or a client of `serve`) can
//! make the host hold.
//!
//! Guests are untrusted. Every producer applies these bounds through one
//! [`Checker`] before a value reaches the pipeline, and the pipeline applies
//! the count limits again where a span is born, so no path can skip them:
//! - strings (names, messages, string values, each array element) are cut
//!   at a character boundary to [`Limits::value_length`];
//! - arrays are cut to [`Limits::array_length`] elements;
//! - attribute, event and link lists keep the first `*_per_*` items; a key
//!   given again overwrites the earlier value in place;
//! - timestamps that OTLP cannot carry are replaced by the current time;
//! - an invalid trace-state becomes empty.
//!
//! Whatever a bound cuts off is counted in [`Stats`], so nothing is lost
//! silently.

use std::env;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use opentelemetry::trace::TraceState;

use super::stats::Stats;

/// Limits applied to guest telemetry. The defaults follow the OpenTelemetry
/// specification, except where an unbounded default would let a guest grow
/// host memory without limit (value length, open spans, instruments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Attributes kept per span (`OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`, default 128).
    pub attributes_per_span: usize,
    /// Events kept per span (`OTEL_SPAN_EVENT_COUNT_LIMIT`, default 128).
    pub events_per_span: usize,
    /// Links kept per span (`OTEL_SPAN_LINK_COUNT_LIMIT`, default 128).
    pub links_per_span: usize,
    /// Attributes kept per event (`OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT`, default 128).
    pub attributes_per_event: usize,
    /// Attributes kept per link (`OTEL_LINK_ATTRIBUTE_COUNT_LIMIT`, default 128).
    pub attributes_per_link: usize,
    /// Attributes kept per log record (`OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT`,
    /// default 128).
    pub attributes_per_log: usize,
    /// Bytes kept of a string value, a span, event or instrument name, and a
    /// log message (`OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT`, then
    /// `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`). The specification leaves this
    /// unbounded by default; wasi-observe defaults to 64 KiB because a guest's
    /// strings are untrusted. Longer strings are cut at a character boundary.
    pub value_length: usize,
    /// Elements kept of an array value (default 1024).
    pub array_length: usize,
    /// Spans a single store may hold open at once
    /// (`WASI_OBSERVE_MAX_OPEN_SPANS`, default 10 000). Spans started beyond it
    /// are not recorded: the guest gets a non-recording span and the drop is
    /// counted.
    pub open_spans_per_store: usize,
    /// Distinct metric instruments (kind and name) the host creates for all
    /// guests together (`WASI_OBSERVE_MAX_INSTRUMENTS`, default 1000).
    pub instruments: usize,
    /// Bytes one store may hold on its guest's behalf between calls: open
    /// spans with their attributes, events and links, function frames with
    /// their names and tags, shared attribute sets
    /// (`WASI_OBSERVE_MAX_STORE_BYTES`, default 64 MiB). Beyond it new spans
    /// do not record and new data is refused, counted (see
    /// [`budget`](super::budget)).
    pub store_bytes: usize,
    /// Bytes of telemetry waiting to be exported, for the whole pipeline:
    /// queues, batches being exported, retry buffers
    /// (`WASI_OBSERVE_MAX_EXPORT_BYTES`, default 256 MiB). Beyond it new
    /// spans and log records are dropped, counted.
    pub export_bytes: usize,
    /// Bytes kept of a string attribute value of a measurement
    /// (`WASI_OBSERVE_METRIC_VALUE_LENGTH`, default 256). Metric series live
    /// as long as the process, so their values are kept short.
    pub metric_value_length: usize,
    /// Distinct attribute sets (series) one instrument keeps
    /// (`WASI_OBSERVE_MAX_SERIES`, default 1000, below the SDK's own
    /// overflow at 2000). Measurements of further sets are dropped, counted.
    pub series_per_instrument: usize,
    /// Bytes the attributes of all metric series may hold together
    /// (`WASI_OBSERVE_MAX_METRIC_BYTES`, default 16 MiB). Measurements of a
    /// new series beyond it are dropped, counted.
    pub metric_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            attributes_per_span: 128,
            events_per_span: 128,
            links_per_span: 128,
            attributes_per_event: 128,
            attributes_per_link: 128,
            attributes_per_log: 128,
            value_length: 64 * 1024,
            array_length: 1024,
            open_spans_per_store: 10_000,
            instruments: 1000,
            store_bytes: 64 << 20,
            export_bytes: 256 << 20,
            metric_value_length: 256,
            series_per_instrument: 1000,
            metric_bytes: 16 << 20,
        }
    }
}

impl Limits {
    /// The defaults, overridden by the OpenTelemetry limit variables (and
    /// wasi-observe's own) where they are set to a valid number.
    pub fn from_env() -> Self {
        let d = Limits::default();
        let general_count = var_usize("OTEL_ATTRIBUTE_COUNT_LIMIT");
        let general_len = var_usize("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT");
        Limits {
            attributes_per_span: var_usize("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT")
                .or(general_count)
                .unwrap_or(d.attributes_per_span),
            events_per_span: var_usize("OTEL_SPAN_EVENT_COUNT_LIMIT").unwrap_or(d.events_per_span),
            links_per_span: var_usize("OTEL_SPAN_LINK_COUNT_LIMIT").unwrap_or(d.links_per_span),
            attributes_per_event: var_usize("OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT")
                .or(general_count)
                .unwrap_or(d.attributes_per_event),
            attributes_per_link: var_usize("OTEL_LINK_ATTRIBUTE_COUNT_LIMIT")
                .or(general_count)
                .unwrap_or(d.attributes_per_link),
            attributes_per_log: var_usize("OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT")
                .or(general_count)
                .unwrap_or(d.attributes_per_log),
            value_length: var_usize("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT")
                .or(general_len)
                .unwrap_or(d.value_length),
            array_length: d.array_length,
            open_spans_per_store: var_usize("WASI_OBSERVE_MAX_OPEN_SPANS")
                .unwrap_or(d.open_spans_per_store),
            instruments: var_usize("WASI_OBSERVE_MAX_INSTRUMENTS").unwrap_or(d.instruments),
            store_bytes: var_usize("WASI_OBSERVE_MAX_STORE_BYTES").unwrap_or(d.store_bytes),
            export_bytes: var_usize("WASI_OBSERVE_MAX_EXPORT_BYTES").unwrap_or(d.export_bytes),
            metric_value_length: var_usize("WASI_OBSERVE_METRIC_VALUE_LENGTH")
                .unwrap_or(d.metric_value_length),
            series_per_instrument: var_usize("WASI_OBSERVE_MAX_SERIES")
                .unwrap_or(d.series_per_instrument),
            metric_bytes: var_usize("WASI_OBSERVE_MAX_METRIC_BYTES").unwrap_or(d.metric_bytes),
        }
    }
}

pub(crate) fn var_usize(name: &str) -> Option<usize> {
    env::var(name).ok()?.trim().parse().ok()
}

/// Cuts `s` to at most `max` bytes at a character boundary; true if it cut.
pub(crate) fn truncate(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

/// The latest instant OTLP can carry: nanoseconds since the epoch in a u64.
const MAX_NANOS: u128 = u64::MAX as u128;

/// Applies the [`Limits`] to values on their way into the pipeline and
/// counts what they cut.
#[derive(Clone, Copy)]
pub(crate) struct Checker<'a> {
    pub limits: &'a Limits,
    pub stats: &'a Stats,
}

impl Checker<'_> {
    pub fn count(&self, counter: &AtomicU64) {
        Stats::add(counter, 1);
    }

    /// Counts one malformed value.
    pub fn invalid(&self) {
        self.count(&self.stats.invalid_input);
    }

    /// Cuts a name, message or string value to the value length limit.
    pub fn string(&self, mut s: String) -> String {
        if truncate(&mut s, self.limits.value_length) {
            self.count(&self.stats.values_truncated);
        }
        s
    }

    /// Cuts an array value to the array length limit.
    pub fn array<T>(&self, mut a: Vec<T>) -> Vec<T> {
        if a.len() > self.limits.array_length {
            a.truncate(self.limits.array_length);
            self.count(&self.stats.values_truncated);
        }
        a
    }

    /// An instant given as seconds and nanoseconds since the epoch, or
    /// `None` (counted) when OTLP cannot carry it.
    pub fn timestamp(&self, seconds: u64, nanoseconds: u32) -> Option<SystemTime> {
        let nanos = u128::from(seconds) * 1_000_000_000 + u128::from(nanoseconds);
        if nanoseconds >= 1_000_000_000 || nanos > MAX_NANOS {
            self.invalid();
            return None;
        }
        UNIX_EPOCH.checked_add(Duration::new(seconds, nanoseconds))
    }

    /// Applies attributes to `attrs`: a key already present is overwritten
    /// in place, a new key is appended while fewer than `max` are held, an
    /// empty key is rejected (counted), as OpenTelemetry requires. Returns
    /// how many the count limit dropped.
    pub fn merge_attributes(
        &self,
        attrs: &mut Vec<KeyValue>,
        new: impl IntoIterator<Item = KeyValue>,
        max: usize,
    ) -> u32 {
        let mut dropped = 0u32;
        for kv in new {
            if kv.key.as_str().is_empty() {
                self.invalid();
                continue;
            }
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

    /// A host-made attribute whose text came from outside (a request's
    /// path, headers, a guest's URL), cut to the value length limit.
    pub fn bounded(&self, mut kv: KeyValue) -> KeyValue {
        self.bound(&mut kv);
        kv
    }

    /// [`bounded`](Self::bounded) in place, for a list: no attribute moves.
    pub fn bound(&self, kv: &mut KeyValue) {
        if let opentelemetry::Value::String(s) = &kv.value
            && s.as_str().len() > self.limits.value_length
        {
            kv.value = self.string(s.as_str().to_string()).into();
        }
    }

    /// A trace-state from `key=value` entries; invalid entries make the
    /// whole state empty (counted).
    pub fn trace_state(&self, entries: Vec<(String, String)>) -> TraceState {
        if entries.is_empty() {
            return TraceState::NONE;
        }
        match TraceState::from_key_value(entries) {
            Ok(state) => state,
            Err(_) => {
                self.invalid();
                TraceState::NONE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_out_of_range_are_rejected() {
        let limits = Limits::default();
        let stats = Stats::default();
        let c = Checker {
            limits: &limits,
            stats: &stats,
        };
        assert_eq!(
            c.timestamp(1_700_000_000, 5),
            Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5))
        );
        for (s, n) in [(u64::MAX, 0), (1, 1_000_000_000), (18_446_744_074, 0)] {
            assert_eq!(c.timestamp(s, n), None);
        }
        assert_eq!(stats.snapshot().invalid_input, 3);
    }

    #[test]
    fn invalid_trace_state_becomes_empty() {
        let limits = Limits::default();
        let stats = Stats::default();
        let c = Checker {
            limits: &limits,
            stats: &stats,
        };
        let ts = c.trace_state(vec![("vendor".into(), "value".into())]);
        assert_eq!(ts.header(), "vendor=value");
        let bad = c.trace_state(vec![("BAD KEY".into(), "v=,".into())]);
        assert_eq!(bad.header(), "");
        assert_eq!(stats.snapshot().invalid_input, 1);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let mut s = "héllo".to_string();
        assert!(truncate(&mut s, 2));
        assert_eq!(s, "h");
        let mut s = "abc".to_string();
        assert!(!truncate(&mut s, 3));
        assert_eq!(s, "abc");
    }
}

//! Bounds on what a guest can make the host hold.
//!
//! Guests are untrusted: every list and string a guest hands over is bounded
//! here, and whatever a bound cuts off is counted in [`Stats`](crate::Stats).

use std::env;

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

#[cfg(test)]
mod tests {
    use super::*;

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

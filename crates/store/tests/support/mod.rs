//! Synthetic spans, shared by the store's tests and its benchmark.

#![allow(dead_code)]

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

/// The store's export futures are ready at once: poll once.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("store exports complete synchronously"),
    }
}

/// The trace id of synthetic trace `n`: distinct for distinct `n` (an odd
/// multiplier is a bijection), and spread like the random ids real tracers
/// make, so the store's indexes see realistic (unordered) keys.
pub fn trace_id(n: u64) -> TraceId {
    TraceId::from((u128::from(n) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
}

/// A span of trace `n`: span `i` (0 is the root) with `i - 1` as parent,
/// starting `i` ms after `start` and lasting `10 - i` ms (at least 1).
pub fn span(n: u64, i: u64, start: SystemTime, error: bool) -> SpanData {
    let span_id = |k: u64| SpanId::from(n << 16 | (k + 1));
    let begin = start + Duration::from_millis(i);
    SpanData {
        span_context: SpanContext::new(
            trace_id(n),
            span_id(i),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: if i == 0 {
            SpanId::INVALID
        } else {
            span_id(i - 1)
        },
        parent_span_is_remote: false,
        span_kind: if i == 0 {
            SpanKind::Server
        } else {
            SpanKind::Internal
        },
        name: if i == 0 {
            format!("GET /item/{}", n % 100).into()
        } else {
            format!("step-{i}").into()
        },
        start_time: begin,
        end_time: begin + Duration::from_millis(10u64.saturating_sub(i).max(1)),
        attributes: vec![
            KeyValue::new("http.route", "/item/{id}"),
            KeyValue::new("item.id", n as i64),
        ],
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if error {
            Status::error("it broke")
        } else {
            Status::Unset
        },
        instrumentation_scope: InstrumentationScope::builder("bench").build(),
    }
}

/// All `spans` spans of trace `n`, children first (the order they end in).
pub fn trace(n: u64, spans: u64, start: SystemTime, error: bool) -> Vec<SpanData> {
    (0..spans)
        .rev()
        .map(|i| span(n, i, start, error && i == spans - 1))
        .collect()
}

//! Spans and metrics the host makes itself, and what the guest's data does
//! to them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use wasi_observe_host::functions::FunctionNames;
use wasi_observe_host::host_spans::http::ServerSpan;
use wasi_observe_host::{Limits, WasiObserveCtx};

use crate::support::*;

/// An unknown method is `_OTHER` on the duration metric, and its original
/// text is on the span only: a client choosing methods cannot grow the
/// host's metric series (HTTP semantic conventions).
#[test]
fn unknown_methods_reach_spans_but_not_metric_series() {
    let p = Pipeline::new();
    let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    for i in 0..3 {
        let request = http::Request::builder()
            .method(format!("BREW{i}").as_str())
            .uri("/pot")
            .header("host", "tea.example")
            .body(())
            .unwrap();
        let mut span = ServerSpan::start(&p.telemetry, &request, "http", local, None);
        span.response(200);
    }
    let spans = p.spans();
    assert_eq!(spans.len(), 3);
    for s in &spans {
        assert_eq!(s.name, "HTTP");
        assert_eq!(
            attr(&s.attributes, "http.request.method").map(|v| v.as_str().into_owned()),
            Some("_OTHER".into())
        );
        assert!(attr(&s.attributes, "http.request.method_original").is_some());
    }
    let exports = p.metrics();
    let AggregatedMetrics::F64(MetricData::Histogram(hist)) =
        metric(&exports, "http.server.request.duration").data()
    else {
        panic!("the duration is a histogram");
    };
    let points: Vec<_> = hist.data_points().collect();
    assert_eq!(points.len(), 1, "one series for every unknown method");
    let attrs: Vec<KeyValue> = points[0].attributes().cloned().collect();
    assert!(
        attrs
            .iter()
            .all(|kv| kv.key.as_str() != "http.request.method_original"),
        "{attrs:?}"
    );
    assert!(attrs.contains(&KeyValue::new("http.request.method", "_OTHER")));
}

/// Function names come from the guest's name section: they are cut to the
/// value length limit like every guest string (counted).
#[test]
fn function_names_are_bounded_like_guest_strings() {
    let long = "f".repeat(300);
    let wat = format!(
        r#"(module
             (import "dylibso:observe/instrument" "enter" (func $enter (param i32)))
             (import "dylibso:observe/instrument" "exit" (func $exit (param i32)))
             (func ${long} (call $enter (i32.const 2)) (call $exit (i32.const 2)))
             (func (export "_start") (call ${long})))"#
    );
    let wasm = wat::parse_str(&wat).unwrap();
    let names = Arc::new(FunctionNames::from_wasm(&wasm));
    assert_eq!(names.name(2).len(), 300);
    let p = Pipeline::with(|b| {
        b.with_limits(Limits {
            value_length: 64,
            ..Limits::default()
        })
    });
    let mut ctx = WasiObserveCtx::builder(&p.telemetry)
        .with_function_names(names)
        .with_min_function_duration(Duration::ZERO)
        .build();
    ctx.hook_enter(2);
    ctx.hook_exit(2);
    drop(ctx);
    let spans = p.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name.len(), 64);
    assert!(p.telemetry.stats().values_truncated >= 1);
}

/// An untrusted caller's `traceparent` decides neither the trace id nor the
/// sampling: the SERVER span starts a new trace (sampled by the host's
/// sampler, though the caller said "not sampled") and links to the caller's
/// span. A trusted one is the parent, and its flag decides.
#[test]
fn an_untrusted_callers_context_is_a_link_not_the_parent() {
    use wasi_observe_host::host_spans::http::IncomingContext;
    let p = Pipeline::new();
    let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let request = |flags: &str| {
        http::Request::builder()
            .uri("/")
            .header("host", "x")
            .header(
                "traceparent",
                format!("00-{caller_trace}-{caller_span}-{flags}"),
            )
            .header("tracestate", "caller=1")
            .body(())
            .unwrap()
    };
    // Not sampled by the caller: continued, nothing is recorded.
    let span = ServerSpan::start(&p.telemetry, &request("00"), "http", local, None);
    assert_eq!(span.context().trace_id().to_string(), caller_trace);
    assert!(!span.context().is_sampled());
    drop(span);
    // Linked: a trace of its own, sampled by the host's sampler.
    let span = ServerSpan::start_with(
        &p.telemetry,
        &request("00"),
        "http",
        local,
        None,
        IncomingContext::Link,
    );
    assert_ne!(span.context().trace_id().to_string(), caller_trace);
    assert!(span.context().is_sampled());
    let own_trace = span.context().trace_id();
    drop(span);
    // Linked, with no context at all: no link.
    let bare = http::Request::builder()
        .uri("/bare")
        .header("host", "x")
        .body(())
        .unwrap();
    drop(ServerSpan::start_with(
        &p.telemetry,
        &bare,
        "http",
        local,
        None,
        IncomingContext::Link,
    ));

    let spans = p.spans();
    assert_eq!(spans.len(), 2, "the unsampled continuation is not exported");
    let linked = spans
        .iter()
        .find(|s| s.span_context.trace_id() == own_trace)
        .unwrap();
    assert_eq!(linked.parent_span_id, opentelemetry::trace::SpanId::INVALID);
    assert!(linked.span_context.trace_state().header().is_empty());
    let links = &linked.links.links;
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].span_context.trace_id().to_string(), caller_trace);
    assert_eq!(links[0].span_context.span_id().to_string(), caller_span);
    assert_eq!(links[0].span_context.trace_state().get("caller"), Some("1"));
    let other = spans
        .iter()
        .find(|s| s.span_context.trace_id() != own_trace)
        .unwrap();
    assert!(other.links.links.is_empty());

    // Trusted and sampled: a child of the caller's span.
    drop(ServerSpan::start(
        &p.telemetry,
        &request("01"),
        "http",
        local,
        None,
    ));
    let spans = p.spans();
    let child = spans
        .iter()
        .find(|s| s.span_context.trace_id().to_string() == caller_trace)
        .expect("the continued span");
    assert_eq!(child.parent_span_id.to_string(), caller_span);
    assert!(child.links.links.is_empty());
}

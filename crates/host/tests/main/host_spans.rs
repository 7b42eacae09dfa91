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

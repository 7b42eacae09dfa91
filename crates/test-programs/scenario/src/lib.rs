//! Instrumented library code, written as an application would write it with
//! `tracing`, `log` and the OpenTelemetry API, and nothing else. The guest
//! SDK's differential test runs it natively (under `tracing-opentelemetry`)
//! and inside a component (under `wasi-observe`) and compares the results.

use std::fmt;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _};
use tracing::{debug, error, field, info, info_span, instrument, trace, warn};

/// Field names whose values are `u64`s: `tracing-opentelemetry` records
/// them as text, `wasi-observe` as integers (a documented difference).
pub const U64_FIELDS: &[&str] = &["n_u64", "count"];

/// An error with a source, as applications have.
#[derive(Debug)]
pub struct PaymentError {
    source: std::io::Error,
}

impl fmt::Display for PaymentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("payment declined")
    }
}

impl std::error::Error for PaymentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Runs every case once.
pub fn run() {
    log::info!(
        target: "scenario::startup",
        phase = "boot", attempt = 1, ratio = 0.5, cold = true, big = u64::MAX, wide = i128::MIN,
        shown:% = std::net::Ipv4Addr::LOCALHOST;
        "scenario starting"
    );
    let root = info_span!(
        "root",
        otel.kind = "server",
        n_i64 = -5i64,
        n_u64 = 7u64,
        n_f64 = 2.5f64,
        flag = true,
        text = "hello",
        dbg = ?vec![1, 2],
        late = field::Empty,
    );
    let guard = root.enter();
    info!(answer = 42i64, count = 3u64, "inside root");
    siblings();
    out_of_order();
    let _ = charge(-1);
    explicit_parent();
    follows();
    special_fields();
    opentelemetry_api();
    repeated();
    root.record("late", "recorded later");
    log::warn!("a log record inside root");
    drop(guard);
    drop(root);
    explicit_root();
    log::debug!(target: "scenario::shutdown", "scenario done");
}

/// One callsite used three times: the SDK sends its constant attributes
/// (code location, target) inline the first time and shares them with the
/// host on the second; every span and event must carry them all the same.
fn repeated() {
    for i in 0..3i64 {
        info_span!("repeated", i).in_scope(|| info!(i, "again"));
    }
}

/// Spans created while another is open but not entered are siblings.
fn siblings() {
    let a = info_span!("sibling_a");
    let b = info_span!("sibling_b");
    a.in_scope(|| debug!("in a"));
    b.in_scope(|| trace!(x = 1i64, "in b"));
}

/// Enter two spans and exit them in the wrong order.
fn out_of_order() {
    let outer = info_span!("ooo_outer");
    let inner = info_span!(parent: &outer, "ooo_inner");
    let g1 = outer.enter();
    let g2 = inner.enter();
    drop(g1);
    // `inner` is still entered: it is the current span.
    info_span!("ooo_child").in_scope(|| info!("after outer exited"));
    drop(g2);
}

/// `#[instrument(err)]`: the error becomes an exception event and the
/// span's error status.
#[instrument(err)]
fn charge(amount: i64) -> Result<(), PaymentError> {
    warn!(amount, "charging");
    let e = PaymentError {
        source: std::io::Error::other("card expired"),
    };
    error!(
        reason = &e as &(dyn std::error::Error + 'static),
        "charge failed"
    );
    Err(e)
}

/// A span whose explicit parent is not the current span.
fn explicit_parent() {
    let target = info_span!("explicit_target");
    let child = info_span!(parent: &target, "explicit_child");
    child.in_scope(|| info!("in explicit child"));
}

/// `follows_from` becomes a link.
fn follows() {
    let cause = info_span!("cause");
    let effect = info_span!("effect");
    effect.follows_from(&cause);
    effect.in_scope(|| {});
}

/// The special `otel.*` fields.
fn special_fields() {
    info_span!(
        "static_name",
        otel.name = "dynamic name",
        otel.status_code = "error",
        otel.status_description = "went wrong"
    )
    .in_scope(|| {});
    info_span!("ok_span", otel.status_code = "ok").in_scope(|| {
        // Ok is final: a later error event does not change it.
        error!("ignored for the status");
    });
    let recorded = info_span!("recorded", otel.kind = "client", otel.name = field::Empty);
    recorded.record("otel.name", "renamed later");
    recorded.in_scope(|| {});
}

/// OpenTelemetry API spans inside a `tracing` span.
fn opentelemetry_api() {
    let tracer = opentelemetry::global::tracer("scenario");
    tracer.in_span("otel_op", |cx| {
        let span = cx.span();
        span.set_attribute(KeyValue::new("otel_attr", 1i64));
        span.add_event("otel_event", vec![KeyValue::new("k", "v")]);
        tracer.in_span("otel_child", |cx| {
            cx.span()
                .set_status(opentelemetry::trace::Status::error("child failed"));
        });
    });
    let mut span = tracer.start("otel_manual");
    span.set_attribute(KeyValue::new("manual", true));
    span.end();
}

/// `parent: None` starts a new trace.
fn explicit_root() {
    info_span!(parent: None, "explicit_root").in_scope(|| info!("in a new trace"));
}

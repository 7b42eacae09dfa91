//! W3C Trace Context propagation for a guest that carries context itself:
//! inject the current span into outgoing headers, extract a caller's span
//! from incoming ones.
//!
//! [`init`](crate::init) also installs the W3C propagator as OpenTelemetry's
//! global one, so `opentelemetry::global::get_text_map_propagator` works too.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;

use crate::layer::with_current_span;

/// The context of the current span: the current `tracing` span, else the
/// current OpenTelemetry context's span, else an empty context.
pub fn current_context() -> Context {
    with_current_span(|data| match data {
        Some(data) => Context::new().with_remote_span_context(data.cx.clone()),
        None => Context::current(),
    })
}

/// Writes `traceparent` (and `tracestate`) for the current span into
/// `carrier`, e.g. the headers of an outgoing request.
pub fn inject(carrier: &mut dyn Injector) {
    inject_context(&current_context(), carrier);
}

/// Writes `traceparent` (and `tracestate`) for `cx`'s span into `carrier`.
pub fn inject_context(cx: &Context, carrier: &mut dyn Injector) {
    TraceContextPropagator::new().inject_context(cx, carrier);
}

/// Reads a caller's span from `carrier` (e.g. incoming request headers): a
/// context whose span is that remote span, to pass to
/// [`OpenTelemetrySpanExt::set_parent`](crate::OpenTelemetrySpanExt::set_parent)
/// or `Tracer::start_with_context`. Missing or malformed headers give an
/// empty context.
pub fn extract(carrier: &dyn Extractor) -> Context {
    TraceContextPropagator::new().extract(carrier)
}

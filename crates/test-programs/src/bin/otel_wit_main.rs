//! A guest built against the proposal's main-branch WIT (same version,
//! `tracing.current-span-context` instead of `outer-span-context`): prints
//! what the host returns outside and inside a span it announced.

mod bindings {
    wit_bindgen::generate!({
        path: "wit-otel-main",
        world: "wasi:otel/imports",
        generate_all,
    });
}

use bindings::wasi::otel::tracing::{self as otel_tracing, SpanContext, TraceFlags};

fn main() {
    let outer = otel_tracing::current_span_context();
    println!("outer {} {}", outer.trace_id, outer.span_id);
    let span = SpanContext {
        trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
        span_id: "b7ad6b7169203331".into(),
        trace_flags: TraceFlags::SAMPLED,
        is_remote: false,
        trace_state: vec![],
    };
    otel_tracing::on_start(&span);
    let inside = otel_tracing::current_span_context();
    println!("inside {} {}", inside.trace_id, inside.span_id);
}

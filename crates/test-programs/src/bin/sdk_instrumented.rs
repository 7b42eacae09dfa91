//! The guest SDK in a component that `wasi-observe instrument` rewrites: a
//! `tracing` span started in `main`, a `tracing` span started in a function
//! called inside it, and an OpenTelemetry API span started in a function
//! called inside that. Each should hang from the function it started in
//! (not from the SDK's own functions, which are instrumented too), and
//! each function from the span it was called in.

use opentelemetry::trace::{Tracer as _, TracerProvider as _};

#[inline(never)]
fn outer_work() {
    let _inner = tracing::info_span!("sdk-inner").entered();
    tracing::info!("inside sdk-inner");
    api_work();
}

#[inline(never)]
fn api_work() {
    let tracer = wasi_observe::TracerProvider::new().tracer("sdk_instrumented");
    tracer.in_span("api-span", |_| {});
}

fn main() {
    wasi_observe::init();
    let outer = tracing::info_span!("sdk-outer").entered();
    outer_work();
    drop(outer);
    println!("done");
}

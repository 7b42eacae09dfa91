//! Host bindings generated from `wit/` (the one source of WIT for host and guests).

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "wasi:observe/observe",
    // `tracing`: the `wit-bindgen import` spans `calls` turns into spans.
    imports: { default: trappable | tracing },
    with: {
        "wasi:observe/tracer.span": crate::interfaces::tracer::GuestSpan,
        "wasi:observe/metrics.instrument": crate::interfaces::metrics::GuestInstrument,
    },
});

pub use wasi::clocks::wall_clock::Datetime;
pub use wasi::logging::logging;
pub use wasi::observe::{metrics, sdk, tracer};

//! Host bindings generated from `wit/` (the one source of WIT for host and guests).

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "wasi:observe/observe",
    // `tracing`: the `wit-bindgen import` spans `calls` turns into spans.
    // Not for the pipe: its calls are the SDK's own plumbing, made on every
    // span, and a span for each would only hide the guest's spans.
    imports: {
        "wasi-observe:pipe/pipe": trappable,
        default: trappable | tracing,
    },
    with: {
        "wasi:observe/tracer.span": crate::interfaces::tracer::GuestSpan,
        "wasi:observe/metrics.instrument": crate::interfaces::metrics::GuestInstrument,
    },
});

pub use wasi::clocks::wall_clock::Datetime;
pub use wasi::logging::logging;
pub use wasi::observe::{metrics, sdk, tracer};
pub use wasi_observe::pipe::pipe;

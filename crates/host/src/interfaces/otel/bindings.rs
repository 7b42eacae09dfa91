//! Host bindings generated from the vendored `wasi:otel@0.2.0-rc.2` WIT
//! (`wit-otel/`), kept apart from `wasi:observe`'s because the two proposals
//! pin different `wasi:clocks` versions.

wasmtime::component::bindgen!({
    path: "../../wit-otel",
    world: "wasi:otel/imports",
    imports: { default: trappable },
});

pub use wasi::clocks::wall_clock::Datetime;
pub use wasi::otel::{logs, metrics, tracing, types};

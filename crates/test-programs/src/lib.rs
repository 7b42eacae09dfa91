//! Guest programs for the host's tests. Each binary in `src/bin` is built for
//! wasm32-wasip2 (a component) by `artifacts/build.rs`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "wasi:observe/observe",
    generate_all,
});

pub use wasi::clocks::wall_clock::Datetime;
pub use wasi::logging::logging;
pub use wasi::observe::{metrics, sdk, tracer};

use tracer::{KeyValue, Value};

/// A key-value attribute.
pub fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value,
    }
}

/// A string attribute.
pub fn s(key: &str, value: &str) -> KeyValue {
    kv(key, Value::String(value.to_string()))
}

/// Start options with the given fields and the rest unset.
pub fn opts() -> tracer::StartOptions {
    tracer::StartOptions {
        new_root: false,
        span_kind: None,
        attributes: None,
        links: None,
        timestamp: None,
    }
}

/// The first command-line argument as a number, or `default`.
pub fn arg(default: u64) -> u64 {
    std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

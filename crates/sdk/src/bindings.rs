//! Guest bindings for the `wasi:observe` imports, generated from `wit/`.
//!
//! Borrowing mode: attributes and names are passed to the host as borrowed
//! slices and strings, so building a call allocates nothing beyond what the
//! instrumentation already holds.

wit_bindgen::generate!({
    path: "../../wit",
    world: "wasi:observe/observe",
    ownership: Borrowing { duplicate_if_necessary: true },
    // The program may generate bindings for the same world itself; its
    // type section must not collide with ours.
    type_section_suffix: "wasi-observe-sdk",
    generate_all,
});

pub(crate) use wasi::clocks::wall_clock::Datetime;
pub(crate) use wasi::logging::logging::Level;
pub(crate) use wasi::observe::{metrics, sdk, tracer};

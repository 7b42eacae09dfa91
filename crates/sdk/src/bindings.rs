//! Guest bindings for the pipe (`wasi-observe:pipe@0.2.0`), generated from
//! `wit/`: the only import the SDK needs.
//!
//! Borrowing mode: batches and trace-states are passed to the host as
//! borrowed slices and strings.

wit_bindgen::generate!({
    path: "../../wit",
    world: "wasi-observe:pipe/guest@0.2.0",
    ownership: Borrowing { duplicate_if_necessary: true },
    // The program may generate bindings for the same world itself; its
    // type section must not collide with ours.
    type_section_suffix: "wasi-observe-sdk",
    generate_all,
});

pub(crate) use self::wasi_observe::pipe::pipe;

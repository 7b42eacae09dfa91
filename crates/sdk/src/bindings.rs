//! Guest bindings for the pipe (`wasi-observe:pipe@0.2.2`), generated from
//! `wit/`: the only import the SDK needs, and the `flush` export the host
//! calls when an invocation returns with records held.
//!
//! The generated glue (imports and the export's entry point) is `unsafe`
//! code, allowed in this module only.
//!
//! Borrowing mode: batches and trace-states are passed to the host as
//! borrowed slices and strings.

#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../../wit",
    world: "wasi-observe:pipe/guest@0.2.2",
    ownership: Borrowing { duplicate_if_necessary: true },
    // The program may generate bindings for the same world itself; its
    // type section must not collide with ours.
    type_section_suffix: "wasi-observe-sdk",
    generate_all,
});

pub(crate) use self::wasi_observe::pipe::pipe;

/// The `flush` export: linked into every component that uses the SDK (the
/// component's world is the union of its crates' worlds).
struct Flush;

impl exports::wasi_observe::pipe::flush::Guest for Flush {
    fn flush() {
        crate::pipe::flush();
    }
}

export!(Flush);

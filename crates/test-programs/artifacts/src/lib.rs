//! Paths of the guest programs built from `crates/test-programs` for
//! wasm32-wasip2.

include!(concat!(env!("OUT_DIR"), "/programs.rs"));

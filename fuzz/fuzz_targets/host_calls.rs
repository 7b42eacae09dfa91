//! Arbitrary sequences of guest calls (tracer, span handles, logging,
//! metrics, the sdk interface) with arbitrary data and handles, on a fresh
//! store for every input. See `wasi_observe_host::fuzzing`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wasi_observe_host::fuzzing::run(data);
});

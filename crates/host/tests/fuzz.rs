//! The fuzz driver (`wasi_observe_host::fuzzing`) under proptest: arbitrary
//! call sequences with arbitrary data and handles on a store's ctx must never
//! make the host panic. The corpus of the cargo-fuzz target (`fuzz/corpus`)
//! is replayed first, then random inputs.
//!
//! `PROPTEST_CASES` sets how many random inputs run (default 2000, a few
//! seconds); see docs/reliability.md for the long runs.

use proptest::prelude::*;

/// A panic on any thread ends the process, as under libFuzzer: the pipe's
/// decode thread may decode a batch before the driver does, and a panic
/// there would otherwise pass unseen. The hook runs before the decoder's
/// own `catch_unwind` (which contains such a panic and counts it; the
/// driver also fails an input when that count is not zero).
fn abort_on_panic() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            std::process::abort();
        }));
    });
}

#[test]
fn the_fuzz_corpus_replays_without_a_panic() {
    abort_on_panic();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/host_calls");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the committed corpus") {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        wasi_observe_host::fuzzing::run(&data);
        n += 1;
    }
    assert!(n > 0, "no corpus in {}", dir.display());
    let stats = wasi_observe_host::fuzzing::telemetry().stats();
    eprintln!("replayed {n} inputs: {stats}");
    // The corpus reaches the pipe's decoder, malformed batches included.
    assert!(stats.pipe_batches_malformed > 0, "{stats}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_guest_calls_never_panic_the_host(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        abort_on_panic();
        wasi_observe_host::fuzzing::run(&data);
    }
}

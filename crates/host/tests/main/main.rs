//! Library-level integration tests: the guest programs of
//! `crates/test-programs` run in a host embedded as the crate documentation
//! shows, with in-memory exporters, and the exported spans, log records and
//! metrics are checked in detail. One test binary, a module per subject.

mod guests;
mod host_spans;
mod instrumentation;
mod pipe;
mod support;

// Every guest program must have a test named after it, in one of the
// subjects.
macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports)]
        use self::programs::$name as _;
    };
}
test_programs_artifacts::foreach_program!(assert_test_exists);

/// The tests named after guest programs, whichever subject they are in.
mod programs {
    pub(crate) use crate::guests::*;
    pub(crate) use crate::instrumentation::*;
    pub(crate) use crate::pipe::*;
    // The wasi:otel guests' tests are in tests/otel.rs.
    pub(crate) mod otel_wit {}
    pub(crate) mod otel_wit_main {}
}

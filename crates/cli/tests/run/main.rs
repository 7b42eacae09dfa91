//! End-to-end tests of `wasi-observe run`: the real binary, real guest
//! components built from source, and real OTLP receivers started here.
//! One test binary, a module per subject.

mod basics;
mod budgets;
mod instrument;
mod otel;
mod reliability;
mod support;
mod trace_calls;
mod trace_context;

//! A call-heavy guest for function-level instrumentation (`wasi-observe
//! instrument`): recursive fib, a guest span in the middle of instrumented
//! functions, and a large allocation (a `memory.grow`). It prints its
//! results, so that original and instrumented runs can be compared.
//!
//! Argument: n for fib(n) (default 20).

use test_programs::tracer;

#[inline(never)]
fn fib(n: u32) -> u64 {
    if n < 2 {
        u64::from(n)
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

/// Starts a guest span and works inside it.
#[inline(never)]
fn traced() -> u64 {
    let span = tracer::start("guest-span", None);
    let r = inside_guest_span();
    span.end(None);
    r
}

#[inline(never)]
fn inside_guest_span() -> u64 {
    fib(std::hint::black_box(5))
}

/// Allocates 4 MiB, more than the heap holds: the allocator grows memory.
#[inline(never)]
fn grow() -> usize {
    let v: Vec<u8> = Vec::with_capacity(std::hint::black_box(4 << 20));
    std::hint::black_box(&v);
    v.capacity()
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    println!("fib({n}) = {}", fib(n));
    println!("traced = {}", traced());
    println!("grown = {}", grow());
}

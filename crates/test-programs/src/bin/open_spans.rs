//! Starts N spans (argument, default 1 000 000) and never ends them.

use test_programs::{arg, tracer};

fn main() {
    let n = arg(1_000_000);
    let mut recording = 0u64;
    for _ in 0..n {
        let span = tracer::start("leak", None);
        if span.is_recording() {
            recording += 1;
        }
        std::mem::forget(span);
    }
    println!("recording {recording} of {n}");
}

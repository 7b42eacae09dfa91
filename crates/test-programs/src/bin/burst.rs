//! Starts and ends N spans (argument, default 100 000) as fast as it can.

use test_programs::tracer::{self, Value};
use test_programs::{arg, kv, opts};

fn main() {
    let n = arg(100_000);
    let root = tracer::start("burst", None);
    for i in 0..n {
        let span = tracer::start(
            "item",
            Some(&tracer::StartOptions {
                attributes: Some(vec![kv("i", Value::S64(i as i64))]),
                ..opts()
            }),
        );
        drop(span);
    }
    drop(root);
    println!("emitted {}", n + 1);
}

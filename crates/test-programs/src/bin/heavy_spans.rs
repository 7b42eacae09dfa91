//! Asks the host to keep as much as it will: N open spans (argument 1,
//! default 1 000), each given 128 attributes and never ended. With `arrays`
//! (argument 2) each attribute is an array of 1 024 empty strings (tiny
//! here, but each element costs the host a string handle); otherwise a
//! 64 KiB string. The host must stay within its store's byte budget.

use test_programs::kv;
use test_programs::tracer::{self, Value};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let arrays = args.get(2).is_some_and(|a| a == "arrays");
    let big = "x".repeat(64 * 1024);
    let attrs: Vec<_> = (0..128)
        .map(|k| {
            let value = if arrays {
                Value::StringArray(vec![String::new(); 1024])
            } else {
                Value::String(big.clone())
            };
            kv(&format!("k{k}"), value)
        })
        .collect();
    let mut recording = 0u64;
    for _ in 0..n {
        let span = tracer::start("heavy", None);
        if span.is_recording() {
            recording += 1;
        }
        span.set_attributes(&attrs);
        std::mem::forget(span);
    }
    println!("recording {recording} of {n}");
}

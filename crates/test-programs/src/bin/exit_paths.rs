//! Emits N spans, N log records and N counter increments (first argument,
//! default 10), keeps one span open throughout, then ends the way the second argument
//! says: `return`, `exit` (`std::process::exit(3)`, which wasi-libc turns
//! into `exit(err)`, code 1; the `exit_code` guest covers other codes),
//! `trap` (abort, an `unreachable` trap), `spin` (loops
//! until something stops it, after printing `spinning`), or `grow`
//! (allocates up to 1 GiB, 4 MiB at a time, then prints `grew to 1024 MiB`:
//! a memory limit below that stops it first).

use std::io::Write;

use test_programs::logging::{Level, log};
use test_programs::metrics::{self, InstrumentKind, Number};
use test_programs::{s, tracer};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let how = std::env::args().nth(2).unwrap_or_else(|| "return".into());
    let open = tracer::start("open", None);
    for i in 0..n {
        let span = tracer::start(&format!("span-{i}"), None);
        log(Level::Info, "exit-paths", &format!("log-{i}"));
        metrics::record(
            InstrumentKind::Counter,
            "exit_paths.items",
            Number::S64(1),
            &[s("how", &how)],
        );
        drop(span);
    }
    println!("emitted {n}");
    std::io::stdout().flush().unwrap();
    match how.as_str() {
        "exit" => std::process::exit(3),
        "trap" => std::process::abort(),
        "spin" => {
            println!("spinning");
            std::io::stdout().flush().unwrap();
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
                if x == u64::MAX {
                    break;
                }
            }
        }
        "grow" => {
            let mut held = Vec::new();
            for _ in 0..256 {
                held.push(std::hint::black_box(vec![1u8; 4 << 20]));
            }
            println!("grew to {} MiB", held.len() * 4);
        }
        _ => {}
    }
    // Left open on purpose: the host ends it, saying why.
    std::mem::forget(open);
}

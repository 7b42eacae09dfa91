//! Opens a span, says so on stdout, then spins until it is interrupted.

use std::io::Write;

use test_programs::logging::{Level, log};
use test_programs::tracer;

fn main() {
    let span = tracer::start("spinning", None);
    log(Level::Info, "spin", "spinning until interrupted");
    println!("spinning");
    std::io::stdout().flush().unwrap();
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
        if n == u64::MAX {
            break;
        }
    }
    drop(span);
}

//! Opens two spans, logs, then traps with both still open.

use test_programs::logging::{Level, log};
use test_programs::tracer;

fn main() {
    let outer = tracer::start("outer", None);
    let inner = tracer::start("inner", None);
    log(Level::Error, "trap", "about to trap");
    let done = tracer::start("done-before-trap", None);
    drop(done);
    std::mem::forget((outer, inner));
    std::process::abort();
}

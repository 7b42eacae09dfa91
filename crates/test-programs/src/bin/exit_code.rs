//! Leaves a span open and exits with code 3.

use test_programs::logging::{Level, log};
use test_programs::tracer;

fn main() {
    let span = tracer::start("exiting", None);
    let finished = tracer::start("finished", None);
    finished.end(None);
    log(Level::Warn, "exit", "exiting with 3");
    std::mem::forget(span);
    std::process::exit(3);
}

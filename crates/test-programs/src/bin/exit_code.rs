//! Leaves a span open and exits with code 3 (through `exit-with-code`, as
//! wasi-libc's `exit` can only say success or failure).

mod cli_exit {
    wit_bindgen::generate!({
        inline: "
            package wasi:cli@0.2.12;
            interface exit {
                exit: func(status: result);
                exit-with-code: func(status-code: u8);
            }
            world exit-world { import exit; }
        ",
    });
}

use test_programs::logging::{Level, log};
use test_programs::tracer;

fn main() {
    let span = tracer::start("exiting", None);
    let finished = tracer::start("finished", None);
    finished.end(None);
    log(Level::Warn, "exit", "exiting with 3");
    std::mem::forget(span);
    cli_exit::wasi::cli::exit::exit_with_code(3);
    unreachable!("exit-with-code returned");
}

//! Logs through `wasi:logging/logging@0.1.0-draft`, the version existing
//! components import.

mod draft {
    wit_bindgen::generate!({
        inline: "
            package wasi:logging@0.1.0-draft;
            interface logging {
                enum level { trace, debug, info, warn, error, critical }
                log: func(level: level, context: string, message: string);
            }
            world draft { import logging; }
        ",
    });
}

use draft::wasi::logging::logging::{Level, log};

fn main() {
    log(Level::Info, "draft", "hello from the draft interface");
    log(
        Level::Critical,
        "draft",
        "critical from the draft interface",
    );
}

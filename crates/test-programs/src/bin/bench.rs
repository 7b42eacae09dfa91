//! The guest side of `wasi-observe-bench`: runs one operation `n` times
//! (after `n / 10` warm-up rounds) and prints `elapsed_ns <total>`.
//!
//! Usage: `bench <mode> <n>`; modes: `floor`, `raw`, `raw5`, `tracing`,
//! `tracing-registry`, `tracing-lean`, `sdk`, `log-raw`, `log`, `log-kv`,
//! `counter`, `spans`, `open`.

use std::time::Instant;

use opentelemetry::KeyValue;
use test_programs::tracer::{self, Value};
use test_programs::{kv, logging, opts};
use tracing_subscriber::prelude::*;

mod floor {
    wit_bindgen::generate!({
        inline: "
            package wasi-observe:bench;
            interface floor { noop: func(s: string); }
            world bench { import floor; }
        ",
        world: "wasi-observe:bench/bench",
    });
    pub use self::wasi_observe::bench::floor::noop;
}

fn time(n: u64, mut op: impl FnMut()) -> u128 {
    for _ in 0..n / 10 {
        op();
    }
    let start = Instant::now();
    for _ in 0..n {
        op();
    }
    start.elapsed().as_nanos()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().expect("a mode");
    let n: u64 = args.next().and_then(|a| a.parse().ok()).expect("a count");
    let attrs = || {
        Some(vec![
            kv("a", Value::S64(1)),
            kv("b", Value::String("x".into())),
        ])
    };
    let elapsed = match mode.as_str() {
        "floor" => time(n, || floor::noop("span-name")),
        // The proposal's API used well: attributes in the start options,
        // one event, end by drop. Three calls.
        "raw" => time(n, || {
            let span = tracer::start(
                "op",
                Some(&tracer::StartOptions {
                    attributes: attrs(),
                    ..opts()
                }),
            );
            span.add_event("ev", None, None);
        }),
        // The same span as five calls: start, set-attributes, add-event,
        // end, drop.
        "raw5" => time(n, || {
            let span = tracer::start("op", None);
            span.set_attributes(&attrs().unwrap());
            span.add_event("ev", None, None);
            span.end(None);
        }),
        "tracing" => {
            wasi_observe::init();
            time(n, || {
                let span = tracing::info_span!("op", a = 1i64, b = "x");
                let _entered = span.enter();
                tracing::info!("ev");
            })
        }
        "tracing-lean" => {
            // The layer on `tracing-subscriber`'s registry, as users add it
            // to a subscriber of their own (`init()` installs a lighter
            // subscriber), without the location and target.
            let layer = wasi_observe::WasiObserveLayer::default()
                .with_location(false)
                .with_target(false);
            tracing_subscriber::registry()
                .with(wasi_observe::SignalFilter::from_host())
                .with(layer)
                .init();
            time(n, || {
                let span = tracing::info_span!("op", a = 1i64, b = "x");
                let _entered = span.enter();
                tracing::info!("ev");
            })
        }
        // The same code with `tracing-subscriber`'s registry alone: what
        // `tracing` and the registry cost in a component, before any
        // telemetry is made (nothing is recorded).
        "tracing-registry" => {
            tracing_subscriber::registry().init();
            time(n, || {
                let span = tracing::info_span!("op", a = 1i64, b = "x");
                let _entered = span.enter();
                tracing::info!("ev");
            })
        }
        // The SDK's own API (OpenTelemetry's, through the pipe): start with
        // two attributes, one event, end.
        "sdk" => {
            use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
            wasi_observe::init();
            let tracer = wasi_observe::TracerProvider::new().tracer("bench");
            time(n, || {
                let mut span = tracer
                    .span_builder("op")
                    .with_attributes([KeyValue::new("a", 1i64), KeyValue::new("b", "x")])
                    .start(&tracer);
                span.add_event("ev", vec![]);
                span.end();
            })
        }
        "log-raw" => time(n, || {
            logging::log(logging::Level::Info, "bench", "a log message")
        }),
        "log" => {
            wasi_observe::init();
            time(n, || log::info!("a log message"))
        }
        // A `log` record with two key-values.
        "log-kv" => {
            wasi_observe::init();
            time(
                n,
                || log::info!(route = "/hello", attempt = 1; "a log message"),
            )
        }
        "counter" => {
            wasi_observe::init();
            let counter = opentelemetry::global::meter("bench")
                .u64_counter("ops")
                .build();
            let attrs = [KeyValue::new("k", "v")];
            time(n, || counter.add(1, &attrs))
        }
        // Memory: n spans started and ended, or started and left open.
        "spans" => time(n, || drop(tracer::start("op", None))),
        "open" => time(n, || std::mem::forget(tracer::start("op", None))),
        other => panic!("unknown mode {other}"),
    };
    println!("elapsed_ns {elapsed}");
}

//! One run of the instrumented component (or of the original), for counting
//! instructions per instrumented call with callgrind:
//!
//! ```text
//! cargo build --release -p wasi-observe-bench --bin instrument_count
//! valgrind --tool=callgrind --toggle-collect='instrument_count::run' \
//!     target/release/instrument_count plain 22
//! valgrind --tool=callgrind --toggle-collect='instrument_count::run' \
//!     target/release/instrument_count instrumented 22
//! ```
//!
//! (instrumented Ir - plain Ir) / calls (printed) is what instrumentation
//! adds per call, free of the machine's load.

use std::sync::Arc;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use wasi_observe_host::functions::FunctionNames;
use wasi_observe_host::{Telemetry, WasiObserveCtx};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;

#[path = "../host.rs"]
mod host;
use host::Host;

#[derive(Debug, Clone, Default)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

#[inline(never)]
fn run(store: &mut Store<Host>, command: &Command) {
    command.wasi_cli_run().call_run(store).unwrap().unwrap();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "instrumented".into());
    let n: i32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(22);
    let engine = Engine::default();
    let t = Telemetry::builder()
        .with_default_service_name("bench")
        .with_span_exporter(Discard)
        .build()
        .unwrap();
    let mut linker = Linker::<Host>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    wasi_observe_host::add_to_linker(&mut linker).unwrap();
    wasi_observe_host::functions::add_recorder_to_linker(&mut linker).unwrap();
    let original = std::fs::read(test_programs_artifacts::INSTRUMENTED_COMPONENT).unwrap();
    let wasm = if mode == "plain" {
        original
    } else {
        let options = wasi_observe_instrument::Options::default();
        wasi_observe_instrument::instrument(&original, &options)
            .unwrap()
            .0
    };
    let names = Arc::new(FunctionNames::from_wasm(&wasm));
    let component = Component::new(&engine, &wasm).unwrap();
    let mut observe = WasiObserveCtx::new(&t);
    observe.set_function_names(names);
    let host = host::fib(n, observe);
    let mut store = Store::new(&engine, host);
    let command = Command::instantiate(&mut store, &component, &linker).unwrap();
    run(&mut store, &command);
    println!(
        "{mode} fib({n}): {} calls",
        store.data().observe.function_calls()
    );
    t.shutdown().unwrap();
}

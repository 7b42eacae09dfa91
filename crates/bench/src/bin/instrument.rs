//! What function-level instrumentation adds per call, on recursive fib.
//!
//! ```text
//! cargo run --release -p wasi-observe-bench --bin instrument [-- N]
//! ```
//!
//! - core module: fib(N) from WAT, plain and rewritten by
//!   `wasi-observe-instrument` (one host hook per entry and exit), with the
//!   default 100 µs span threshold and with hooks that do nothing (the
//!   floor: two host calls);
//! - component: the `instrumented` guest program (fib(N), a guest span, an
//!   allocation), plain and rewritten (in-guest recorder, flushed every 48
//!   events).
//!
//! Each figure is the best and the median of `RUNS` runs, as (instrumented -
//! plain) / calls, where calls are the function entries the host saw.
//! Telemetry goes to an exporter that discards it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use wasi_observe_host::functions::FunctionNames;
use wasi_observe_host::{Telemetry, WasiObserveCtx, WasiObserveView};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;

#[path = "../host.rs"]
mod host;
use host::Host;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RUNS: usize = 7;

const FIB_WAT: &str = r#"(module
  (func $fib (export "fib") (param i32) (result i32)
    (if (result i32) (i32.lt_u (local.get 0) (i32.const 2))
      (then (local.get 0))
      (else (i32.add (call $fib (i32.sub (local.get 0) (i32.const 1)))
                     (call $fib (i32.sub (local.get 0) (i32.const 2))))))))"#;

#[derive(Debug, Clone, Default)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

fn telemetry() -> Telemetry {
    Telemetry::builder()
        .with_default_service_name("bench")
        .with_span_exporter(Discard)
        .build()
        .unwrap()
}

struct Core {
    observe: WasiObserveCtx,
}

impl WasiObserveView for Core {
    fn observe(&mut self) -> &mut WasiObserveCtx {
        &mut self.observe
    }
}

/// Runs fib(n) once; returns the time and the calls the host saw.
fn core_run(engine: &Engine, wasm: &[u8], n: i32, hooks: Hooks, t: &Telemetry) -> (Duration, u64) {
    let module = wasmtime::Module::new(engine, wasm).unwrap();
    let mut linker = wasmtime::Linker::<Core>::new(engine);
    match hooks {
        Hooks::Real => wasi_observe_host::dylibso::add_to_linker(&mut linker, &module).unwrap(),
        Hooks::Empty => {
            for name in ["enter", "exit", "memory-grow"] {
                linker
                    .func_wrap("dylibso:observe/instrument", name, |_: i32| {})
                    .unwrap();
            }
        }
    }
    let mut observe = WasiObserveCtx::new(t);
    observe.set_function_names(Arc::new(FunctionNames::from_wasm(wasm)));
    let mut store = Store::new(engine, Core { observe });
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let fib = instance
        .get_typed_func::<i32, i32>(&mut store, "fib")
        .unwrap();
    let start = Instant::now();
    fib.call(&mut store, n).unwrap();
    let elapsed = start.elapsed();
    let calls = store.data().observe.function_calls();
    (elapsed, calls)
}

#[derive(Clone, Copy)]
enum Hooks {
    Real,
    Empty,
}

fn component_run(
    engine: &Engine,
    linker: &Linker<Host>,
    component: &Component,
    names: &Arc<FunctionNames>,
    n: i32,
    t: &Telemetry,
) -> (Duration, u64) {
    let mut observe = WasiObserveCtx::new(t);
    observe.set_function_names(names.clone());
    let host = host::fib(n, observe);
    let mut store = Store::new(engine, host);
    let command = Command::instantiate(&mut store, component, linker).unwrap();
    let start = Instant::now();
    command
        .wasi_cli_run()
        .call_run(&mut store)
        .unwrap()
        .unwrap();
    let elapsed = start.elapsed();
    (elapsed, store.data().observe.function_calls())
}

fn stats(plain: &mut [Duration], instrumented: &mut [Duration], calls: u64) -> String {
    plain.sort();
    instrumented.sort();
    let per = |i: Duration, p: Duration| {
        (i.as_nanos() as f64 - p.as_nanos() as f64) / calls.max(1) as f64
    };
    let mid = plain.len() / 2;
    format!(
        "{:>6.1} ns/call best, {:>6.1} median  (plain {:.2} ms, instrumented {:.2} ms, {} calls)",
        per(instrumented[0], plain[0]),
        per(instrumented[mid], plain[mid]),
        plain[mid].as_secs_f64() * 1e3,
        instrumented[mid].as_secs_f64() * 1e3,
        calls
    )
}

fn main() {
    let n: i32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(27);
    let engine = Engine::default();
    let t = telemetry();
    let options = wasi_observe_instrument::Options::default();

    let plain = wat::parse_str(FIB_WAT).unwrap();
    let (instrumented, _) = wasi_observe_instrument::instrument(&plain, &options).unwrap();
    let mut p = Vec::new();
    let mut real = Vec::new();
    let mut empty = Vec::new();
    let mut calls = 0;
    for _ in 0..RUNS {
        p.push(core_run(&engine, &plain, n, Hooks::Real, &t).0);
        let (d, c) = core_run(&engine, &instrumented, n, Hooks::Real, &t);
        real.push(d);
        calls = c;
        empty.push(core_run(&engine, &instrumented, n, Hooks::Empty, &t).0);
    }
    println!("fib({n}), {RUNS} runs each");
    println!(
        "core module, hooks (default 100 us threshold): {}",
        stats(&mut p, &mut real, calls)
    );
    println!(
        "core module, empty hooks (host-call floor):    {}",
        stats(&mut p, &mut empty, calls)
    );

    let mut linker = Linker::<Host>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    wasi_observe_host::add_to_linker(&mut linker).unwrap();
    wasi_observe_host::functions::add_recorder_to_linker(&mut linker).unwrap();
    let original = std::fs::read(test_programs_artifacts::INSTRUMENTED_COMPONENT).unwrap();
    let (rewritten, _) = wasi_observe_instrument::instrument(&original, &options).unwrap();
    let names = Arc::new(FunctionNames::from_wasm(&rewritten));
    let plain_c = Component::new(&engine, &original).unwrap();
    let instr_c = Component::new(&engine, &rewritten).unwrap();
    let mut p = Vec::new();
    let mut i = Vec::new();
    let mut calls = 0;
    for _ in 0..RUNS {
        p.push(component_run(&engine, &linker, &plain_c, &names, n, &t).0);
        let (d, c) = component_run(&engine, &linker, &instr_c, &names, n, &t);
        i.push(d);
        calls = c;
    }
    println!(
        "component, in-guest recorder:                  {}",
        stats(&mut p, &mut i, calls)
    );
    t.shutdown().unwrap();
}

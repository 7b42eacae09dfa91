//! What the subjects share: the host library's test support
//! (`wasi_observe_host::testing`: a host embedded as the crate documentation
//! shows, a pipeline with in-memory exporters, helpers to look at what it
//! exported), and a few helpers of these tests' own.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use opentelemetry::logs::AnyValue;
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::logs::SdkLogRecord;
use wasi_observe_host::WasiObserveCtx;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

pub(crate) use wasi_observe_host::testing::{
    InMemoryPipeline as Pipeline, Run, TestHost as Host, attr, component, engine, metric, names,
    span,
};

/// A linker with WASI, wasi:observe and the recorder.
pub(crate) fn new_linker(engine: &Engine) -> Linker<Host> {
    wasi_observe_host::testing::linker(engine)
}

/// Runs a command program of `crates/test-programs`.
pub(crate) fn run(program: &'static str, observe: WasiObserveCtx, args: &[&str]) -> Run {
    Run::command(program, observe, args)
}

/// Instantiates the command `program` in `store`, runs it to a successful
/// exit, then asks the guest for what it holds, as `wasi-observe run` does.
pub(crate) fn run_in(store: &mut Store<Host>, linker: &Linker<Host>, program: &str) {
    let instance = linker
        .instantiate(&mut *store, &component(program))
        .unwrap();
    Command::new(&mut *store, &instance)
        .unwrap()
        .wasi_cli_run()
        .call_run(&mut *store)
        .unwrap()
        .unwrap();
    wasi_observe_host::flush_guest(&mut *store, &instance).unwrap();
}

/// `name trace-id span-id` lines the guests print.
pub(crate) fn printed_ids(r: &Run) -> HashMap<String, (String, String)> {
    r.stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (name, trace, span) = (words.next()?, words.next()?, words.next()?);
            (words.next().is_none() && trace.len() == 32 && span.len() == 16)
                .then(|| (name.to_string(), (trace.to_string(), span.to_string())))
        })
        .collect()
}

/// A store's data: the guest's stdout goes to `stdout`.
pub(crate) fn host(observe: WasiObserveCtx, stdout: &MemoryOutputPipe, args: &[&str]) -> Host {
    let mut wasi = WasiCtx::builder();
    wasi.stdout(stdout.clone()).inherit_stderr().args(args);
    Host::new(wasi.build(), observe)
}

pub(crate) fn stdout_text(stdout: &MemoryOutputPipe) -> String {
    String::from_utf8(stdout.contents().to_vec()).unwrap()
}

pub(crate) fn at(seconds: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(seconds, nanos)
}

pub(crate) fn body(record: &SdkLogRecord) -> &str {
    match record.body() {
        Some(AnyValue::String(s)) => s.as_str(),
        other => panic!("log body is not a string: {other:?}"),
    }
}

pub(crate) fn has_attr(
    attrs: impl Iterator<Item = impl std::borrow::Borrow<KeyValue>>,
    kv: &KeyValue,
) -> bool {
    attrs.into_iter().any(|a| a.borrow() == kv)
}

/// A sampled remote span context with fixed ids, as an embedder would take
/// from an incoming request.
pub(crate) fn remote_parent() -> SpanContext {
    SpanContext::new(
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
        SpanId::from_hex("b7ad6b7169203331").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    )
}

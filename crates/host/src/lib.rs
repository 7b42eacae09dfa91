//! Host implementation of the [WASI Observe] proposal for [wasmtime]: Wasm
//! components emit spans (`wasi:observe/tracer`), log records
//! (`wasi:logging/logging`) and measurements (`wasi:observe/metrics`, this
//! implementation's addition), and the host ships them to OpenTelemetry
//! backends.
//!
//! Data flows one way, through one door into the pipeline:
//!
//! ```text
//! guest call -> interfaces/ (tracer, logging, metrics, sdk: convert, bound)
//!            -> scope (one store's open spans, frames, ambient parent)
//!            -> pipeline/ (Telemetry: sampler, limits, span birth and end,
//!               log records, instruments)  <- host_spans/ (SERVER, CLIENT,
//!               import and export calls), functions/ (frames, recorder, Dylibso)
//!            -> export/ (batch queues on export threads, retry)
//!            -> OTLP, console, JSON lines, the embedded store, any SDK exporter
//! ```
//!
//! # Embedding
//!
//! Build one [`Telemetry`] for the host; for every store, build a
//! [`WasiObserveCtx`] with [`WasiObserveCtx::builder`], let the store's data
//! implement [`WasiObserveView`], call [`observe_store`] once the store exists
//! (it installs the one call hook the ctx needs, chaining yours with
//! [`observe_store_with_hook`]), and link with [`add_to_linker`]:
//!
//! ```no_run
//! use wasi_observe_host::{Telemetry, WasiObserveCtx, WasiObserveView, export::Exporter};
//! use wasmtime::component::{Component, Linker, ResourceTable};
//! use wasmtime::{Engine, Store};
//! use wasmtime_wasi::p2::bindings::sync::Command;
//! use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
//!
//! struct Host {
//!     wasi: WasiCtx,
//!     table: ResourceTable,
//!     observe: WasiObserveCtx,
//! }
//!
//! impl WasiView for Host {
//!     fn ctx(&mut self) -> WasiCtxView<'_> {
//!         WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
//!     }
//! }
//!
//! impl WasiObserveView for Host {
//!     fn observe(&mut self) -> &mut WasiObserveCtx {
//!         &mut self.observe
//!     }
//! }
//!
//! fn main() -> wasmtime::Result<()> {
//!     // OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, else the console.
//!     let telemetry = Telemetry::builder()
//!         .with_default_service_name("app")
//!         .from_env(&[Exporter::Console])?
//!         .build()?;
//!
//!     let engine = Engine::default();
//!     let mut linker = Linker::<Host>::new(&engine);
//!     wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
//!     wasi_observe_host::add_to_linker(&mut linker)?;
//!
//!     let component = Component::from_file(&engine, "app.wasm")?;
//!     let observe = WasiObserveCtx::builder(&telemetry)
//!         // A pipeline's trace context (TRACEPARENT): root spans join it.
//!         .with_parent(wasi_observe_host::context_from_env())
//!         .build();
//!     let host = Host {
//!         wasi: WasiCtx::builder().inherit_stdio().build(),
//!         table: ResourceTable::new(),
//!         observe,
//!     };
//!     let mut store = Store::new(&engine, host);
//!     wasi_observe_host::observe_store(&mut store);
//!     let instance = linker.instantiate(&mut store, &component)?;
//!     let command = Command::new(&mut store, &instance)?;
//!     let result = command.wasi_cli_run().call_run(&mut store);
//!     // After every call into the guest: what the SDK holds (measurements
//!     // made outside any span) crosses now.
//!     if result.is_ok() {
//!         wasi_observe_host::flush_guest(&mut store, &instance)?;
//!     }
//!
//!     // Spans the guest left open are ended with an error status saying why.
//!     let reason = match &result {
//!         Ok(_) => "the guest returned with this span open",
//!         Err(_) => "the guest trapped with this span open",
//!     };
//!     store.data_mut().observe.end_open_spans(reason);
//!     drop(store);
//!     telemetry.shutdown()?; // exports everything
//!     let _ = result?;
//!     Ok(())
//! }
//! ```
//!
//! Instrumented components (`wasi-observe instrument`) also need
//! [`functions::add_recorder_to_linker`] and the ctx builder's
//! [`with_function_names`](WasiObserveCtxBuilder::with_function_names);
//! import-call spans need
//! [`with_call_tracing`](WasiObserveCtxBuilder::with_call_tracing) and the
//! [`CallLayer`](host_spans::calls::CallLayer); `wasi:http` hosts get
//! SERVER and CLIENT spans from [`host_spans::http`].
//!
//! # Cargo features
//!
//! - `http` (default): traced `wasi:http` (SERVER and CLIENT spans, W3C
//!   trace context, duration metrics);
//! - `store` (default): the embedded SQLite telemetry store as an exporter;
//! - `testing`: [`testing`], support for tests of hosts and guests;
//! - `fuzzing`: the fuzz driver behind `fuzz/`.
//!
//! [WASI Observe]: https://github.com/WebAssembly/wasi-observe
//! [wasmtime]: https://wasmtime.dev

#![warn(missing_docs)]

mod bindings;
mod ctx;
pub mod export;
pub mod functions;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod hooks;
pub mod host_spans;
pub mod interfaces;
pub mod pipeline;
mod scope;
#[cfg(feature = "testing")]
pub mod testing;

pub use ctx::{WasiObserve, WasiObserveCtx, WasiObserveCtxBuilder, WasiObserveView, add_to_linker};
pub use export::SpanBatchExporter;
pub use export::aggregated::AggregatedMetricExporter;
pub use hooks::{observe_store, observe_store_with_hook};
pub use host_spans::{HostSpan, PlatformSpan, context_from_env};
pub use interfaces::pipe::{flush_guest, flush_guest_async};
pub use pipeline::{Limits, StatsSnapshot, Telemetry, TelemetryBuilder};

// The modules' former places, kept so that existing embedders build.
#[doc(hidden)]
pub use functions as instrument;
#[doc(hidden)]
pub use functions::dylibso;
#[doc(hidden)]
pub use host_spans::calls;
#[cfg(feature = "http")]
#[doc(hidden)]
pub use host_spans::http;
#[doc(hidden)]
pub use interfaces::{logging, metrics, tracer};

/// Re-exported so embedders can name the OpenTelemetry types in the API
/// (span contexts for ambient parents, exporters, samplers) at the versions
/// this crate uses.
pub use {opentelemetry, opentelemetry_proto, opentelemetry_sdk};

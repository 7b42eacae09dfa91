//! Host implementation of the [WASI Observe] proposal for [wasmtime]: Wasm
//! components emit spans (`wasi:observe/tracer`), log records
//! (`wasi:logging/logging`) and measurements (`wasi:observe/metrics`, this
//! implementation's addition), and the host ships them to OpenTelemetry
//! backends.
//!
//! Data flows one way: guest call -> interface implementation ([`tracer`],
//! [`logging`], [`metrics`]) -> one [`Telemetry`] pipeline (sampling, limits,
//! batching on export threads) -> exporters (OTLP, console, OTLP/JSON lines,
//! or any OpenTelemetry SDK exporter).
//!
//! # Embedding
//!
//! Build one [`Telemetry`] for the host, give every store a
//! [`WasiObserveCtx`], let the store's data implement [`WasiObserveView`], and
//! call [`add_to_linker`]:
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
//!     let host = Host {
//!         wasi: WasiCtx::builder().inherit_stdio().build(),
//!         table: ResourceTable::new(),
//!         observe: WasiObserveCtx::new(&telemetry),
//!     };
//!     let mut store = Store::new(&engine, host);
//!     let command = Command::instantiate(&mut store, &component, &linker)?;
//!     let result = command.wasi_cli_run().call_run(&mut store);
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
//! [WASI Observe]: https://github.com/WebAssembly/wasi-observe
//! [wasmtime]: https://wasmtime.dev

#![warn(missing_docs)]

mod bindings;
pub mod calls;
mod convert;
mod ctx;
pub mod dylibso;
pub mod export;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "http")]
pub mod http;
pub mod instrument;
mod limits;
pub mod logging;
pub mod metrics;
mod platform;
mod sdk;
mod stats;
mod telemetry;
pub mod tracer;

pub use ctx::{WasiObserve, WasiObserveCtx, WasiObserveView, add_to_linker};
pub use limits::Limits;
pub use platform::{PlatformSpan, context_from_env};
pub use stats::StatsSnapshot;
pub use telemetry::{Telemetry, TelemetryBuilder};

/// Re-exported so embedders can name the OpenTelemetry types in the API
/// (span contexts for ambient parents, exporters, samplers) at the versions
/// this crate uses.
pub use {opentelemetry, opentelemetry_sdk};

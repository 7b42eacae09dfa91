//! The WIT interfaces guests call, each a thin implementation that converts
//! and bounds what the guest passes (through [`values`] and the pipeline's
//! limits) and hands it to the store's span scope or the pipeline.
//!
//! - [`tracer`]: `wasi:observe/tracer`, exactly as proposed;
//! - [`logging`]: `wasi:logging/logging` (and `@0.1.0-draft`);
//! - [`metrics`]: `wasi:observe/metrics`, our addition;
//! - `sdk`: `wasi:observe/sdk`, our addition for guest SDKs (explicit
//!   parents, fewer crossings; `wit/sdk.wit` says why);
//! - `pipe`: `wasi-observe:pipe@0.2.2`, our batched pipe for guest SDKs
//!   (records encoded in guest memory, decoded off the guest's thread);
//! - [`otel`]: `wasi:otel@0.2.0-rc.2`, the proposal that grew out of WASI
//!   Observe, for components built with its guest SDKs.

pub mod logging;
pub mod metrics;
pub mod otel;
pub(crate) mod pipe;
mod sdk;
pub mod tracer;
pub(crate) mod values;

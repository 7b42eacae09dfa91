//! `wasi:otel@0.2.0-rc.2`: the host side of the [wasi:otel] proposal, so that
//! components written for it (Spin's and wasmCloud's guest SDKs, or anything
//! generated from its WIT) run here unchanged, into the same pipeline as
//! `wasi:observe`: the same exporters, limits, store and loss counters.
//!
//! wasi:otel guests run an OpenTelemetry SDK themselves and hand the host
//! finished telemetry: a span at its end (`tracing.on-end`, with
//! `on-start` announcing it), each log record (`logs.on-emit`), and metrics
//! already aggregated (`metrics.export`). The host
//! - validates and bounds everything (see [`values`]): bad input is dropped,
//!   cut or repaired and counted in the [`StatsSnapshot`](crate::StatsSnapshot)
//!   counters, never a trap;
//! - tells the guest where its spans hang (`outer-span-context`, and
//!   `current-span-context` of the proposal's main branch): the innermost
//!   guest span it knows to be open, else the invocation's ambient context
//!   (the SERVER span under `serve`, `TRACEPARENT` under `run`);
//! - keeps the spans announced by `on-start` on the store's open-span stack,
//!   so host-made spans (an outgoing request's CLIENT span, `--trace-calls`
//!   frames) nest under the guest's innermost open span, and a span never
//!   ended is exported with an error status when the instance ends.
//!
//! Every call into the pipeline's internals is in [`pipeline_glue`].
//!
//! [wasi:otel]: https://github.com/WebAssembly/wasi-otel

mod bindings;
mod logs;
pub mod metrics;
mod tracing;
pub(crate) mod values;

use wasmtime::component::Linker;

use crate::ctx::{WasiObserve, WasiObserveCtx, WasiObserveView};

/// The linker instance name of the tracing interface, as published guests
/// import it.
const TRACING: &str = "wasi:otel/tracing@0.2.0-rc.2";
/// The linker instance name of the types interface.
const TYPES: &str = "wasi:otel/types@0.2.0-rc.2";

/// Adds `wasi:otel/{types,tracing,logs,metrics}@0.2.0-rc.2` to `linker`,
/// with `tracing` serving both `outer-span-context` (rc.2 as published) and
/// `current-span-context` (the same version on the proposal's main branch).
pub(crate) fn add_to_linker<T: WasiObserveView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    fn get<T: WasiObserveView>(t: &mut T) -> &mut WasiObserveCtx {
        t.observe()
    }
    bindings::tracing::add_to_linker::<T, WasiObserve>(linker, get)?;
    bindings::logs::add_to_linker::<T, WasiObserve>(linker, get)?;
    bindings::metrics::add_to_linker::<T, WasiObserve>(linker, get)?;
    let mut root = linker.root();
    // `types` has types only: an empty instance satisfies the import.
    root.instance(TYPES)?;
    // The same instance reopened: one function more, under its other name.
    let mut tracing_instance = root.instance(TRACING)?;
    tracing_instance.func_wrap(
        "current-span-context",
        |mut store, (): ()| -> wasmtime::Result<(bindings::tracing::SpanContext,)> {
            Ok((tracing::span_context_for_guest(store.data_mut().observe()),))
        },
    )?;
    Ok(())
}

/// What wasi:otel needs of the pipeline and the store's scope, in one place:
/// thin names over their doors ([`crate::pipeline::finished`] and
/// [`SpanScope`](crate::scope::SpanScope)'s foreign spans).
pub(crate) mod pipeline_glue {
    use opentelemetry::InstrumentationScope;
    use opentelemetry::trace::SpanContext;
    use opentelemetry_sdk::logs::SdkLogger;
    use opentelemetry_sdk::trace::SpanData;

    use crate::ctx::WasiObserveCtx;
    use crate::export::aggregated::GuestMetrics;
    use crate::pipeline::Telemetry;
    use crate::pipeline::limits::Checker;
    use crate::pipeline::stats::Stats;

    pub(crate) fn checker(t: &Telemetry) -> Checker<'_> {
        t.checker()
    }

    pub(crate) fn stats(t: &Telemetry) -> &Stats {
        t.counters()
    }

    pub(crate) fn enabled(t: &Telemetry) -> bool {
        t.is_enabled()
    }

    pub(crate) fn exports_spans(t: &Telemetry) -> bool {
        t.signals().traces
    }

    pub(crate) fn push_span(t: &Telemetry, data: SpanData) {
        t.export_finished_span(data, None);
    }

    pub(crate) fn logger(t: &Telemetry, scope: Option<InstrumentationScope>) -> Option<SdkLogger> {
        t.logger_for(scope)
    }

    pub(crate) fn log_emitted(t: &Telemetry) {
        t.log_emitted();
    }

    pub(crate) fn resource(t: &Telemetry) -> &opentelemetry_sdk::Resource {
        t.resource()
    }

    pub(crate) fn hand_off_metrics(t: &Telemetry, metrics: GuestMetrics) -> bool {
        t.export_guest_metrics(metrics)
    }

    pub(crate) fn metrics_configured(t: &Telemetry) -> bool {
        t.exports_any_metrics()
    }

    pub(crate) fn exports_metrics(t: &Telemetry) -> bool {
        t.exports_guest_metrics()
    }

    pub(crate) fn ambient(ctx: &WasiObserveCtx) -> Option<&SpanContext> {
        ctx.scope.ambient.as_ref()
    }

    /// The innermost span the host knows to be open in the store (guest
    /// spans of either interface, function frames), else the ambient parent.
    pub(crate) fn innermost(ctx: &mut WasiObserveCtx) -> Option<SpanContext> {
        ctx.scope.implicit_parent()
    }

    pub(crate) fn open_limit_reached(ctx: &mut WasiObserveCtx) -> bool {
        ctx.scope.open_limit_reached()
    }

    pub(crate) fn is_open(ctx: &WasiObserveCtx, cx: &SpanContext) -> bool {
        ctx.scope.is_open(cx)
    }

    pub(crate) fn push_open(
        ctx: &mut WasiObserveCtx,
        cx: SpanContext,
        parent: Option<&SpanContext>,
        unended_name: Option<String>,
    ) {
        ctx.scope.open_foreign(cx, parent, unended_name);
    }

    /// Takes an ended span off the store's stack; false if it was not open
    /// and cannot be a span opened untracked past the limit.
    pub(crate) fn pop_open(ctx: &mut WasiObserveCtx, cx: &SpanContext) -> bool {
        ctx.scope.close_foreign(cx) || ctx.scope.untracked_ended()
    }
}

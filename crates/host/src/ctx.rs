//! Per-store state: the spans a guest holds, its ambient parent, and the
//! linker entry point.

use opentelemetry::trace::SpanContext;
use slab::Slab;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

use crate::metrics::Instrument;
use crate::telemetry::Telemetry;
use crate::tracer::SpanSlot;

/// The state one store keeps for `wasi:observe`: its spans (the host holds
/// span state for guests, as the proposal says), which of them are open, and
/// the ambient parent of the guest's root spans.
///
/// Dropping the ctx ends the spans the guest left open, with an error status;
/// call [`end_open_spans`](Self::end_open_spans) first to give a better reason
/// (the guest returned, trapped, was interrupted).
pub struct WasiObserveCtx {
    pub(crate) telemetry: Telemetry,
    pub(crate) spans: Slab<SpanSlot>,
    /// Keys of open spans, in the order they started: the last is the parent
    /// of the next span.
    pub(crate) open: Vec<u32>,
    pub(crate) ambient: Option<SpanContext>,
    pub(crate) instruments: Slab<Arc<Instrument>>,
    /// Attribute sets from `wasi:observe/sdk`'s `share-attributes`.
    pub(crate) shared: Vec<Arc<[opentelemetry::KeyValue]>>,
    /// Bytes the shared sets hold (bounded).
    pub(crate) shared_bytes: usize,
    /// Function frames of instrumented guests.
    pub(crate) functions: crate::instrument::Functions,
}

impl WasiObserveCtx {
    /// A fresh ctx for one store, feeding `telemetry`.
    pub fn new(telemetry: &Telemetry) -> Self {
        WasiObserveCtx {
            telemetry: telemetry.clone(),
            spans: Slab::new(),
            open: Vec::new(),
            ambient: None,
            instruments: Slab::new(),
            shared: Vec::new(),
            shared_bytes: 0,
            functions: Default::default(),
        }
    }

    /// Sets the ambient parent: the parent of spans the guest starts while it
    /// has no open span (a request span, or a remote context).
    pub fn with_parent(mut self, parent: SpanContext) -> Self {
        self.set_parent(Some(parent));
        self
    }

    /// Replaces the ambient parent (`None`: guest root spans start traces).
    pub fn set_parent(&mut self, parent: Option<SpanContext>) {
        self.ambient = parent.filter(SpanContext::is_valid);
    }

    /// The context a host operation made on the guest's behalf should be
    /// parented to: the guest's innermost open span, else the ambient parent.
    pub fn current_span_context(&self) -> Option<SpanContext> {
        self.open
            .last()
            .and_then(|&key| self.spans.get(key as usize))
            .map(|slot| slot.context().clone())
            .filter(SpanContext::is_valid)
            .or_else(|| self.ambient.clone())
    }

    /// The parent of a span or log record the guest makes now without
    /// naming one: the innermost open span, function frames included (such a
    /// frame is then kept, so the child is never orphaned).
    pub(crate) fn implicit_parent(&mut self) -> Option<SpanContext> {
        self.innermost_function()
            .or_else(|| self.current_span_context())
    }

    /// The pipeline this store feeds.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Number of spans the guest has started and not ended.
    pub fn open_spans(&self) -> usize {
        self.open.len()
    }

    /// Ends every open span, innermost first, with an error status whose
    /// description is `reason`, and exports them; function frames (of
    /// instrumented guests) too. Returns how many it ended.
    pub fn end_open_spans(&mut self, reason: &str) -> usize {
        // One end time for all, so that every span still contains its
        // children.
        let end = std::time::SystemTime::now();
        let functions = self.end_open_functions(reason, end);
        let keys = std::mem::take(&mut self.open);
        let n = keys.len() + functions;
        for key in keys.into_iter().rev() {
            if let Some(slot) = self.spans.get_mut(key as usize)
                && let Some((cx, record)) = slot.end()
                && let Some(mut record) = record
            {
                record.status = opentelemetry::trace::Status::error(reason.to_string());
                record.export(cx, end, &self.telemetry);
            }
        }
        n
    }
}

impl Drop for WasiObserveCtx {
    fn drop(&mut self) {
        self.end_open_spans("span still open when its store was dropped");
    }
}

impl std::fmt::Debug for WasiObserveCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiObserveCtx")
            .field("open_spans", &self.open.len())
            .field("ambient", &self.ambient)
            .finish_non_exhaustive()
    }
}

/// Implemented by a store's data to hand out its [`WasiObserveCtx`].
pub trait WasiObserveView: Send {
    /// The store's ctx.
    fn observe(&mut self) -> &mut WasiObserveCtx;
}

impl<T: ?Sized + WasiObserveView> WasiObserveView for &mut T {
    fn observe(&mut self) -> &mut WasiObserveCtx {
        T::observe(self)
    }
}

impl WasiObserveView for WasiObserveCtx {
    fn observe(&mut self) -> &mut WasiObserveCtx {
        self
    }
}

/// The [`HasData`] marker the generated `add_to_linker` functions take.
pub struct WasiObserve;

impl HasData for WasiObserve {
    type Data<'a> = &'a mut WasiObserveCtx;
}

/// Adds `wasi:observe/tracer`, `wasi:observe/metrics`, `wasi:observe/sdk` and
/// `wasi:logging/logging`
/// (unversioned, as the proposal names it, and `@0.1.0-draft`, as existing
/// components import it) to `linker`.
///
/// Components built against the proposal also import the `datetime` type from
/// `wasi:clocks/wall-clock@0.2.x`; `wasmtime_wasi::p2::add_to_linker_sync` (or
/// `_async`) provides it.
pub fn add_to_linker<T: WasiObserveView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    use crate::bindings::{logging, metrics, sdk, tracer};
    fn get<T: WasiObserveView>(t: &mut T) -> &mut WasiObserveCtx {
        t.observe()
    }
    tracer::add_to_linker::<T, WasiObserve>(linker, get)?;
    metrics::add_to_linker::<T, WasiObserve>(linker, get)?;
    sdk::add_to_linker::<T, WasiObserve>(linker, get)?;
    logging::add_to_linker::<T, WasiObserve>(linker, get)?;
    crate::logging::add_draft_to_linker(linker)?;
    Ok(())
}

//! Per-store state ([`WasiObserveCtx`] and its builder), the view a store's
//! data implements, and the linker entry point.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::SpanContext;
use slab::Slab;
use wasmtime::component::{HasData, Linker};

use crate::functions::FunctionNames;
use crate::host_spans::calls::ImportNames;
use crate::pipeline::Telemetry;
use crate::pipeline::guest::PipeDecoder;
use crate::pipeline::instruments::Instrument;
use crate::scope::SpanScope;

/// The state one store keeps for observation: its span scope (the spans its
/// guest holds, which are open, its function frames, the ambient parent of
/// its root spans), its metric instrument handles and shared attribute sets,
/// and what its call hook traces.
///
/// Dropping the ctx ends the spans the guest left open, with an error status;
/// call [`end_open_spans`](Self::end_open_spans) first to give a better reason
/// (the guest returned, trapped, was interrupted).
pub struct WasiObserveCtx {
    pub(crate) scope: SpanScope,
    pub(crate) instruments: Slab<Arc<Instrument>>,
    /// Attribute sets from `wasi:observe/sdk`'s `share-attributes`.
    pub(crate) shared: Vec<Arc<[KeyValue]>>,
    /// Bytes the shared sets hold (bounded).
    pub(crate) shared_bytes: usize,
    /// The imports of the store's component, when its import calls are
    /// traced (see [`crate::observe_store`]).
    call_tracing: Option<Arc<ImportNames>>,
    /// The store's end of `wasi-observe:pipe`, made by its first batch.
    pub(crate) pipe: Option<Arc<PipeDecoder>>,
    /// The guest holds records (it called `hold`) that no batch has carried
    /// since: [`crate::flush_guest`] asks for them.
    pub(crate) held: bool,
    /// The guest's environment variables, when the embedder gave them: the
    /// pipe hands the one an SDK reads at start-up over with its
    /// configuration.
    pub(crate) guest_environment: Option<Arc<[(String, String)]>>,
    /// The pipe's configuration says the host reads `EventLog` records.
    pub(crate) event_log_records: bool,
    /// A copy of every batch the guest hands over, for tests that read
    /// what crossed.
    #[cfg(feature = "testing")]
    pub(crate) batch_tap: Option<Arc<std::sync::Mutex<Vec<Vec<u8>>>>>,
}

impl WasiObserveCtx {
    /// A fresh ctx for one store, feeding `telemetry`, with the defaults
    /// (see [`builder`](Self::builder) for the rest).
    pub fn new(telemetry: &Telemetry) -> Self {
        WasiObserveCtx {
            scope: SpanScope::new(telemetry.clone()),
            instruments: Slab::new(),
            shared: Vec::new(),
            shared_bytes: 0,
            call_tracing: None,
            pipe: None,
            held: false,
            guest_environment: None,
            event_log_records: true,
            #[cfg(feature = "testing")]
            batch_tap: None,
        }
    }

    /// Starts building a ctx for one store, feeding `telemetry`.
    pub fn builder(telemetry: &Telemetry) -> WasiObserveCtxBuilder {
        WasiObserveCtxBuilder {
            ctx: WasiObserveCtx::new(telemetry),
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
        self.scope.set_ambient(parent);
    }

    /// The context a host operation made on the guest's behalf should be
    /// parented to: the guest's innermost open span, else the ambient parent.
    pub fn current_span_context(&self) -> Option<SpanContext> {
        self.scope.current_span_context()
    }

    /// The pipeline this store feeds.
    pub fn telemetry(&self) -> &Telemetry {
        self.scope.telemetry()
    }

    /// Number of spans the guest has started and not ended.
    pub fn open_spans(&self) -> usize {
        self.scope.open_spans()
    }

    /// Bytes this store holds for its guest (open spans, named frames and
    /// their tags, shared attribute sets), bounded by
    /// [`Limits::store_bytes`](crate::Limits::store_bytes).
    pub fn held_bytes(&self) -> usize {
        self.scope.budget.used
    }

    /// Ends every open span, innermost first, with an error status whose
    /// description is `reason`, and exports them; function frames (of
    /// instrumented guests) too. Returns how many it ended.
    ///
    /// Spans a pipe guest started in batches already submitted are exported
    /// the same way by the decode thread, after those batches; for the rest,
    /// stand-ins (name, start, error status). What the guest had recorded
    /// and not yet submitted is lost (see docs/reliability.md).
    pub fn end_open_spans(&mut self, reason: &str) -> usize {
        // One end time for all, so that every span still contains its
        // children.
        let end = std::time::SystemTime::now();
        let (n, stand_ins) = self.scope.end_open(reason, end);
        match &self.pipe {
            Some(pipe) => pipe.end(reason, end, stand_ins),
            None => {
                for (cx, record) in stand_ins {
                    self.scope.telemetry().end_span(cx, record, end);
                }
            }
        }
        n
    }

    /// Names the function ids this store's guest reports (see
    /// [`FunctionNames::from_wasm`]).
    pub fn set_function_names(&mut self, names: Arc<FunctionNames>) {
        self.scope.set_function_names(names);
    }

    /// Calls shorter than `min` are not spans (unless a kept span or a guest
    /// span is below them, or they grew memory). Zero keeps every call.
    pub fn set_min_function_duration(&mut self, min: Duration) {
        self.scope.set_min_function_duration(min);
    }

    /// Traces the store's import calls as spans (`Some`: the names of its
    /// component's imports), once [`crate::observe_store`] installs the
    /// store's call hook.
    pub fn set_call_tracing(&mut self, imports: Option<Arc<ImportNames>>) {
        self.call_tracing = imports;
    }

    /// The imports whose calls are traced, if call tracing is on.
    pub(crate) fn call_tracing(&self) -> Option<&Arc<ImportNames>> {
        self.call_tracing.as_ref()
    }

    /// Whether the guest is a component whose recorder flushes events.
    pub(crate) fn has_recorder(&self) -> bool {
        self.scope.has_recorder()
    }

    /// Function frames open now.
    pub fn open_functions(&self) -> usize {
        self.scope.open_functions()
    }

    /// Function entries this store has reported (kept as spans or not).
    pub fn function_calls(&self) -> u64 {
        self.scope.function_calls()
    }

    /// Hook of instrumented core modules: a function was entered now.
    pub fn hook_enter(&mut self, id: u32) {
        self.scope.hook_enter(id);
    }

    /// Hook: a function exited now.
    pub fn hook_exit(&mut self, id: u32) {
        self.scope.hook_exit(id);
    }

    /// Hook: the innermost function asked `memory.grow` for `pages` pages.
    pub fn hook_memory_grow(&mut self, pages: u32) {
        self.scope.hook_memory_grow(pages);
    }

    /// One flush of an instrumented component's recorder (see
    /// [`crate::functions`]).
    pub fn recorder_flush(&mut self, words: &[u64]) {
        self.scope.recorder_flush(words);
    }

    /// Tells the recorder timing that the guest resumed now, after a host
    /// call: the next batch's events happened after this (the call hook of
    /// [`crate::observe_store`] calls it on every host return).
    pub fn note_guest_resumed(&mut self) {
        self.scope.note_guest_resumed();
    }
}

impl Drop for WasiObserveCtx {
    fn drop(&mut self) {
        if self.held {
            crate::interfaces::pipe::ended_holding(self.scope.telemetry());
        }
        self.end_open_spans("span still open when its store was dropped");
    }
}

impl std::fmt::Debug for WasiObserveCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasiObserveCtx")
            .field("open_spans", &self.scope.open_spans())
            .field("ambient", &self.scope.ambient)
            .finish_non_exhaustive()
    }
}

/// Builds a [`WasiObserveCtx`] for one store, as
/// `WasiObserveCtx::builder(&telemetry).with_parent(cx).build()`.
pub struct WasiObserveCtxBuilder {
    ctx: WasiObserveCtx,
}

impl WasiObserveCtxBuilder {
    /// The ambient parent: the parent of the guest's root spans (a request
    /// span, an export span, a remote context). An invalid context is none.
    pub fn with_parent(mut self, parent: Option<SpanContext>) -> Self {
        self.ctx.set_parent(parent);
        self
    }

    /// The names of the function ids an instrumented guest reports.
    pub fn with_function_names(mut self, names: Arc<FunctionNames>) -> Self {
        self.ctx.set_function_names(names);
        self
    }

    /// Calls shorter than `min` are not spans (default
    /// [`DEFAULT_MIN_DURATION`](crate::functions::DEFAULT_MIN_DURATION)).
    pub fn with_min_function_duration(mut self, min: Duration) -> Self {
        self.ctx.set_min_function_duration(min);
        self
    }

    /// Traces the store's import calls (`imports`: its component's, from
    /// [`ImportNames::of`]); needs [`crate::observe_store`] and the
    /// [`CallLayer`](crate::host_spans::calls::CallLayer).
    pub fn with_call_tracing(mut self, imports: Arc<ImportNames>) -> Self {
        self.ctx.set_call_tracing(Some(imports));
        self
    }

    /// The environment variables the store's guest has (as given to its
    /// `WasiCtx`). The pipe hands an SDK the variable it reads at start-up
    /// (`RUST_LOG`) with its configuration, which saves a fresh instance a
    /// host call that copies its whole environment; without them, the SDK
    /// reads its environment itself.
    pub fn with_guest_environment(mut self, vars: Arc<[(String, String)]>) -> Self {
        self.ctx.guest_environment = Some(vars);
        self
    }

    /// Tells the guest that the host does not read `EventLog` records, as a
    /// host from before them (pipe 0.2.1) does: the SDK then sends an event
    /// and its log record apart. For testing that guests still serve such
    /// hosts.
    #[cfg(feature = "testing")]
    pub fn without_event_log_records(mut self) -> Self {
        self.ctx.event_log_records = false;
        self
    }

    /// Keeps a copy of every batch the guest hands over in `tap`, for tests
    /// that read what crossed (`wasi_observe_wire::decode`).
    #[cfg(feature = "testing")]
    pub fn with_batch_tap(mut self, tap: Arc<std::sync::Mutex<Vec<Vec<u8>>>>) -> Self {
        self.ctx.batch_tap = Some(tap);
        self
    }

    /// The ctx.
    pub fn build(self) -> WasiObserveCtx {
        self.ctx
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

/// Adds `wasi:observe/tracer`, `wasi:observe/metrics`, `wasi:observe/sdk`,
/// `wasi-observe:pipe/pipe@0.2.2` (also for components built against
/// `@0.2.0` and `@0.2.1`),
/// `wasi:logging/logging` (unversioned, as the proposal names it, and
/// `@0.1.0-draft`, as existing components import it) and
/// `wasi:otel@0.2.0-rc.2` ([`interfaces::otel`](crate::interfaces::otel))
/// to `linker`.
/// Instrumented components also need
/// [`add_recorder_to_linker`](crate::functions::add_recorder_to_linker).
///
/// Components built against the proposal also import the `datetime` type from
/// `wasi:clocks/wall-clock@0.2.x`; `wasmtime_wasi::p2::add_to_linker_sync` (or
/// `_async`) provides it.
pub fn add_to_linker<T: WasiObserveView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    use crate::bindings::{logging, metrics, pipe, sdk, tracer};
    fn get<T: WasiObserveView>(t: &mut T) -> &mut WasiObserveCtx {
        t.observe()
    }
    tracer::add_to_linker::<T, WasiObserve>(linker, get)?;
    metrics::add_to_linker::<T, WasiObserve>(linker, get)?;
    sdk::add_to_linker::<T, WasiObserve>(linker, get)?;
    pipe::add_to_linker::<T, WasiObserve>(linker, get)?;
    logging::add_to_linker::<T, WasiObserve>(linker, get)?;
    crate::interfaces::logging::add_draft_to_linker(linker)?;
    crate::interfaces::otel::add_to_linker(linker)?;
    Ok(())
}

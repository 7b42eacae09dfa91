//! Function-level spans: the host side of `wasi-observe instrument`, of
//! Dylibso-instrumented modules (see [`dylibso`](crate::dylibso)), and of the
//! recorders inside instrumented components.
//!
//! Every entered function pushes a small frame on a shadow stack; no span
//! exists yet. When a function exits, its frame becomes a span only if it
//! lasted at least the minimum duration, ends with an error, holds guest data
//! (a Dylibso named span, tags, memory grows), or must be kept because
//! something hangs below it: a kept frame, a guest span, a log record or an
//! outgoing HTTP request (so a function that logs is always a span). A kept
//! frame gets a span id and its parent then, and so does every ancestor that
//! lacked one: a kept child is never orphaned. Short calls therefore cost a
//! push and a pop, not a span.
//!
//! Function spans share the store's tracer state: a guest span started inside
//! a function is that function's child, and a function called inside a guest
//! span is the guest span's child. On a trap the host ends every open frame
//! with an error status, innermost first, so the tree stays balanced.
//!
//! Hostile input is never trapped. Counted in `invalid_input`: an exit with
//! no frame open, an exit whose id matches none of the innermost 256 frames
//! (ignored; one that matches a frame below the top ends the frames above it
//! with the error "unwound without an exit"), a memory grow or tags with no
//! frame open (ignored), and malformed recorder words. Frames beyond
//! [`MAX_DEPTH`] are not recorded and are counted in
//! `spans_dropped_open_limit`, and so is every frame entered above a refused
//! one, so exits stay matched in order. Frames holding guest data are bounded
//! by the open-span limit, as guest spans: grows and tags beyond it (or on a
//! refused frame) are counted in `events_dropped` and `attributes_dropped`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, Status, TraceFlags, TraceState};
use opentelemetry_sdk::trace::IdGenerator as _;
use wasi_observe_instrument::{MAX_EVENT_VALUE, SLOT_BITS, SLOTS_PER_WORD};
use wasmtime::component::Linker;

use crate::ctx::{WasiObserveCtx, WasiObserveView};
use crate::stats::Stats;
use crate::tracer::SpanRecord;

pub use wasi_observe_instrument::{FUNCTIONS_SECTION, HOOKS_MODULE, RECORDER_IMPORT};

/// Deepest shadow stack kept per store; deeper frames are counted and not
/// recorded (recursion that deep would make an unreadable trace anyway).
pub const MAX_DEPTH: usize = 1 << 16;

/// How far down the stack an exit with an unexpected id looks for its frame
/// (frames above it were unwound by an exception the module did not catch
/// and rethrow, as modules instrumented elsewhere may do).
const RESYNC_DEPTH: usize = 256;

/// The default of [`WasiObserveCtx::set_min_function_duration`]: a call
/// shorter than this is not a span unless something below it is kept. 100 µs
/// keeps traces of call-heavy programs readable (fib(25) gives a handful of
/// spans, not 250 000) while showing where time goes.
pub const DEFAULT_MIN_DURATION: Duration = Duration::from_micros(100);

/// Names of the function ids a store reports, built once per module or
/// component and shared by its stores.
#[derive(Clone, Debug, Default)]
pub struct FunctionNames {
    by_id: HashMap<u32, Arc<str>>,
}

impl FunctionNames {
    /// Names from an instrumented core module's name section (ids are
    /// function indices), or from an instrumented component's function
    /// table; demangled. Empty for a guest that is not instrumented (a core
    /// module without the hooks import keeps its names unread: demangling
    /// them all would only slow its start).
    pub fn from_wasm(wasm: &[u8]) -> Self {
        let by_id = if wasmparser::Parser::is_component(wasm) {
            wasi_observe_instrument::names::component_function_names(wasm)
                .into_iter()
                .enumerate()
                .map(|(i, n)| (i as u32, Arc::from(n)))
                .collect()
        } else if imports_hooks(wasm) {
            wasi_observe_instrument::names::module_function_names(wasm)
                .into_iter()
                .map(|(i, n)| (i, Arc::from(n)))
                .collect()
        } else {
            HashMap::new()
        };
        FunctionNames { by_id }
    }

    /// The name of `id` (wasmtime's `wasm-function[N]` form if it has none).
    pub fn name(&self, id: u32) -> String {
        match self.by_id.get(&id) {
            Some(n) => n.to_string(),
            None => wasi_observe_instrument::names::unnamed(id),
        }
    }

    /// Number of named ids.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no id has a name.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Whether a core module imports the function hooks ([`HOOKS_MODULE`], or
/// their older `dylibso_observe::instrument_*` names).
fn imports_hooks(wasm: &[u8]) -> bool {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(wasmparser::Payload::ImportSection(reader)) => {
                return reader.into_imports().any(|import| {
                    import.is_ok_and(|i| {
                        i.module == HOOKS_MODULE
                            || (i.module == crate::dylibso::LEGACY_MODULE
                                && i.name.starts_with("instrument_"))
                    })
                });
            }
            // Imports come before functions: none were seen.
            Ok(wasmparser::Payload::FunctionSection(_) | wasmparser::Payload::End(_)) | Err(_) => {
                return false;
            }
            _ => {}
        }
    }
    false
}

/// A span identity given to a frame that will be exported, with its parent
/// as it was when the identity was made: the frame is exported under that
/// parent even if the guest span it named is gone by the frame's end (its
/// slab key may then name another span).
struct Ident {
    cx: SpanContext,
    parent: Option<SpanContext>,
}

/// What few frames carry besides their timing.
#[derive(Default)]
struct Extra {
    /// A span named by the guest (Dylibso's `span-enter`), not a function.
    name: Option<String>,
    attributes: Vec<KeyValue>,
    /// `memory.grow` requests: when, and how many pages.
    grows: Vec<(u64, u32)>,
}

struct Frame {
    id: u32,
    /// Raw clock reading (see [`clock`]).
    start: u64,
    /// Boxed: few frames get one, and the push of the rest stays small.
    ident: Option<Box<Ident>>,
    /// Guest spans open when the frame was entered, and the innermost.
    guest_depth: u32,
    guest_parent: u32,
    extra: Option<Box<Extra>>,
}

const NO_SPAN: u32 = u32::MAX;

/// The clock of function frames: the CPU's time-stamp counter where it is
/// invariant (a read costs about 10 ns here, against 40 ns for
/// `Instant::now`, and a call needs two), calibrated against the monotonic
/// clock the first time it is used (at most 200 ms, once per process); the
/// monotonic clock elsewhere.
fn clock() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// One store's function frames.
pub(crate) struct Functions {
    names: Arc<FunctionNames>,
    min_duration: u64,
    frames: Vec<Frame>,
    /// Frames refused (beyond `MAX_DEPTH`, or named beyond the open-span
    /// limit) and those entered above them: not recorded, exits matched in
    /// order.
    overflow: u64,
    /// Function entries seen (for benchmarks and reports).
    calls: u64,
    /// A raw clock reading and the wall time at the same moment, taken
    /// when the first frame is entered.
    epoch: Option<(u64, SystemTime)>,
    /// When the previous recorder flush returned (the start of the time the
    /// next batch's events share).
    last_flush: Option<u64>,
    /// The minimum duration in raw clock ticks (computed when first needed:
    /// the clock is calibrated on its first use).
    min_ticks: Option<u64>,
    /// High bits of the next recorder event's value (a `high` slot), kept
    /// across flushes.
    high: u64,
}

impl Default for Functions {
    fn default() -> Self {
        Functions {
            names: Arc::default(),
            min_duration: DEFAULT_MIN_DURATION.as_nanos() as u64,
            frames: Vec::new(),
            overflow: 0,
            calls: 0,
            epoch: None,
            last_flush: None,
            min_ticks: None,
            high: 0,
        }
    }
}

impl Functions {
    fn now(&mut self) -> u64 {
        let now = clock().raw();
        if self.epoch.is_none() {
            self.epoch = Some((now, SystemTime::now()));
        }
        now
    }

    /// The fewest raw ticks whose [`nanos`](Self::nanos) reach the minimum
    /// duration, so that `end - start >= min_ticks` says what
    /// `nanos(start, end) >= min_duration` says without scaling.
    fn min_ticks(&mut self) -> u64 {
        if let Some(t) = self.min_ticks {
            return t;
        }
        let min = self.min_duration;
        let reaches = |ticks: u64| ticks > 0 && Self::nanos(0, ticks) >= min;
        let ticks = if min == 0 {
            0
        } else if !reaches(u64::MAX) {
            u64::MAX
        } else {
            // The scaling is monotonic: the smallest tick count that
            // reaches `min`, by bisection.
            let (mut lo, mut hi) = (0u64, u64::MAX);
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if reaches(mid) {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            hi
        };
        self.min_ticks = Some(ticks);
        ticks
    }

    /// The common case of [`WasiObserveCtx::function_enter`]: a plain frame
    /// below the depth limit is pushed. False: take the general path.
    #[inline]
    fn push_plain(
        &mut self,
        enabled: bool,
        id: u32,
        t: u64,
        guest_depth: u32,
        guest_parent: u32,
    ) -> bool {
        if !(enabled && self.overflow == 0 && self.frames.len() < MAX_DEPTH) {
            return false;
        }
        self.calls += 1;
        self.frames.push(Frame {
            id,
            start: t,
            ident: None,
            guest_depth,
            guest_parent,
            extra: None,
        });
        true
    }

    /// The common case of [`WasiObserveCtx::function_exit`]: the exit of a
    /// short call that nothing hangs from pops its frame, no span made.
    /// False: take the general path.
    #[inline]
    fn pop_short(&mut self, enabled: bool, id: u32, t: u64, min_ticks: u64) -> bool {
        match self.frames.last() {
            Some(top)
                if enabled
                    && self.overflow == 0
                    && top.id == id
                    && top.ident.is_none()
                    && top.extra.is_none()
                    && t.saturating_sub(top.start) < min_ticks =>
            {
                self.frames.pop();
                true
            }
            _ => false,
        }
    }

    /// Nanoseconds from `start` to `end` (raw readings; zero if reversed).
    fn nanos(start: u64, end: u64) -> u64 {
        if end <= start {
            0
        } else {
            clock().delta_as_nanos(start, end)
        }
    }

    fn wall(&self, t: u64) -> SystemTime {
        match self.epoch {
            Some((raw, wall)) if t >= raw => wall
                .checked_add(Duration::from_nanos(Self::nanos(raw, t)))
                .unwrap_or(wall),
            Some((raw, wall)) => wall
                .checked_sub(Duration::from_nanos(Self::nanos(t, raw)))
                .unwrap_or(wall),
            None => SystemTime::now(),
        }
    }
}

impl WasiObserveCtx {
    /// Names the function ids this store's guest reports (see
    /// [`FunctionNames::from_wasm`]).
    pub fn set_function_names(&mut self, names: Arc<FunctionNames>) {
        self.functions.names = names;
    }

    /// Calls shorter than `min` are not spans (unless a kept span or a guest
    /// span is below them, or they grew memory). Zero keeps every call.
    pub fn set_min_function_duration(&mut self, min: Duration) {
        self.functions.min_duration = min.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.functions.min_ticks = None;
    }

    /// Function frames open now.
    pub fn open_functions(&self) -> usize {
        self.functions.frames.len()
    }

    /// Function entries this store has reported (kept as spans or not).
    pub fn function_calls(&self) -> u64 {
        self.functions.calls
    }

    pub(crate) fn invalid(&self) {
        Stats::add(&self.telemetry.inner.stats.invalid_input, 1);
    }

    /// A function (or named span) was entered at `t`.
    pub(crate) fn function_enter(&mut self, id: u32, t: u64, name: Option<String>) {
        self.functions.calls += 1;
        if !self.telemetry.inner.enabled {
            return;
        }
        // Frames that hold guest data (a name, later tags) are bounded like
        // guest spans; plain function frames are a few words each.
        let limit = if name.is_some() {
            self.telemetry
                .inner
                .limits
                .open_spans_per_store
                .min(MAX_DEPTH)
        } else {
            MAX_DEPTH
        };
        // Once a frame is refused, every frame entered above it is refused
        // too, so exits keep matching in order.
        if self.functions.overflow > 0 || self.functions.frames.len() >= limit {
            self.functions.overflow += 1;
            Stats::add(&self.telemetry.inner.stats.spans_dropped_open_limit, 1);
            return;
        }
        let extra = name.map(|n| {
            Box::new(Extra {
                name: Some(self.checker().string(n)),
                ..Extra::default()
            })
        });
        self.functions.frames.push(Frame {
            id,
            start: t,
            ident: None,
            guest_depth: self.open.len() as u32,
            guest_parent: self.open.last().copied().unwrap_or(NO_SPAN),
            extra,
        });
    }

    /// The function `id` exited at `t` (`None`: whatever is on top, as
    /// Dylibso's `span-exit` says).
    pub(crate) fn function_exit(&mut self, id: Option<u32>, t: u64) {
        if !self.telemetry.inner.enabled {
            return;
        }
        if self.functions.overflow > 0 {
            self.functions.overflow -= 1;
            return;
        }
        let frames = &self.functions.frames;
        let Some(top) = frames.last() else {
            self.invalid();
            return;
        };
        if let Some(id) = id
            && top.id != id
        {
            // Frames above the one exiting were unwound without exiting.
            let found = frames
                .iter()
                .rev()
                .take(RESYNC_DEPTH)
                .position(|f| f.id == id);
            self.invalid();
            let Some(above) = found else { return };
            for _ in 0..above {
                self.end_frame(t, Some("unwound without an exit"));
            }
        }
        self.end_frame(t, None);
    }

    /// Pops the top frame and exports it if it is kept.
    fn end_frame(&mut self, t: u64, error: Option<&str>) {
        self.end_frame_at(t, None, error);
    }

    /// As [`end_frame`](Self::end_frame), with the wall time of `t` given.
    fn end_frame_at(&mut self, t: u64, wall_end: Option<SystemTime>, error: Option<&str>) {
        let min = self.functions.min_duration;
        let Some(top) = self.functions.frames.last() else {
            return;
        };
        let long = Functions::nanos(top.start, t) >= min;
        if !(long || top.ident.is_some() || top.extra.is_some() || error.is_some()) {
            self.functions.frames.pop();
            return;
        }
        self.ensure_ident(self.functions.frames.len() - 1);
        let Some(frame) = self.functions.frames.pop() else {
            return;
        };
        let Some(ident) = frame.ident else { return };
        if !ident.cx.is_sampled() {
            return;
        }
        let extra = frame.extra.map(|e| *e).unwrap_or_default();
        let name = extra
            .name
            .unwrap_or_else(|| self.functions.names.name(frame.id));
        let events = extra
            .grows
            .iter()
            .map(|&(at, pages)| {
                opentelemetry::trace::Event::new(
                    "memory.grow",
                    self.functions.wall(at),
                    vec![KeyValue::new("wasm.memory.grow.pages", i64::from(pages))],
                    0,
                )
            })
            .collect();
        let status = error.map_or(Status::Unset, |e| Status::error(e.to_string()));
        let record = SpanRecord::function(
            name,
            ident.parent.as_ref(),
            self.functions.wall(frame.start),
            extra.attributes,
            events,
            status,
        );
        let end = wall_end.unwrap_or_else(|| self.functions.wall(t.max(frame.start)));
        record.export(ident.cx, end, &self.telemetry);
    }

    /// The parent of frame `index`: a guest span started since its caller's
    /// frame was entered, else the caller's frame, else the guest span (or
    /// ambient parent) around the outermost frame.
    fn frame_parent(&self, index: usize) -> Option<SpanContext> {
        let frames = &self.functions.frames;
        let f = &frames[index];
        let below_guest = index == 0 || f.guest_depth > frames[index - 1].guest_depth;
        if below_guest {
            if f.guest_parent != NO_SPAN
                && let Some(cx) = self.span_context_of(f.guest_parent)
                && cx.is_valid()
            {
                return Some(cx.clone());
            }
            if index == 0 {
                return self.ambient.clone();
            }
        }
        frames[index - 1].ident.as_ref().map(|p| p.cx.clone())
    }

    /// Gives frame `index`, and every ancestor frame it hangs from, a span
    /// identity (so that all of them will be exported).
    fn ensure_ident(&mut self, index: usize) {
        let mut low = index;
        loop {
            let frames = &self.functions.frames;
            let f = &frames[low];
            if f.ident.is_some() || low == 0 || f.guest_depth > frames[low - 1].guest_depth {
                break;
            }
            low -= 1;
        }
        let inner = self.telemetry.inner.clone();
        for k in low..=index {
            if self.functions.frames[k].ident.is_some() {
                continue;
            }
            let parent = self.frame_parent(k);
            let cx = match &parent {
                // A child keeps its parent's trace, sampling and trace-state.
                Some(p) => SpanContext::new(
                    p.trace_id(),
                    inner.ids.new_span_id(),
                    p.trace_flags(),
                    false,
                    p.trace_state().clone(),
                ),
                None => {
                    let trace = inner.ids.new_trace_id();
                    let name = self.functions.names.name(self.functions.frames[k].id);
                    let sampled = crate::tracer::sampled_root(&inner, trace, &name);
                    SpanContext::new(
                        trace,
                        inner.ids.new_span_id(),
                        if sampled {
                            TraceFlags::SAMPLED
                        } else {
                            TraceFlags::NOT_SAMPLED
                        },
                        false,
                        TraceState::default(),
                    )
                }
            };
            self.functions.frames[k].ident = Some(Box::new(Ident { cx, parent }));
        }
    }

    /// The innermost open function frame, as the parent of something a
    /// guest starts now, if it is more recent than the innermost guest span.
    pub(crate) fn innermost_function(&mut self) -> Option<SpanContext> {
        let top = self.functions.frames.len().checked_sub(1)?;
        if self.open.len() as u32 > self.functions.frames[top].guest_depth {
            return None;
        }
        self.ensure_ident(top);
        self.functions.frames[top]
            .ident
            .as_ref()
            .map(|i| i.cx.clone())
    }

    /// `memory.grow` of `pages` at `t`, recorded on the innermost frame.
    pub(crate) fn function_memory_grow(&mut self, pages: u32, t: u64) {
        let limit = self.telemetry.inner.limits.events_per_span;
        if !self.top_may_hold_data() {
            Stats::add(&self.telemetry.inner.stats.events_dropped, 1);
            return;
        }
        let Some(top) = self.functions.frames.last_mut() else {
            self.invalid();
            return;
        };
        let extra = top.extra.get_or_insert_with(Box::default);
        if extra.grows.len() < limit {
            extra.grows.push((t, pages));
        } else {
            Stats::add(&self.telemetry.inner.stats.events_dropped, 1);
        }
    }

    /// Whether the innermost frame may take guest data (grows, tags): it is
    /// recorded (no refused frame above it) and within the open-span limit,
    /// so what frames hold stays bounded like guest spans.
    fn top_may_hold_data(&self) -> bool {
        self.functions.overflow == 0
            && self.functions.frames.len() <= self.telemetry.inner.limits.open_spans_per_store
    }

    /// Adds attributes to the innermost frame (Dylibso's `span-tags`).
    pub(crate) fn function_attributes(&mut self, attrs: Vec<KeyValue>) {
        let limit = self.telemetry.inner.limits.attributes_per_span;
        if !self.top_may_hold_data() {
            Stats::add(
                &self.telemetry.inner.stats.attributes_dropped,
                attrs.len() as u64,
            );
            return;
        }
        let Some(top) = self.functions.frames.last_mut() else {
            self.invalid();
            return;
        };
        // No tags (`span-tags ""`): nothing to keep the frame for.
        if attrs.is_empty() {
            return;
        }
        let extra = top.extra.get_or_insert_with(Box::default);
        for kv in attrs {
            if extra.attributes.len() < limit {
                extra.attributes.push(kv);
            } else {
                Stats::add(&self.telemetry.inner.stats.attributes_dropped, 1);
            }
        }
    }

    /// Ends every open frame, innermost first, at `end` with an error status.
    pub(crate) fn end_open_functions(&mut self, reason: &str, end: SystemTime) -> usize {
        let n = self.functions.frames.len();
        // Most stores (and every uninstrumented one) have no frame open:
        // no clock read (the first would calibrate it).
        if n > 0 {
            let t = self.functions.now();
            for _ in 0..n {
                self.end_frame_at(t, Some(end), Some(reason));
            }
        }
        self.functions.overflow = 0;
        // A `high` slot whose event was lost with a trapped instance.
        self.functions.high = 0;
        n
    }

    /// Hook: a function was entered now.
    pub fn hook_enter(&mut self, id: u32) {
        let t = self.functions.now();
        let (depth, parent) = (self.open.len() as u32, self.open.last().copied());
        let enabled = self.telemetry.inner.enabled;
        if !self
            .functions
            .push_plain(enabled, id, t, depth, parent.unwrap_or(NO_SPAN))
        {
            self.function_enter(id, t, None);
        }
    }

    /// Hook: a function exited now.
    pub fn hook_exit(&mut self, id: u32) {
        let t = self.functions.now();
        let min_ticks = self.functions.min_ticks();
        let enabled = self.telemetry.inner.enabled;
        if !self.functions.pop_short(enabled, id, t, min_ticks) {
            self.function_exit(Some(id), t);
        }
    }

    /// Hook: the innermost function asked `memory.grow` for `pages` pages.
    pub fn hook_memory_grow(&mut self, pages: u32) {
        let t = self.functions.now();
        self.function_memory_grow(pages, t);
    }

    /// One recorder flush: up to 48 events (three 21-bit slots per word, see
    /// [`wasi_observe_instrument::Event`]) that happened since the previous
    /// flush returned. A clock read in the guest would be a host call per
    /// event, so the events share the interval evenly: the span tree is
    /// exact, durations inside one batch are estimates (see
    /// `docs/instrumentation.md`).
    ///
    /// Any words are accepted. Counted in `invalid_input`: a word with its
    /// unused top bit set (its slots are still decoded), an event value
    /// beyond [`MAX_EVENT_VALUE`] and a `high` slot followed by another
    /// (both skipped), and exits that match nothing (as above).
    pub fn recorder_flush(&mut self, words: &[u64]) {
        const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
        // Bit 0 of each slot: a slot is an event if either kind bit is set.
        const LOW_KIND_BITS: u64 = 1 | (1 << SLOT_BITS) | (1 << (2 * SLOT_BITS));
        const TOP: u64 = 1 << 63;
        let now = self.functions.now();
        let n: u64 = words
            .iter()
            .map(|w| u64::from(((w | (w >> 1)) & LOW_KIND_BITS).count_ones()))
            .sum();
        let from = self.functions.last_flush.unwrap_or(now).min(now);
        let step = (now - from) / n.max(1);
        let min_ticks = self.functions.min_ticks();
        let enabled = self.telemetry.inner.enabled;
        // Guest spans cannot start or end inside a batch (the recorder
        // flushes before every import call).
        let guest_depth = self.open.len() as u32;
        let guest_parent = self.open.last().copied().unwrap_or(NO_SPAN);
        let mut t = from;
        for &word in words {
            if word == 0 {
                continue;
            }
            if word & TOP != 0 {
                self.invalid();
            }
            for k in 0..SLOTS_PER_WORD as u32 {
                let slot = (word >> (k * SLOT_BITS)) & SLOT_MASK;
                let (kind, low) = (slot & 3, slot >> 2);
                if kind == 0 {
                    if low != 0 {
                        if self.functions.high != 0 {
                            self.invalid();
                        }
                        self.functions.high = low;
                    }
                    continue;
                }
                t += step;
                let value = (std::mem::take(&mut self.functions.high) << (SLOT_BITS - 2)) | low;
                if value > u64::from(MAX_EVENT_VALUE) {
                    self.invalid();
                    continue;
                }
                let value = value as u32;
                let f = &mut self.functions;
                match kind {
                    1 if f.push_plain(enabled, value, t, guest_depth, guest_parent) => {}
                    1 => self.function_enter(value, t, None),
                    2 if f.pop_short(enabled, value, t, min_ticks) => {}
                    2 => self.function_exit(Some(value), t),
                    _ => self.function_memory_grow(value, t),
                }
            }
        }
        self.functions.last_flush = Some(self.functions.now());
    }

    /// Tells the recorder timing that the guest resumed now, after a host
    /// call: the next batch's events happened after this
    /// ([`time_host_calls`] calls it on every host return).
    pub fn note_guest_resumed(&mut self) {
        // Only once a recorder has flushed: other guests never read the clock.
        if self.functions.last_flush.is_some() {
            self.functions.last_flush = Some(self.functions.now());
        }
    }

    /// Opens a span named by the guest (Dylibso's `span-enter`).
    pub(crate) fn named_span_enter(&mut self, name: String) {
        let t = self.functions.now();
        self.function_enter(u32::MAX, t, Some(name));
    }

    /// Closes the innermost frame (Dylibso's `span-exit`).
    pub(crate) fn named_span_exit(&mut self) {
        let t = self.functions.now();
        self.function_exit(None, t);
    }
}

/// Makes the recorder timing of an instrumented component exact around host
/// calls: a store call hook notes each return from the host, so events
/// recorded after a long import call are not spread over it. (It replaces
/// any call hook the store had; [`crate::calls::trace_calls`] does this too.)
pub fn time_host_calls<T: WasiObserveView + 'static>(store: &mut wasmtime::Store<T>) {
    store.call_hook(|mut cx, hook| {
        if let wasmtime::CallHook::ReturningFromHost = hook {
            cx.data_mut().observe().note_guest_resumed();
        }
        Ok(())
    });
}

/// Adds [`RECORDER_IMPORT`] (the import of instrumented components) to a
/// component linker.
pub fn add_recorder_to_linker<T: WasiObserveView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    let mut root = linker.root();
    let mut instance = root.instance(RECORDER_IMPORT)?;
    type Words = (
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
    );
    instance.func_wrap(
        wasi_observe_instrument::RECORDER_FLUSH,
        |mut store, w: Words| {
            let words = [
                w.0, w.1, w.2, w.3, w.4, w.5, w.6, w.7, w.8, w.9, w.10, w.11, w.12, w.13, w.14,
                w.15,
            ];
            store.data_mut().observe().recorder_flush(&words);
            Ok(())
        },
    )?;
    Ok(())
}

/// Adds the core-module hooks (`dylibso:observe/instrument` `enter`, `exit`,
/// `memory-grow`) to a core linker. [`crate::dylibso::add_to_linker`] adds
/// them with the rest of Dylibso's ABI.
pub fn add_hooks_to_linker<T: WasiObserveView + 'static>(
    linker: &mut wasmtime::Linker<T>,
) -> wasmtime::Result<()> {
    use crate::dylibso::{Op, define};
    for (name, op) in [
        ("enter", Op::Enter),
        ("exit", Op::Exit),
        ("memory-grow", Op::Grow),
    ] {
        define(linker, HOOKS_MODULE, name, op, false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::FunctionNames;

    /// The frame pushed per call stays small (the rare parts are boxed).
    #[test]
    fn frames_are_small() {
        assert!(std::mem::size_of::<super::Frame>() <= 40);
    }

    /// Names are read only from modules that import the hooks.
    #[test]
    fn function_names_only_for_instrumented_modules() {
        let plain = wat::parse_str(r#"(module (func $work) (func $other))"#).unwrap();
        assert!(FunctionNames::from_wasm(&plain).is_empty());
        let hooked = wat::parse_str(
            r#"(module (import "dylibso:observe/instrument" "enter" (func $enter (param i32)))
                 (func $work))"#,
        )
        .unwrap();
        let names = FunctionNames::from_wasm(&hooked);
        assert_eq!(names.name(1), "work");
        // Dylibso's older import names count too.
        let legacy = wat::parse_str(
            r#"(module (import "dylibso_observe" "instrument_enter" (func $enter (param i32)))
                 (func $work))"#,
        )
        .unwrap();
        assert_eq!(FunctionNames::from_wasm(&legacy).name(1), "work");
    }
}

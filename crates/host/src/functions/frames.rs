//! The shadow stack: a frame per function entered, kept as a span only when
//! it matters (see the [module](super) docs), and Dylibso's named spans.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, Status};

use super::{DEFAULT_MIN_DURATION, FunctionNames, MAX_DEPTH};
use crate::pipeline::budget::kv_bytes;
use crate::pipeline::stats::Stats;
use crate::scope::SpanScope;

/// How far down the stack an exit with an unexpected id looks for its frame
/// (frames above it were unwound by an exception the module did not catch
/// and rethrow, as modules instrumented elsewhere may do).
const RESYNC_DEPTH: usize = 256;

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
    /// The bytes taken from the store's budget for it.
    bytes: usize,
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

pub(super) const NO_SPAN: u32 = u32::MAX;

/// Plumbing frames [`SpanScope::innermost_user_function`] looks past at
/// most (a `tracing` span's start is about ten deep).
const MAX_PLUMBING_FRAMES: usize = 64;

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
    pub(super) names: Arc<FunctionNames>,
    pub(super) min_duration: u64,
    frames: Vec<Frame>,
    /// Frames refused (beyond `MAX_DEPTH`, or named beyond the open-span
    /// limit) and those entered above them: not recorded, exits matched in
    /// order.
    pub(super) overflow: u64,
    /// Function entries seen (for benchmarks and reports).
    pub(super) calls: u64,
    /// A raw clock reading and the wall time at the same moment, taken
    /// when the first frame is entered.
    pub(super) epoch: Option<(u64, SystemTime)>,
    /// When the previous recorder flush returned (the start of the time the
    /// next batch's events share).
    pub(super) last_flush: Option<u64>,
    /// The minimum duration in raw clock ticks (computed when first needed:
    /// the clock is calibrated on its first use).
    pub(super) min_ticks: Option<u64>,
    /// High bits of the next recorder event's value (a `high` slot), kept
    /// across flushes.
    pub(super) high: u64,
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
    pub(super) fn now(&mut self) -> u64 {
        let now = clock().raw();
        if self.epoch.is_none() {
            self.epoch = Some((now, SystemTime::now()));
        }
        now
    }

    /// The fewest raw ticks whose [`nanos`](Self::nanos) reach the minimum
    /// duration, so that `end - start >= min_ticks` says what
    /// `nanos(start, end) >= min_duration` says without scaling.
    pub(super) fn min_ticks(&mut self) -> u64 {
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
    pub(super) fn push_plain(
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
    pub(super) fn pop_short(&mut self, enabled: bool, id: u32, t: u64, min_ticks: u64) -> bool {
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

impl SpanScope {
    /// Names the function ids this store's guest reports (see
    /// [`FunctionNames::from_wasm`]).
    pub(crate) fn set_function_names(&mut self, names: Arc<FunctionNames>) {
        self.functions.names = names;
    }

    /// Calls shorter than `min` are not spans (unless a kept span or a guest
    /// span is below them, or they grew memory). Zero keeps every call.
    pub(crate) fn set_min_function_duration(&mut self, min: Duration) {
        self.functions.min_duration = min.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.functions.min_ticks = None;
    }

    /// Whether the guest is a component whose recorder flushes events.
    pub(crate) fn has_recorder(&self) -> bool {
        self.functions.names.from_recorder()
    }

    /// Function frames open now.
    pub(crate) fn open_functions(&self) -> usize {
        self.functions.frames.len()
    }

    /// Function entries this store has reported (kept as spans or not).
    pub(crate) fn function_calls(&self) -> u64 {
        self.functions.calls
    }

    /// A function (or named span) was entered at `t`.
    pub(crate) fn function_enter(&mut self, id: u32, t: u64, name: Option<String>) {
        self.functions.calls += 1;
        if !self.telemetry.is_enabled() {
            return;
        }
        // Frames that hold guest data (a name, later tags) are bounded like
        // guest spans; plain function frames are a few words each.
        let limit = if name.is_some() {
            self.telemetry.limits().open_spans_per_store.min(MAX_DEPTH)
        } else {
            MAX_DEPTH
        };
        // Once a frame is refused, every frame entered above it is refused
        // too, so exits keep matching in order.
        if self.functions.overflow > 0 || self.functions.frames.len() >= limit {
            self.functions.overflow += 1;
            Stats::add(&self.telemetry.counters().spans_dropped_open_limit, 1);
            return;
        }
        // A name that does not fit the store's budget is dropped (counted):
        // the frame is kept, as an unnamed one, so exits still match.
        let extra = name
            .map(|n| self.telemetry.checker().string(n))
            .and_then(|n| {
                let bytes = std::mem::size_of::<Extra>() + n.len();
                if self.take_bytes(bytes) {
                    Some(Box::new(Extra {
                        name: Some(n),
                        bytes,
                        ..Extra::default()
                    }))
                } else {
                    Stats::add(&self.telemetry.counters().values_dropped_store_budget, 1);
                    None
                }
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
        if !self.telemetry.is_enabled() {
            return;
        }
        if self.functions.overflow > 0 {
            self.functions.overflow -= 1;
            return;
        }
        let frames = &self.functions.frames;
        let Some(top) = frames.last() else {
            self.telemetry.checker().invalid();
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
            self.telemetry.checker().invalid();
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
        if let Some(extra) = &frame.extra {
            self.budget.sub(extra.bytes);
        }
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
        let record = self.telemetry.frame_record(
            name,
            ident.parent.as_ref(),
            self.functions.wall(frame.start),
            extra.attributes,
            events,
            status,
        );
        let end = wall_end.unwrap_or_else(|| self.functions.wall(t.max(frame.start)));
        self.telemetry.end_span(ident.cx, record, end);
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
                && let Some(cx) = self.context_of(f.guest_parent)
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
        for k in low..=index {
            if self.functions.frames[k].ident.is_some() {
                continue;
            }
            let parent = self.frame_parent(k);
            let functions = &self.functions;
            let id = functions.frames[k].id;
            let cx = self
                .telemetry
                .frame_context(parent.as_ref(), || functions.names.name(id));
            self.functions.frames[k].ident = Some(Box::new(Ident { cx, parent }));
        }
    }

    /// The innermost open function frame, as the parent of something a
    /// guest starts now, if it is more recent than the innermost guest span.
    pub(crate) fn innermost_function(&mut self) -> Option<SpanContext> {
        let top = self.functions.frames.len().checked_sub(1)?;
        self.frame_as_parent(top)
    }

    /// Frame `index` as the parent of something a guest starts now, if no
    /// guest span was opened since it was entered; it is then kept as a
    /// span, however short its call.
    fn frame_as_parent(&mut self, index: usize) -> Option<SpanContext> {
        if self.open.len() as u32 > self.functions.frames[index].guest_depth {
            return None;
        }
        self.ensure_ident(index);
        self.functions.frames[index]
            .ident
            .as_ref()
            .map(|i| i.cx.clone())
    }

    /// The parent of a span a guest SDK starts now in an instrumented
    /// component (pipe `frame`): the innermost open frame that is not
    /// telemetry plumbing or the standard library
    /// ([`FunctionNames::is_plumbing`]: the SDK's own calls are frames too),
    /// if it is more recent than the innermost guest span (`None` past
    /// [`MAX_PLUMBING_FRAMES`]). It is kept as a span, however short its
    /// call.
    pub(crate) fn innermost_user_function(&mut self) -> Option<SpanContext> {
        let frames = &self.functions.frames;
        let names = &self.functions.names;
        // Only so far down: the guest names its functions, and a stack of
        // plumbing names must not make each call a walk of 65 536 frames.
        let skipped = frames
            .iter()
            .rev()
            .take(MAX_PLUMBING_FRAMES)
            .position(|f| !names.is_plumbing(f.id))?;
        let index = frames.len() - 1 - skipped;
        self.frame_as_parent(index)
    }

    /// `memory.grow` of `pages` at `t`, recorded on the innermost frame.
    pub(crate) fn function_memory_grow(&mut self, pages: u32, t: u64) {
        let limit = self.telemetry.limits().events_per_span;
        if !self.top_may_hold_data() {
            Stats::add(&self.telemetry.counters().events_dropped, 1);
            return;
        }
        let Some(top) = self.functions.frames.last_mut() else {
            self.telemetry.checker().invalid();
            return;
        };
        let extra = top.extra.get_or_insert_with(Box::default);
        if extra.grows.len() < limit {
            // 12 bytes each, at most `events_per_span` per frame: not
            // counted against the budget.
            extra.grows.push((t, pages));
        } else {
            Stats::add(&self.telemetry.counters().events_dropped, 1);
        }
    }

    /// Whether the innermost frame may take guest data (grows, tags): it is
    /// recorded (no refused frame above it) and within the open-span limit,
    /// so what frames hold stays bounded like guest spans.
    fn top_may_hold_data(&self) -> bool {
        self.functions.overflow == 0
            && self.functions.frames.len() <= self.telemetry.limits().open_spans_per_store
    }

    /// Adds attributes to the innermost frame (Dylibso's `span-tags`).
    pub(crate) fn function_attributes(&mut self, attrs: Vec<KeyValue>) {
        let limit = self.telemetry.limits().attributes_per_span;
        if !self.top_may_hold_data() {
            Stats::add(
                &self.telemetry.counters().attributes_dropped,
                attrs.len() as u64,
            );
            return;
        }
        if self.functions.frames.is_empty() {
            self.telemetry.checker().invalid();
            return;
        }
        // No tags (`span-tags ""`): nothing to keep the frame for.
        if attrs.is_empty() {
            return;
        }
        let counters = self.telemetry.counters();
        let max = self.telemetry.limits().store_bytes;
        let Some(top) = self.functions.frames.last_mut() else {
            return;
        };
        let extra = top.extra.get_or_insert_with(Box::default);
        for kv in attrs {
            if extra.attributes.len() >= limit {
                Stats::add(&counters.attributes_dropped, 1);
                continue;
            }
            let bytes = kv_bytes(&kv);
            if !self.budget.fits(bytes, max) {
                Stats::add(&counters.values_dropped_store_budget, 1);
                continue;
            }
            self.budget.add(bytes);
            extra.bytes += bytes;
            extra.attributes.push(kv);
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
    pub(crate) fn hook_enter(&mut self, id: u32) {
        let t = self.functions.now();
        let (depth, parent) = (self.open.len() as u32, self.open.last().copied());
        let enabled = self.telemetry.is_enabled();
        if !self
            .functions
            .push_plain(enabled, id, t, depth, parent.unwrap_or(NO_SPAN))
        {
            self.function_enter(id, t, None);
        }
    }

    /// Hook: a function exited now.
    pub(crate) fn hook_exit(&mut self, id: u32) {
        let t = self.functions.now();
        let min_ticks = self.functions.min_ticks();
        let enabled = self.telemetry.is_enabled();
        if !self.functions.pop_short(enabled, id, t, min_ticks) {
            self.function_exit(Some(id), t);
        }
    }

    /// Hook: the innermost function asked `memory.grow` for `pages` pages.
    pub(crate) fn hook_memory_grow(&mut self, pages: u32) {
        let t = self.functions.now();
        self.function_memory_grow(pages, t);
    }

    /// Tells the recorder timing that the guest resumed now, after a host
    /// call: the next batch's events happened after this
    /// (the call hook of [`crate::observe_store`] calls it on every host return).
    pub(crate) fn note_guest_resumed(&mut self) {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pipeline::Telemetry;

    /// The frame pushed per call stays small (the rare parts are boxed).
    #[test]
    fn frames_are_small() {
        assert!(std::mem::size_of::<super::Frame>() <= 40);
    }

    /// A guest SDK span's frame is the innermost one that is not plumbing,
    /// looked for no further than [`MAX_PLUMBING_FRAMES`] down; and not one
    /// entered before the innermost guest span.
    #[test]
    fn a_span_belongs_to_the_innermost_function_past_the_plumbing() {
        let telemetry = Telemetry::builder()
            .with_span_exporter(opentelemetry_sdk::trace::InMemorySpanExporter::default())
            .build()
            .unwrap();
        let mut scope = SpanScope::new(telemetry);
        let names = [
            (0, "app::work".to_string()),
            (1, "tracing::span::Span::new".to_string()),
            (2, "std::thread::local::LocalKey<T>::with".to_string()),
        ];
        scope.set_function_names(Arc::new(FunctionNames::new(names, true)));
        assert_eq!(scope.innermost_user_function(), None, "no frame");
        scope.function_enter(0, 1, None);
        let work = scope.innermost_user_function().expect("app::work");
        for _ in 0..MAX_PLUMBING_FRAMES - 1 {
            scope.function_enter(1, 2, None);
        }
        assert_eq!(scope.innermost_user_function(), Some(work.clone()));
        scope.function_enter(2, 3, None);
        assert_eq!(scope.innermost_user_function(), None, "too deep");
        scope.function_exit(Some(2), 4);
        assert_eq!(scope.innermost_user_function(), Some(work));
        // A guest span opened since: it is the parent, not the function.
        use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
        let span = SpanContext::new(
            TraceId::from(7u128),
            SpanId::from(7u64),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        );
        scope.open_pipe(span, None, SystemTime::now());
        assert_eq!(scope.innermost_user_function(), None, "the guest span");
    }
}

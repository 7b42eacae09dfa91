//! One store's span scope: the spans its guest holds (the host keeps span
//! state for guests, as the proposal says), which of them are open, the
//! function frames of an instrumented guest, and the ambient parent.
//!
//! Parenting: a span's implicit parent is the innermost open span of the
//! store (a guest span, or a function frame entered after it), else the
//! ambient parent (a request span, a remote context); `new-root` starts a new
//! trace. Spans are born and exported through the pipeline
//! ([`Telemetry::begin_span`], [`Telemetry::end_span`]); the scope only
//! remembers them between their start and end.
//!
//! What the scope remembers is bounded in bytes by the store's
//! [budget](crate::pipeline::budget): a span that would not fit does not
//! record, data that would not fit is refused, both counted.

use std::time::SystemTime;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Link, SpanContext, SpanKind, Status};
use slab::Slab;

use crate::functions::Functions;
use crate::pipeline::Telemetry;
use crate::pipeline::budget::{StoreBudget, attrs_bytes, link_bytes};
use crate::pipeline::span::{NewSpan, SpanRecord};
use crate::pipeline::stats::Stats;

/// The rep of every span handle that records nothing and has no state:
/// spans started while telemetry is disabled or beyond the open-span limit.
pub(crate) const NOOP: u32 = u32::MAX;

/// One span handle's state.
pub(crate) enum SpanSlot {
    Open {
        cx: SpanContext,
        record: Option<Box<SpanRecord>>,
    },
    /// A pipe span (`open_pipe`): the pipe exports it.
    Piped {
        cx: SpanContext,
        stand_in: Option<Draft>,
    },
    Ended {
        cx: SpanContext,
    },
}

/// What a pipe span's stand-in is made from if the store ends with the
/// span open: the record itself is made only then (making and dropping
/// one for every span was about a quarter of the host's side of `open`
/// and `close`).
pub(crate) struct Draft {
    name: String,
    parent: Option<SpanContext>,
    start: SystemTime,
}

impl SpanSlot {
    pub(crate) fn context(&self) -> &SpanContext {
        match self {
            SpanSlot::Open { cx, .. } | SpanSlot::Piped { cx, .. } | SpanSlot::Ended { cx } => cx,
        }
    }

    /// Marks the span ended; returns its context and record the first time.
    fn end(&mut self) -> Option<(SpanContext, Option<Box<SpanRecord>>)> {
        let SpanSlot::Open { cx, .. } = self else {
            return None;
        };
        let ended = SpanSlot::Ended { cx: cx.clone() };
        match std::mem::replace(self, ended) {
            SpanSlot::Open { cx, record } => Some((cx, record)),
            SpanSlot::Piped { .. } | SpanSlot::Ended { .. } => None,
        }
    }

    fn record(&mut self) -> Option<&mut SpanRecord> {
        match self {
            SpanSlot::Open {
                record: Some(r), ..
            } => Some(r),
            _ => None,
        }
    }
}

/// Where a new guest span hangs in its trace.
pub(crate) enum ParentChoice {
    /// The innermost open span (function frames included), else the ambient
    /// parent.
    Implicit,
    /// The ambient parent, if any.
    Ambient,
    /// This context (a span of the store, or a remote one).
    Given(SpanContext),
    /// None: a new trace.
    Root,
}

/// A guest span as its interface converted it (limits applied).
pub(crate) struct GuestSpan {
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes: u32,
    pub links: Vec<Link>,
    pub dropped_links: u32,
}

/// A span just started: its handle rep, context and whether it records.
pub(crate) struct Started {
    pub rep: u32,
    pub cx: SpanContext,
    pub recording: bool,
}

impl Started {
    pub(crate) const NOOP: Started = Started {
        rep: NOOP,
        cx: SpanContext::NONE,
        recording: false,
    };
}

/// One store's spans and frames.
pub(crate) struct SpanScope {
    pub(crate) telemetry: Telemetry,
    pub(crate) spans: Slab<SpanSlot>,
    /// Keys of open spans, in the order they started: the last is the parent
    /// of the next span.
    pub(crate) open: Vec<u32>,
    pub(crate) ambient: Option<SpanContext>,
    pub(crate) functions: Functions,
    /// Bytes held for the guest: open span records, frames' names and tags,
    /// shared attribute sets.
    pub(crate) budget: StoreBudget,
    /// Keys of the open entries of pipe spans (`open_pipe`), whose
    /// stand-ins go to the pipe's decoder at the end.
    pipe_keys: Vec<u32>,
    /// Spans opened past the open-span limit (pipe, `wasi:otel`) and not
    /// ended yet: their ends are expected, not invalid.
    untracked: u32,
}

/// What a pipe span's stand-in holds in the store's budget.
fn stand_in_bytes(name: &str) -> usize {
    std::mem::size_of::<SpanRecord>() + name.len()
}

/// A pipe span's stand-in, for the pipe's decoder to export unless it
/// holds the span whole (see [`SpanScope::end_open`]).
pub(crate) type StandIn = (SpanContext, Box<SpanRecord>);

impl SpanScope {
    pub(crate) fn new(telemetry: Telemetry) -> Self {
        SpanScope {
            telemetry,
            spans: Slab::new(),
            open: Vec::new(),
            ambient: None,
            functions: Functions::default(),
            budget: StoreBudget::default(),
            pipe_keys: Vec::new(),
            untracked: 0,
        }
    }

    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    pub(crate) fn set_ambient(&mut self, parent: Option<SpanContext>) {
        self.ambient = parent.filter(SpanContext::is_valid);
    }

    /// The guest's innermost open span, else the ambient parent.
    pub(crate) fn current_span_context(&self) -> Option<SpanContext> {
        self.open
            .last()
            .and_then(|&key| self.spans.get(key as usize))
            .map(|slot| slot.context().clone())
            .filter(SpanContext::is_valid)
            .or_else(|| self.ambient.clone())
    }

    /// The parent of something the guest makes now without naming a parent:
    /// the innermost open span, function frames included (such a frame is
    /// then kept, so the child is never orphaned).
    pub(crate) fn implicit_parent(&mut self) -> Option<SpanContext> {
        self.innermost_function()
            .or_else(|| self.current_span_context())
    }

    fn resolve(&mut self, parent: ParentChoice) -> Option<SpanContext> {
        match parent {
            ParentChoice::Implicit => self.implicit_parent(),
            ParentChoice::Ambient => self.ambient.clone(),
            ParentChoice::Given(cx) => Some(cx).filter(SpanContext::is_valid),
            ParentChoice::Root => None,
        }
    }

    /// Whether a new guest span may be recorded: telemetry is on and the
    /// store is below the open-span limit (a refusal is counted). Asked
    /// before the guest's data is converted, so a refused span costs
    /// nothing more.
    pub(crate) fn admits_span(&self) -> bool {
        if !self.telemetry.is_enabled() {
            return false;
        }
        if self.open.len() >= self.telemetry.limits().open_spans_per_store {
            Stats::add(&self.telemetry.counters().spans_dropped_open_limit, 1);
            return false;
        }
        true
    }

    /// Takes `bytes` from the store's budget for something the guest gives
    /// it to keep; false (the caller drops it and counts) if they do not fit.
    pub(crate) fn take_bytes(&mut self, bytes: usize) -> bool {
        let max = self.telemetry.limits().store_bytes;
        if self.budget.fits(bytes, max) {
            self.budget.add(bytes);
            true
        } else {
            false
        }
    }

    /// Whether the store's budget is spent (so a guest's data need not
    /// even be read).
    pub(crate) fn budget_spent(&self) -> bool {
        self.budget.used >= self.telemetry.limits().store_bytes
    }

    /// Starts a guest span under `parent` and keeps its state; a span that
    /// does not fit the store's byte budget does not record (counted).
    pub(crate) fn start(&mut self, parent: ParentChoice, span: GuestSpan) -> Started {
        let estimate = std::mem::size_of::<SpanRecord>()
            + span.name.len()
            + attrs_bytes(&span.attributes)
            + span.links.iter().map(link_bytes).sum::<usize>();
        if !self
            .budget
            .fits(estimate, self.telemetry.limits().store_bytes)
        {
            Stats::add(&self.telemetry.counters().spans_dropped_store_budget, 1);
            return Started::NOOP;
        }
        let parent = self.resolve(parent);
        let (cx, record) = self.telemetry.begin_span(NewSpan {
            name: span.name,
            kind: span.kind,
            parent: parent.as_ref(),
            start: span.start,
            attributes: span.attributes,
            dropped_attributes: span.dropped_attributes,
            links: span.links,
            dropped_links: span.dropped_links,
        });
        let recording = record.is_some();
        if let Some(r) = &record {
            self.budget.add(r.bytes());
        }
        // Recorder events flushed after this happened after this span began.
        self.note_guest_resumed();
        let key = self.spans.insert(SpanSlot::Open {
            cx: cx.clone(),
            record,
        }) as u32;
        self.open.push(key);
        Started {
            rep: key,
            cx,
            recording,
        }
    }

    /// The context of a span handle of this store (ended or not); `None` for
    /// a non-recording handle without state.
    pub(crate) fn context_of(&self, rep: u32) -> Option<&SpanContext> {
        self.spans.get(rep as usize).map(SpanSlot::context)
    }

    /// Whether a span handle records (open, sampled in or record-only).
    pub(crate) fn is_recording(&mut self, rep: u32) -> bool {
        self.spans
            .get_mut(rep as usize)
            .and_then(SpanSlot::record)
            .is_some()
    }

    /// How many links an open, recording span holds; `None` if it does not
    /// record.
    pub(crate) fn links_of(&mut self, rep: u32) -> Option<usize> {
        self.spans
            .get_mut(rep as usize)
            .and_then(SpanSlot::record)
            .map(|r| r.links.len())
    }

    /// Changes an open, recording span with `f`, if the `incoming` bytes it
    /// adds fit the store's budget; else refuses, counting `items` values
    /// dropped. The budget then holds what the record holds. False if
    /// nothing was changed.
    pub(crate) fn update_span(
        &mut self,
        rep: u32,
        incoming: usize,
        items: u64,
        f: impl FnOnce(&mut SpanRecord, &Telemetry),
    ) -> bool {
        let Some(r) = self.spans.get_mut(rep as usize).and_then(SpanSlot::record) else {
            return false;
        };
        let max = self.telemetry.limits().store_bytes;
        if !self.budget.fits(incoming, max) {
            Stats::add(
                &self.telemetry.counters().values_dropped_store_budget,
                items,
            );
            return false;
        }
        let before = r.bytes();
        f(r, &self.telemetry);
        self.budget.sub(before);
        self.budget.add(r.bytes());
        true
    }

    /// Ends a span at `end` (`None`: now) and exports it; a second end is a
    /// no-op.
    pub(crate) fn end(&mut self, rep: u32, end: Option<SystemTime>) {
        let Some((cx, record)) = self.spans.get_mut(rep as usize).and_then(SpanSlot::end) else {
            return;
        };
        if let Some(pos) = self.open.iter().rposition(|&k| k == rep) {
            self.open.remove(pos);
        }
        if let Some(record) = record {
            self.budget.sub(record.bytes());
            self.telemetry
                .end_span(cx, record, end.unwrap_or_else(SystemTime::now));
        }
        self.note_guest_resumed();
    }

    /// The guest dropped its handle: the span ends (if it had not) and its
    /// state is released.
    pub(crate) fn release(&mut self, rep: u32) {
        if rep == NOOP {
            return;
        }
        self.end(rep, None);
        self.spans.try_remove(rep as usize);
    }

    /// Moves an open span under `parent`: a new trace id (the parent's, or a
    /// fresh one), parent id and sampling flags; the span id stays. A parent
    /// in the span's own trace is refused (counted): it could be the span
    /// itself or a descendant, which would make a cycle. Returns the span's
    /// context, changed or not.
    pub(crate) fn move_under(&mut self, rep: u32, parent: ParentChoice) -> SpanContext {
        let parent = self.resolve(parent);
        let Some(SpanSlot::Open { cx, record }) = self.spans.get_mut(rep as usize) else {
            return self.context_of(rep).cloned().unwrap_or(SpanContext::NONE);
        };
        if parent
            .as_ref()
            .is_some_and(|p| p.trace_id() == cx.trace_id())
        {
            self.telemetry.checker().invalid();
            return cx.clone();
        }
        let held = record.as_ref().map_or(0, |r| r.bytes());
        self.telemetry.move_span(cx, record, parent.as_ref());
        if record.is_none() {
            // No longer recording: its record is gone.
            self.budget.sub(held);
        }
        cx.clone()
    }

    /// Whether the store holds as many open spans as it may, for a span the
    /// guest exports itself: if so, it goes untracked (counted), and its
    /// end is expected ([`untracked_ended`](Self::untracked_ended)).
    pub(crate) fn open_limit_reached(&mut self) -> bool {
        let full = self.open.len() >= self.telemetry.limits().open_spans_per_store;
        if full {
            Stats::add(&self.telemetry.counters().spans_untracked, 1);
            self.untracked = self.untracked.saturating_add(1);
        }
        full
    }

    /// The end of a span that is not open: true if an untracked span may
    /// have ended (then it is not invalid input).
    pub(crate) fn untracked_ended(&mut self) -> bool {
        let some = self.untracked > 0;
        self.untracked = self.untracked.saturating_sub(1);
        some
    }

    /// The key of the open span with this context, innermost first.
    fn find_open(&self, cx: &SpanContext) -> Option<usize> {
        self.open.iter().rposition(|&key| {
            self.spans.get(key as usize).is_some_and(|slot| {
                let open = slot.context();
                open.span_id() == cx.span_id() && open.trace_id() == cx.trace_id()
            })
        })
    }

    /// Whether a span with this context is open in the store.
    pub(crate) fn is_open(&self, cx: &SpanContext) -> bool {
        self.find_open(cx).is_some()
    }

    /// Opens a span a guest's own SDK started (`wasi:otel` `on-start`), so
    /// that host-made spans nest under it. With `unended`, a stand-in
    /// record (internal, started now under `parent`) that
    /// [`end_open`](Self::end_open) exports with an error status if the
    /// guest never ends the span.
    pub(crate) fn open_foreign(
        &mut self,
        cx: SpanContext,
        parent: Option<&SpanContext>,
        unended: Option<String>,
    ) {
        let record = unended.map(|name| {
            self.telemetry.frame_record(
                name,
                parent,
                SystemTime::now(),
                Vec::new(),
                Vec::new(),
                Status::Unset,
            )
        });
        let key = self.spans.insert(SpanSlot::Open { cx, record }) as u32;
        self.open.push(key);
    }

    /// Closes a span opened by [`open_foreign`](Self::open_foreign),
    /// dropping its stand-in; false if it was not open.
    pub(crate) fn close_foreign(&mut self, cx: &SpanContext) -> bool {
        let Some(pos) = self.find_open(cx) else {
            return false;
        };
        let key = self.open.remove(pos);
        self.spans.try_remove(key as usize);
        true
    }

    /// A pipe guest's span is open (`wasi-observe:pipe` `open`): host-made
    /// spans nest under it until [`close_pipe`](Self::close_pipe). The pipe
    /// exports the span itself; with `stand_in`, the scope keeps what a
    /// record of that name needs (started at `start`, under the innermost
    /// open span of its trace), and [`end_open`](Self::end_open) makes it, with
    /// an error status, if the store ends first. Beyond the open-span limit
    /// it is not tracked (counted as untracked, not dropped: the pipe still
    /// exports it).
    pub(crate) fn open_pipe(
        &mut self,
        cx: SpanContext,
        mut stand_in: Option<String>,
        start: SystemTime,
    ) {
        if self.open_limit_reached() {
            return;
        }
        // The stand-in's name is the guest's: held within the store's budget.
        if let Some(name) = &stand_in
            && !self.take_bytes(stand_in_bytes(name))
        {
            Stats::add(&self.telemetry.counters().values_dropped_store_budget, 1);
            stand_in = None;
        }
        let stand_in = stand_in.map(|name| Draft {
            name,
            parent: self
                .current_span_context()
                .filter(|p| p.trace_id() == cx.trace_id()),
            start,
        });
        let key = self.spans.insert(SpanSlot::Piped { cx, stand_in }) as u32;
        self.open.push(key);
        self.pipe_keys.push(key);
    }

    /// Closes the innermost span opened by [`open_pipe`](Self::open_pipe)
    /// with this span id; an unknown id is ignored (counted). Only pipe
    /// spans are looked at: a guest naming one of its `tracer` spans or a
    /// function frame cannot close it this way.
    pub(crate) fn close_pipe(&mut self, span_id: opentelemetry::trace::SpanId) {
        let found = self.pipe_keys.iter().rposition(|&key| {
            self.spans
                .get(key as usize)
                .is_some_and(|slot| slot.context().span_id() == span_id)
        });
        let Some(i) = found else {
            if !self.untracked_ended() {
                self.telemetry.checker().invalid();
            }
            return;
        };
        let key = self.pipe_keys.remove(i);
        if let Some(pos) = self.open.iter().rposition(|&k| k == key) {
            self.open.remove(pos);
        }
        if let Some(SpanSlot::Piped {
            stand_in: Some(draft),
            ..
        }) = self.spans.try_remove(key as usize)
        {
            self.budget.sub(stand_in_bytes(&draft.name));
        }
    }

    /// Number of spans the guest has started and not ended.
    pub(crate) fn open_spans(&self) -> usize {
        self.open.len()
    }

    /// Ends every open span, innermost first, with an error status whose
    /// description is `reason`, and exports them; function frames too.
    /// Pipe spans' stand-ins are returned instead, for the pipe's decoder,
    /// which exports them unless it holds the spans whole. Returns how many
    /// it ended.
    pub(crate) fn end_open(&mut self, reason: &str, end: SystemTime) -> (usize, Vec<StandIn>) {
        let functions = self.end_open_functions(reason, end);
        let keys = std::mem::take(&mut self.open);
        self.pipe_keys.clear();
        let n = keys.len() + functions;
        let mut stand_ins = Vec::new();
        for key in keys.into_iter().rev() {
            let Some(slot) = self.spans.get_mut(key as usize) else {
                continue;
            };
            let cx = slot.context().clone();
            match std::mem::replace(slot, SpanSlot::Ended { cx: cx.clone() }) {
                SpanSlot::Open {
                    record: Some(mut record),
                    ..
                } => {
                    self.budget.sub(record.bytes());
                    record.status = Status::error(reason.to_string());
                    self.telemetry.end_span(cx, record, end);
                }
                SpanSlot::Piped {
                    stand_in: Some(draft),
                    ..
                } => {
                    self.budget.sub(stand_in_bytes(&draft.name));
                    let record = self.telemetry.frame_record(
                        draft.name,
                        draft.parent.as_ref(),
                        draft.start,
                        Vec::new(),
                        Vec::new(),
                        Status::error(reason.to_string()),
                    );
                    stand_ins.push((cx, record));
                }
                _ => {}
            }
        }
        (n, stand_ins)
    }
}

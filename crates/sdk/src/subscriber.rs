//! The `tracing` subscriber [`init`](crate::init) installs: the spans the
//! layer's logic needs, in one table, with nothing else.
//!
//! `tracing-subscriber`'s registry is built for many threads: a lock-free
//! slab per thread, a type map of extensions per span (a box per layer's
//! data), and each layer looking the span up again on every callback. In a
//! component, where there is one thread, that was about a sixth of a
//! `tracing` span's cost (docs/benchmarks.md). This subscriber keeps each
//! span's [`SpanData`] in a slot of one table behind one lock (uncontended, and
//! free in a component without threads), and follows the registry's rules
//! exactly: the current span per thread, entered spans held open, a span
//! holding its parent open until it closes, ids never reused while a
//! stale copy could name another span. [`WasiObserveLayer`] with
//! [`SignalFilter`] over a registry remains for users' own subscribers
//! ([`layer()`](crate::layer)), with the same results.

use std::cell::RefCell;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tracing_core::span::{Attributes, Current, Id, Record};
use tracing_core::{Event, Interest, LevelFilter, Metadata, Subscriber};

use crate::layer::{SignalFilter, SpanData, WasiObserveLayer};

/// The subscriber: the layer's logic, its filter and the spans.
pub(crate) struct WasiObserveSubscriber {
    layer: WasiObserveLayer,
    filter: SignalFilter,
    spans: Mutex<Spans>,
}

/// The open spans: a slab of slots, an id naming a slot and its generation.
#[derive(Default)]
struct Spans {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

struct Slot {
    /// Bumped each time the slot is freed, so an old id misses.
    generation: u32,
    /// Handles to the span (`Span`s, entered guards, children): it closes
    /// when the last goes. 0: the slot is free.
    refs: usize,
    meta: &'static Metadata<'static>,
    /// The parent this span holds open, released when it closes.
    parent: Option<Id>,
    /// Taken when the span closes, to end it outside the lock: every open
    /// span has it.
    data: Option<SpanData>,
}

fn id(index: usize, generation: u32) -> Id {
    // Indexes start at 1 in the id: an id is never 0.
    Id::from_u64((u64::from(generation) << 32) | (index as u64 + 1))
}

impl Spans {
    fn slot(&mut self, id: &Id) -> Option<&mut Slot> {
        let raw = id.into_u64();
        let index = (raw & u64::from(u32::MAX)).checked_sub(1)? as usize;
        let generation = (raw >> 32) as u32;
        self.slots
            .get_mut(index)
            .filter(|s| s.refs > 0 && s.generation == generation)
    }

    fn data(&mut self, id: &Id) -> Option<&mut SpanData> {
        self.slot(id).and_then(|s| s.data.as_mut())
    }

    fn insert(
        &mut self,
        meta: &'static Metadata<'static>,
        parent: Option<Id>,
        data: SpanData,
    ) -> Id {
        let filled = |generation| Slot {
            generation,
            refs: 1,
            meta,
            parent,
            data: Some(data),
        };
        match self.free.pop() {
            Some(index) => {
                let index = index as usize;
                let slot = &mut self.slots[index];
                *slot = filled(slot.generation);
                id(index, slot.generation)
            }
            None => {
                self.slots.push(filled(0));
                id(self.slots.len() - 1, 0)
            }
        }
    }
}

crate::local::local! {
    /// This thread's entered spans, innermost last; `true` marks a span
    /// entered again while already entered, which holds no reference.
    static STACK: RefCell<Vec<(Id, bool)>> = RefCell::new(Vec::new());
}

/// The innermost span this thread has entered.
fn current_id() -> Option<Id> {
    STACK
        .try_with(|s| {
            s.borrow()
                .iter()
                .rev()
                .find(|(_, dup)| !dup)
                .map(|(id, _)| id.clone())
        })
        .ok()
        .flatten()
}

impl WasiObserveSubscriber {
    pub(crate) fn new(layer: WasiObserveLayer, filter: SignalFilter) -> Self {
        WasiObserveSubscriber {
            layer,
            filter,
            spans: Mutex::default(),
        }
    }

    fn spans(&self) -> MutexGuard<'_, Spans> {
        // A panic cannot leave the table half-changed: keep using it.
        self.spans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops a reference to `span`. When it was the last, ends the span and
    /// returns the parent it held (whose reference is the caller's to
    /// drop next, after the child has ended, as the registry orders it).
    fn release(&self, span: &Id) -> Option<Option<Id>> {
        let mut spans = self.spans();
        let slot = spans.slot(span)?;
        slot.refs -= 1;
        if slot.refs > 0 {
            return None;
        }
        slot.generation = slot.generation.wrapping_add(1);
        let parent = slot.parent.take();
        let data = slot.data.take();
        let index = (span.into_u64() & u64::from(u32::MAX)) - 1;
        spans.free.push(index as u32);
        drop(spans);
        if let Some(mut data) = data {
            data.finish();
            data.discard();
        }
        Some(parent)
    }

    /// Calls `f` with the data of span `id`, if it is open and recorded.
    pub(crate) fn with_data<R>(&self, id: &Id, f: impl FnOnce(&mut SpanData) -> R) -> Option<R> {
        self.spans().data(id).map(f)
    }

    /// Calls `f` with the data of this thread's current span.
    pub(crate) fn with_current<R>(&self, f: impl FnOnce(Option<&SpanData>) -> R) -> R {
        let id = current_id();
        let mut spans = self.spans();
        f(id.and_then(|id| spans.data(&id)).map(|d| &*d))
    }
}

impl Subscriber for WasiObserveSubscriber {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        self.filter.interest(meta)
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        self.filter.wants(meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.filter.level_hint()
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let parent = if attrs.is_root() {
            None
        } else if attrs.is_contextual() {
            current_id()
        } else {
            attrs.parent().cloned()
        };
        // Looks the parent up and releases the lock before the fields,
        // which may run any code, are visited.
        let data = self.layer.start_span(attrs, || {
            let parent = parent.as_ref()?;
            self.spans()
                .slot(parent)
                .map(|s| s.data.as_ref().map(|d| d.cx.clone()))
        });
        let mut spans = self.spans();
        // The child holds its parent open, as the registry does.
        let parent = parent.filter(|p| match spans.slot(p) {
            Some(slot) => {
                slot.refs += 1;
                true
            }
            None => false,
        });
        spans.insert(attrs.metadata(), parent, data)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let fields = WasiObserveLayer::record_fields(values);
        if let Some(data) = self.spans().data(span) {
            WasiObserveLayer::apply_record(data, fields);
        }
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        let mut spans = self.spans();
        let Some(follows) = spans.data(follows).map(|d| d.cx.clone()) else {
            return;
        };
        if let Some(data) = spans.data(span) {
            WasiObserveLayer::follows_from(data, &follows);
        }
    }

    fn event(&self, event: &Event<'_>) {
        let span = match event.parent() {
            Some(id) => Some(id.clone()),
            None if event.is_contextual() => current_id(),
            None => None,
        };
        let fields = WasiObserveLayer::event_fields(event);
        let mut spans = self.spans();
        // A span gone or never seen is no span, as in the registry.
        let Some(slot) = span.as_ref().and_then(|id| spans.slot(id)) else {
            drop(spans);
            return self.layer.emit_event(event.metadata(), fields, None);
        };
        if let Some(data) = slot.data.as_mut() {
            self.layer.emit_event(event.metadata(), fields, Some(data));
        }
    }

    fn enter(&self, span: &Id) {
        let fresh = STACK
            .try_with(|s| {
                let mut stack = s.borrow_mut();
                let dup = stack.iter().any(|(id, _)| id == span);
                stack.push((span.clone(), dup));
                !dup
            })
            .unwrap_or(false);
        if fresh {
            self.clone_span(span);
        }
    }

    fn exit(&self, span: &Id) {
        let held = STACK
            .try_with(|s| {
                let mut stack = s.borrow_mut();
                let at = stack.iter().rposition(|(id, _)| id == span)?;
                Some(!stack.remove(at).1)
            })
            .ok()
            .flatten()
            .unwrap_or(false);
        if held {
            self.try_close(span.clone());
        }
    }

    fn clone_span(&self, span: &Id) -> Id {
        if let Some(slot) = self.spans().slot(span) {
            slot.refs += 1;
        }
        span.clone()
    }

    fn try_close(&self, span: Id) -> bool {
        let Some(mut parent) = self.release(&span) else {
            return false;
        };
        // A loop, not recursion: closing a span can close its parent, and
        // so on up a chain as deep as the program made it.
        while let Some(p) = parent {
            match self.release(&p) {
                Some(next) => parent = next,
                None => break,
            }
        }
        true
    }

    fn current_span(&self) -> Current {
        let Some(id) = current_id() else {
            return Current::none();
        };
        match self.spans().slot(&id) {
            Some(slot) => Current::new(id, slot.meta),
            None => Current::none(),
        }
    }
}

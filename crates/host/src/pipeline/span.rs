//! Where every span is born and where it leaves for export.
//!
//! Guest spans (every interface), host-made spans (SERVER, CLIENT, import and
//! export calls) and function frames all start with
//! [`Telemetry::begin_span`] (or, for frames, [`Telemetry::frame_context`])
//! and end with [`Telemetry::end_span`]: ids and the sampling decision
//! ([`sampler`](super::sampler)) are made here, the count and length
//! [`limits`](super::limits) are applied here once more, and a finished
//! span is handed to the span queue here and nowhere else.

use std::time::SystemTime;

use std::fmt;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status};
use opentelemetry_sdk::trace::{IdGenerator as _, SpanData, SpanEvents, SpanLinks};

use super::Telemetry;
use super::budget::{attrs_bytes, event_bytes, kv_bytes, link_bytes, status_bytes};
use super::limits::Checker;
use super::sampler::{frame_sampling, sample};
use super::stats::Stats;

/// What a recording span has collected until it ends. Its fields are read
/// freely, but changed only through its methods, which keep
/// [`bytes`](Self::bytes) true for the store's byte budget.
pub(crate) struct SpanRecord {
    pub name: String,
    pub kind: SpanKind,
    parent_span_id: SpanId,
    parent_is_remote: bool,
    pub start: SystemTime,
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes: u32,
    pub events: Vec<Event>,
    pub dropped_events: u32,
    pub links: Vec<Link>,
    pub dropped_links: u32,
    pub status: Status,
    /// Sampled: exported when it ends (a record-only span is not).
    sampled: bool,
    /// The bytes it holds (see [`budget`](super::budget)).
    bytes: usize,
}

/// What a producer knows of a span it starts; the limits have been applied
/// by its [`Checker`](super::limits::Checker), and are checked again here.
pub(crate) struct NewSpan<'a> {
    pub name: String,
    pub kind: SpanKind,
    /// `None`: a new trace.
    pub parent: Option<&'a SpanContext>,
    pub start: SystemTime,
    pub attributes: Vec<KeyValue>,
    pub dropped_attributes: u32,
    pub links: Vec<Link>,
    pub dropped_links: u32,
}

impl NewSpan<'_> {
    /// A span that starts now, with attributes whose text came from outside
    /// the host (cut to the limits here).
    pub fn now(
        name: String,
        kind: SpanKind,
        parent: Option<&SpanContext>,
        attributes: Vec<KeyValue>,
    ) -> NewSpan<'_> {
        NewSpan {
            name,
            kind,
            parent,
            start: SystemTime::now(),
            attributes,
            dropped_attributes: 0,
            links: Vec::new(),
            dropped_links: 0,
        }
    }
}

impl SpanRecord {
    /// The bytes it holds: itself, its name, attributes, events, links and
    /// status.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn count_bytes(&self) -> usize {
        std::mem::size_of::<SpanRecord>()
            + self.name.len()
            + attrs_bytes(&self.attributes)
            + self.events.iter().map(event_bytes).sum::<usize>()
            + self.links.iter().map(link_bytes).sum::<usize>()
            + status_bytes(&self.status)
    }

    /// Sets (or replaces) an attribute, within the count and length limits.
    pub fn set_attribute(&mut self, kv: KeyValue, t: &Telemetry) {
        let kv = t.checker().bounded(kv);
        let max = t.limits().attributes_per_span;
        let added = kv_bytes(&kv);
        if let Some(old) = self.attributes.iter_mut().find(|old| old.key == kv.key) {
            self.bytes = self.bytes.saturating_sub(kv_bytes(old)) + added;
            *old = kv;
        } else if self.attributes.len() < max {
            self.attributes.push(kv);
            self.bytes += added;
        } else {
            self.dropped_attributes = self.dropped_attributes.saturating_add(1);
            Stats::add(&t.counters().attributes_dropped, 1);
        }
    }

    /// Applies attributes as [`Checker::merge_attributes`] does (a key
    /// given again replaces its value), within `max`.
    pub fn merge_attributes(&mut self, check: &Checker<'_>, new: Vec<KeyValue>, max: usize) {
        let before = attrs_bytes(&self.attributes);
        let dropped = check.merge_attributes(&mut self.attributes, new, max);
        self.dropped_attributes = self.dropped_attributes.saturating_add(dropped);
        self.bytes = self.bytes.saturating_sub(before) + attrs_bytes(&self.attributes);
    }

    /// Sets the status as OpenTelemetry says: `Unset` is ignored and `Ok`
    /// is final.
    pub fn set_status(&mut self, status: Status) {
        if status != Status::Unset && self.status != Status::Ok {
            self.bytes =
                self.bytes.saturating_sub(status_bytes(&self.status)) + status_bytes(&status);
            self.status = status;
        }
    }

    /// Renames it.
    pub fn set_name(&mut self, name: String) {
        self.bytes = self.bytes.saturating_sub(self.name.len()) + name.len();
        self.name = name;
    }

    /// Adds an event, within the event count limit.
    pub fn add_event(&mut self, event: Event, t: &Telemetry) {
        if self.events.len() >= t.limits().events_per_span {
            self.dropped_events = self.dropped_events.saturating_add(1);
            Stats::add(&t.counters().events_dropped, 1);
        } else {
            self.bytes += event_bytes(&event);
            self.events.push(event);
        }
    }

    /// Adds links (already within the link limit) and counts those dropped.
    pub fn add_links(&mut self, links: Vec<Link>, dropped: u32) {
        self.bytes += links.iter().map(link_bytes).sum::<usize>();
        self.links.extend(links);
        self.dropped_links = self.dropped_links.saturating_add(dropped);
    }
}

impl Telemetry {
    /// Starts a span: a new trace id unless it has a parent, a span id, the
    /// sampler's decision. The record is `None` when the span records nothing
    /// (sampled out, or telemetry disabled): every later call on it is then
    /// a no-op for its producer.
    pub(crate) fn begin_span(&self, span: NewSpan<'_>) -> (SpanContext, Option<Box<SpanRecord>>) {
        let p = &self.inner;
        if !p.enabled {
            return (SpanContext::NONE, None);
        }
        let parent = span.parent.filter(|p| p.is_valid());
        let trace_id = match parent {
            Some(p) => p.trace_id(),
            None => p.ids.new_trace_id(),
        };
        let check = self.checker();
        let name = check.string(span.name);
        let sampling = sample(
            &*p.sampler,
            parent,
            trace_id,
            &name,
            &span.kind,
            &span.attributes,
            &span.links,
        );
        let cx = SpanContext::new(
            trace_id,
            p.ids.new_span_id(),
            sampling.flags,
            false,
            sampling.trace_state,
        );
        if !sampling.recording {
            return (cx, None);
        }
        let limits = &p.limits;
        let mut attributes = span.attributes;
        let mut dropped_attributes = span.dropped_attributes;
        attributes.extend(sampling.attributes);
        if attributes.len() > limits.attributes_per_span {
            let cut = attributes.len() - limits.attributes_per_span;
            attributes.truncate(limits.attributes_per_span);
            dropped_attributes = dropped_attributes.saturating_add(cut as u32);
            Stats::add(&p.stats.attributes_dropped, cut as u64);
        }
        for kv in &mut attributes {
            check.bound(kv);
        }
        let mut links = span.links;
        let mut dropped_links = span.dropped_links;
        if links.len() > limits.links_per_span {
            let cut = links.len() - limits.links_per_span;
            links.truncate(limits.links_per_span);
            dropped_links = dropped_links.saturating_add(cut as u32);
            Stats::add(&p.stats.links_dropped, cut as u64);
        }
        let mut record = Box::new(SpanRecord {
            name,
            kind: span.kind,
            parent_span_id: parent.map_or(SpanId::INVALID, |p| p.span_id()),
            parent_is_remote: parent.is_some_and(|p| p.is_remote()),
            start: span.start,
            attributes,
            dropped_attributes,
            events: Vec::new(),
            dropped_events: 0,
            links,
            dropped_links,
            status: Status::Unset,
            sampled: sampling.flags.is_sampled(),
            bytes: 0,
        });
        record.bytes = record.count_bytes();
        (cx, Some(record))
    }

    /// Moves a span under `parent` (a new trace when `None`): a new trace id
    /// and the sampler's decision as if it started there; its span id stays.
    /// The record is dropped if the span no longer records.
    pub(crate) fn move_span(
        &self,
        cx: &mut SpanContext,
        record: &mut Option<Box<SpanRecord>>,
        parent: Option<&SpanContext>,
    ) {
        let p = &self.inner;
        let trace_id = match parent {
            Some(p) => p.trace_id(),
            None => p.ids.new_trace_id(),
        };
        let (name, kind, attributes, links) = match record.as_deref() {
            Some(r) => (
                r.name.as_str(),
                r.kind.clone(),
                &r.attributes[..],
                &r.links[..],
            ),
            None => ("", SpanKind::Internal, &[][..], &[][..]),
        };
        let sampling = sample(
            &*p.sampler,
            parent,
            trace_id,
            name,
            &kind,
            attributes,
            links,
        );
        *cx = SpanContext::new(
            trace_id,
            cx.span_id(),
            sampling.flags,
            false,
            sampling.trace_state,
        );
        match record.as_deref_mut() {
            Some(r) if sampling.recording => {
                r.parent_span_id = parent.map_or(SpanId::INVALID, |p| p.span_id());
                r.parent_is_remote = parent.is_some_and(|p| p.is_remote());
                r.sampled = sampling.flags.is_sampled();
            }
            _ => *record = None,
        }
    }

    /// The identity of a function frame being kept, under `parent` (see the
    /// [`sampler`](super::sampler) policy); `name` is asked only for a
    /// root frame.
    pub(crate) fn frame_context(
        &self,
        parent: Option<&SpanContext>,
        name: impl FnOnce() -> String,
    ) -> SpanContext {
        let p = &self.inner;
        let trace_id = match parent {
            Some(parent) => parent.trace_id(),
            None => p.ids.new_trace_id(),
        };
        let (flags, state) = frame_sampling(&*p.sampler, parent, trace_id, name);
        SpanContext::new(trace_id, p.ids.new_span_id(), flags, false, state)
    }

    /// The record of a function frame that ends: internal, its data already
    /// bounded by the frame's producer.
    pub(crate) fn frame_record(
        &self,
        name: String,
        parent: Option<&SpanContext>,
        start: SystemTime,
        attributes: Vec<KeyValue>,
        events: Vec<Event>,
        status: Status,
    ) -> Box<SpanRecord> {
        // Made as it ends: no budget to keep, so its bytes are not counted.
        Box::new(SpanRecord {
            name: self.checker().string(name),
            kind: SpanKind::Internal,
            parent_span_id: parent.map_or(SpanId::INVALID, |p| p.span_id()),
            parent_is_remote: parent.is_some_and(|p| p.is_remote()),
            start,
            attributes,
            dropped_attributes: 0,
            events,
            dropped_events: 0,
            links: Vec::new(),
            dropped_links: 0,
            status,
            sampled: true,
            bytes: 0,
        })
    }

    /// Ends a span at `end` and hands it to the span queue, if it is sampled
    /// and the pipeline exports traces. An end before the start is clamped to
    /// the start (counted).
    #[allow(clippy::boxed_local, reason = "records live boxed in their producers")]
    pub(crate) fn end_span(&self, cx: SpanContext, record: Box<SpanRecord>, end: SystemTime) {
        let p = &self.inner;
        let Some(queue) = &p.spans else { return };
        if !record.sampled {
            return;
        }
        let r = *record;
        let end = if end < r.start {
            Stats::add(&p.stats.invalid_input, 1);
            r.start
        } else {
            end
        };
        // Both are non-exhaustive, with public fields.
        let mut events = SpanEvents::default();
        events.events = r.events;
        events.dropped_count = r.dropped_events;
        let mut links = SpanLinks::default();
        links.links = r.links;
        links.dropped_count = r.dropped_links;
        let data = SpanData {
            span_context: cx,
            parent_span_id: r.parent_span_id,
            parent_span_is_remote: r.parent_is_remote,
            span_kind: r.kind,
            name: r.name.into(),
            start_time: r.start,
            end_time: end,
            attributes: r.attributes,
            dropped_attributes_count: r.dropped_attributes,
            events,
            links,
            status: r.status,
            instrumentation_scope: p.scope.clone(),
        };
        Stats::add(&p.stats.spans_ended, 1);
        queue.push(data);
    }
}

/// A span the host itself starts and ends, on any thread. Guest spans can
/// nest under it ([`WasiObserveCtxBuilder::with_parent`](crate::WasiObserveCtxBuilder::with_parent)
/// with its [`context`](Self::context)). Made by [`Telemetry::start_span`];
/// [`crate::host_spans`] makes the ones around requests and calls.
///
/// Dropping it ends it; [`end`](Self::end) says so explicitly.
pub struct HostSpan {
    cx: SpanContext,
    record: Option<Box<SpanRecord>>,
    telemetry: Telemetry,
}

impl HostSpan {
    pub(crate) fn start(
        telemetry: &Telemetry,
        name: String,
        kind: SpanKind,
        parent: Option<&SpanContext>,
        attributes: Vec<KeyValue>,
    ) -> HostSpan {
        Self::start_linked(telemetry, name, kind, parent, attributes, Vec::new())
    }

    /// As [`start`](Self::start), with links (given at the start, so the
    /// sampler sees them).
    pub(crate) fn start_linked(
        telemetry: &Telemetry,
        name: String,
        kind: SpanKind,
        parent: Option<&SpanContext>,
        attributes: Vec<KeyValue>,
        links: Vec<Link>,
    ) -> HostSpan {
        let mut span = NewSpan::now(name, kind, parent, attributes);
        span.links = links;
        let (cx, record) = telemetry.begin_span(span);
        HostSpan {
            cx,
            record,
            telemetry: telemetry.clone(),
        }
    }

    /// Its context (invalid when telemetry is disabled): the parent for
    /// guest spans, or what to propagate downstream.
    pub fn context(&self) -> &SpanContext {
        &self.cx
    }

    /// Whether it records anything (sampled in, telemetry on).
    pub fn is_recording(&self) -> bool {
        self.record.is_some()
    }

    /// Sets an attribute (replacing one with the same key).
    pub fn set_attribute(&mut self, kv: KeyValue) {
        if let Some(r) = &mut self.record {
            r.set_attribute(kv, &self.telemetry);
        }
    }

    /// Sets its status; an `Ok` status is final, as in OpenTelemetry.
    pub fn set_status(&mut self, status: Status) {
        if let Some(r) = &mut self.record
            && r.status != Status::Ok
        {
            r.status = status;
        }
    }

    /// Ends it now and hands it to the pipeline.
    pub fn end(self) {}

    /// Drops it without exporting it (a call shorter than a filter's
    /// minimum).
    pub fn discard(mut self) {
        self.record = None;
    }
}

impl Drop for HostSpan {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            self.telemetry
                .end_span(self.cx.clone(), record, SystemTime::now());
        }
    }
}

impl fmt::Debug for HostSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostSpan")
            .field("context", &self.cx)
            .field("recording", &self.record.is_some())
            .finish_non_exhaustive()
    }
}

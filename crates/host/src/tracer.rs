//! `wasi:observe/tracer`: span state held by the host for its guests.
//!
//! A span's parent is the innermost span of the same store that was started
//! and not yet ended; if there is none, the store's ambient parent; with
//! `new-root`, none. A recording span is a lean record that becomes
//! OpenTelemetry `SpanData` when it ends. Spans that are sampled out, started
//! while telemetry is disabled, or started beyond the open-span limit are
//! non-recording, and every call on them is a cheap no-op.

use std::time::SystemTime;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator as _, SamplingDecision, SpanData, SpanEvents, SpanLinks,
};
use wasmtime::component::Resource;

use crate::bindings::Datetime;
use crate::bindings::tracer::{self as wit, Host, HostSpan, StartOptions};
use crate::convert::{Checker, to_wit_span_context};
use crate::ctx::WasiObserveCtx;
use crate::stats::Stats;
use crate::telemetry::Telemetry;

/// The host side of a guest's `span` resource. Its state lives in the
/// store's [`WasiObserveCtx`]; the handle's rep indexes it.
pub struct GuestSpan;

/// The rep of every span that records nothing and has no state: spans started
/// while telemetry is disabled or beyond the open-span limit.
const NOOP: u32 = u32::MAX;

/// One span handle's state.
pub(crate) enum SpanSlot {
    Open {
        cx: SpanContext,
        record: Option<Box<SpanRecord>>,
    },
    Ended {
        cx: SpanContext,
    },
}

impl SpanSlot {
    pub(crate) fn context(&self) -> &SpanContext {
        match self {
            SpanSlot::Open { cx, .. } | SpanSlot::Ended { cx } => cx,
        }
    }

    /// Marks the span ended; returns its context and record the first time.
    pub(crate) fn end(&mut self) -> Option<(SpanContext, Option<Box<SpanRecord>>)> {
        let SpanSlot::Open { cx, .. } = self else {
            return None;
        };
        let ended = SpanSlot::Ended { cx: cx.clone() };
        match std::mem::replace(self, ended) {
            SpanSlot::Open { cx, record } => Some((cx, record)),
            SpanSlot::Ended { .. } => None,
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

/// What a recording span has collected until it ends.
pub(crate) struct SpanRecord {
    name: String,
    kind: SpanKind,
    parent_span_id: SpanId,
    parent_is_remote: bool,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    dropped_attributes: u32,
    events: Vec<opentelemetry::trace::Event>,
    dropped_events: u32,
    links: Vec<opentelemetry::trace::Link>,
    dropped_links: u32,
    pub(crate) status: Status,
    /// Sampled: exported when it ends (a record-only span is not).
    sampled: bool,
}

impl SpanRecord {
    /// The record of a function span (see [`crate::instrument`]): internal,
    /// sampled, its limits already applied.
    pub(crate) fn function(
        name: String,
        parent: Option<&SpanContext>,
        start: SystemTime,
        attributes: Vec<KeyValue>,
        events: Vec<opentelemetry::trace::Event>,
        status: Status,
    ) -> Self {
        SpanRecord {
            name,
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
        }
    }

    /// Hands the finished span to the pipeline.
    pub(crate) fn export(self, cx: SpanContext, end: SystemTime, t: &Telemetry) {
        let inner = &t.inner;
        let Some(queue) = &inner.spans else { return };
        if !self.sampled {
            return;
        }
        let r = self;
        let end = if end < r.start {
            Stats::add(&inner.stats.invalid_input, 1);
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
            instrumentation_scope: inner.scope.clone(),
        };
        Stats::add(&inner.stats.spans_ended, 1);
        queue.push(data);
    }
}

fn kind(k: wit::SpanKind) -> SpanKind {
    match k {
        wit::SpanKind::Client => SpanKind::Client,
        wit::SpanKind::Server => SpanKind::Server,
        wit::SpanKind::Producer => SpanKind::Producer,
        wit::SpanKind::Consumer => SpanKind::Consumer,
        wit::SpanKind::Internal => SpanKind::Internal,
    }
}

impl WasiObserveCtx {
    pub(crate) fn checker(&self) -> Checker<'_> {
        Checker {
            limits: &self.telemetry.inner.limits,
            stats: &self.telemetry.inner.stats,
        }
    }

    /// Converts guest links, applying the count limits and dropping links to
    /// malformed span contexts.
    fn links(&self, links: Vec<wit::Link>, room: usize) -> (Vec<opentelemetry::trace::Link>, u32) {
        let check = self.checker();
        let limits = &self.telemetry.inner.limits;
        let mut out = Vec::new();
        let mut dropped = 0u32;
        for link in links {
            let Some(cx) = check.span_context(link.span_context) else {
                dropped = dropped.saturating_add(1);
                continue;
            };
            if out.len() >= room {
                dropped = dropped.saturating_add(1);
                continue;
            }
            let (attrs, attrs_dropped) =
                check.attributes(link.attributes, limits.attributes_per_link);
            out.push(opentelemetry::trace::Link::new(cx, attrs, attrs_dropped));
        }
        Stats::add(&self.telemetry.inner.stats.links_dropped, dropped.into());
        (out, dropped)
    }

    /// Adds an event to a recording span, within the event count limit.
    pub(crate) fn push_event(
        &mut self,
        rep: u32,
        name: String,
        time: SystemTime,
        attributes: Vec<KeyValue>,
        dropped_attributes: u32,
    ) {
        let inner = &self.telemetry.inner;
        let Some(r) = self.spans.get_mut(rep as usize).and_then(SpanSlot::record) else {
            return;
        };
        if r.events.len() >= inner.limits.events_per_span {
            r.dropped_events = r.dropped_events.saturating_add(1);
            Stats::add(&inner.stats.events_dropped, 1);
            return;
        }
        r.events.push(opentelemetry::trace::Event::new(
            name,
            time,
            attributes,
            dropped_attributes,
        ));
    }

    fn slot(&mut self, span: &Resource<GuestSpan>) -> Option<&mut SpanSlot> {
        self.spans.get_mut(span.rep() as usize)
    }

    fn end_span(&mut self, key: u32, timestamp: Option<Datetime>) {
        let end = self.checker().timestamp_or_now(timestamp);
        let Some((cx, record)) = self.spans.get_mut(key as usize).and_then(SpanSlot::end) else {
            return;
        };
        if let Some(pos) = self.open.iter().rposition(|&k| k == key) {
            self.open.remove(pos);
        }
        if let Some(record) = record {
            record.export(cx, end, &self.telemetry);
        }
        self.note_guest_resumed();
    }
}

/// Where a new span hangs in its trace.
pub(crate) enum ParentChoice {
    /// `tracer.start`: the innermost open span, else the ambient parent.
    Implicit,
    /// The ambient parent, if any.
    Ambient,
    /// This context (a span of the store, or a remote one).
    Given(SpanContext),
}

/// A span just started: its handle rep, context and whether it records.
pub(crate) struct Started {
    pub(crate) rep: u32,
    pub(crate) cx: SpanContext,
    pub(crate) recording: bool,
}

impl Started {
    const NOOP: Started = Started {
        rep: NOOP,
        cx: SpanContext::NONE,
        recording: false,
    };
}

impl WasiObserveCtx {
    /// Starts a span: applies the limits, samples, and keeps its state.
    pub(crate) fn start_span(
        &mut self,
        name: String,
        options: Option<StartOptions>,
        parent: ParentChoice,
        shared: Option<&[KeyValue]>,
    ) -> Started {
        let inner = self.telemetry.inner.clone();
        if !inner.enabled {
            return Started::NOOP;
        }
        if self.open.len() >= inner.limits.open_spans_per_store {
            Stats::add(&inner.stats.spans_dropped_open_limit, 1);
            return Started::NOOP;
        }
        let options = options.unwrap_or(StartOptions {
            new_root: false,
            span_kind: None,
            attributes: None,
            links: None,
            timestamp: None,
        });
        let parent = if options.new_root {
            None
        } else {
            self.resolve(parent)
        };
        let check = self.checker();
        let name = check.string(name);
        let kind = kind(options.span_kind.unwrap_or(wit::SpanKind::Internal));
        let max = inner.limits.attributes_per_span;
        let shared_kept = shared.map_or(&[][..], |s| &s[..s.len().min(max)]);
        let given = options.attributes.as_ref().map_or(0, Vec::len);
        // One allocation for the shared set and the given attributes.
        let mut attributes: Vec<KeyValue> =
            Vec::with_capacity(shared_kept.len().saturating_add(given).min(max));
        attributes.extend_from_slice(shared_kept);
        let mut dropped_attributes = shared.map_or(0, |s| s.len().saturating_sub(max) as u32);
        dropped_attributes = dropped_attributes.saturating_add(check.merge_attributes(
            &mut attributes,
            options.attributes.unwrap_or_default(),
            max,
        ));
        let start = check.timestamp_or_now(options.timestamp);
        let (links, dropped_links) = self.links(
            options.links.unwrap_or_default(),
            inner.limits.links_per_span,
        );

        let trace_id = match &parent {
            Some(p) => p.trace_id(),
            None => inner.ids.new_trace_id(),
        };
        let sampling = sample(
            &inner,
            parent.as_ref(),
            trace_id,
            &name,
            &kind,
            &attributes,
            &links,
        );
        let cx = SpanContext::new(
            trace_id,
            inner.ids.new_span_id(),
            sampling.flags,
            false,
            sampling.trace_state,
        );
        let record = sampling.recording.then(|| {
            for kv in sampling.attributes {
                if attributes.len() < inner.limits.attributes_per_span {
                    attributes.push(kv);
                }
            }
            Box::new(SpanRecord {
                name,
                kind,
                parent_span_id: parent.as_ref().map_or(SpanId::INVALID, |p| p.span_id()),
                parent_is_remote: parent.as_ref().is_some_and(|p| p.is_remote()),
                start,
                attributes,
                dropped_attributes,
                events: Vec::new(),
                dropped_events: 0,
                links,
                dropped_links,
                status: Status::Unset,
                sampled: sampling.flags.is_sampled(),
            })
        });
        let recording = record.is_some();
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

    fn resolve(&mut self, parent: ParentChoice) -> Option<SpanContext> {
        match parent {
            ParentChoice::Implicit => self.implicit_parent(),
            ParentChoice::Ambient => self.ambient.clone(),
            ParentChoice::Given(cx) => Some(cx).filter(SpanContext::is_valid),
        }
    }

    /// The context of a span handle of this store (ended or not); `None` for
    /// a non-recording handle without state.
    pub(crate) fn span_context_of(&self, rep: u32) -> Option<&SpanContext> {
        self.spans.get(rep as usize).map(SpanSlot::context)
    }

    /// Moves an open span under `parent`: a new trace id (the parent's, or a
    /// fresh one), parent id and sampling flags; the span id stays. A parent
    /// in the span's own trace is refused. Returns the span's context,
    /// changed or not.
    pub(crate) fn reparent(&mut self, rep: u32, parent: ParentChoice) -> SpanContext {
        let inner = self.telemetry.inner.clone();
        let parent = self.resolve(parent);
        let Some(SpanSlot::Open { cx, record }) = self.spans.get_mut(rep as usize) else {
            return self
                .span_context_of(rep)
                .cloned()
                .unwrap_or(SpanContext::NONE);
        };
        // A parent in the span's own trace could be the span itself or one
        // of its descendants, which would make a cycle: refuse (counted).
        if parent
            .as_ref()
            .is_some_and(|p| p.trace_id() == cx.trace_id())
        {
            Stats::add(&inner.stats.invalid_input, 1);
            return cx.clone();
        }
        let trace_id = match &parent {
            Some(p) => p.trace_id(),
            None => inner.ids.new_trace_id(),
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
            &inner,
            parent.as_ref(),
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
        if let Some(r) = record.as_deref_mut() {
            r.parent_span_id = parent.as_ref().map_or(SpanId::INVALID, |p| p.span_id());
            r.parent_is_remote = parent.as_ref().is_some_and(|p| p.is_remote());
            r.sampled = sampling.flags.is_sampled();
        }
        if !sampling.recording {
            *record = None;
        }
        cx.clone()
    }
}

/// Starts a span the host makes itself (a request span, an outgoing call):
/// sampled like a guest span, with no store state. `None` record: not
/// recording (sampled out, or telemetry disabled).
pub(crate) fn start_host_span(
    inner: &crate::telemetry::Inner,
    name: String,
    kind: SpanKind,
    parent: Option<&SpanContext>,
    mut attributes: Vec<KeyValue>,
) -> (SpanContext, Option<Box<SpanRecord>>) {
    if !inner.enabled {
        return (SpanContext::NONE, None);
    }
    let parent = parent.filter(|p| p.is_valid());
    let trace_id = match parent {
        Some(p) => p.trace_id(),
        None => inner.ids.new_trace_id(),
    };
    let sampling = sample(inner, parent, trace_id, &name, &kind, &attributes, &[]);
    let cx = SpanContext::new(
        trace_id,
        inner.ids.new_span_id(),
        sampling.flags,
        false,
        sampling.trace_state,
    );
    let record = sampling.recording.then(|| {
        attributes.extend(sampling.attributes);
        let max = inner.limits.attributes_per_span;
        let dropped_attributes = attributes.len().saturating_sub(max) as u32;
        attributes.truncate(max);
        let attributes = attributes
            .into_iter()
            .map(|kv| bounded(kv, inner))
            .collect();
        Box::new(SpanRecord {
            name,
            kind,
            parent_span_id: parent.map_or(SpanId::INVALID, |p| p.span_id()),
            parent_is_remote: parent.is_some_and(|p| p.is_remote()),
            start: SystemTime::now(),
            attributes,
            dropped_attributes,
            events: Vec::new(),
            dropped_events: 0,
            links: Vec::new(),
            dropped_links: 0,
            status: Status::Unset,
            sampled: sampling.flags.is_sampled(),
        })
    });
    (cx, record)
}

/// A host-made attribute whose text came from outside (a request's path,
/// headers, a guest's URL), cut to the value length limit (counted).
fn bounded(mut kv: KeyValue, inner: &crate::telemetry::Inner) -> KeyValue {
    if let opentelemetry::Value::String(s) = &kv.value
        && s.as_str().len() > inner.limits.value_length
    {
        let mut text = s.as_str().to_string();
        crate::limits::truncate(&mut text, inner.limits.value_length);
        Stats::add(&inner.stats.values_truncated, 1);
        kv.value = text.into();
    }
    kv
}

impl SpanRecord {
    /// Sets (or replaces) a host-made attribute, within the attribute count
    /// and value length limits.
    pub(crate) fn set_attribute(&mut self, kv: KeyValue, inner: &crate::telemetry::Inner) {
        let kv = bounded(kv, inner);
        let max = inner.limits.attributes_per_span;
        if let Some(old) = self.attributes.iter_mut().find(|old| old.key == kv.key) {
            *old = kv;
        } else if self.attributes.len() < max {
            self.attributes.push(kv);
        } else {
            self.dropped_attributes = self.dropped_attributes.saturating_add(1);
        }
    }
}

/// Whether a new root span (of a function) in `trace_id` is sampled.
pub(crate) fn sampled_root(
    inner: &crate::telemetry::Inner,
    trace_id: opentelemetry::trace::TraceId,
    name: &str,
) -> bool {
    sample(inner, None, trace_id, name, &SpanKind::Internal, &[], &[])
        .flags
        .is_sampled()
}

/// A sampler's decision, in the terms the tracer needs.
struct Sampling {
    flags: TraceFlags,
    recording: bool,
    trace_state: opentelemetry::trace::TraceState,
    attributes: Vec<KeyValue>,
}

fn sample(
    inner: &crate::telemetry::Inner,
    parent: Option<&SpanContext>,
    trace_id: opentelemetry::trace::TraceId,
    name: &str,
    kind: &SpanKind,
    attributes: &[KeyValue],
    links: &[opentelemetry::trace::Link],
) -> Sampling {
    let parent_cx = parent.map(|p| Context::new().with_remote_span_context(p.clone()));
    let result =
        inner
            .sampler
            .should_sample(parent_cx.as_ref(), trace_id, name, kind, attributes, links);
    let sampled = result.decision == SamplingDecision::RecordAndSample;
    Sampling {
        flags: if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::NOT_SAMPLED
        },
        recording: result.decision != SamplingDecision::Drop,
        trace_state: result.trace_state,
        attributes: result.attributes,
    }
}

impl Host for WasiObserveCtx {
    fn start(
        &mut self,
        name: String,
        options: Option<StartOptions>,
    ) -> wasmtime::Result<Resource<GuestSpan>> {
        let started = self.start_span(name, options, ParentChoice::Implicit, None);
        Ok(Resource::new_own(started.rep))
    }
}

impl HostSpan for WasiObserveCtx {
    fn span_context(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<wit::SpanContext> {
        let cx = self
            .slot(&span)
            .map_or(SpanContext::NONE, |s| s.context().clone());
        Ok(to_wit_span_context(&cx))
    }

    fn is_recording(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<bool> {
        Ok(self.slot(&span).and_then(SpanSlot::record).is_some())
    }

    fn set_attributes(
        &mut self,
        span: Resource<GuestSpan>,
        attributes: Vec<wit::KeyValue>,
    ) -> wasmtime::Result<()> {
        let inner = self.telemetry.inner.clone();
        let check = Checker {
            limits: &inner.limits,
            stats: &inner.stats,
        };
        if let Some(r) = self.slot(&span).and_then(SpanSlot::record) {
            let dropped = check.merge_attributes(
                &mut r.attributes,
                attributes,
                inner.limits.attributes_per_span,
            );
            r.dropped_attributes = r.dropped_attributes.saturating_add(dropped);
        }
        Ok(())
    }

    fn add_event(
        &mut self,
        span: Resource<GuestSpan>,
        name: String,
        timestamp: Option<Datetime>,
        attributes: Option<Vec<wit::KeyValue>>,
    ) -> wasmtime::Result<()> {
        if self.slot(&span).and_then(SpanSlot::record).is_none() {
            return Ok(());
        }
        let check = self.checker();
        let time = check.timestamp_or_now(timestamp);
        let (attrs, dropped) = check.attributes(
            attributes.unwrap_or_default(),
            self.telemetry.inner.limits.attributes_per_event,
        );
        let name = check.string(name);
        self.push_event(span.rep(), name, time, attrs, dropped);
        Ok(())
    }

    fn add_link(&mut self, span: Resource<GuestSpan>, link: wit::Link) -> wasmtime::Result<()> {
        let Some(held) = self
            .slot(&span)
            .and_then(SpanSlot::record)
            .map(|r| r.links.len())
        else {
            return Ok(());
        };
        let room = self
            .telemetry
            .inner
            .limits
            .links_per_span
            .saturating_sub(held);
        let (links, dropped) = self.links(vec![link], room);
        if let Some(r) = self.slot(&span).and_then(SpanSlot::record) {
            r.links.extend(links);
            r.dropped_links = r.dropped_links.saturating_add(dropped);
        }
        Ok(())
    }

    fn set_status(
        &mut self,
        span: Resource<GuestSpan>,
        status: wit::Status,
    ) -> wasmtime::Result<()> {
        let status = match status {
            // Cut (and count) before borrowing the span, as for every string.
            wit::Status::Error(description) => Status::error(self.checker().string(description)),
            wit::Status::Ok => Status::Ok,
            wit::Status::Unset => Status::Unset,
        };
        let Some(r) = self.slot(&span).and_then(SpanSlot::record) else {
            return Ok(());
        };
        // OpenTelemetry: setting Unset is ignored, and Ok is final.
        if status != Status::Unset && r.status != Status::Ok {
            r.status = status;
        }
        Ok(())
    }

    fn update_name(&mut self, span: Resource<GuestSpan>, name: String) -> wasmtime::Result<()> {
        let name = self.checker().string(name);
        if let Some(r) = self.slot(&span).and_then(SpanSlot::record) {
            r.name = name;
        }
        Ok(())
    }

    fn end(
        &mut self,
        span: Resource<GuestSpan>,
        timestamp: Option<Datetime>,
    ) -> wasmtime::Result<()> {
        self.end_span(span.rep(), timestamp);
        Ok(())
    }

    fn drop(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<()> {
        let key = span.rep();
        if key == NOOP {
            return Ok(());
        }
        self.end_span(key, None);
        self.spans.try_remove(key as usize);
        Ok(())
    }
}

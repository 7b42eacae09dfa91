//! `wasi:observe/tracer`: span state held by the host for its guests.
//!
//! A span's parent is the innermost span of the same store that was started
//! and not yet ended; if there is none, the store's ambient parent; with
//! `new-root`, none (see [`crate::scope`]). Spans that are sampled out,
//! started while telemetry is disabled, or started beyond the open-span
//! limit are non-recording, and every call on them is a cheap no-op.
//!
//! Status follows OpenTelemetry: setting `unset` is ignored and `ok` is
//! final. A second `end` is a no-op; dropping a span is `end(none)`; calls
//! after `end` are ignored.

use opentelemetry::KeyValue;
use opentelemetry::trace::{Event, SpanKind, Status};
use wasmtime::component::Resource;

use super::values;
use crate::bindings::Datetime;
use crate::bindings::tracer::{self as wit, Host, HostSpan, StartOptions};
use crate::ctx::WasiObserveCtx;
use crate::pipeline::budget::{attrs_bytes, event_bytes, link_bytes, status_bytes};
use crate::scope::{GuestSpan as NewGuestSpan, ParentChoice, Started};

/// The host side of a guest's `span` resource. Its state lives in the
/// store's [`WasiObserveCtx`]; the handle's rep indexes it.
pub struct GuestSpan;

pub(super) fn kind(k: wit::SpanKind) -> SpanKind {
    match k {
        wit::SpanKind::Client => SpanKind::Client,
        wit::SpanKind::Server => SpanKind::Server,
        wit::SpanKind::Producer => SpanKind::Producer,
        wit::SpanKind::Consumer => SpanKind::Consumer,
        wit::SpanKind::Internal => SpanKind::Internal,
    }
}

/// Starts a guest span: converts its options within the limits (after the
/// store admits it) and hands it to the store's scope. `shared` attributes
/// (from `wasi:observe/sdk`) come first.
pub(super) fn start(
    ctx: &mut WasiObserveCtx,
    name: String,
    options: Option<StartOptions>,
    parent: ParentChoice,
    shared: Option<&[KeyValue]>,
) -> Started {
    if !ctx.scope.admits_span() {
        return Started::NOOP;
    }
    let options = options.unwrap_or(StartOptions {
        new_root: false,
        span_kind: None,
        attributes: None,
        links: None,
        timestamp: None,
    });
    let t = ctx.scope.telemetry();
    let check = t.checker();
    let limits = t.limits();
    let name = check.string(name);
    let max = limits.attributes_per_span;
    let shared_kept = shared.map_or(&[][..], |s| &s[..s.len().min(max)]);
    let given = options.attributes.as_ref().map_or(0, Vec::len);
    // One allocation for the shared set and the given attributes.
    let mut attributes: Vec<KeyValue> =
        Vec::with_capacity(shared_kept.len().saturating_add(given).min(max));
    attributes.extend_from_slice(shared_kept);
    let mut dropped_attributes = shared.map_or(0, |s| s.len().saturating_sub(max) as u32);
    dropped_attributes = dropped_attributes.saturating_add(values::merge_attributes(
        &check,
        &mut attributes,
        options.attributes.unwrap_or_default(),
        max,
    ));
    let start = values::timestamp_or_now(&check, options.timestamp);
    let (links, dropped_links) = values::links(
        &check,
        limits,
        options.links.unwrap_or_default(),
        limits.links_per_span,
    );
    let parent = if options.new_root {
        ParentChoice::Root
    } else {
        parent
    };
    let span = NewGuestSpan {
        name,
        kind: kind(options.span_kind.unwrap_or(wit::SpanKind::Internal)),
        start,
        attributes,
        dropped_attributes,
        links,
        dropped_links,
    };
    ctx.scope.start(parent, span)
}

impl Host for WasiObserveCtx {
    fn start(
        &mut self,
        name: String,
        options: Option<StartOptions>,
    ) -> wasmtime::Result<Resource<GuestSpan>> {
        let started = start(self, name, options, ParentChoice::Implicit, None);
        Ok(Resource::new_own(started.rep))
    }
}

impl HostSpan for WasiObserveCtx {
    fn span_context(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<wit::SpanContext> {
        let cx = self
            .scope
            .context_of(span.rep())
            .cloned()
            .unwrap_or(opentelemetry::trace::SpanContext::NONE);
        Ok(values::to_wit_span_context(&cx))
    }

    fn is_recording(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<bool> {
        Ok(self.scope.is_recording(span.rep()))
    }

    fn set_attributes(
        &mut self,
        span: Resource<GuestSpan>,
        attributes: Vec<wit::KeyValue>,
    ) -> wasmtime::Result<()> {
        let rep = span.rep();
        if !self.scope.is_recording(rep) {
            return Ok(());
        }
        let t = self.scope.telemetry();
        let max = t.limits().attributes_per_span;
        let (attrs, dropped) = values::attributes(&t.checker(), attributes, max);
        let (bytes, n) = (attrs_bytes(&attrs), attrs.len() as u64);
        self.scope.update_span(rep, bytes, n, |r, t| {
            r.merge_attributes(&t.checker(), attrs, max);
            r.dropped_attributes = r.dropped_attributes.saturating_add(dropped);
        });
        Ok(())
    }

    fn add_event(
        &mut self,
        span: Resource<GuestSpan>,
        name: String,
        timestamp: Option<Datetime>,
        attributes: Option<Vec<wit::KeyValue>>,
    ) -> wasmtime::Result<()> {
        let rep = span.rep();
        if !self.scope.is_recording(rep) {
            return Ok(());
        }
        let t = self.scope.telemetry();
        let check = t.checker();
        let time = values::timestamp_or_now(&check, timestamp);
        let (attrs, dropped) = values::attributes(
            &check,
            attributes.unwrap_or_default(),
            t.limits().attributes_per_event,
        );
        let event = Event::new(check.string(name), time, attrs, dropped);
        self.scope
            .update_span(rep, event_bytes(&event), 1, |r, t| r.add_event(event, t));
        Ok(())
    }

    fn add_link(&mut self, span: Resource<GuestSpan>, link: wit::Link) -> wasmtime::Result<()> {
        let rep = span.rep();
        let Some(held) = self.scope.links_of(rep) else {
            return Ok(());
        };
        let t = self.scope.telemetry();
        let room = t.limits().links_per_span.saturating_sub(held);
        let (links, dropped) = values::links(&t.checker(), t.limits(), vec![link], room);
        let bytes = links.iter().map(link_bytes).sum();
        self.scope
            .update_span(rep, bytes, 1, |r, _| r.add_links(links, dropped));
        Ok(())
    }

    fn set_status(
        &mut self,
        span: Resource<GuestSpan>,
        status: wit::Status,
    ) -> wasmtime::Result<()> {
        let status = match status {
            // Cut (and count) before borrowing the span, as for every string.
            wit::Status::Error(description) => {
                Status::error(self.scope.telemetry().checker().string(description))
            }
            wit::Status::Ok => Status::Ok,
            wit::Status::Unset => Status::Unset,
        };
        let bytes = status_bytes(&status);
        self.scope
            .update_span(span.rep(), bytes, 1, |r, _| r.set_status(status));
        Ok(())
    }

    fn update_name(&mut self, span: Resource<GuestSpan>, name: String) -> wasmtime::Result<()> {
        let name = self.scope.telemetry().checker().string(name);
        self.scope
            .update_span(span.rep(), name.len(), 1, |r, _| r.set_name(name));
        Ok(())
    }

    fn end(
        &mut self,
        span: Resource<GuestSpan>,
        timestamp: Option<Datetime>,
    ) -> wasmtime::Result<()> {
        let end = values::timestamp_or_now(&self.scope.telemetry().checker(), timestamp);
        self.scope.end(span.rep(), Some(end));
        Ok(())
    }

    fn drop(&mut self, span: Resource<GuestSpan>) -> wasmtime::Result<()> {
        self.scope.release(span.rep());
        Ok(())
    }
}

//! `wasi:observe/sdk`: explicit parents and fewer crossings for guest-side
//! instrumentation libraries (see `wit/sdk.wit` for why it exists).
//!
//! Everything here is the tracer's and the logger's own behaviour reached by
//! another door: `start-span` is `tracer.start` with a chosen parent, `emit`
//! is `wasi:logging` plus `add-event`, `finish` is `set-attributes`,
//! `set-status`, `update-name`, `end` and drop.

use std::sync::Arc;

use opentelemetry as otel;
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId};
use wasmtime::component::Resource;

use super::tracer::GuestSpan;
use super::values;
use crate::bindings::Datetime;
use crate::bindings::logging::Level;
use crate::bindings::sdk::{self as wit, Host, Parent, Signals, SpanEvent};
use crate::bindings::tracer::{self, HostSpan, KeyValue, StartOptions, Status};
use crate::ctx::WasiObserveCtx;
use crate::pipeline::budget::{attrs_bytes, event_bytes};
use crate::pipeline::logs::NewLog;
use crate::scope::ParentChoice;

fn parent_choice(ctx: &WasiObserveCtx, parent: Parent) -> ParentChoice {
    match parent {
        Parent::Ambient => ParentChoice::Ambient,
        Parent::Span(span) => match ctx.scope.context_of(span.rep()) {
            Some(cx) => ParentChoice::Given(cx.clone()),
            // A handle without state (telemetry off, or the open-span
            // limit): its children hang where it would have.
            None => ParentChoice::Ambient,
        },
        Parent::Context(cx) => match wit_context(ctx, cx) {
            Some(cx) => ParentChoice::Given(cx),
            None => ParentChoice::Ambient,
        },
    }
}

/// A guest's span context by value; zero ids make it invalid (counted).
fn wit_context(ctx: &WasiObserveCtx, cx: wit::Context) -> Option<SpanContext> {
    let check = ctx.scope.telemetry().checker();
    let trace_id = (u128::from(cx.trace_id_high) << 64) | u128::from(cx.trace_id_low);
    if trace_id == 0 || cx.span_id == 0 {
        check.invalid();
        return None;
    }
    let flags = if cx.trace_flags.contains(tracer::TraceFlags::SAMPLED) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::NOT_SAMPLED
    };
    Some(SpanContext::new(
        TraceId::from_bytes(trace_id.to_be_bytes()),
        SpanId::from_bytes(cx.span_id.to_be_bytes()),
        flags,
        cx.is_remote,
        check.trace_state(cx.trace_state),
    ))
}

/// Attribute sets an instance may share (`share-attributes`), and the bytes
/// they may hold together: a callsite's constants are small, and without a
/// byte bound a guest could make the host keep 1024 x 128 values of 64 KiB.
/// They count against the store's budget too.
const MAX_SHARED_SETS: usize = 1024;
const MAX_SHARED_BYTES: usize = 1 << 20;

/// An attribute whose strings are reference-counted, so that copying it into
/// each span is a counter increment rather than an allocation.
fn shareable(kv: otel::KeyValue) -> otel::KeyValue {
    let key = otel::Key::from(Arc::<str>::from(kv.key.as_str()));
    let value = match kv.value {
        otel::Value::String(s) => otel::Value::from(Arc::<str>::from(s.as_str())),
        other => other,
    };
    otel::KeyValue::new(key, value)
}

/// A shared set by handle; an unknown handle is counted and ignored.
fn shared_set(ctx: &WasiObserveCtx, handle: Option<u32>) -> Option<Arc<[otel::KeyValue]>> {
    let set = ctx.shared.get(handle? as usize).cloned();
    if set.is_none() {
        ctx.scope.telemetry().checker().invalid();
    }
    set
}

fn to_wit_context(cx: &SpanContext) -> wit::Context {
    let trace_id = u128::from_be_bytes(cx.trace_id().to_bytes());
    let mut flags = tracer::TraceFlags::empty();
    if cx.is_sampled() {
        flags |= tracer::TraceFlags::SAMPLED;
    }
    wit::Context {
        trace_id_high: (trace_id >> 64) as u64,
        trace_id_low: trace_id as u64,
        span_id: u64::from_be_bytes(cx.span_id().to_bytes()),
        trace_flags: flags,
        is_remote: cx.is_remote(),
        trace_state: values::trace_state_entries(cx.trace_state()),
    }
}

impl Host for WasiObserveCtx {
    fn enabled(&mut self) -> wasmtime::Result<Signals> {
        let on = self.scope.telemetry().signals();
        let mut signals = Signals::empty();
        if on.traces {
            signals |= Signals::TRACES;
        }
        if on.logs {
            signals |= Signals::LOGS;
        }
        if on.metrics {
            signals |= Signals::METRICS;
        }
        Ok(signals)
    }

    fn share_attributes(&mut self, attributes: Vec<KeyValue>) -> wasmtime::Result<Option<u32>> {
        if attributes.is_empty() || self.shared.len() >= MAX_SHARED_SETS {
            return Ok(None);
        }
        let t = self.scope.telemetry();
        let (attrs, _) =
            values::attributes(&t.checker(), attributes, t.limits().attributes_per_span);
        let bytes = attrs_bytes(&attrs);
        // Refused, the guest sends the attributes with each use instead:
        // nothing is lost.
        if self.shared_bytes + bytes > MAX_SHARED_BYTES || !self.scope.take_bytes(bytes) {
            return Ok(None);
        }
        self.shared_bytes += bytes;
        let set: Arc<[otel::KeyValue]> = attrs.into_iter().map(shareable).collect();
        self.shared.push(set);
        Ok(Some((self.shared.len() - 1) as u32))
    }

    fn start_span(
        &mut self,
        name: String,
        parent: Parent,
        options: Option<StartOptions>,
        shared: Option<u32>,
    ) -> wasmtime::Result<wit::Started> {
        let parent = parent_choice(self, parent);
        let shared = shared_set(self, shared);
        let started = super::tracer::start(self, name, options, parent, shared.as_deref());
        let cx = &started.cx;
        let trace_id = u128::from_be_bytes(cx.trace_id().to_bytes());
        let mut flags = tracer::TraceFlags::empty();
        if cx.is_sampled() {
            flags |= tracer::TraceFlags::SAMPLED;
        }
        let trace_state = values::trace_state_entries(cx.trace_state());
        Ok(wit::Started {
            span: Resource::new_own(started.rep),
            trace_id_high: (trace_id >> 64) as u64,
            trace_id_low: trace_id as u64,
            span_id: u64::from_be_bytes(cx.span_id().to_bytes()),
            trace_flags: flags,
            trace_state: (!trace_state.is_empty()).then_some(trace_state),
            is_recording: started.recording,
        })
    }

    fn emit(
        &mut self,
        span: Parent,
        level: Level,
        context: String,
        message: String,
        attributes: Vec<KeyValue>,
        event: Option<SpanEvent>,
    ) -> wasmtime::Result<()> {
        // The event and the record share one clock reading.
        let now = std::time::SystemTime::now();
        if let (Parent::Span(span), Some(event)) = (&span, event)
            && self.is_recording(Resource::new_borrow(span.rep()))?
        {
            let all = if event.with_record_attributes {
                let mut all = attributes.clone();
                all.extend(event.attributes);
                all
            } else {
                event.attributes
            };
            let t = self.scope.telemetry().clone();
            let max = t.limits().attributes_per_event;
            let check = t.checker();
            let shared = shared_set(self, event.shared);
            let shared = shared.as_deref().unwrap_or_default();
            let (mut attrs, mut dropped) =
                values::attributes_with_room(&check, all, max, shared.len());
            let name = check.string(event.name);
            for kv in shared {
                if attrs.len() < max {
                    attrs.push(kv.clone());
                } else {
                    dropped = dropped.saturating_add(1);
                }
            }
            let event = opentelemetry::trace::Event::new(name, now, attrs, dropped);
            self.scope
                .update_span(span.rep(), event_bytes(&event), 1, |r, t| {
                    r.add_event(event, t)
                });
        }
        let cx = match parent_choice(self, span) {
            ParentChoice::Given(cx) => Some(cx),
            _ => self.scope.ambient.clone(),
        };
        let t = self.scope.telemetry();
        if !t.signals().logs {
            return Ok(());
        }
        let (severity, severity_text) = super::logging::severity(level);
        let (attributes, _) =
            values::attributes(&t.checker(), attributes, t.limits().attributes_per_log);
        t.emit_log(NewLog {
            severity,
            severity_text,
            target: context.into(),
            body: (!message.is_empty()).then_some(message),
            attributes,
            span: cx.as_ref(),
            time: Some(now),
        });
        Ok(())
    }

    fn finish(
        &mut self,
        span: Resource<GuestSpan>,
        attributes: Vec<KeyValue>,
        status: Option<Status>,
        name: Option<String>,
        timestamp: Option<Datetime>,
    ) -> wasmtime::Result<()> {
        let rep = span.rep();
        if !attributes.is_empty() {
            self.set_attributes(Resource::new_borrow(rep), attributes)?;
        }
        if let Some(status) = status {
            self.set_status(Resource::new_borrow(rep), status)?;
        }
        if let Some(name) = name {
            self.update_name(Resource::new_borrow(rep), name)?;
        }
        self.end(Resource::new_borrow(rep), timestamp)?;
        // The guest gave up its handle: release the state as a drop would.
        HostSpan::drop(self, span)
    }

    fn set_parent(
        &mut self,
        span: Resource<GuestSpan>,
        parent: Parent,
    ) -> wasmtime::Result<wit::Context> {
        let parent = parent_choice(self, parent);
        let cx = self.scope.move_under(span.rep(), parent);
        Ok(to_wit_context(&cx))
    }
}

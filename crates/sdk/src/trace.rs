//! The OpenTelemetry tracing API backed by the host: code that uses
//! `opentelemetry::global::tracer(..)` (or a [`TracerProvider`] directly)
//! makes host spans.
//!
//! Parents follow the context the API is given: its span if it has a valid
//! one (local or remote); otherwise the current `tracing` span, so API spans
//! nest inside `tracing` spans; otherwise the ambient parent. In an
//! instrumented component, the function frame the span starts in comes
//! before the last two, if it was entered after the current span opened.
//!
//! Like the `tracing` layer, a span is recorded through the pipe
//! ([`crate::pipe`]): its start, events, links and end go into the batch;
//! attributes, status and name changes are kept in the guest until it ends.

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::trace::{SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use wasi_observe_wire as wire;

use crate::layer::with_current_span;
use crate::pending::Pending;
use crate::pipe;

/// A [`opentelemetry::trace::TracerProvider`] whose spans the host records.
/// [`init`](crate::init) installs it as the global provider.
#[derive(Clone, Debug, Default)]
pub struct TracerProvider {
    _private: (),
}

impl TracerProvider {
    /// The provider (it holds no state: the host does).
    pub fn new() -> Self {
        TracerProvider::default()
    }
}

impl opentelemetry::trace::TracerProvider for TracerProvider {
    type Tracer = Tracer;

    /// The scope is not sent: the host names the scope of guest spans.
    fn tracer_with_scope(&self, _scope: InstrumentationScope) -> Tracer {
        Tracer { _private: () }
    }
}

/// A [`opentelemetry::trace::Tracer`] whose spans the host records.
#[derive(Clone, Debug)]
pub struct Tracer {
    _private: (),
}

fn kind(kind: &SpanKind) -> u8 {
    match kind {
        SpanKind::Client => wire::kind::CLIENT,
        SpanKind::Server => wire::kind::SERVER,
        SpanKind::Producer => wire::kind::PRODUCER,
        SpanKind::Consumer => wire::kind::CONSUMER,
        SpanKind::Internal => wire::kind::INTERNAL,
    }
}

impl opentelemetry::trace::Tracer for Tracer {
    type Span = Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Span {
        if !crate::enabled().traces {
            return Span::none();
        }
        let attributes = builder.attributes.unwrap_or_default();
        let parent = parent_cx.span().span_context().clone();
        let parent = if parent.is_valid() {
            Some(parent)
        } else {
            let mut implicit = with_current_span(|data| data.map(|d| d.cx.clone()))
                .or_else(|| pipe::config().ambient.clone());
            pipe::adopt_frame(&mut implicit);
            implicit
        };
        let cx = pipe::new_context(parent.as_ref());
        pipe::start(pipe::Start {
            cx: &cx,
            parent: parent.as_ref(),
            kind: builder
                .span_kind
                .as_ref()
                .map_or(wire::kind::INTERNAL, kind),
            name: &builder.name,
            shared: None,
            attributes: &[&attributes],
            encoded: &pipe::Pairs::default(),
            time: builder.start_time,
        });
        let mut span = Span {
            recording: cx.is_sampled(),
            cx,
            open: true,
            pending: Pending::default(),
        };
        if span.recording {
            use opentelemetry::trace::Span as _;
            for link in builder.links.unwrap_or_default() {
                span.add_link(link.span_context, link.attributes);
            }
            for event in builder.events.unwrap_or_default() {
                span.add_event_with_timestamp(event.name, event.timestamp, event.attributes);
            }
        }
        span
    }
}

/// A span of the OpenTelemetry API, held by the host. Ends when dropped.
#[derive(Debug)]
pub struct Span {
    cx: SpanContext,
    recording: bool,
    open: bool,
    pending: Pending,
}

impl Span {
    fn none() -> Span {
        Span {
            cx: SpanContext::NONE,
            recording: false,
            open: false,
            pending: Pending::default(),
        }
    }

    fn finish(&mut self, timestamp: Option<SystemTime>) {
        self.recording = false;
        if std::mem::take(&mut self.open) {
            std::mem::take(&mut self.pending).finish(&self.cx, timestamp);
        }
    }

    fn add_event_at(&mut self, name: &str, at: Option<SystemTime>, attributes: Vec<KeyValue>) {
        if self.recording {
            let time = at.map_or_else(pipe::now, pipe::nanos);
            pipe::event(&self.cx, time, name, None, &[&attributes]);
        }
    }
}

impl opentelemetry::trace::Span for Span {
    fn add_event<T>(&mut self, name: T, attributes: Vec<KeyValue>)
    where
        T: Into<Cow<'static, str>>,
    {
        self.add_event_at(&name.into(), None, attributes);
    }

    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        timestamp: SystemTime,
        attributes: Vec<KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        self.add_event_at(&name.into(), Some(timestamp), attributes);
    }

    fn span_context(&self) -> &SpanContext {
        &self.cx
    }

    fn is_recording(&self) -> bool {
        self.recording
    }

    fn set_attribute(&mut self, attribute: KeyValue) {
        if self.recording {
            self.pending.set_attribute(attribute);
        }
    }

    fn set_status(&mut self, status: Status) {
        if self.recording {
            self.pending.set_status(status);
        }
    }

    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        if self.recording {
            self.pending.set_name(new_name);
        }
    }

    fn add_link(&mut self, span_context: SpanContext, attributes: Vec<KeyValue>) {
        if self.recording && span_context.is_valid() {
            pipe::link(&self.cx, &span_context, &attributes);
        }
    }

    fn end(&mut self) {
        self.finish(None);
    }

    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        self.finish(Some(timestamp));
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.finish(None);
    }
}

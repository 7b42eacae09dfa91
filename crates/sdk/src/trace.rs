//! The OpenTelemetry tracing API backed by the host: code that uses
//! `opentelemetry::global::tracer(..)` (or a [`TracerProvider`] directly)
//! makes host spans.
//!
//! Parents follow the context the API is given: its span if it has a valid
//! one (local or remote); otherwise the current `tracing` span, so API spans
//! nest inside `tracing` spans; otherwise the ambient parent. Like the
//! `tracing` layer, a span keeps attributes, status and name changes in the
//! guest and sends them when it ends: a span costs two host calls, plus one
//! per event and link.

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::trace::{
    Link, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt as _,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};

use crate::bindings::sdk::{self, Parent};
use crate::bindings::tracer;
use crate::convert::{
    datetime, started_context, with_wit_attributes, with_wit_context, with_wit_span_context,
};
use crate::layer::with_current_span;
use crate::pending::Pending;

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

fn kind(kind: &SpanKind) -> tracer::SpanKind {
    match kind {
        SpanKind::Client => tracer::SpanKind::Client,
        SpanKind::Server => tracer::SpanKind::Server,
        SpanKind::Producer => tracer::SpanKind::Producer,
        SpanKind::Consumer => tracer::SpanKind::Consumer,
        SpanKind::Internal => tracer::SpanKind::Internal,
    }
}

impl opentelemetry::trace::Tracer for Tracer {
    type Span = Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Span {
        if !crate::enabled().traces {
            return Span::none();
        }
        let attributes = builder.attributes.unwrap_or_default();
        let start = |parent: Parent<'_>| {
            with_wit_attributes(&attributes, |attrs| {
                sdk::start_span(
                    &builder.name,
                    parent,
                    Some(tracer::StartOptions {
                        new_root: false,
                        span_kind: builder.span_kind.as_ref().map(kind),
                        attributes: Some(attrs),
                        links: None,
                        timestamp: builder.start_time.map(datetime),
                    }),
                    None,
                )
            })
        };
        let parent = parent_cx.span().span_context().clone();
        let started = if parent.is_valid() {
            with_wit_context(&parent, |cx| start(Parent::Context(cx)))
        } else {
            with_current_span(|data| match data {
                Some(data) => data.with_parent(start),
                None => start(Parent::Ambient),
            })
        };
        let mut span = Span {
            cx: started_context(&started),
            span: Some(started.span),
            recording: started.is_recording,
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
    span: Option<tracer::Span>,
    cx: SpanContext,
    recording: bool,
    /// What is sent when the span ends.
    pending: Pending,
}

impl Span {
    fn none() -> Span {
        Span {
            span: None,
            cx: SpanContext::NONE,
            recording: false,
            pending: Pending::default(),
        }
    }

    fn finish(&mut self, timestamp: Option<SystemTime>) {
        self.recording = false;
        if let Some(span) = self.span.take() {
            std::mem::take(&mut self.pending).finish(span, timestamp);
        }
    }

    fn add_event_at(&mut self, name: &str, at: Option<SystemTime>, attributes: Vec<KeyValue>) {
        if let (true, Some(span)) = (self.recording, &self.span) {
            with_wit_attributes(&attributes, |attrs| {
                span.add_event(name, at.map(datetime), Some(attrs))
            });
        }
    }
}

impl opentelemetry::trace::Span for Span {
    fn add_event<T>(&mut self, name: T, attributes: Vec<KeyValue>)
    where
        T: Into<Cow<'static, str>>,
    {
        // The host stamps the time: no clock call from the guest.
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
        if !(self.recording && span_context.is_valid()) {
            return;
        }
        let Some(span) = &self.span else { return };
        let link = Link::new(span_context, attributes, 0);
        with_wit_span_context(&link.span_context, |cx| {
            with_wit_attributes(&link.attributes, |attrs| {
                span.add_link(tracer::Link {
                    span_context: cx,
                    attributes: attrs,
                })
            })
        });
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

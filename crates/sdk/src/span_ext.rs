//! OpenTelemetry operations on `tracing` spans, as `tracing-opentelemetry`'s
//! `OpenTelemetrySpanExt` offers them, for code that mixes the two.

use opentelemetry::trace::{SpanContext, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue};
use tracing_subscriber::Registry;
use tracing_subscriber::registry::LookupSpan as _;

use crate::layer::SpanData;
use crate::pipe;
use crate::subscriber::WasiObserveSubscriber;

/// OpenTelemetry operations on a [`tracing::Span`] recorded by this crate's
/// layer. On a span the layer does not record (disabled, filtered out, or
/// another subscriber) they do nothing, and [`context`](Self::context)
/// returns an empty context.
pub trait OpenTelemetrySpanExt {
    /// Makes `cx`'s span (typically a remote one, extracted from request
    /// headers) this span's parent. Call it before the span has children.
    fn set_parent(&self, cx: &Context);

    /// Links this span to another span.
    fn add_link(&self, cx: SpanContext, attributes: Vec<KeyValue>);

    /// An OpenTelemetry context holding this span's span context, to inject
    /// into outgoing requests or to parent OpenTelemetry API spans.
    fn context(&self) -> Context;

    /// Sets an attribute of any OpenTelemetry value type.
    fn set_attribute(
        &self,
        key: impl Into<opentelemetry::Key>,
        value: impl Into<opentelemetry::Value>,
    );

    /// Sets the span's status, by OpenTelemetry's rules.
    fn set_status(&self, status: Status);
}

fn with_data<R>(span: &tracing::Span, f: impl FnOnce(&mut SpanData) -> R) -> Option<R> {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(subscriber) = dispatch.downcast_ref::<WasiObserveSubscriber>() {
            return subscriber.with_data(id, f);
        }
        let registry = dispatch.downcast_ref::<Registry>()?;
        let span = registry.span(id)?;
        let mut extensions = span.extensions_mut();
        extensions.get_mut::<SpanData>().map(f)
    })
    .flatten()
}

impl OpenTelemetrySpanExt for tracing::Span {
    fn set_parent(&self, cx: &Context) {
        let parent = cx.span().span_context().clone();
        with_data(self, |data| {
            if !data.is_open() {
                return;
            }
            let parent = if parent.is_valid() {
                Some(parent)
            } else {
                pipe::config().ambient.clone()
            };
            // A parent in the span's own trace could be the span itself or
            // a descendant: refused, as the host refuses it.
            if parent
                .as_ref()
                .is_some_and(|p| p.trace_id() == data.cx.trace_id())
            {
                return;
            }
            data.cx = pipe::reparent(&data.cx, data.recording, parent.as_ref());
            data.recording = data.recording && data.cx.is_sampled();
        });
    }

    fn add_link(&self, cx: SpanContext, attributes: Vec<KeyValue>) {
        if !cx.is_valid() {
            return;
        }
        with_data(self, |data| {
            if data.recording && data.is_open() {
                pipe::link(&data.cx, &cx, &attributes);
            }
        });
    }

    fn context(&self) -> Context {
        with_data(self, |data| {
            Context::new().with_remote_span_context(data.cx.clone())
        })
        .unwrap_or_default()
    }

    fn set_attribute(
        &self,
        key: impl Into<opentelemetry::Key>,
        value: impl Into<opentelemetry::Value>,
    ) {
        let kv = KeyValue::new(key, value);
        with_data(self, |data| data.set_attribute(kv));
    }

    fn set_status(&self, status: Status) {
        with_data(self, |data| data.set_status(status));
    }
}

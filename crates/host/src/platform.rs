//! Spans the host makes around its guests (the SRE's view of the platform):
//! a request served, an outgoing call made on a guest's behalf.

use std::time::SystemTime;

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, SpanKind, Status};

use crate::telemetry::Telemetry;
use crate::tracer::{SpanRecord, start_host_span};

/// A span the host itself starts and ends, on any thread. Guest spans can
/// nest under it ([`WasiObserveCtx::with_parent`](crate::WasiObserveCtx::with_parent)
/// with its [`context`](Self::context)).
///
/// Dropping it ends it; [`end`](Self::end) says so explicitly.
pub struct PlatformSpan {
    cx: SpanContext,
    record: Option<Box<SpanRecord>>,
    telemetry: Telemetry,
}

impl Telemetry {
    /// Starts a host-made span under `parent` (a new trace without one),
    /// sampled by the pipeline's sampler like a guest span.
    pub fn start_span(
        &self,
        name: impl Into<String>,
        kind: SpanKind,
        parent: Option<&SpanContext>,
        attributes: Vec<KeyValue>,
    ) -> PlatformSpan {
        let (cx, record) = start_host_span(&self.inner, name.into(), kind, parent, attributes);
        PlatformSpan {
            cx,
            record,
            telemetry: self.clone(),
        }
    }
}

impl PlatformSpan {
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
            r.set_attribute(kv, &self.telemetry.inner);
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

impl Drop for PlatformSpan {
    fn drop(&mut self) {
        if let Some(record) = self.record.take() {
            record.export(self.cx.clone(), SystemTime::now(), &self.telemetry);
        }
    }
}

impl std::fmt::Debug for PlatformSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformSpan")
            .field("context", &self.cx)
            .field("recording", &self.record.is_some())
            .finish_non_exhaustive()
    }
}

/// The trace context a pipeline handed this process in its environment:
/// `TRACEPARENT` and `TRACESTATE`, as OpenTelemetry's environment carrier
/// names them. A missing or malformed value gives `None` (a new trace).
pub fn context_from_env() -> Option<SpanContext> {
    context_from_vars(|name| std::env::var(name).ok())
}

fn context_from_vars(var: impl Fn(&str) -> Option<String>) -> Option<SpanContext> {
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::TraceContextExt as _;
    let mut carrier = std::collections::HashMap::new();
    for (env, key) in [("TRACEPARENT", "traceparent"), ("TRACESTATE", "tracestate")] {
        if let Some(v) = var(env) {
            carrier.insert(key.to_string(), v);
        }
    }
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    let span = cx.span().span_context().clone();
    span.is_valid().then_some(span)
}

#[cfg(test)]
mod tests {
    use super::context_from_vars;

    #[test]
    fn environment_carrier() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cx = context_from_vars(|k| match k {
            "TRACEPARENT" => Some(tp.into()),
            "TRACESTATE" => Some("vendor=x".into()),
            _ => None,
        })
        .expect("a valid traceparent");
        assert_eq!(
            cx.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(cx.span_id().to_string(), "b7ad6b7169203331");
        assert!(cx.is_remote() && cx.is_sampled());
        assert_eq!(cx.trace_state().get("vendor"), Some("x"));
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        ] {
            assert!(context_from_vars(|k| (k == "TRACEPARENT").then(|| bad.into())).is_none());
        }
        assert!(context_from_vars(|_| None).is_none());
    }
}

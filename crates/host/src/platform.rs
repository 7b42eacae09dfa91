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
        let max = self.telemetry.inner.limits.attributes_per_span;
        if let Some(r) = &mut self.record {
            r.set_attribute(kv, max);
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

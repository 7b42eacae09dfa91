//! What a guest span keeps back while it is open: attributes recorded after
//! its start, its status and a new name. They only matter when the span is
//! exported, so they go to the host with the call that ends it.

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::KeyValue;
use opentelemetry::trace::Status;

use crate::bindings::{sdk, tracer};
use crate::convert::{datetime, merge_status, wit_status, with_wit_attributes};

#[derive(Debug, Default)]
pub(crate) struct Pending {
    attributes: Vec<KeyValue>,
    status: Option<Status>,
    name: Option<Cow<'static, str>>,
}

impl Pending {
    pub(crate) fn set_attribute(&mut self, kv: KeyValue) {
        self.attributes.push(kv);
    }

    /// By OpenTelemetry's rules: `Unset` is ignored and `Ok` is final.
    pub(crate) fn set_status(&mut self, status: Status) {
        merge_status(&mut self.status, status);
    }

    pub(crate) fn set_name(&mut self, name: impl Into<Cow<'static, str>>) {
        self.name = Some(name.into());
    }

    /// Ends `span` (at `timestamp`, else now), sending what was kept back in
    /// the same call; with nothing kept back, dropping the handle ends it.
    pub(crate) fn finish(self, span: tracer::Span, timestamp: Option<SystemTime>) {
        if self.attributes.is_empty()
            && self.status.is_none()
            && self.name.is_none()
            && timestamp.is_none()
        {
            drop(span);
            return;
        }
        with_wit_attributes(&self.attributes, |attrs| {
            sdk::finish(
                span,
                attrs,
                self.status.as_ref().map(wit_status),
                self.name.as_deref(),
                timestamp.map(datetime),
            )
        });
    }
}

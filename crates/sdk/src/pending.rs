//! What a guest span keeps back while it is open: attributes recorded after
//! its start, its status and a new name. They only matter when the span is
//! exported, so they go into the record that ends it.

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, Status};

use crate::layer::drop_list;
use crate::pipe;

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
        if status == Status::Unset || matches!(self.status, Some(Status::Ok)) {
            return;
        }
        self.status = Some(status);
    }

    pub(crate) fn set_name(&mut self, name: impl Into<Cow<'static, str>>) {
        self.name = Some(name.into());
    }

    /// Ends the span `cx` (at `timestamp`, else now) with what was kept back.
    pub(crate) fn finish(self, cx: &SpanContext, timestamp: Option<SystemTime>) {
        pipe::end(pipe::End {
            cx,
            attributes: &self.attributes,
            status: self.status.as_ref(),
            name: self.name.as_deref(),
            time: timestamp,
        });
        self.discard();
    }

    /// Drops what was kept back, the list with [`drop_list`].
    pub(crate) fn discard(self) {
        drop_list(self.attributes);
    }
}

//! The `tracing` layer: spans become host spans, events become log records
//! and span events, with `tracing-opentelemetry`'s conventions. Its logic
//! also drives the subscriber [`init`](crate::init) installs
//! ([`crate::subscriber`]), which holds the spans itself instead of a
//! registry.
//!
//! Everything travels through the pipe ([`crate::pipe`]): a span is encoded
//! into the batch at its start and end (fields recorded later, statuses and
//! names are kept in the guest until it closes), an event is a span event
//! and a log record in the batch (one `EventLog` record, where the host
//! reads those). The two crossings a span makes (`open`, `close`) tell the
//! host which span is open and read the clock; an event reads it with the
//! pipe's `now`. Entering and exiting a span never crosses: the parent of
//! each span is given explicitly, by the rules of `tracing`.

use std::fmt;

use opentelemetry::trace::{SpanContext, Status, TraceContextExt as _};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Field, Level, Metadata, Subscriber, field};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;
use wasi_observe_wire as wire;

use crate::Signals;
use crate::pending::Pending;
use crate::pipe;
use crate::subscriber::WasiObserveSubscriber;

const SPAN_NAME_FIELD: &str = "otel.name";
const SPAN_KIND_FIELD: &str = "otel.kind";
const SPAN_STATUS_CODE_FIELD: &str = "otel.status_code";
const SPAN_STATUS_DESCRIPTION_FIELD: &str = "otel.status_description";
const EXCEPTION_MESSAGE: &str = "exception.message";
const EXCEPTION_STACKTRACE: &str = "exception.stacktrace";

/// What the SDK keeps for a `tracing` span (in the registry's extensions).
pub(crate) struct SpanData {
    pub(crate) cx: SpanContext,
    /// The span was sampled: its records go to the host.
    pub(crate) recording: bool,
    /// The span has not ended yet.
    open: bool,
    /// What is sent when the span closes.
    pending: Pending,
}

impl SpanData {
    pub(crate) fn set_attribute(&mut self, kv: KeyValue) {
        if self.recording {
            self.pending.set_attribute(kv);
        }
    }

    pub(crate) fn set_status(&mut self, status: Status) {
        self.pending.set_status(status);
    }

    /// Whether the span has not ended.
    pub(crate) fn is_open(&self) -> bool {
        self.open
    }

    /// Ends the span, with what was kept back.
    pub(crate) fn finish(&mut self) {
        if std::mem::take(&mut self.open) {
            std::mem::take(&mut self.pending).finish(&self.cx, None);
        }
    }

    /// Drops the data, its lists with [`drop_list`].
    pub(crate) fn discard(self) {
        self.pending.discard();
    }
}

/// Calls `f` with the current `tracing` span's data, if the current
/// subscriber is one that holds it: the one [`init`](crate::init) installs,
/// or a registry with [`WasiObserveLayer`].
pub(crate) fn with_current_span<R>(f: impl FnOnce(Option<&SpanData>) -> R) -> R {
    let mut f = Some(f);
    let mut call = |data: Option<&SpanData>| f.take().map(|f| f(data));
    let result = tracing::dispatcher::get_default(|dispatch| {
        if let Some(subscriber) = dispatch.downcast_ref::<WasiObserveSubscriber>() {
            return subscriber.with_current(&mut call);
        }
        let current = dispatch.current_span();
        let span = current
            .id()
            .zip(dispatch.downcast_ref::<Registry>())
            .and_then(|(id, registry)| registry.span(id));
        match span {
            Some(span) => call(span.extensions().get::<SpanData>()),
            None => call(None),
        }
    });
    match result {
        Some(r) => r,
        None => f.take().map(|f| f(None)).expect("called once"),
    }
}

/// The parent a new span or log record gets when nothing names one: the
/// current `tracing` span, else the current OpenTelemetry context's span,
/// else the ambient parent.
pub(crate) fn implicit_parent() -> Option<SpanContext> {
    with_current_span(|data| data.map(|d| d.cx.clone())).or_else(otel_current_or_ambient)
}

/// The current OpenTelemetry context's span, else the ambient parent.
pub(crate) fn otel_current_or_ambient() -> Option<SpanContext> {
    let cx = opentelemetry::Context::current();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        Some(sc)
    } else {
        pipe::config().ambient.clone()
    }
}

/// A [`Layer`] that sends `tracing` spans and events to the host.
///
/// [`layer()`](crate::layer) gives the default one with its filter;
/// [`init()`](crate::init) installs that. To configure it, filter it the same
/// way: `WasiObserveLayer::default().with_location(false).with_filter(SignalFilter::from_host())`.
pub struct WasiObserveLayer {
    location: bool,
    target: bool,
}

impl Default for WasiObserveLayer {
    fn default() -> Self {
        WasiObserveLayer {
            location: true,
            target: true,
        }
    }
}

impl WasiObserveLayer {
    /// Whether spans and events carry `code.file.path`, `code.module.name`
    /// and `code.line.number` (default: yes, as `tracing-opentelemetry`).
    pub fn with_location(mut self, location: bool) -> Self {
        self.location = location;
        self
    }

    /// Whether spans carry their `tracing` target as the `target` attribute
    /// (default: yes, as `tracing-opentelemetry`).
    pub fn with_target(mut self, target: bool) -> Self {
        self.target = target;
        self
    }

    /// The attributes every span of a callsite has.
    fn span_constants(&self, meta: &'static Metadata<'static>) -> Vec<KeyValue> {
        // Often empty (location and target off): then nothing is allocated,
        // and this runs for every span, since an empty set is not shared.
        let mut out = Vec::new();
        self.location(meta, &mut out);
        if self.target {
            out.push(KeyValue::new("target", meta.target()));
        }
        out
    }

    /// The attributes every event of a callsite has.
    fn event_constants(&self, meta: &'static Metadata<'static>) -> Vec<KeyValue> {
        let mut out = Vec::with_capacity(5);
        out.push(KeyValue::new("level", meta.level().as_str()));
        out.push(KeyValue::new("target", meta.target()));
        self.location(meta, &mut out);
        out
    }

    fn location(&self, meta: &'static Metadata<'static>, out: &mut Vec<KeyValue>) {
        if !self.location {
            return;
        }
        if let Some(file) = meta.file() {
            out.push(KeyValue::new("code.file.path", file));
        }
        if let Some(module) = meta.module_path() {
            out.push(KeyValue::new("code.module.name", module));
        }
        if let Some(line) = meta.line() {
            out.push(KeyValue::new("code.line.number", i64::from(line)));
        }
    }
}

fn span_kind(s: &str) -> Option<u8> {
    let s = s.trim_matches('"');
    [
        ("server", wire::kind::SERVER),
        ("client", wire::kind::CLIENT),
        ("producer", wire::kind::PRODUCER),
        ("consumer", wire::kind::CONSUMER),
        ("internal", wire::kind::INTERNAL),
    ]
    .into_iter()
    .find(|(name, _)| s.eq_ignore_ascii_case(name))
    .map(|(_, kind)| kind)
}

fn status_code(s: &str) -> Status {
    let s = s.trim_matches('"');
    if s.eq_ignore_ascii_case("ok") {
        Status::Ok
    } else if s.eq_ignore_ascii_case("error") {
        Status::error("")
    } else {
        Status::Unset
    }
}

/// An integer wider than `i64` as OpenTelemetry can hold it: the number when
/// it fits, else its text.
fn wide_int(n: impl TryInto<i64> + fmt::Display + Copy) -> Value {
    match n.try_into() {
        Ok(i) => Value::I64(i),
        Err(_) => Value::String(n.to_string().into()),
    }
}

/// The source chain of an error, outermost first.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> Value {
    let mut chain: Vec<StringValue> = Vec::new();
    let mut next = err.source();
    while let Some(e) = next {
        chain.push(e.to_string().into());
        next = e.source();
    }
    Value::Array(Array::String(chain))
}

/// The `record_*` methods both visitors share: booleans and numbers keep
/// their type (integers wider than `i64` when they fit).
macro_rules! typed_fields {
    () => {
        fn record_bool(&mut self, field: &Field, value: bool) {
            self.push(field, value);
        }
        fn record_f64(&mut self, field: &Field, value: f64) {
            self.push(field, value);
        }
        fn record_i64(&mut self, field: &Field, value: i64) {
            self.push(field, value);
        }
        fn record_u64(&mut self, field: &Field, value: u64) {
            self.push(field, wide_int(value));
        }
        fn record_i128(&mut self, field: &Field, value: i128) {
            self.push(field, wide_int(value));
        }
        fn record_u128(&mut self, field: &Field, value: u128) {
            self.push(field, wide_int(value));
        }
    };
}

/// Fields of a span: attributes plus the special `otel.*` fields.
#[derive(Default)]
pub(crate) struct SpanFields {
    attributes: Vec<KeyValue>,
    /// At a span's start, its attributes go here, encoded, instead.
    pairs: Option<pipe::Pairs>,
    name: Option<String>,
    kind: Option<u8>,
    status: Option<Status>,
}

impl SpanFields {
    fn special(&mut self, field: &Field, value: &str) -> bool {
        match field.name() {
            SPAN_NAME_FIELD => self.name = Some(value.to_string()),
            SPAN_KIND_FIELD => self.kind = span_kind(value),
            SPAN_STATUS_CODE_FIELD => self.status = Some(status_code(value)),
            SPAN_STATUS_DESCRIPTION_FIELD => self.status = Some(Status::error(value.to_string())),
            _ => return false,
        }
        true
    }

    fn push(&mut self, field: &Field, value: impl Into<Value>) {
        self.push_kv(KeyValue::new(field.name(), value));
    }

    fn push_kv(&mut self, kv: KeyValue) {
        match &mut self.pairs {
            Some(pairs) => pairs.push(kv.key.as_str(), &kv.value),
            None => self.attributes.push(kv),
        }
    }

    fn push_str(&mut self, field: &Field, text: &str) {
        match &mut self.pairs {
            Some(pairs) => pairs.push_str(field.name(), text),
            None => self
                .attributes
                .push(KeyValue::new(field.name(), text.to_string())),
        }
    }
}

impl field::Visit for SpanFields {
    typed_fields!();
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.special(field, value) {
            self.push_str(field, value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // Formatted into the events' message buffer, then copied: a
        // `%` or `?` field of a span costs no allocation.
        use fmt::Write as _;
        let mut text = MESSAGE.try_with(std::cell::Cell::take).unwrap_or_default();
        text.clear();
        let _ = write!(text, "{value:?}");
        if !self.special(field, &text) {
            self.push_str(field, &text);
        }
        drop(Message(Some(text)));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let message = value.to_string();
        let chain = error_chain(value);
        self.push_kv(KeyValue::new(EXCEPTION_MESSAGE, message.clone()));
        self.push_kv(KeyValue::new(EXCEPTION_STACKTRACE, chain.clone()));
        self.push(field, message);
        self.push_kv(KeyValue::new(format!("{}.chain", field.name()), chain));
    }
}

crate::local::local! {
    /// The buffer a span's start encodes its fields into, kept from one
    /// span to the next (as [`MESSAGE`] is for events).
    static PAIRS: std::cell::Cell<Vec<u8>> = std::cell::Cell::new(Vec::new());
}

crate::local::local! {
    /// The buffer events' messages (and spans' `%` and `?` fields) are
    /// formatted into, kept from one to the next (see [`Message`]): a new
    /// `String` each was an allocation and a free.
    static MESSAGE: std::cell::Cell<String> = std::cell::Cell::new(String::new());
}

/// Drops a list of attributes, without calling `Vec`'s drop when it never
/// allocated: most spans and events have no list of their own, and each of
/// those calls cost about 30 instructions (nine per `tracing` span).
#[inline(always)]
pub(crate) fn drop_list(list: Vec<KeyValue>) {
    if list.capacity() == 0 {
        // Nothing to free: no allocation, so no elements.
        std::mem::forget(list);
    } else {
        drop(list);
    }
}

/// An event's message (or a span field's text); gives its buffer back for
/// the next.
struct Message(Option<String>);

impl Drop for Message {
    fn drop(&mut self) {
        // A huge message's buffer is not kept.
        if let Some(text) = self.0.take().filter(|t| t.capacity() <= 4096) {
            let _ = MESSAGE.try_with(|m| m.set(text));
        }
    }
}

/// Fields of an event, sorted into what the log record and the span event
/// share, what only the event has, and what only the log record has.
#[derive(Default)]
pub(crate) struct EventFields {
    message: Option<String>,
    shared: Vec<KeyValue>,
    event_only: Vec<KeyValue>,
    log_only: Vec<KeyValue>,
    /// An `error` field without a message: the event is an exception.
    exception: bool,
    /// A status the event gives its span.
    status: Option<Status>,
    /// Attributes the event gives its span (an error value's exception
    /// fields).
    span_attributes: Vec<KeyValue>,
}

impl EventFields {
    /// Drops the fields, their lists with [`drop_list`].
    fn discard(self) {
        let EventFields {
            shared,
            event_only,
            log_only,
            span_attributes,
            ..
        } = self;
        drop_list(shared);
        drop_list(event_only);
        drop_list(log_only);
        drop_list(span_attributes);
    }

    fn push(&mut self, field: &Field, value: impl Into<Value>) {
        if field.name().starts_with("log.") {
            return; // `log` metadata that `tracing-log` carries as fields
        }
        self.shared.push(KeyValue::new(field.name(), value));
    }

    fn text(&mut self, field: &Field, text: String) {
        match field.name() {
            "message" => self.message = Some(text),
            "error" if self.message.is_none() => {
                self.exception = true;
                self.status = Some(Status::error(text.clone()));
                self.event_only
                    .push(KeyValue::new(EXCEPTION_MESSAGE, text.clone()));
                self.log_only.push(KeyValue::new("error", text));
            }
            _ => self.push(field, text),
        }
    }
}

impl field::Visit for EventFields {
    typed_fields!();
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            use fmt::Write as _;
            let mut text = MESSAGE.try_with(std::cell::Cell::take).unwrap_or_default();
            text.clear();
            let _ = write!(text, "{value:?}");
            self.message = Some(text);
            return;
        }
        self.text(field, format!("{value:?}"));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let message = value.to_string();
        let chain = error_chain(value);
        self.shared
            .push(KeyValue::new(EXCEPTION_MESSAGE, message.clone()));
        self.event_only
            .push(KeyValue::new(EXCEPTION_STACKTRACE, chain.clone()));
        self.event_only
            .push(KeyValue::new(field.name(), message.clone()));
        self.event_only.push(KeyValue::new(
            format!("{}.chain", field.name()),
            chain.clone(),
        ));
        self.span_attributes
            .push(KeyValue::new(EXCEPTION_MESSAGE, message));
        self.span_attributes
            .push(KeyValue::new(EXCEPTION_STACKTRACE, chain));
    }
}

/// What a `tracing` span or event becomes, whichever subscriber holds the
/// spans: [`WasiObserveLayer`] over a `tracing-subscriber` registry, or the
/// subscriber [`init`](crate::init) installs ([`crate::subscriber`]). Each
/// step that runs the user's code (visiting fields, whose `Debug` may do
/// anything) is separate from the step that needs the span's data, so the
/// subscriber never holds its spans locked while user code runs.
impl WasiObserveLayer {
    /// A new span's data. `parent` looks up what `tracing`'s rules make its
    /// parent (the explicit one, else the current one for a contextual
    /// span): `None` when there is none, `Some(None)` when that span is not
    /// recorded here. Without one, a contextual span takes the current
    /// OpenTelemetry context's span or the ambient parent, and an explicit
    /// root starts a trace. In an instrumented component, a contextual span
    /// started inside a function entered after its parent opened is that
    /// function's child ([`pipe::adopt_frame`]).
    pub(crate) fn start_span(
        &self,
        attrs: &Attributes<'_>,
        parent: impl FnOnce() -> Option<Option<SpanContext>>,
    ) -> SpanData {
        let meta = attrs.metadata();
        // A callsite's constants cross once, as a shared set.
        let key = std::ptr::from_ref(meta) as usize;
        let shared = pipe::shared(key, || self.span_constants(meta));
        let constants = match shared {
            Some(_) => Vec::new(),
            None => self.span_constants(meta),
        };
        let mut fields = SpanFields {
            pairs: Some(pipe::Pairs::with_buffer(PAIRS.with(|b| b.take()))),
            ..SpanFields::default()
        };
        attrs.record(&mut fields);
        let pairs = fields.pairs.take().unwrap_or_default();

        let mut parent = match parent() {
            Some(parent) => parent,
            None if attrs.is_contextual() => otel_current_or_ambient(),
            None => None,
        };
        if attrs.is_contextual() {
            pipe::adopt_frame(&mut parent);
        }
        let cx = pipe::new_context(parent.as_ref());
        let name = fields.name.as_deref().unwrap_or(meta.name());
        pipe::start(pipe::Start {
            cx: &cx,
            parent: parent.as_ref(),
            kind: fields.kind.unwrap_or(wire::kind::INTERNAL),
            name,
            shared,
            attributes: &[&constants],
            encoded: &pairs,
            time: None,
        });
        drop_list(constants);
        // A huge span's buffer is not kept.
        let buffer = pairs.into_buffer();
        if buffer.capacity() <= 4096 {
            PAIRS.with(|b| b.set(buffer));
        }
        let mut data = SpanData {
            recording: cx.is_sampled(),
            cx,
            open: true,
            pending: Pending::default(),
        };
        let SpanFields {
            attributes, status, ..
        } = fields;
        drop_list(attributes);
        if let Some(status) = status {
            data.set_status(status);
        }
        data
    }

    /// Visits the fields `Span::record` gives; [`Self::apply_record`] then
    /// applies them.
    pub(crate) fn record_fields(values: &Record<'_>) -> SpanFields {
        let mut fields = SpanFields::default();
        values.record(&mut fields);
        fields
    }

    pub(crate) fn apply_record(data: &mut SpanData, fields: SpanFields) {
        for kv in fields.attributes {
            data.set_attribute(kv);
        }
        if let Some(status) = fields.status {
            data.set_status(status);
        }
        if let (Some(name), true) = (fields.name, data.recording) {
            data.pending.set_name(name);
        }
    }

    /// `data`'s span follows from `follows`: a link.
    pub(crate) fn follows_from(data: &SpanData, follows: &SpanContext) {
        if data.recording && data.open {
            pipe::link(&data.cx, follows, &[]);
        }
    }

    /// Visits an event's fields; [`Self::emit_event`] then records it.
    pub(crate) fn event_fields(event: &Event<'_>) -> EventFields {
        let mut fields = EventFields::default();
        event.record(&mut fields);
        fields
    }

    /// Records an event: in `span` (the data of its explicit or current
    /// span), a span event and a log record; outside any span, a log record
    /// only, correlated as `tracing-opentelemetry` would (the OpenTelemetry
    /// context).
    pub(crate) fn emit_event(
        &self,
        meta: &'static Metadata<'static>,
        mut fields: EventFields,
        span: Option<&mut SpanData>,
    ) {
        self.emit_event_fields(meta, &mut fields, span);
        fields.discard();
    }

    fn emit_event_fields(
        &self,
        meta: &'static Metadata<'static>,
        fields: &mut EventFields,
        span: Option<&mut SpanData>,
    ) {
        let signals = crate::enabled();
        let message = Message(fields.message.take());
        let message = &message.0;

        let Some(data) = span else {
            if signals.logs {
                let cx = otel_current_or_ambient();
                pipe::log(pipe::Log {
                    time: None,
                    severity: pipe::severity(meta.level()),
                    target: meta.target(),
                    body: message.as_deref(),
                    span: cx.as_ref(),
                    attributes: &[&fields.shared, &fields.log_only],
                    encoded: None,
                });
            }
            return;
        };

        let span_event = data.recording && data.open;
        if !span_event && !signals.logs {
            return;
        }
        let time = pipe::now();
        let mut logged = false;
        if span_event {
            // What the event does to its span, as `tracing-opentelemetry`.
            if *meta.level() == Level::ERROR {
                data.set_status(Status::error(""));
            }
            if let Some(status) = fields.status.take() {
                data.set_status(status);
            }
            for kv in fields.span_attributes.drain(..) {
                data.set_attribute(kv);
            }
            let name = if fields.exception {
                "exception"
            } else {
                message.as_deref().unwrap_or(meta.name())
            };
            // Keyed apart from the callsite's span constants.
            let key = std::ptr::from_ref(meta) as usize + 1;
            let shared = pipe::shared(key, || self.event_constants(meta));
            let constants = match shared {
                Some(_) => Vec::new(),
                None => self.event_constants(meta),
            };
            let attributes: &[&[KeyValue]] = &[&fields.shared, &constants, &fields.event_only];
            // The log record rides with the event where the host reads
            // that, and its body (if any) is the event's name.
            logged = signals.logs
                && pipe::config().event_log
                && message.as_deref().is_none_or(|body| body == name);
            if logged {
                pipe::event_log(pipe::EventLog {
                    span: &data.cx,
                    time,
                    name,
                    shared,
                    attributes,
                    severity: pipe::severity(meta.level()),
                    target: meta.target(),
                    body_is_name: message.is_some(),
                    log_attributes: &[&fields.shared, &fields.log_only],
                });
            } else {
                pipe::event(&data.cx, time, name, shared, attributes);
            }
            drop_list(constants);
        }
        if signals.logs && !logged {
            pipe::log(pipe::Log {
                time: Some(time),
                severity: pipe::severity(meta.level()),
                target: meta.target(),
                body: message.as_deref(),
                span: Some(&data.cx),
                attributes: &[&fields.shared, &fields.log_only],
                encoded: None,
            });
        }
    }
}

impl<S> Layer<S> for WasiObserveLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let data = self.start_span(attrs, || {
            let parent = match attrs.parent() {
                Some(parent) => ctx.span(parent),
                None if attrs.is_contextual() => ctx.lookup_current(),
                None => None,
            };
            parent.map(|p| p.extensions().get::<SpanData>().map(|d| d.cx.clone()))
        });
        span.extensions_mut().insert(data);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let fields = Self::record_fields(values);
        if let Some(data) = span.extensions_mut().get_mut::<SpanData>() {
            Self::apply_record(data, fields);
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        let (Some(span), Some(follows)) = (ctx.span(id), ctx.span(follows)) else {
            return;
        };
        let Some(follows_cx) = follows.extensions().get::<SpanData>().map(|d| d.cx.clone()) else {
            return;
        };
        if let Some(data) = span.extensions().get::<SpanData>() {
            Self::follows_from(data, &follows_cx);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let span = match event.parent() {
            Some(id) => ctx.span(id),
            None if event.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        let fields = Self::event_fields(event);
        let Some(span) = span else {
            return self.emit_event(event.metadata(), fields, None);
        };
        let mut extensions = span.extensions_mut();
        // A span this layer does not record: nothing.
        if let Some(data) = extensions.get_mut::<SpanData>() {
            self.emit_event(event.metadata(), fields, Some(data));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let data = span.extensions_mut().remove::<SpanData>();
        if let Some(mut data) = data {
            data.finish();
        }
    }
}

/// Lets through what the host records: spans when it records traces, events
/// when it records logs or traces, and only what `RUST_LOG` (if set) enables.
pub struct SignalFilter {
    signals: Signals,
    targets: Option<tracing_subscriber::filter::Targets>,
}

impl SignalFilter {
    /// The filter for what the host records ([`enabled`](crate::enabled)),
    /// narrowed by `RUST_LOG` when it is set.
    pub fn from_host() -> Self {
        Self::new(crate::enabled())
    }

    pub(crate) fn new(signals: Signals) -> Self {
        Self::with_targets(signals, crate::rust_log())
    }

    pub(crate) fn with_targets(
        signals: Signals,
        targets: Option<tracing_subscriber::filter::Targets>,
    ) -> Self {
        SignalFilter { signals, targets }
    }

    /// What every subscriber that uses this filter tells `tracing` of a
    /// callsite: it is always recorded, or never.
    pub(crate) fn interest(&self, meta: &Metadata<'_>) -> tracing_core::Interest {
        if self.wants(meta) {
            tracing_core::Interest::always()
        } else {
            tracing_core::Interest::never()
        }
    }

    /// The most verbose level anything passes.
    pub(crate) fn level_hint(&self) -> Option<tracing_core::LevelFilter> {
        if !(self.signals.traces || self.signals.logs) {
            return Some(tracing_core::LevelFilter::OFF);
        }
        self.targets
            .as_ref()
            .and_then(Filter::<tracing_subscriber::Registry>::max_level_hint)
    }

    pub(crate) fn wants(&self, meta: &Metadata<'_>) -> bool {
        let signal = if meta.is_span() {
            self.signals.traces
        } else {
            self.signals.logs || self.signals.traces
        };
        signal
            && self
                .targets
                .as_ref()
                .is_none_or(|t| t.would_enable(meta.target(), meta.level()))
    }
}

/// The same filter applied to the whole subscriber, for a registry where
/// [`WasiObserveLayer`] is the only layer
/// (`registry().with(SignalFilter::from_host()).with(WasiObserveLayer::default())`):
/// a per-layer filter makes the registry look each span up again on every
/// enter, exit and close to ask whether that layer wants it, which a global
/// filter never needs.
impl<S: Subscriber> Layer<S> for SignalFilter {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> tracing_core::Interest {
        self.interest(meta)
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        self.wants(meta)
    }

    fn max_level_hint(&self) -> Option<tracing_core::LevelFilter> {
        self.level_hint()
    }
}

impl<S> Filter<S> for SignalFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        self.wants(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing_core::Interest {
        self.interest(meta)
    }

    fn max_level_hint(&self) -> Option<tracing_core::LevelFilter> {
        self.level_hint()
    }
}

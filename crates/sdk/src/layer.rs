//! The `tracing` layer: spans become host spans, events become log records
//! and span events, with `tracing-opentelemetry`'s conventions.
//!
//! Crossings: a span costs two host calls (`start-span` with its name, kind
//! and the fields known at creation; `finish`, or a drop, when it closes),
//! and an event one (`emit`). Fields recorded later, statuses and names are
//! kept in the guest until the span closes. Entering and exiting a span
//! never crosses: the parent of each span is given explicitly, by the rules
//! of `tracing`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use opentelemetry::trace::{SpanContext, Status, TraceContextExt as _};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Field, Level, Metadata, Subscriber, field};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::Signals;
use crate::bindings::sdk::{self, Parent, SpanEvent};
use crate::bindings::{Level as WitLevel, tracer};
use crate::convert::{started_context, with_wit_attributes, with_wit_context};
use crate::pending::Pending;

const SPAN_NAME_FIELD: &str = "otel.name";
const SPAN_KIND_FIELD: &str = "otel.kind";
const SPAN_STATUS_CODE_FIELD: &str = "otel.status_code";
const SPAN_STATUS_DESCRIPTION_FIELD: &str = "otel.status_description";
const EXCEPTION_MESSAGE: &str = "exception.message";
const EXCEPTION_STACKTRACE: &str = "exception.stacktrace";

/// What the SDK keeps for a `tracing` span (in the registry's extensions).
pub(crate) struct SpanData {
    /// The host span; `None` once finished.
    pub(crate) span: Option<tracer::Span>,
    pub(crate) cx: SpanContext,
    pub(crate) recording: bool,
    /// What is sent when the span closes.
    pending: Pending,
}

impl SpanData {
    pub(crate) fn started(started: sdk::Started) -> SpanData {
        SpanData {
            cx: started_context(&started),
            span: Some(started.span),
            recording: started.is_recording,
            pending: Pending::default(),
        }
    }

    /// This span as a parent (or log correlation) for a host call.
    pub(crate) fn with_parent<R>(&self, f: impl FnOnce(Parent<'_>) -> R) -> R {
        match &self.span {
            Some(span) => f(Parent::Span(span)),
            None => with_wit_context(&self.cx, |cx| f(Parent::Context(cx))),
        }
    }

    pub(crate) fn set_attribute(&mut self, kv: KeyValue) {
        if self.recording {
            self.pending.set_attribute(kv);
        }
    }

    pub(crate) fn set_status(&mut self, status: Status) {
        self.pending.set_status(status);
    }

    /// Ends the host span, sending what was kept back in the same call.
    fn finish(&mut self) {
        if let Some(span) = self.span.take() {
            std::mem::take(&mut self.pending).finish(span, None);
        }
    }
}

/// Calls `f` with the current `tracing` span's data, if the current
/// subscriber is a registry that holds it.
pub(crate) fn with_current_span<R>(f: impl FnOnce(Option<&SpanData>) -> R) -> R {
    let mut f = Some(f);
    let mut call = |data: Option<&SpanData>| f.take().map(|f| f(data));
    let result = tracing::dispatcher::get_default(|dispatch| {
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

/// Calls `f` with the parent a new span or log record gets when nothing
/// names one: the current `tracing` span, else the current OpenTelemetry
/// context's span, else the ambient parent.
pub(crate) fn with_implicit_parent<R>(f: impl FnOnce(Parent<'_>) -> R) -> R {
    with_current_span(|data| match data {
        Some(data) => data.with_parent(f),
        None => with_otel_current_or_ambient(f),
    })
}

/// The current OpenTelemetry context's span, else the ambient parent.
pub(crate) fn with_otel_current_or_ambient<R>(f: impl FnOnce(Parent<'_>) -> R) -> R {
    let cx = opentelemetry::Context::current();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        with_wit_context(&sc, |cx| f(Parent::Context(cx)))
    } else {
        f(Parent::Ambient)
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
    /// Each callsite's constant attributes (code location, target, level)
    /// as the host keeps them, keyed by the callsite's metadata.
    shared: Mutex<HashMap<usize, Shared, BuildHasherDefault<AddressHasher>>>,
}

/// Where a callsite's constant attributes stand with the host.
#[derive(Clone, Copy)]
enum Shared {
    /// Used once, with its constants sent inline. In a short-lived instance
    /// (one per request, say) most callsites are used once, and sharing
    /// would cost a host call for nothing (about 2 µs, the first call of an
    /// import in an instance being dear). From the second use on, sharing
    /// pays: inline constants cost about 1 µs more per span (measured).
    Once,
    /// Shared on second use; `None` when the host keeps no more sets.
    Handle(Option<u32>),
}

/// Hashes a callsite's address with one multiplication: the default SipHash
/// costs more than the rest of the lookup, twice per span. The keys are the
/// program's own static addresses, so no hostile input reaches this map.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing; fold the high bits down, since the table picks
        // buckets by the low ones and addresses are aligned.
        let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 32);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

impl Default for WasiObserveLayer {
    fn default() -> Self {
        WasiObserveLayer {
            location: true,
            target: true,
            shared: Mutex::default(),
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
        let mut out = Vec::with_capacity(4);
        self.location(meta, &mut out);
        if self.target {
            out.push(KeyValue::new("target", meta.target()));
        }
        out
    }

    /// The attributes every event of a callsite has.
    fn event_constants(&self, meta: &'static Metadata<'static>) -> Vec<KeyValue> {
        let mut out = vec![
            KeyValue::new("level", meta.level().as_str()),
            KeyValue::new("target", meta.target()),
        ];
        self.location(meta, &mut out);
        out
    }

    /// The host's handle for a callsite's constant attributes, shared on
    /// the callsite's second use (so they cross the boundary at most twice
    /// per callsite, not once per span); `None` means send them inline.
    fn shared(
        &self,
        meta: &'static Metadata<'static>,
        constants: impl FnOnce() -> Vec<KeyValue>,
    ) -> Option<u32> {
        let key = std::ptr::from_ref(meta) as usize;
        let mut sets = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let state = match sets.entry(key) {
            Entry::Vacant(first) => {
                first.insert(Shared::Once);
                return None;
            }
            Entry::Occupied(seen) => seen.into_mut(),
        };
        if let Shared::Handle(handle) = *state {
            return handle;
        }
        let attrs = constants();
        let handle = if attrs.is_empty() {
            None
        } else {
            with_wit_attributes(&attrs, sdk::share_attributes)
        };
        *state = Shared::Handle(handle);
        handle
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

fn level(level: &Level) -> WitLevel {
    match *level {
        Level::TRACE => WitLevel::Trace,
        Level::DEBUG => WitLevel::Debug,
        Level::INFO => WitLevel::Info,
        Level::WARN => WitLevel::Warn,
        _ => WitLevel::Error,
    }
}

fn span_kind(s: &str) -> Option<tracer::SpanKind> {
    let s = s.trim_matches('"');
    [
        ("server", tracer::SpanKind::Server),
        ("client", tracer::SpanKind::Client),
        ("producer", tracer::SpanKind::Producer),
        ("consumer", tracer::SpanKind::Consumer),
        ("internal", tracer::SpanKind::Internal),
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
struct SpanFields {
    attributes: Vec<KeyValue>,
    name: Option<String>,
    kind: Option<tracer::SpanKind>,
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
        self.attributes.push(KeyValue::new(field.name(), value));
    }
}

impl field::Visit for SpanFields {
    typed_fields!();
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.special(field, value) {
            self.push(field, value.to_string());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if !self.special(field, &text) {
            self.push(field, text);
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let message = value.to_string();
        let chain = error_chain(value);
        self.attributes
            .push(KeyValue::new(EXCEPTION_MESSAGE, message.clone()));
        self.attributes
            .push(KeyValue::new(EXCEPTION_STACKTRACE, chain.clone()));
        self.push(field, message);
        self.attributes
            .push(KeyValue::new(format!("{}.chain", field.name()), chain));
    }
}

/// Fields of an event, sorted into what the log record and the span event
/// share, what only the event has, and what only the log record has.
#[derive(Default)]
struct EventFields {
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

impl<S> Layer<S> for WasiObserveLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let meta = attrs.metadata();
        let shared = self.shared(meta, || self.span_constants(meta));
        let mut fields = SpanFields {
            attributes: match shared {
                Some(_) => Vec::with_capacity(attrs.fields().len()),
                None => self.span_constants(meta),
            },
            ..SpanFields::default()
        };
        attrs.record(&mut fields);

        let name: Cow<'_, str> = match &fields.name {
            Some(n) => Cow::Borrowed(n),
            None => Cow::Borrowed(meta.name()),
        };
        let start = |parent: Parent<'_>, new_root: bool| {
            with_wit_attributes(&fields.attributes, |attributes| {
                sdk::start_span(
                    &name,
                    parent,
                    Some(tracer::StartOptions {
                        new_root,
                        span_kind: fields.kind,
                        attributes: Some(attributes),
                        links: None,
                        timestamp: None,
                    }),
                    shared,
                )
            })
        };
        // The parent, by `tracing`'s rules: the explicit one, else (for a
        // contextual span) the current one; an explicit root starts a trace.
        let parent = match attrs.parent() {
            Some(parent) => ctx.span(parent),
            None if attrs.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        let started = match parent {
            Some(parent) => {
                let extensions = parent.extensions();
                match extensions.get::<SpanData>() {
                    Some(data) => data.with_parent(|p| start(p, false)),
                    None => start(Parent::Ambient, true),
                }
            }
            None if attrs.is_contextual() => with_otel_current_or_ambient(|p| start(p, false)),
            None => start(Parent::Ambient, true),
        };
        let mut data = SpanData::started(started);
        if let Some(status) = fields.status {
            data.set_status(status);
        }
        span.extensions_mut().insert(data);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut fields = SpanFields::default();
        values.record(&mut fields);
        let mut extensions = span.extensions_mut();
        let Some(data) = extensions.get_mut::<SpanData>() else {
            return;
        };
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

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        let (Some(span), Some(follows)) = (ctx.span(id), ctx.span(follows)) else {
            return;
        };
        let Some(follows_cx) = follows.extensions().get::<SpanData>().map(|d| d.cx.clone()) else {
            return;
        };
        let extensions = span.extensions();
        if let Some(data) = extensions.get::<SpanData>()
            && data.recording
            && let Some(handle) = &data.span
        {
            crate::convert::with_wit_span_context(&follows_cx, |cx| {
                handle.add_link(tracer::Link {
                    span_context: cx,
                    attributes: &[],
                })
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let signals = crate::enabled();
        let span = match event.parent() {
            Some(id) => ctx.span(id),
            None if event.is_contextual() => ctx.lookup_current(),
            None => None,
        };
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let message = fields.message.take();

        let Some(span) = span else {
            // Outside any span: a log record only, correlated as
            // `tracing-opentelemetry` would (the OpenTelemetry context).
            if signals.logs {
                let attributes = [fields.shared, fields.log_only].concat();
                with_otel_current_or_ambient(|parent| {
                    emit(parent, meta, message.as_deref(), &attributes, None)
                });
            }
            return;
        };

        let mut extensions = span.extensions_mut();
        let Some(data) = extensions.get_mut::<SpanData>() else {
            return;
        };
        let mut span_event = None;
        if data.recording {
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
            let shared = self.shared(meta, || self.event_constants(meta));
            let mut extra = match shared {
                Some(_) => Vec::new(),
                None => self.event_constants(meta),
            };
            extra.append(&mut fields.event_only);
            span_event = Some((name, extra, shared));
        } else if !signals.logs {
            return;
        }
        // When the log record has attributes the event lacks, the event's
        // list is sent whole; else only what it adds.
        let log_attributes;
        let (attributes, event_attributes, with_record) = if fields.log_only.is_empty() {
            let extra = span_event.as_ref().map(|(_, e, _)| &e[..]).unwrap_or(&[]);
            (&fields.shared[..], extra.to_vec(), true)
        } else {
            log_attributes = [&fields.shared[..], &fields.log_only[..]].concat();
            let mut whole = fields.shared.clone();
            if let Some((_, extra, _)) = &span_event {
                whole.extend(extra.iter().cloned());
            }
            (&log_attributes[..], whole, false)
        };
        with_wit_attributes(&event_attributes, |event_attributes| {
            let span_event = span_event.as_ref().map(|(name, _, shared)| SpanEvent {
                name,
                attributes: event_attributes,
                with_record_attributes: with_record,
                shared: *shared,
            });
            data.with_parent(|parent| {
                emit(parent, meta, message.as_deref(), attributes, span_event)
            })
        });
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

fn emit(
    parent: Parent<'_>,
    meta: &Metadata<'_>,
    message: Option<&str>,
    attributes: &[KeyValue],
    event: Option<SpanEvent<'_>>,
) {
    with_wit_attributes(attributes, |attributes| {
        sdk::emit(
            parent,
            level(meta.level()),
            meta.target(),
            message.unwrap_or(""),
            attributes,
            event,
        )
    });
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

    fn wants(&self, meta: &Metadata<'_>) -> bool {
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

impl<S> Filter<S> for SignalFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        self.wants(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing_core::Interest {
        if self.wants(meta) {
            tracing_core::Interest::always()
        } else {
            tracing_core::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing_core::LevelFilter> {
        if !(self.signals.traces || self.signals.logs) {
            return Some(tracing_core::LevelFilter::OFF);
        }
        self.targets.as_ref().and_then(Filter::<S>::max_level_hint)
    }
}

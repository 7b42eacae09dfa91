//! Import and export tracing: every call a component or core module makes
//! to a host import (WASI interfaces, ours) and every export the host calls
//! becomes a span, with no guest code.
//!
//! wasmtime's generated host bindings open a `tracing` span named
//! `wit-bindgen import` (fields `module`, `function`) around each import
//! call and emit a `call` and a `return` event in it; for WASI preview 1
//! (core modules), wiggle's bindings open `wiggle abi` with the same fields
//! and emit an event with the arguments and one with the `result`. [`CallLayer`] turns
//! those into OpenTelemetry spans; a store's call hook ([`crate::observe_store`])
//! tells it which store is calling, so each span hangs under that guest's
//! current span. Nothing of this runs unless a store has the hook and the
//! layer is installed: the generated spans then cost a disabled `tracing`
//! callsite.
//!
//! Arguments are not recorded unless asked ([`CallTracing::with_arguments`]):
//! they may hold secrets. Lists are never recorded (wasmtime prints `...`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, SpanKind, Status};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;
use wasi_observe_instrument::glob_match;
use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;
use wasmtime::{Engine, Store};

use super::HostSpan;
use crate::ctx::{WasiObserveCtx, WasiObserveView};
use crate::pipeline::Telemetry;

/// The name wasmtime's bindings give the span around an import call.
const IMPORT_SPAN: &str = "wit-bindgen import";
/// The same for WASI preview 1, whose bindings wiggle generates.
const WIGGLE_SPAN: &str = "wiggle abi";

fn is_import_span(name: &str) -> bool {
    name == IMPORT_SPAN || name == WIGGLE_SPAN
}

/// Which calls become spans, and what they record.
#[derive(Clone, Debug, Default)]
pub struct CallTracing {
    patterns: Vec<String>,
    min_duration: Duration,
    arguments: bool,
}

impl CallTracing {
    /// Every import call, no arguments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only calls whose qualified name (`wasi:io/streams@0.2.6#[method]...`,
    /// or the interface alone) matches one of these globs (`*` any run of
    /// characters, `?` one; as `instrument --filter`): `wasi:http/*`,
    /// `wasi:filesystem/*`, `*#get-*`.
    /// Empty: every call.
    pub fn with_filter(mut self, patterns: impl IntoIterator<Item = String>) -> Self {
        self.patterns = patterns.into_iter().filter(|p| !p.is_empty()).collect();
        self
    }

    /// Drops import spans shorter than this (they are leaves: nothing is
    /// orphaned).
    pub fn with_min_duration(mut self, min: Duration) -> Self {
        self.min_duration = min;
        self
    }

    /// Records each argument that is not a list as `wasm.arg.NAME` (its
    /// `Debug` text, at most 256 bytes). Off by default: arguments may hold
    /// secrets.
    pub fn with_arguments(mut self, on: bool) -> Self {
        self.arguments = on;
        self
    }

    /// Whether the filter selects `function` of `interface` (an empty
    /// interface: a core module's export, matched by its name).
    pub fn selects(&self, interface: &str, function: &str) -> bool {
        if interface.is_empty() {
            return self.matches(function, function);
        }
        self.matches(interface, &format!("{interface}#{function}"))
    }

    fn matches(&self, interface: &str, qualified: &str) -> bool {
        self.patterns.is_empty()
            || self
                .patterns
                .iter()
                .any(|p| glob_match(p, qualified) || glob_match(p, interface))
    }

    /// The layer that makes the spans, for a host's own `tracing` subscriber.
    pub fn layer(self) -> CallLayer {
        CallLayer {
            config: Arc::new(self),
        }
    }

    /// Installs [`layer`](Self::layer) as the process's global `tracing`
    /// subscriber. Fails if the process already has one.
    pub fn install(self) -> wasmtime::Result<()> {
        use tracing_subscriber::layer::SubscriberExt as _;
        let subscriber = tracing_subscriber::registry().with(self.layer());
        tracing::subscriber::set_global_default(subscriber).map_err(|_| {
            wasmtime::format_err!(
                "call tracing needs the global tracing subscriber, and one is already set"
            )
        })
    }
}

/// A component's imported interfaces by the short name wasmtime's bindings
/// give them (`streams`, `types`), with the functions each has, so a call
/// is named in full: `wasi:io/streams@0.2.6#[method]output-stream.write`.
#[derive(Debug, Default)]
pub struct ImportNames {
    by_function: HashMap<(String, String), Arc<str>>,
}

impl ImportNames {
    /// The imports of `component`.
    pub fn of(engine: &Engine, component: &Component) -> Self {
        let mut by_function = HashMap::new();
        for (name, item) in component.component_type().imports(engine) {
            let ComponentItem::ComponentInstance(instance) = item.ty else {
                continue;
            };
            let short = short_name(name).to_string();
            for (function, _) in instance.exports(engine) {
                by_function.insert((short.clone(), function.to_string()), Arc::from(name));
            }
        }
        ImportNames { by_function }
    }

    /// The qualified interface of `function` in `module`, as imported.
    fn interface(&self, module: &str, function: &str) -> Option<&Arc<str>> {
        self.by_function
            .get(&(module.to_string(), function.to_string()))
    }
}

/// `streams` from `wasi:io/streams@0.2.6`.
fn short_name(qualified: &str) -> &str {
    let no_version = qualified.split('@').next().unwrap_or(qualified);
    no_version.rsplit('/').next().unwrap_or(no_version)
}

/// What the layer needs to know about the store calling the host right now.
struct Scope {
    telemetry: Telemetry,
    parent: Option<SpanContext>,
    names: Arc<ImportNames>,
}

thread_local! {
    /// The store whose guest is calling the host on this thread, set by the
    /// call hook for the duration of each host call.
    static SCOPE: RefCell<Option<Scope>> = const { RefCell::new(None) };
}

/// Tells the [`CallLayer`] that the guest of `observe` is calling the host
/// now (the store's call hook, [`crate::observe_store`], calls it).
pub(crate) fn calling_host(observe: &WasiObserveCtx, names: &Arc<ImportNames>) {
    let scope = Scope {
        telemetry: observe.telemetry().clone(),
        parent: observe.current_span_context(),
        names: names.clone(),
    };
    SCOPE.with(|s| *s.borrow_mut() = Some(scope));
}

/// The host call that [`calling_host`] announced returned.
pub(crate) fn returning_from_host() {
    SCOPE.with(|s| *s.borrow_mut() = None);
}

/// Traces the import calls of the guest in `store`, replacing any call hook
/// the store had.
#[deprecated(
    note = "give the names to `WasiObserveCtxBuilder::with_call_tracing` and call `wasi_observe_host::observe_store`, which also chains your own hook"
)]
pub fn trace_calls<T: WasiObserveView + 'static>(store: &mut Store<T>, names: Arc<ImportNames>) {
    store.data_mut().observe().set_call_tracing(Some(names));
    crate::observe_store(store);
}

/// A span around an export the host calls (`wasi:cli/run@0.2.6#run`), under
/// `parent`; make it the store's ambient parent so the guest's spans nest
/// under it. Mark a failure with [`export_failed`].
pub fn export_span(
    telemetry: &Telemetry,
    interface: &str,
    function: &str,
    parent: Option<&SpanContext>,
) -> HostSpan {
    let mut attrs = Vec::with_capacity(5);
    name_attributes(&mut attrs, interface, function, "export");
    telemetry.start_span(
        format!("{interface}#{function}"),
        SpanKind::Internal,
        parent,
        attrs,
    )
}

/// Marks an export span failed: `error_type` `trap` or `error_result`.
pub fn export_failed(span: &mut HostSpan, error_type: &str, message: String) {
    span.set_attribute(KeyValue::new("error.type", error_type.to_string()));
    span.set_status(Status::error(message));
}

/// The qualified name of the export of `component` whose interface's short
/// name is `short` (`run` -> `wasi:cli/run@0.2.6`).
pub fn export_interface(engine: &Engine, component: &Component, short: &str) -> Option<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name)
        .find(|name| short_name(name) == short)
        .map(str::to_string)
}

/// A span around a core module's export the host calls (`_start`), as
/// [`export_span`] for components.
pub fn core_export_span(
    telemetry: &Telemetry,
    function: &str,
    parent: Option<&SpanContext>,
) -> HostSpan {
    let mut attrs = Vec::with_capacity(2);
    name_attributes(&mut attrs, "", function, "export");
    telemetry.start_span(function.to_string(), SpanKind::Internal, parent, attrs)
}

fn name_attributes(attrs: &mut Vec<KeyValue>, interface: &str, function: &str, direction: &str) {
    let no_version = interface.split('@').next().unwrap_or(interface);
    let package = no_version.split('/').next().unwrap_or(no_version);
    if !interface.is_empty() {
        attrs.push(KeyValue::new("wasm.interface", interface.to_string()));
        attrs.push(KeyValue::new("wasm.package", package.to_string()));
    }
    attrs.push(KeyValue::new("wasm.function", function.to_string()));
    if let Some((_, version)) = interface.split_once('@') {
        attrs.push(KeyValue::new("wasm.version", version.to_string()));
    }
    attrs.push(KeyValue::new("wasm.call", direction.to_string()));
}

/// Turns wasmtime's `wit-bindgen import` spans into OpenTelemetry spans.
/// Made by [`CallTracing::layer`].
pub struct CallLayer {
    config: Arc<CallTracing>,
}

/// The span being made for one import call, in its `tracing` span.
struct CallSpan {
    span: HostSpan,
    start: Instant,
}

/// `module` and `function` of a `wit-bindgen import` span.
#[derive(Default)]
struct Names {
    module: String,
    function: String,
}

impl Visit for Names {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "module" => self.module = value.to_string(),
            "function" => self.function = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// Writes at most `limit` bytes, then refuses: formatting stops early.
struct Bounded {
    text: String,
    limit: usize,
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.limit.saturating_sub(self.text.len());
        if s.len() <= room {
            self.text.push_str(s);
            Ok(())
        } else {
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.text.push_str(&s[..cut]);
            Err(fmt::Error)
        }
    }
}

fn bounded_debug(value: &dyn fmt::Debug, limit: usize) -> String {
    let mut out = Bounded {
        text: String::new(),
        limit,
    };
    let _ = write!(out, "{value:?}");
    out.text
}

/// The fields of the `call` and `return` events.
struct EventFields {
    message: Option<String>,
    arguments: Vec<(&'static str, String)>,
    record_arguments: bool,
    result: Option<String>,
}

impl Visit for EventFields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => self.message = Some(bounded_debug(value, 16)),
            // Enough to tell `Ok(` from `Err(`, never the whole value.
            "result" => self.result = Some(bounded_debug(value, 4)),
            name if self.record_arguments => {
                let text = bounded_debug(value, 256);
                // Lists are printed as "..." by the bindings: not recorded.
                if text != "\"...\"" {
                    self.arguments.push((name, text));
                }
            }
            _ => {}
        }
    }
}

impl<S> Layer<S> for CallLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !is_import_span(attrs.metadata().name()) {
            return;
        }
        let call = SCOPE.with(|scope| {
            let scope = scope.borrow();
            // A store without the call hook: not traced.
            let scope = scope.as_ref()?;
            let mut names = Names::default();
            attrs.record(&mut names);
            let interface: Arc<str> = scope
                .names
                .interface(&names.module, &names.function)
                .cloned()
                .unwrap_or_else(|| Arc::from(names.module.as_str()));
            let qualified = format!("{interface}#{}", names.function);
            if !self.config.matches(&interface, &qualified) {
                return None;
            }
            let mut kvs = Vec::with_capacity(5);
            name_attributes(&mut kvs, &interface, &names.function, "import");
            let span = scope.telemetry.start_span(
                qualified,
                SpanKind::Internal,
                scope.parent.as_ref(),
                kvs,
            );
            Some(CallSpan {
                span,
                start: Instant::now(),
            })
        });
        if let Some(call) = call
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(call);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        if !is_import_span(span.name()) {
            return;
        }
        let mut fields = EventFields {
            message: None,
            arguments: Vec::new(),
            record_arguments: self.config.arguments,
            result: None,
        };
        event.record(&mut fields);
        let mut extensions = span.extensions_mut();
        let Some(call) = extensions.get_mut::<CallSpan>() else {
            return;
        };
        // wiggle's events carry no message: the arguments, then the result.
        let wiggle = span.name() == WIGGLE_SPAN;
        let message = match fields.message.as_deref() {
            None if wiggle && fields.result.is_some() => Some("return"),
            None if wiggle => Some("call"),
            m => m,
        };
        match message {
            Some("call") => {
                for (name, value) in fields.arguments {
                    call.span
                        .set_attribute(KeyValue::new(format!("wasm.arg.{name}"), value));
                }
            }
            Some("return")
                if fields
                    .result
                    .as_deref()
                    .is_some_and(|r| r.starts_with("Err")) =>
            {
                call.span
                    .set_attribute(KeyValue::new("error.type", "error_result"));
                call.span
                    .set_status(Status::error("the call returned an error"));
            }
            _ => {}
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(call) = span.extensions_mut().remove::<CallSpan>() else {
            return;
        };
        if call.start.elapsed() < self.config.min_duration {
            call.span.discard();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::short_name;

    #[test]
    fn call_filters() {
        let calls = super::CallTracing::new()
            .with_filter(["wasi:http/*".to_string(), "*#get-*".to_string()]);
        assert!(calls.selects("wasi:http/types@0.2.6", "[method]fields.get"));
        assert!(calls.selects("wasi:random/random@0.2.6", "get-random-u64"));
        assert!(!calls.selects("wasi:io/streams@0.2.6", "[method]output-stream.write"));
        assert!(super::CallTracing::new().selects("anything", "at-all"));
    }

    #[test]
    fn short_names() {
        assert_eq!(short_name("wasi:io/streams@0.2.6"), "streams");
        assert_eq!(short_name("wasi:logging/logging"), "logging");
        assert_eq!(short_name("plain"), "plain");
    }
}

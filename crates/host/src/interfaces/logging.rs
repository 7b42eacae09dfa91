//! `wasi:logging/logging`: log records as OpenTelemetry log records.
//!
//! Severity: trace, debug, info, warn, error and critical become severity
//! numbers 1, 5, 9, 13, 17 and 21, with the level's name as severity text.
//! The body is the message. The `context` string is the record's target, which
//! OTLP exports as the name of the record's instrumentation scope (the
//! logger name, in OpenTelemetry's terms). A record made while the guest has a
//! span open carries that span's trace and span ids. `wasi:observe/sdk`'s
//! `emit` makes its records the same way, with attributes (at most
//! `OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT`), the span it names, and no body
//! when its message is empty.

use opentelemetry::logs::Severity;
use wasmtime::component::Linker;

use crate::bindings::logging::{Host, Level};
use crate::ctx::{WasiObserveCtx, WasiObserveView};
use crate::pipeline::logs::NewLog;

/// The version of `wasi:logging` that existing components import.
const DRAFT: &str = "wasi:logging/logging@0.1.0-draft";

pub(crate) fn severity(level: Level) -> (Severity, &'static str) {
    match level {
        Level::Trace => (Severity::Trace, "TRACE"),
        Level::Debug => (Severity::Debug, "DEBUG"),
        Level::Info => (Severity::Info, "INFO"),
        Level::Warn => (Severity::Warn, "WARN"),
        Level::Error => (Severity::Error, "ERROR"),
        Level::Critical => (Severity::Fatal, "CRITICAL"),
    }
}

impl Host for WasiObserveCtx {
    fn log(&mut self, level: Level, context: String, message: String) -> wasmtime::Result<()> {
        let span = self.scope.implicit_parent();
        let (severity, severity_text) = severity(level);
        self.scope.telemetry().emit_log(NewLog {
            severity,
            severity_text,
            target: context.into(),
            body: Some(message),
            attributes: Vec::new(),
            span: span.as_ref(),
            time: None,
        });
        Ok(())
    }
}

/// Serves `wasi:logging/logging@0.1.0-draft` with the same implementation:
/// the interface is identical, but a prerelease version never matches another
/// version, so it needs its own name in the linker.
pub(crate) fn add_draft_to_linker<T: WasiObserveView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    let mut root = linker.root();
    let mut instance = root.instance(DRAFT)?;
    instance.func_wrap(
        "log",
        |mut store, (level, context, message): (Level, String, String)| {
            Host::log(store.data_mut().observe(), level, context, message)
        },
    )?;
    Ok(())
}

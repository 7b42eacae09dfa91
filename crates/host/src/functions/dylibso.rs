//! Dylibso's Observe SDK ABI, for core modules instrumented for it (by its
//! compiler, by hand, or by `wasi-observe instrument`): their function calls
//! and manual spans become spans, and their logs and statsd metrics (which
//! that SDK captured but never exported) go to the log and metric pipelines.
//!
//! The imports, as Dylibso's runtimes define them:
//!
//! | module | name | parameters |
//! |---|---|---|
//! | `dylibso:observe/instrument` | `enter`, `exit`, `memory-grow` | `i32` |
//! | `dylibso:observe/api` | `span-enter`, `span-tags` | `ptr, len` |
//! | | `span-exit` | none |
//! | | `log` | `level: i32, ptr, len` |
//! | | `metric` | `format: i32, ptr, len` |
//! | `dylibso_observe` (older) | `instrument_enter`, ... `span_enter`, ... | same |
//!
//! `ptr` is an `i32` in current guests and an `i64` in older ones (the Rust
//! runtime declares `i64`, the Go runtime `i32` for the new modules and
//! `i64` for `dylibso_observe`): each import is defined with the type the
//! module declares. Strings live in the module's exported `memory`.
//!
//! Levels: 1 error, 2 warn, 3 info, 4 debug, 5 trace (Rust's `log::Level`
//! numbering). Metric format 1 is statsd (`name:value|c|g|ms|h|d`, optional
//! `|@rate` and `|#tag:value,...`). Tags (`span-tags`) are `key:value`
//! strings, separated by commas; a tag without `:` becomes a `true` boolean.
//!
//! Nothing a guest passes traps: an unknown level is logged as info, an
//! unknown format or malformed metric is dropped, a pointer or length
//! outside memory is ignored; each is counted in `invalid_input` (or
//! `measurements_dropped`), which `wasi-observe run` reports.

use opentelemetry::KeyValue;
use wasmtime::{Caller, Extern, Linker, Module, ValType, bail};

use crate::bindings::logging::{Host as _, Level};
use crate::bindings::metrics::{Host as _, InstrumentKind, Number};
use crate::bindings::tracer as wit;
use crate::ctx::{WasiObserveCtx, WasiObserveView};
use crate::pipeline::stats::Stats;

/// Dylibso's manual-span and telemetry API.
pub const API_MODULE: &str = "dylibso:observe/api";
/// The older module holding both APIs.
pub const LEGACY_MODULE: &str = "dylibso_observe";

/// Whether `module` imports any of Dylibso's functions.
pub fn uses_dylibso(module: &Module) -> bool {
    module
        .imports()
        .any(|i| matches!(i.module(), super::HOOKS_MODULE | API_MODULE | LEGACY_MODULE))
}

/// Defines every Dylibso import `module` declares, with the declared types.
/// An import of these modules with another name or an unsupported type is an
/// error here, before the guest runs.
pub fn add_to_linker<T: WasiObserveView + 'static>(
    linker: &mut Linker<T>,
    module: &Module,
) -> wasmtime::Result<()> {
    let mut defined = std::collections::HashSet::new();
    for import in module.imports() {
        let (m, name) = (import.module(), import.name());
        // A module may import the same function twice: define it once.
        if !defined.insert((m, name)) {
            continue;
        }
        let op = match (m, name) {
            (super::HOOKS_MODULE, "enter") | (LEGACY_MODULE, "instrument_enter") => Op::Enter,
            (super::HOOKS_MODULE, "exit") | (LEGACY_MODULE, "instrument_exit") => Op::Exit,
            (super::HOOKS_MODULE, "memory-grow") | (LEGACY_MODULE, "instrument_memory_grow") => {
                Op::Grow
            }
            (API_MODULE, "span-enter") | (LEGACY_MODULE, "span_enter") => Op::SpanEnter,
            (API_MODULE, "span-tags") | (LEGACY_MODULE, "span_tags") => Op::SpanTags,
            (API_MODULE, "span-exit") | (LEGACY_MODULE, "span_exit") => Op::SpanExit,
            (API_MODULE, "log") | (LEGACY_MODULE, "log") => Op::Log,
            (API_MODULE, "metric") | (LEGACY_MODULE, "metric") => Op::Metric,
            (super::HOOKS_MODULE | API_MODULE | LEGACY_MODULE, _) => {
                bail!("unsupported Dylibso Observe import `{m}::{name}`")
            }
            _ => continue,
        };
        let Some(ty) = import.ty().func().cloned() else {
            bail!("Dylibso Observe import `{m}::{name}` is not a function");
        };
        let params: Vec<ValType> = ty.params().collect();
        let results = ty.results().len();
        let wide = |i: usize| matches!(params.get(i), Some(ValType::I64));
        let ok = results == 0
            && match op {
                Op::Enter | Op::Exit | Op::Grow => matches!(params[..], [ValType::I32]),
                Op::SpanExit => params.is_empty(),
                Op::SpanEnter | Op::SpanTags => {
                    params.len() == 2
                        && matches!(params[0], ValType::I32 | ValType::I64)
                        && matches!(params[1], ValType::I32)
                }
                Op::Log | Op::Metric => {
                    params.len() == 3
                        && matches!(params[0], ValType::I32)
                        && matches!(params[1], ValType::I32 | ValType::I64)
                        && matches!(params[2], ValType::I32)
                }
            };
        if !ok {
            bail!("Dylibso Observe import `{m}::{name}` has an unsupported type {ty}");
        }
        define::<T>(linker, m, name, op, wide(0) || wide(1))?;
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Enter,
    Exit,
    Grow,
    SpanEnter,
    SpanTags,
    SpanExit,
    Log,
    Metric,
}

fn observe<'a, T: WasiObserveView>(caller: &'a mut Caller<'_, T>) -> &'a mut WasiObserveCtx {
    caller.data_mut().observe()
}

/// Defines one import; `wide`: its pointer is an `i64`.
pub(crate) fn define<T: WasiObserveView + 'static>(
    linker: &mut Linker<T>,
    m: &str,
    name: &str,
    op: Op,
    wide: bool,
) -> wasmtime::Result<()> {
    macro_rules! with_ptr {
        ($p:ty, $body2:expr, $body3:expr) => {
            match op {
                Op::SpanEnter | Op::SpanTags => {
                    linker.func_wrap(
                        m,
                        name,
                        move |caller: Caller<'_, T>, ptr: $p, len: u32| {
                            $body2(caller, ptr as u64, len)
                        },
                    )?;
                }
                _ => {
                    linker.func_wrap(
                        m,
                        name,
                        move |caller: Caller<'_, T>, a: u32, ptr: $p, len: u32| {
                            $body3(caller, a, ptr as u64, len)
                        },
                    )?;
                }
            }
        };
    }
    match op {
        Op::Enter => {
            linker.func_wrap(m, name, |mut c: Caller<'_, T>, id: u32| {
                observe(&mut c).hook_enter(id)
            })?;
        }
        Op::Exit => {
            linker.func_wrap(m, name, |mut c: Caller<'_, T>, id: u32| {
                observe(&mut c).hook_exit(id)
            })?;
        }
        Op::Grow => {
            linker.func_wrap(m, name, |mut c: Caller<'_, T>, pages: u32| {
                observe(&mut c).hook_memory_grow(pages)
            })?;
        }
        Op::SpanExit => {
            linker.func_wrap(m, name, |mut c: Caller<'_, T>| {
                observe(&mut c).scope.named_span_exit()
            })?;
        }
        _ => {
            let two = move |mut c: Caller<'_, T>, ptr: u64, len: u32| {
                // Tags the store has no room for are not even read.
                if op == Op::SpanTags && observe(&mut c).scope.budget_spent() {
                    let t = observe(&mut c).telemetry();
                    Stats::add(&t.counters().values_dropped_store_budget, 1);
                    return;
                }
                let Some(text) = read_string(&mut c, ptr, len) else {
                    return;
                };
                let ctx = observe(&mut c);
                match op {
                    Op::SpanEnter => ctx.scope.named_span_enter(text),
                    _ => {
                        // Only what a span can hold is converted; the rest
                        // is counted as dropped.
                        let t = ctx.telemetry();
                        let max = t.limits().attributes_per_span;
                        let total = text.split(',').filter(|t| !t.trim().is_empty()).count();
                        Stats::add(
                            &t.counters().attributes_dropped,
                            total.saturating_sub(max) as u64,
                        );
                        ctx.scope.function_attributes(tags(&text, max))
                    }
                }
            };
            let three = move |mut c: Caller<'_, T>, a: u32, ptr: u64, len: u32| {
                let Some(text) = read_string(&mut c, ptr, len) else {
                    return;
                };
                let ctx = observe(&mut c);
                match op {
                    Op::Log => log(ctx, a, text),
                    _ => metric(ctx, a, &text),
                }
            };
            if wide {
                with_ptr!(u64, two, three);
            } else {
                with_ptr!(u32, two, three);
            }
        }
    }
    Ok(())
}

/// Copies a guest string out of the exported `memory`, cut to the value
/// length limit; `None` (counted) if it is not in memory.
fn read_string<T: WasiObserveView>(c: &mut Caller<'_, T>, ptr: u64, len: u32) -> Option<String> {
    let memory = match c.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    };
    let max = c.data_mut().observe().telemetry().limits().value_length;
    let bytes = memory.and_then(|m| {
        let data = m.data(&*c);
        let start = usize::try_from(ptr).ok()?;
        let end = start.checked_add(len as usize)?;
        data.get(start..end)
            .map(|b| b[..b.len().min(max.saturating_add(4))].to_vec())
    });
    let ctx = observe(c);
    let Some(bytes) = bytes else {
        ctx.telemetry().checker().invalid();
        return None;
    };
    Some(
        ctx.telemetry()
            .checker()
            .string(String::from_utf8_lossy(&bytes).into_owned()),
    )
}

/// `key:value,flag` as attributes (at most `max`).
fn tags(text: &str, max: usize) -> Vec<KeyValue> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| match t.split_once(':') {
            Some((k, v)) => KeyValue::new(k.to_string(), v.to_string()),
            None => KeyValue::new(t.to_string(), true),
        })
        .take(max)
        .collect()
}

/// One statsd line: instrument kind, name, value and tags.
fn statsd(line: &str) -> Option<(InstrumentKind, &str, f64, Vec<wit::KeyValue>)> {
    let (name, rest) = line.split_once(':')?;
    let mut parts = rest.split('|');
    let value: f64 = parts.next()?.trim().parse().ok()?;
    let kind = match parts.next()?.trim() {
        "c" => InstrumentKind::Counter,
        "g" => InstrumentKind::Gauge,
        "ms" | "h" | "d" => InstrumentKind::Histogram,
        _ => return None,
    };
    let mut attributes = Vec::new();
    for part in parts {
        if let Some(tags) = part.strip_prefix('#') {
            for t in tags.split(',').filter(|t| !t.is_empty()) {
                let (key, value) = match t.split_once(':') {
                    Some((k, v)) => (k, wit::Value::String(v.to_string())),
                    None => (t, wit::Value::Bool(true)),
                };
                attributes.push(wit::KeyValue {
                    key: key.to_string(),
                    value,
                });
            }
        } else if !part.starts_with('@') {
            return None;
        }
    }
    Some((kind, name.trim(), value, attributes))
}

fn log(ctx: &mut WasiObserveCtx, level: u32, message: String) {
    let level = match level {
        1 => Level::Error,
        2 => Level::Warn,
        3 => Level::Info,
        4 => Level::Debug,
        5 => Level::Trace,
        _ => {
            ctx.telemetry().checker().invalid();
            Level::Info
        }
    };
    let _ = ctx.log(level, String::new(), message);
}

fn metric(ctx: &mut WasiObserveCtx, format: u32, text: &str) {
    if format != 1 {
        ctx.telemetry().checker().invalid();
        Stats::add(&ctx.telemetry().counters().measurements_dropped, 1);
        return;
    }
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match statsd(line) {
            Some((kind, name, value, attributes)) => {
                let _ = ctx.record(kind, name.to_string(), Number::F64(value), attributes);
            }
            None => {
                ctx.telemetry().checker().invalid();
                Stats::add(&ctx.telemetry().counters().measurements_dropped, 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statsd_lines() {
        let (kind, name, value, attrs) = statsd("vowels.count:3|c|#lang:en,loud").unwrap();
        assert!(matches!(kind, InstrumentKind::Counter));
        assert_eq!((name, value), ("vowels.count", 3.0));
        assert_eq!(attrs.len(), 2);
        assert!(matches!(
            statsd("t:1.5|ms|@0.5"),
            Some((InstrumentKind::Histogram, "t", 1.5, _))
        ));
        assert!(matches!(
            statsd("g:-2|g"),
            Some((InstrumentKind::Gauge, "g", -2.0, _))
        ));
        assert!(statsd("no-value|c").is_none());
        assert!(statsd("x:abc|c").is_none());
        assert!(statsd("x:1|s").is_none());
        assert!(statsd("x:1|c|junk").is_none());
    }

    #[test]
    fn tag_lists() {
        let t = tags("a:1, b ,,c:x:y", usize::MAX);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0], KeyValue::new("a", "1"));
        assert_eq!(t[1], KeyValue::new("b", true));
        assert_eq!(t[2], KeyValue::new("c", "x:y"));
    }
}

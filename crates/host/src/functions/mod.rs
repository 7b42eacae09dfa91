//! Function-level spans: the host side of `wasi-observe instrument`, of
//! Dylibso-instrumented modules (see [`dylibso`]), and of the
//! recorders inside instrumented components.
//!
//! Every entered function pushes a small frame on a shadow stack; no span
//! exists yet. When a function exits, its frame becomes a span only if it
//! lasted at least the minimum duration, ends with an error, holds guest data
//! (a Dylibso named span, tags, memory grows), or must be kept because
//! something hangs below it: a kept frame, a guest span, a log record or an
//! outgoing HTTP request (so a function that logs is always a span). A kept
//! frame gets a span id and its parent then, and so does every ancestor that
//! lacked one: a kept child is never orphaned. Short calls therefore cost a
//! push and a pop, not a span.
//!
//! Function spans share the store's tracer state: a guest span started inside
//! a function is that function's child, and a function called inside a guest
//! span is the guest span's child. On a trap the host ends every open frame
//! with an error status, innermost first, so the tree stays balanced.
//!
//! Hostile input is never trapped. Counted in `invalid_input`: an exit with
//! no frame open, an exit whose id matches none of the innermost 256 frames
//! (ignored; one that matches a frame below the top ends the frames above it
//! with the error "unwound without an exit"), a memory grow or tags with no
//! frame open (ignored), and malformed recorder words. Frames beyond
//! [`MAX_DEPTH`] are not recorded and are counted in
//! `spans_dropped_open_limit`, and so is every frame entered above a refused
//! one, so exits stay matched in order. Frames holding guest data are bounded
//! by the open-span limit, as guest spans: grows and tags beyond it (or on a
//! refused frame) are counted in `events_dropped` and `attributes_dropped`.

pub mod dylibso;
mod frames;
mod recorder;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use frames::Functions;
#[allow(deprecated)]
pub use recorder::time_host_calls;
pub use recorder::{add_hooks_to_linker, add_recorder_to_linker};
pub use wasi_observe_instrument::{FUNCTIONS_SECTION, HOOKS_MODULE, RECORDER_IMPORT};

/// Deepest shadow stack kept per store; deeper frames are counted and not
/// recorded (recursion that deep would make an unreadable trace anyway).
pub const MAX_DEPTH: usize = 1 << 16;

/// The default of [`WasiObserveCtxBuilder::with_min_function_duration`](crate::WasiObserveCtxBuilder::with_min_function_duration):
/// a call shorter than this is not a span unless something below it is
/// kept. 100 µs keeps traces of call-heavy programs readable (fib(25) gives
/// a handful of spans, not 250 000) while showing where time goes.
pub const DEFAULT_MIN_DURATION: Duration = Duration::from_micros(100);

/// Names of the function ids a store reports, built once per module or
/// component and shared by its stores.
#[derive(Clone, Debug, Default)]
pub struct FunctionNames {
    /// Each id's name, and whether it is plumbing ([`Self::is_plumbing`]),
    /// told once here rather than at every span that asks.
    by_id: HashMap<u32, (Arc<str>, bool)>,
    /// Named from a component: its events come through the recorder.
    recorder: bool,
}

impl FunctionNames {
    /// Names from an instrumented core module's name section (ids are
    /// function indices), or from an instrumented component's function
    /// table; demangled. Empty for a guest that is not instrumented (a core
    /// module without the hooks import keeps its names unread: demangling
    /// them all would only slow its start).
    pub fn from_wasm(wasm: &[u8]) -> Self {
        let recorder = wasmparser::Parser::is_component(wasm);
        let names: Vec<(u32, String)> = if recorder {
            wasi_observe_instrument::names::component_function_names(wasm)
                .into_iter()
                .enumerate()
                .map(|(i, n)| (i as u32, n))
                .collect()
        } else if imports_hooks(wasm) {
            wasi_observe_instrument::names::module_function_names(wasm)
                .into_iter()
                .collect()
        } else {
            Vec::new()
        };
        let recorder = recorder && !names.is_empty();
        FunctionNames::new(names, recorder)
    }

    fn new(names: impl IntoIterator<Item = (u32, String)>, recorder: bool) -> Self {
        let by_id = names
            .into_iter()
            .map(|(id, name)| {
                let plumbing = is_plumbing_name(&name);
                (id, (Arc::from(name), plumbing))
            })
            .collect();
        FunctionNames { by_id, recorder }
    }

    /// The name of `id` (wasmtime's `wasm-function[N]` form if it has none).
    pub fn name(&self, id: u32) -> String {
        match self.by_id.get(&id) {
            Some((n, _)) => n.to_string(),
            None => wasi_observe_instrument::names::unnamed(id),
        }
    }

    /// Number of named ids.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the ids come from an instrumented component's recorder
    /// (whose timing needs the store's call hook, see
    /// [`observe_store`](crate::observe_store)).
    pub fn from_recorder(&self) -> bool {
        self.recorder
    }

    /// Whether no id has a name.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Whether `id` is telemetry plumbing or the standard library: a
    /// function of the guest SDK, `tracing`, `log`, OpenTelemetry, the
    /// bindings, or `std`/`core`/`alloc` (which the plumbing calls through,
    /// thread-locals say). A span the SDK starts belongs to the innermost
    /// function that is none of these: the code that asked for the span.
    /// Unnamed functions are not plumbing (nothing says they are).
    pub(crate) fn is_plumbing(&self, id: u32) -> bool {
        self.by_id.get(&id).is_some_and(|&(_, plumbing)| plumbing)
    }
}

/// Whether a demangled function name belongs to one of the crates
/// [`FunctionNames::is_plumbing`] looks past, by its first path segment.
fn is_plumbing_name(name: &str) -> bool {
    const CRATES: [&str; 13] = [
        "wasi_observe",
        "wasi_observe_wire",
        "tracing",
        "tracing_core",
        "tracing_subscriber",
        "log",
        "opentelemetry",
        "opentelemetry_sdk",
        "wit_bindgen",
        "wit_bindgen_rt",
        "std",
        "core",
        "alloc",
    ];
    // `<T as Trait>::f` is T's; `&`, `mut ` and `dyn ` qualify it.
    let mut path = name.trim_start_matches(['<', '&', '*']);
    for prefix in ["mut ", "const ", "dyn "] {
        path = path.strip_prefix(prefix).unwrap_or(path);
    }
    let krate = path.split([':', '<', ' ']).next().unwrap_or_default();
    CRATES.contains(&krate)
}

/// Whether a core module imports the function hooks ([`HOOKS_MODULE`], or
/// their older `dylibso_observe::instrument_*` names).
fn imports_hooks(wasm: &[u8]) -> bool {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(wasmparser::Payload::ImportSection(reader)) => {
                return reader.into_imports().any(|import| {
                    import.is_ok_and(|i| {
                        i.module == HOOKS_MODULE
                            || (i.module == dylibso::LEGACY_MODULE
                                && i.name.starts_with("instrument_"))
                    })
                });
            }
            // Imports come before functions: none were seen.
            Ok(wasmparser::Payload::FunctionSection(_) | wasmparser::Payload::End(_)) | Err(_) => {
                return false;
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::FunctionNames;
    /// Names are read only from modules that import the hooks.
    #[test]
    fn function_names_only_for_instrumented_modules() {
        let plain = wat::parse_str(r#"(module (func $work) (func $other))"#).unwrap();
        assert!(FunctionNames::from_wasm(&plain).is_empty());
        let hooked = wat::parse_str(
            r#"(module (import "dylibso:observe/instrument" "enter" (func $enter (param i32)))
                 (func $work))"#,
        )
        .unwrap();
        let names = FunctionNames::from_wasm(&hooked);
        assert_eq!(names.name(1), "work");
        // Dylibso's older import names count too.
        let legacy = wat::parse_str(
            r#"(module (import "dylibso_observe" "instrument_enter" (func $enter (param i32)))
                 (func $work))"#,
        )
        .unwrap();
        assert_eq!(FunctionNames::from_wasm(&legacy).name(1), "work");
    }

    /// The SDK's, `tracing`'s and the standard library's functions (trait
    /// impls and drop glue included) are plumbing; the program's, other
    /// libraries' and unnamed ones are not.
    #[test]
    fn plumbing_is_told_by_the_crate_a_function_belongs_to() {
        let named = [
            ("wasi_observe::pipe::ask_frame", true),
            (
                "<wasi_observe::subscriber::WasiObserveSubscriber as tracing_core::subscriber::Subscriber>::new_span",
                true,
            ),
            ("tracing::span::Span::new", true),
            ("core::ptr::drop_in_place<tracing::span::EnteredSpan>", true),
            ("std::thread::local::LocalKey<T>::try_with", true),
            (
                "<&mut opentelemetry::trace::Foo as core::fmt::Debug>::fmt",
                true,
            ),
            ("shop::checkout", false),
            ("shop::main::{{closure}}", false),
            ("<shop::Item as core::fmt::Debug>::fmt", false),
            ("hyper::client::send", false),
            ("tracingx::helper", false),
            ("_start", false),
        ];
        let names = FunctionNames::new(
            named
                .iter()
                .enumerate()
                .map(|(i, (n, _))| (i as u32, (*n).to_string())),
            true,
        );
        for (i, (name, plumbing)) in named.iter().enumerate() {
            assert_eq!(names.is_plumbing(i as u32), *plumbing, "{name}");
        }
        assert!(!names.is_plumbing(99), "unnamed");
    }
}

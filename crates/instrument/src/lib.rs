//! Function-level instrumentation by rewriting: every function of a
//! WebAssembly core module, or of every core module inside a component,
//! reports its entry and exit, and every `memory.grow` its request, with no
//! change to the guest's source.
//!
//! Two encodings, one per kind of input (see `docs/instrumentation.md`):
//!
//! - **Core modules** import Dylibso's Observe ABI, `dylibso:observe/instrument`
//!   `enter(i32)`, `exit(i32)` and `memory-grow(i32)`, with the function's
//!   index as the id and its name in the name section. A host hook for a core
//!   module costs a few nanoseconds, so each event is one host call; and a
//!   module instrumented here also runs under Dylibso's own SDKs (and modules
//!   Dylibso instrumented run under ours) with one host implementation.
//! - **Components**: a host call from a component costs hundreds of
//!   nanoseconds, so each instrumented core module gets a recorder: events go
//!   to a 32-slot buffer in a private memory and are flushed in one call of
//!   `wasi-observe:instrument/recorder@0.1.0#flush` (16 `u64`s, all scalars,
//!   so no guest memory is shared with the host). The buffer is flushed when
//!   full, before every call of an imported function (so the host sees events
//!   in program order relative to everything else the guest does), and when
//!   the module's outermost instrumented call returns. Names are in the
//!   component's custom section [`FUNCTIONS_SECTION`], indexed by id.
//!
//! Control flow keeps enter and exit balanced: the body is wrapped in a block
//! (so `br` to the function label reaches the exit), `return` and tail calls
//! (`return_call*`) exit first, and in modules that can throw (they define or
//! import a tag) the body is wrapped in a `try_table` whose `catch_all_ref`
//! exits and rethrows. A trap cannot be caught: the host ends the frames that
//! are still open.

mod component;
mod module;
pub mod names;

use anyhow::{Context as _, Result, bail};
use wasmparser::{Validator, WasmFeatures};

/// The module name of the core-module hooks (Dylibso's Observe ABI).
pub const HOOKS_MODULE: &str = "dylibso:observe/instrument";

/// The component import through which recorders flush their events.
pub const RECORDER_IMPORT: &str = "wasi-observe:instrument/recorder@0.1.0";

/// The flush function of [`RECORDER_IMPORT`]: 16 `u64` parameters, each two
/// little-endian 32-bit events (see [`Event`]); zero words are padding.
pub const RECORDER_FLUSH: &str = "flush";

/// The custom section of an instrumented component that names its function
/// ids: a count, then that many names (each a LEB128 length and UTF-8 bytes).
pub const FUNCTIONS_SECTION: &str = "wasi-observe.functions";

/// Events in one recorder flush.
pub const EVENTS_PER_FLUSH: usize = 32;

/// One 32-bit recorder event: the low two bits say what it is, the rest
/// carries the function id or the number of pages requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A function was entered.
    Enter(u32),
    /// A function exited (returned, threw, or tail-called another).
    Exit(u32),
    /// `memory.grow` was asked for this many pages (saturated at 2^30 - 1).
    MemoryGrow(u32),
}

impl Event {
    /// Decodes one event word; `None` for padding (0).
    pub fn decode(word: u32) -> Option<Event> {
        let value = word >> 2;
        match word & 3 {
            1 => Some(Event::Enter(value)),
            2 => Some(Event::Exit(value)),
            3 => Some(Event::MemoryGrow(value)),
            _ => None,
        }
    }

    /// Encodes the event; the value must fit in 30 bits.
    pub fn encode(self) -> u32 {
        match self {
            Event::Enter(id) => (id << 2) | 1,
            Event::Exit(id) => (id << 2) | 2,
            Event::MemoryGrow(pages) => (pages.min(MAX_EVENT_VALUE) << 2) | 3,
        }
    }
}

/// The largest function id or page count an event carries.
pub const MAX_EVENT_VALUE: u32 = (1 << 30) - 1;

/// What to instrument.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Glob patterns (`*` any run of characters, `?` one character) matched
    /// against demangled function names; empty: every function. A function
    /// that matches none is left as it is (its callees' spans then hang from
    /// the nearest instrumented caller).
    pub filter: Vec<String>,
}

impl Options {
    fn selects(&self, name: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|g| glob_match(g, name))
    }
}

/// What a rewrite did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Core modules rewritten.
    pub modules: usize,
    /// Functions that now report their calls.
    pub functions: usize,
    /// Functions left alone: not selected by the filter, or the canonical
    /// ABI's `cabi_*` helpers (which may not call imports).
    pub skipped: usize,
    /// Whether the input was a component.
    pub component: bool,
}

/// The features a rewritten binary may use: everything wasmparser knows, as
/// the input may use anything and the rewrite adds multi-memory (recorders)
/// and exception handling (modules that throw).
pub fn features() -> WasmFeatures {
    WasmFeatures::all()
}

/// Rewrites a core module or a component (told apart by its header). The
/// input is validated first and the output before it is returned, so a
/// malformed input is an error, never a malformed output.
pub fn instrument(wasm: &[u8], options: &Options) -> Result<(Vec<u8>, Report)> {
    Validator::new_with_features(features())
        .validate_all(wasm)
        .context("the input is not valid WebAssembly")?;
    let mut report = Report::default();
    let out = if wasmparser::Parser::is_component(wasm) {
        report.component = true;
        component::instrument(wasm, options, &mut report)?
    } else if wasmparser::Parser::is_core_wasm(wasm) {
        match module::instrument(wasm, options, module::Mode::Hooks, &mut report)? {
            Some(rewritten) => rewritten.bytes,
            None => wasm.to_vec(),
        }
    } else {
        bail!("not a WebAssembly module or component")
    };
    Validator::new_with_features(features())
        .validate_all(&out)
        .context("internal error: the rewritten binary does not validate")?;
    Ok((out, report))
}

/// Whether `name` matches `pattern` (`*`: any run, `?`: one character).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matching with backtracking to the last `*`: linear memory,
    // O(p * n) time at worst.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("fib*", "fib::inner"));
        assert!(glob_match("*::fib", "app::fib"));
        assert!(!glob_match("*::fib", "app::fibx"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("", "x"));
        assert!(glob_match("", ""));
    }

    #[test]
    fn events_round_trip() {
        for e in [Event::Enter(0), Event::Exit(7), Event::MemoryGrow(3)] {
            assert_eq!(Event::decode(e.encode()), Some(e));
        }
        assert_eq!(Event::decode(0), None);
        assert_eq!(
            Event::decode(Event::MemoryGrow(u32::MAX).encode()),
            Some(Event::MemoryGrow(MAX_EVENT_VALUE))
        );
    }
}

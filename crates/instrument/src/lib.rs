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
//!   to a 48-slot buffer in a private memory and are flushed in one call of
//!   `wasi-observe:instrument/recorder@0.2.0#flush` (16 `u64`s of three
//!   21-bit slots each, all scalars, so no guest memory is shared with the
//!   host). The buffer is flushed when
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

/// The component import through which recorders flush their events (0.2:
/// three 21-bit slots per word; 0.1 had two 32-bit events per word).
pub const RECORDER_IMPORT: &str = "wasi-observe:instrument/recorder@0.2.0";

/// The flush function of [`RECORDER_IMPORT`]: [`WORDS_PER_FLUSH`] `u64`
/// parameters, each [`SLOTS_PER_WORD`] 21-bit slots (see [`Event`]), the first
/// event in the low bits; zero slots are padding.
pub const RECORDER_FLUSH: &str = "flush";

/// The custom section of an instrumented component that names its function
/// ids: a count, then that many names (each a LEB128 length and UTF-8 bytes).
pub const FUNCTIONS_SECTION: &str = "wasi-observe.functions";

/// `u64` parameters of one recorder flush (16: the most the canonical ABI
/// passes as scalars, without guest memory).
pub const WORDS_PER_FLUSH: usize = 16;

/// Event slots in one `u64` of a flush.
pub const SLOTS_PER_WORD: usize = 3;

/// Bits of one slot: kind in the low two bits, a 19-bit value above.
pub const SLOT_BITS: u32 = 21;

/// The largest value one slot carries; larger ones take a [`Slot::High`]
/// slot first.
pub const MAX_SLOT_VALUE: u32 = (1 << (SLOT_BITS - 2)) - 1;

/// Slots in one recorder flush (and in the recorder's buffer).
pub const EVENTS_PER_FLUSH: usize = WORDS_PER_FLUSH * SLOTS_PER_WORD;

/// One recorder event. On the wire an event is one 21-bit slot, kind in the
/// low two bits (1 enter, 2 exit, 3 memory grow), the function id or the
/// pages requested above; a value above [`MAX_SLOT_VALUE`] is preceded by a
/// slot of kind 0 holding its high bits ([`Slot::High`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A function was entered.
    Enter(u32),
    /// A function exited (returned, threw, or tail-called another).
    Exit(u32),
    /// `memory.grow` was asked for this many pages (saturated at 2^30 - 1).
    MemoryGrow(u32),
}

/// What one slot says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Zero: nothing.
    Padding,
    /// Kind 0, non-zero: the bits of the next event's value above its own
    /// 19 (`value << 19`).
    High(u32),
    /// Kind 1 to 3: an event, with the low 19 bits of its value.
    Event(u32, u32),
}

impl Slot {
    /// Reads a slot (only the low [`SLOT_BITS`] bits are looked at).
    pub fn decode(slot: u32) -> Slot {
        let slot = slot & ((1 << SLOT_BITS) - 1);
        match (slot & 3, slot >> 2) {
            (0, 0) => Slot::Padding,
            (0, high) => Slot::High(high),
            (kind, low) => Slot::Event(kind, low),
        }
    }
}

impl Event {
    /// The event of kind `kind` (1 to 3) with `value`; `None` for another
    /// kind or a value above [`MAX_EVENT_VALUE`].
    pub fn from_parts(kind: u32, value: u64) -> Option<Event> {
        let value = u32::try_from(value)
            .ok()
            .filter(|v| *v <= MAX_EVENT_VALUE)?;
        match kind {
            1 => Some(Event::Enter(value)),
            2 => Some(Event::Exit(value)),
            3 => Some(Event::MemoryGrow(value)),
            _ => None,
        }
    }

    fn kind_value(self) -> (u32, u32) {
        match self {
            Event::Enter(id) => (1, id.min(MAX_EVENT_VALUE)),
            Event::Exit(id) => (2, id.min(MAX_EVENT_VALUE)),
            Event::MemoryGrow(pages) => (3, pages.min(MAX_EVENT_VALUE)),
        }
    }

    /// The event's slots: a [`Slot::High`] slot if the value needs one, and
    /// the event's own slot. Values above [`MAX_EVENT_VALUE`] saturate.
    pub fn encode(self) -> (Option<u32>, u32) {
        let (kind, value) = self.kind_value();
        let high = (value > MAX_SLOT_VALUE).then_some((value >> (SLOT_BITS - 2)) << 2);
        (high, ((value & MAX_SLOT_VALUE) << 2) | kind)
    }

    /// Encodes a sequence of events into flush words (as many as needed,
    /// the last one padded with zero slots).
    pub fn encode_words(events: &[Event]) -> Vec<u64> {
        let slots: Vec<u32> = events
            .iter()
            .flat_map(|e| {
                let (high, slot) = e.encode();
                high.into_iter().chain([slot])
            })
            .collect();
        slots
            .chunks(SLOTS_PER_WORD)
            .map(|c| {
                c.iter().enumerate().fold(0u64, |w, (i, s)| {
                    w | (u64::from(*s) << (SLOT_BITS * i as u32))
                })
            })
            .collect()
    }
}

/// The largest function id or page count an event carries.
pub const MAX_EVENT_VALUE: u32 = (1 << 30) - 1;

/// What to instrument.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Glob patterns (`*` any run of characters, `?` one character) matched
    /// against demangled function names; empty: every function. A function
    /// that matches none gets no enter and exit (its callees' spans then
    /// hang from the nearest instrumented caller); its `memory.grow` is still
    /// reported, and in a component it still flushes the recorder before
    /// calling an import.
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

/// A re-encoding failure as an error that keeps the parser's message and
/// offset (wasm-encoder's own message for it is only "There was an error
/// when parsing").
pub(crate) fn reencode_error(e: wasm_encoder::reencode::Error<String>) -> anyhow::Error {
    match e {
        wasm_encoder::reencode::Error::ParseError(p) => anyhow::Error::new(p),
        other => anyhow::anyhow!("{other}"),
    }
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
        for e in [
            Event::Enter(0),
            Event::Exit(7),
            Event::MemoryGrow(3),
            Event::Enter(MAX_SLOT_VALUE),
            Event::Exit(MAX_SLOT_VALUE + 1),
            Event::Enter(MAX_EVENT_VALUE),
        ] {
            let (high, slot) = e.encode();
            assert_eq!(high.is_some(), e.kind_value().1 > MAX_SLOT_VALUE, "{e:?}");
            let high = match high.map(Slot::decode) {
                Some(Slot::High(h)) => u64::from(h),
                None => 0,
                other => panic!("{other:?}"),
            };
            let Slot::Event(kind, low) = Slot::decode(slot) else {
                panic!("{e:?}")
            };
            let value = (high << (SLOT_BITS - 2)) | u64::from(low);
            assert_eq!(Event::from_parts(kind, value), Some(e));
        }
        assert_eq!(Slot::decode(0), Slot::Padding);
        assert_eq!(Slot::decode(1 << SLOT_BITS), Slot::Padding, "bits above");
        assert_eq!(
            Event::MemoryGrow(u32::MAX).encode(),
            Event::MemoryGrow(MAX_EVENT_VALUE).encode()
        );
        assert_eq!(Event::from_parts(1, u64::from(MAX_EVENT_VALUE) + 1), None);
        assert_eq!(Event::from_parts(0, 1), None);
        // Three slots per word, first in the low bits; padded with zeros.
        let words = Event::encode_words(&[Event::Enter(1), Event::Exit(1), Event::Enter(2)]);
        assert_eq!(words, [5 | (6 << 21) | (9 << 42)]);
        let words = Event::encode_words(&[Event::Enter(1 << 19); 2]);
        assert_eq!(words, [4 | (1 << 21) | (4 << 42), 1]);
    }
}

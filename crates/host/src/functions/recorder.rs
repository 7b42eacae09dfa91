//! The host side of an instrumented component's recorder: batches of
//! function events decoded onto the shadow stack, and their linkers.

use wasi_observe_instrument::{MAX_EVENT_VALUE, SLOT_BITS, SLOTS_PER_WORD};
use wasmtime::component::Linker;

use super::HOOKS_MODULE;
use super::RECORDER_IMPORT;
use super::frames::NO_SPAN;
use crate::ctx::WasiObserveView;
use crate::scope::SpanScope;

impl SpanScope {
    /// One recorder flush: up to 48 events (three 21-bit slots per word, see
    /// [`wasi_observe_instrument::Event`]) that happened since the previous
    /// flush returned. A clock read in the guest would be a host call per
    /// event, so the events share the interval evenly: the span tree is
    /// exact, durations inside one batch are estimates (see
    /// `docs/instrumentation.md`).
    ///
    /// Any words are accepted. Counted in `invalid_input`: a word with its
    /// unused top bit set (its slots are still decoded), an event value
    /// beyond [`MAX_EVENT_VALUE`] and a `high` slot followed by another
    /// (both skipped), and exits that match nothing (as above).
    pub(crate) fn recorder_flush(&mut self, words: &[u64]) {
        const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;
        // Bit 0 of each slot: a slot is an event if either kind bit is set.
        const LOW_KIND_BITS: u64 = 1 | (1 << SLOT_BITS) | (1 << (2 * SLOT_BITS));
        const TOP: u64 = 1 << 63;
        let now = self.functions.now();
        let n: u64 = words
            .iter()
            .map(|w| u64::from(((w | (w >> 1)) & LOW_KIND_BITS).count_ones()))
            .sum();
        let from = self.functions.last_flush.unwrap_or(now).min(now);
        let step = (now - from) / n.max(1);
        let min_ticks = self.functions.min_ticks();
        let enabled = self.telemetry.is_enabled();
        // Guest spans cannot start or end inside a batch (the recorder
        // flushes before every import call).
        let guest_depth = self.open.len() as u32;
        let guest_parent = self.open.last().copied().unwrap_or(NO_SPAN);
        let mut t = from;
        for &word in words {
            if word == 0 {
                continue;
            }
            if word & TOP != 0 {
                self.telemetry.checker().invalid();
            }
            for k in 0..SLOTS_PER_WORD as u32 {
                let slot = (word >> (k * SLOT_BITS)) & SLOT_MASK;
                let (kind, low) = (slot & 3, slot >> 2);
                if kind == 0 {
                    if low != 0 {
                        if self.functions.high != 0 {
                            self.telemetry.checker().invalid();
                        }
                        self.functions.high = low;
                    }
                    continue;
                }
                t += step;
                let value = (std::mem::take(&mut self.functions.high) << (SLOT_BITS - 2)) | low;
                if value > u64::from(MAX_EVENT_VALUE) {
                    self.telemetry.checker().invalid();
                    continue;
                }
                let value = value as u32;
                let f = &mut self.functions;
                match kind {
                    1 if f.push_plain(enabled, value, t, guest_depth, guest_parent) => {}
                    1 => self.function_enter(value, t, None),
                    2 if f.pop_short(enabled, value, t, min_ticks) => {}
                    2 => self.function_exit(Some(value), t),
                    _ => self.function_memory_grow(value, t),
                }
            }
        }
        self.functions.last_flush = Some(self.functions.now());
    }
}

/// Makes the recorder timing of an instrumented component exact around host
/// calls, replacing any call hook the store had.
#[deprecated(
    note = "call `wasi_observe_host::observe_store`, which does this and chains your own hook"
)]
pub fn time_host_calls<T: WasiObserveView + 'static>(store: &mut wasmtime::Store<T>) {
    crate::observe_store(store);
}

/// Adds [`RECORDER_IMPORT`] (the import of instrumented components) to a
/// component linker.
pub fn add_recorder_to_linker<T: WasiObserveView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    let mut root = linker.root();
    let mut instance = root.instance(RECORDER_IMPORT)?;
    type Words = (
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
    );
    instance.func_wrap(
        wasi_observe_instrument::RECORDER_FLUSH,
        |mut store, w: Words| {
            let words = [
                w.0, w.1, w.2, w.3, w.4, w.5, w.6, w.7, w.8, w.9, w.10, w.11, w.12, w.13, w.14,
                w.15,
            ];
            store.data_mut().observe().recorder_flush(&words);
            Ok(())
        },
    )?;
    Ok(())
}

/// Adds the core-module hooks (`dylibso:observe/instrument` `enter`, `exit`,
/// `memory-grow`) to a core linker. [`super::dylibso::add_to_linker`] adds
/// them with the rest of Dylibso's ABI.
pub fn add_hooks_to_linker<T: WasiObserveView + 'static>(
    linker: &mut wasmtime::Linker<T>,
) -> wasmtime::Result<()> {
    use super::dylibso::{Op, define};
    for (name, op) in [
        ("enter", Op::Enter),
        ("exit", Op::Exit),
        ("memory-grow", Op::Grow),
    ] {
        define(linker, HOOKS_MODULE, name, op, false)?;
    }
    Ok(())
}

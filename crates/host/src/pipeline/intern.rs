//! Text that recurs, kept once for the life of the process.
//!
//! Span and event names, attribute keys, log targets and a callsite's
//! constant values come back with every span a guest makes, and in `serve`
//! with every instance. Held as `&'static str`, a span copies them for
//! nothing, and the export thread has nothing to free; allocated, each costs
//! an allocation, a copy, and a free on another thread (together about
//! 1 000 of the 12 000 instructions the host spent on a `tracing` span,
//! docs/benchmarks.md).
//!
//! What is kept can never be freed, so it is bounded: at most
//! [`MAX_BYTES`] of text in at most [`MAX_ENTRIES`] strings, process-wide,
//! each at most [`MAX_LEN`] bytes. Text is kept on its second sighting
//! only, so a name that is unique per span (`GET /users/1234`) is not kept.
//! Past the bound, text is allocated per use as before: a guest that floods
//! the table with distinct names costs other guests speed, never memory or
//! data.
//!
//! Lookups go through a small cache per thread (the decode thread's lives
//! as long as the pipeline), so a hit takes no lock. A text that is never
//! kept (unique per span, or past the bound) pays a lookup in the table, a
//! lock and a hash, on top of its allocation.

use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::{Mutex, OnceLock};

/// The most text kept, all strings together.
pub(crate) const MAX_BYTES: usize = 1 << 20;

/// The most strings kept.
pub(crate) const MAX_ENTRIES: usize = 16_384;

/// The longest string kept.
pub(crate) const MAX_LEN: usize = 256;

/// Hashes of strings seen once, before they are forgotten and counted anew.
const MAX_SEEN: usize = 16_384;

/// Seeded at random: a guest cannot aim collisions at it.
type Hasher = foldhash::quality::RandomState;

struct Table {
    kept: HashSet<&'static str, Hasher>,
    /// Strings seen once, by hash (a collision only keeps a string early).
    seen: HashSet<u64, Hasher>,
    bytes: usize,
    max_bytes: usize,
    max_entries: usize,
    hasher: Hasher,
}

impl Table {
    fn new(max_bytes: usize, max_entries: usize) -> Table {
        Table {
            kept: HashSet::default(),
            seen: HashSet::default(),
            bytes: 0,
            max_bytes,
            max_entries,
            hasher: Hasher::default(),
        }
    }

    fn keep(&mut self, s: &str, now: bool) -> Option<&'static str> {
        if let Some(&kept) = self.kept.get(s) {
            return Some(kept);
        }
        if self.kept.len() >= self.max_entries || self.bytes + s.len() > self.max_bytes {
            return None;
        }
        let hash = self.hasher.hash_one(s);
        if !now && !self.seen.remove(&hash) {
            if self.seen.len() >= MAX_SEEN {
                self.seen.clear();
            }
            self.seen.insert(hash);
            return None;
        }
        let kept: &'static str = Box::leak(Box::from(s));
        self.kept.insert(kept);
        self.bytes += s.len();
        Some(kept)
    }
}

/// Slots of each thread's cache (a power of two; 4 KiB per thread).
const CACHE_SLOTS: usize = 256;

thread_local! {
    /// What this thread found kept, direct-mapped by a cheap hash of the
    /// text's ends. A hit costs about 100 instructions, as a hash set's did,
    /// but the cache stays 4 KiB per thread whatever the table holds. A
    /// text that collides with another only takes the table's lock again.
    static CACHE: RefCell<[Option<&'static str>; CACHE_SLOTS]> =
        const { RefCell::new([None; CACHE_SLOTS]) };
}

/// `s`'s slot in a thread's cache: its length and its first and last
/// eight bytes (or all of a shorter one), mixed. Any text may be given; a
/// poor spread costs speed only.
fn slot(s: &str) -> usize {
    let b = s.as_bytes();
    let x = match (b.first_chunk::<8>(), b.last_chunk::<8>()) {
        (Some(first), Some(last)) => {
            u64::from_le_bytes(*first).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                ^ u64::from_le_bytes(*last)
        }
        _ => b.iter().fold(0, |x, &c| (x << 8) | u64::from(c)),
    };
    let x = (x ^ b.len() as u64).wrapping_mul(0xff51_afd7_ed55_8ccd);
    (x >> (64 - CACHE_SLOTS.trailing_zeros())) as usize
}

/// `s` as text kept for the life of the process, if it is (or, seen for
/// the second time, now becomes) kept; `None`: allocate it.
pub(crate) fn get(s: &str) -> Option<&'static str> {
    lookup(s, false)
}

/// As [`get`], keeping `s` at its first sighting: for text known to be a
/// constant (a shared set's).
pub(crate) fn get_now(s: &str) -> Option<&'static str> {
    lookup(s, true)
}

fn lookup(s: &str, now: bool) -> Option<&'static str> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    if s.len() > MAX_LEN {
        return None;
    }
    let slot = slot(s);
    if let Some(hit) = CACHE.with(|c| c.borrow()[slot].filter(|&kept| kept == s)) {
        return Some(hit);
    }
    let kept = TABLE
        .get_or_init(|| Mutex::new(Table::new(MAX_BYTES, MAX_ENTRIES)))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keep(s, now)?;
    CACHE.with(|c| c.borrow_mut()[slot] = Some(kept));
    Some(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_kept_on_its_second_sighting_and_then_shared() {
        let name = format!("intern-test-{}", std::process::id());
        assert_eq!(get(&name), None, "seen once");
        let kept = get(&name).expect("seen twice");
        assert_eq!(kept, name);
        assert!(std::ptr::eq(kept, get(&name).unwrap()), "one copy");
        // Another thread finds the same copy.
        let name2 = name.clone();
        let other = std::thread::spawn(move || get(&name2).map(|s| s.as_ptr() as usize));
        assert_eq!(other.join().unwrap(), Some(kept.as_ptr() as usize));
        let long = "x".repeat(MAX_LEN + 1);
        assert_eq!(get(&long), None);
        assert_eq!(get(&long), None, "too long to keep");
    }

    /// A guest that sends ever new names fills the table to its bound and
    /// no further; afterwards text is simply not kept.
    #[test]
    fn a_flood_of_distinct_text_stops_at_the_bound() {
        let mut t = Table::new(64 << 10, 1000);
        let mut kept = 0;
        for i in 0..2000 {
            let s = format!("flood-{i:0100}");
            assert_eq!(t.keep(&s, false), None, "seen once");
            kept += usize::from(t.keep(&s, false).is_some());
        }
        // 106 bytes each: the byte bound comes first.
        assert_eq!(kept, (64 << 10) / 106);
        assert!(t.bytes <= 64 << 10);
        let late = format!("late-{:0100}", 0);
        assert_eq!(t.keep(&late, false), None);
        assert_eq!(t.keep(&late, false), None, "the table is full");
        let mut t = Table::new(1 << 20, 10);
        for i in 0..20 {
            t.keep(&i.to_string(), false);
            t.keep(&i.to_string(), false);
        }
        assert_eq!(t.kept.len(), 10, "the entry bound");
    }
}

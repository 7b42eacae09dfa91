//! Finding a trace's row by its id, without an index that takes each new
//! trace on a random page.
//!
//! The id index (schema 5) leads with the trace's *epoch*, its key
//! shifted right by 12 bits (runs of 4 096 traces since schema 6; 16 384
//! in schema 5). Keys are handed out in arrival order, so new entries go
//! to the last epoch's pages (a few dozen, which stay in the page cache),
//! and a batch rewrites some of them instead of about one page per trace.
//! The price is paid by lookups, which probe each epoch, newest first:
//! about 250 index searches at a million traces, a millisecond or two, for
//! a view. Writers look up every trace of every batch, and most are new,
//! so a handle that has made enough lookups asks a [`Filter`] first: a
//! Bloom filter of the ids stored, that answers "not stored" for a new id
//! without touching the file; and a trace it wrote lately (a log record's,
//! or one whose spans come in several batches) is found in [`Recent`]
//! ([`Ids`]).

use std::collections::{HashMap, VecDeque};

use rusqlite::{Connection, OptionalExtension as _};

/// Lookups of trace rows by id in one state of the file (one transaction,
/// or one query).
pub(crate) struct Finder<'c> {
    conn: &'c Connection,
    stmt: rusqlite::CachedStatement<'c>,
    /// The epochs holding a trace, newest first: found at the first lookup
    /// (a writer whose filter answers every lookup never needs them).
    epochs: Option<Vec<i64>>,
}

impl<'c> Finder<'c> {
    pub(crate) fn new(conn: &'c Connection) -> rusqlite::Result<Self> {
        let stmt = conn.prepare_cached(
            "SELECT trace_key, span_count FROM traces
             WHERE trace_key >> 12 = ?1 AND id_hi = ?2 AND id_lo = ?3 AND trace_id = ?4",
        )?;
        Ok(Finder {
            conn,
            stmt,
            epochs: None,
        })
    }

    fn epochs(&mut self) -> rusqlite::Result<()> {
        if self.epochs.is_none() {
            self.epochs = Some(epochs(self.conn)?);
        }
        Ok(())
    }

    /// The key of the trace whose id has index key `id`, read from the
    /// index alone; for well-formed ids only (where the key is the id).
    pub(crate) fn find_key(&mut self, id: (i64, i64)) -> rusqlite::Result<Option<i64>> {
        self.epochs()?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT trace_key FROM traces WHERE trace_key >> 12 = ?1 AND id_hi = ?2 AND id_lo = ?3",
        )?;
        for &epoch in self.epochs.iter().flatten() {
            let key = stmt
                .query_row(rusqlite::params![epoch, id.0, id.1], |r| r.get(0))
                .optional()?;
            if key.is_some() {
                return Ok(key);
            }
        }
        Ok(None)
    }

    /// The stored span count of the trace with key `key`, if it has a row.
    pub(crate) fn span_count(&self, key: i64) -> rusqlite::Result<Option<i64>> {
        self.conn
            .prepare_cached("SELECT span_count FROM traces WHERE trace_key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()
    }

    /// The key and stored span count of the trace with id `hex` (index key
    /// `id`, see [`crate::ingest::id_key`]), if it has a row.
    pub(crate) fn find(
        &mut self,
        id: (i64, i64),
        hex: &str,
    ) -> rusqlite::Result<Option<(i64, i64)>> {
        self.epochs()?;
        for &epoch in self.epochs.iter().flatten() {
            let row = self
                .stmt
                .query_row(rusqlite::params![epoch, id.0, id.1, hex], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            if row.is_some() {
                return Ok(row);
            }
        }
        Ok(None)
    }

    /// The keys and ids of the traces with `id_hi` in `lo..=hi` whose id
    /// starts with `prefix`, newest first, at most `limit` of them.
    pub(crate) fn with_prefix(
        conn: &Connection,
        (lo, hi): (i64, i64),
        prefix: &str,
        limit: usize,
    ) -> rusqlite::Result<Vec<(i64, String)>> {
        let epochs = epochs(conn)?;
        let mut stmt = conn.prepare_cached(
            "SELECT trace_key, trace_id FROM traces
             WHERE trace_key >> 12 = ?1 AND id_hi BETWEEN ?2 AND ?3
                 AND trace_id >= ?4 AND trace_id < ?4 || 'g' LIMIT ?5",
        )?;
        let mut found = Vec::new();
        for epoch in epochs {
            let rows = stmt.query_map(
                rusqlite::params![epoch, lo, hi, prefix, (limit - found.len()) as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            for row in rows {
                found.push(row?);
            }
            if found.len() >= limit {
                break;
            }
        }
        Ok(found)
    }
}

/// The epochs holding a trace, newest first: one search of the keys per
/// epoch, so epochs emptied by retention (a long-lived trace keeps an old
/// one) cost nothing.
pub(crate) fn epochs(conn: &Connection) -> rusqlite::Result<Vec<i64>> {
    // A bare `max` of the key: SQLite reads it from the end of a range.
    let mut stmt = conn.prepare_cached("SELECT max(trace_key) FROM traces WHERE trace_key < ?1")?;
    let mut epochs = Vec::new();
    let mut below = i64::MAX;
    while let Some(key) = stmt.query_row([below], |r| r.get::<_, Option<i64>>(0))? {
        let epoch = key >> 12;
        epochs.push(epoch);
        below = epoch << 12;
    }
    Ok(epochs)
}

/// The trace key of the trace with id `hex`, if it has a row.
pub(crate) fn key_of(conn: &Connection, hex: &str) -> rusqlite::Result<Option<i64>> {
    Ok(Finder::new(conn)?
        .find(crate::ingest::id_key(hex), hex)?
        .map(|(key, _)| key))
}

/// What a writing handle knows of the ids stored. Building the filter
/// reads the whole id index (about 0.1 s at half a million traces), which
/// a short run that writes a few traces would pay for nothing: until the
/// handle has looked up [`BUILD_AFTER`] traces it probes the file instead
/// (an index search per epoch).
#[derive(Default)]
pub(crate) struct Ids {
    filter: Option<Filter>,
    lookups: u64,
    recent: Recent,
}

/// What a write transaction knows of the ids stored ([`Ids::ready`]).
pub(crate) struct Known<'a> {
    /// `None` while probing the file is cheaper.
    pub filter: Option<&'a mut Filter>,
    pub recent: &'a Recent,
    /// `counts.pruned` as the transaction read it: give it back to
    /// [`Ids::committed`].
    pub pruned: i64,
}

/// The keys of the traces this handle wrote last, by id: most log records
/// belong to a trace whose spans were just written (or the reverse), and
/// finding it here saves probing the epochs. A key stays right as long as
/// its row exists, and rows go only by retention, which raises
/// `counts.pruned`: when that changes, everything here is forgotten.
#[derive(Default)]
pub(crate) struct Recent {
    keys: HashMap<(i64, i64), i64>,
    order: VecDeque<(i64, i64)>,
    pruned: i64,
}

/// Traces [`Recent`] remembers (about 3 MiB): more than a batch or two of
/// the largest batches holds.
const RECENT: usize = 65_536;

impl Recent {
    pub(crate) fn get(&self, id: (i64, i64)) -> Option<i64> {
        self.keys.get(&id).copied()
    }

    fn insert(&mut self, id: (i64, i64), key: i64) {
        if self.keys.insert(id, key).is_none() {
            self.order.push_back(id);
            if self.order.len() > RECENT
                && let Some(old) = self.order.pop_front()
            {
                self.keys.remove(&old);
            }
        }
    }

    fn clear(&mut self, pruned: i64) {
        self.keys.clear();
        self.order.clear();
        self.pruned = pruned;
    }
}

/// Lookups after which a handle builds its filter.
const BUILD_AFTER: u64 = 1024;

impl Ids {
    /// The filter, caught up with the file, and the recent keys, for a
    /// write transaction that looks up `lookups` traces. The filter is
    /// rebuilt when it has grown past its size; the recent keys are
    /// forgotten if retention removed traces since they were taken.
    pub(crate) fn ready(
        &mut self,
        conn: &Connection,
        lookups: usize,
    ) -> rusqlite::Result<Known<'_>> {
        let pruned: i64 = conn.query_row(
            "SELECT coalesce((SELECT max(pruned) FROM counts), 0)",
            [],
            |r| r.get(0),
        )?;
        if pruned != self.recent.pruned {
            self.recent.clear(pruned);
        }
        self.lookups = self.lookups.saturating_add(lookups as u64);
        let stale = match &mut self.filter {
            Some(f) if f.entries <= f.capacity => {
                f.catch_up(conn)?;
                false
            }
            Some(_) => true,
            None => self.lookups >= BUILD_AFTER,
        };
        if stale {
            self.filter = Some(Filter::build(conn)?);
        }
        Ok(Known {
            filter: self.filter.as_mut(),
            recent: &self.recent,
            pruned,
        })
    }

    /// A transaction that read `counts.pruned` as `pruned` committed: keys
    /// up to `last` were handed out, and the traces `written` have rows.
    /// If retention has run since, they are not remembered.
    pub(crate) fn committed(
        &mut self,
        pruned: i64,
        last: Option<i64>,
        written: impl IntoIterator<Item = ((i64, i64), i64)>,
    ) {
        if let (Some(f), Some(last)) = (&mut self.filter, last) {
            f.committed(last);
        }
        if pruned == self.recent.pruned {
            for (id, key) in written {
                self.recent.insert(id, key);
            }
        }
    }
}

/// A Bloom filter of the trace ids stored, for writers: "not stored" is
/// certain, "stored" is checked in the file. It covers every row with a
/// key up to `known`; keys are never handed out twice
/// (`counts.last_key`), so catching up reads only the rows above it.
pub(crate) struct Filter {
    bits: Vec<u64>,
    /// Ids inserted (the filter is rebuilt larger past `capacity`).
    entries: u64,
    capacity: u64,
    known: i64,
}

/// Bits per id: with 4 probes, about 0.2% false positives when full.
const BITS_PER_ID: u64 = 16;

impl Filter {
    /// A filter of every id stored, sized for twice their number: one scan
    /// of the id index.
    fn build(conn: &Connection) -> rusqlite::Result<Filter> {
        let count: i64 = conn.query_row("SELECT count(*) FROM traces", [], |r| r.get(0))?;
        let capacity = (count as u64 * 2).max(1 << 16);
        let words = (capacity * BITS_PER_ID / 64).next_power_of_two() as usize;
        let mut filter = Filter {
            bits: vec![0; words],
            entries: 0,
            capacity,
            known: conn.query_row(
                "SELECT max((SELECT coalesce(max(trace_key), 0) FROM traces),
                     coalesce((SELECT max(last_key) FROM counts), 0))",
                [],
                |r| r.get(0),
            )?,
        };
        let mut stmt = conn.prepare("SELECT id_hi, id_lo FROM traces INDEXED BY traces_id")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            filter.insert((r.get(0)?, r.get(1)?));
        }
        Ok(filter)
    }

    /// Adds the rows written since the filter last looked (by this handle
    /// or another process); call it under the write lock.
    fn catch_up(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let mut stmt = conn.prepare_cached(
            "SELECT trace_key, id_hi, id_lo FROM traces WHERE trace_key > ?1 ORDER BY trace_key",
        )?;
        let mut rows = stmt.query([self.known])?;
        while let Some(r) = rows.next()? {
            self.known = r.get(0)?;
            self.insert((r.get(1)?, r.get(2)?));
        }
        let last: i64 = conn.query_row(
            "SELECT coalesce((SELECT max(last_key) FROM counts), 0)",
            [],
            |r| r.get(0),
        )?;
        self.known = self.known.max(last);
        Ok(())
    }

    /// Marks the keys up to `key` as covered, once the transaction that
    /// wrote them committed.
    pub(crate) fn committed(&mut self, key: i64) {
        self.known = self.known.max(key);
    }

    /// The bits of an id. Ids should be random, but nothing makes a guest's
    /// so (counters, a constant high half): both halves go through a full
    /// mix (SplitMix64's finalizer), so ids that differ in any bit spread.
    fn probes(&self, (hi, lo): (i64, i64)) -> [usize; 4] {
        fn mix(mut z: u64) -> u64 {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        let h = mix(mix(hi as u64) ^ lo as u64);
        let (a, b) = (h, h.rotate_left(32) | 1);
        let mask = (self.bits.len() * 64 - 1) as u64;
        [0u64, 1, 2, 3].map(|i| (a.wrapping_add(i.wrapping_mul(b)) & mask) as usize)
    }

    pub(crate) fn insert(&mut self, id: (i64, i64)) {
        for bit in self.probes(id) {
            self.bits[bit / 64] |= 1 << (bit % 64);
        }
        self.entries += 1;
    }

    /// False: no row has this id.
    pub(crate) fn may_hold(&self, id: (i64, i64)) -> bool {
        self.probes(id)
            .iter()
            .all(|&bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_never_forgets_and_rarely_invents() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE traces (trace_key INTEGER PRIMARY KEY, id_hi INTEGER, id_lo INTEGER);
             CREATE INDEX traces_id ON traces (trace_key >> 12, id_hi, id_lo);
             CREATE TABLE counts (last_key INTEGER, pruned INTEGER);
             INSERT INTO counts VALUES (0, 0);",
        )
        .unwrap();
        let mut known = Ids {
            lookups: BUILD_AFTER,
            ..Ids::default()
        };
        let mut state = 0x0123_4567_89ab_cdefu64;
        let mut ids = || {
            let mut next = || {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) as i64
            };
            (next(), next())
        };
        // Sequential ids (a guest's own, not random) as well as random ones.
        let stored: Vec<(i64, i64)> = (0..5000)
            .map(|i| if i % 2 == 0 { (0, i) } else { ids() })
            .collect();
        for (key, id) in stored.iter().enumerate() {
            conn.execute(
                "INSERT INTO traces VALUES (?1, ?2, ?3)",
                rusqlite::params![key as i64 + 1, id.0, id.1],
            )
            .unwrap();
            // Caught up now and then, as writers are.
            if key % 700 == 0 {
                known.ready(&conn, 1).unwrap();
            }
        }
        let filter = known.ready(&conn, 1).unwrap().filter.unwrap();
        assert!(stored.iter().all(|&id| filter.may_hold(id)));
        let invented = (0..100_000).filter(|_| filter.may_hold(ids())).count();
        assert!(invented < 100, "{invented} false positives in 100 000");
        // Neighbours of the sequential ids stored are told apart too.
        let invented = (0..50_000)
            .filter(|i| filter.may_hold((0, 2 * i + 1)))
            .count();
        assert!(
            invented < 50,
            "{invented} false positives in 50 000 sequential ids"
        );
    }
}

//! The embedded telemetry store of `wasi-observe`: one SQLite file that holds
//! the spans, log records and metric points of every run, so they can be
//! looked at without running a backend.
//!
//! - [`Store::open`] opens (or creates) a store and refuses, without touching
//!   it, any file that is not one: a foreign SQLite database, a damaged file,
//!   random bytes, or a store written by a newer version.
//! - [`StoreExporter`] is an OpenTelemetry `SpanExporter`, `LogExporter` and
//!   `PushMetricExporter`; each export batch is one transaction.
//! - The query methods ([`Store::traces`], [`Store::trace`], [`Store::logs`],
//!   [`Store::metrics`], [`Store::metric_series`]) serve the terminal views and
//!   the web UI; [`Store::trace_spans`] reads a trace of any size in pages.
//!
//! The file is in WAL mode: any number of processes may write and read at
//! once (writers take turns, waiting up to [`BUSY_TIMEOUT`]), and what was
//! committed survives the writing process being killed. Retention is bounded
//! by age and by size ([`Retention`]); old data is pruned by the writers, by
//! when it was written (a trace that keeps receiving spans loses its old
//! ones). The files are created readable by their owner alone.
//! When the disk is full (or the hard cap [`StoreOptions::hard_max_bytes`] is
//! reached) new data is dropped and counted ([`Store::dropped`]), and the
//! export returns an error saying so (the host warns once and reports the
//! counts at exit); the process keeps running.
//!
//! ```no_run
//! use wasi_observe_store::{Store, StoreOptions, TraceFilter};
//! let store = Store::open("telemetry.db".as_ref(), StoreOptions::default())?;
//! for t in store.traces(&TraceFilter::default())? {
//!     println!("{} {} {} spans", t.trace_id, t.root_name, t.span_count);
//! }
//! # Ok::<(), anyhow::Error>(())
//! ```

mod codec;
mod ingest;
mod query;
mod schema;
mod trace_ids;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension as _, TransactionBehavior};

pub use ingest::MAX_TRACE_SPANS;
pub use ingest::{PointRow, StoreExporter};
pub use query::{
    Counts, Event, Link, LogFilter, LogRecord, MetricFilter, MetricPoint, Span, SpanCursor,
    SpanPage, TRACE_SPANS_READ, Trace, TraceFilter, TraceSummary,
};

/// The variable that names the store file (the CLI's `--db`).
pub const DB_ENV: &str = "WASI_OBSERVE_DB";
/// Maximum age of stored telemetry, e.g. `7d`, `12h`, `30m`; `0` keeps all.
pub const MAX_AGE_ENV: &str = "WASI_OBSERVE_DB_MAX_AGE";
/// Size above which the oldest telemetry is pruned, e.g. `512MiB`, `2GB`; `0`
/// means no limit.
pub const MAX_SIZE_ENV: &str = "WASI_OBSERVE_DB_MAX_SIZE";
/// A hard cap on the file size: beyond it writes fail like on a full disk
/// (new data is dropped and counted). Meant for tests and small devices.
pub const HARD_MAX_SIZE_ENV: &str = "WASI_OBSERVE_DB_HARD_MAX_SIZE";

/// SQLite `application_id` of a wasi-observe store (`WAOB`).
pub const APPLICATION_ID: i32 = 0x5741_4f42;
/// The schema version this build writes (SQLite `user_version`).
pub const SCHEMA_VERSION: i32 = schema::MIGRATIONS.len() as i32;
/// How long a writer or reader waits for another process's transaction.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the store lives when nothing says otherwise: `$WASI_OBSERVE_DB`, else
/// `wasi-observe/telemetry.db` in the per-user data directory
/// (`$XDG_DATA_HOME`, `~/.local/share` on Linux).
pub fn default_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(DB_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let dir = dirs::data_dir().context(
        "no per-user data directory (set HOME or XDG_DATA_HOME, or name a store with --db / WASI_OBSERVE_DB)",
    )?;
    Ok(dir.join("wasi-observe").join("telemetry.db"))
}

/// How much telemetry is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Telemetry older than this is pruned; `None` keeps it forever.
    pub max_age: Option<Duration>,
    /// When the data in the file grows past this, the oldest is pruned until
    /// it is back under 90% of it; `None` means no limit.
    pub max_bytes: Option<u64>,
}

impl Default for Retention {
    /// Seven days, 512 MiB.
    fn default() -> Self {
        Retention {
            max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            max_bytes: Some(512 << 20),
        }
    }
}

/// Options for [`Store::open`].
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// What is kept.
    pub retention: Retention,
    /// A hard cap on the file size (SQLite `max_page_count`): writes beyond it
    /// fail as on a full disk. `None`: only the disk limits it.
    pub hard_max_bytes: Option<u64>,
}

impl StoreOptions {
    /// The defaults, overridden by [`MAX_AGE_ENV`], [`MAX_SIZE_ENV`] and
    /// [`HARD_MAX_SIZE_ENV`].
    pub fn from_env() -> Result<Self> {
        let mut o = StoreOptions::default();
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(v) = var(MAX_AGE_ENV) {
            o.retention.max_age = parse_age(&v).with_context(|| format!("{MAX_AGE_ENV}={v}"))?;
        }
        if let Some(v) = var(MAX_SIZE_ENV) {
            o.retention.max_bytes =
                parse_size(&v).with_context(|| format!("{MAX_SIZE_ENV}={v}"))?;
        }
        if let Some(v) = var(HARD_MAX_SIZE_ENV) {
            o.hard_max_bytes =
                parse_size(&v).with_context(|| format!("{HARD_MAX_SIZE_ENV}={v}"))?;
        }
        Ok(o)
    }
}

/// `30s`, `15m`, `12h`, `7d` (a bare number is seconds); `0` means no limit.
pub fn parse_age(s: &str) -> Result<Option<Duration>> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .with_context(|| format!("`{s}`: expected a number and s, m, h or d"))?;
    let unit_secs: u64 = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => bail!("`{s}`: unknown unit `{other}` (expected s, m, h or d)"),
    };
    // Beyond u64 seconds it is forever anyway.
    let secs = n.saturating_mul(unit_secs);
    Ok((secs > 0).then(|| Duration::from_secs(secs)))
}

/// `1048576`, `512KiB`, `64MiB`, `2GiB` (also `KB`, `MB`, `GB` as powers of
/// 1000); `0` means no limit.
pub fn parse_size(s: &str) -> Result<Option<u64>> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .with_context(|| format!("`{s}`: expected a number and a unit such as MiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => bail!("`{s}`: unknown unit `{other}` (expected KiB, MiB, GiB, KB, MB or GB)"),
    };
    Ok((n > 0).then(|| n.saturating_mul(mult)))
}

/// What a store dropped because it could not write (disk full, hard cap).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Spans.
    pub spans: u64,
    /// Log records.
    pub logs: u64,
    /// Metric data points.
    pub metric_points: u64,
}

impl Dropped {
    /// Whether anything was dropped.
    pub fn any(&self) -> bool {
        self.spans + self.logs + self.metric_points > 0
    }
}

/// A handle on one store file. Clones share the connection.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
    options: StoreOptions,
    dropped_spans: AtomicU64,
    dropped_logs: AtomicU64,
    dropped_points: AtomicU64,
    /// Trace ids written through this handle.
    recorded: Mutex<Recorded>,
    last_prune: Mutex<Option<Instant>>,
    /// What `loose_modes` found when the store was opened.
    mode_warning: Option<String>,
    /// [`MAX_TRACE_SPANS`], lower in the tests.
    trace_span_cap: AtomicU64,
    /// What this handle's writes know of the ids stored.
    ids: Mutex<trace_ids::Ids>,
}

/// How many recorded trace ids a handle keeps in order (it counts the rest).
pub const RECORDED_KEPT: usize = 1000;

/// How many distinct trace ids a handle remembers, to count them once.
const RECORDED_SEEN: usize = 100_000;

/// The traces a handle wrote, as numbers: remembering one costs no text
/// and no allocation.
#[derive(Default)]
struct Recorded {
    order: Vec<u128>,
    seen: std::collections::HashSet<u128>,
    more: usize,
}

/// How often a writer checks retention.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store at `path`, creating it (and its directory) if missing.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Store> {
        Self::open_inner(path, options, true)
    }

    /// Opens an existing store (for readers): a missing file is an error.
    pub fn open_existing(path: &Path) -> Result<Store> {
        Self::open_inner(path, StoreOptions::default(), false)
    }

    fn open_inner(path: &Path, options: StoreOptions, create: bool) -> Result<Store> {
        let refuse = |why: String| -> anyhow::Error {
            anyhow::anyhow!(
                "{} is not a wasi-observe telemetry store: {why}. The file was left untouched; \
                 move it away or choose another store with --db or {DB_ENV}",
                path.display()
            )
        };
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => return Err(refuse("it is a directory".into())),
            Ok(meta) if meta.len() > 0 => {
                let mut header = [0u8; 16];
                let n = std::fs::File::open(path)
                    .and_then(|mut f| read_up_to(&mut f, &mut header))
                    .with_context(|| format!("cannot read {}", path.display()))?;
                if n < 16 || &header != b"SQLite format 3\0" {
                    return Err(refuse("it is not an SQLite database".into()));
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    bail!(
                        "no telemetry store at {} yet: run a component with `wasi-observe run app.wasm` first \
                         (or choose a store with --db or {DB_ENV})",
                        path.display()
                    );
                }
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    create_private_dir(dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                }
                create_private_file(path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        }

        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags)
            .with_context(|| format!("cannot open telemetry store {}", path.display()))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;

        let damaged = |e: rusqlite::Error| refuse(format!("it is damaged or unreadable ({e})"));
        // One read transaction, so the three values come from one state of
        // the file: another process creating the store at the same moment
        // must not be seen half way (its tables without its id).
        let (app_id, version, objects) = {
            let tx = conn.unchecked_transaction().map_err(damaged)?;
            let app_id: i32 = tx
                .query_row("PRAGMA application_id", [], |r| r.get(0))
                .map_err(damaged)?;
            let version: i32 = tx
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(damaged)?;
            let objects: i64 = tx
                .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
                .map_err(damaged)?;
            tx.commit().map_err(damaged)?;
            (app_id, version, objects)
        };
        match (app_id, version, objects) {
            (APPLICATION_ID, v, _) if v > SCHEMA_VERSION => bail!(
                "the telemetry store {} was written by a newer wasi-observe (schema {v}, this one knows {SCHEMA_VERSION}); \
                 it was left untouched",
                path.display()
            ),
            (APPLICATION_ID, _, _) => {}
            (0, 0, 0) => {
                // A new file: incremental auto-vacuum must be chosen before
                // the first table, so that pruning can give space back.
                conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            }
            (0, _, n) => {
                return Err(refuse(format!(
                    "it is an SQLite database of another application ({n} schema objects)"
                )));
            }
            (id, _, _) => {
                return Err(refuse(format!(
                    "it is an SQLite database of another application (application_id {id:#x})"
                )));
            }
        }

        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(damaged)?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("cannot switch {} to WAL mode (got {mode})", path.display());
        }
        // In WAL mode, NORMAL keeps every committed transaction when the
        // process dies; only a power loss may lose the last ones.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // 64 MiB of page cache at most (the default is 2 MiB): the pages
        // batches write (the last pages of every index and table) and the
        // upper levels of the indexes stay in memory.
        conn.pragma_update(None, "cache_size", -65_536)?;
        // Reads through a memory map: no system call and copy per page read.
        // Writes still go through the WAL, so a full disk is still an error.
        conn.pragma_update(None, "mmap_size", 256_i64 << 20)?;
        // Checkpoint when the WAL holds 64 MiB (the default is 4 MiB): the
        // pages several batches write (the last pages of every index) are
        // then copied into the database once, with one fsync, instead of
        // after each batch.
        conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
        if let Some(max) = options.hard_max_bytes {
            let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            let pages = (max / page.max(512) as u64).max(1);
            conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
        }

        let mode_warning = loose_modes(path);
        if let Some(w) = &mode_warning {
            warn_once(path, w);
        }

        let mut conn = conn;
        schema::migrate(&mut conn).map_err(|e| match e.downcast_ref::<rusqlite::Error>() {
            Some(err) if is_damage(err) => refuse(format!("it is damaged ({err})")),
            _ => e.context(format!("cannot prepare telemetry store {}", path.display())),
        })?;

        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                conn: Mutex::new(conn),
                options,
                dropped_spans: AtomicU64::new(0),
                dropped_logs: AtomicU64::new(0),
                dropped_points: AtomicU64::new(0),
                recorded: Mutex::new(Recorded::default()),
                last_prune: Mutex::new(None),
                mode_warning,
                trace_span_cap: AtomicU64::new(MAX_TRACE_SPANS as u64),
                ids: Mutex::default(),
            }),
        })
    }

    /// If the store's files or directory were readable or writable by
    /// others when it was opened: the warning that was printed (once per
    /// file and process) on standard error.
    pub fn mode_warning(&self) -> Option<&str> {
        self.inner.mode_warning.as_deref()
    }

    /// How many spans of trace `trace_id` were not stored because it held
    /// [`MAX_TRACE_SPANS`] already.
    pub fn capped_spans(&self, trace_id: &str) -> Result<i64> {
        let conn = self.conn();
        let Some(key) = trace_ids::key_of(&conn, trace_id)? else {
            return Ok(0);
        };
        Ok(conn
            .prepare_cached("SELECT capped_spans FROM traces WHERE trace_key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    /// The file this store is in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// An exporter writing to this store, for any of the three signals.
    pub fn exporter(&self) -> StoreExporter {
        StoreExporter::new(self.clone())
    }

    /// What was dropped because the store could not be written.
    pub fn dropped(&self) -> Dropped {
        Dropped {
            spans: self.inner.dropped_spans.load(Ordering::Relaxed),
            logs: self.inner.dropped_logs.load(Ordering::Relaxed),
            metric_points: self.inner.dropped_points.load(Ordering::Relaxed),
        }
    }

    /// The trace ids written through this handle (and its exporters), in the
    /// order they were first written: the first [`RECORDED_KEPT`] of them.
    pub fn recorded_traces(&self) -> Vec<String> {
        let recorded = lock(&self.inner.recorded);
        recorded
            .order
            .iter()
            .map(|id| format!("{id:032x}"))
            .collect()
    }

    /// How many distinct traces were written through this handle.
    pub fn recorded_count(&self) -> usize {
        let r = lock(&self.inner.recorded);
        r.order.len() + r.more
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        lock(&self.inner.conn)
    }

    /// Runs `write` in one immediate transaction. A full disk (or the hard
    /// cap) drops the batch: `count` items are added to the signal's drop
    /// counter, and an error describing the drop is returned.
    pub(crate) fn write_batch<T>(
        &self,
        what: Signal,
        count: u64,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, String> {
        let result = {
            let mut conn = self.conn();
            conn.transaction_with_behavior(TransactionBehavior::Immediate)
                .and_then(|tx| {
                    let out = write(&tx)?;
                    tx.commit()?;
                    Ok(out)
                })
        };
        match result {
            Ok(out) => {
                self.maybe_prune();
                Ok(out)
            }
            Err(e) => {
                let counter = match what {
                    Signal::Spans => &self.inner.dropped_spans,
                    Signal::Logs => &self.inner.dropped_logs,
                    Signal::Metrics => &self.inner.dropped_points,
                };
                counter.fetch_add(count, Ordering::Relaxed);
                let full = matches!(e.sqlite_error_code(), Some(ErrorCode::DiskFull));
                let msg = if full {
                    format!(
                        "telemetry store {} is full (disk full or size cap): {count} {} dropped",
                        self.inner.path.display(),
                        what.noun()
                    )
                } else {
                    format!(
                        "cannot write to telemetry store {}: {e}: {count} {} dropped",
                        self.inner.path.display(),
                        what.noun()
                    )
                };
                // The caller reports it (the host warns once and counts).
                Err(msg)
            }
        }
    }

    /// A write transaction committed: see [`trace_ids::Ids::committed`].
    pub(crate) fn committed_keys(
        &self,
        pruned: i64,
        last: Option<i64>,
        written: impl IntoIterator<Item = ((i64, i64), i64)>,
    ) {
        lock(&self.inner.ids).committed(pruned, last, written);
    }

    pub(crate) fn note_traces(&self, ids: impl IntoIterator<Item = u128>) {
        let mut recorded = lock(&self.inner.recorded);
        for id in ids {
            // Past `RECORDED_SEEN` distinct ids (a long-lived host), stop
            // remembering: later ones are counted, perhaps more than once.
            if recorded.seen.len() >= RECORDED_SEEN {
                recorded.more += 1;
            } else if recorded.seen.insert(id) {
                if recorded.order.len() < RECORDED_KEPT {
                    recorded.order.push(id);
                } else {
                    recorded.more += 1;
                }
            }
        }
    }

    fn maybe_prune(&self) {
        {
            let mut last = lock(&self.inner.last_prune);
            if last.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        // Pruning is best effort: a failure leaves the data for next time.
        let _ = self.prune();
    }

    /// Applies retention now: drops telemetry written longer ago than the
    /// maximum age, then the oldest while the data is larger than the
    /// maximum size. Spans go by part (the spans of a trace written in one
    /// batch), so a trace that keeps receiving spans loses its old ones
    /// like any other; a trace goes when its last part does. Returns how
    /// many traces were removed.
    pub fn prune(&self) -> Result<u64> {
        let retention = &self.inner.options.retention;
        let mut removed = 0;
        if let Some(age) = retention.max_age {
            // An age past the epoch (e.g. 110 000 days) keeps everything.
            let age = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
            let cutoff = now_ns().saturating_sub(age);
            let boundary = self.first_part_written_since(cutoff)?;
            removed += self.delete_before(boundary, cutoff)?;
        }
        if let Some(max) = retention.max_bytes {
            // Remove the oldest tenth of the parts at a time. Part ids never
            // repeat, so parts written together cannot tie and stop this.
            // Deleting rows leaves pages partly used, so this may remove
            // more than the bare bytes would call for; it stops when nothing
            // is left.
            for _ in 0..100 {
                if self.data_bytes()? <= max / 10 * 9 {
                    break;
                }
                let conn = self.conn();
                let n: i64 = conn.query_row("SELECT count(*) FROM parts", [], |r| r.get(0))?;
                let boundary: Option<(i64, i64)> = conn
                    .query_row(
                        "SELECT part_id, written_ns FROM parts ORDER BY part_id LIMIT 1 OFFSET ?1",
                        [(n / 10).max(1)],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                drop(conn);
                let (boundary, cutoff) = match boundary {
                    Some(b) => b,
                    // One part left, or none: logs and metrics take the room.
                    None => (i64::MIN, self.median_other_time()?),
                };
                let r = self.delete_before(boundary, cutoff)?;
                removed += r;
                if r == 0 && n <= 1 && self.median_other_time()? == i64::MIN {
                    break;
                }
            }
        }
        if removed > 0 {
            // Give the freed pages back to the file system (the checkpoint
            // moves the shrunk database from the WAL into the file).
            let conn = self.conn();
            // Each step of this pragma frees one page: step it to the end.
            let _ = conn
                .prepare("PRAGMA incremental_vacuum")
                .and_then(|mut stmt| {
                    let mut rows = stmt.query([])?;
                    while rows.next()?.is_some() {}
                    Ok(())
                });
            let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        }
        Ok(removed)
    }

    /// The bytes the data takes (pages in use, not free pages).
    pub fn data_bytes(&self) -> Result<u64> {
        let conn = self.conn();
        let get = |p: &str| conn.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0));
        let used = get("page_count")? - get("freelist_count")?;
        Ok((used.max(0) * get("page_size")?) as u64)
    }

    fn median_other_time(&self) -> Result<i64> {
        let conn = self.conn();
        let t: Option<i64> = conn
            .query_row(
                "SELECT t FROM (SELECT written_ns AS t FROM log_chunks UNION ALL SELECT time_ns FROM metric_points)
                 ORDER BY t LIMIT 1
                 OFFSET (SELECT (count(*) / 2) FROM log_chunks) + (SELECT count(*) / 2 FROM metric_points)",
                [],
                |r| r.get(0),
            )
            .ok();
        Ok(t.unwrap_or(i64::MIN))
    }

    /// The first part written at or after `cutoff_ns` (write times never
    /// decrease along part ids: a bisection finds it); `i64::MAX` if none.
    fn first_part_written_since(&self, cutoff_ns: i64) -> Result<i64> {
        let conn = self.conn();
        let mut at = conn.prepare_cached(
            "SELECT part_id, written_ns FROM parts WHERE part_id >= ?1 ORDER BY part_id LIMIT 1",
        )?;
        let mut probe = |id: i64| -> rusqlite::Result<Option<(i64, i64)>> {
            at.query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        };
        let Some((mut lo, first)) = probe(i64::MIN)? else {
            return Ok(i64::MAX);
        };
        if first >= cutoff_ns {
            return Ok(lo);
        }
        let (mut hi, last): (i64, i64) = conn.query_row(
            "SELECT part_id, written_ns FROM parts ORDER BY part_id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if last < cutoff_ns {
            return Ok(i64::MAX);
        }
        // Invariant: part `lo` is older than the cutoff, part `hi` is not.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match probe(mid)? {
                Some((id, written)) if id < hi => {
                    if written < cutoff_ns {
                        lo = id;
                    } else {
                        hi = id;
                    }
                }
                // No part between `mid` and `hi`: look below.
                _ => match conn
                    .prepare_cached(
                        "SELECT part_id, written_ns FROM parts WHERE part_id > ?1 AND part_id < ?2
                         ORDER BY part_id DESC LIMIT 1",
                    )?
                    .query_row([lo, mid], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                    })
                    .optional()?
                {
                    Some((id, written)) if written < cutoff_ns => lo = id,
                    Some((id, _)) => hi = id,
                    None => break,
                },
            }
        }
        Ok(hi)
    }

    /// Deletes the parts before part `boundary` (traces left with none go,
    /// the others are summed up again from what is left), traces that only
    /// log records made and were last written before `cutoff_ns`, the
    /// chunks of log records written before it, and metric points older
    /// than it. Returns the traces removed.
    fn delete_before(&self, boundary: i64, cutoff_ns: i64) -> Result<u64> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let spans: i64 = tx.query_row(
            "SELECT coalesce(sum(span_count), 0) FROM parts WHERE part_id < ?1",
            [boundary],
            |r| r.get(0),
        )?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS pruned (trace_key INTEGER PRIMARY KEY);
             DELETE FROM temp.pruned;",
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO temp.pruned SELECT trace_key FROM parts WHERE part_id < ?1",
            [boundary],
        )?;
        tx.execute("DELETE FROM parts WHERE part_id < ?1", [boundary])?;
        let mut traces = tx.execute(
            "DELETE FROM traces WHERE trace_key IN temp.pruned
                 AND NOT EXISTS (SELECT 1 FROM parts p WHERE p.trace_key = traces.trace_key)",
            [],
        )? as i64;
        tx.execute(
            "UPDATE traces SET span_count = a.spans, error_count = a.errors, start_ns = a.start,
                 end_ns = a.end, duration_ns = a.end - a.start
             FROM (SELECT trace_key AS key, sum(span_count) AS spans, sum(error_count) AS errors,
                       min(start_ns) AS start, max(end_ns) AS end
                   FROM parts WHERE trace_key IN temp.pruned GROUP BY trace_key) AS a
             WHERE traces.trace_key = a.key",
            [],
        )?;
        // Name lists whose batches are gone entirely (a list naming a
        // trace that lost the part with the name is harmless: queries check
        // the parts).
        tx.execute("DELETE FROM name_postings WHERE last_part < ?1", [boundary])?;
        // Rows that log records made for traces whose spans never came
        // (they hold no spans, so they are not counted), unless records
        // written since still name them.
        let waiting = tx.execute(
            "DELETE FROM traces WHERE span_count = 0 AND written_ns < ?1
                 AND NOT EXISTS (SELECT 1 FROM log_traces l JOIN log_chunks c USING (chunk_id)
                                 WHERE l.trace_key = traces.trace_key AND c.written_ns >= ?1)",
            [cutoff_ns],
        )? as i64;
        let logs = delete_log_chunks(&tx, cutoff_ns)?;
        let points =
            tx.execute("DELETE FROM metric_points WHERE time_ns < ?1", [cutoff_ns])? as i64;
        ingest::add_counts(&tx, [-traces, -spans, -logs, -points])?;
        if traces + waiting > 0 {
            // Writers forget the trace keys they remember (`trace_ids::Recent`).
            tx.execute("UPDATE counts SET pruned = pruned + 1", [])?;
        }
        tx.execute("DELETE FROM temp.pruned", [])?;
        tx.commit()?;
        traces += waiting;
        Ok(traces as u64)
    }
}

/// Deletes the chunks of log records written before `cutoff_ns` and their
/// trace entries; returns the records deleted.
fn delete_log_chunks(tx: &rusqlite::Transaction<'_>, cutoff_ns: i64) -> rusqlite::Result<i64> {
    let mut records = 0;
    {
        let mut old = tx.prepare_cached(
            "SELECT chunk_id, count, trace_keys FROM log_chunks WHERE written_ns < ?1",
        )?;
        let mut forget =
            tx.prepare_cached("DELETE FROM log_traces WHERE trace_key = ?1 AND chunk_id = ?2")?;
        let mut rows = old.query([cutoff_ns])?;
        while let Some(r) = rows.next()? {
            let chunk: i64 = r.get(0)?;
            records += r.get::<_, i64>(1)?;
            for key in r.get_ref(2)?.as_blob().unwrap_or_default().chunks_exact(8) {
                let key = i64::from_be_bytes(key.try_into().unwrap_or_default());
                forget.execute([key, chunk])?;
            }
        }
    }
    tx.execute("DELETE FROM log_chunks WHERE written_ns < ?1", [cutoff_ns])?;
    Ok(records)
}

/// The signal a batch belongs to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Signal {
    Spans,
    Logs,
    Metrics,
}

impl Signal {
    fn noun(self) -> &'static str {
        match self {
            Signal::Spans => "spans",
            Signal::Logs => "log records",
            Signal::Metrics => "metric points",
        }
    }
}

fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Telemetry holds whatever guests recorded (request data, secrets by
/// mistake): a directory the store makes is its owner's alone (0700).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes the database file readable by its owner alone (0600) before
/// SQLite opens it: SQLite gives the `-wal` and `-shm` files the mode of
/// the database file.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        // Another process made it first: its mode is checked like any.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other.map(drop),
    }
}

/// A warning if the store's file, its `-wal` or `-shm`, or its directory
/// let others than the owner in (made by an older version, or by hand).
fn loose_modes(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mut loose = Vec::new();
        let mut files = vec![path.to_path_buf()];
        for ext in ["-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(ext);
            files.push(PathBuf::from(p));
        }
        for f in &files {
            if let Ok(meta) = std::fs::metadata(f)
                && meta.permissions().mode() & 0o077 != 0
            {
                loose.push(format!(
                    "{} ({:o})",
                    f.display(),
                    meta.permissions().mode() & 0o777
                ));
            }
        }
        // Its directory: only the one named for the store (a store put
        // in a shared directory on purpose is not flagged for that).
        if let Some(dir) = path.parent().filter(|d| d.ends_with("wasi-observe"))
            && let Ok(meta) = std::fs::metadata(dir)
            && meta.permissions().mode() & 0o077 != 0
        {
            loose.push(format!(
                "{} ({:o})",
                dir.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        (!loose.is_empty()).then(|| {
            format!(
                "the telemetry store is readable or writable by other users: {}; \
                 it holds what guests recorded: chmod 600 the files (700 the directory)",
                loose.join(", ")
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Prints `warning` on standard error, once per store file and process.
fn warn_once(path: &Path, warning: &str) {
    static WARNED: Mutex<Option<std::collections::HashSet<PathBuf>>> = Mutex::new(None);
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if lock(&WARNED).get_or_insert_default().insert(key) {
        eprintln!("wasi-observe: warning: {warning}");
    }
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read as _;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Nanoseconds since the Unix epoch, as stored.
pub fn unix_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    unix_ns(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};

    fn span(trace: u128, id: u64) -> SpanData {
        let now = SystemTime::now();
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace),
                SpanId::from(id),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::from(1),
            parent_span_is_remote: false,
            span_kind: opentelemetry::trace::SpanKind::Internal,
            name: "resent".into(),
            start_time: now,
            end_time: now,
            attributes: vec![],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: opentelemetry::trace::Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    fn export(store: &Store, batch: Vec<SpanData>) {
        let exporter = store.exporter();
        let mut f = std::pin::pin!(exporter.export(batch));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => r.unwrap(),
            std::task::Poll::Pending => unreachable!("store exports are synchronous"),
        }
    }

    /// A trace stops growing at the cap: what comes later is counted, not
    /// stored, also across batches; other traces are not affected.
    #[test]
    fn spans_past_the_cap_are_counted_not_stored() {
        let dir = std::env::temp_dir().join(format!("wasi-observe-cap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir.join("t.db"), StoreOptions::default()).unwrap();
        store.inner.trace_span_cap.store(10, Ordering::Relaxed);
        let trace = 0xabcd_u128 << 64 | 1;
        export(&store, (2..10).map(|i| span(trace, i)).collect());
        export(&store, (10..20).map(|i| span(trace, i)).collect());
        export(&store, (20..25).map(|i| span(trace, i)).collect());
        export(&store, vec![span(trace + 1, 2)]);
        let id = TraceId::from(trace).to_string();
        let t = store.trace_summary(&id).unwrap().unwrap();
        assert_eq!(t.span_count, 10);
        assert_eq!(store.capped_spans(&id).unwrap(), 8 + 5);
        assert_eq!(store.trace(&id).unwrap().unwrap().spans.len(), 10);
        assert_eq!(store.counts().unwrap().spans, 11);
        let other = TraceId::from(trace + 1).to_string();
        assert_eq!(store.capped_spans(&other).unwrap(), 0);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The traces a handle wrote come back as the store spells their ids
    /// (leading zeros kept), once each, in the order first written.
    #[test]
    fn recorded_traces_are_listed_once_in_order_as_stored() {
        let dir = std::env::temp_dir().join(format!("wasi-observe-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir.join("t.db"), StoreOptions::default()).unwrap();
        let (a, b) = (7_u128, 0xfedc_u128 << 112 | 5);
        export(&store, vec![span(a, 2), span(b, 3)]);
        export(&store, vec![span(a, 4)]);
        let ids = [a, b].map(|t| TraceId::from(t).to_string());
        assert_eq!(store.recorded_traces(), ids);
        assert_eq!(ids[0], format!("{:0>32}", "7"));
        assert_eq!(store.recorded_count(), 2);
        for id in &ids {
            assert!(store.trace_summary(id).unwrap().is_some(), "{id}");
        }
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ages_and_sizes_parse() {
        assert_eq!(parse_age("7d").unwrap(), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_age("90").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(parse_age("0").unwrap(), None);
        assert!(parse_age("3w").is_err());
        // Past what nanoseconds in an i64 hold: forever, not a wrap.
        assert_eq!(
            parse_age("99999999999999999d").unwrap(),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse_size("64MiB").unwrap(), Some(64 << 20));
        assert_eq!(parse_size("2GB").unwrap(), Some(2_000_000_000));
        assert_eq!(parse_size("0").unwrap(), None);
        assert!(parse_size("lots").is_err());
    }
}

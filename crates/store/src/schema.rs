//! The schema and its migrations. `user_version` is the number of migrations
//! applied; `application_id` marks the file as ours.
//!
//! Times are nanoseconds since the Unix epoch; ids are lowercase hex; sets of
//! attributes in columns are JSON objects (keys sorted). Parts and log
//! chunks hold theirs as typed values (`codec`).

use std::borrow::Cow;

use anyhow::Result;
use rusqlite::{Connection, Transaction, TransactionBehavior, params};

use crate::APPLICATION_ID;
use crate::codec::{self, Attributes, Events, Links, LogAttributes, LogIn, LogTrace, SpanIn};

/// One step of the schema: SQL, then (for data SQL cannot convert) Rust,
/// then more SQL.
pub(crate) struct Migration {
    pub sql: &'static str,
    pub rust: Option<fn(&Transaction<'_>) -> rusqlite::Result<()>>,
    pub after: &'static str,
}

const fn sql(sql: &'static str) -> Migration {
    Migration {
        sql,
        rust: None,
        after: "",
    }
}

/// Migration `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[Migration] = &[
    sql(r#"
CREATE TABLE traces (
    trace_id     TEXT PRIMARY KEY NOT NULL,
    root_name    TEXT NOT NULL,
    has_root     INTEGER NOT NULL,
    service      TEXT NOT NULL,
    start_ns     INTEGER NOT NULL,
    end_ns       INTEGER NOT NULL,
    duration_ns  INTEGER NOT NULL,
    span_count   INTEGER NOT NULL,
    error_count  INTEGER NOT NULL,
    -- When a span of it was last written: retention goes by this, since
    -- span times are whatever the guest said.
    written_ns   INTEGER NOT NULL
);
CREATE INDEX traces_start    ON traces (start_ns);
CREATE INDEX traces_service  ON traces (service, start_ns);
CREATE INDEX traces_root     ON traces (root_name, start_ns);
CREATE INDEX traces_duration ON traces (duration_ns);
CREATE INDEX traces_errors   ON traces (start_ns) WHERE error_count > 0;
CREATE INDEX traces_written  ON traces (written_ns);

CREATE TABLE spans (
    trace_id        TEXT NOT NULL,
    span_id         TEXT NOT NULL,
    parent_span_id  TEXT,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    service         TEXT NOT NULL,
    scope           TEXT NOT NULL,
    start_ns        INTEGER NOT NULL,
    end_ns          INTEGER NOT NULL,
    duration_ns     INTEGER NOT NULL,
    status_code     TEXT NOT NULL,
    status_message  TEXT NOT NULL,
    attributes      TEXT NOT NULL,
    events          TEXT NOT NULL,
    links           TEXT NOT NULL,
    dropped         TEXT NOT NULL,
    resource        TEXT NOT NULL,
    PRIMARY KEY (trace_id, span_id)
);
-- Duration and errors are indexed per trace (above); spans are found by
-- trace (the key) and by name.
CREATE INDEX spans_name     ON spans (name, trace_id);

CREATE TABLE logs (
    id               INTEGER PRIMARY KEY,
    time_ns          INTEGER NOT NULL,
    severity_number  INTEGER NOT NULL,
    severity_text    TEXT NOT NULL,
    body             TEXT NOT NULL,
    target           TEXT NOT NULL,
    service          TEXT NOT NULL,
    trace_id         TEXT,
    span_id          TEXT,
    attributes       TEXT NOT NULL
);
CREATE INDEX logs_time     ON logs (time_ns);
CREATE INDEX logs_trace    ON logs (trace_id, time_ns) WHERE trace_id IS NOT NULL;
CREATE INDEX logs_service  ON logs (service, time_ns);
CREATE INDEX logs_severity ON logs (severity_number, time_ns);

CREATE TABLE metric_points (
    id           INTEGER PRIMARY KEY,
    time_ns      INTEGER NOT NULL,
    service      TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    unit         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    attributes   TEXT NOT NULL,
    value        REAL NOT NULL,
    count        INTEGER,
    min          REAL,
    max          REAL,
    buckets      TEXT
);
CREATE INDEX metric_series ON metric_points (name, service, attributes, time_ns);
CREATE INDEX metric_time   ON metric_points (time_ns);
"#),
    sql(r#"
-- Version 2: keys in arrival order. Trace ids are random, so every index
-- keyed by one takes each new row on a random page: a batch dirtied a page
-- per span per index, and the store ingested slowly once its indexes
-- outgrew the page cache. Traces now get an integer key as they arrive;
-- spans are keyed by it, so new spans land on the last pages. Resources,
-- the same for every span of a process, are stored once.
CREATE TABLE resources (
    resource_id  INTEGER PRIMARY KEY,
    json         TEXT NOT NULL UNIQUE
);

CREATE TABLE traces_v2 (
    trace_key    INTEGER PRIMARY KEY,
    trace_id     TEXT NOT NULL UNIQUE,
    root_name    TEXT NOT NULL,
    has_root     INTEGER NOT NULL,
    service      TEXT NOT NULL,
    start_ns     INTEGER NOT NULL,
    end_ns       INTEGER NOT NULL,
    duration_ns  INTEGER NOT NULL,
    span_count   INTEGER NOT NULL,
    error_count  INTEGER NOT NULL,
    written_ns   INTEGER NOT NULL
);
INSERT INTO traces_v2 (trace_id, root_name, has_root, service, start_ns, end_ns, duration_ns, span_count,
    error_count, written_ns)
SELECT trace_id, root_name, has_root, service, start_ns, end_ns, duration_ns, span_count, error_count,
    written_ns
FROM traces ORDER BY written_ns;

INSERT OR IGNORE INTO resources (json) SELECT DISTINCT resource FROM spans;

CREATE TABLE spans_v2 (
    trace_key       INTEGER NOT NULL,
    span_id         TEXT NOT NULL,
    parent_span_id  TEXT,
    name            TEXT NOT NULL,
    kind            TEXT NOT NULL,
    service         TEXT NOT NULL,
    scope           TEXT NOT NULL,
    start_ns        INTEGER NOT NULL,
    end_ns          INTEGER NOT NULL,
    duration_ns     INTEGER NOT NULL,
    status_code     TEXT NOT NULL,
    status_message  TEXT NOT NULL,
    attributes      TEXT NOT NULL,
    events          TEXT NOT NULL,
    links           TEXT NOT NULL,
    dropped         TEXT NOT NULL,
    resource_id     INTEGER NOT NULL,
    PRIMARY KEY (trace_key, span_id)
);
INSERT INTO spans_v2
SELECT t.trace_key, s.span_id, s.parent_span_id, s.name, s.kind, s.service, s.scope, s.start_ns, s.end_ns,
    s.duration_ns, s.status_code, s.status_message, s.attributes, s.events, s.links, s.dropped, r.resource_id
FROM spans s JOIN traces_v2 t ON t.trace_id = s.trace_id JOIN resources r ON r.json = s.resource
ORDER BY t.trace_key;

DROP TABLE spans;
DROP TABLE traces;
ALTER TABLE traces_v2 RENAME TO traces;
ALTER TABLE spans_v2 RENAME TO spans;

-- Indexes whose new entries go at the end (times) or at a few places
-- (services, errors) cost little. The duration's would take a random page
-- per trace, so "slowest first" scans the trace rows, which are small; the
-- root name is only searched by substring, which an index cannot serve.
CREATE INDEX traces_start    ON traces (start_ns);
CREATE INDEX traces_service  ON traces (service, start_ns);
CREATE INDEX traces_errors   ON traces (start_ns) WHERE error_count > 0;
CREATE INDEX traces_written  ON traces (written_ns);
CREATE INDEX spans_name      ON spans (name, trace_key);
"#),
    sql(r#"
-- Version 3: log records find their trace by its key too. The index on the
-- random trace id took each log record on a random page, so a log cost
-- several times more once the index outgrew the page cache (23 us against
-- 3.5 at a million records, measured). A log record whose trace has no row
-- yet makes one that holds only the key (span_count 0, left out of trace
-- lists); the trace's first spans fill it in.
INSERT INTO traces (trace_id, root_name, has_root, service, start_ns, end_ns, duration_ns, span_count,
    error_count, written_ns)
SELECT trace_id, '', 0, min(service), min(time_ns), max(time_ns), 0, 0, 0, max(time_ns)
FROM logs WHERE trace_id IS NOT NULL AND trace_id NOT IN (SELECT trace_id FROM traces)
GROUP BY trace_id ORDER BY min(id);

ALTER TABLE logs ADD COLUMN trace_key INTEGER;
UPDATE logs SET trace_key = (SELECT t.trace_key FROM traces t WHERE t.trace_id = logs.trace_id)
WHERE trace_id IS NOT NULL;
DROP INDEX logs_trace;
CREATE INDEX logs_trace ON logs (trace_key, time_ns) WHERE trace_key IS NOT NULL;
"#),
    Migration {
        sql: V4,
        rust: Some(to_parts),
        after: V4_AFTER,
    },
    sql(V5),
    Migration {
        sql: V6,
        rust: Some(to_log_chunks),
        after: V6_AFTER,
    },
];

/// Version 6:
///
/// - Log records are kept many to a row (`log_chunks`: up to
///   [`crate::ingest::CHUNK_RECORDS`] records of one batch, in the
///   encoding of `codec`), not a row and two index entries each. A chunk
///   holds what the filters skip it by (its newest time, highest
///   severity, service); `log_traces` finds a trace's chunks. A record
///   costs about two fifths of what its row did (docs/store.md).
/// - Epochs of 4 096 traces, not 16 384: a batch rewrites a quarter of
///   the id and duration index pages it did.
/// - `counts.pruned`, raised by every retention pass that removes
///   traces, so a writer knows when the trace keys it remembers may have
///   lost their rows (`trace_ids::Recent`).
const V6: &str = r#"
DROP INDEX traces_id;
DROP INDEX traces_slow;
CREATE INDEX traces_id   ON traces (trace_key >> 12, id_hi, id_lo);
CREATE INDEX traces_slow ON traces (trace_key >> 12, duration_ns);
ALTER TABLE counts ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0;

CREATE TABLE log_chunks (
    chunk_id      INTEGER PRIMARY KEY,
    written_ns    INTEGER NOT NULL,
    -- The records' earliest and latest times.
    min_time      INTEGER NOT NULL,
    max_time      INTEGER NOT NULL,
    max_severity  INTEGER NOT NULL,
    count         INTEGER NOT NULL,
    -- The records' service (a chunk holds one).
    service       TEXT NOT NULL,
    -- The keys of the records' traces, 8 bytes each (big endian), each
    -- once: retention removes their `log_traces` entries.
    trace_keys    BLOB NOT NULL,
    records       BLOB NOT NULL
);
CREATE INDEX log_chunks_time    ON log_chunks (max_time);
CREATE INDEX log_chunks_written ON log_chunks (written_ns);
CREATE TABLE log_traces (
    trace_key  INTEGER NOT NULL,
    chunk_id   INTEGER NOT NULL,
    PRIMARY KEY (trace_key, chunk_id)
) WITHOUT ROWID;
"#;

const V6_AFTER: &str = "DROP TABLE logs;";

/// Schema 5 to 6: log rows become chunks, in their order.
fn to_log_chunks(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let mut read = tx.prepare(
        "SELECT time_ns, severity_number, severity_text, body, target, service, trace_id, span_id,
             attributes, trace_key
         FROM logs ORDER BY id",
    )?;
    let mut rows = read.query([])?;
    let mut chunk: Vec<OldLog> = Vec::new();
    let mut chunks = crate::ingest::ChunkWriter::new(tx)?;
    loop {
        let row = rows.next()?;
        if let Some(r) = row {
            let attributes: String = r.get(8)?;
            chunk.push(OldLog {
                time_ns: r.get(0)?,
                severity: r.get(1)?,
                text: r.get(2)?,
                body: r.get(3)?,
                target: r.get(4)?,
                service: r.get(5)?,
                trace_id: r.get(6)?,
                span_id: r.get(7)?,
                attributes: serde_json::from_str(&attributes)
                    .unwrap_or(serde_json::Value::String(attributes)),
                trace_key: r.get(9)?,
            });
        }
        // A chunk holds one service's records.
        let full = chunk.len() > crate::ingest::CHUNK_RECORDS
            || chunk.len() > 1 && chunk[chunk.len() - 1].service != chunk[0].service;
        let last = if full { chunk.pop() } else { None };
        if (full || row.is_none()) && !chunk.is_empty() {
            let records: Vec<LogIn<'_>> = chunk.iter().map(OldLog::to_codec).collect();
            // Their write time is unknown: their latest time stands in.
            let written = records.iter().map(|r| r.time_ns).max().unwrap_or(0);
            chunks.write(&records, written)?;
            drop(records);
            chunk.clear();
        }
        chunk.extend(last);
        if row.is_none() {
            break;
        }
    }
    Ok(())
}

/// A log row of schemas 3 to 5.
struct OldLog {
    time_ns: i64,
    severity: i32,
    text: String,
    body: String,
    target: String,
    service: String,
    trace_id: Option<String>,
    span_id: Option<String>,
    attributes: serde_json::Value,
    trace_key: Option<i64>,
}

impl OldLog {
    fn to_codec(&self) -> LogIn<'_> {
        LogIn {
            time_ns: self.time_ns,
            severity: self.severity,
            text: Cow::Borrowed(&self.text),
            body: Cow::Borrowed(&self.body),
            target: Cow::Borrowed(&self.target),
            service: &self.service,
            trace: match &self.trace_id {
                None => LogTrace::None,
                Some(t) => LogTrace::Text(t, self.span_id.as_deref().unwrap_or("")),
            },
            trace_key: self.trace_key,
            attributes: LogAttributes::Json(self.attributes.clone()),
        }
    }
}

/// Version 5: no index takes a new trace on a random page. Trace ids are
/// random, and so are durations: their indexes took each new trace at a
/// random place, so once they outgrew what a batch touches, a batch
/// rewrote about a page per trace and index (in the WAL, then again at the
/// checkpoint), and ingest cost grew with the store (docs/store.md).
///
/// - The id index leads with the trace's epoch (`trace_key >> 14`, runs
///   of 16 384 traces in arrival order; see `trace_ids`): new entries go
///   to the last epoch's few pages, and a lookup probes each epoch.
/// - The duration index leads with the epoch too: "slowest first" merges
///   the epochs' lists (`query::slowest`).
/// - `counts.last_key` is the highest trace key ever handed out, so keys
///   are never used twice even when retention removes the newest traces:
///   a writer's filter of known ids reads only keys above the last it saw.
const V5: &str = r#"
DROP INDEX traces_id;
DROP INDEX traces_duration;
CREATE INDEX traces_id   ON traces (trace_key >> 14, id_hi, id_lo);
CREATE INDEX traces_slow ON traces (trace_key >> 14, duration_ns);
ALTER TABLE counts ADD COLUMN last_key INTEGER NOT NULL DEFAULT 0;
UPDATE counts SET last_key = (SELECT coalesce(max(trace_key), 0) FROM traces);
"#;

/// Version 4: the spans of a trace written in one batch are one row of
/// `parts` (see `codec`), not a row and two index entries each (the
/// figures are in docs/store.md). What the queries
/// filter on stays in columns: `traces` (one row per trace), and
/// `name_postings` (per span name and batch, the traces having it: the
/// span name filter and the name search).
///
/// Retention goes by part: a part's write time, not its trace's last one, so
/// a trace that keeps receiving spans loses its old ones (schema 3 kept such
/// a trace whole, forever). `written_ns` never decreases with `part_id`, so
/// parts older than a time are a range of ids, found by bisection.
///
/// The trace id's index holds it as two integers (`id_hi`, `id_lo`)
/// instead of the 32-character text: a random insert per new trace either
/// way, but half the size, so the index stays in the page cache far
/// longer, and a lookup needs no row. Writers keep ids unique (they look
/// them up under the write lock).
///
/// Log records lose their service and severity indexes (three entries per
/// record were most of a record's cost): those filters walk the time index
/// newest first, which finds common values at once. The services seen are
/// kept in `services`, and the counts the UI shows in `counts`, so neither
/// needs a scan.
const V4: &str = r#"
CREATE TABLE traces_v4 (
    trace_key     INTEGER PRIMARY KEY,
    trace_id      TEXT NOT NULL,
    id_hi         INTEGER NOT NULL,
    id_lo         INTEGER NOT NULL,
    root_name     TEXT NOT NULL,
    has_root      INTEGER NOT NULL,
    service       TEXT NOT NULL,
    start_ns      INTEGER NOT NULL,
    end_ns        INTEGER NOT NULL,
    duration_ns   INTEGER NOT NULL,
    span_count    INTEGER NOT NULL,
    error_count   INTEGER NOT NULL,
    -- Spans refused because the trace held `MAX_TRACE_SPANS` already.
    capped_spans  INTEGER NOT NULL DEFAULT 0,
    written_ns    INTEGER NOT NULL
);

CREATE TABLE parts (
    part_id      INTEGER PRIMARY KEY,
    trace_key    INTEGER NOT NULL,
    written_ns   INTEGER NOT NULL,
    span_count   INTEGER NOT NULL,
    error_count  INTEGER NOT NULL,
    start_ns     INTEGER NOT NULL,
    end_ns       INTEGER NOT NULL,
    -- 8 bytes per span, big endian: duplicates are found without decoding.
    span_ids     BLOB NOT NULL,
    -- The span names' ids, as text: ",12,57,".
    names        TEXT NOT NULL,
    spans        BLOB NOT NULL
);

CREATE TABLE span_names (
    name_id  INTEGER PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE
);

-- For each span name, the traces having a span of that name, one row per
-- name and batch (a list of keys), not one entry per trace: the span name
-- filter and the search read the lists of the names they want; a trace is
-- then checked against its parts' `names`, so stale keys do no harm.
CREATE TABLE name_postings (
    posting_id  INTEGER PRIMARY KEY,
    name_id     INTEGER NOT NULL,
    -- The newest part the batch wrote: retention removes the row with it.
    last_part   INTEGER NOT NULL,
    -- Trace keys, 8 bytes each (big endian), ascending.
    keys        BLOB NOT NULL
);

CREATE TABLE services (service TEXT PRIMARY KEY) WITHOUT ROWID;

CREATE TABLE counts (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    traces         INTEGER NOT NULL,
    spans          INTEGER NOT NULL,
    logs           INTEGER NOT NULL,
    metric_points  INTEGER NOT NULL
);
"#;

/// The converted data in place: old tables go, indexes are made.
const V4_AFTER: &str = r#"
DROP TABLE spans;
DROP TABLE traces;
ALTER TABLE traces_v4 RENAME TO traces;

INSERT OR IGNORE INTO services
    SELECT service FROM traces WHERE span_count > 0
    UNION SELECT service FROM logs UNION SELECT service FROM metric_points;
INSERT INTO counts VALUES (1,
    (SELECT count(*) FROM traces WHERE span_count > 0),
    (SELECT coalesce(sum(span_count), 0) FROM traces),
    (SELECT count(*) FROM logs),
    (SELECT count(*) FROM metric_points));

CREATE INDEX traces_id        ON traces (id_hi, id_lo);
CREATE INDEX traces_start     ON traces (start_ns);
CREATE INDEX traces_service   ON traces (service, start_ns);
CREATE INDEX traces_errors    ON traces (start_ns) WHERE error_count > 0;
-- "Slowest first" at a million traces cannot scan them all.
CREATE INDEX traces_duration  ON traces (duration_ns);
CREATE INDEX parts_trace      ON parts (trace_key, part_id);
CREATE INDEX name_postings_name ON name_postings (name_id, posting_id);
-- Traces that have only log records so far: retention finds them here.
CREATE INDEX traces_waiting   ON traces (written_ns) WHERE span_count = 0;

DROP INDEX logs_service;
DROP INDEX logs_severity;
-- An instrument's latest points by id, without a sort (points are few
-- beside spans: the entry costs little).
CREATE INDEX metric_name ON metric_points (name);
"#;

/// Schema 3 to 4: trace rows gain `id_hi` and `id_lo`, spans become parts (one per
/// trace, written now).
fn to_parts(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    {
        let mut read = tx.prepare(
            "SELECT trace_key, trace_id, root_name, has_root, service, start_ns, end_ns, duration_ns,
                 span_count, error_count, written_ns FROM traces ORDER BY trace_key",
        )?;
        let mut write = tx.prepare(
            "INSERT INTO traces_v4 (trace_key, trace_id, id_hi, id_lo, root_name, has_root, service,
                 start_ns, end_ns, duration_ns, span_count, error_count, written_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?;
        let mut rows = read.query([])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(1)?;
            write.execute(params![
                r.get::<_, i64>(0)?,
                id,
                crate::ingest::id_key(&id).0,
                crate::ingest::id_key(&id).1,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, i64>(8)?,
                r.get::<_, i64>(9)?,
                r.get::<_, i64>(10)?,
            ])?;
        }
    }
    // One part per trace, dated when the trace was last written (never
    // decreasing along part ids, as retention needs).
    let mut read = tx.prepare(
        "SELECT s.trace_key, s.span_id, s.parent_span_id, s.name, s.kind, s.service, s.scope, s.start_ns,
             s.end_ns, s.status_code, s.status_message, s.attributes, s.events, s.links, s.dropped,
             s.resource_id, t.written_ns
         FROM spans s JOIN traces t ON t.trace_key = s.trace_key ORDER BY s.trace_key",
    )?;
    let mut rows = read.query([])?;
    let mut part = crate::ingest::PartWriter::new(tx)?;
    let mut written = i64::MIN;
    let mut current: Option<i64> = None;
    let mut spans: Vec<OldSpan> = Vec::new();
    let mut flush = |key: i64, written: i64, spans: &[OldSpan]| {
        let spans: Vec<SpanIn<'_>> = spans.iter().map(OldSpan::to_codec).collect();
        part.write(key, written, &spans)
    };
    while let Some(r) = rows.next()? {
        let key: i64 = r.get(0)?;
        if let Some(c) = current.filter(|&c| c != key) {
            flush(c, written, &spans)?;
            spans.clear();
        }
        current = Some(key);
        written = written.max(r.get(16)?);
        let dropped: String = r.get(14)?;
        let dropped: serde_json::Value = serde_json::from_str(&dropped).unwrap_or_default();
        let count = |k: &str| dropped[k].as_u64().unwrap_or(0) as u32;
        let hex = |s: Option<String>| {
            s.and_then(|s| u64::from_str_radix(&s, 16).ok())
                .unwrap_or(0)
        };
        let json = |s: String| serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s));
        let events = |s: String| serde_json::from_str(&s).unwrap_or_default();
        let links = |s: String| serde_json::from_str(&s).unwrap_or_default();
        spans.push(OldSpan {
            span_id: hex(r.get(1)?),
            parent: hex(r.get(2)?),
            name: r.get(3)?,
            kind: r.get(4)?,
            service: r.get(5)?,
            scope: r.get(6)?,
            start_ns: r.get(7)?,
            end_ns: r.get(8)?,
            status: r.get(9)?,
            message: r.get(10)?,
            attributes: json(r.get(11)?),
            events: events(r.get(12)?),
            links: links(r.get(13)?),
            dropped: [count("attributes"), count("events"), count("links")],
            resource_id: r.get(15)?,
        });
    }
    if let Some(key) = current {
        flush(key, written, &spans)?;
    }
    part.finish()
}

/// A span row of schema 3.
struct OldSpan {
    span_id: u64,
    parent: u64,
    name: String,
    kind: String,
    service: String,
    scope: String,
    start_ns: i64,
    end_ns: i64,
    status: String,
    message: String,
    attributes: serde_json::Value,
    events: Vec<crate::query::Event>,
    links: Vec<crate::query::Link>,
    dropped: [u32; 3],
    resource_id: i64,
}

impl OldSpan {
    fn to_codec(&self) -> SpanIn<'_> {
        let index = |list: &[&str], v: &str| list.iter().position(|k| *k == v).unwrap_or(0) as u8;
        SpanIn {
            span_id: self.span_id,
            parent: self.parent,
            name: &self.name,
            service: &self.service,
            scope: &self.scope,
            kind: index(&codec::KINDS, &self.kind),
            status: index(&codec::STATUSES, &self.status),
            message: &self.message,
            start_ns: self.start_ns,
            end_ns: self.end_ns,
            attributes: Attributes::Json(&self.attributes),
            events: Events::Stored(&self.events),
            links: Links::Stored(&self.links),
            dropped: self.dropped,
            resource_id: self.resource_id,
        }
    }
}

/// Brings the schema up to date, in one transaction (another process may be
/// doing the same: the version is read again under the write lock).
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current as usize >= MIGRATIONS.len() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for m in MIGRATIONS.iter().skip(current.max(0) as usize) {
        tx.execute_batch(m.sql)?;
        if let Some(rust) = m.rust {
            rust(&tx)?;
        }
        tx.execute_batch(m.after)?;
    }
    tx.execute_batch(&format!(
        "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {};",
        MIGRATIONS.len()
    ))?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Retention, Store, StoreOptions, TraceFilter};

    /// A store written by version 1 (trace-id keys, a resource per span,
    /// logs found by trace id) opens with its data intact.
    #[test]
    fn version_1_stores_are_migrated_with_their_data() {
        let dir = std::env::temp_dir().join(format!("wasi-observe-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0].sql).unwrap();
            conn.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 1;"
            ))
            .unwrap();
            let resource = r#"{"service.name":"old"}"#;
            for (n, trace) in ["bb".repeat(16), "aa".repeat(16)].iter().enumerate() {
                let n = n as i64;
                conn.execute(
                    "INSERT INTO traces VALUES (?1, 'root', 1, 'old', ?2, ?2 + 10, 10, 2, 0, ?2)",
                    rusqlite::params![trace, 1000 * (n + 1)],
                )
                .unwrap();
                for (span, parent) in [
                    ("0000000000000001", None),
                    ("0000000000000002", Some("0000000000000001")),
                ] {
                    conn.execute(
                        "INSERT INTO spans VALUES (?1, ?2, ?3, 'root', 'server', 'old', 'scope', ?4, ?4 + 10, 10,
                             'unset', '', '{\"k\":1}', '[]', '[]', '{}', ?5)",
                        rusqlite::params![trace, span, parent, 1000 * (n + 1), resource],
                    )
                    .unwrap();
                }
            }
            // Logs of a trace with spans, of one without, and of none.
            for (n, trace) in [Some("bb".repeat(16)), Some("cc".repeat(16)), None]
                .iter()
                .enumerate()
            {
                conn.execute(
                    "INSERT INTO logs (time_ns, severity_number, severity_text, body, target, service,
                         trace_id, span_id, attributes)
                     VALUES (?1, 9, 'INFO', ?2, 't', 'old', ?3, NULL, '{}')",
                    rusqlite::params![1005 + n as i64, format!("log {n}"), trace],
                )
                .unwrap();
            }
        }
        let store = Store::open(
            &path,
            StoreOptions {
                retention: Retention {
                    max_age: None,
                    max_bytes: None,
                },
                hard_max_bytes: None,
            },
        )
        .unwrap();
        let traces = store.traces(&TraceFilter::default()).unwrap();
        assert_eq!(traces.len(), 2);
        for t in &traces {
            assert_eq!(t.span_count, 2);
            let trace = store.trace(&t.trace_id).unwrap().unwrap();
            assert_eq!(trace.spans.len(), 2, "{trace:?}");
            for s in &trace.spans {
                assert_eq!(s.trace_id, t.trace_id);
                assert_eq!(s.resource["service.name"], "old");
                assert_eq!(s.attributes["k"], 1);
            }
        }
        // Logs are found by their trace's key; the trace without spans has
        // a row that is not listed.
        let bb = store.trace(&"bb".repeat(16)).unwrap().unwrap();
        assert_eq!(bb.logs.len(), 1);
        assert_eq!(bb.logs[0].body, "log 0");
        let cc = store.trace(&"cc".repeat(16)).unwrap().unwrap();
        assert_eq!((cc.summary.span_count, cc.logs.len()), (0, 1));
        let all = store.logs(&crate::LogFilter::default()).unwrap();
        assert_eq!(all.len(), 3);
        // Keys follow the order the old rows were written in.
        let conn = Connection::open(&path).unwrap();
        let keys: Vec<(i64, String)> = conn
            .prepare("SELECT trace_key, trace_id FROM traces ORDER BY trace_key")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            keys,
            [
                (1, "bb".repeat(16)),
                (2, "aa".repeat(16)),
                (3, "cc".repeat(16))
            ]
        );
        // The records became one chunk, with an entry for each of their
        // two traces.
        let chunks: (i64, i64) = conn
            .query_row("SELECT count(*), sum(count) FROM log_chunks", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(chunks, (1, 3));
        let keyed: Vec<i64> = conn
            .prepare("SELECT trace_key FROM log_traces ORDER BY trace_key")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(keyed, [1, 3]);
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        drop(conn);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store written by version 3 (a row per span) opens with every
    /// span, log record and metric point readable as before, its counts,
    /// services and span names in place, and its data as old as it was.
    #[test]
    fn version_3_stores_are_migrated_to_parts() {
        let dir =
            std::env::temp_dir().join(format!("wasi-observe-migrate3-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v3.db");
        let a = "0af7651916cd43dd8448eb211c80319c";
        let b = "5e255985c7ddf3ab8f4baaf08198c1d9";
        let c = "6c2884a9ae7fcf5f84c6400e62ea3f67";
        {
            let conn = Connection::open(&path).unwrap();
            for m in &MIGRATIONS[..3] {
                conn.execute_batch(m.sql).unwrap();
            }
            conn.execute_batch(&format!(
                "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 3;
                 INSERT INTO resources VALUES (1, '{{\"service.name\":\"old\"}}');
                 INSERT INTO traces VALUES (1, '{a}', 'checkout', 1, 'old', 1000, 1050, 50, 2, 1, 5000);
                 INSERT INTO traces VALUES (2, '{b}', 'detached', 1, 'old', 2000, 2010, 10, 1, 0, 6000);
                 INSERT INTO traces VALUES (3, '{c}', '', 0, 'old', 3000, 3000, 0, 0, 0, 7000);
                 INSERT INTO spans VALUES (1, '00f067aa0ba902b7', NULL, 'checkout', 'server', 'old', 'http',
                     1000, 1050, 50, 'unset', '', '{{\"k\":1}}', '[]', '[]',
                     '{{\"attributes\":0,\"events\":0,\"links\":0}}', 1);
                 INSERT INTO spans VALUES (1, '00f067aa0ba902b8', '00f067aa0ba902b7', 'charge card', 'client',
                     'old', 'http', 1010, 1040, 30, 'error', 'declined', '{{}}',
                     '[{{\"name\":\"retry\",\"time_ns\":1020,\"attributes\":{{\"attempt\":2}}}}]',
                     '[{{\"trace_id\":\"{b}\",\"span_id\":\"00f067aa0ba902b9\",\"attributes\":{{}}}}]',
                     '{{\"attributes\":3,\"events\":0,\"links\":1}}', 1);
                 INSERT INTO spans VALUES (2, '00f067aa0ba902b9', NULL, 'detached', 'internal', 'old', 'http',
                     2000, 2010, 10, 'ok', '', '{{}}', '[]', '[]',
                     '{{\"attributes\":0,\"events\":0,\"links\":0}}', 1);
                 INSERT INTO logs (time_ns, severity_number, severity_text, body, target, service, trace_id,
                     span_id, attributes, trace_key)
                     VALUES (1020, 17, 'ERROR', 'declined', 't', 'old', '{a}', '00f067aa0ba902b8', '{{}}', 1),
                            (3000, 9, 'INFO', 'waiting', 't', 'logger', '{c}', '00f067aa0ba902ba', '{{}}', 3);
                 INSERT INTO metric_points (time_ns, service, name, description, unit, kind, attributes, value)
                     VALUES (1000, 'meter', 'orders', '', '', 'counter', '{{}}', 3);"
            ))
            .unwrap();
        }
        let store = Store::open(
            &path,
            StoreOptions {
                retention: Retention {
                    max_age: None,
                    max_bytes: None,
                },
                hard_max_bytes: None,
            },
        )
        .unwrap();
        let list = store.traces(&TraceFilter::default()).unwrap();
        let ids: Vec<&str> = list.iter().map(|t| t.trace_id.as_str()).collect();
        assert_eq!(ids, [b, a]);
        let t = store.trace(a).unwrap().unwrap();
        assert_eq!((t.summary.span_count, t.summary.error_count), (2, 1));
        let names: Vec<&str> = t.spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["checkout", "charge card"]);
        let (root, charge) = (&t.spans[0], &t.spans[1]);
        assert_eq!(
            (root.span_id.as_str(), root.parent_span_id.as_deref()),
            ("00f067aa0ba902b7", None)
        );
        assert_eq!(root.kind, "server");
        assert_eq!(root.attributes["k"], 1);
        assert_eq!(root.resource["service.name"], "old");
        assert_eq!(charge.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(
            (charge.kind.as_str(), charge.status_code.as_str()),
            ("client", "error")
        );
        assert_eq!(charge.status_message, "declined");
        assert_eq!(
            (charge.start_ns, charge.end_ns, charge.duration_ns),
            (1010, 1040, 30)
        );
        assert_eq!(charge.events[0].name, "retry");
        assert_eq!(charge.events[0].attributes["attempt"], 2);
        assert_eq!(charge.links[0].trace_id, b);
        assert_eq!(charge.dropped["attributes"], 3);
        assert_eq!(charge.dropped["links"], 1);
        assert_eq!(t.logs.len(), 1);
        assert_eq!(store.trace(b).unwrap().unwrap().spans[0].status_code, "ok");
        // The trace only log records made: not listed, still found.
        let waiting = store.trace(c).unwrap().unwrap();
        assert_eq!((waiting.summary.span_count, waiting.logs.len()), (0, 1));
        assert_eq!(store.resolve_trace_id(&a[..6]).unwrap().as_deref(), Some(a));
        let only = |f: TraceFilter| store.traces(&f).unwrap().len();
        assert_eq!(
            only(TraceFilter {
                span_name: Some("charge card".into()),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            only(TraceFilter {
                search: Some("DETACH".into()),
                ..Default::default()
            }),
            1
        );
        let counts = store.counts().unwrap();
        assert_eq!(
            (
                counts.traces,
                counts.spans,
                counts.logs,
                counts.metric_points
            ),
            (2, 3, 2, 1)
        );
        assert_eq!(store.services().unwrap(), ["logger", "meter", "old"]);
        // Parts are dated when their trace was written, so retention sees
        // the old data as old.
        let conn = Connection::open(&path).unwrap();
        let written: Vec<(i64, i64)> = conn
            .prepare("SELECT trace_key, written_ns FROM parts ORDER BY part_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(written, [(1, 5000), (2, 6000)]);
        drop(conn);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

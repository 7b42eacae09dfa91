//! The schema and its migrations. `user_version` is the number of migrations
//! applied; `application_id` marks the file as ours.
//!
//! Times are nanoseconds since the Unix epoch; ids are lowercase hex; sets of
//! attributes are JSON objects (keys sorted), events and links JSON arrays.

use anyhow::Result;
use rusqlite::{Connection, TransactionBehavior};

use crate::APPLICATION_ID;

/// Migration `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[r#"
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
"#];

/// Brings the schema up to date, in one transaction (another process may be
/// doing the same: the version is read again under the write lock).
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let current: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current as usize >= MIGRATIONS.len() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for sql in MIGRATIONS.iter().skip(current.max(0) as usize) {
        tx.execute_batch(sql)?;
    }
    tx.execute_batch(&format!(
        "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {};",
        MIGRATIONS.len()
    ))?;
    tx.commit()?;
    Ok(())
}

//! Reading the store: what the terminal views and the web UI show. Every
//! type here serializes to the JSON that `--json` prints and the UI's API
//! serves (times in nanoseconds since the Unix epoch, ids in hex).

use std::cell::Cell;

use anyhow::{Result, bail};
use rusqlite::types::Value as Sql;
use rusqlite::{OptionalExtension as _, Row, params_from_iter};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::Store;
use crate::codec;
use crate::ingest::id_key;
use crate::trace_ids::{Finder, key_of};

/// One line of the trace list.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TraceSummary {
    /// 32 hex digits.
    pub trace_id: String,
    /// The root span's name (or, until the root arrives, the earliest span's).
    pub root_name: String,
    /// `service.name` of the root span.
    pub service: String,
    /// Earliest span start.
    pub start_ns: i64,
    /// Latest span end minus earliest start.
    pub duration_ns: i64,
    /// Spans stored.
    pub span_count: i64,
    /// Spans with an error status.
    pub error_count: i64,
}

/// Which traces to list, newest first.
#[derive(Clone, Debug, Default)]
pub struct TraceFilter {
    /// Only this service.
    pub service: Option<String>,
    /// Only traces with a span of exactly this name.
    pub span_name: Option<String>,
    /// Root name containing this text (case-insensitive), or a trace id
    /// starting with it.
    pub search: Option<String>,
    /// Only traces lasting at least this long.
    pub min_duration_ns: Option<i64>,
    /// Only traces with an error span.
    pub errors_only: bool,
    /// Only traces that started before this (for paging).
    pub before_ns: Option<i64>,
    /// Only traces that started at or after this.
    pub since_ns: Option<i64>,
    /// Slowest first instead of newest first.
    pub slowest_first: bool,
    /// At most this many (default 50).
    pub limit: Option<usize>,
}

/// A span event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Its name.
    pub name: String,
    /// When it happened.
    pub time_ns: i64,
    /// Its attributes, as a JSON object.
    pub attributes: Json,
}

/// A link to another span.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Link {
    /// The linked span's trace.
    pub trace_id: String,
    /// The linked span.
    pub span_id: String,
    /// The link's attributes.
    pub attributes: Json,
}

/// A stored span.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Span {
    /// Trace id.
    pub trace_id: String,
    /// Span id (16 hex digits).
    pub span_id: String,
    /// The parent's span id, if any.
    pub parent_span_id: Option<String>,
    /// Name.
    pub name: String,
    /// `internal`, `server`, `client`, `producer` or `consumer`.
    pub kind: String,
    /// `service.name` of its resource.
    pub service: String,
    /// Instrumentation scope name.
    pub scope: String,
    /// Start.
    pub start_ns: i64,
    /// End.
    pub end_ns: i64,
    /// End minus start.
    pub duration_ns: i64,
    /// `unset`, `ok` or `error`.
    pub status_code: String,
    /// The error description, if any.
    pub status_message: String,
    /// Attributes, a JSON object.
    pub attributes: Json,
    /// Events, in order.
    pub events: Vec<Event>,
    /// Links.
    pub links: Vec<Link>,
    /// What the limits dropped: `{"attributes": n, "events": n, "links": n}`.
    pub dropped: Json,
    /// The resource's attributes.
    pub resource: Json,
}

/// A trace with all its spans (by start time) and its log records (by time).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Trace {
    /// The list line.
    #[serde(flatten)]
    pub summary: TraceSummary,
    /// Its spans.
    pub spans: Vec<Span>,
    /// Log records emitted inside it.
    pub logs: Vec<LogRecord>,
}

/// A stored log record.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LogRecord {
    /// Row id (increasing).
    pub id: i64,
    /// Timestamp (or observed time).
    pub time_ns: i64,
    /// OpenTelemetry severity number (1-24; 0 when unset).
    pub severity_number: i32,
    /// Severity text, e.g. `INFO`.
    pub severity_text: String,
    /// The message (other bodies as JSON text).
    pub body: String,
    /// Target (the log's context) or scope name.
    pub target: String,
    /// `service.name`.
    pub service: String,
    /// Trace it was emitted in.
    pub trace_id: Option<String>,
    /// Span it was emitted in.
    pub span_id: Option<String>,
    /// Attributes, a JSON object.
    pub attributes: Json,
}

/// Which log records to list: the most recent `limit`, oldest first.
#[derive(Clone, Debug, Default)]
pub struct LogFilter {
    /// At least this severity number (trace 1, debug 5, info 9, warn 13,
    /// error 17, fatal/critical 21).
    pub min_severity: Option<i32>,
    /// Only this service.
    pub service: Option<String>,
    /// Only records of this trace.
    pub trace_id: Option<String>,
    /// Body containing this text (case-insensitive).
    pub search: Option<String>,
    /// Only records at or after this time.
    pub since_ns: Option<i64>,
    /// At most this many (default 100).
    pub limit: Option<usize>,
}

/// A metric data point. With cumulative temporality, the latest point of a
/// series (name, service, attributes) is its current value.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MetricPoint {
    /// When it was collected.
    pub time_ns: i64,
    /// `service.name`.
    pub service: String,
    /// Instrument name.
    pub name: String,
    /// Instrument description.
    pub description: String,
    /// Unit.
    pub unit: String,
    /// `counter`, `updowncounter`, `gauge`, `histogram` or `exp_histogram`.
    pub kind: String,
    /// Attributes, a JSON object.
    pub attributes: Json,
    /// Sum (counters, histograms) or last value (gauges).
    pub value: f64,
    /// Histograms: how many values were recorded.
    pub count: Option<i64>,
    /// Histograms: smallest value.
    pub min: Option<f64>,
    /// Histograms: largest value.
    pub max: Option<f64>,
    /// Histograms: `{"bounds": [..], "counts": [..]}`.
    pub buckets: Option<Json>,
}

/// Which metrics to show.
#[derive(Clone, Debug, Default)]
pub struct MetricFilter {
    /// Only this instrument.
    pub name: Option<String>,
    /// Only this service.
    pub service: Option<String>,
    /// Only points at or after this time (series).
    pub since_ns: Option<i64>,
}

/// Counts of what the store holds.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Traces.
    pub traces: i64,
    /// Spans.
    pub spans: i64,
    /// Log records.
    pub logs: i64,
    /// Metric points.
    pub metric_points: i64,
}

/// Log records [`Store::trace`] reads at most: the first by time.
const TRACE_LOGS_READ: usize = 10_000;

const TRACE_COLUMNS: &str =
    "trace_id, root_name, service, start_ns, duration_ns, span_count, error_count";
const POINT_COLUMNS: &str =
    "time_ns, service, name, description, unit, kind, attributes, value, count, min, max, buckets";

fn json_col(row: &Row<'_>, i: usize) -> rusqlite::Result<Json> {
    let text: String = row.get(i)?;
    Ok(serde_json::from_str(&text).unwrap_or(Json::String(text)))
}

fn trace_row(row: &Row<'_>) -> rusqlite::Result<TraceSummary> {
    Ok(TraceSummary {
        trace_id: row.get(0)?,
        root_name: row.get(1)?,
        service: row.get(2)?,
        start_ns: row.get(3)?,
        duration_ns: row.get(4)?,
        span_count: row.get(5)?,
        error_count: row.get(6)?,
    })
}

/// Reads the log chunks `filter` (a WHERE clause and an ORDER BY, with
/// `params`) selects, in its order, while `wanted` says yes to a chunk's
/// earliest and latest times, giving the records `keep` wants, with their
/// trace keys, to `each`. With `search`, a chunk whose bytes do not hold it anywhere is
/// not decoded (no body in it can).
fn read_chunks(
    conn: &rusqlite::Connection,
    filter: &str,
    params: &[Sql],
    search: Option<&str>,
    wanted: impl Fn(i64, i64) -> bool,
    mut keep: impl FnMut(&codec::RawLog<'_>) -> bool,
    mut each: impl FnMut(LogRecord, Option<i64>),
) -> Result<()> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT chunk_id, min_time, max_time, records FROM log_chunks {filter}"
    ))?;
    let mut rows = stmt.query(params_from_iter(params.iter()))?;
    while let Some(row) = rows.next()? {
        let (min_time, max_time): (i64, i64) = (row.get(1)?, row.get(2)?);
        if !wanted(min_time, max_time) {
            break;
        }
        let chunk: i64 = row.get(0)?;
        let blob = row.get_ref(3)?.as_blob()?;
        if search.is_some_and(|q| !contains_ignoring_ascii_case(blob, q)) {
            continue;
        }
        let Some(records) = codec::decode_logs(blob, chunk, min_time, &mut keep) else {
            bail!("a stored chunk of log records is damaged (chunk {chunk})");
        };
        for (record, key) in records {
            each(record, key);
        }
    }
    Ok(())
}

/// Whether `text` holds `part`, ASCII letters matched in either case (as
/// SQLite's LIKE matches them): candidates are found by their first byte
/// (`memchr`), then compared.
fn contains_ignoring_ascii_case(text: &[u8], part: &str) -> bool {
    let part = part.as_bytes();
    let Some(&first) = part.first() else {
        return true;
    };
    let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    let mut from = 0;
    while let Some(i) = memchr::memchr2(lower, upper, &text[from..]) {
        let start = from + i;
        match text.get(start..start + part.len()) {
            None => return false,
            Some(w) if w.eq_ignore_ascii_case(part) => return true,
            Some(_) => from = start + 1,
        }
    }
    false
}

fn point_row(row: &Row<'_>) -> rusqlite::Result<MetricPoint> {
    let buckets: Option<String> = row.get(11)?;
    Ok(MetricPoint {
        time_ns: row.get(0)?,
        service: row.get(1)?,
        name: row.get(2)?,
        description: row.get(3)?,
        unit: row.get(4)?,
        kind: row.get(5)?,
        attributes: json_col(row, 6)?,
        value: row.get(7)?,
        count: row.get(8)?,
        min: row.get(9)?,
        max: row.get(10)?,
        buckets: buckets.and_then(|b| buckets_json(&b).or_else(|| serde_json::from_str(&b).ok())),
    })
}

/// A histogram's buckets as the exporter writes them
/// (`{"bounds":[..],"counts":[..]}`), read without the general JSON parser:
/// a metric series is thousands of points, and this was most of its time.
/// `None` for any other text (the general parser then reads it).
fn buckets_json(text: &str) -> Option<Json> {
    let rest = text.strip_prefix(r#"{"bounds":["#)?;
    let (bounds, rest) = rest.split_once(r#"],"counts":["#)?;
    let counts = rest.strip_suffix("]}")?;
    fn list(s: &str, item: impl Fn(&str) -> Option<Json>) -> Option<Json> {
        if s.is_empty() {
            return Some(Json::Array(Vec::new()));
        }
        s.split(',')
            .map(item)
            .collect::<Option<Vec<_>>>()
            .map(Json::Array)
    }
    let mut map = serde_json::Map::new();
    map.insert(
        "bounds".into(),
        list(bounds, |n| {
            serde_json::Number::from_f64(n.parse().ok()?).map(Json::Number)
        })?,
    );
    map.insert(
        "counts".into(),
        list(counts, |n| Some(Json::from(n.parse::<u64>().ok()?)))?,
    );
    Some(Json::Object(map))
}

/// `%text%` for LIKE, with the wildcards in `text` escaped.
fn like(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// A WHERE clause built from optional conditions.
#[derive(Default)]
struct Where {
    conds: Vec<String>,
    params: Vec<Sql>,
}

impl Where {
    fn add(&mut self, cond: &str, values: impl IntoIterator<Item = Sql>) {
        // Number each `?` in turn.
        let mut values = values.into_iter();
        let mut parts = cond.split('?');
        let mut out = parts.next().unwrap_or_default().to_string();
        for part in parts {
            self.params
                .push(values.next().expect("a value for every `?`"));
            out.push_str(&format!("?{}{part}", self.params.len()));
        }
        self.conds.push(out);
    }

    fn sql(&self) -> String {
        if self.conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conds.join(" AND "))
        }
    }

    fn push(&mut self, v: Sql) -> String {
        self.params.push(v);
        format!("?{}", self.params.len())
    }
}

fn text(s: &str) -> Sql {
    Sql::Text(s.to_string())
}

impl Store {
    /// The trace list.
    pub fn traces(&self, f: &TraceFilter) -> Result<Vec<TraceSummary>> {
        let mut w = Where::default();
        // Whether the traces are a short list of keys.
        let mut by_keys = false;
        // Rows made for log records whose spans are not (yet) stored.
        w.add("span_count > 0", []);
        if let Some(s) = &f.service {
            w.add("service = ?", [text(s)]);
        }
        let conn = self.conn();
        if let Some(n) = &f.span_name {
            let id: Option<i64> = conn
                .prepare_cached("SELECT name_id FROM span_names WHERE name = ?1")?
                .query_row([n], |r| r.get(0))
                .optional()?;
            let Some(id) = id else {
                return Ok(Vec::new());
            };
            // Rare: its traces, looked up by key. Common: the traces newest
            // first, each checked, until the page is full.
            if let Some(keys) = keys_with_names(&conn, &[id])? {
                w.add(&in_list(&keys), []);
                by_keys = true;
            }
            w.add(
                "EXISTS (SELECT 1 FROM parts p WHERE p.trace_key = traces.trace_key AND instr(p.names, ?))",
                [text(&format!(",{id},"))],
            );
        }
        if let Some(q) = f.search.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            let matches = "(root_name LIKE ? ESCAPE '\\' OR trace_id LIKE ? ESCAPE '\\')";
            let values = [
                text(&like(q)),
                text(&format!("{}%", like(q).trim_start_matches('%'))),
            ];
            // The root name is a span name: the distinct names that match
            // (a short list) lead to the few traces that may, unless they
            // are many, and then a scan newest first finds them at once.
            match search_keys(&conn, q)? {
                Some(keys) => {
                    w.add(&format!("{} AND {matches}", in_list(&keys)), values);
                    by_keys = true;
                }
                None => w.add(matches, values),
            }
        }
        if let Some(d) = f.min_duration_ns {
            w.add("duration_ns >= ?", [Sql::Integer(d)]);
        }
        if f.errors_only {
            w.add("error_count > 0", []);
        }
        if let Some(b) = f.before_ns {
            w.add("start_ns < ?", [Sql::Integer(b)]);
        }
        if let Some(s) = f.since_ns {
            w.add("start_ns >= ?", [Sql::Integer(s)]);
        }
        let limit = f.limit.unwrap_or(50);
        if f.slowest_first && !by_keys {
            return slowest(&conn, &w, limit);
        }
        let order = if f.slowest_first {
            "duration_ns DESC"
        } else {
            "start_ns DESC"
        };
        let limit = w.push(Sql::Integer(limit as i64));
        let sql = format!(
            "SELECT {TRACE_COLUMNS} FROM traces {} ORDER BY {order} LIMIT {limit}",
            w.sql()
        );
        let run = |stmt: &mut rusqlite::Statement<'_>| -> rusqlite::Result<Vec<TraceSummary>> {
            stmt.query_map(params_from_iter(w.params.iter()), trace_row)?
                .collect()
        };
        // Lists of keys make one-off statements: keep them out of the cache.
        Ok(if sql.len() > 4096 {
            run(&mut conn.prepare(&sql)?)?
        } else {
            run(&mut *conn.prepare_cached(&sql)?)?
        })
    }

    /// Resolves a trace id or a unique prefix of one (at least 4 hex digits).
    pub fn resolve_trace_id(&self, id: &str) -> Result<Option<String>> {
        let id = id.trim().to_ascii_lowercase();
        if id.len() < 4 || id.len() > 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("`{id}` is not a trace id (32 hex digits, or a prefix of at least 4)");
        }
        let conn = self.conn();
        let ids: Vec<String> = Finder::with_prefix(&conn, prefix_range(&id), &id, 2)?
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        match ids.len() {
            0 => Ok(None),
            1 => Ok(ids.into_iter().next()),
            _ => bail!("`{id}` matches several traces; give more digits"),
        }
    }

    /// The list line of one trace.
    pub fn trace_summary(&self, trace_id: &str) -> Result<Option<TraceSummary>> {
        let conn = self.conn();
        let Some(key) = key_of(&conn, trace_id)? else {
            return Ok(None);
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TRACE_COLUMNS} FROM traces WHERE trace_key = ?1"
        ))?;
        Ok(stmt.query_map([key], trace_row)?.next().transpose()?)
    }

    /// One trace, with its spans (by start time) and logs; `None` if it is
    /// not stored. At most [`TRACE_SPANS_READ`] spans (the first stored)
    /// and 10 000 log records are read: a trace that holds more (its
    /// `span_count` says) is read in pages with [`Store::trace_spans`].
    pub fn trace(&self, trace_id: &str) -> Result<Option<Trace>> {
        let Some(summary) = self.trace_summary(trace_id)? else {
            return Ok(None);
        };
        let mut spans = self.trace_spans(trace_id, None, TRACE_SPANS_READ)?.spans;
        spans.sort_by(|a, b| (a.start_ns, &a.span_id).cmp(&(b.start_ns, &b.span_id)));
        let conn = self.conn();
        let logs = match key_of(&conn, trace_id)? {
            None => Vec::new(),
            Some(key) => {
                // The first records by time, read oldest chunk first until
                // no chunk left can hold one older than the last kept.
                let ceiling = Cell::new(i64::MAX);
                let oldest_first =
                    |a: &LogRecord, b: &LogRecord| (a.time_ns, a.id).cmp(&(b.time_ns, b.id));
                let mut logs = Vec::new();
                read_chunks(
                    &conn,
                    "WHERE chunk_id IN (SELECT chunk_id FROM log_traces WHERE trace_key = ?1)
                     ORDER BY min_time",
                    &[Sql::Integer(key)],
                    None,
                    |min_time, _| min_time <= ceiling.get(),
                    |r| r.trace_key == Some(key) && r.time_ns <= ceiling.get(),
                    |record, _| {
                        logs.push(record);
                        if logs.len() >= 2 * TRACE_LOGS_READ {
                            logs.sort_unstable_by(oldest_first);
                            logs.truncate(TRACE_LOGS_READ);
                            ceiling.set(logs[TRACE_LOGS_READ - 1].time_ns);
                        }
                    },
                )?;
                logs.sort_unstable_by(oldest_first);
                logs.truncate(TRACE_LOGS_READ);
                logs
            }
        };
        Ok(Some(Trace {
            summary,
            spans,
            logs,
        }))
    }

    /// A page of at most `limit` spans of a trace, in the order they were
    /// stored, after `after` (`None`: from the first). The page's `next`
    /// reads on; it is `None` after the last span. Memory and time are
    /// bounded by `limit` (and the spans of one export batch), however
    /// large the trace.
    pub fn trace_spans(
        &self,
        trace_id: &str,
        after: Option<SpanCursor>,
        limit: usize,
    ) -> Result<SpanPage> {
        let conn = self.conn();
        let key = key_of(&conn, trace_id)?;
        let mut page = SpanPage {
            spans: Vec::new(),
            next: None,
        };
        let Some(key) = key else {
            return Ok(page);
        };
        let after = after.unwrap_or(SpanCursor {
            part_id: i64::MIN,
            skip: 0,
        });
        let mut resources = ResourceCache::default();
        let mut stmt = conn.prepare_cached(
            "SELECT part_id, start_ns, spans FROM parts WHERE trace_key = ?1 AND part_id >= ?2
             ORDER BY part_id",
        )?;
        let mut rows = stmt.query(rusqlite::params![key, after.part_id])?;
        while let Some(row) = rows.next()? {
            let part_id: i64 = row.get(0)?;
            if page.spans.len() >= limit {
                page.next = Some(SpanCursor { part_id, skip: 0 });
                break;
            }
            let skip = if part_id == after.part_id {
                after.skip
            } else {
                0
            };
            let base: i64 = row.get(1)?;
            let blob = row.get_ref(2)?.as_blob()?;
            let Some(decoded) = codec::decode(blob, base) else {
                bail!("trace {trace_id}: a stored part is damaged (part {part_id})");
            };
            let total = decoded.len();
            let room = limit - page.spans.len();
            for s in decoded.into_iter().skip(skip).take(room) {
                page.spans
                    .push(span_out(trace_id, s, &mut resources, &conn)?);
            }
            if skip + room < total {
                page.next = Some(SpanCursor {
                    part_id,
                    skip: skip + room,
                });
                break;
            }
        }
        Ok(page)
    }

    /// Log records, oldest first (the most recent `limit` that match).
    /// Chunks are read newest first, skipped by what they hold (their
    /// latest time, highest severity and service), until no chunk left can
    /// hold a record newer than the `limit`-th found.
    pub fn logs(&self, f: &LogFilter) -> Result<Vec<LogRecord>> {
        let limit = f.limit.unwrap_or(100);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let conn = self.conn();
        let mut w = Where::default();
        if let Some(s) = f.min_severity {
            w.add("max_severity >= ?", [Sql::Integer(s.into())]);
        }
        if let Some(s) = &f.service {
            w.add("service = ?", [text(s)]);
        }
        if let Some(s) = f.since_ns {
            w.add("max_time >= ?", [Sql::Integer(s)]);
        }
        // By key; a trace whose row retention removed before its last log
        // records is found by a scan.
        let key = match &f.trace_id {
            Some(t) => key_of(&conn, t)?,
            None => None,
        };
        if let Some(key) = key {
            w.add(
                "chunk_id IN (SELECT chunk_id FROM log_traces WHERE trace_key = ?)",
                [Sql::Integer(key)],
            );
        }
        let search = f.search.as_deref().map(str::trim).filter(|q| !q.is_empty());
        // The time of the `limit`-th newest record found, once there are
        // that many: a chunk whose records are all older holds none of the
        // answer, and neither does any after it.
        let floor = Cell::new(i64::MIN);
        let matches = |r: &codec::RawLog<'_>| {
            r.time_ns >= floor.get()
                && f.min_severity.is_none_or(|s| r.severity >= s)
                && f.service.as_ref().is_none_or(|s| r.service == s)
                && f.since_ns.is_none_or(|s| r.time_ns >= s)
                && match (&f.trace_id, key) {
                    (None, _) => true,
                    (Some(_), Some(key)) => r.trace_key == Some(key),
                    (Some(t), None) => r.trace.ids().0.as_ref() == Some(t),
                }
                && search.is_none_or(|q| contains_ignoring_ascii_case(r.body, q))
        };
        let mut found: Vec<LogRecord> = Vec::new();
        let newest_first = |a: &LogRecord, b: &LogRecord| (b.time_ns, b.id).cmp(&(a.time_ns, a.id));
        read_chunks(
            &conn,
            &format!("{} ORDER BY max_time DESC", w.sql()),
            &w.params,
            search,
            |_, max_time| max_time >= floor.get(),
            matches,
            |record, _| {
                found.push(record);
                if found.len() >= 2 * limit {
                    found.sort_unstable_by(newest_first);
                    found.truncate(limit);
                    floor.set(found[limit - 1].time_ns);
                }
            },
        )?;
        found.sort_unstable_by(newest_first);
        found.truncate(limit);
        found.reverse();
        Ok(found)
    }

    /// The current value of every series: the latest point per instrument,
    /// service and attribute set, by name.
    pub fn metrics(&self, f: &MetricFilter) -> Result<Vec<MetricPoint>> {
        let mut w = Where::default();
        if let Some(n) = &f.name {
            w.add("name = ?", [text(n)]);
        }
        if let Some(s) = &f.service {
            w.add("service = ?", [text(s)]);
        }
        if let Some(s) = f.since_ns {
            w.add("time_ns >= ?", [Sql::Integer(s)]);
        }
        let sql = format!(
            "SELECT {POINT_COLUMNS} FROM metric_points WHERE id IN
                 (SELECT max(id) FROM metric_points {} GROUP BY name, service, attributes)
             ORDER BY name, service, attributes",
            w.sql()
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(w.params.iter()), point_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Every point of the instrument `name` (all its series), oldest first,
    /// at most the latest 5000.
    pub fn metric_series(&self, name: &str, f: &MetricFilter) -> Result<Vec<MetricPoint>> {
        let mut w = Where::default();
        w.add("name = ?", [text(name)]);
        if let Some(s) = &f.service {
            w.add("service = ?", [text(s)]);
        }
        if let Some(s) = f.since_ns {
            w.add("time_ns >= ?", [Sql::Integer(s)]);
        }
        let sql = format!(
            "SELECT * FROM (SELECT {POINT_COLUMNS}, id FROM metric_points {} ORDER BY id DESC LIMIT 5000)
             ORDER BY time_ns, id",
            w.sql()
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(w.params.iter()), point_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The services that sent anything, by name.
    pub fn services(&self) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT service FROM services ORDER BY 1")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// How much the store holds (kept up to date by every write and
    /// prune, so the UI's header costs no scan).
    pub fn counts(&self) -> Result<Counts> {
        let conn = self.conn();
        Ok(conn
            .prepare_cached("SELECT traces, spans, logs, metric_points FROM counts")?
            .query_row([], |r| {
                Ok(Counts {
                    traces: r.get(0)?,
                    spans: r.get(1)?,
                    logs: r.get(2)?,
                    metric_points: r.get(3)?,
                })
            })?)
    }
}

/// The most spans [`Store::trace`] reads.
pub const TRACE_SPANS_READ: usize = 10_000;

/// Where a page of a trace's spans ended ([`Store::trace_spans`]). As text
/// (`Display`, `FromStr`) it can go through a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanCursor {
    part_id: i64,
    skip: usize,
}

impl std::fmt::Display for SpanCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.part_id, self.skip)
    }
}

impl std::str::FromStr for SpanCursor {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (part, skip) = s
            .split_once('.')
            .ok_or_else(|| anyhow::anyhow!("`{s}` is not a span cursor"))?;
        Ok(SpanCursor {
            part_id: part.parse()?,
            skip: skip.parse()?,
        })
    }
}

/// A page of a trace's spans.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SpanPage {
    /// The spans, in the order they were stored.
    pub spans: Vec<Span>,
    /// Where the next page starts; `None` after the last.
    #[serde(serialize_with = "cursor_text")]
    pub next: Option<SpanCursor>,
}

fn cursor_text<S: serde::Serializer>(c: &Option<SpanCursor>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.collect_str(c),
        None => s.serialize_none(),
    }
}

/// Resources by id, parsed once per read.
#[derive(Default)]
struct ResourceCache(std::collections::HashMap<i64, Json>);

fn span_out(
    trace_id: &str,
    s: codec::SpanOut,
    resources: &mut ResourceCache,
    conn: &rusqlite::Connection,
) -> Result<Span> {
    let resource = match resources.0.get(&s.resource_id) {
        Some(r) => r.clone(),
        None => {
            let text: Option<String> = conn
                .prepare_cached("SELECT json FROM resources WHERE resource_id = ?1")?
                .query_row([s.resource_id], |r| r.get(0))
                .optional()?;
            let r = text
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or(Json::Object(Default::default()));
            resources.0.insert(s.resource_id, r.clone());
            r
        }
    };
    Ok(Span {
        trace_id: trace_id.to_string(),
        span_id: format!("{:016x}", s.span_id),
        parent_span_id: (s.parent != 0).then(|| format!("{:016x}", s.parent)),
        name: s.name,
        kind: codec::KINDS
            .get(s.kind as usize)
            .unwrap_or(&"internal")
            .to_string(),
        service: s.service,
        scope: s.scope,
        start_ns: s.start_ns,
        end_ns: s.end_ns,
        duration_ns: s.end_ns - s.start_ns,
        status_code: codec::STATUSES
            .get(s.status as usize)
            .unwrap_or(&"unset")
            .to_string(),
        status_message: s.message,
        attributes: s.attributes,
        events: s.events,
        links: s.links,
        dropped: serde_json::json!({
            "attributes": s.dropped[0],
            "events": s.dropped[1],
            "links": s.dropped[2],
        }),
        resource,
    })
}

/// At most this many candidate traces are looked up by key; more, and a
/// filter probes the traces newest first instead (it then finds its page
/// at once, the candidates being common).
const CANDIDATES: usize = 2_000;

/// The keys of the traces having a span named by one of `ids`, or `None`
/// if there are more than [`CANDIDATES`].
fn keys_with_names(conn: &rusqlite::Connection, ids: &[i64]) -> Result<Option<Vec<i64>>> {
    let mut keys = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT keys FROM name_postings WHERE name_id = ?1 ORDER BY posting_id DESC",
    )?;
    for &id in ids {
        let mut rows = stmt.query([id])?;
        while let Some(r) = rows.next()? {
            let blob = r.get_ref(0)?.as_blob()?;
            keys.extend(
                blob.chunks_exact(8)
                    .map(|b| i64::from_be_bytes(b.try_into().unwrap_or_default())),
            );
            if keys.len() > CANDIDATES {
                return Ok(None);
            }
        }
    }
    keys.sort_unstable();
    keys.dedup();
    Ok(Some(keys))
}

/// The traces a text search may match: those with a span name containing
/// the text, and those whose id starts with it; `None` if too many.
fn search_keys(conn: &rusqlite::Connection, q: &str) -> Result<Option<Vec<i64>>> {
    let ids: Vec<i64> = conn
        .prepare_cached("SELECT name_id FROM span_names WHERE name LIKE ?1 ESCAPE '\\' LIMIT ?2")?
        .query_map(rusqlite::params![like(q), CANDIDATES as i64 + 1], |r| {
            r.get(0)
        })?
        .collect::<rusqlite::Result<_>>()?;
    if ids.len() > CANDIDATES {
        return Ok(None);
    }
    let Some(mut keys) = keys_with_names(conn, &ids)? else {
        return Ok(None);
    };
    let q = q.to_ascii_lowercase();
    if !q.is_empty() && q.len() <= 32 && q.chars().all(|c| c.is_ascii_hexdigit()) {
        let by_id = Finder::with_prefix(conn, prefix_range(&q), &q, CANDIDATES + 1)?;
        if by_id.len() > CANDIDATES {
            return Ok(None);
        }
        keys.extend(by_id.into_iter().map(|(key, _)| key));
        keys.sort_unstable();
        keys.dedup();
    }
    Ok(Some(keys))
}

/// The `limit` slowest traces that match `w`. Durations are indexed
/// within each epoch of trace keys (schema 5, `traces_slow`), so this
/// merges the epochs' lists, each read slowest first only as far as the
/// merge needs: about as many rows as one index over all traces would
/// read.
fn slowest(conn: &rusqlite::Connection, w: &Where, limit: usize) -> Result<Vec<TraceSummary>> {
    let epochs = crate::trace_ids::epochs(conn)?;
    let sql = format!(
        "SELECT {TRACE_COLUMNS} FROM traces INDEXED BY traces_slow {} AND trace_key >> 12 = ?{}
         ORDER BY duration_ns DESC",
        w.sql(),
        w.params.len() + 1
    );
    let mut stmts = epochs
        .iter()
        .map(|_| conn.prepare(&sql))
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut cursors = Vec::with_capacity(stmts.len());
    for (stmt, &epoch) in stmts.iter_mut().zip(&epochs) {
        let params = w.params.iter().cloned().chain([Sql::Integer(epoch)]);
        cursors.push(stmt.query_map(params_from_iter(params), trace_row)?);
    }
    // The next trace of each epoch, and a heap of their durations.
    let mut next: Vec<Option<TraceSummary>> = Vec::with_capacity(cursors.len());
    let mut heap = std::collections::BinaryHeap::new();
    for (i, cursor) in cursors.iter_mut().enumerate() {
        let t = cursor.next().transpose()?;
        if let Some(t) = &t {
            heap.push((t.duration_ns, std::cmp::Reverse(i)));
        }
        next.push(t);
    }
    let mut out = Vec::with_capacity(limit.min(1000));
    while out.len() < limit {
        let Some((_, std::cmp::Reverse(i))) = heap.pop() else {
            break;
        };
        out.extend(next[i].take());
        next[i] = cursors[i].next().transpose()?;
        if let Some(t) = &next[i] {
            heap.push((t.duration_ns, std::cmp::Reverse(i)));
        }
    }
    Ok(out)
}

/// `trace_key IN (...)`, the keys written out (integers: nothing to escape).
fn in_list(keys: &[i64]) -> String {
    let list: Vec<String> = keys.iter().map(i64::to_string).collect();
    format!("trace_key IN ({})", list.join(","))
}

/// The `id_hi` values of the trace ids starting with hex digits `hex`.
fn prefix_range(hex: &str) -> (i64, i64) {
    let digits = &hex[..hex.len().min(16)];
    let (lo, _) = id_key(digits);
    let width = 4 * (16 - digits.len() as u32);
    let span = 1u64.checked_shl(width).map_or(u64::MAX, |s| s - 1);
    (lo, lo.wrapping_add(span as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quick reading of buckets gives what the JSON parser gives.
    #[test]
    fn buckets_read_as_json() {
        for text in [
            r#"{"bounds":[0.0,5.0,7.5,1e300],"counts":[1,0,2,3,18446744073709551615]}"#,
            r#"{"bounds":[],"counts":[4]}"#,
        ] {
            let json: Json = serde_json::from_str(text).unwrap();
            assert_eq!(buckets_json(text), Some(json), "{text}");
        }
        assert_eq!(buckets_json(r#"{"counts":[1],"bounds":[]}"#), None);
        assert_eq!(buckets_json(r#"{"bounds":[x],"counts":[]}"#), None);
    }

    /// The log search matches as SQLite's LIKE did: ASCII letters in either
    /// case, anything else exactly, anywhere in the body.
    #[test]
    fn the_log_search_matches_as_like_did() {
        let yes = |text: &str, part: &str| contains_ignoring_ascii_case(text.as_bytes(), part);
        assert!(yes("Handled REQUEST 42", "request 4"));
        assert!(yes("abc", ""));
        assert!(yes("xxaXb", "axb"));
        assert!(yes("ends with Tail", "tail"));
        assert!(!yes("ends with Tai", "tail"));
        assert!(!yes("", "a"));
        assert!(yes("naïve café", "CAFÉ".to_lowercase().as_str()));
        assert!(
            !yes("naïve café", "CAFÉ"),
            "non-ASCII letters match exactly"
        );
        assert!(yes("100% _sure_", "% _s"));
    }
}

//! Reading the store: what the terminal views and the web UI show. Every
//! type here serializes to the JSON that `--json` prints and the UI's API
//! serves (times in nanoseconds since the Unix epoch, ids in hex).

use anyhow::{Result, bail};
use rusqlite::types::Value as Sql;
use rusqlite::{OptionalExtension as _, Row, params_from_iter};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::Store;

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

const TRACE_COLUMNS: &str =
    "trace_id, root_name, service, start_ns, duration_ns, span_count, error_count";
/// Spans are read with their trace (`t`) and resource (`r`) joined in.
const SPAN_COLUMNS: &str = "t.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.service, s.scope, \
     s.start_ns, s.end_ns, s.duration_ns, s.status_code, s.status_message, s.attributes, s.events, s.links, \
     s.dropped, r.json";
const LOG_COLUMNS: &str = "id, time_ns, severity_number, severity_text, body, target, service, trace_id, span_id, attributes";
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

fn span_row(row: &Row<'_>) -> rusqlite::Result<Span> {
    let events: String = row.get(13)?;
    let links: String = row.get(14)?;
    Ok(Span {
        trace_id: row.get(0)?,
        span_id: row.get(1)?,
        parent_span_id: row.get(2)?,
        name: row.get(3)?,
        kind: row.get(4)?,
        service: row.get(5)?,
        scope: row.get(6)?,
        start_ns: row.get(7)?,
        end_ns: row.get(8)?,
        duration_ns: row.get(9)?,
        status_code: row.get(10)?,
        status_message: row.get(11)?,
        attributes: json_col(row, 12)?,
        events: serde_json::from_str(&events).unwrap_or_default(),
        links: serde_json::from_str(&links).unwrap_or_default(),
        dropped: json_col(row, 15)?,
        resource: json_col(row, 16)?,
    })
}

fn log_row(row: &Row<'_>) -> rusqlite::Result<LogRecord> {
    Ok(LogRecord {
        id: row.get(0)?,
        time_ns: row.get(1)?,
        severity_number: row.get(2)?,
        severity_text: row.get(3)?,
        body: row.get(4)?,
        target: row.get(5)?,
        service: row.get(6)?,
        trace_id: row.get(7)?,
        span_id: row.get(8)?,
        attributes: json_col(row, 9)?,
    })
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
        buckets: buckets.and_then(|b| serde_json::from_str(&b).ok()),
    })
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
        // Rows made for log records whose spans are not (yet) stored.
        w.add("span_count > 0", []);
        if let Some(s) = &f.service {
            w.add("service = ?", [text(s)]);
        }
        if let Some(n) = &f.span_name {
            // One index probe per trace, newest first, until the page is
            // full: cheap when the name is common, bounded when it is rare.
            w.add(
                "EXISTS (SELECT 1 FROM spans s WHERE s.name = ? AND s.trace_key = traces.trace_key)",
                [text(n)],
            );
        }
        if let Some(q) = f.search.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            w.add(
                "(root_name LIKE ? ESCAPE '\\' OR trace_id LIKE ? ESCAPE '\\')",
                [
                    text(&like(q)),
                    text(&format!("{}%", like(q).trim_start_matches('%'))),
                ],
            );
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
        let order = if f.slowest_first {
            "duration_ns DESC"
        } else {
            "start_ns DESC"
        };
        let limit = w.push(Sql::Integer(f.limit.unwrap_or(50) as i64));
        let sql = format!(
            "SELECT {TRACE_COLUMNS} FROM traces {} ORDER BY {order} LIMIT {limit}",
            w.sql()
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(w.params.iter()), trace_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Resolves a trace id or a unique prefix of one (at least 4 hex digits).
    pub fn resolve_trace_id(&self, id: &str) -> Result<Option<String>> {
        let id = id.trim().to_ascii_lowercase();
        if id.len() < 4 || id.len() > 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("`{id}` is not a trace id (32 hex digits, or a prefix of at least 4)");
        }
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT trace_id FROM traces WHERE trace_id >= ?1 AND trace_id < ?1 || 'g' LIMIT 2",
        )?;
        let ids: Vec<String> = stmt
            .query_map([&id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        match ids.len() {
            0 => Ok(None),
            1 => Ok(ids.into_iter().next()),
            _ => bail!("`{id}` matches several traces; give more digits"),
        }
    }

    /// The list line of one trace.
    pub fn trace_summary(&self, trace_id: &str) -> Result<Option<TraceSummary>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {TRACE_COLUMNS} FROM traces WHERE trace_id = ?1"
        ))?;
        Ok(stmt.query_map([trace_id], trace_row)?.next().transpose()?)
    }

    /// One trace, with its spans and logs; `None` if it is not stored.
    pub fn trace(&self, trace_id: &str) -> Result<Option<Trace>> {
        let Some(summary) = self.trace_summary(trace_id)? else {
            return Ok(None);
        };
        let conn = self.conn();
        let spans = conn
            .prepare_cached(&format!(
                "SELECT {SPAN_COLUMNS} FROM traces t JOIN spans s ON s.trace_key = t.trace_key
                 JOIN resources r ON r.resource_id = s.resource_id
                 WHERE t.trace_id = ?1 ORDER BY s.start_ns, s.span_id"
            ))?
            .query_map([trace_id], span_row)?
            .collect::<rusqlite::Result<_>>()?;
        let logs = conn
            .prepare_cached(&format!(
                "SELECT {LOG_COLUMNS} FROM logs
                 WHERE trace_key = (SELECT trace_key FROM traces WHERE trace_id = ?1)
                 ORDER BY time_ns, id LIMIT 10000"
            ))?
            .query_map([trace_id], log_row)?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some(Trace {
            summary,
            spans,
            logs,
        }))
    }

    /// Log records, oldest first (the most recent `limit` that match).
    pub fn logs(&self, f: &LogFilter) -> Result<Vec<LogRecord>> {
        let mut w = Where::default();
        if let Some(s) = f.min_severity {
            w.add("severity_number >= ?", [Sql::Integer(s.into())]);
        }
        if let Some(s) = &f.service {
            w.add("service = ?", [text(s)]);
        }
        if let Some(t) = &f.trace_id {
            // By key; a trace whose row retention removed before its last
            // log records is found by a scan.
            let key: Option<i64> = self
                .conn()
                .prepare_cached("SELECT trace_key FROM traces WHERE trace_id = ?1")?
                .query_row([t], |r| r.get(0))
                .optional()?;
            match key {
                Some(key) => w.add("trace_key = ?", [Sql::Integer(key)]),
                None => w.add("trace_id = ?", [text(t)]),
            }
        }
        if let Some(q) = f.search.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            w.add("body LIKE ? ESCAPE '\\'", [text(&like(q))]);
        }
        if let Some(s) = f.since_ns {
            w.add("time_ns >= ?", [Sql::Integer(s)]);
        }
        let limit = w.push(Sql::Integer(f.limit.unwrap_or(100) as i64));
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM logs {} ORDER BY time_ns DESC, id DESC LIMIT {limit}",
            w.sql()
        );
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows: Vec<LogRecord> = stmt
            .query_map(params_from_iter(w.params.iter()), log_row)?
            .collect::<rusqlite::Result<_>>()?;
        rows.reverse();
        Ok(rows)
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
        let mut stmt = conn.prepare_cached(
            "SELECT DISTINCT service FROM traces
             UNION SELECT DISTINCT service FROM logs
             UNION SELECT DISTINCT service FROM metric_points ORDER BY 1",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// How much the store holds.
    pub fn counts(&self) -> Result<Counts> {
        let conn = self.conn();
        let count = |table: &str| -> rusqlite::Result<i64> {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        };
        Ok(Counts {
            // Not the rows made for log records whose spans are not stored.
            traces: count("traces WHERE span_count > 0")?,
            spans: count("spans")?,
            logs: count("logs")?,
            metric_points: count("metric_points")?,
        })
    }
}

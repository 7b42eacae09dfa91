//! From OpenTelemetry SDK data to rows: the exporters.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::logs::AnyValue;
use opentelemetry::trace::{SpanKind, Status, TraceId};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use rusqlite::{OptionalExtension as _, params};
use serde_json::{Map, Value as Json, json};

use crate::codec::{self, Attributes, Events, Links, LogAttributes, LogIn, LogTrace, SpanIn};
use crate::trace_ids::{Filter, Finder, Known};
use crate::{Signal, Store, lock, now_ns, unix_ns};

/// Writes spans, log records and metrics to a [`Store`]: one transaction per
/// export batch. Implements [`SpanExporter`], [`LogExporter`] and
/// [`PushMetricExporter`] (cumulative temporality, so the latest point of a
/// series is its current value); give each signal its own clone.
pub struct StoreExporter {
    store: Store,
    resource: Json,
    service: String,
    is_shutdown: AtomicBool,
}

impl StoreExporter {
    pub(crate) fn new(store: Store) -> Self {
        StoreExporter {
            store,
            resource: Json::Object(Map::new()),
            service: "unknown_service".into(),
            is_shutdown: AtomicBool::new(false),
        }
    }

    /// The store written to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Writes a batch of spans, read in place (the `SpanExporter` form takes
    /// the batch by value, which makes a pipeline that may retry a batch
    /// hand over a copy).
    pub fn export_spans(&self, batch: &[SpanData]) -> OTelSdkResult {
        self.check().and_then(|()| self.write_spans(batch))
    }

    fn check(&self) -> OTelSdkResult {
        if self.is_shutdown.load(Ordering::Acquire) {
            Err(OTelSdkError::AlreadyShutdown)
        } else {
            Ok(())
        }
    }

    fn set_resource_inner(&mut self, resource: &Resource) {
        (self.resource, self.service) = resource_json(resource);
    }

    fn write_spans(&self, batch: &[SpanData]) -> OTelSdkResult {
        let resource = self.resource.to_string();
        // The batch's spans by trace, in order of first appearance, with
        // the trace id as text and as its index key.
        let mut groups: Vec<(String, (i64, i64), Vec<&SpanData>)> = Vec::new();
        let mut index: HashMap<TraceId, usize> = HashMap::new();
        for span in batch {
            let trace_id = span.span_context.trace_id();
            let id = trace_id_key(trace_id);
            // A trace's spans mostly come together: no hashing for those.
            let i = match groups.last() {
                Some((_, last, _)) if *last == id => groups.len() - 1,
                _ => *index.entry(trace_id).or_insert_with(|| {
                    groups.push((trace_id.to_string(), id, Vec::new()));
                    groups.len() - 1
                }),
            };
            groups[i].2.push(span);
        }
        let mut written_traces: Vec<u128> = Vec::new();
        let (pruned, last_key, keyed) = self
            .store
            .write_batch(Signal::Spans, batch.len() as u64, |tx| {
                tx.prepare_cached("INSERT OR IGNORE INTO resources (json) VALUES (?1)")?
                    .execute([&resource])?;
                let resource_id: i64 = tx
                    .prepare_cached("SELECT resource_id FROM resources WHERE json = ?1")?
                    .query_row([&resource], |r| r.get(0))?;
                note_service(tx, &self.service)?;
                let written = write_time(tx)?;
                let mut ids = lock(&self.store.inner.ids);
                let mut known = ids.ready(tx, groups.len())?;
                let mut keys = TraceKeys::new(tx)?;
                // Look the traces up in index order: neighbouring probes
                // share pages.
                let mut order: Vec<usize> = (0..groups.len()).collect();
                order.sort_by_key(|&i| groups[i].1);
                let mut found = vec![None; groups.len()];
                // The traces given rows that the recent keys lack.
                let mut keyed = Vec::with_capacity(groups.len());
                for i in order {
                    found[i] = match keys.find(&known, groups[i].1, &groups[i].0)? {
                        Lookup::Recent(key, count) => Some((key, count)),
                        Lookup::Stored(key, count) => {
                            keyed.push((groups[i].1, key));
                            Some((key, count))
                        }
                        Lookup::New => None,
                    };
                }
                let mut parts = PartWriter::new(tx)?;
                let mut insert_trace = tx.prepare_cached(
                    "INSERT INTO traces (trace_key, trace_id, id_hi, id_lo, root_name, has_root, service,
                         start_ns, end_ns, duration_ns, span_count, error_count, capped_spans, written_ns)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9 - ?8, ?10, ?11, ?12, ?13)",
                )?;
                // A row with no spans yet (made for a log record) takes
                // the batch's figures as they are.
                let mut update_trace = tx.prepare_cached(
                    "UPDATE traces SET
                         root_name = CASE
                             WHEN span_count = 0 OR (has_root = 0 AND (?3 = 1 OR ?5 < start_ns)) THEN ?2
                             ELSE root_name END,
                         service = CASE
                             WHEN span_count = 0 OR (has_root = 0 AND (?3 = 1 OR ?5 < start_ns)) THEN ?4
                             ELSE service END,
                         has_root = max(has_root, ?3),
                         start_ns = CASE WHEN span_count = 0 THEN ?5 ELSE min(start_ns, ?5) END,
                         end_ns = CASE WHEN span_count = 0 THEN ?6 ELSE max(end_ns, ?6) END,
                         duration_ns = CASE WHEN span_count = 0 THEN ?6 - ?5
                             ELSE max(end_ns, ?6) - min(start_ns, ?5) END,
                         span_count = span_count + ?7,
                         error_count = error_count + ?8,
                         capped_spans = capped_spans + ?10,
                         written_ns = ?9
                     WHERE trace_key = ?1",
                )?;
                let (mut new_traces, mut new_spans) = (0, 0);
                let mut spans_in = Vec::new();
                for ((hex, id, group), found) in groups.iter().zip(found) {
                    let (key, stored) = match found {
                        Some(f) => f,
                        None => (keys.new_key(tx, known.filter.as_deref_mut(), *id)?, 0),
                    };
                    // A span sent twice is stored once and counted once.
                    let mut seen = if stored > 0 {
                        parts.span_ids(key)?
                    } else {
                        HashSet::new()
                    };
                    let cap = self.store.inner.trace_span_cap.load(Ordering::Relaxed) as i64;
                    let room = (cap - stored).max(0) as usize;
                    let mut agg = TraceAgg::new();
                    let mut capped = 0i64;
                    spans_in.clear();
                    for span in group {
                        let span_id = u64::from_be_bytes(span.span_context.span_id().to_bytes());
                        if !seen.insert(span_id) {
                            continue;
                        }
                        if spans_in.len() >= room {
                            capped += 1;
                            continue;
                        }
                        let s = span_in(span, &self.service, resource_id);
                        agg.add(s.name, s.parent == 0, s.start_ns, s.end_ns, s.status == 2);
                        spans_in.push(s);
                    }
                    if !spans_in.is_empty() {
                        parts.write(key, written, &spans_in)?;
                    }
                    if found.is_none() {
                        if agg.spans == 0 {
                            continue;
                        }
                        keyed.push((*id, key));
                        insert_trace.execute(params![
                            key,
                            hex,
                            id.0,
                            id.1,
                            agg.name,
                            agg.has_root,
                            self.service,
                            agg.start,
                            agg.end,
                            agg.spans,
                            agg.errors,
                            capped,
                            written,
                        ])?;
                        new_traces += 1;
                    } else if agg.spans > 0 || capped > 0 {
                        if stored == 0 && agg.spans > 0 {
                            new_traces += 1;
                        }
                        update_trace.execute(params![
                            key,
                            agg.name,
                            agg.has_root,
                            self.service,
                            agg.start,
                            agg.end,
                            agg.spans,
                            agg.errors,
                            written,
                            capped,
                        ])?;
                    }
                    new_spans += agg.spans;
                    // Every trace this handle wrote spans of, even one a
                    // caller (another process) started.
                    if agg.spans > 0 {
                        written_traces.push(u128::from_be_bytes(
                            group[0].span_context.trace_id().to_bytes(),
                        ));
                    }
                }
                parts.finish()?;
                add_counts(tx, [new_traces, new_spans, 0, 0])?;
                Ok((known.pruned, keys.finish(tx)?, keyed))
            })
            .map_err(OTelSdkError::InternalFailure)?;
        self.store.committed_keys(pruned, last_key, keyed);
        self.store.note_traces(written_traces);
        Ok(())
    }

    fn write_logs(&self, batch: &LogBatch<'_>) -> OTelSdkResult {
        let written = now_ns();
        // Records first, outside the transaction; trace keys are filled in.
        // Sized first: the batch's iterator gives no length, and growing a
        // batch of 8 192 by doubling moved megabytes into fresh pages.
        let mut records: Vec<LogIn<'_>> = Vec::with_capacity(batch.iter().count());
        records.extend(batch.iter().map(|(record, scope)| {
            let time_ns = record
                .timestamp()
                .or(record.observed_timestamp())
                .map(unix_ns)
                .unwrap_or(written);
            LogIn {
                time_ns,
                severity: record.severity_number().map(|s| s as i32).unwrap_or(0),
                text: Cow::Borrowed(
                    record
                        .severity_text()
                        .or(record.severity_number().map(|s| s.name()))
                        .unwrap_or_default(),
                ),
                body: match record.body() {
                    None => Cow::Borrowed(""),
                    Some(AnyValue::String(s)) => Cow::Borrowed(s.as_str()),
                    Some(other) => Cow::Owned(any_json(other).to_string()),
                },
                target: match record.target() {
                    Some(t) if !t.is_empty() => Cow::Borrowed(t.as_ref()),
                    _ => Cow::Borrowed(scope.name()),
                },
                service: &self.service,
                trace: match record.trace_context() {
                    Some(c) => LogTrace::Ids(
                        u128::from_be_bytes(c.trace_id.to_bytes()),
                        u64::from_be_bytes(c.span_id.to_bytes()),
                    ),
                    None => LogTrace::None,
                },
                trace_key: None,
                attributes: LogAttributes::Sdk(
                    record
                        .attributes_iter()
                        .map(|(k, v)| (k.as_str(), v))
                        .collect(),
                ),
            }
        }));
        let (pruned, last_key, keyed) = self
            .store
            .write_batch(Signal::Logs, records.len() as u64, |tx| {
                note_service(tx, &self.service)?;
                // The batch's traces, looked up once each, in index order.
                let mut traces: Vec<(u128, i64)> = records
                    .iter()
                    .filter_map(|r| match r.trace {
                        LogTrace::Ids(trace, _) => Some((trace, r.time_ns)),
                        _ => None,
                    })
                    .collect();
                traces.sort_by_key(|&(trace, _)| id_key_of(trace));
                traces.dedup_by_key(|&mut (trace, _)| trace);
                let mut ids = lock(&self.store.inner.ids);
                let mut known = ids.ready(tx, traces.len())?;
                let mut next = TraceKeys::new(tx)?;
                let mut keys: HashMap<u128, i64> = HashMap::with_capacity(traces.len());
                let mut keyed = Vec::with_capacity(traces.len());
                let mut new = Vec::new();
                for &(trace, time) in &traces {
                    let id = id_key_of(trace);
                    match next.find_key(&known, id)? {
                        Lookup::Recent(key, _) => {
                            keys.insert(trace, key);
                        }
                        Lookup::Stored(key, _) => {
                            keys.insert(trace, key);
                            keyed.push((id, key));
                        }
                        Lookup::New => new.push((trace, time)),
                    }
                }
                // A trace no span of which is stored yet gets a row holding
                // only its key; its spans fill it in (see `write_spans`).
                let mut placeholder = tx.prepare_cached(
                    "INSERT INTO traces (trace_key, trace_id, id_hi, id_lo, root_name, has_root, service,
                         start_ns, end_ns, duration_ns, span_count, error_count, written_ns)
                     VALUES (?1, ?2, ?3, ?4, '', 0, ?5, ?6, ?6, 0, 0, 0, ?7)",
                )?;
                for (trace, time) in new {
                    let id = id_key_of(trace);
                    let key = next.new_key(tx, known.filter.as_deref_mut(), id)?;
                    let hex = format!("{trace:032x}");
                    placeholder.execute(params![key, hex, id.0, id.1, self.service, time, written])?;
                    keys.insert(trace, key);
                    keyed.push((id, key));
                }
                for r in &mut records {
                    if let LogTrace::Ids(trace, _) = r.trace {
                        r.trace_key = keys.get(&trace).copied();
                    }
                }
                let mut chunks = ChunkWriter::new(tx)?;
                for chunk in records.chunks(CHUNK_RECORDS) {
                    chunks.write(chunk, written)?;
                }
                add_counts(tx, [0, 0, records.len() as i64, 0])?;
                Ok((known.pruned, next.finish(tx)?, keyed))
            })
            .map_err(OTelSdkError::InternalFailure)?;
        self.store.committed_keys(pruned, last_key, keyed);
        Ok(())
    }

    fn write_metrics(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let (_, service) = resource_json(metrics.resource());
        let mut rows = Vec::new();
        for scope in metrics.scope_metrics() {
            for metric in scope.metrics() {
                metric_rows(metric, &mut rows);
            }
        }
        self.write_points(&service, &rows)
    }

    /// Writes metric points aggregated elsewhere, for `service`.
    pub fn write_points(&self, service: &str, rows: &[PointRow]) -> OTelSdkResult {
        self.check()?;
        self.store
            .write_batch(Signal::Metrics, rows.len() as u64, |tx| {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO metric_points (time_ns, service, name, description, unit, kind, attributes,
                         value, count, min, max, buckets)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?;
                for r in rows {
                    insert.execute(params![
                        r.time_ns,
                        service,
                        r.name,
                        r.description,
                        r.unit,
                        r.kind,
                        r.attributes,
                        r.value,
                        r.count,
                        r.min,
                        r.max,
                        r.buckets,
                    ])?;
                }
                if !rows.is_empty() {
                    note_service(tx, service)?;
                }
                add_counts(tx, [0, 0, 0, rows.len() as i64])
            })
            .map_err(OTelSdkError::InternalFailure)
    }
}

/// The most spans one trace keeps: more are counted in its row
/// (`capped_spans`), not stored. A client that resends one `traceparent`
/// forever makes one endless trace; this bounds what reading it and
/// finding its duplicates cost, until retention removes its old parts.
pub const MAX_TRACE_SPANS: i64 = 100_000;

/// The index key of a trace id: its two halves as numbers, the first
/// shifted by 2^63 so that its order is the hex text's (prefixes are
/// ranges). Digits missing or not hex count as 0.
pub(crate) fn id_key(hex: &str) -> (i64, i64) {
    let half = |from: usize| {
        let digits = hex.get(from..(from + 16).min(hex.len())).unwrap_or("");
        let v = u64::from_str_radix(digits, 16).unwrap_or(0);
        v.checked_shl(4 * (16 - digits.len() as u32)).unwrap_or(0)
    };
    ((half(0) ^ 1 << 63) as i64, half(16) as i64)
}

/// [`id_key`] of a trace id, from its bytes (no text to parse).
fn trace_id_key(id: TraceId) -> (i64, i64) {
    id_key_of(u128::from_be_bytes(id.to_bytes()))
}

/// [`trace_id_key`] of an id as a number.
fn id_key_of(id: u128) -> (i64, i64) {
    (((id >> 64) as u64 ^ 1 << 63) as i64, id as u64 as i64)
}

/// The write time of a batch: now, or the last part's if the clock went
/// back, so that write times never decrease along `part_id` (retention
/// bisects on that).
fn write_time(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<i64> {
    let last: Option<i64> = tx
        .prepare_cached("SELECT written_ns FROM parts ORDER BY part_id DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    Ok(now_ns().max(last.unwrap_or(i64::MIN)))
}

fn note_service(tx: &rusqlite::Transaction<'_>, service: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT OR IGNORE INTO services (service) VALUES (?1)")?
        .execute([service])?;
    Ok(())
}

/// Adds to the counts the UI shows (traces, spans, log records, points).
pub(crate) fn add_counts(tx: &rusqlite::Transaction<'_>, add: [i64; 4]) -> rusqlite::Result<()> {
    if add != [0; 4] {
        tx.prepare_cached(
            "UPDATE counts SET traces = traces + ?1, spans = spans + ?2, logs = logs + ?3,
                 metric_points = metric_points + ?4",
        )?
        .execute(add)?;
    }
    Ok(())
}

/// A span of the SDK as the codec takes it.
fn span_in<'a>(span: &'a SpanData, service: &'a str, resource_id: i64) -> SpanIn<'a> {
    let start = unix_ns(span.start_time);
    let (status, message) = match &span.status {
        Status::Unset => (0, ""),
        Status::Ok => (1, ""),
        Status::Error { description } => (2, description.as_ref()),
    };
    SpanIn {
        span_id: u64::from_be_bytes(span.span_context.span_id().to_bytes()),
        parent: u64::from_be_bytes(span.parent_span_id.to_bytes()),
        name: span.name.as_ref(),
        service,
        scope: span.instrumentation_scope.name(),
        kind: match span.span_kind {
            SpanKind::Internal => 0,
            SpanKind::Server => 1,
            SpanKind::Client => 2,
            SpanKind::Producer => 3,
            SpanKind::Consumer => 4,
        },
        status,
        message,
        start_ns: start,
        end_ns: unix_ns(span.end_time).max(start),
        attributes: Attributes::Sdk(&span.attributes),
        events: Events::Sdk(&span.events),
        links: Links::Sdk(&span.links),
        dropped: [
            span.dropped_attributes_count,
            span.events.dropped_count,
            span.links.dropped_count,
        ],
        resource_id,
    }
}

/// Where a trace's row was found: its key and (for spans) its stored span
/// count.
enum Lookup {
    /// Among the recent keys.
    Recent(i64, i64),
    /// In the file.
    Stored(i64, i64),
    New,
}

/// The keys of the traces one transaction writes: a stored trace's own, or
/// a new one handed out after the highest ever handed out (the immediate
/// transaction keeps other writers out until it commits, so ids stay
/// unique).
struct TraceKeys<'tx> {
    finder: Finder<'tx>,
    next: Option<i64>,
}

impl<'tx> TraceKeys<'tx> {
    fn new(tx: &'tx rusqlite::Transaction<'_>) -> rusqlite::Result<Self> {
        Ok(TraceKeys {
            finder: Finder::new(tx)?,
            next: None,
        })
    }

    /// The key of trace `hex` (index key `id`) and its stored span count,
    /// if it has a row. The filter, when there is one, answers for most
    /// new traces.
    fn find(&mut self, known: &Known<'_>, id: (i64, i64), hex: &str) -> rusqlite::Result<Lookup> {
        if let Some(key) = known.recent.get(id)
            && let Some(count) = self.finder.span_count(key)?
        {
            return Ok(Lookup::Recent(key, count));
        }
        if known.filter.as_deref().is_some_and(|f| !f.may_hold(id)) {
            return Ok(Lookup::New);
        }
        Ok(match self.finder.find(id, hex)? {
            Some((key, count)) => Lookup::Stored(key, count),
            None => Lookup::New,
        })
    }

    /// The key of the trace with index key `id`, if it has a row: read
    /// from the id index alone (a writer's ids are well-formed, so the
    /// index key is the id).
    fn find_key(&mut self, known: &Known<'_>, id: (i64, i64)) -> rusqlite::Result<Lookup> {
        if let Some(key) = known.recent.get(id) {
            return Ok(Lookup::Recent(key, 0));
        }
        if known.filter.as_deref().is_some_and(|f| !f.may_hold(id)) {
            return Ok(Lookup::New);
        }
        Ok(match self.finder.find_key(id)? {
            Some(key) => Lookup::Stored(key, 0),
            None => Lookup::New,
        })
    }

    /// A key for new trace `id` (the caller writes its row in this
    /// transaction).
    fn new_key(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        filter: Option<&mut Filter>,
        id: (i64, i64),
    ) -> rusqlite::Result<i64> {
        let key = match self.next {
            Some(key) => key,
            None => tx
                .prepare_cached(
                    "SELECT max((SELECT coalesce(max(trace_key), 0) FROM traces),
                         coalesce((SELECT max(last_key) FROM counts), 0)) + 1",
                )?
                .query_row([], |r| r.get(0))?,
        };
        self.next = Some(key + 1);
        if let Some(filter) = filter {
            filter.insert(id);
        }
        Ok(key)
    }

    /// Records the keys handed out; returns the last, if any.
    fn finish(self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<Option<i64>> {
        let last = self.next.map(|next| next - 1);
        if let Some(last) = last {
            tx.prepare_cached("UPDATE counts SET last_key = max(last_key, ?1)")?
                .execute([last])?;
        }
        Ok(last)
    }
}

/// Writes parts (the spans of one trace from one batch) and the span name
/// entries of their traces.
pub(crate) struct PartWriter<'tx> {
    tx: &'tx rusqlite::Transaction<'tx>,
    insert: rusqlite::CachedStatement<'tx>,
    names: HashMap<String, i64>,
    /// (name id, trace key): written at the end, a row per name.
    entries: Vec<(i64, i64)>,
    last_part: i64,
}

impl<'tx> PartWriter<'tx> {
    pub(crate) fn new(tx: &'tx rusqlite::Transaction<'tx>) -> rusqlite::Result<Self> {
        Ok(PartWriter {
            tx,
            insert: tx.prepare_cached(
                "INSERT INTO parts (trace_key, written_ns, span_count, error_count, start_ns, end_ns,
                     span_ids, names, spans)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?,
            names: HashMap::new(),
            entries: Vec::new(),
            last_part: 0,
        })
    }

    /// The span ids stored for trace `key`.
    fn span_ids(&self, key: i64) -> rusqlite::Result<HashSet<u64>> {
        let mut ids = HashSet::new();
        let mut stmt = self
            .tx
            .prepare_cached("SELECT span_ids FROM parts WHERE trace_key = ?1")?;
        let mut rows = stmt.query([key])?;
        while let Some(row) = rows.next()? {
            let blob = row.get_ref(0)?.as_blob().unwrap_or_default();
            ids.extend(
                blob.chunks_exact(8)
                    .map(|b| u64::from_be_bytes(b.try_into().unwrap_or_default())),
            );
        }
        Ok(ids)
    }

    /// Writes `spans` (of trace `key`, not empty) as one part.
    pub(crate) fn write(
        &mut self,
        key: i64,
        written: i64,
        spans: &[SpanIn<'_>],
    ) -> rusqlite::Result<()> {
        let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let end = spans.iter().map(|s| s.end_ns).max().unwrap_or(0);
        let errors = spans.iter().filter(|s| s.status == 2).count() as i64;
        let ids: Vec<u8> = spans.iter().flat_map(|s| s.span_id.to_be_bytes()).collect();
        let first = self.entries.len();
        for s in spans {
            let id = match self.names.get(s.name) {
                Some(&id) => id,
                None => {
                    let id = name_id(self.tx, s.name)?;
                    self.names.insert(s.name.to_string(), id);
                    id
                }
            };
            if !self.entries[first..].iter().any(|&(n, _)| n == id) {
                self.entries.push((id, key));
            }
        }
        let mut names = String::from(",");
        for &(n, _) in &self.entries[first..] {
            names.push_str(&n.to_string());
            names.push(',');
        }
        self.insert.execute(params![
            key,
            written,
            spans.len() as i64,
            errors,
            start,
            end,
            ids,
            names,
            codec::encode(spans, start),
        ])?;
        self.last_part = self.tx.last_insert_rowid();
        Ok(())
    }

    /// Writes the span name lists: one row per name.
    pub(crate) fn finish(mut self) -> rusqlite::Result<()> {
        self.entries.sort_unstable();
        self.entries.dedup();
        let mut insert = self.tx.prepare_cached(
            "INSERT INTO name_postings (name_id, last_part, keys) VALUES (?1, ?2, ?3)",
        )?;
        for group in self.entries.chunk_by(|a, b| a.0 == b.0) {
            let keys: Vec<u8> = group.iter().flat_map(|&(_, k)| k.to_be_bytes()).collect();
            insert.execute(params![group[0].0, self.last_part, keys])?;
        }
        Ok(())
    }
}

/// Log records in a chunk at most (one batch's records in arrival order,
/// one service's). Queries decode whole chunks, so a chunk stays small
/// enough to decode in a few tens of microseconds.
pub(crate) const CHUNK_RECORDS: usize = 256;

/// Writes chunks of log records (`log_chunks`) and their trace entries.
pub(crate) struct ChunkWriter<'tx> {
    tx: &'tx rusqlite::Transaction<'tx>,
    insert: rusqlite::CachedStatement<'tx>,
    trace: rusqlite::CachedStatement<'tx>,
}

impl<'tx> ChunkWriter<'tx> {
    pub(crate) fn new(tx: &'tx rusqlite::Transaction<'tx>) -> rusqlite::Result<Self> {
        Ok(ChunkWriter {
            tx,
            insert: tx.prepare_cached(
                "INSERT INTO log_chunks (written_ns, min_time, max_time, max_severity, count, service,
                     trace_keys, records)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?,
            trace: tx.prepare_cached("INSERT INTO log_traces (trace_key, chunk_id) VALUES (?1, ?2)")?,
        })
    }

    /// Writes `records` (not empty, one service's) as one chunk.
    pub(crate) fn write(&mut self, records: &[LogIn<'_>], written: i64) -> rusqlite::Result<()> {
        let min = records.iter().map(|r| r.time_ns).min().unwrap_or(0);
        let max = records.iter().map(|r| r.time_ns).max().unwrap_or(0);
        let severity = records.iter().map(|r| r.severity).max().unwrap_or(0);
        let mut keys: Vec<i64> = records.iter().filter_map(|r| r.trace_key).collect();
        keys.sort_unstable();
        keys.dedup();
        let blob: Vec<u8> = keys.iter().flat_map(|k| k.to_be_bytes()).collect();
        self.insert.execute(params![
            written,
            min,
            max,
            severity,
            records.len() as i64,
            records.first().map_or("", |r| r.service),
            blob,
            codec::encode_logs(records, min),
        ])?;
        let chunk = self.tx.last_insert_rowid();
        for key in keys {
            self.trace.execute([key, chunk])?;
        }
        Ok(())
    }
}

/// The id of span name `name`, made if new.
fn name_id(tx: &rusqlite::Transaction<'_>, name: &str) -> rusqlite::Result<i64> {
    if let Some(id) = tx
        .prepare_cached("SELECT name_id FROM span_names WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?
    {
        return Ok(id);
    }
    tx.prepare_cached("INSERT INTO span_names (name) VALUES (?1)")?
        .execute([name])?;
    Ok(tx.last_insert_rowid())
}

impl fmt::Debug for StoreExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreExporter")
            .field("path", &self.store.path())
            .finish_non_exhaustive()
    }
}

impl Clone for StoreExporter {
    fn clone(&self) -> Self {
        StoreExporter {
            store: self.store.clone(),
            resource: self.resource.clone(),
            service: self.service.clone(),
            is_shutdown: AtomicBool::new(false),
        }
    }
}

impl SpanExporter for StoreExporter {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        std::future::ready(self.export_spans(&batch))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.is_shutdown.store(true, Ordering::Release);
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.set_resource_inner(resource);
    }
}

impl LogExporter for StoreExporter {
    fn export(&self, batch: LogBatch<'_>) -> impl Future<Output = OTelSdkResult> + Send {
        std::future::ready(self.check().and_then(|()| self.write_logs(&batch)))
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.is_shutdown.store(true, Ordering::Release);
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.set_resource_inner(resource);
    }
}

impl PushMetricExporter for StoreExporter {
    fn export(&self, metrics: &ResourceMetrics) -> impl Future<Output = OTelSdkResult> + Send {
        std::future::ready(self.check().and_then(|()| self.write_metrics(metrics)))
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.is_shutdown.store(true, Ordering::Release);
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// What one batch adds to a trace's row.
struct TraceAgg<'a> {
    /// The root span's name, or the earliest span's until the root comes.
    name: &'a str,
    has_root: bool,
    start: i64,
    end: i64,
    spans: i64,
    errors: i64,
}

impl<'a> TraceAgg<'a> {
    fn new() -> Self {
        TraceAgg {
            name: "",
            has_root: false,
            start: i64::MAX,
            end: i64::MIN,
            spans: 0,
            errors: 0,
        }
    }

    fn add(&mut self, name: &'a str, is_root: bool, start: i64, end: i64, error: bool) {
        if !self.has_root && (is_root || start < self.start) {
            self.name = name;
        }
        self.has_root |= is_root;
        self.start = self.start.min(start);
        self.end = self.end.max(end);
        self.spans += 1;
        self.errors += i64::from(error);
    }
}

/// One metric data point as the store keeps it. Points the SDK aggregated
/// are made from its data; a producer that aggregated elsewhere (a
/// `wasi:otel` guest) writes its own with [`StoreExporter::write_points`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PointRow {
    pub time_ns: i64,
    pub name: String,
    pub description: String,
    pub unit: String,
    /// `counter`, `updowncounter`, `gauge`, `histogram` or `exp_histogram`.
    pub kind: &'static str,
    /// The point's attributes as the text of a JSON object.
    pub attributes: String,
    /// The value; a histogram's sum.
    pub value: f64,
    pub count: Option<i64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// A histogram's `{"bounds": [..], "counts": [..]}`.
    pub buckets: Option<String>,
}

/// Conversion of the SDK's three number types to what is stored.
trait AsF64: Copy {
    fn as_f64(self) -> f64;
}

impl AsF64 for f64 {
    fn as_f64(self) -> f64 {
        self
    }
}

impl AsF64 for u64 {
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl AsF64 for i64 {
    fn as_f64(self) -> f64 {
        self as f64
    }
}

fn metric_rows(metric: &Metric, rows: &mut Vec<PointRow>) {
    match metric.data() {
        AggregatedMetrics::F64(data) => data_rows(metric, data, rows),
        AggregatedMetrics::U64(data) => data_rows(metric, data, rows),
        AggregatedMetrics::I64(data) => data_rows(metric, data, rows),
    }
}

fn data_rows<T: AsF64>(metric: &Metric, data: &MetricData<T>, rows: &mut Vec<PointRow>) {
    let row = |time, kind, attrs: &mut dyn Iterator<Item = &KeyValue>, value: f64| PointRow {
        time_ns: unix_ns(time),
        name: metric.name().to_string(),
        description: metric.description().to_string(),
        unit: metric.unit().to_string(),
        kind,
        attributes: attrs_json(attrs).to_string(),
        value,
        count: None,
        min: None,
        max: None,
        buckets: None,
    };
    match data {
        MetricData::Gauge(g) => {
            for dp in g.data_points() {
                rows.push(row(
                    g.time(),
                    "gauge",
                    &mut dp.attributes(),
                    dp.value().as_f64(),
                ));
            }
        }
        MetricData::Sum(s) => {
            let kind = if s.is_monotonic() {
                "counter"
            } else {
                "updowncounter"
            };
            for dp in s.data_points() {
                rows.push(row(
                    s.time(),
                    kind,
                    &mut dp.attributes(),
                    dp.value().as_f64(),
                ));
            }
        }
        MetricData::Histogram(h) => {
            for dp in h.data_points() {
                let mut r = row(
                    h.time(),
                    "histogram",
                    &mut dp.attributes(),
                    dp.sum().as_f64(),
                );
                r.count = Some(dp.count() as i64);
                r.min = dp.min().map(AsF64::as_f64);
                r.max = dp.max().map(AsF64::as_f64);
                let bounds: Vec<f64> = dp.bounds().collect();
                let counts: Vec<u64> = dp.bucket_counts().collect();
                r.buckets = Some(json!({"bounds": bounds, "counts": counts}).to_string());
                rows.push(r);
            }
        }
        MetricData::ExponentialHistogram(h) => {
            for dp in h.data_points() {
                let mut r = row(
                    h.time(),
                    "exp_histogram",
                    &mut dp.attributes(),
                    dp.sum().as_f64(),
                );
                r.count = Some(dp.count() as i64);
                r.min = dp.min().map(AsF64::as_f64);
                r.max = dp.max().map(AsF64::as_f64);
                rows.push(r);
            }
        }
    }
}

/// The resource as a JSON object, and its `service.name`.
fn resource_json(resource: &Resource) -> (Json, String) {
    let mut map = Map::new();
    let mut service = None;
    for (k, v) in resource.iter() {
        if k.as_str() == "service.name" {
            service = Some(v.as_str().into_owned());
        }
        map.insert(k.as_str().to_string(), value_json(v));
    }
    (
        Json::Object(map),
        service.unwrap_or_else(|| "unknown_service".into()),
    )
}

/// Attributes as a JSON object with sorted keys (the last value of a
/// repeated key wins, as OpenTelemetry specifies).
pub(crate) fn attrs_json<'a>(attrs: impl IntoIterator<Item = &'a KeyValue>) -> Json {
    let map: BTreeMap<String, Json> = attrs
        .into_iter()
        .map(|kv| (kv.key.as_str().to_string(), value_json(&kv.value)))
        .collect();
    Json::Object(map.into_iter().collect())
}

fn finite(v: f64) -> Json {
    // JSON has no NaN or infinities; keep them readable as strings.
    serde_json::Number::from_f64(v)
        .map(Json::Number)
        .unwrap_or_else(|| Json::String(v.to_string()))
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => Json::Bool(*b),
        Value::I64(i) => json!(i),
        Value::F64(f) => finite(*f),
        Value::String(s) => Json::String(s.as_str().to_string()),
        Value::Array(Array::Bool(a)) => json!(a),
        Value::Array(Array::I64(a)) => json!(a),
        Value::Array(Array::F64(a)) => Json::Array(a.iter().map(|f| finite(*f)).collect()),
        Value::Array(Array::String(a)) => {
            Json::Array(a.iter().map(|s| Json::String(s.as_str().into())).collect())
        }
        other => Json::String(other.to_string()),
    }
}

pub(crate) fn any_json(v: &AnyValue) -> Json {
    match v {
        AnyValue::Int(i) => json!(i),
        AnyValue::Double(f) => finite(*f),
        AnyValue::String(s) => Json::String(s.as_str().to_string()),
        AnyValue::Boolean(b) => Json::Bool(*b),
        AnyValue::Bytes(b) => Json::String(b.iter().map(|b| format!("{b:02x}")).collect()),
        AnyValue::ListAny(l) => Json::Array(l.iter().map(any_json).collect()),
        AnyValue::Map(m) => {
            let map: BTreeMap<String, Json> = m
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), any_json(v)))
                .collect();
            Json::Object(map.into_iter().collect())
        }
        other => Json::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key made from an id's bytes is the key made from its text (the
    /// one queries and the migration make), across the sign bit of both
    /// halves.
    #[test]
    fn trace_id_keys_from_bytes_match_keys_from_text() {
        for id in [
            0u128,
            1,
            u128::MAX,
            0x8000_0000_0000_0000_7fff_ffff_ffff_ffff,
            0x7fff_ffff_ffff_ffff_8000_0000_0000_0000,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            let id = TraceId::from(id);
            assert_eq!(trace_id_key(id), id_key(&id.to_string()), "{id}");
        }
    }
}

//! The compact encodings of the spans of one trace written in one batch (a
//! row of `parts`) and of a batch's log records (a row of `log_chunks`). SQLite spends most of an insert on the row and its
//! index entries, not on its bytes: one row per trace and batch, with the
//! spans packed in a blob, costs a fraction of a row (and two index
//! entries) per span. Queries never look inside: what they filter on is in
//! the `traces` row.
//!
//! Layout of version 2 (integers are LEB128 varints; signed ones
//! zigzag-encoded; a string is a length and UTF-8 bytes):
//!
//! ```text
//! version (2)   strings: count, then each string   spans: count, then each span:
//!   span id (8 bytes, big endian)  parent id (8 bytes, 0: none)
//!   name, service, scope: index into the strings
//!   kind (1 byte)  status (1 byte)  status message: string index
//!   start - the part's start (signed)  duration
//!   attributes: a value (an object)
//!   events: count, then each: name (string index), time - the span's start
//!     (signed), attributes (a value)
//!   links: count, then each: trace id (16 bytes), span id (8 bytes),
//!     attributes (a value)
//!   dropped attributes, events, links  resource id
//! value: a tag byte, then
//!   0 null | 1 false | 2 true | 3 integer (signed) | 4 float (8 bytes, little
//!   endian) | 5 string index | 6 string | 7 array: count, values |
//!   8 object: count, then (key: string index, value) pairs
//! ```
//!
//! Names, services, scopes, attribute keys and short text values repeat
//! within a batch, so they are written once per part. Attributes are written from
//! the SDK's values as they are, without making JSON (version 1 held them
//! as JSON text, the dearest part of encoding a span); reading makes the
//! JSON the queries return. Version 1 parts (schemas 4 and 5) are still
//! read.
//!
//! Log records are kept many to a row of `log_chunks` (schema 6), for the
//! same reason, in the same way; a log search looks at each record's body
//! before it makes the record ([`decode_logs`]):
//!
//! ```text
//! version (1)   strings: count, then each string   records: count, then each:
//!   time - the chunk's first (unsigned)  severity number (signed)
//!   severity text: string index  body: string  target, service: string index
//!   trace: 0 none | 1 trace id (16 bytes), span id (8 bytes) | 2 both as text
//!   trace key (0: none)  attributes: a value (an object)
//! ```

use std::borrow::Cow;
use std::collections::HashMap;

use opentelemetry::logs::AnyValue;
use opentelemetry::trace::{Event as SdkEvent, Link as SdkLink};
use opentelemetry::{Array, KeyValue, Value};
use serde_json::{Map, Value as Json};

use crate::query::{Event, Link, LogRecord};
use crate::unix_ns;

const VERSION: u8 = 2;
/// Parts written by schemas 4 and 5: attributes, events and links as JSON.
const VERSION_JSON: u8 = 1;

/// Nesting deeper than this is refused when reading (values the store
/// writes are at most a few levels deep).
const MAX_DEPTH: usize = 32;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const FLOAT: u8 = 4;
const STRING: u8 = 5;
const TEXT: u8 = 6;
const ARRAY: u8 = 7;
const OBJECT: u8 = 8;

/// A span as it is encoded: fields borrowed from the SDK's data (or, in a
/// migration, from stored values).
pub(crate) struct SpanIn<'a> {
    pub span_id: u64,
    pub parent: u64,
    pub name: &'a str,
    pub service: &'a str,
    pub scope: &'a str,
    pub kind: u8,
    pub status: u8,
    pub message: &'a str,
    pub start_ns: i64,
    pub end_ns: i64,
    pub attributes: Attributes<'a>,
    pub events: Events<'a>,
    pub links: Links<'a>,
    pub dropped: [u32; 3],
    pub resource_id: i64,
}

/// Attributes to encode.
#[derive(Clone, Copy)]
pub(crate) enum Attributes<'a> {
    Sdk(&'a [KeyValue]),
    /// A JSON object (a migrated span).
    Json(&'a Json),
}

/// Events to encode.
#[derive(Clone, Copy)]
pub(crate) enum Events<'a> {
    Sdk(&'a [SdkEvent]),
    Stored(&'a [Event]),
}

/// Links to encode.
#[derive(Clone, Copy)]
pub(crate) enum Links<'a> {
    Sdk(&'a [SdkLink]),
    Stored(&'a [Link]),
}

/// A decoded span, before the trace id and resource are put back.
#[derive(Debug)]
pub(crate) struct SpanOut {
    pub span_id: u64,
    pub parent: u64,
    pub name: String,
    pub service: String,
    pub scope: String,
    pub kind: u8,
    pub status: u8,
    pub message: String,
    pub start_ns: i64,
    pub end_ns: i64,
    pub attributes: Json,
    pub events: Vec<Event>,
    pub links: Vec<Link>,
    pub dropped: [u32; 3],
    pub resource_id: i64,
}

pub(crate) const KINDS: [&str; 5] = ["internal", "server", "client", "producer", "consumer"];
pub(crate) const STATUSES: [&str; 3] = ["unset", "ok", "error"];

/// Writes a part: the string table is written last but read first.
struct Encoder<'a> {
    strings: Vec<&'a str>,
    index: HashMap<&'a str, u64>,
    body: Vec<u8>,
}

impl<'a> Encoder<'a> {
    /// A part holds a few distinct strings: a scan finds them faster than
    /// hashing, up to this many.
    const SCANNED: usize = 48;
    /// String values up to this many bytes are interned.
    const SHORT: usize = 24;

    fn intern(&mut self, s: &'a str) -> u64 {
        if self.strings.len() <= Self::SCANNED {
            // The same text is often the same borrowed string (a span's
            // service, scope and static names): compared by address first.
            if let Some(i) = self
                .strings
                .iter()
                .position(|&t| std::ptr::eq(t, s) || t == s)
            {
                return i as u64;
            }
            self.strings.push(s);
            if self.strings.len() > Self::SCANNED {
                let index = &mut self.index;
                index.extend(self.strings.iter().enumerate().map(|(i, &t)| (t, i as u64)));
            }
            return self.strings.len() as u64 - 1;
        }
        let strings = &mut self.strings;
        *self.index.entry(s).or_insert_with(|| {
            strings.push(s);
            strings.len() as u64 - 1
        })
    }

    fn string(&mut self, s: &'a str) {
        let i = self.intern(s);
        put_uint(&mut self.body, i);
    }

    fn float(&mut self, f: f64) {
        self.body.push(FLOAT);
        self.body.extend_from_slice(&f.to_le_bytes());
    }

    fn int(&mut self, i: i64) {
        self.body.push(INT);
        put_int(&mut self.body, i);
    }

    fn value(&mut self, v: &'a Value) {
        match v {
            Value::Bool(b) => self.body.push(if *b { TRUE } else { FALSE }),
            Value::I64(i) => self.int(*i),
            Value::F64(f) => self.float(*f),
            Value::String(s) => self.string_value(s.as_str()),
            Value::Array(Array::Bool(a)) => {
                self.body.push(ARRAY);
                put_uint(&mut self.body, a.len() as u64);
                self.body
                    .extend(a.iter().map(|&b| if b { TRUE } else { FALSE }));
            }
            Value::Array(Array::I64(a)) => {
                self.body.push(ARRAY);
                put_uint(&mut self.body, a.len() as u64);
                a.iter().for_each(|&i| self.int(i));
            }
            Value::Array(Array::F64(a)) => {
                self.body.push(ARRAY);
                put_uint(&mut self.body, a.len() as u64);
                a.iter().for_each(|&f| self.float(f));
            }
            Value::Array(Array::String(a)) => {
                self.body.push(ARRAY);
                put_uint(&mut self.body, a.len() as u64);
                a.iter().for_each(|s| self.string_value(s.as_str()));
            }
            // Anything newer: its text.
            other => self.text(&other.to_string()),
        }
    }

    /// A string value: a short one interned (routes, methods, status
    /// words repeat within a part), a long one written in place (URLs, user
    /// agents and queries seldom repeat, and interning each cost more than
    /// it saved).
    fn string_value(&mut self, s: &'a str) {
        if s.len() <= Self::SHORT {
            self.body.push(STRING);
            self.string(s);
        } else {
            self.text(s);
        }
    }

    /// Text written in place.
    fn text(&mut self, s: &str) {
        self.body.push(TEXT);
        put_str(&mut self.body, s);
    }

    /// Attributes as an object: repeated keys are kept, the reader keeps
    /// the last (as the JSON object of version 1 did).
    fn key_values(&mut self, attrs: &'a [KeyValue]) {
        self.body.push(OBJECT);
        put_uint(&mut self.body, attrs.len() as u64);
        for kv in attrs {
            self.string(kv.key.as_str());
            self.value(&kv.value);
        }
    }

    /// A JSON value at nesting `depth` (see [`Encoder::too_deep`]).
    fn json(&mut self, v: &'a Json, depth: usize) {
        if self.too_deep(depth, matches!(v, Json::Array(_) | Json::Object(_))) {
            return;
        }
        match v {
            Json::Null => self.body.push(NULL),
            Json::Bool(b) => self.body.push(if *b { TRUE } else { FALSE }),
            Json::Number(n) => match n.as_i64() {
                Some(i) => self.int(i),
                None => self.float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => self.string_value(s),
            Json::Array(a) => {
                self.body.push(ARRAY);
                put_uint(&mut self.body, a.len() as u64);
                a.iter().for_each(|v| self.json(v, depth + 1));
            }
            Json::Object(o) => {
                self.body.push(OBJECT);
                put_uint(&mut self.body, o.len() as u64);
                for (k, v) in o {
                    self.string(k);
                    self.json(v, depth + 1);
                }
            }
        }
    }

    /// Whether a value at nesting `depth` (0: an attribute set) is a list
    /// or map deeper than a reader takes: then it is written as text
    /// saying so, so every part and chunk written can be read back.
    fn too_deep(&mut self, depth: usize, container: bool) -> bool {
        let too_deep = container && depth >= MAX_DEPTH;
        if too_deep {
            self.text("(nested too deep)");
        }
        too_deep
    }

    /// A log attribute value at nesting `depth`, as `ingest::any_json`
    /// shows it.
    fn any_value(&mut self, v: &'a AnyValue, depth: usize) {
        if self.too_deep(depth, matches!(v, AnyValue::ListAny(_) | AnyValue::Map(_))) {
            return;
        }
        match v {
            AnyValue::Int(i) => self.int(*i),
            AnyValue::Double(f) => self.float(*f),
            AnyValue::String(s) => self.text(s.as_str()),
            AnyValue::Boolean(b) => self.body.push(if *b { TRUE } else { FALSE }),
            AnyValue::Bytes(b) => {
                let hex: String = b.iter().map(|b| format!("{b:02x}")).collect();
                self.text(&hex);
            }
            AnyValue::ListAny(l) => {
                self.body.push(ARRAY);
                put_uint(&mut self.body, l.len() as u64);
                l.iter().for_each(|v| self.any_value(v, depth + 1));
            }
            AnyValue::Map(m) => {
                self.body.push(OBJECT);
                put_uint(&mut self.body, m.len() as u64);
                for (k, v) in m.iter() {
                    self.string(k.as_str());
                    self.any_value(v, depth + 1);
                }
            }
            other => self.text(&format!("{other:?}")),
        }
    }

    fn new(capacity: usize) -> Self {
        Encoder {
            strings: Vec::new(),
            index: HashMap::new(),
            body: Vec::with_capacity(capacity),
        }
    }

    /// The strings, then the body.
    fn finish(self, version: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 16 * self.strings.len() + 8);
        out.push(version);
        put_uint(&mut out, self.strings.len() as u64);
        for s in &self.strings {
            put_str(&mut out, s);
        }
        out.extend_from_slice(&self.body);
        out
    }

    fn attributes(&mut self, attrs: Attributes<'a>) {
        match attrs {
            Attributes::Sdk(kv) => self.key_values(kv),
            Attributes::Json(j @ Json::Object(_)) => self.json(j, 0),
            // Not an object (damaged data migrated): kept under a key.
            Attributes::Json(other) => {
                self.body.push(OBJECT);
                put_uint(&mut self.body, 1);
                self.string("value");
                self.json(other, 1);
            }
        }
    }

    fn span(&mut self, s: &SpanIn<'a>, base_ns: i64) {
        self.body.extend_from_slice(&s.span_id.to_be_bytes());
        self.body.extend_from_slice(&s.parent.to_be_bytes());
        for text in [s.name, s.service, s.scope] {
            self.string(text);
        }
        self.body.push(s.kind);
        self.body.push(s.status);
        self.string(s.message);
        put_int(&mut self.body, s.start_ns.wrapping_sub(base_ns));
        put_uint(&mut self.body, s.end_ns.wrapping_sub(s.start_ns) as u64);
        self.attributes(s.attributes);
        match s.events {
            Events::Sdk(events) => {
                put_uint(&mut self.body, events.len() as u64);
                for e in events {
                    self.string(e.name.as_ref());
                    put_int(
                        &mut self.body,
                        unix_ns(e.timestamp).wrapping_sub(s.start_ns),
                    );
                    self.key_values(&e.attributes);
                }
            }
            Events::Stored(events) => {
                put_uint(&mut self.body, events.len() as u64);
                for e in events {
                    self.string(&e.name);
                    put_int(&mut self.body, e.time_ns.wrapping_sub(s.start_ns));
                    self.attributes(Attributes::Json(&e.attributes));
                }
            }
        }
        match s.links {
            Links::Sdk(links) => {
                put_uint(&mut self.body, links.len() as u64);
                for l in links {
                    self.body
                        .extend_from_slice(&l.span_context.trace_id().to_bytes());
                    self.body
                        .extend_from_slice(&l.span_context.span_id().to_bytes());
                    self.key_values(&l.attributes);
                }
            }
            Links::Stored(links) => {
                put_uint(&mut self.body, links.len() as u64);
                for l in links {
                    let hex = |s: &str| u128::from_str_radix(s, 16).unwrap_or(0);
                    self.body.extend_from_slice(&hex(&l.trace_id).to_be_bytes());
                    self.body
                        .extend_from_slice(&(hex(&l.span_id) as u64).to_be_bytes());
                    self.attributes(Attributes::Json(&l.attributes));
                }
            }
        }
        for d in s.dropped {
            put_uint(&mut self.body, d.into());
        }
        put_int(&mut self.body, s.resource_id);
    }
}

/// Encodes `spans` (all of one trace) relative to `base_ns`.
pub(crate) fn encode<'a>(spans: &[SpanIn<'a>], base_ns: i64) -> Vec<u8> {
    let mut enc = Encoder::new(spans.len() * 80);
    put_uint(&mut enc.body, spans.len() as u64);
    for s in spans {
        enc.span(s, base_ns);
    }
    enc.finish(VERSION)
}

/// Decodes a part; `None` if the bytes are not a part this version or an
/// earlier one wrote.
pub(crate) fn decode(bytes: &[u8], base_ns: i64) -> Option<Vec<SpanOut>> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.byte()?;
    if version != VERSION && version != VERSION_JSON {
        return None;
    }
    let n = r.uint()? as usize;
    let mut strings = Vec::with_capacity(n.min(bytes.len()));
    for _ in 0..n {
        strings.push(r.str()?);
    }
    let table = Table(&strings);
    let n = r.uint()? as usize;
    let mut spans = Vec::with_capacity(n.min(bytes.len() / 20));
    for _ in 0..n {
        let span_id = r.u64()?;
        let parent = r.u64()?;
        let name = table.owned(r.uint()?)?;
        let service = table.owned(r.uint()?)?;
        let scope = table.owned(r.uint()?)?;
        let kind = r.byte()?;
        let status = r.byte()?;
        let message = table.owned(r.uint()?)?;
        let start_ns = base_ns.wrapping_add(r.int()?);
        let end_ns = start_ns.wrapping_add(r.uint()? as i64);
        let (attributes, events, links) = if version == VERSION_JSON {
            let attributes = r.str()?;
            let (events, links) = (r.str()?, r.str()?);
            (
                serde_json::from_str(attributes)
                    .unwrap_or_else(|_| Json::String(attributes.to_string())),
                serde_json::from_str(events).unwrap_or_default(),
                serde_json::from_str(links).unwrap_or_default(),
            )
        } else {
            let attributes = r.value(&table, 0)?;
            let n = r.uint()? as usize;
            let mut events = Vec::with_capacity(n.min(bytes.len()));
            for _ in 0..n {
                events.push(Event {
                    name: table.owned(r.uint()?)?,
                    time_ns: start_ns.wrapping_add(r.int()?),
                    attributes: r.value(&table, 0)?,
                });
            }
            let n = r.uint()? as usize;
            let mut links = Vec::with_capacity(n.min(bytes.len()));
            for _ in 0..n {
                let trace_id = r.u128()?;
                let span_id = r.u64()?;
                links.push(Link {
                    trace_id: format!("{trace_id:032x}"),
                    span_id: format!("{span_id:016x}"),
                    attributes: r.value(&table, 0)?,
                });
            }
            (attributes, events, links)
        };
        let dropped = [r.uint()? as u32, r.uint()? as u32, r.uint()? as u32];
        let resource_id = r.int()?;
        spans.push(SpanOut {
            span_id,
            parent,
            name,
            service,
            scope,
            kind,
            status,
            message,
            start_ns,
            end_ns,
            attributes,
            events,
            links,
            dropped,
            resource_id,
        });
    }
    Some(spans)
}

/// The version of a log chunk's encoding.
const LOG_VERSION: u8 = 1;

/// A log record as a chunk takes it.
pub(crate) struct LogIn<'a> {
    pub time_ns: i64,
    pub severity: i32,
    pub text: Cow<'a, str>,
    pub body: Cow<'a, str>,
    pub target: Cow<'a, str>,
    pub service: &'a str,
    pub trace: LogTrace<'a>,
    /// Its trace's row, if it has a trace.
    pub trace_key: Option<i64>,
    pub attributes: LogAttributes<'a>,
}

/// The trace and span a log record was emitted in.
pub(crate) enum LogTrace<'a> {
    None,
    Ids(u128, u64),
    /// As a migrated row held them.
    Text(&'a str, &'a str),
}

/// A log record's attributes.
pub(crate) enum LogAttributes<'a> {
    Sdk(Vec<(&'a str, &'a AnyValue)>),
    /// A JSON object (a migrated record).
    Json(Json),
}

/// Encodes `records` (not empty), whose earliest time is `base_ns`.
pub(crate) fn encode_logs(records: &[LogIn<'_>], base_ns: i64) -> Vec<u8> {
    let mut enc = Encoder::new(records.len() * 96);
    put_uint(&mut enc.body, records.len() as u64);
    for r in records {
        put_uint(&mut enc.body, r.time_ns.wrapping_sub(base_ns) as u64);
        put_int(&mut enc.body, r.severity.into());
        enc.string(&r.text);
        put_str(&mut enc.body, &r.body);
        enc.string(&r.target);
        enc.string(r.service);
        match r.trace {
            LogTrace::None => enc.body.push(0),
            LogTrace::Ids(trace, span) => {
                enc.body.push(1);
                enc.body.extend_from_slice(&trace.to_be_bytes());
                enc.body.extend_from_slice(&span.to_be_bytes());
            }
            LogTrace::Text(trace, span) => {
                enc.body.push(2);
                put_str(&mut enc.body, trace);
                put_str(&mut enc.body, span);
            }
        }
        put_uint(&mut enc.body, r.trace_key.unwrap_or(0) as u64);
        match &r.attributes {
            LogAttributes::Sdk(pairs) => {
                enc.body.push(OBJECT);
                put_uint(&mut enc.body, pairs.len() as u64);
                for &(k, v) in pairs {
                    enc.string(k);
                    enc.any_value(v, 1);
                }
            }
            LogAttributes::Json(j) => enc.attributes(Attributes::Json(j)),
        }
    }
    enc.finish(LOG_VERSION)
}

/// A log record as read from a chunk, before it is made into a
/// [`LogRecord`]: what the log filters look at, borrowed from the chunk.
pub(crate) struct RawLog<'a> {
    pub time_ns: i64,
    pub severity: i32,
    pub service: &'a str,
    /// Checked as UTF-8 only if the record is kept.
    pub body: &'a [u8],
    pub trace: RawTrace<'a>,
    /// Its trace's row, if it has a trace.
    pub trace_key: Option<i64>,
}

/// A log record's trace and span, as a chunk holds them.
pub(crate) enum RawTrace<'a> {
    None,
    Ids(u128, u64),
    Text(&'a str, &'a str),
}

impl RawTrace<'_> {
    /// The trace id and span id as the views show them.
    pub(crate) fn ids(&self) -> (Option<String>, Option<String>) {
        match self {
            RawTrace::None => (None, None),
            RawTrace::Ids(trace, span) => {
                (Some(format!("{trace:032x}")), Some(format!("{span:016x}")))
            }
            RawTrace::Text(trace, span) => (
                Some(trace.to_string()),
                (!span.is_empty()).then(|| span.to_string()),
            ),
        }
    }
}

/// Decodes chunk `chunk_id` (whose earliest time is `base_ns`): the records
/// `keep` wants, each with its trace key (the others are checked but not
/// made: a search that matches little reads a chunk for a fraction of
/// what making every record costs). A record's id is the chunk's shifted
/// left by 16 bits, plus its place in the chunk. `None` if the bytes are
/// not a chunk this version wrote.
pub(crate) fn decode_logs(
    bytes: &[u8],
    chunk_id: i64,
    base_ns: i64,
    mut keep: impl FnMut(&RawLog<'_>) -> bool,
) -> Option<Vec<(LogRecord, Option<i64>)>> {
    let mut r = Reader { bytes, at: 0 };
    if r.byte()? != LOG_VERSION {
        return None;
    }
    let n = r.uint()? as usize;
    let mut strings = Vec::with_capacity(n.min(bytes.len()));
    for _ in 0..n {
        strings.push(r.str()?);
    }
    let table = Table(&strings);
    let n = r.uint()? as usize;
    if n > 1 << 16 {
        return None;
    }
    let mut records = Vec::new();
    for i in 0..n {
        let time_ns = base_ns.wrapping_add(r.uint()? as i64);
        let severity = i32::try_from(r.int()?).ok()?;
        let text = table.get(r.uint()?)?;
        let body = r.unchecked_str()?;
        let target = table.get(r.uint()?)?;
        let service = table.get(r.uint()?)?;
        let trace = match r.byte()? {
            0 => RawTrace::None,
            1 => RawTrace::Ids(r.u128()?, r.u64()?),
            2 => RawTrace::Text(r.str()?, r.str()?),
            _ => return None,
        };
        let key = r.uint()? as i64;
        let raw = RawLog {
            time_ns,
            severity,
            service,
            body,
            trace,
            trace_key: (key > 0).then_some(key),
        };
        if !keep(&raw) {
            r.skip_value(0)?;
            continue;
        }
        let (trace_id, span_id) = raw.trace.ids();
        records.push((
            LogRecord {
                id: (chunk_id << 16) | i as i64,
                time_ns,
                severity_number: severity,
                severity_text: text.to_string(),
                body: std::str::from_utf8(body).ok()?.to_string(),
                target: target.to_string(),
                service: service.to_string(),
                trace_id,
                span_id,
                attributes: r.value(&table, 0)?,
            },
            raw.trace_key,
        ));
    }
    Some(records)
}

/// A part's strings.
struct Table<'t, 'a>(&'t [&'a str]);

impl<'a> Table<'_, 'a> {
    fn get(&self, i: u64) -> Option<&'a str> {
        self.0.get(usize::try_from(i).ok()?).copied()
    }

    fn owned(&self, i: u64) -> Option<String> {
        self.get(i).map(str::to_string)
    }
}

/// A float as JSON: JSON has no NaN or infinities; they stay readable as
/// strings.
fn float_json(f: f64) -> Json {
    serde_json::Number::from_f64(f)
        .map(Json::Number)
        .unwrap_or_else(|| Json::String(f.to_string()))
}

fn put_uint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_int(out: &mut Vec<u8>, v: i64) {
    put_uint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn uint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn int(&mut self) -> Option<i64> {
        let v = self.uint()?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn u64(&mut self) -> Option<u64> {
        let end = self.at.checked_add(8)?;
        let b: [u8; 8] = self.bytes.get(self.at..end)?.try_into().ok()?;
        self.at = end;
        Some(u64::from_be_bytes(b))
    }

    fn u128(&mut self) -> Option<u128> {
        let end = self.at.checked_add(16)?;
        let b: [u8; 16] = self.bytes.get(self.at..end)?.try_into().ok()?;
        self.at = end;
        Some(u128::from_be_bytes(b))
    }

    /// Steps over a value, checking it as [`Reader::value`] would (string
    /// indexes aside).
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.byte()? {
            NULL | FALSE | TRUE => {}
            INT | STRING => {
                self.uint()?;
            }
            FLOAT => {
                let end = self.at.checked_add(8)?;
                self.bytes.get(self.at..end)?;
                self.at = end;
            }
            TEXT => {
                self.str()?;
            }
            ARRAY => {
                for _ in 0..self.uint()? {
                    self.skip_value(depth + 1)?;
                }
            }
            OBJECT => {
                for _ in 0..self.uint()? {
                    self.uint()?;
                    self.skip_value(depth + 1)?;
                }
            }
            _ => return None,
        }
        Some(())
    }

    /// A value (version 2), as JSON.
    fn value(&mut self, table: &Table<'_, 'a>, depth: usize) -> Option<Json> {
        if depth > MAX_DEPTH {
            return None;
        }
        Some(match self.byte()? {
            NULL => Json::Null,
            FALSE => Json::Bool(false),
            TRUE => Json::Bool(true),
            INT => Json::from(self.int()?),
            FLOAT => {
                let end = self.at.checked_add(8)?;
                let b: [u8; 8] = self.bytes.get(self.at..end)?.try_into().ok()?;
                self.at = end;
                float_json(f64::from_le_bytes(b))
            }
            STRING => Json::String(table.owned(self.uint()?)?),
            TEXT => Json::String(self.str()?.to_string()),
            ARRAY => {
                let n = self.uint()? as usize;
                let mut items = Vec::with_capacity(n.min(self.bytes.len() - self.at));
                for _ in 0..n {
                    items.push(self.value(table, depth + 1)?);
                }
                Json::Array(items)
            }
            OBJECT => {
                let n = self.uint()? as usize;
                let mut map = Map::new();
                for _ in 0..n {
                    let key = table.get(self.uint()?)?;
                    // A repeated key: the last one given wins.
                    map.insert(key.to_string(), self.value(table, depth + 1)?);
                }
                Json::Object(map)
            }
            _ => return None,
        })
    }

    /// A string's bytes, not checked as UTF-8.
    fn unchecked_str(&mut self) -> Option<&'a [u8]> {
        let len = self.uint()? as usize;
        let end = self.at.checked_add(len)?;
        let b = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(b)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.unchecked_str()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use serde_json::json;

    use super::*;
    use crate::ingest::attrs_json;

    fn span<'a>(
        id: u64,
        start: i64,
        attributes: Attributes<'a>,
        events: Events<'a>,
        links: Links<'a>,
    ) -> SpanIn<'a> {
        SpanIn {
            span_id: id,
            parent: if id == 1 { 0 } else { 1 },
            name: if id == 1 { "root" } else { "child é" },
            service: "svc",
            scope: "scope",
            kind: 2,
            status: 2,
            message: "broke",
            start_ns: start,
            end_ns: start + 5,
            attributes,
            events,
            links,
            dropped: [1, 0, u32::MAX],
            resource_id: 7,
        }
    }

    /// What the SDK gives comes back as the JSON version 1 stored (the
    /// object `attrs_json` makes: a repeated key's last value, floats that
    /// JSON cannot hold as text), whatever the value's type.
    #[test]
    fn parts_round_trip() {
        let attrs = vec![
            KeyValue::new("b", true),
            KeyValue::new("i", -42_i64),
            KeyValue::new("f", 1.5),
            KeyValue::new("nan", f64::NAN),
            KeyValue::new("s", "text é"),
            KeyValue::new("i", 7_i64),
            KeyValue::new("ab", Value::Array(vec![true, false].into())),
            KeyValue::new("ai", Value::Array(vec![1_i64, i64::MIN].into())),
            KeyValue::new("af", Value::Array(vec![0.25, f64::INFINITY].into())),
            KeyValue::new(
                "as",
                Value::Array(Array::String(vec!["x".into(), "text é".into()])),
            ),
        ];
        let at = |ns: u64| UNIX_EPOCH + Duration::from_nanos(ns);
        let events = vec![
            SdkEvent::new("retry", at(1_200), vec![KeyValue::new("n", 2_i64)], 0),
            SdkEvent::new("early", at(10), vec![], 0),
        ];
        let ctx = SpanContext::new(
            TraceId::from(u128::MAX - 3),
            SpanId::from(u64::MAX - 1),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        );
        let links = vec![SdkLink::new(ctx, vec![KeyValue::new("s", "l")], 0)];
        let spans = [
            span(
                1,
                1_000,
                Attributes::Sdk(&attrs),
                Events::Sdk(&events),
                Links::Sdk(&links),
            ),
            span(
                u64::MAX,
                900,
                Attributes::Sdk(&[]),
                Events::Sdk(&[]),
                Links::Sdk(&[]),
            ),
            span(
                3,
                i64::MAX - 5,
                Attributes::Sdk(&attrs[..2]),
                Events::Sdk(&[]),
                Links::Sdk(&links),
            ),
        ];
        let bytes = encode(&spans, 950);
        let back = decode(&bytes, 950).unwrap();
        assert_eq!(back.len(), 3);
        for (a, b) in spans.iter().zip(&back) {
            assert_eq!((a.span_id, a.parent), (b.span_id, b.parent));
            assert_eq!(
                (a.name, a.service, a.scope),
                (&*b.name, &*b.service, &*b.scope)
            );
            assert_eq!(
                (a.kind, a.status, a.message),
                (b.kind, b.status, &*b.message)
            );
            assert_eq!((a.start_ns, a.end_ns), (b.start_ns, b.end_ns));
            assert_eq!((a.dropped, a.resource_id), (b.dropped, b.resource_id));
        }
        assert_eq!(back[0].attributes, attrs_json(&attrs));
        assert_eq!(back[0].attributes["i"], 7);
        assert_eq!(back[0].attributes["nan"], "NaN");
        assert_eq!(back[1].attributes, json!({}));
        let events: Vec<Event> = events
            .iter()
            .map(|e| Event {
                name: e.name.to_string(),
                time_ns: unix_ns(e.timestamp),
                attributes: attrs_json(&e.attributes),
            })
            .collect();
        assert_eq!(back[0].events, events);
        assert!(back[1].events.is_empty() && back[1].links.is_empty());
        let link = Link {
            trace_id: format!("{:032x}", u128::MAX - 3),
            span_id: format!("{:016x}", u64::MAX - 1),
            attributes: json!({"s": "l"}),
        };
        assert_eq!(back[0].links, std::slice::from_ref(&link));
        assert_eq!(back[2].links, [link]);
        // Truncated or foreign bytes are refused, never misread.
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], 950).is_none(), "cut at {cut}");
        }
        assert!(decode(&[3, 0, 0], 0).is_none());
    }

    /// Stored values (a migration) are written as they are and read back
    /// the same.
    #[test]
    fn stored_values_round_trip() {
        let attrs = json!({"k": [1, 2.5, "x", null, {"deep": true}]});
        let events = vec![Event {
            name: "e".into(),
            time_ns: 3,
            attributes: json!({"a": "b"}),
        }];
        let links = vec![Link {
            trace_id: format!("{:032x}", 0xabc_u128),
            span_id: format!("{:016x}", 0xdef_u64),
            attributes: json!({}),
        }];
        let spans = [span(
            1,
            10,
            Attributes::Json(&attrs),
            Events::Stored(&events),
            Links::Stored(&links),
        )];
        let back = decode(&encode(&spans, 0), 0).unwrap();
        assert_eq!(back[0].attributes, attrs);
        assert_eq!(back[0].events, events);
        assert_eq!(back[0].links, links);
    }

    /// Parts of schemas 4 and 5 (JSON text) are still read.
    #[test]
    fn version_1_parts_are_read() {
        let mut part = vec![VERSION_JSON];
        put_uint(&mut part, 3);
        for s in ["op", "svc", ""] {
            put_str(&mut part, s);
        }
        put_uint(&mut part, 1);
        part.extend_from_slice(&5_u64.to_be_bytes());
        part.extend_from_slice(&0_u64.to_be_bytes());
        part.extend_from_slice(&[0, 1, 1, 0, 1]);
        part.push(2);
        put_int(&mut part, 0);
        put_uint(&mut part, 9);
        put_str(&mut part, r#"{"k":1}"#);
        put_str(&mut part, r#"[{"name":"e","time_ns":4,"attributes":{}}]"#);
        put_str(&mut part, "");
        part.extend_from_slice(&[0, 0, 0]);
        put_int(&mut part, 1);
        let back = decode(&part, 100).unwrap();
        assert_eq!(back[0].name, "op");
        assert_eq!((back[0].start_ns, back[0].end_ns), (100, 109));
        assert_eq!(back[0].attributes, json!({"k": 1}));
        assert_eq!(back[0].events[0].time_ns, 4);
        assert!(back[0].links.is_empty());
    }

    /// A damaged part nested past any depth the store writes is refused,
    /// not followed down the stack.
    #[test]
    fn deep_nesting_is_refused() {
        // One string (""), one span.
        let mut part = vec![VERSION, 1, 0, 1];
        part.extend_from_slice(&[0; 16]);
        part.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        for _ in 0..100_000 {
            part.extend_from_slice(&[ARRAY, 1]);
        }
        assert!(decode(&part, 0).is_none());
    }

    /// Log records come back as they went in, their attributes as the JSON
    /// `any_json` makes of each value (bytes as hex, lists, maps, the last
    /// of a repeated key), with ids that follow their order.
    #[test]
    fn log_chunks_round_trip() {
        use opentelemetry::Key;

        use crate::ingest::any_json;

        let values: Vec<(Key, AnyValue)> = vec![
            ("i".into(), AnyValue::Int(-3)),
            ("d".into(), AnyValue::Double(f64::INFINITY)),
            ("s".into(), AnyValue::String("text é".into())),
            ("b".into(), AnyValue::Boolean(true)),
            ("x".into(), AnyValue::Bytes(Box::new(vec![0xde, 0xad]))),
            (
                "l".into(),
                AnyValue::ListAny(Box::new(vec![
                    AnyValue::Int(1),
                    AnyValue::String("a".into()),
                ])),
            ),
            (
                "m".into(),
                AnyValue::Map(Box::new(
                    [(Key::from("k"), AnyValue::Boolean(false))]
                        .into_iter()
                        .collect(),
                )),
            ),
            ("i".into(), AnyValue::Int(4)),
        ];
        let pairs: Vec<(&str, &AnyValue)> = values.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let records = [
            LogIn {
                time_ns: 1_000,
                severity: 17,
                text: Cow::Borrowed("ERROR"),
                body: Cow::Borrowed("it broke"),
                target: Cow::Borrowed("app"),
                service: "svc",
                trace: LogTrace::Ids(u128::MAX - 1, 7),
                trace_key: Some(42),
                attributes: LogAttributes::Sdk(pairs),
            },
            LogIn {
                time_ns: 900,
                severity: 0,
                text: Cow::Borrowed(""),
                body: Cow::Owned("é".repeat(3)),
                target: Cow::Borrowed("app"),
                service: "svc",
                trace: LogTrace::Text("not hex", ""),
                trace_key: None,
                attributes: LogAttributes::Json(serde_json::json!({"a": [1]})),
            },
        ];
        let bytes = encode_logs(&records, 900);
        let back = decode_logs(&bytes, 5, 900, |_| true).unwrap();
        let (first, key) = &back[0];
        assert_eq!(*key, Some(42));
        assert_eq!(
            (first.id, first.time_ns, first.severity_number),
            (5 << 16, 1_000, 17)
        );
        assert_eq!((&*first.severity_text, &*first.body), ("ERROR", "it broke"));
        assert_eq!((&*first.target, &*first.service), ("app", "svc"));
        assert_eq!(first.trace_id, Some(format!("{:032x}", u128::MAX - 1)));
        assert_eq!(first.span_id.as_deref(), Some("0000000000000007"));
        let mut want = Map::new();
        for (k, v) in &values {
            want.insert(k.to_string(), any_json(v));
        }
        assert_eq!(first.attributes, Json::Object(want));
        assert_eq!(first.attributes["i"], 4);
        let (second, key) = &back[1];
        assert_eq!(
            (second.id, second.time_ns, *key),
            ((5 << 16) | 1, 900, None)
        );
        assert_eq!(second.body, "ééé");
        assert_eq!(
            (second.trace_id.as_deref(), second.span_id.as_deref()),
            (Some("not hex"), None)
        );
        assert_eq!(second.attributes, serde_json::json!({"a": [1]}));
        for cut in 0..bytes.len() {
            assert!(
                decode_logs(&bytes[..cut], 5, 900, |_| true).is_none(),
                "cut at {cut}"
            );
            assert!(
                decode_logs(&bytes[..cut], 5, 900, |_| false).is_none(),
                "cut at {cut}"
            );
        }
    }

    /// A value nested deeper than a reader takes is written as text saying
    /// so, and the chunk still reads back.
    #[test]
    fn deep_log_values_are_cut_not_refused() {
        let mut deep = AnyValue::Int(1);
        for _ in 0..100 {
            deep = AnyValue::ListAny(Box::new(vec![deep]));
        }
        let pairs = vec![("deep", &deep)];
        let record = LogIn {
            time_ns: 0,
            severity: 9,
            text: Cow::Borrowed("INFO"),
            body: Cow::Borrowed("b"),
            target: Cow::Borrowed("t"),
            service: "s",
            trace: LogTrace::None,
            trace_key: None,
            attributes: LogAttributes::Sdk(pairs),
        };
        let back = decode_logs(&encode_logs(&[record], 0), 1, 0, |_| true).unwrap();
        let mut v = &back[0].0.attributes["deep"];
        let mut levels = 0;
        while let Json::Array(items) = v {
            v = &items[0];
            levels += 1;
        }
        assert_eq!(levels, MAX_DEPTH - 1);
        assert_eq!(v, "(nested too deep)");
    }

    /// Past the strings found by a scan, the rest are hashed: every name
    /// still comes back as it went in, each written once.
    #[test]
    fn many_distinct_strings_round_trip() {
        let names: Vec<String> = (0..100).map(|i| format!("name {}", i % 80)).collect();
        let spans: Vec<SpanIn<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, name)| SpanIn {
                name,
                ..span(
                    i as u64 + 1,
                    0,
                    Attributes::Sdk(&[]),
                    Events::Sdk(&[]),
                    Links::Sdk(&[]),
                )
            })
            .collect();
        let bytes = encode(&spans, 0);
        let back = decode(&bytes, 0).unwrap();
        let back: Vec<&str> = back.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(back, names);
        // 80 names, the service, the scope and the message.
        assert_eq!(bytes[1], 83);
    }
}

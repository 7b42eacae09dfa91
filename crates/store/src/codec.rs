//! The compact encoding of the spans of one trace written in one batch (a
//! row of `parts`). SQLite spends most of an insert on the row and its
//! index entries, not on its bytes: one row per trace and batch, with the
//! spans packed in a blob, costs a fraction of a row (and two index
//! entries) per span. Queries never look inside: what they filter on is in
//! the `traces` row.
//!
//! Layout (integers are LEB128 varints; signed ones zigzag-encoded; a
//! string is a length and UTF-8 bytes):
//!
//! ```text
//! version (1)   strings: count, then each string   spans: count, then each span:
//!   span id (8 bytes, big endian)  parent id (8 bytes, 0: none)
//!   name, service, scope: index into the strings
//!   kind (1 byte)  status (1 byte)  status message: string index
//!   start - the part's start (signed)  duration
//!   attributes, events, links: JSON text ("" for an empty list)
//!   dropped attributes, events, links  resource id
//! ```
//!
//! Names, services and scopes repeat within a batch, so they are written
//! once per part.

use std::collections::HashMap;

const VERSION: u8 = 1;

/// A span as it is encoded: text fields borrowed from the SDK's data.
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
    pub attributes: String,
    pub events: String,
    pub links: String,
    pub dropped: [u32; 3],
    pub resource_id: i64,
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
    pub attributes: String,
    pub events: String,
    pub links: String,
    pub dropped: [u32; 3],
    pub resource_id: i64,
}

pub(crate) const KINDS: [&str; 5] = ["internal", "server", "client", "producer", "consumer"];
pub(crate) const STATUSES: [&str; 3] = ["unset", "ok", "error"];

/// Encodes `spans` (all of one trace) relative to `base_ns`.
pub(crate) fn encode<'a>(spans: &[SpanIn<'a>], base_ns: i64) -> Vec<u8> {
    // A part holds a few distinct strings: a scan finds them faster than
    // hashing, up to a point.
    const SCANNED: usize = 16;
    let mut strings: Vec<&'a str> = Vec::new();
    let mut index: HashMap<&'a str, u64> = HashMap::new();
    let mut intern = |s: &'a str| -> u64 {
        if strings.len() <= SCANNED {
            if let Some(i) = strings.iter().position(|&t| t == s) {
                return i as u64;
            }
            strings.push(s);
            if strings.len() > SCANNED {
                index.extend(strings.iter().enumerate().map(|(i, &t)| (t, i as u64)));
            }
            return strings.len() as u64 - 1;
        }
        *index.entry(s).or_insert_with(|| {
            strings.push(s);
            strings.len() as u64 - 1
        })
    };
    let mut body = Vec::with_capacity(spans.len() * 96);
    put_uint(&mut body, spans.len() as u64);
    for s in spans {
        body.extend_from_slice(&s.span_id.to_be_bytes());
        body.extend_from_slice(&s.parent.to_be_bytes());
        for text in [s.name, s.service, s.scope] {
            put_uint(&mut body, intern(text));
        }
        body.push(s.kind);
        body.push(s.status);
        put_uint(&mut body, intern(s.message));
        put_int(&mut body, s.start_ns.wrapping_sub(base_ns));
        put_uint(&mut body, s.end_ns.wrapping_sub(s.start_ns) as u64);
        for json in [&s.attributes, &s.events, &s.links] {
            put_str(&mut body, json);
        }
        for d in s.dropped {
            put_uint(&mut body, d.into());
        }
        put_int(&mut body, s.resource_id);
    }
    let mut out = Vec::with_capacity(body.len() + 16 * strings.len() + 8);
    out.push(VERSION);
    put_uint(&mut out, strings.len() as u64);
    for s in &strings {
        put_str(&mut out, s);
    }
    out.extend_from_slice(&body);
    out
}

/// Decodes a part; `None` if the bytes are not a part this version wrote.
pub(crate) fn decode(bytes: &[u8], base_ns: i64) -> Option<Vec<SpanOut>> {
    let mut r = Reader { bytes, at: 0 };
    if r.byte()? != VERSION {
        return None;
    }
    let n = r.uint()? as usize;
    let mut strings = Vec::with_capacity(n.min(bytes.len()));
    for _ in 0..n {
        strings.push(r.str()?);
    }
    let string = |i: u64| strings.get(i as usize).map(|s| s.to_string());
    let n = r.uint()? as usize;
    let mut spans = Vec::with_capacity(n.min(bytes.len() / 20));
    for _ in 0..n {
        let span_id = r.u64()?;
        let parent = r.u64()?;
        let name = string(r.uint()?)?;
        let service = string(r.uint()?)?;
        let scope = string(r.uint()?)?;
        let kind = r.byte()?;
        let status = r.byte()?;
        let message = string(r.uint()?)?;
        let start_ns = base_ns.wrapping_add(r.int()?);
        let end_ns = start_ns.wrapping_add(r.uint()? as i64);
        let attributes = r.str()?.to_string();
        let events = r.str()?.to_string();
        let links = r.str()?.to_string();
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

    fn str(&mut self) -> Option<&'a str> {
        let len = self.uint()? as usize;
        let end = self.at.checked_add(len)?;
        let s = std::str::from_utf8(self.bytes.get(self.at..end)?).ok()?;
        self.at = end;
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let span = |id: u64, start: i64| SpanIn {
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
            attributes: r#"{"k":1}"#.into(),
            events: String::new(),
            links: "[{}]".into(),
            dropped: [1, 0, u32::MAX],
            resource_id: 7,
        };
        let spans = [span(1, 1_000), span(u64::MAX, 900), span(3, i64::MAX - 5)];
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
            assert_eq!(
                (&a.attributes, &a.events, &a.links),
                (&b.attributes, &b.events, &b.links)
            );
            assert_eq!((a.dropped, a.resource_id), (b.dropped, b.resource_id));
        }
        // Truncated or foreign bytes are refused, never misread.
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], 950).is_none(), "cut at {cut}");
        }
        assert!(decode(&[2, 0, 0], 0).is_none());
    }

    /// Past the strings found by a scan, the rest are hashed: every name
    /// still comes back as it went in, each written once.
    #[test]
    fn many_distinct_strings_round_trip() {
        let names: Vec<String> = (0..50).map(|i| format!("name {}", i % 40)).collect();
        let spans: Vec<SpanIn<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, name)| SpanIn {
                span_id: i as u64 + 1,
                parent: 0,
                name,
                service: "svc",
                scope: "scope",
                kind: 0,
                status: 0,
                message: "",
                start_ns: 0,
                end_ns: 1,
                attributes: String::new(),
                events: String::new(),
                links: String::new(),
                dropped: [0; 3],
                resource_id: 1,
            })
            .collect();
        let bytes = encode(&spans, 0);
        let back = decode(&bytes, 0).unwrap();
        let back: Vec<&str> = back.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(back, names);
        // 40 names, the service, the scope and the empty message.
        assert_eq!(bytes[1], 43);
    }
}

//! The records of wasi-observe's batched pipe (`wasi-observe:pipe@0.2.2`),
//! shared by the guest SDK that writes them and the host that reads them.
//!
//! A batch is a sequence of [`Record`]s, each encoded with [postcard]: no
//! header, no framing, one record after another until the bytes end.
//! Postcard is a small documented format (varint integers, length-prefixed
//! strings and sequences, enum variants as their index, fixed arrays as
//! their bytes), so a guest in any language can write it by hand in a few
//! dozen lines; the variant and field orders below are the format and never
//! change within a pipe version. `docs/pipe.md` ("The wire format, byte by
//! byte") spells it out for such writers, with an annotated batch that
//! `tests/documented_example.rs` checks against this crate.
//!
//! Span and trace ids are the guest's (from the seed the host gives it);
//! times are nanoseconds since the Unix epoch; attribute values keep their
//! types. Records refer to spans by span id: a span's [`Start`] comes
//! before anything naming it, in the same batch or an earlier one.
//!
//! [postcard]: https://postcard.jamesmunns.com/wire-format

use serde::{Deserialize, Serialize};

/// A W3C trace id. Ids travel as postcard byte strings (a length, then the
/// bytes), which a writer copies in one piece.
pub type TraceId = [u8; 16];
/// A W3C span id; all zeros means none.
pub type SpanId = [u8; 8];

/// Fixed-size ids as byte strings of exactly that length.
mod id {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(id: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        struct Fixed<const N: usize>;
        impl<const N: usize> Visitor<'_> for Fixed<N> {
            type Value = [u8; N];
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{N} bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<[u8; N], E> {
                v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(Fixed::<N>)
    }
}

/// One record of a batch. `A` is the attribute list: the host decodes it as
/// [`Attributes`]; a writer may serialize any sequence of `(key, value)`
/// pairs that encodes the same way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record<'a, A> {
    /// A span started (only spans the guest records are sent).
    #[serde(borrow)]
    Start(Start<'a, A>),
    /// A span ended, with what was recorded on it after its start.
    #[serde(borrow)]
    End(End<'a, A>),
    /// An event on an open span.
    #[serde(borrow)]
    Event(Event<'a, A>),
    /// A link added to an open span.
    #[serde(borrow)]
    Link(Link<'a, A>),
    /// An open span moved under another parent (its span id stays).
    Reparent(Reparent),
    /// A log record.
    #[serde(borrow)]
    Log(Log<'a, A>),
    /// An instrument defined, before its first measurement.
    #[serde(borrow)]
    Instrument(Instrument<'a>),
    /// A measurement on an instrument defined earlier in this instance.
    Measure(Measure<A>),
    /// A set of attributes that later starts and events name by number
    /// (a callsite's constant attributes, say), so they cross once.
    Share(Share<A>),
    /// An event on an open span that is also a log record, as one record:
    /// what `tracing`'s events inside a span are. Only for a host whose
    /// configuration has [`config::EVENT_LOG`].
    #[serde(borrow)]
    EventLog(EventLog<'a, A>),
}

/// Bits of the `signals` byte of the host's configuration beyond its three
/// signals.
pub mod config {
    /// The host reads [`EventLog`](super::EventLog) records. A guest sends
    /// an `Event` and a `Log` where it is not set (an older host).
    pub const EVENT_LOG: u8 = 1 << 3;
    /// The component is instrumented: a span that takes the current one as
    /// its parent asks the host for the innermost function frame first
    /// (`frame`, pipe 0.2.2).
    pub const FRAMES: u8 = 1 << 4;
}

/// An [`Event`] and the [`Log`] record of the same moment, without what
/// they share twice: the time, the span, and the body when it is the
/// event's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLog<'a, A> {
    /// The event, its fields first (postcard writes a nested struct's
    /// fields in place).
    #[serde(borrow)]
    pub event: Event<'a, A>,
    /// The log record's trace: the span's trace id and trace flags (its
    /// span id is the event's).
    #[serde(with = "id")]
    pub trace_id: TraceId,
    pub flags: u8,
    /// The log record's fields, as in [`Log`]; its body is the event's name
    /// when `body_is_name`, else none.
    pub severity: u8,
    pub target: &'a str,
    pub body_is_name: bool,
    pub log_attributes: A,
}

/// A shared attribute set. An instance may define 1024; the host ignores
/// more (counted), and records naming an unknown set get none of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share<A> {
    pub id: u32,
    pub attributes: A,
}

/// Attributes as the host decodes them.
pub type Attributes<'a> = Vec<(&'a str, Value<'a>)>;

/// An attribute value, typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value<'a> {
    Bool(bool),
    I64(i64),
    F64(f64),
    Str(&'a str),
    BoolArray(Vec<bool>),
    I64Array(Vec<i64>),
    F64Array(Vec<f64>),
    #[serde(borrow)]
    StrArray(Vec<&'a str>),
}

/// Variant indexes of [`Value`], for writers that serialize borrowed values
/// of their own.
pub mod value_index {
    pub const BOOL: u32 = 0;
    pub const I64: u32 = 1;
    pub const F64: u32 = 2;
    pub const STR: u32 = 3;
    pub const BOOL_ARRAY: u32 = 4;
    pub const I64_ARRAY: u32 = 5;
    pub const F64_ARRAY: u32 = 6;
    pub const STR_ARRAY: u32 = 7;
}

/// Span kinds.
pub mod kind {
    pub const INTERNAL: u8 = 0;
    pub const SERVER: u8 = 1;
    pub const CLIENT: u8 = 2;
    pub const PRODUCER: u8 = 3;
    pub const CONSUMER: u8 = 4;
}

/// Span status codes.
pub mod status {
    pub const UNSET: u8 = 0;
    pub const OK: u8 = 1;
    pub const ERROR: u8 = 2;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start<'a, A> {
    #[serde(with = "id")]
    pub span_id: SpanId,
    #[serde(with = "id")]
    pub trace_id: TraceId,
    /// The parent's span id; zeros: a root span.
    #[serde(with = "id")]
    pub parent: SpanId,
    /// Whether the parent is in another process or component.
    pub parent_remote: bool,
    /// W3C trace flags.
    pub flags: u8,
    /// One of [`kind`].
    pub kind: u8,
    pub time: u64,
    pub name: &'a str,
    /// W3C `tracestate` text; empty: none.
    pub trace_state: &'a str,
    /// A shared set ([`Share`]) whose attributes come first.
    pub shared: Option<u32>,
    pub attributes: A,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct End<'a, A> {
    #[serde(with = "id")]
    pub span_id: SpanId,
    /// 0: the time of the `close` call that delivered the batch.
    pub time: u64,
    /// One of [`status`]; `description` goes with an error.
    pub status: u8,
    pub description: &'a str,
    /// A new name, if the span was renamed.
    pub name: Option<&'a str>,
    /// Attributes set after the start, added to the start's (a key set
    /// again replaces its value).
    pub attributes: A,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event<'a, A> {
    #[serde(with = "id")]
    pub span_id: SpanId,
    pub time: u64,
    pub name: &'a str,
    /// A shared set ([`Share`]) whose attributes come first.
    pub shared: Option<u32>,
    pub attributes: A,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link<'a, A> {
    #[serde(with = "id")]
    pub span_id: SpanId,
    #[serde(with = "id")]
    pub trace_id: TraceId,
    #[serde(with = "id")]
    pub linked_span_id: SpanId,
    pub flags: u8,
    pub remote: bool,
    pub trace_state: &'a str,
    pub attributes: A,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reparent {
    #[serde(with = "id")]
    pub span_id: SpanId,
    #[serde(with = "id")]
    pub trace_id: TraceId,
    /// Zeros: the span becomes a root.
    #[serde(with = "id")]
    pub parent: SpanId,
    pub parent_remote: bool,
    pub flags: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Log<'a, A> {
    /// Nanoseconds since the epoch; 0: the time of the call that carries
    /// the batch (a record made with no span open crosses at once, and the
    /// host's clock then saves the guest a clock read).
    pub time: u64,
    /// OpenTelemetry severity number (1-24).
    pub severity: u8,
    /// The record's target (its scope); empty: none.
    pub target: &'a str,
    pub body: Option<&'a str>,
    /// The span the record belongs to: trace id, span id, trace flags.
    pub context: Option<LogContext>,
    pub attributes: A,
}

/// The span a log record belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogContext {
    #[serde(with = "id")]
    pub trace_id: TraceId,
    #[serde(with = "id")]
    pub span_id: SpanId,
    pub flags: u8,
}

/// Instrument kinds.
pub mod instrument_kind {
    pub const COUNTER: u8 = 0;
    pub const UP_DOWN_COUNTER: u8 = 1;
    pub const HISTOGRAM: u8 = 2;
    pub const GAUGE: u8 = 3;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instrument<'a> {
    /// The guest's number for it, used by [`Measure`] in this instance.
    pub id: u32,
    /// One of [`instrument_kind`].
    pub kind: u8,
    pub name: &'a str,
    pub description: &'a str,
    pub unit: &'a str,
    /// Histogram bucket boundaries, if the guest chose them.
    pub boundaries: Option<Vec<f64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Number {
    I64(i64),
    F64(f64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measure<A> {
    pub instrument: u32,
    pub value: Number,
    pub attributes: A,
}

/// Variant indexes of [`Record`], for writers that encode by hand.
pub mod record_index {
    pub const START: u64 = 0;
    pub const END: u64 = 1;
    pub const EVENT: u64 = 2;
    pub const LINK: u64 = 3;
    pub const REPARENT: u64 = 4;
    pub const LOG: u64 = 5;
    pub const INSTRUMENT: u64 = 6;
    pub const MEASURE: u64 = 7;
    pub const SHARE: u64 = 8;
    pub const EVENT_LOG: u64 = 9;
}

/// Writes postcard by hand, field by field, for encoders that skip serde:
/// in WebAssembly, serde's generic serializer costs several times the bytes
/// it writes. A record is its variant index ([`record_index`]) and then its
/// fields, in the order the structs above declare them; the tests check
/// this writer against the serde decoder.
pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    /// An unsigned integer (u16 to u64, enum variant indexes, lengths).
    #[inline]
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    /// A signed integer (zigzag, then varint).
    #[inline]
    pub fn i64(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    #[inline]
    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// A `u8` or a `bool`: the byte itself.
    #[inline]
    pub fn byte(&mut self, b: u8) {
        self.0.push(b);
    }

    /// A string, or a byte string (ids): its length, then its bytes.
    #[inline]
    pub fn bytes(&mut self, b: &[u8]) {
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    #[inline]
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// Bytes already encoded (fields written earlier by another writer).
    #[inline]
    pub fn raw(&mut self, encoded: &[u8]) {
        self.0.extend_from_slice(encoded);
    }

    /// An `Option`'s tag: 0 none, 1 some (the value follows).
    #[inline]
    pub fn option(&mut self, some: bool) {
        self.0.push(u8::from(some));
    }
}

/// A record as the host decodes it.
pub type Decoded<'a> = Record<'a, Attributes<'a>>;

/// Appends `record` to `batch`.
pub fn encode<A: Serialize>(record: &Record<'_, A>, batch: &mut Vec<u8>) {
    // Writing to a Vec cannot fail; serializers of attributes do not fail.
    let _ = postcard::serialize_with_flavor(record, Append(batch));
}

/// A postcard flavor that appends to a `Vec` in place (postcard's
/// `to_extend` goes through `Extend` a byte at a time, several times
/// slower, and `to_stdvec` allocates a new `Vec` per record).
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Decodes the records of `batch` in order; stops at the first malformed
/// one, which it returns as an `Err` (nothing after it is read).
pub fn decode(batch: &[u8]) -> impl Iterator<Item = Result<Decoded<'_>, postcard::Error>> {
    let mut rest = batch;
    let mut failed = false;
    std::iter::from_fn(move || {
        if rest.is_empty() || failed {
            return None;
        }
        match postcard::take_from_bytes::<Decoded<'_>>(rest) {
            Ok((record, tail)) => {
                rest = tail;
                Some(Ok(record))
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}

/// The guest's id generator: a SplitMix64 stream seeded by the host
/// (unique per instance). Zero ids are skipped.
#[derive(Debug, Clone)]
pub struct Ids {
    state: u64,
    salt: u64,
}

impl Ids {
    pub fn new(seed_high: u64, seed_low: u64) -> Ids {
        Ids::stream(seed_high, seed_low, 0)
    }

    /// Stream `n` of the seed: an instance with threads draws ids on each
    /// with its own (stream 0 is [`new`](Self::new)'s), so that no two
    /// threads make the same ids from the one seed.
    pub fn stream(seed_high: u64, seed_low: u64, n: u64) -> Ids {
        let step = n.wrapping_mul(0xD1B5_4A32_D192_ED03);
        Ids {
            state: seed_low ^ step,
            salt: (seed_high ^ step.rotate_left(32)) | 1,
        }
    }

    fn next(&mut self) -> u64 {
        loop {
            self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            z ^= self.salt.wrapping_mul(z | 1).rotate_left(17);
            if z != 0 {
                return z;
            }
        }
    }

    pub fn span_id(&mut self) -> SpanId {
        self.next().to_be_bytes()
    }

    pub fn trace_id(&mut self) -> TraceId {
        let mut id = [0; 16];
        id[..8].copy_from_slice(&self.next().to_be_bytes());
        id[8..].copy_from_slice(&self.next().to_be_bytes());
        id
    }
}

/// Whether a trace id falls within `ratio` (0..=1), as `opentelemetry_sdk`'s
/// `TraceIdRatioBased` decides.
pub fn ratio_samples(trace_id: &TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    let mut low = [0; 8];
    low.copy_from_slice(&trace_id[8..]);
    (u64::from_be_bytes(low) >> 1) < bound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs() -> Attributes<'static> {
        vec![
            ("a", Value::I64(-3)),
            ("b", Value::Str("x")),
            ("c", Value::StrArray(vec!["p", "q"])),
            ("d", Value::F64Array(vec![1.5])),
        ]
    }

    #[test]
    fn records_round_trip() {
        let records: Vec<Decoded<'_>> = vec![
            Record::Start(Start {
                span_id: [1; 8],
                trace_id: [2; 16],
                parent: [0; 8],
                parent_remote: false,
                flags: 1,
                kind: kind::CLIENT,
                time: 1_700_000_000_000_000_000,
                name: "s",
                trace_state: "k=v",
                shared: Some(3),
                attributes: attrs(),
            }),
            Record::Event(Event {
                span_id: [1; 8],
                time: 5,
                name: "e",
                shared: None,
                attributes: vec![],
            }),
            Record::Share(Share {
                id: 3,
                attributes: attrs(),
            }),
            Record::EventLog(EventLog {
                event: Event {
                    span_id: [1; 8],
                    time: 6,
                    name: "message",
                    shared: Some(3),
                    attributes: vec![],
                },
                trace_id: [2; 16],
                flags: 1,
                severity: 9,
                target: "app",
                body_is_name: true,
                log_attributes: attrs(),
            }),
            Record::Instrument(Instrument {
                id: 0,
                kind: instrument_kind::HISTOGRAM,
                name: "h",
                description: "",
                unit: "ms",
                boundaries: Some(vec![1.0, 2.0]),
            }),
            Record::Measure(Measure {
                instrument: 0,
                value: Number::F64(1.5),
                attributes: attrs(),
            }),
            Record::End(End {
                span_id: [1; 8],
                time: 9,
                status: status::ERROR,
                description: "boom",
                name: Some("t"),
                attributes: attrs(),
            }),
        ];
        let mut batch = Vec::new();
        for r in &records {
            encode(r, &mut batch);
        }
        let back: Vec<_> = decode(&batch).collect::<Result<_, _>>().unwrap();
        assert_eq!(back, records);
    }

    #[test]
    fn malformed_bytes_stop_decoding_without_panicking() {
        let mut batch = Vec::new();
        encode(
            &Record::<Attributes<'_>>::Reparent(Reparent {
                span_id: [1; 8],
                trace_id: [2; 16],
                parent: [3; 8],
                parent_remote: true,
                flags: 0,
            }),
            &mut batch,
        );
        batch.extend_from_slice(&[99, 0xff, 0xff, 0xff]);
        let out: Vec<_> = decode(&batch).collect();
        assert_eq!(out.len(), 2);
        assert!(out[0].is_ok() && out[1].is_err());
        // Every prefix and every single-byte corruption decodes or fails
        // cleanly.
        for cut in 0..batch.len() {
            let _ = decode(&batch[..cut]).count();
            let mut bad = batch.clone();
            bad[cut] ^= 0x5a;
            let _ = decode(&bad).count();
        }
        // A huge length prefix does not allocate its claim.
        let huge = [5u8, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(decode(&huge).all(|r| r.is_err()));
    }

    #[test]
    fn the_hand_writer_matches_the_serde_encoding() {
        let mut hand = Vec::new();
        let mut w = Writer(&mut hand);
        w.varint(record_index::START);
        w.bytes(&[1; 8]);
        w.bytes(&[2; 16]);
        w.bytes(&[0; 8]);
        w.byte(1);
        w.byte(1);
        w.byte(kind::CLIENT);
        w.varint(1_700_000_000_000_000_123);
        w.str("span");
        w.str("");
        w.option(true);
        w.varint(300);
        w.varint(3);
        for (k, v) in [("i", -5i64), ("j", i64::MIN)] {
            w.str(k);
            w.varint(u64::from(value_index::I64));
            w.i64(v);
        }
        w.str("f");
        w.varint(u64::from(value_index::F64));
        w.f64(-0.25);
        w.varint(record_index::SHARE);
        w.varint(7);
        w.varint(1);
        w.str("s");
        w.varint(u64::from(value_index::STR_ARRAY));
        w.varint(2);
        w.str("x");
        w.str("héllo");
        let expected: Vec<Decoded<'_>> = vec![
            Record::Start(Start {
                span_id: [1; 8],
                trace_id: [2; 16],
                parent: [0; 8],
                parent_remote: true,
                flags: 1,
                kind: kind::CLIENT,
                time: 1_700_000_000_000_000_123,
                name: "span",
                trace_state: "",
                shared: Some(300),
                attributes: vec![
                    ("i", Value::I64(-5)),
                    ("j", Value::I64(i64::MIN)),
                    ("f", Value::F64(-0.25)),
                ],
            }),
            Record::Share(Share {
                id: 7,
                attributes: vec![("s", Value::StrArray(vec!["x", "héllo"]))],
            }),
        ];
        let mut serde = Vec::new();
        for r in &expected {
            encode(r, &mut serde);
        }
        assert_eq!(hand, serde);
    }

    #[test]
    fn ids_differ_across_seeds_and_are_never_zero() {
        let mut a = Ids::new(1, 2);
        let mut b = Ids::new(1, 3);
        let xs: std::collections::HashSet<_> = (0..1000).map(|_| a.span_id()).collect();
        assert_eq!(xs.len(), 1000);
        assert!(!xs.contains(&[0; 8]));
        assert!((0..1000).all(|_| !xs.contains(&b.span_id())));
        // Streams of one seed neither repeat each other nor stream 0.
        let mut seen = xs;
        for n in 1..8 {
            let mut s = Ids::stream(1, 2, n);
            assert!((0..1000).all(|_| seen.insert(s.span_id())), "stream {n}");
        }
    }

    #[test]
    fn ratio_sampling_matches_the_bounds() {
        let id = |low: u64| {
            let mut t = [0; 16];
            t[8..].copy_from_slice(&low.to_be_bytes());
            t
        };
        assert!(ratio_samples(&id(u64::MAX), 1.0));
        assert!(!ratio_samples(&id(0), 0.0));
        assert!(ratio_samples(&id(0), 0.5));
        assert!(!ratio_samples(&id(u64::MAX), 0.5));
        let n = (0..10_000u64)
            .filter(|i| ratio_samples(&id(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)), 0.25))
            .count();
        assert!((2_000..3_000).contains(&n), "{n}");
    }
}

//! The SDK's end of the batched pipe (`wasi-observe:pipe@0.2.2`).
//!
//! Spans, events, links, log records and measurements are encoded
//! ([`wasi_observe_wire`]) into a buffer in the component's own memory and
//! cross to the host in one call per batch. Span and trace ids are made
//! here, from a seed the host gives once per instance, and so is the sampling
//! decision, from the host's sampler configuration.
//!
//! A span still crosses twice, on its own: `open` when it starts and `close`
//! when it ends tell the host which span is open, so that what the host
//! makes for the component (the CLIENT span of an outgoing request, import
//! call spans, `wasi:logging` records) hangs under it; each returns the
//! host's clock, which the span needs at those two moments anyway.
//!
//! A batch crosses when the outermost open span ends (with the `close` call
//! that says so: no call of its own), when a log record is made
//! with no span open, when the buffer holds [`BATCH_BYTES`], when it has
//! waited a second (checked at every span start and end), in the panic hook,
//! and on [`crate::flush`]. Measurements are summed here (counters,
//! up-down counters; a gauge keeps its last value) and go with the next
//! batch; made with no span open, they are held, and the host, told once
//! with `hold`, calls the `flush` export when the invocation returns. So
//! everything recorded has crossed when an invocation returns; a trap other
//! than a panic loses at most what was recorded since the last batch.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry::{Array, KeyValue, Value};
use wasi_observe_wire::{self as wire, Writer, record_index};

use crate::Signals;
use crate::bindings::pipe as host;

/// A batch crosses when the buffer holds this much.
pub(crate) const BATCH_BYTES: usize = 64 * 1024;

/// A batch crosses once its first record is this old.
const MAX_AGE: Duration = Duration::from_secs(1);

/// Sums held at most (series of all instruments); past it they go into the
/// buffer as they are.
const MAX_SUMS: usize = 1024;

/// Held measurements read the clock (to send what is a second old) at the
/// 1st, 2nd, 4th, ... and then every this many: sparse ones wait about as
/// long as the gap between them, a tight loop reads the clock seldom.
const CLOCK_EVERY: u32 = 256;

/// What the host said at start-up.
pub(crate) struct Config {
    pub(crate) signals: Signals,
    sampler: host::Sampler,
    /// The parent of root spans, if the host has one.
    pub(crate) ambient: Option<SpanContext>,
    seed: (u64, u64),
    /// The component's `RUST_LOG` as the host gave it (`None`: the host
    /// does not know the component's environment; read it then).
    pub(crate) rust_log: Option<Option<String>>,
    /// The host reads `EventLog` records (an older host does not).
    pub(crate) event_log: bool,
    /// The component is instrumented: spans ask for the frame they start in.
    frames: bool,
}

/// The configuration, asked once per instance.
pub(crate) fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let (c, rust_log) = host::configure_with_environment("RUST_LOG");
        let ambient = c.ambient.map(|a| {
            let state = if c.ambient_trace_state.is_empty() {
                TraceState::NONE
            } else {
                c.ambient_trace_state.parse().unwrap_or_default()
            };
            SpanContext::new(
                trace_id(a.trace_id_high, a.trace_id_low),
                SpanId::from_bytes(a.span_id.to_be_bytes()),
                TraceFlags::new(a.trace_flags & 1),
                true,
                state,
            )
        });
        Config {
            signals: Signals {
                traces: c.signals & 1 != 0,
                logs: c.signals & 2 != 0,
                metrics: c.signals & 4 != 0,
            },
            sampler: c.sampler,
            ambient: ambient.filter(SpanContext::is_valid),
            seed: (c.seed_high, c.seed_low),
            rust_log,
            event_log: c.signals & wire::config::EVENT_LOG != 0,
            frames: c.signals & wire::config::FRAMES != 0,
        }
    })
}

/// The parent of a span that takes the current one: in an instrumented
/// component, the innermost function frame if the host says it was entered
/// after the guest's current span opened (one host call), so that spans
/// nest in the functions they start in; else `parent` as it is. Elsewhere
/// a flag's test: nothing is moved.
#[inline]
pub(crate) fn adopt_frame(parent: &mut Option<SpanContext>) {
    if config().frames {
        ask_frame(parent);
    }
}

#[cold]
#[inline(never)]
fn ask_frame(parent: &mut Option<SpanContext>) {
    let Some((frame, state)) = host::frame() else {
        return;
    };
    let state = if state.is_empty() {
        TraceState::NONE
    } else {
        state.parse().unwrap_or_default()
    };
    let frame = SpanContext::new(
        trace_id(frame.trace_id_high, frame.trace_id_low),
        SpanId::from_bytes(frame.span_id.to_be_bytes()),
        TraceFlags::new(frame.trace_flags & 1),
        false,
        state,
    );
    if frame.is_valid() {
        *parent = Some(frame);
    }
}

fn trace_id(high: u64, low: u64) -> TraceId {
    TraceId::from_bytes(((u128::from(high) << 64) | u128::from(low)).to_be_bytes())
}

struct Pipe {
    buf: Vec<u8>,
    /// Spans started and not ended.
    open: u32,
    ids: wire::Ids,
    /// When the oldest record in `buf` was made (ns since the epoch).
    oldest: Option<u64>,
    next_instrument: u32,
    /// Shared attribute sets defined, by the caller's key (a callsite's
    /// address); `None`: sent inline.
    shared: FastMap<usize, Option<u32>>,
    /// Sums (and gauges' last values) not yet in `buf`, by the instrument's
    /// number (4 bytes, little-endian) followed by the encoded attributes.
    sums: FastMap<Vec<u8>, wire::Number>,
    /// Where a measurement's key is built.
    key: Vec<u8>,
    /// Whether the host was told (`hold`) that records wait here.
    held: bool,
    /// Measurements since the batch began to be held.
    held_count: u32,
}

/// Shared sets an instance defines (the host keeps as many).
const MAX_SHARED: usize = 1024;

/// The SDK's maps hash with foldhash's fast hasher and a fixed seed: their
/// keys are the program's own (callsite addresses, its attributes), so no
/// hostile input reaches them, a random seed would cost a host call, and
/// SipHash would cost more than the rest of a counter's add.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

crate::local::local! {
    static PIPE: RefCell<Option<Pipe>> = RefCell::new(None);
}

fn with_pipe<R>(f: impl FnOnce(&mut Pipe) -> R) -> Option<R> {
    PIPE.with(|p| {
        let mut p = p.try_borrow_mut().ok()?;
        let pipe = p.get_or_insert_with(|| {
            let (high, low) = config().seed;
            Pipe {
                // Small: an instance per request sends a few hundred bytes;
                // the buffer grows to a full batch only where one is made.
                buf: Vec::with_capacity(1024),
                open: 0,
                ids: new_ids(high, low),
                oldest: None,
                next_instrument: 0,
                shared: HashMap::default(),
                sums: HashMap::default(),
                key: Vec::new(),
                held: false,
                held_count: 0,
            }
        });
        Some(f(pipe))
    })
}

/// The id generator of a new pipe. There is one pipe per thread (one in a
/// component without threads), and each draws from its own stream of the
/// instance's seed, so that no two threads make the same ids.
fn new_ids(seed_high: u64, seed_low: u64) -> wire::Ids {
    static PIPES: AtomicU64 = AtomicU64::new(0);
    wire::Ids::stream(seed_high, seed_low, PIPES.fetch_add(1, Ordering::Relaxed))
}

impl Pipe {
    /// Appends a record (written by `write`) made at `now` (0: unknown),
    /// and sends the batch if no span is open or the buffer is full.
    fn push(&mut self, now: u64, write: impl FnOnce(&mut Writer<'_>)) {
        if now != 0 {
            self.oldest.get_or_insert(now);
        }
        write(&mut Writer(&mut self.buf));
        if self.open == 0 || self.buf.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        self.drain_sums();
        self.oldest = None;
        if self.buf.is_empty() {
            return;
        }
        // A batch over the host's largest is refused and counted there.
        host::submit(&self.buf);
        self.sent();
    }

    /// The buffer crossed (with `submit` or `close`): nothing is held.
    fn sent(&mut self) {
        self.buf.clear();
        self.held = false;
        self.held_count = 0;
    }

    /// Writes the sums into the buffer as measurements.
    fn drain_sums(&mut self) {
        if self.sums.is_empty() {
            return;
        }
        for (key, value) in self.sums.drain() {
            let (instrument, attributes) = key.split_at(4);
            let instrument = u32::from_le_bytes(instrument.try_into().unwrap_or_default());
            let w = &mut Writer(&mut self.buf);
            w.varint(record_index::MEASURE);
            w.varint(u64::from(instrument));
            number(w, value);
            w.raw(attributes);
        }
    }

    /// A measurement was recorded: with no span open it is held (the host
    /// told once per batch), and now and then the clock says whether the
    /// batch is a second old (at the 1st, 2nd, 4th, ... measurement held,
    /// and at every [`CLOCK_EVERY`]th, in a span or not).
    fn measured(&mut self) {
        if self.buf.len() >= BATCH_BYTES {
            self.flush();
            return;
        }
        if !self.held && self.open == 0 {
            self.oldest.get_or_insert(host::hold());
            self.held = true;
            self.held_count = 0;
            return;
        }
        self.held_count = self.held_count.wrapping_add(1);
        let n = self.held_count;
        // Inside a span, its start and end read the clock already: only a
        // long span that measures in a loop needs the reading.
        let sparse = self.open == 0 && n.is_power_of_two() && n <= CLOCK_EVERY;
        if sparse || n.is_multiple_of(CLOCK_EVERY) {
            let now = now();
            self.oldest.get_or_insert(now);
            self.flush_if_old(now);
        }
    }

    fn flush_if_old(&mut self, now: u64) {
        if self
            .oldest
            .is_some_and(|t| now.saturating_sub(t) > MAX_AGE.as_nanos() as u64)
        {
            self.flush();
        }
    }
}

/// Sends everything recorded so far to the host.
pub(crate) fn flush() {
    with_pipe(Pipe::flush);
}

/// Nanoseconds since the epoch.
pub(crate) fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

/// Now, by the host's wall clock (a host call).
pub(crate) fn now() -> u64 {
    host::now()
}

fn span_ref(cx: &SpanContext) -> host::SpanRef {
    let id = u128::from_be_bytes(cx.trace_id().to_bytes());
    host::SpanRef {
        trace_id_high: (id >> 64) as u64,
        trace_id_low: id as u64,
        span_id: u64::from_be_bytes(cx.span_id().to_bytes()),
        trace_flags: cx.trace_flags().to_u8(),
    }
}

/// Whether the sampler samples a span in `trace_id` under `parent`.
fn sampled(parent: Option<&SpanContext>, trace_id: &[u8; 16]) -> bool {
    use host::Sampler as S;
    let root = |ratio: f64| wire::ratio_samples(trace_id, ratio);
    match (config().sampler, parent) {
        (
            S::ParentBasedAlwaysOn | S::ParentBasedAlwaysOff | S::ParentBasedTraceIdRatio(_),
            Some(p),
        ) => p.is_sampled(),
        (S::AlwaysOn | S::ParentBasedAlwaysOn, _) => true,
        (S::AlwaysOff | S::ParentBasedAlwaysOff, _) => false,
        (S::TraceIdRatio(r) | S::ParentBasedTraceIdRatio(r), _) => root(r),
    }
}

/// A new span's context under `parent` (`None`: a new trace): its ids and
/// the sampler's decision. The trace-state is the parent's.
pub(crate) fn new_context(parent: Option<&SpanContext>) -> SpanContext {
    let parent = parent.filter(|p| p.is_valid());
    with_pipe(|pipe| {
        let trace = match parent {
            Some(p) => p.trace_id().to_bytes(),
            None => pipe.ids.trace_id(),
        };
        let span = pipe.ids.span_id();
        let flags = if sampled(parent, &trace) {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::NOT_SAMPLED
        };
        let state = parent.map(|p| p.trace_state().clone()).unwrap_or_default();
        SpanContext::new(
            TraceId::from_bytes(trace),
            SpanId::from_bytes(span),
            flags,
            false,
            state,
        )
    })
    .unwrap_or(SpanContext::NONE)
}

/// What a span starts with.
pub(crate) struct Start<'a> {
    pub cx: &'a SpanContext,
    pub parent: Option<&'a SpanContext>,
    pub kind: u8,
    pub name: &'a str,
    /// A set from [`shared`], whose attributes come first.
    pub shared: Option<u32>,
    pub attributes: &'a [&'a [KeyValue]],
    /// Attributes already encoded, after `attributes`.
    pub encoded: &'a Pairs,
    /// `None`: now.
    pub time: Option<SystemTime>,
}

/// Attributes encoded as they are visited, as the wire's pairs: a field's
/// text goes straight into the batch, where a `KeyValue` would take a
/// `String` and a `Vec` to be freed once encoded.
#[derive(Default)]
pub(crate) struct Pairs {
    bytes: Vec<u8>,
    count: usize,
}

impl Pairs {
    /// Pairs written into `buffer` (cleared), to give back with
    /// [`into_buffer`](Self::into_buffer).
    pub(crate) fn with_buffer(mut buffer: Vec<u8>) -> Pairs {
        buffer.clear();
        // A fresh instance's first use: one allocation rather than a
        // reallocation at every doubling from 8 bytes.
        buffer.reserve(256);
        Pairs {
            bytes: buffer,
            count: 0,
        }
    }

    pub(crate) fn into_buffer(self) -> Vec<u8> {
        self.bytes
    }

    pub(crate) fn push(&mut self, key: &str, v: &Value) {
        let w = &mut Writer(&mut self.bytes);
        w.str(key);
        value(w, v);
        self.count += 1;
    }

    pub(crate) fn push_str(&mut self, key: &str, text: &str) {
        let w = &mut Writer(&mut self.bytes);
        w.str(key);
        w.varint(wire::value_index::STR.into());
        w.str(text);
        self.count += 1;
    }
}

/// Starts a span: tells the host it is open and, if it is sampled, records
/// its start. Returns the start time.
pub(crate) fn start(s: Start<'_>) -> u64 {
    let cx = s.cx;
    let state = cx.trace_state().header();
    let name = if cx.is_sampled() { s.name } else { "" };
    let host_now = host::open(span_ref(cx), name, (!state.is_empty()).then_some(&*state));
    let time = s.time.map_or(host_now, nanos);
    with_pipe(|pipe| {
        pipe.open += 1;
        pipe.flush_if_old(host_now);
        if !cx.is_sampled() {
            return;
        }
        let (parent, parent_remote) = parent_ref(s.parent);
        pipe.push(host_now, |w| {
            w.varint(record_index::START);
            w.bytes(&cx.span_id().to_bytes());
            w.bytes(&cx.trace_id().to_bytes());
            w.bytes(&parent);
            w.byte(u8::from(parent_remote));
            w.byte(cx.trace_flags().to_u8());
            w.byte(s.kind);
            w.varint(time);
            w.str(s.name);
            w.str(&state);
            shared_ref(w, s.shared);
            let listed: usize = s.attributes.iter().map(|l| l.len()).sum();
            w.varint((listed + s.encoded.count) as u64);
            pairs(w, s.attributes);
            w.raw(&s.encoded.bytes);
        });
    });
    time
}

/// What a span ends with.
pub(crate) struct End<'a> {
    pub cx: &'a SpanContext,
    pub attributes: &'a [KeyValue],
    pub status: Option<&'a opentelemetry::trace::Status>,
    pub name: Option<&'a str>,
    /// `None`: now.
    pub time: Option<SystemTime>,
}

/// Ends a span started with [`start`]. When it is the outermost open span,
/// the batch crosses with the `close` call (its end time is then the host's
/// time of that call).
pub(crate) fn end(e: End<'_>) {
    let cx = e.cx;
    let span_id = u64::from_be_bytes(cx.span_id().to_bytes());
    with_pipe(|pipe| {
        pipe.open = pipe.open.saturating_sub(1);
        let outermost = pipe.open == 0;
        let record = |pipe: &mut Pipe, time: u64| {
            use opentelemetry::trace::Status;
            let (status, description) = match e.status {
                Some(Status::Ok) => (wire::status::OK, ""),
                Some(Status::Error { description }) => (wire::status::ERROR, &**description),
                _ => (wire::status::UNSET, ""),
            };
            let w = &mut Writer(&mut pipe.buf);
            w.varint(record_index::END);
            w.bytes(&cx.span_id().to_bytes());
            w.varint(time);
            w.byte(status);
            w.str(description);
            w.option(e.name.is_some());
            if let Some(name) = e.name {
                w.str(name);
            }
            attributes(w, &[e.attributes]);
        };
        if outermost {
            if cx.is_sampled() {
                record(pipe, e.time.map_or(0, nanos));
            }
            pipe.drain_sums();
            pipe.oldest = None;
            host::close(span_id, &pipe.buf);
            pipe.sent();
            return;
        }
        let host_now = host::close(span_id, &[]);
        if cx.is_sampled() {
            pipe.oldest.get_or_insert(host_now);
            record(pipe, e.time.map_or(host_now, nanos));
            if pipe.buf.len() >= BATCH_BYTES {
                pipe.flush();
            }
        }
        pipe.flush_if_old(host_now);
    });
}

/// Records an event on a sampled open span (`shared`: a set from
/// [`shared`], whose attributes come first).
pub(crate) fn event(
    span: &SpanContext,
    time: u64,
    name: &str,
    shared: Option<u32>,
    lists: &[&[KeyValue]],
) {
    with_pipe(|pipe| {
        pipe.push(time, |w| {
            w.varint(record_index::EVENT);
            w.bytes(&span.span_id().to_bytes());
            w.varint(time);
            w.str(name);
            shared_ref(w, shared);
            attributes(w, lists);
        })
    });
}

/// What [`event_log`] records: an event on a span and its log record.
pub(crate) struct EventLog<'a> {
    pub span: &'a SpanContext,
    pub time: u64,
    /// The event's name; the log record's body too when `body_is_name`.
    pub name: &'a str,
    pub shared: Option<u32>,
    pub attributes: &'a [&'a [KeyValue]],
    pub severity: u8,
    pub target: &'a str,
    pub body_is_name: bool,
    pub log_attributes: &'a [&'a [KeyValue]],
}

/// Records an event on a sampled open span and the log record of the same
/// moment as one record, for a host that reads it (`config().event_log`):
/// the time, the span and the body cross once.
pub(crate) fn event_log(e: EventLog<'_>) {
    with_pipe(|pipe| {
        pipe.push(e.time, |w| {
            w.varint(record_index::EVENT_LOG);
            // An `Event`'s fields, as `event` writes them (written again
            // here: shared through a function, they cost the span about 40
            // instructions more).
            w.bytes(&e.span.span_id().to_bytes());
            w.varint(e.time);
            w.str(e.name);
            shared_ref(w, e.shared);
            attributes(w, e.attributes);
            w.bytes(&e.span.trace_id().to_bytes());
            w.byte(e.span.trace_flags().to_u8());
            w.byte(e.severity);
            w.str(e.target);
            w.byte(u8::from(e.body_is_name));
            attributes(w, e.log_attributes);
        })
    });
}

/// Records a link from a sampled open span.
pub(crate) fn link(span: &SpanContext, to: &SpanContext, attrs: &[KeyValue]) {
    let state = to.trace_state().header();
    with_pipe(|pipe| {
        pipe.push(0, |w| {
            w.varint(record_index::LINK);
            w.bytes(&span.span_id().to_bytes());
            w.bytes(&to.trace_id().to_bytes());
            w.bytes(&to.span_id().to_bytes());
            w.byte(to.trace_flags().to_u8());
            w.byte(u8::from(to.is_remote()));
            w.str(&state);
            attributes(w, &[attrs]);
        })
    });
}

/// Moves an open span under `parent` (`None`: a new trace): a new trace id
/// and sampling decision, the same span id. Returns its new context.
pub(crate) fn reparent(
    cx: &SpanContext,
    recording: bool,
    parent: Option<&SpanContext>,
) -> SpanContext {
    let fresh = new_context(parent);
    let moved = SpanContext::new(
        fresh.trace_id(),
        cx.span_id(),
        fresh.trace_flags(),
        false,
        fresh.trace_state().clone(),
    );
    if recording {
        let (parent_id, parent_remote) = parent_ref(parent);
        with_pipe(|pipe| {
            pipe.push(0, |w| {
                w.varint(record_index::REPARENT);
                w.bytes(&cx.span_id().to_bytes());
                w.bytes(&moved.trace_id().to_bytes());
                w.bytes(&parent_id);
                w.byte(u8::from(parent_remote));
                w.byte(moved.trace_flags().to_u8());
            })
        });
    }
    moved
}

/// Severity numbers of the `tracing`/`log` levels.
pub(crate) fn severity(level: &tracing_core::Level) -> u8 {
    match *level {
        tracing_core::Level::TRACE => 1,
        tracing_core::Level::DEBUG => 5,
        tracing_core::Level::INFO => 9,
        tracing_core::Level::WARN => 13,
        _ => 17,
    }
}

/// A log record.
pub(crate) struct Log<'a> {
    /// `None`: now (with no span open the record crosses at once, stamped
    /// with the host's time of that call instead of a clock read here).
    pub time: Option<u64>,
    pub severity: u8,
    pub target: &'a str,
    pub body: Option<&'a str>,
    pub span: Option<&'a SpanContext>,
    pub attributes: &'a [&'a [KeyValue]],
    /// Attributes already encoded, after `attributes`.
    pub encoded: Option<&'a Pairs>,
}

/// Records a log record.
pub(crate) fn log(l: Log<'_>) {
    let context = l.span.filter(|cx| cx.is_valid());
    with_pipe(|pipe| {
        let time = match l.time {
            Some(t) => t,
            // `push` sends it at once: 0 is the time of that `submit`.
            None if pipe.open == 0 => 0,
            None => now(),
        };
        pipe.push(time, |w| {
            w.varint(record_index::LOG);
            w.varint(time);
            w.byte(l.severity);
            w.str(l.target);
            w.option(l.body.is_some());
            if let Some(body) = l.body {
                w.str(body);
            }
            w.option(context.is_some());
            if let Some(cx) = context {
                w.bytes(&cx.trace_id().to_bytes());
                w.bytes(&cx.span_id().to_bytes());
                w.byte(cx.trace_flags().to_u8());
            }
            let listed: usize = l.attributes.iter().map(|a| a.len()).sum();
            let encoded = l.encoded.map_or(0, |p| p.count);
            w.varint((listed + encoded) as u64);
            pairs(w, l.attributes);
            if let Some(p) = l.encoded {
                w.raw(&p.bytes);
            }
        })
    });
}

/// Defines an instrument; returns its number for [`measure`].
pub(crate) fn instrument(
    kind: u8,
    name: &str,
    description: &str,
    unit: &str,
    boundaries: Option<&[f64]>,
) -> u32 {
    with_pipe(|pipe| {
        let id = pipe.next_instrument;
        pipe.next_instrument += 1;
        // Defined without crossing: it goes with its first measurement.
        let w = &mut Writer(&mut pipe.buf);
        w.varint(record_index::INSTRUMENT);
        w.varint(u64::from(id));
        w.byte(kind);
        w.str(name);
        w.str(description);
        w.str(unit);
        w.option(boundaries.is_some());
        if let Some(b) = boundaries {
            w.varint(b.len() as u64);
            for &x in b {
                w.f64(x);
            }
        }
        id
    })
    .unwrap_or(u32::MAX)
}

/// The number of the shared attribute set for `key` (a callsite's address,
/// say), defined with `make()` on first use, so that constant
/// attributes cross once per instance; `None` (send them inline) for an
/// empty set or beyond [`MAX_SHARED`] sets.
pub(crate) fn shared(key: usize, make: impl FnOnce() -> Vec<KeyValue>) -> Option<u32> {
    with_pipe(|pipe| {
        if let Some(&known) = pipe.shared.get(&key) {
            return known;
        }
        let attrs = make();
        let id = (!attrs.is_empty() && pipe.shared.len() < MAX_SHARED).then(|| {
            let id = pipe.shared.len() as u32;
            // It goes before its first use, in this batch.
            let w = &mut Writer(&mut pipe.buf);
            w.varint(record_index::SHARE);
            w.varint(u64::from(id));
            attributes(w, &[&attrs]);
            id
        });
        pipe.shared.insert(key, id);
        id
    })
    .flatten()
}

/// Records a measurement of an instrument of `kind`: a histogram's as it
/// is; a counter's and an up-down counter's added to the sum of its series,
/// a gauge's replacing its series' last value, until the batch crosses.
pub(crate) fn measure(instrument: u32, kind: u8, value: wire::Number, attrs: &[KeyValue]) {
    use wire::instrument_kind as k;
    with_pipe(|pipe| {
        if kind == k::HISTOGRAM {
            let w = &mut Writer(&mut pipe.buf);
            w.varint(record_index::MEASURE);
            w.varint(u64::from(instrument));
            number(w, value);
            attributes(w, &[attrs]);
        } else {
            let mut key = std::mem::take(&mut pipe.key);
            key.clear();
            key.extend_from_slice(&instrument.to_le_bytes());
            attributes(&mut Writer(&mut key), &[attrs]);
            if let Some(sum) = pipe.sums.get_mut(key.as_slice()) {
                *sum = match (kind, *sum, value) {
                    (k::GAUGE, _, new) => new,
                    (_, wire::Number::I64(a), wire::Number::I64(b)) => {
                        wire::Number::I64(a.saturating_add(b))
                    }
                    (_, wire::Number::F64(a), wire::Number::F64(b)) => wire::Number::F64(a + b),
                    // An instrument's numbers are of one type.
                    (_, _, new) => new,
                };
            } else {
                if pipe.sums.len() >= MAX_SUMS {
                    pipe.drain_sums();
                }
                pipe.sums.insert(key.clone(), value);
            }
            pipe.key = key;
        }
        pipe.measured();
    });
}

fn number(w: &mut Writer<'_>, value: wire::Number) {
    match value {
        wire::Number::I64(v) => {
            w.varint(0);
            w.i64(v);
        }
        wire::Number::F64(v) => {
            w.varint(1);
            w.f64(v);
        }
    }
}

/// A parent as records name it: its span id (zeros for none) and whether
/// it is remote.
fn parent_ref(parent: Option<&SpanContext>) -> ([u8; 8], bool) {
    match parent {
        Some(p) if p.is_valid() => (p.span_id().to_bytes(), p.is_remote()),
        _ => ([0; 8], false),
    }
}

/// A reference to a shared set, as an `Option<u32>`.
fn shared_ref(w: &mut Writer<'_>, shared: Option<u32>) {
    w.option(shared.is_some());
    if let Some(id) = shared {
        w.varint(u64::from(id));
    }
}

/// Attribute lists, concatenated, as the wire's attributes. Most records
/// have none of their own (a callsite's constants travel as a shared set):
/// their count is written inline, without the call.
#[inline]
fn attributes(w: &mut Writer<'_>, lists: &[&[KeyValue]]) {
    if lists.iter().all(|l| l.is_empty()) {
        w.byte(0);
    } else {
        some_attributes(w, lists);
    }
}

fn some_attributes(w: &mut Writer<'_>, lists: &[&[KeyValue]]) {
    let len: usize = lists.iter().map(|l| l.len()).sum();
    w.varint(len as u64);
    pairs(w, lists);
}

/// The lists' key and value pairs, without their count.
fn pairs(w: &mut Writer<'_>, lists: &[&[KeyValue]]) {
    for kv in lists.iter().flat_map(|l| l.iter()) {
        w.str(kv.key.as_str());
        value(w, &kv.value);
    }
}

fn value(w: &mut Writer<'_>, v: &Value) {
    use wire::value_index as i;
    match v {
        Value::Bool(b) => {
            w.varint(i::BOOL.into());
            w.byte(u8::from(*b));
        }
        Value::I64(n) => {
            w.varint(i::I64.into());
            w.i64(*n);
        }
        Value::F64(f) => {
            w.varint(i::F64.into());
            w.f64(*f);
        }
        Value::String(s) => {
            w.varint(i::STR.into());
            w.str(s.as_str());
        }
        Value::Array(Array::Bool(a)) => {
            w.varint(i::BOOL_ARRAY.into());
            w.varint(a.len() as u64);
            for &b in a {
                w.byte(u8::from(b));
            }
        }
        Value::Array(Array::I64(a)) => {
            w.varint(i::I64_ARRAY.into());
            w.varint(a.len() as u64);
            for &n in a {
                w.i64(n);
            }
        }
        Value::Array(Array::F64(a)) => {
            w.varint(i::F64_ARRAY.into());
            w.varint(a.len() as u64);
            for &f in a {
                w.f64(f);
            }
        }
        Value::Array(Array::String(a)) => {
            w.varint(i::STR_ARRAY.into());
            w.varint(a.len() as u64);
            for s in a {
                w.str(s.as_str());
            }
        }
        // `Value` is non-exhaustive: a future kind travels as its text.
        other => {
            w.varint(i::STR.into());
            w.str(&other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    /// Two pipes of one instance (two threads, one seed) draw different
    /// ids.
    #[test]
    fn each_pipe_draws_its_own_ids() {
        let mut a = super::new_ids(1, 2);
        let mut b = super::new_ids(1, 2);
        let first: std::collections::HashSet<_> = (0..1000).map(|_| a.span_id()).collect();
        assert!((0..1000).all(|_| !first.contains(&b.span_id())));
    }
}

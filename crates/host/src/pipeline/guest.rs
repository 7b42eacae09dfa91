//! The door for batches from the pipe (`wasi-observe:pipe`): records a
//! guest SDK encoded in its own memory ([`wasi_observe_wire`]), decoded and
//! converted off the guest's thread.
//!
//! Each store has a [`PipeDecoder`]: its queue of batches not yet decoded,
//! the spans it has seen start and not end, and its instruments. `submit`
//! queues a batch and wakes the decode thread (one per pipeline), so the
//! guest pays for a copy, not for decoding. When the batches waiting in all
//! queues hold [`QUEUE_BYTES`], the guest's thread decodes its own queue
//! instead: slower, never lossy, and it bounds the memory a fast guest can
//! pin. A store's batches are decoded in order, by whichever thread holds
//! its lock.
//!
//! Guest input is hostile: a malformed record ends its batch (the rest is
//! dropped, counted in `pipe_batches_malformed`, warned about once); records
//! naming spans the decoder does not hold, bad kinds, times OTLP cannot
//! carry and unknown instruments are ignored or repaired and counted in
//! `invalid_input`; values are cut to the limits like every other guest
//! value; open spans are held within the store's byte budget. A panic while
//! decoding (a bug of ours, which the fuzz harness hunts) is caught: it
//! loses the rest of its batch, counted in `pipe_decode_panics`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use opentelemetry::logs::Severity;
use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, Key, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use wasi_observe_wire as wire;

use super::Telemetry;
use super::budget::{StoreBudget, attrs_bytes, event_bytes, link_bytes, status_bytes};
use super::instruments::{Description, Instrument, Kind, Number};
use super::intern;
use super::limits::Checker;
use super::logs::NewLog;
use super::stats::Stats;
use crate::scope::StandIn;

/// The decoder's maps, keyed by ids the guest chooses. foldhash's quality
/// hasher with a random seed: SipHash cost about 800 instructions per span
/// here (three lookups of an 8-byte id), and a guest cannot aim collisions
/// at a seed it never sees; the maps are bounded besides.
type Map<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

/// Bytes of batches that may wait for the decode thread, all stores
/// together, before guests decode their own.
pub(crate) const QUEUE_BYTES: usize = 64 << 20;

/// Largest batch `submit` takes (the SDK sends 64 KiB ones).
pub(crate) const MAX_BATCH: usize = 16 << 20;

/// Instruments one store may define through the pipe.
const MAX_INSTRUMENTS: usize = 4096;

/// Shared attribute sets one store may define through the pipe.
const MAX_SHARED: usize = 1024;

/// How often a busy decode thread looks for new batches. Guests do not wake
/// it per batch (a futex wake costs the guest's thread more than the batch
/// itself): it polls while there is work and sleeps when there is none.
const POLL: Duration = Duration::from_millis(2);

/// What wakes the decode thread.
enum Job {
    /// Batches are pending and the thread was idle.
    Wake,
    /// Reply once everything submitted before is decoded.
    Flush(Sender<()>),
}

/// The pipeline's decode thread, started on first use.
pub(crate) struct DecodeThread {
    jobs: OnceLock<Sender<Job>>,
    /// Bytes of batches queued in all stores.
    queued: AtomicUsize,
    /// Stores with batches to decode.
    pending: Mutex<Vec<Arc<PipeDecoder>>>,
    /// The thread is blocked waiting for a wake (not polling).
    idle: AtomicBool,
}

impl DecodeThread {
    pub(crate) fn new() -> Self {
        DecodeThread {
            jobs: OnceLock::new(),
            queued: AtomicUsize::new(0),
            pending: Mutex::new(Vec::new()),
            idle: AtomicBool::new(true),
        }
    }

    fn sender(self: &Arc<Self>) -> &Sender<Job> {
        self.jobs.get_or_init(|| {
            let (tx, rx) = crossbeam_channel::unbounded();
            let this = Arc::downgrade(self);
            std::thread::Builder::new()
                .name("wasi-observe-pipe".into())
                .spawn(move || decode_loop(&this, &rx))
                .expect("spawning the pipe's decode thread");
            tx
        })
    }

    /// Queues `decoder` for the decode thread; wakes the thread only if it
    /// sleeps.
    fn schedule(self: &Arc<Self>, decoder: Arc<PipeDecoder>) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(decoder);
        if self.idle.swap(false, Ordering::SeqCst) {
            return self.sender().send(Job::Wake).is_ok();
        }
        true
    }

    /// Decodes what every pending store queued; false if none was pending.
    fn drain_pending(&self) -> bool {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let any = !pending.is_empty();
        for decoder in pending {
            decoder.drain();
        }
        any
    }

    /// Waits until every batch submitted before has been decoded.
    pub(crate) fn flush(self: &Arc<Self>, timeout: Duration) -> bool {
        if self.jobs.get().is_none() {
            return true;
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.sender().send(Job::Flush(tx)).is_err() {
            return true;
        }
        rx.recv_timeout(timeout).is_ok()
    }
}

fn decode_loop(thread: &std::sync::Weak<DecodeThread>, jobs: &Receiver<Job>) {
    let mut polling = false;
    loop {
        let job = if polling {
            match jobs.recv_timeout(POLL) {
                Ok(job) => Some(job),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            }
        };
        let Some(thread) = thread.upgrade() else {
            return;
        };
        let worked = thread.drain_pending();
        if let Some(Job::Flush(done)) = job {
            let _ = done.send(());
        }
        polling = worked;
        if !polling {
            // Going to sleep: say so first, then look once more, so a store
            // scheduled in between is not left waiting.
            thread.idle.store(true, Ordering::SeqCst);
            if !thread
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
            {
                thread.idle.store(false, Ordering::SeqCst);
                polling = true;
            }
        }
    }
}

/// What a store queues for decoding.
enum Item {
    /// A batch, with the host's time when it arrived.
    Batch(Vec<u8>, u64),
    /// The store ended: export the spans still open (see
    /// [`PipeDecoder::end`]).
    End {
        reason: String,
        time: SystemTime,
        stand_ins: Vec<StandIn>,
    },
}

/// One store's end of the pipe.
pub(crate) struct PipeDecoder {
    telemetry: Telemetry,
    /// Batches not yet decoded, with the host's time when each arrived.
    /// Locked only to push and pop, so the guest never waits for decoding.
    queue: Mutex<Vec<Item>>,
    /// Held while decoding, so a store's batches are decoded in order.
    state: Mutex<State>,
    /// A decode job is queued or running for this store.
    scheduled: AtomicBool,
}

struct State {
    /// Spans started and not ended, by span id.
    open: Map<[u8; 8], Box<OpenSpan>>,
    /// Bytes the open spans hold.
    budget: StoreBudget,
    instruments: Map<u32, Option<Arc<Instrument>>>,
    /// Shared attribute sets, by the guest's number (held within the
    /// store's budget).
    shared: Map<u32, Vec<KeyValue>>,
    /// The store ended: spans still open were exported with an error.
    ended: Option<(String, SystemTime)>,
}

/// A span the guest started, as the host holds it until it ends.
struct OpenSpan {
    data: SpanData,
    bytes: usize,
}

impl OpenSpan {
    /// Takes `bytes` more for this span from the store's budget; false
    /// (the value is dropped, counted) if they do not fit.
    fn hold(&mut self, budget: &mut StoreBudget, check: &Checker<'_>, bytes: usize) -> bool {
        if !budget.fits(bytes, check.limits.store_bytes) {
            Stats::add(&check.stats.values_dropped_store_budget, 1);
            return false;
        }
        budget.add(bytes);
        self.bytes += bytes;
        true
    }
}

impl PipeDecoder {
    pub(crate) fn new(telemetry: Telemetry) -> Arc<Self> {
        Arc::new(PipeDecoder {
            telemetry,
            queue: Mutex::new(Vec::new()),
            state: Mutex::new(State {
                open: Map::default(),
                budget: StoreBudget::default(),
                instruments: Map::default(),
                shared: Map::default(),
                ended: None,
            }),
            scheduled: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a batch from the guest, received at `received` (ns since the
    /// epoch). Never waits for the decode thread.
    pub(crate) fn submit(self: &Arc<Self>, batch: Vec<u8>, received: u64) {
        let t = &self.telemetry;
        if batch.len() > MAX_BATCH {
            Stats::add(&t.counters().pipe_batches_rejected, 1);
            return;
        }
        let thread = t.decode_thread();
        let len = batch.len();
        let queued = thread.queued.fetch_add(len, Ordering::AcqRel) + len;
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Item::Batch(batch, received));
        if queued > QUEUE_BYTES {
            // The decode thread is behind: decode here, in order.
            self.drain();
            return;
        }
        if !self.scheduled.swap(true, Ordering::AcqRel) && !thread.schedule(self.clone()) {
            self.scheduled.store(false, Ordering::Release);
            self.drain();
        }
    }

    /// Decodes everything queued (the fuzz driver calls it too, so that
    /// decoding runs on its thread).
    pub(crate) fn drain(&self) {
        self.scheduled.store(false, Ordering::Release);
        let mut state = self.lock();
        loop {
            // All at once: one lock per drain, not per batch, so the guest's
            // thread seldom meets this one at the queue.
            let batches =
                std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
            if batches.is_empty() {
                break;
            }
            let bytes = batches
                .iter()
                .map(|item| match item {
                    Item::Batch(b, _) => b.len(),
                    Item::End { .. } => 0,
                })
                .sum();
            self.telemetry
                .decode_thread()
                .queued
                .fetch_sub(bytes, Ordering::AcqRel);
            for item in batches {
                // A panic here would be a bug of ours; caught, it costs the
                // rest of one batch (counted, warned about) instead of the
                // decode thread, or the host when the guest's thread drains.
                // The state stays usable: every step leaves it consistent
                // but for the byte budget, which may then count a span's
                // bytes too long.
                let decoded = panic::catch_unwind(AssertUnwindSafe(|| match item {
                    Item::Batch(batch, received) => state.decode(&self.telemetry, &batch, received),
                    Item::End {
                        reason,
                        time,
                        stand_ins,
                    } => state.end(&self.telemetry, &reason, time, stand_ins),
                }));
                if decoded.is_err() {
                    static WARNED: AtomicBool = AtomicBool::new(false);
                    Stats::add(&self.telemetry.counters().pipe_decode_panics, 1);
                    warn_once(
                        &WARNED,
                        "decoding a guest's batch panicked (a bug in wasi-observe: please report \
                         it); the rest of that batch was dropped (counted as pipe_decode_panics)",
                    );
                }
            }
        }
    }

    /// The store ended (the guest returned, trapped or was dropped): after
    /// the batches already queued, the decode thread exports the spans
    /// still open with an error status whose description is `reason`, ended
    /// at `time`, and the store's `stand_ins` for spans whose start never
    /// crossed. Queued like a batch, so the guest's thread does not decode.
    pub(crate) fn end(self: &Arc<Self>, reason: &str, time: SystemTime, stand_ins: Vec<StandIn>) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Item::End {
                reason: reason.to_string(),
                time,
                stand_ins,
            });
        let thread = self.telemetry.decode_thread();
        if !self.scheduled.swap(true, Ordering::AcqRel) && !thread.schedule(self.clone()) {
            self.scheduled.store(false, Ordering::Release);
            self.drain();
        }
    }
}

/// Nanoseconds since the epoch as an instant.
fn time(check: &Checker<'_>, nanos: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_nanos(nanos))
        .unwrap_or_else(|| {
            check.invalid();
            SystemTime::now()
        })
}

fn kind(check: &Checker<'_>, k: u8) -> SpanKind {
    match k {
        wire::kind::INTERNAL => SpanKind::Internal,
        wire::kind::SERVER => SpanKind::Server,
        wire::kind::CLIENT => SpanKind::Client,
        wire::kind::PRODUCER => SpanKind::Producer,
        wire::kind::CONSUMER => SpanKind::Consumer,
        _ => {
            check.invalid();
            SpanKind::Internal
        }
    }
}

fn flags(f: u8) -> TraceFlags {
    TraceFlags::new(f & TraceFlags::SAMPLED.to_u8())
}

/// A trace-state header; a malformed one is empty (counted).
fn trace_state(check: &Checker<'_>, header: &str) -> TraceState {
    if header.is_empty() {
        return TraceState::NONE;
    }
    header.parse().unwrap_or_else(|_| {
        check.invalid();
        TraceState::NONE
    })
}

fn string(check: &Checker<'_>, s: &str) -> String {
    if s.len() > check.limits.value_length {
        check.string(s.to_string())
    } else {
        s.to_string()
    }
}

/// A name, key or target: text that recurs, so kept once where it can be
/// ([`intern`]).
fn name(check: &Checker<'_>, s: &str) -> Cow<'static, str> {
    match (s.len() <= check.limits.value_length).then(|| intern::get(s)) {
        Some(Some(kept)) => Cow::Borrowed(kept),
        _ => Cow::Owned(string(check, s)),
    }
}

fn key(check: &Checker<'_>, s: &str) -> Key {
    match name(check, s) {
        Cow::Borrowed(kept) => Key::from_static_str(kept),
        Cow::Owned(owned) => Key::from(Arc::<str>::from(owned)),
    }
}

/// Attribute text is reference-counted: the export thread hands every
/// OpenTelemetry `SpanExporter` a copy of each batch (it takes the batch by
/// value, and a retry needs the batch kept), and a copy then copies no text.
fn shared_string(check: &Checker<'_>, s: &str) -> Arc<str> {
    if s.len() > check.limits.value_length {
        Arc::from(check.string(s.to_string()))
    } else {
        Arc::from(s)
    }
}

fn value(check: &Checker<'_>, v: wire::Value<'_>) -> Value {
    match v {
        wire::Value::Bool(b) => Value::Bool(b),
        wire::Value::I64(i) => Value::I64(i),
        wire::Value::F64(f) => Value::F64(f),
        wire::Value::Str(s) => Value::String(shared_string(check, s).into()),
        wire::Value::BoolArray(a) => Value::Array(Array::Bool(check.array(a))),
        wire::Value::I64Array(a) => Value::Array(Array::I64(check.array(a))),
        wire::Value::F64Array(a) => Value::Array(Array::F64(check.array(a))),
        wire::Value::StrArray(a) => Value::Array(Array::String(
            check
                .array(a)
                .into_iter()
                .map(|s| StringValue::from(shared_string(check, s)))
                .collect(),
        )),
    }
}

fn key_values<'a>(
    check: &'a Checker<'a>,
    attrs: wire::Attributes<'a>,
) -> impl Iterator<Item = KeyValue> + 'a {
    attrs
        .into_iter()
        .map(move |(k, v)| KeyValue::new(key(check, k), value(check, v)))
}

/// Fresh attributes within `max`, and how many were dropped.
fn attributes(
    check: &Checker<'_>,
    attrs: wire::Attributes<'_>,
    max: usize,
) -> (Vec<KeyValue>, u32) {
    let mut out = Vec::with_capacity(attrs.len().min(max));
    let dropped = check.merge_attributes(&mut out, key_values(check, attrs), max);
    (out, dropped)
}

/// An attribute cheap to clone: its text kept for good ([`intern`]; a
/// shared set is constants by construction, so kept at first sight) or
/// else reference-counted.
fn shareable(kv: KeyValue) -> KeyValue {
    let text = |s: &str| match intern::get_now(s) {
        Some(kept) => StringValue::from(kept),
        None => StringValue::from(Arc::<str>::from(s)),
    };
    let key = match intern::get_now(kv.key.as_str()) {
        Some(kept) => Key::from_static_str(kept),
        None => Key::from(Arc::<str>::from(kv.key.as_str())),
    };
    let value = match kv.value {
        Value::String(s) => Value::String(text(s.as_str())),
        Value::Array(Array::String(a)) => {
            Value::Array(Array::String(a.iter().map(|s| text(s.as_str())).collect()))
        }
        other => other,
    };
    KeyValue::new(key, value)
}

/// Shared set `id`'s attributes (none for an unknown one, counted), then
/// `own`, within `max`; and how many were dropped.
fn with_shared(
    sets: &Map<u32, Vec<KeyValue>>,
    check: &Checker<'_>,
    id: Option<u32>,
    own: wire::Attributes<'_>,
    max: usize,
) -> (Vec<KeyValue>, u32) {
    let set = id.and_then(|id| {
        let set = sets.get(&id);
        if set.is_none() {
            check.invalid();
        }
        set
    });
    let set = set.map_or(&[][..], Vec::as_slice);
    let mut out = Vec::with_capacity(set.len().saturating_add(own.len()).min(max));
    // A set's keys are already distinct and non-empty (checked when it was
    // shared), so only `own` needs the merge's search for duplicates.
    out.extend_from_slice(&set[..set.len().min(max)]);
    let cut = (set.len() - out.len()) as u32;
    Stats::add(&check.stats.attributes_dropped, cut.into());
    let dropped = check.merge_attributes(&mut out, key_values(check, own), max);
    (out, cut.saturating_add(dropped))
}

fn severity(check: &Checker<'_>, n: u8) -> (Severity, &'static str) {
    use Severity::*;
    const ALL: [(Severity, &str); 24] = [
        (Trace, "TRACE"),
        (Trace2, "TRACE2"),
        (Trace3, "TRACE3"),
        (Trace4, "TRACE4"),
        (Debug, "DEBUG"),
        (Debug2, "DEBUG2"),
        (Debug3, "DEBUG3"),
        (Debug4, "DEBUG4"),
        (Info, "INFO"),
        (Info2, "INFO2"),
        (Info3, "INFO3"),
        (Info4, "INFO4"),
        (Warn, "WARN"),
        (Warn2, "WARN2"),
        (Warn3, "WARN3"),
        (Warn4, "WARN4"),
        (Error, "ERROR"),
        (Error2, "ERROR2"),
        (Error3, "ERROR3"),
        (Error4, "ERROR4"),
        (Fatal, "FATAL"),
        (Fatal2, "FATAL2"),
        (Fatal3, "FATAL3"),
        (Fatal4, "FATAL4"),
    ];
    match n.checked_sub(1).and_then(|i| ALL.get(usize::from(i))) {
        Some(&s) => s,
        None => {
            check.invalid();
            (Info, "INFO")
        }
    }
}

impl State {
    /// See [`PipeDecoder::end`]; a second end does nothing.
    fn end(&mut self, t: &Telemetry, reason: &str, time: SystemTime, stand_ins: Vec<StandIn>) {
        if self.ended.is_some() {
            return;
        }
        self.ended = Some((reason.to_string(), time));
        let open = std::mem::take(&mut self.open);
        self.budget = StoreBudget::default();
        for (cx, record) in stand_ins {
            if !open.contains_key(&cx.span_id().to_bytes()) {
                t.end_span(cx, record, time);
            }
        }
        for (_, span) in open {
            let mut data = span.data;
            data.status = Status::error(reason.to_string());
            data.end_time = time.max(data.start_time);
            t.export_finished_span(data, None);
        }
    }

    fn decode(&mut self, t: &Telemetry, batch: &[u8], received: u64) {
        let check = t.checker();
        for record in wire::decode(batch) {
            match record {
                Ok(record) => self.apply(t, &check, record, received),
                Err(_) => {
                    static WARNED: AtomicBool = AtomicBool::new(false);
                    Stats::add(&t.counters().pipe_batches_malformed, 1);
                    warn_once(
                        &WARNED,
                        "a guest submitted a malformed batch; its records from the first \
                         malformed one on were dropped (counted as pipe_batches_malformed)",
                    );
                }
            }
        }
    }

    fn apply(
        &mut self,
        t: &Telemetry,
        check: &Checker<'_>,
        record: wire::Decoded<'_>,
        received: u64,
    ) {
        let limits = check.limits;
        #[cfg(test)]
        if matches!(&record, wire::Record::Start(s) if s.name == tests::PANIC) {
            panic!("the test asked the decoder to panic");
        }
        match record {
            wire::Record::Start(s) => self.start(t, check, s),
            wire::Record::End(e) => {
                if let Some((data, held)) = self.finish(check, e, received) {
                    t.export_finished_span(data, Some(held));
                }
            }
            wire::Record::Event(e) => self.event(check, e),
            wire::Record::EventLog(e) => {
                let log = wire::Log {
                    time: e.event.time,
                    severity: e.severity,
                    target: e.target,
                    body: e.body_is_name.then_some(e.event.name),
                    context: Some(wire::LogContext {
                        trace_id: e.trace_id,
                        span_id: e.event.span_id,
                        flags: e.flags,
                    }),
                    attributes: e.log_attributes,
                };
                self.event(check, e.event);
                Self::log(t, check, log, received);
            }
            wire::Record::Link(l) => {
                let Some(span) = self.open.get_mut(&l.span_id) else {
                    check.invalid();
                    return;
                };
                let linked = SpanContext::new(
                    TraceId::from_bytes(l.trace_id),
                    SpanId::from_bytes(l.linked_span_id),
                    flags(l.flags),
                    l.remote,
                    trace_state(check, l.trace_state),
                );
                let d = &mut span.data;
                if !linked.is_valid() || d.links.len() >= limits.links_per_span {
                    d.links.dropped_count = d.links.dropped_count.saturating_add(1);
                    Stats::add(&check.stats.links_dropped, 1);
                    return;
                }
                let (attrs, dropped) = attributes(check, l.attributes, limits.attributes_per_link);
                let link = Link::new(linked, attrs, dropped);
                if span.hold(&mut self.budget, check, link_bytes(&link)) {
                    span.data.links.links.push(link);
                }
            }
            wire::Record::Reparent(r) => {
                let Some(span) = self.open.get_mut(&r.span_id) else {
                    check.invalid();
                    return;
                };
                let d = &mut span.data;
                let trace_id = TraceId::from_bytes(r.trace_id);
                if trace_id == TraceId::INVALID {
                    check.invalid();
                    return;
                }
                d.span_context = SpanContext::new(
                    trace_id,
                    d.span_context.span_id(),
                    flags(r.flags),
                    false,
                    d.span_context.trace_state().clone(),
                );
                d.parent_span_id = SpanId::from_bytes(r.parent);
                d.parent_span_is_remote = r.parent_remote;
            }
            wire::Record::Log(l) => Self::log(t, check, l, received),
            wire::Record::Share(set) => {
                if self.shared.len() >= MAX_SHARED && !self.shared.contains_key(&set.id) {
                    check.invalid();
                    return;
                }
                let (attrs, _) = attributes(check, set.attributes, limits.attributes_per_span);
                // Reference-counted text, so that every span and event
                // naming the set clones it without allocating.
                let attrs: Vec<KeyValue> = attrs.into_iter().map(shareable).collect();
                let bytes = attrs_bytes(&attrs);
                if !self.budget.fits(bytes, limits.store_bytes) {
                    Stats::add(&check.stats.values_dropped_store_budget, 1);
                    return;
                }
                self.budget.add(bytes);
                if let Some(old) = self.shared.insert(set.id, attrs) {
                    self.budget.sub(attrs_bytes(&old));
                }
            }
            wire::Record::Instrument(i) => {
                if !t.signals().metrics {
                    return;
                }
                if self.instruments.len() >= MAX_INSTRUMENTS
                    && !self.instruments.contains_key(&i.id)
                {
                    check.invalid();
                    return;
                }
                let kind = match i.kind {
                    wire::instrument_kind::COUNTER => Some(Kind::Counter),
                    wire::instrument_kind::UP_DOWN_COUNTER => Some(Kind::UpDownCounter),
                    wire::instrument_kind::HISTOGRAM => Some(Kind::Histogram),
                    wire::instrument_kind::GAUGE => Some(Kind::Gauge),
                    _ => None,
                };
                let instrument = kind.and_then(|kind| {
                    t.instrument(kind, i.name, || Description {
                        description: (!i.description.is_empty()).then(|| i.description.to_string()),
                        unit: (!i.unit.is_empty()).then(|| i.unit.to_string()),
                        boundaries: i.boundaries,
                    })
                });
                if instrument.is_none() {
                    check.invalid();
                }
                self.instruments.insert(i.id, instrument);
            }
            wire::Record::Measure(m) => {
                if !t.signals().metrics {
                    return;
                }
                let instrument = match self.instruments.get(&m.instrument) {
                    Some(i) => i.clone(),
                    None => {
                        check.invalid();
                        None
                    }
                };
                let attrs = match instrument {
                    Some(_) => attributes(check, m.attributes, limits.attributes_per_span).0,
                    None => Vec::new(),
                };
                let value = match m.value {
                    wire::Number::I64(v) => Number::Int(v),
                    wire::Number::F64(v) => Number::Float(v),
                };
                t.record(instrument.as_deref(), value, &attrs);
            }
        }
    }

    /// Ends an open span: the span, and the bytes it will hold in the
    /// export queue (what `Held::held_bytes` would find), counted as it was
    /// built rather than walked again.
    fn finish(
        &mut self,
        check: &Checker<'_>,
        e: wire::End<'_, wire::Attributes<'_>>,
        received: u64,
    ) -> Option<(SpanData, usize)> {
        let Some(mut span) = self.open.remove(&e.span_id) else {
            check.invalid();
            return None;
        };
        self.budget.sub(span.bytes);
        let mut held = span.bytes.saturating_sub(size_of::<OpenSpan>());
        let d = &mut span.data;
        // 0: the time the batch was received (the `close` call).
        let end = time(check, if e.time == 0 { received } else { e.time });
        d.end_time = end.max(d.start_time);
        if !e.attributes.is_empty() {
            let before = attrs_bytes(&d.attributes);
            let dropped = check.merge_attributes(
                &mut d.attributes,
                key_values(check, e.attributes),
                check.limits.attributes_per_span,
            );
            d.dropped_attributes_count = d.dropped_attributes_count.saturating_add(dropped);
            held = (held + attrs_bytes(&d.attributes)).saturating_sub(before);
        }
        d.status = match e.status {
            wire::status::OK => Status::Ok,
            wire::status::ERROR => Status::error(string(check, e.description)),
            wire::status::UNSET => Status::Unset,
            _ => {
                check.invalid();
                Status::Unset
            }
        };
        held += status_bytes(&d.status);
        if let Some(new) = e.name {
            let new = name(check, new);
            held = (held + new.len()).saturating_sub(d.name.len());
            d.name = new;
        }
        Some((span.data, held))
    }

    fn event(&mut self, check: &Checker<'_>, e: wire::Event<'_, wire::Attributes<'_>>) {
        let limits = check.limits;
        let Some(span) = self.open.get_mut(&e.span_id) else {
            check.invalid();
            return;
        };
        let d = &mut span.data;
        if d.events.len() >= limits.events_per_span {
            d.events.dropped_count = d.events.dropped_count.saturating_add(1);
            Stats::add(&check.stats.events_dropped, 1);
            return;
        }
        let (attrs, dropped) = with_shared(
            &self.shared,
            check,
            e.shared,
            e.attributes,
            limits.attributes_per_event,
        );
        let event = Event::new(name(check, e.name), time(check, e.time), attrs, dropped);
        if span.hold(&mut self.budget, check, event_bytes(&event)) {
            span.data.events.events.push(event);
        }
    }

    fn log(
        t: &Telemetry,
        check: &Checker<'_>,
        l: wire::Log<'_, wire::Attributes<'_>>,
        received: u64,
    ) {
        if !t.signals().logs {
            return;
        }
        let (attributes, _) = attributes(check, l.attributes, usize::MAX);
        let cx = l.context.map(|c| {
            SpanContext::new(
                TraceId::from_bytes(c.trace_id),
                SpanId::from_bytes(c.span_id),
                flags(c.flags),
                false,
                TraceState::NONE,
            )
        });
        let (severity, severity_text) = severity(check, l.severity);
        t.emit_log(NewLog {
            severity,
            severity_text,
            target: name(check, l.target),
            body: l.body.map(str::to_string),
            attributes,
            span: cx.as_ref(),
            // 0: made as the batch crossed (see `wire::Log`).
            time: Some(time(check, if l.time == 0 { received } else { l.time })),
        });
    }

    fn start(
        &mut self,
        t: &Telemetry,
        check: &Checker<'_>,
        s: wire::Start<'_, wire::Attributes<'_>>,
    ) {
        if self.ended.is_some() || !t.signals().traces {
            return;
        }
        let limits = check.limits;
        let cx = SpanContext::new(
            TraceId::from_bytes(s.trace_id),
            SpanId::from_bytes(s.span_id),
            flags(s.flags),
            false,
            trace_state(check, s.trace_state),
        );
        if !cx.is_valid() || self.open.contains_key(&s.span_id) {
            check.invalid();
            return;
        }
        if self.open.len() >= limits.open_spans_per_store {
            Stats::add(&check.stats.spans_dropped_open_limit, 1);
            return;
        }
        let (attributes, dropped) = with_shared(
            &self.shared,
            check,
            s.shared,
            s.attributes,
            limits.attributes_per_span,
        );
        let name = name(check, s.name);
        let bytes = size_of::<OpenSpan>()
            + size_of::<SpanData>()
            + name.len()
            + attrs_bytes(&attributes)
            + s.trace_state.len();
        if !self.budget.fits(bytes, limits.store_bytes) {
            Stats::add(&check.stats.spans_dropped_store_budget, 1);
            return;
        }
        self.budget.add(bytes);
        let start = time(check, s.time);
        let data = SpanData {
            span_context: cx,
            parent_span_id: SpanId::from_bytes(s.parent),
            parent_span_is_remote: s.parent_remote,
            span_kind: kind(check, s.kind),
            name,
            start_time: start,
            end_time: start,
            attributes,
            dropped_attributes_count: dropped,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: t.guest_scope().clone(),
        };
        self.open
            .insert(s.span_id, Box::new(OpenSpan { data, bytes }));
    }
}

/// Prints `message` the first time `warned` is seen unset.
fn warn_once(warned: &AtomicBool, message: &str) {
    if !warned.swap(true, Ordering::Relaxed) {
        eprintln!("wasi-observe: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Limits;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler};

    fn pipeline(limits: Limits) -> (Telemetry, InMemorySpanExporter) {
        let spans = InMemorySpanExporter::default();
        let t = Telemetry::builder()
            .with_limits(limits)
            .with_sampler(Sampler::AlwaysOn)
            .with_span_exporter(spans.clone())
            .build()
            .unwrap();
        (t, spans)
    }

    fn start(id: u8, parent: u8, name: &str) -> wire::Decoded<'_> {
        wire::Record::Start(wire::Start {
            span_id: [id; 8],
            trace_id: [7; 16],
            parent: [parent; 8],
            parent_remote: false,
            flags: 1,
            kind: wire::kind::SERVER,
            time: 1_000,
            name,
            trace_state: "",
            shared: None,
            attributes: vec![("a", wire::Value::I64(1))],
        })
    }

    fn end(id: u8, time: u64) -> wire::Decoded<'static> {
        wire::Record::End(wire::End {
            span_id: [id; 8],
            time,
            status: wire::status::ERROR,
            description: "bad",
            name: None,
            attributes: vec![("b", wire::Value::Str("x"))],
        })
    }

    fn event_log(span: u8, body_is_name: bool) -> wire::Decoded<'static> {
        wire::Record::EventLog(wire::EventLog {
            event: wire::Event {
                span_id: [span; 8],
                time: 2_000,
                name: "ready",
                shared: None,
                attributes: vec![("e", wire::Value::I64(1))],
            },
            trace_id: [7; 16],
            flags: 1,
            severity: 13,
            target: "app",
            body_is_name,
            log_attributes: vec![("l", wire::Value::Bool(true))],
        })
    }

    fn batch(records: &[wire::Decoded<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            wire::encode(r, &mut out);
        }
        out
    }

    /// A shared set comes first, cut to the limit (counted); the record's
    /// own attributes replace a set's value of the same key and are cut
    /// within what is left; an unknown set is counted and gives nothing.
    #[test]
    fn shared_sets_merge_with_own_attributes_within_the_limit() {
        let limits = Limits::default();
        let stats = Stats::default();
        let check = Checker {
            limits: &limits,
            stats: &stats,
        };
        let set: Vec<KeyValue> = [("a", 1), ("b", 2), ("c", 3)]
            .map(|(k, v)| KeyValue::new(k, v as i64))
            .into();
        let sets: Map<u32, Vec<KeyValue>> = [(7, set)].into_iter().collect();
        let own = || vec![("b", wire::Value::I64(20)), ("d", wire::Value::I64(4))];
        let pairs = |attrs: &[KeyValue]| -> Vec<(String, Value)> {
            attrs
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.clone()))
                .collect()
        };
        let kv = |k: &str, v: i64| (k.to_string(), Value::I64(v));

        let (out, dropped) = with_shared(&sets, &check, Some(7), own(), 4);
        assert_eq!(
            pairs(&out),
            [kv("a", 1), kv("b", 20), kv("c", 3), kv("d", 4)]
        );
        assert_eq!(dropped, 0);

        let (out, dropped) = with_shared(&sets, &check, Some(7), own(), 3);
        assert_eq!(pairs(&out), [kv("a", 1), kv("b", 20), kv("c", 3)]);
        assert_eq!(dropped, 1, "d did not fit");

        let (out, dropped) = with_shared(&sets, &check, Some(7), own(), 2);
        assert_eq!(pairs(&out), [kv("a", 1), kv("b", 20)]);
        assert_eq!(dropped, 2, "c cut from the set, d did not fit");
        assert_eq!(stats.snapshot().attributes_dropped, 3);

        let (out, dropped) = with_shared(&sets, &check, Some(8), own(), 4);
        assert_eq!(pairs(&out), [kv("b", 20), kv("d", 4)]);
        assert_eq!(dropped, 0);
        assert_eq!(stats.snapshot().invalid_input, 1, "the unknown set");
    }

    /// A span name that makes the decoder panic, in test builds only.
    pub(super) const PANIC: &str = "\0panic";

    /// A panic while decoding loses the rest of its batch, counted; the
    /// decode thread lives on, records before it in the batch stand, and
    /// later batches decode as before.
    #[test]
    fn a_panic_while_decoding_costs_the_rest_of_its_batch() {
        let (t, spans) = pipeline(Limits::default());
        let d = PipeDecoder::new(t.clone());
        d.submit(
            batch(&[start(1, 0, "kept"), start(2, 0, PANIC), start(3, 0, "lost")]),
            5,
        );
        assert!(t.decode_thread().flush(Duration::from_secs(10)));
        d.submit(
            batch(&[end(1, 3_000), end(3, 3_000), start(4, 0, "later")]),
            9,
        );
        d.submit(batch(&[end(4, 4_000)]), 10);
        t.force_flush().unwrap();
        let mut names: Vec<_> = spans
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .map(|s| s.name.to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["kept", "later"]);
        let stats = t.stats();
        assert_eq!(stats.pipe_decode_panics, 1);
        assert_eq!(stats.invalid_input, 1, "the end of span 3, never started");
        assert!(stats.drops().contains(&("all", "pipe_decode_panic", 1)));
    }

    /// The bytes an ended span holds in the export queue, counted as the
    /// decoder builds it, are what `Held` finds walking the span: with a
    /// shared set, a trace-state, an event, a link, attributes set at the
    /// end (one replacing a start attribute), an error and a new name.
    #[test]
    fn an_ended_span_holds_the_bytes_counted_while_it_was_built() {
        use crate::pipeline::budget::Held;
        let (t, _spans) = pipeline(Limits::default());
        let d = PipeDecoder::new(t.clone());
        let mut state = d.lock();
        let check = t.checker();
        let mut s = match start(1, 0, "first") {
            wire::Record::Start(s) => s,
            _ => unreachable!(),
        };
        s.trace_state = "k=v";
        s.shared = Some(3);
        let records = [
            wire::Record::Share(wire::Share {
                id: 3,
                attributes: vec![("code.lineno", wire::Value::I64(7))],
            }),
            wire::Record::Start(s),
            event_log(1, true),
            wire::Record::Link(wire::Link {
                span_id: [1; 8],
                trace_id: [9; 16],
                linked_span_id: [9; 8],
                flags: 1,
                remote: true,
                trace_state: "",
                attributes: vec![("why", wire::Value::Str("retry"))],
            }),
        ];
        for r in records {
            state.apply(&t, &check, r, 5);
        }
        let end = wire::End {
            span_id: [1; 8],
            time: 3_000,
            status: wire::status::ERROR,
            description: "it broke",
            name: Some("renamed at the end"),
            attributes: vec![
                ("a", wire::Value::Str("now text")),
                ("c", wire::Value::StrArray(vec!["x", "yz"])),
            ],
        };
        let (data, held) = state.finish(&check, end, 5).unwrap();
        assert_eq!(data.name, "renamed at the end");
        assert_eq!(data.attributes.len(), 3);
        assert_eq!((data.events.len(), data.links.len()), (1, 1));
        assert_eq!(data.span_context.trace_state().header(), "k=v");
        assert_eq!(held, data.held_bytes());
    }

    #[test]
    fn spans_cross_in_batches_and_end_at_the_close_time() {
        let (t, spans) = pipeline(Limits::default());
        let d = PipeDecoder::new(t.clone());
        d.submit(batch(&[start(1, 0, "outer"), start(2, 1, "inner")]), 5);
        // Time 0: the span ends when the batch carrying its end arrived.
        d.submit(batch(&[end(2, 3_000), end(1, 0)]), 9_000);
        t.force_flush().unwrap();
        let got = spans.get_finished_spans().unwrap();
        assert_eq!(got.len(), 2);
        let outer = got.iter().find(|s| s.name == "outer").unwrap();
        let inner = got.iter().find(|s| s.name == "inner").unwrap();
        assert_eq!(inner.parent_span_id, outer.span_context.span_id());
        assert_eq!(outer.span_kind, opentelemetry::trace::SpanKind::Server);
        assert_eq!(outer.end_time, UNIX_EPOCH + Duration::from_nanos(9_000));
        assert_eq!(inner.end_time, UNIX_EPOCH + Duration::from_nanos(3_000));
        assert_eq!(inner.status, Status::error("bad"));
        assert_eq!(inner.attributes.len(), 2);
    }

    /// One `EventLog` record gives the span its event and the log record of
    /// the same moment, in the span's trace, with the event's name as its
    /// body (or none); the log record is kept even when its span is not
    /// open here (counted as invalid for the event).
    #[test]
    fn an_event_log_record_is_an_event_and_a_log_record() {
        let spans = InMemorySpanExporter::default();
        let logs = opentelemetry_sdk::logs::InMemoryLogExporter::default();
        let t = Telemetry::builder()
            .with_sampler(Sampler::AlwaysOn)
            .with_span_exporter(spans.clone())
            .with_log_exporter(logs.clone())
            .build()
            .unwrap();
        let d = PipeDecoder::new(t.clone());
        d.submit(
            batch(&[
                start(1, 0, "s"),
                event_log(1, true),
                event_log(1, false),
                end(1, 3_000),
                event_log(9, true),
            ]),
            5,
        );
        t.force_flush().unwrap();
        let got = spans.get_finished_spans().unwrap();
        let events = &got[0].events.events;
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].name, "ready");
        assert_eq!(
            events[0].timestamp,
            UNIX_EPOCH + Duration::from_nanos(2_000)
        );
        assert_eq!(events[0].attributes, vec![KeyValue::new("e", 1)]);
        let records = logs.get_emitted_logs().unwrap();
        assert_eq!(records.len(), 3);
        for (i, r) in records.iter().enumerate() {
            let r = &r.record;
            let cx = r.trace_context().unwrap();
            assert_eq!(cx.trace_id, TraceId::from_bytes([7; 16]));
            let span = if i == 2 { 9 } else { 1 };
            assert_eq!(cx.span_id, SpanId::from_bytes([span; 8]));
            assert_eq!(r.severity_number(), Some(Severity::Warn));
            assert_eq!(r.target().map(|t| t.as_ref()), Some("app"));
            assert_eq!(
                r.timestamp(),
                Some(UNIX_EPOCH + Duration::from_nanos(2_000))
            );
            let body = r.body().map(|b| format!("{b:?}"));
            if i == 1 {
                assert_eq!(body, None);
            } else {
                assert!(body.unwrap().contains("ready"));
            }
            assert!(r.attributes_iter().any(|(k, _)| k.as_str() == "l"));
        }
        assert_eq!(
            t.counters().snapshot().invalid_input,
            1,
            "the event on span 9"
        );
    }

    #[test]
    fn spans_open_at_the_end_are_exported_with_an_error() {
        let (t, spans) = pipeline(Limits::default());
        let d = PipeDecoder::new(t.clone());
        d.submit(batch(&[start(1, 0, "left open")]), 5);
        d.end("the guest trapped", SystemTime::now(), Vec::new());
        // A late batch after the end is not decoded into open spans.
        d.submit(batch(&[start(3, 0, "late")]), 6);
        t.force_flush().unwrap();
        let got = spans.get_finished_spans().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status, Status::error("the guest trapped"));
    }

    #[test]
    fn open_spans_are_held_within_the_store_budget() {
        let (t, spans) = pipeline(Limits {
            store_bytes: 4096,
            ..Limits::default()
        });
        let d = PipeDecoder::new(t.clone());
        let long = "n".repeat(200);
        let records: Vec<_> = (1..=50u8).map(|i| start(i, 0, &long)).collect();
        d.submit(batch(&records), 5);
        let ends: Vec<_> = (1..=50u8).map(|i| end(i, 10)).collect();
        d.submit(batch(&ends), 6);
        t.force_flush().unwrap();
        let exported = spans.get_finished_spans().unwrap().len() as u64;
        let stats = t.stats();
        assert!(exported > 0 && exported < 50, "{exported}");
        assert_eq!(stats.spans_dropped_store_budget, 50 - exported);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let (t, _spans) = pipeline(Limits::default());
        let d = PipeDecoder::new(t.clone());
        let valid = batch(&[start(1, 0, "s"), event_log(1, true), end(1, 0)]);
        // Every single-byte corruption and every cut of a valid batch, and
        // pseudo-random noise.
        for i in 0..valid.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = valid.clone();
                bad[i] ^= flip;
                d.submit(bad, 1);
            }
            d.submit(valid[..i].to_vec(), 1);
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let noise: Vec<u8> = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            d.submit(noise, 1);
        }
        t.force_flush().unwrap();
        assert!(t.stats().pipe_batches_malformed > 0);
    }
}

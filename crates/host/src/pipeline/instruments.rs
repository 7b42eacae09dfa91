//! Metric instruments: one registry per pipeline, shared by every store, and
//! the one place a measurement is recorded.
//!
//! An instrument is identified by its kind and name. Integer and floating
//! point measurements go to separate SDK instruments of the same name, made
//! on first use. Rejected, each counted in `measurements_dropped`: names that
//! are not valid OpenTelemetry instrument names, negative or non-finite
//! increments of a counter, negative or non-finite histogram values,
//! non-finite values of the other kinds, and new instruments beyond
//! `WASI_OBSERVE_MAX_INSTRUMENTS`.
//!
//! Series (an instrument's distinct attribute sets) live as long as the
//! process, so no one may inflate them: string attribute values are cut to
//! [`Limits::metric_value_length`](super::Limits::metric_value_length), each
//! instrument (the host's own included) keeps at most
//! `series_per_instrument` series, and all series' attributes together at
//! most `metric_bytes`. A measurement of a series beyond these is dropped,
//! counted in `measurements_dropped_series_limit`, rather than folded into
//! the SDK's overflow series where it would be lost silently.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};
use opentelemetry::{Array, KeyValue, StringValue, Value};

use super::Telemetry;
use super::budget::{SharedBudget, attrs_bytes};
use super::limits::{Checker, Limits, truncate};
use super::stats::Stats;

/// The kinds of instrument a guest can record into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    UpDownCounter,
    Histogram,
    Gauge,
}

const KINDS: usize = 4;

impl Kind {
    fn index(self) -> usize {
        self as usize
    }
}

/// One measurement's value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Number {
    Int(i64),
    Float(f64),
}

/// What a guest may say of an instrument when it first makes it.
#[derive(Default)]
pub(crate) struct Description {
    pub description: Option<String>,
    pub unit: Option<String>,
    pub boundaries: Option<Vec<f64>>,
}

/// One named instrument and its SDK instruments, made on first use.
pub(crate) struct Instrument {
    kind: Kind,
    name: String,
    description: Option<String>,
    unit: Option<String>,
    boundaries: Option<Vec<f64>>,
    int: OnceLock<IntInstrument>,
    float: OnceLock<FloatInstrument>,
    series: Series,
}

/// The series an instrument has, by a hash of their attribute sets.
#[derive(Default)]
struct Series {
    /// Read-locked on every measurement (a known series, the common case),
    /// write-locked only to add one, so that stores on other threads do
    /// not queue behind each other. The keys are hashes already (see
    /// [`Instruments::hasher`]), so a fast hasher will do.
    seen: RwLock<HashSet<u64, foldhash::fast::RandomState>>,
    warned: AtomicBool,
}

impl Series {
    /// Whether a measurement with `attrs` may be recorded: its series is
    /// known, or there is room for a new one (whose bytes it takes).
    fn admits(&self, attrs: &[KeyValue], limits: &Limits, all: &Instruments, name: &str) -> bool {
        let key = all.series_key(attrs);
        if self
            .seen
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return true;
        }
        let mut seen = self.seen.write().unwrap_or_else(|e| e.into_inner());
        if seen.contains(&key) {
            return true;
        }
        if seen.len() >= limits.series_per_instrument {
            if !self.warned.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "wasi-observe: instrument {name:?} reached {} series (WASI_OBSERVE_MAX_SERIES); \
                     dropping measurements of new attribute sets (counted, reported at exit)",
                    limits.series_per_instrument
                );
            }
            return false;
        }
        if !all.series_bytes.take(attrs_bytes(attrs)) {
            return false;
        }
        seen.insert(key);
        true
    }
}

enum IntInstrument {
    Counter(Counter<u64>),
    UpDown(UpDownCounter<i64>),
    Gauge(Gauge<i64>),
}

enum FloatInstrument {
    Counter(Counter<f64>),
    UpDown(UpDownCounter<f64>),
    Histogram(Histogram<f64>),
    Gauge(Gauge<f64>),
}

macro_rules! build {
    ($self:ident, $meter:ident, $method:ident) => {{
        let mut b = $meter.$method($self.name.clone());
        if let Some(d) = &$self.description {
            b = b.with_description(d.clone());
        }
        if let Some(u) = &$self.unit {
            b = b.with_unit(u.clone());
        }
        b
    }};
}

impl Instrument {
    /// Records one measurement; false if the value was rejected.
    fn record(&self, meter: &Meter, value: Number, attrs: &[KeyValue]) -> bool {
        // Integer histogram values go to the float histogram: the SDK's
        // integer histogram adds up its sum with `+` and overflows (a panic in
        // a debug build) when a guest records huge values, found by fuzzing.
        // OTLP exports histogram sums, minimums and maximums as doubles anyway.
        let value = match (self.kind, value) {
            (Kind::Histogram, Number::Int(v)) if v < 0 => return false,
            (Kind::Histogram, Number::Int(v)) => Number::Float(v as f64),
            (_, value) => value,
        };
        match value {
            Number::Int(v) => {
                let i = self.int.get_or_init(|| match self.kind {
                    Kind::Counter => {
                        IntInstrument::Counter(build!(self, meter, u64_counter).build())
                    }
                    Kind::UpDownCounter => {
                        IntInstrument::UpDown(build!(self, meter, i64_up_down_counter).build())
                    }
                    // Histograms take the float path (above).
                    Kind::Histogram | Kind::Gauge => {
                        IntInstrument::Gauge(build!(self, meter, i64_gauge).build())
                    }
                });
                match i {
                    IntInstrument::Counter(c) => match u64::try_from(v) {
                        Ok(v) => c.add(v, attrs),
                        Err(_) => return false,
                    },
                    IntInstrument::UpDown(c) => c.add(v, attrs),
                    IntInstrument::Gauge(g) => g.record(v, attrs),
                }
            }
            Number::Float(v) => {
                if !v.is_finite() {
                    return false;
                }
                let f = self.float.get_or_init(|| match self.kind {
                    Kind::Counter => {
                        FloatInstrument::Counter(build!(self, meter, f64_counter).build())
                    }
                    Kind::UpDownCounter => {
                        FloatInstrument::UpDown(build!(self, meter, f64_up_down_counter).build())
                    }
                    Kind::Histogram => {
                        let mut b = build!(self, meter, f64_histogram);
                        if let Some(bounds) = &self.boundaries {
                            b = b.with_boundaries(bounds.clone());
                        }
                        FloatInstrument::Histogram(b.build())
                    }
                    Kind::Gauge => FloatInstrument::Gauge(build!(self, meter, f64_gauge).build()),
                });
                match f {
                    FloatInstrument::Counter(c) if v >= 0.0 => c.add(v, attrs),
                    FloatInstrument::UpDown(c) => c.add(v, attrs),
                    FloatInstrument::Histogram(h) if v >= 0.0 => h.record(v, attrs),
                    FloatInstrument::Gauge(g) => g.record(v, attrs),
                    _ => return false,
                }
            }
        }
        true
    }
}

/// One of the host's own histograms and its series.
type HostEntry = (Histogram<f64>, Arc<Series>);

/// One name's instrument of each kind.
type ByKind = [Option<Arc<Instrument>>; KINDS];

/// Every instrument of a pipeline, by name and kind, and the host's own.
pub(super) struct Instruments {
    max: usize,
    /// Guests' instruments by name: keyed at random, as guests choose the
    /// names.
    by_name: Mutex<HashMap<String, ByKind, foldhash::quality::RandomState>>,
    /// The host's, by their constant names (looked up once per request).
    host: Mutex<HashMap<&'static str, HostEntry, foldhash::fast::RandomState>>,
    /// Bytes all series' attributes hold.
    series_bytes: SharedBudget,
    /// Keyed at random, so that no guest can choose attribute sets whose
    /// hashes collide (a collision would admit a series uncounted): a guest
    /// never sees a hash, so it cannot search for one. foldhash rather than
    /// SipHash: every measurement hashes its attributes here (SipHash was
    /// about 1 200 instructions of a `serve` request's 14 000 for its
    /// SERVER span and duration metric).
    hasher: foldhash::quality::RandomState,
}

impl Instruments {
    pub(super) fn new(limits: &Limits) -> Self {
        Instruments {
            max: limits.instruments,
            by_name: Mutex::default(),
            host: Mutex::default(),
            series_bytes: SharedBudget::named(
                limits.metric_bytes,
                "the attributes of metric series",
                "WASI_OBSERVE_MAX_METRIC_BYTES",
            ),
            hasher: foldhash::quality::RandomState::default(),
        }
    }

    /// A hash of an attribute set that does not depend on the order of its
    /// attributes (the SDK sorts them too).
    fn series_key(&self, attrs: &[KeyValue]) -> u64 {
        attrs.iter().fold(0u64, |acc, kv| {
            let mut h = self.hasher.build_hasher();
            kv.key.as_str().hash(&mut h);
            hash_value(&kv.value, &mut h);
            acc.wrapping_add(h.finish())
        })
    }

    /// The instrument `name` of `kind`, made with `describe()` if it is new.
    /// `None` if the name is invalid or the limit is reached.
    fn get(
        &self,
        kind: Kind,
        name: &str,
        describe: impl FnOnce() -> Description,
        check: &Checker<'_>,
    ) -> Option<Arc<Instrument>> {
        let mut map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = map.get(name).and_then(|kinds| kinds[kind.index()].clone()) {
            return Some(i);
        }
        if !valid_name(name) {
            return None;
        }
        let count: usize = map.values().map(|k| k.iter().flatten().count()).sum();
        if count >= self.max {
            return None;
        }
        let d = describe();
        let unit = d.unit.filter(|u| {
            let ok = u.len() <= 63 && u.is_ascii();
            if !ok {
                check.invalid();
            }
            ok
        });
        let boundaries = d.boundaries.filter(|b| {
            let ok = b.len() <= 1000
                && b.iter().all(|x| x.is_finite())
                && b.windows(2).all(|w| w[0] < w[1]);
            if !ok {
                check.invalid();
            }
            ok
        });
        let instrument = Arc::new(Instrument {
            kind,
            name: name.to_string(),
            description: d.description.map(|d| check.string(d)),
            unit,
            boundaries,
            int: OnceLock::new(),
            float: OnceLock::new(),
            series: Series::default(),
        });
        map.entry(name.to_string()).or_default()[kind.index()] = Some(instrument.clone());
        Some(instrument)
    }
}

fn hash_value(v: &Value, h: &mut impl Hasher) {
    match v {
        Value::Bool(b) => (0u8, b).hash(h),
        Value::I64(i) => (1u8, i).hash(h),
        Value::F64(f) => (2u8, f.to_bits()).hash(h),
        Value::String(s) => (3u8, s.as_str()).hash(h),
        Value::Array(Array::Bool(a)) => (4u8, a).hash(h),
        Value::Array(Array::I64(a)) => (5u8, a).hash(h),
        Value::Array(Array::F64(a)) => {
            6u8.hash(h);
            a.iter().for_each(|f| f.to_bits().hash(h));
        }
        Value::Array(Array::String(a)) => {
            7u8.hash(h);
            a.iter().for_each(|s| s.as_str().hash(h));
        }
        other => (8u8, other.to_string()).hash(h),
    }
}

/// Attributes with their string values cut to `max` bytes; `None` when
/// none is longer (the common case: no copy).
fn metric_attributes(attrs: &[KeyValue], max: usize, check: &Checker<'_>) -> Option<Vec<KeyValue>> {
    let long = |s: &StringValue| s.as_str().len() > max;
    let any_long = attrs.iter().any(|kv| match &kv.value {
        Value::String(s) => long(s),
        Value::Array(Array::String(a)) => a.iter().any(long),
        _ => false,
    });
    if !any_long {
        return None;
    }
    let cut = |s: &StringValue| -> StringValue {
        let mut s = s.as_str().to_string();
        if truncate(&mut s, max) {
            check.count(&check.stats.values_truncated);
        }
        s.into()
    };
    Some(
        attrs
            .iter()
            .map(|kv| {
                let value = match &kv.value {
                    Value::String(s) => Value::String(cut(s)),
                    Value::Array(Array::String(a)) => {
                        Value::Array(Array::String(a.iter().map(cut).collect()))
                    }
                    other => other.clone(),
                };
                KeyValue::new(kv.key.clone(), value)
            })
            .collect(),
    )
}

/// One of the host's own instruments, bounded in series like a guest's.
pub(crate) struct HostInstrument {
    histogram: Histogram<f64>,
    series: Arc<Series>,
    telemetry: Telemetry,
    name: &'static str,
}

impl HostInstrument {
    /// Records `value` with `attrs` (whose text may come from a client).
    pub(crate) fn record(&self, value: f64, attrs: &[KeyValue]) {
        let t = &self.telemetry;
        let p = &t.inner;
        let cut = metric_attributes(attrs, p.limits.metric_value_length, &t.checker());
        let attrs = cut.as_deref().unwrap_or(attrs);
        if !self
            .series
            .admits(attrs, &p.limits, &p.instruments, self.name)
        {
            Stats::add(&p.stats.measurements_dropped_series_limit, 1);
            return;
        }
        self.histogram.record(value, attrs);
    }
}

/// OpenTelemetry's instrument name syntax: a letter, then up to 254 of
/// letters, digits, `_`, `.`, `-` and `/`.
fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 255
        && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'))
}

/// A histogram the host records into itself (`http.server.request.duration`).
pub(crate) struct HostHistogram {
    pub name: &'static str,
    pub unit: &'static str,
    pub description: &'static str,
    pub boundaries: &'static [f64],
}

impl Telemetry {
    /// The instrument `name` of `kind` (made with `describe()` if new), or
    /// `None` when metrics are off, the name is invalid or the instrument
    /// limit is reached.
    pub(crate) fn instrument(
        &self,
        kind: Kind,
        name: &str,
        describe: impl FnOnce() -> Description,
    ) -> Option<Arc<Instrument>> {
        self.inner.meter.as_ref()?;
        self.inner
            .instruments
            .get(kind, name, describe, &self.checker())
    }

    /// Records a measurement (`None`: an instrument that was refused, so
    /// the measurement is dropped and counted). Attributes are already
    /// converted and bounded by the producer.
    pub(crate) fn record(
        &self,
        instrument: Option<&Instrument>,
        value: Number,
        attrs: &[KeyValue],
    ) {
        let p = &self.inner;
        let Some(meter) = &p.meter else { return };
        let cut = metric_attributes(attrs, p.limits.metric_value_length, &self.checker());
        let attrs = cut.as_deref().unwrap_or(attrs);
        if let Some(i) = instrument
            && !i.series.admits(attrs, &p.limits, &p.instruments, &i.name)
        {
            Stats::add(&p.stats.measurements_dropped_series_limit, 1);
            return;
        }
        let ok = instrument.is_some_and(|i| i.record(meter, value, attrs));
        let counter = if ok {
            &p.stats.measurements
        } else {
            &p.stats.measurements_dropped
        };
        Stats::add(counter, 1);
    }

    /// One of the host's own histograms, made on first use; `None` when
    /// metrics are off.
    pub(crate) fn host_histogram(&self, spec: &HostHistogram) -> Option<HostInstrument> {
        let meter = self.inner.meter.as_ref()?;
        let mut map = self
            .inner
            .instruments
            .host
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (histogram, series) = map.entry(spec.name).or_insert_with(|| {
            let histogram = meter
                .f64_histogram(spec.name)
                .with_unit(spec.unit)
                .with_description(spec.description)
                .with_boundaries(spec.boundaries.to_vec())
                .build();
            (histogram, Arc::default())
        });
        // Made per use: the pipeline must not hold a handle to itself.
        Some(HostInstrument {
            histogram: histogram.clone(),
            series: series.clone(),
            telemetry: self.clone(),
            name: spec.name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn instrument_names_follow_opentelemetry() {
        assert!(valid_name("http.server.duration"));
        assert!(valid_name("a/b-c_d.e"));
        assert!(!valid_name(""));
        assert!(!valid_name("1abc"));
        assert!(!valid_name("has space"));
        assert!(!valid_name(&"a".repeat(256)));
        assert!(valid_name(&"a".repeat(255)));
    }
}

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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};

use super::Telemetry;
use super::limits::Checker;
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

/// Every instrument of a pipeline, by name and kind, and the host's own.
pub(super) struct Instruments {
    max: usize,
    by_name: Mutex<HashMap<String, [Option<Arc<Instrument>>; KINDS]>>,
    host: Mutex<HashMap<&'static str, Histogram<f64>>>,
}

impl Instruments {
    pub(super) fn new(max: usize) -> Self {
        Instruments {
            max,
            by_name: Mutex::new(HashMap::new()),
            host: Mutex::new(HashMap::new()),
        }
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
        });
        map.entry(name.to_string()).or_default()[kind.index()] = Some(instrument.clone());
        Some(instrument)
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
    pub(crate) fn host_histogram(&self, spec: &HostHistogram) -> Option<Histogram<f64>> {
        let meter = self.inner.meter.as_ref()?;
        let mut map = self
            .inner
            .instruments
            .host
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Some(
            map.entry(spec.name)
                .or_insert_with(|| {
                    meter
                        .f64_histogram(spec.name)
                        .with_unit(spec.unit)
                        .with_description(spec.description)
                        .with_boundaries(spec.boundaries.to_vec())
                        .build()
                })
                .clone(),
        )
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

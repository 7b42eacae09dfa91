//! `wasi:observe/metrics`: guest measurements into the OpenTelemetry SDK's
//! meters, which aggregate them (sums, histograms, last values) and export
//! them with the configured temporality and interval.
//!
//! An instrument is identified by its kind and name and shared by every store
//! of a [`Telemetry`](crate::Telemetry). Integer and floating point
//! measurements go to separate SDK instruments of the same name. Rejected,
//! each counted in `measurements_dropped`: names that are not valid
//! OpenTelemetry instrument names, negative or non-finite increments of a
//! counter, negative or non-finite histogram values, non-finite values of the
//! other kinds, and new instruments beyond the instrument limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};
use wasmtime::component::Resource;

use crate::bindings::metrics::{Host, HostInstrument, InstrumentKind, InstrumentOptions, Number};
use crate::bindings::tracer::KeyValue as WitKeyValue;
use crate::convert::Checker;
use crate::ctx::WasiObserveCtx;
use crate::stats::Stats;

/// The host side of a guest's `instrument` resource; its state lives in the
/// store's ctx.
pub struct GuestInstrument;

/// The rep of an instrument that was rejected: measurements on it are dropped.
const REJECTED: u32 = u32::MAX;

const KINDS: usize = 4;

fn index(kind: InstrumentKind) -> usize {
    match kind {
        InstrumentKind::Counter => 0,
        InstrumentKind::UpDownCounter => 1,
        InstrumentKind::Histogram => 2,
        InstrumentKind::Gauge => 3,
    }
}

/// One named instrument and its SDK instruments, made on first use.
pub(crate) struct Instrument {
    kind: InstrumentKind,
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
            (InstrumentKind::Histogram, Number::S64(v)) if v < 0 => return false,
            (InstrumentKind::Histogram, Number::S64(v)) => Number::F64(v as f64),
            (_, value) => value,
        };
        match value {
            Number::S64(v) => {
                let i = self.int.get_or_init(|| match self.kind {
                    InstrumentKind::Counter => {
                        IntInstrument::Counter(build!(self, meter, u64_counter).build())
                    }
                    InstrumentKind::UpDownCounter => {
                        IntInstrument::UpDown(build!(self, meter, i64_up_down_counter).build())
                    }
                    // Histograms take the float path (above).
                    InstrumentKind::Histogram | InstrumentKind::Gauge => {
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
            Number::F64(v) => {
                if !v.is_finite() {
                    return false;
                }
                let f = self.float.get_or_init(|| match self.kind {
                    InstrumentKind::Counter => {
                        FloatInstrument::Counter(build!(self, meter, f64_counter).build())
                    }
                    InstrumentKind::UpDownCounter => {
                        FloatInstrument::UpDown(build!(self, meter, f64_up_down_counter).build())
                    }
                    InstrumentKind::Histogram => {
                        let mut b = build!(self, meter, f64_histogram);
                        if let Some(bounds) = &self.boundaries {
                            b = b.with_boundaries(bounds.clone());
                        }
                        FloatInstrument::Histogram(b.build())
                    }
                    InstrumentKind::Gauge => {
                        FloatInstrument::Gauge(build!(self, meter, f64_gauge).build())
                    }
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

/// Every instrument of a pipeline, by name and kind.
pub(crate) struct Instruments {
    max: usize,
    by_name: Mutex<HashMap<String, [Option<Arc<Instrument>>; KINDS]>>,
}

impl Instruments {
    pub(crate) fn new(max: usize) -> Self {
        Instruments {
            max,
            by_name: Mutex::new(HashMap::new()),
        }
    }

    /// The instrument `name` of `kind`, made with `options` if it is new.
    /// `None` if the name is invalid or the limit is reached.
    fn get(
        &self,
        kind: InstrumentKind,
        name: &str,
        options: impl FnOnce() -> Option<InstrumentOptions>,
        check: &Checker<'_>,
    ) -> Option<Arc<Instrument>> {
        let mut map = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = map.get(name).and_then(|kinds| kinds[index(kind)].clone()) {
            return Some(i);
        }
        if !valid_name(name) {
            return None;
        }
        let count: usize = map.values().map(|k| k.iter().flatten().count()).sum();
        if count >= self.max {
            return None;
        }
        let options = options();
        let (description, unit, boundaries) = match options {
            Some(o) => (o.description, o.unit, o.boundaries),
            None => (None, None, None),
        };
        let unit = unit.filter(|u| {
            let ok = u.len() <= 63 && u.is_ascii();
            if !ok {
                Stats::add(&check.stats.invalid_input, 1);
            }
            ok
        });
        let boundaries = boundaries.filter(|b| {
            let ok = b.len() <= 1000
                && b.iter().all(|x| x.is_finite())
                && b.windows(2).all(|w| w[0] < w[1]);
            if !ok {
                Stats::add(&check.stats.invalid_input, 1);
            }
            ok
        });
        let instrument = Arc::new(Instrument {
            kind,
            name: name.to_string(),
            description: description.map(|d| check.string(d)),
            unit,
            boundaries,
            int: OnceLock::new(),
            float: OnceLock::new(),
        });
        map.entry(name.to_string()).or_default()[index(kind)] = Some(instrument.clone());
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

impl WasiObserveCtx {
    fn measure(
        &self,
        instrument: Option<&Instrument>,
        value: Number,
        attributes: Vec<WitKeyValue>,
    ) {
        let inner = &self.telemetry.inner;
        let Some(meter) = &inner.meter else { return };
        let check = Checker {
            limits: &inner.limits,
            stats: &inner.stats,
        };
        let ok = instrument.is_some_and(|i| {
            let (attrs, _) = check.attributes(attributes, inner.limits.attributes_per_span);
            i.record(meter, value, &attrs)
        });
        let counter = if ok {
            &inner.stats.measurements
        } else {
            &inner.stats.measurements_dropped
        };
        Stats::add(counter, 1);
    }
}

impl Host for WasiObserveCtx {
    fn record(
        &mut self,
        kind: InstrumentKind,
        name: String,
        value: Number,
        attributes: Vec<WitKeyValue>,
    ) -> wasmtime::Result<()> {
        let inner = self.telemetry.inner.clone();
        if inner.meter.is_none() {
            return Ok(());
        }
        let check = Checker {
            limits: &inner.limits,
            stats: &inner.stats,
        };
        let instrument = inner.instruments.get(kind, &name, || None, &check);
        self.measure(instrument.as_deref(), value, attributes);
        Ok(())
    }
}

impl HostInstrument for WasiObserveCtx {
    fn new(
        &mut self,
        kind: InstrumentKind,
        name: String,
        options: Option<InstrumentOptions>,
    ) -> wasmtime::Result<Resource<GuestInstrument>> {
        let inner = self.telemetry.inner.clone();
        if inner.meter.is_none() {
            return Ok(Resource::new_own(REJECTED));
        }
        let check = Checker {
            limits: &inner.limits,
            stats: &inner.stats,
        };
        let Some(instrument) = inner.instruments.get(kind, &name, || options, &check) else {
            Stats::add(&inner.stats.invalid_input, 1);
            return Ok(Resource::new_own(REJECTED));
        };
        Ok(Resource::new_own(self.instruments.insert(instrument) as u32))
    }

    fn record(
        &mut self,
        instrument: Resource<GuestInstrument>,
        value: Number,
        attributes: Vec<WitKeyValue>,
    ) -> wasmtime::Result<()> {
        if self.telemetry.inner.meter.is_none() {
            return Ok(());
        }
        let i = self.instruments.get(instrument.rep() as usize).cloned();
        self.measure(i.as_deref(), value, attributes);
        Ok(())
    }

    fn drop(&mut self, instrument: Resource<GuestInstrument>) -> wasmtime::Result<()> {
        self.instruments.try_remove(instrument.rep() as usize);
        Ok(())
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

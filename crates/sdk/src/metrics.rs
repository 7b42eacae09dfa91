//! The OpenTelemetry metrics API backed by the host: code that uses
//! `opentelemetry::global::meter(..)` records measurements the host
//! aggregates and exports. Measurements travel through the pipe
//! ([`crate::pipe`]). Until a batch crosses, the guest sums a counter's and
//! an up-down counter's measurements per series and keeps a gauge's last
//! value (the host would aggregate them so anyway), so a counter in a loop
//! costs a hash lookup, not a record; histogram measurements travel one by
//! one. A series' sum saturates at the `i64` range.
//!
//! Synchronous instruments only: counters, up-down counters, histograms
//! (with their bucket boundaries) and gauges. Observable instruments need a
//! callback the host cannot call, so they are no-ops; record a gauge instead.
//! `u64` measurements above `i64::MAX` are sent as `i64::MAX`.

use std::sync::Arc;

use opentelemetry::metrics::{
    Counter, Gauge, Histogram, HistogramBuilder, InstrumentBuilder, InstrumentProvider, Meter,
    SyncInstrument, UpDownCounter,
};
use opentelemetry::{InstrumentationScope, KeyValue};

use wasi_observe_wire as wire;
use wire::instrument_kind as kind;

use crate::pipe;

/// A [`opentelemetry::metrics::MeterProvider`] whose instruments the host
/// aggregates. [`init`](crate::init) installs it as the global provider.
#[derive(Clone, Debug, Default)]
pub struct MeterProvider {
    _private: (),
}

impl MeterProvider {
    /// The provider (it holds no state: the host does).
    pub fn new() -> Self {
        MeterProvider::default()
    }
}

impl opentelemetry::metrics::MeterProvider for MeterProvider {
    /// The scope is not sent: the host names the scope of guest metrics.
    fn meter_with_scope(&self, _scope: InstrumentationScope) -> Meter {
        Meter::new(Arc::new(Instruments))
    }
}

struct Instruments;

/// An instrument defined in the pipe: its number there and its kind.
struct HostInstrument(u32, u8);

impl HostInstrument {
    fn new(
        kind: u8,
        name: &str,
        description: Option<&str>,
        unit: Option<&str>,
        boundaries: Option<&[f64]>,
    ) -> Arc<Self> {
        let id = if crate::enabled().metrics {
            pipe::instrument(
                kind,
                name,
                description.unwrap_or(""),
                unit.unwrap_or(""),
                boundaries,
            )
        } else {
            u32::MAX
        };
        Arc::new(HostInstrument(id, kind))
    }

    fn record(&self, value: wire::Number, attributes: &[KeyValue]) {
        if self.0 != u32::MAX {
            pipe::measure(self.0, self.1, value, attributes);
        }
    }
}

impl SyncInstrument<u64> for HostInstrument {
    fn measure(&self, measurement: u64, attributes: &[KeyValue]) {
        let value = i64::try_from(measurement).unwrap_or(i64::MAX);
        self.record(wire::Number::I64(value), attributes);
    }
}

impl SyncInstrument<i64> for HostInstrument {
    fn measure(&self, measurement: i64, attributes: &[KeyValue]) {
        self.record(wire::Number::I64(measurement), attributes);
    }
}

impl SyncInstrument<f64> for HostInstrument {
    fn measure(&self, measurement: f64, attributes: &[KeyValue]) {
        self.record(wire::Number::F64(measurement), attributes);
    }
}

fn simple<T>(kind: u8, b: &InstrumentBuilder<'_, T>) -> Arc<HostInstrument> {
    HostInstrument::new(
        kind,
        &b.name,
        b.description.as_deref(),
        b.unit.as_deref(),
        None,
    )
}

fn histogram<T>(b: &HistogramBuilder<'_, T>) -> Arc<HostInstrument> {
    HostInstrument::new(
        kind::HISTOGRAM,
        &b.name,
        b.description.as_deref(),
        b.unit.as_deref(),
        b.boundaries.as_deref(),
    )
}

impl InstrumentProvider for Instruments {
    fn u64_counter(&self, b: InstrumentBuilder<'_, Counter<u64>>) -> Counter<u64> {
        Counter::new(simple(kind::COUNTER, &b))
    }

    fn f64_counter(&self, b: InstrumentBuilder<'_, Counter<f64>>) -> Counter<f64> {
        Counter::new(simple(kind::COUNTER, &b))
    }

    fn i64_up_down_counter(
        &self,
        b: InstrumentBuilder<'_, UpDownCounter<i64>>,
    ) -> UpDownCounter<i64> {
        UpDownCounter::new(simple(kind::UP_DOWN_COUNTER, &b))
    }

    fn f64_up_down_counter(
        &self,
        b: InstrumentBuilder<'_, UpDownCounter<f64>>,
    ) -> UpDownCounter<f64> {
        UpDownCounter::new(simple(kind::UP_DOWN_COUNTER, &b))
    }

    fn u64_gauge(&self, b: InstrumentBuilder<'_, Gauge<u64>>) -> Gauge<u64> {
        Gauge::new(simple(kind::GAUGE, &b))
    }

    fn i64_gauge(&self, b: InstrumentBuilder<'_, Gauge<i64>>) -> Gauge<i64> {
        Gauge::new(simple(kind::GAUGE, &b))
    }

    fn f64_gauge(&self, b: InstrumentBuilder<'_, Gauge<f64>>) -> Gauge<f64> {
        Gauge::new(simple(kind::GAUGE, &b))
    }

    fn u64_histogram(&self, b: HistogramBuilder<'_, Histogram<u64>>) -> Histogram<u64> {
        Histogram::new(histogram(&b))
    }

    fn f64_histogram(&self, b: HistogramBuilder<'_, Histogram<f64>>) -> Histogram<f64> {
        Histogram::new(histogram(&b))
    }
}

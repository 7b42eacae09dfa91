//! `wasi:observe/metrics`: guest measurements into the pipeline's
//! instruments (see [`crate::pipeline::instruments`] for what is aggregated
//! and what is rejected). An instrument handle's state lives in the store's
//! ctx; the instruments themselves are shared by every store.

use opentelemetry::KeyValue;
use wasmtime::component::Resource;

use super::values;
use crate::bindings::metrics::{Host, HostInstrument, InstrumentKind, InstrumentOptions, Number};
use crate::bindings::tracer::KeyValue as WitKeyValue;
use crate::ctx::WasiObserveCtx;
use crate::pipeline::instruments::{self, Description, Instrument, Kind};

/// The host side of a guest's `instrument` resource; its state lives in the
/// store's ctx.
pub struct GuestInstrument;

/// The rep of an instrument that was rejected: measurements on it are dropped.
const REJECTED: u32 = u32::MAX;

pub(crate) fn kind(kind: InstrumentKind) -> Kind {
    match kind {
        InstrumentKind::Counter => Kind::Counter,
        InstrumentKind::UpDownCounter => Kind::UpDownCounter,
        InstrumentKind::Histogram => Kind::Histogram,
        InstrumentKind::Gauge => Kind::Gauge,
    }
}

fn number(n: Number) -> instruments::Number {
    match n {
        Number::S64(v) => instruments::Number::Int(v),
        Number::F64(v) => instruments::Number::Float(v),
    }
}

/// Records one measurement (the attributes are converted only for an
/// instrument that was accepted).
fn measure(
    ctx: &WasiObserveCtx,
    instrument: Option<&Instrument>,
    value: Number,
    attributes: Vec<WitKeyValue>,
) {
    let t = ctx.scope.telemetry();
    let attrs: Vec<KeyValue> = match instrument {
        Some(_) => values::attributes(&t.checker(), attributes, t.limits().attributes_per_span).0,
        None => Vec::new(),
    };
    t.record(instrument, number(value), &attrs);
}

impl Host for WasiObserveCtx {
    fn record(
        &mut self,
        kind: InstrumentKind,
        name: String,
        value: Number,
        attributes: Vec<WitKeyValue>,
    ) -> wasmtime::Result<()> {
        let t = self.scope.telemetry();
        if !t.signals().metrics {
            return Ok(());
        }
        let instrument = t.instrument(self::kind(kind), &name, Description::default);
        measure(self, instrument.as_deref(), value, attributes);
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
        let t = self.scope.telemetry();
        if !t.signals().metrics {
            return Ok(Resource::new_own(REJECTED));
        }
        let describe = || match options {
            Some(o) => Description {
                description: o.description,
                unit: o.unit,
                boundaries: o.boundaries,
            },
            None => Description::default(),
        };
        let Some(instrument) = t.instrument(self::kind(kind), &name, describe) else {
            t.checker().invalid();
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
        if !self.scope.telemetry().signals().metrics {
            return Ok(());
        }
        let i = self.instruments.get(instrument.rep() as usize).cloned();
        measure(self, i.as_deref(), value, attributes);
        Ok(())
    }

    fn drop(&mut self, instrument: Resource<GuestInstrument>) -> wasmtime::Result<()> {
        self.instruments.try_remove(instrument.rep() as usize);
        Ok(())
    }
}

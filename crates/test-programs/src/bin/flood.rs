//! Emits spans, log records and measurements as fast as it can for the number
//! of milliseconds given as first argument (default 1000), then prints what it
//! emitted: `emitted spans=S logs=L measurements=M`.

use std::time::{Duration, Instant};

use test_programs::logging::{Level, log};
use test_programs::metrics::{self, InstrumentKind, Number};
use test_programs::tracer::{self, Value};
use test_programs::{arg, kv, opts};

fn main() {
    let until = Instant::now() + Duration::from_millis(arg(1000));
    let (mut spans, mut logs, mut measurements) = (0u64, 0u64, 0u64);
    let counter = metrics::Instrument::new(InstrumentKind::Counter, "flood.items", None);
    while Instant::now() < until {
        for _ in 0..64 {
            let span = tracer::start(
                "flood",
                Some(&tracer::StartOptions {
                    attributes: Some(vec![kv("i", Value::S64(spans as i64))]),
                    ..opts()
                }),
            );
            spans += 1;
            log(
                Level::Info,
                "flood",
                "a log record emitted as fast as possible",
            );
            logs += 1;
            counter.record(Number::S64(1), &[]);
            measurements += 1;
            drop(span);
        }
    }
    println!("emitted spans={spans} logs={logs} measurements={measurements}");
}

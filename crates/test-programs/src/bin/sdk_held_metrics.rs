//! Measurements made outside any span, and nothing after them: the SDK
//! sums and holds them, and they cross only when the host calls its
//! `flush` export. Two counters of 750 series each (together more than the
//! SDK sums at once, each within the host's 1 000 series an instrument),
//! each series added to twice, so some sums are written out early and
//! summed again; an up-down counter, a gauge and a histogram.

use opentelemetry::KeyValue;

fn main() {
    wasi_observe::init();
    let meter = opentelemetry::global::meter("held");
    let counters = [
        meter.u64_counter("hits").build(),
        meter.u64_counter("misses").build(),
    ];
    for add in [1, 2] {
        for counter in &counters {
            for series in 0..750 {
                counter.add(add, &[KeyValue::new("series", series)]);
            }
        }
    }
    let depth = meter.i64_up_down_counter("depth").build();
    depth.add(5, &[]);
    depth.add(-2, &[]);
    let level = meter.f64_gauge("level").build();
    level.record(1.5, &[]);
    level.record(2.5, &[]);
    let sizes = meter.f64_histogram("sizes").build();
    for v in [1.0, 10.0, 100.0] {
        sizes.record(v, &[]);
    }
    println!("recorded");
}

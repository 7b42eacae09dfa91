//! Store benchmark: ingest rate, and query times with 100k traces stored.
//!
//! ```sh
//! cargo run --release -p wasi-observe-store --example bench [-- TRACES [SPANS_PER_TRACE [BATCH]]]
//! ```
//!
//! Writes a fresh store in a temporary directory (removed at the end), in
//! batches of 512 spans (as the host's batch queue sends them by default) or
//! BATCH, then times the
//! queries behind `wasi-observe traces`, `trace` and the UI.

#[path = "../tests/support/mod.rs"]
mod support;

use support::block_on;

use std::time::{Duration, Instant, SystemTime};

use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use wasi_observe_store::{Retention, Store, StoreOptions, TraceFilter};

/// Median and worst of `runs` timings of `f`.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[runs / 2], times[runs - 1])
}

/// User and system CPU seconds of this process so far (Linux; zeros
/// elsewhere): the figures that hold when other work shares the cores.
fn cpu_time() -> CpuTime {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line, in clock ticks (100 per second).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let field = |i: usize| {
        rest.split_whitespace()
            .nth(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 100.0
    };
    CpuTime(field(11), field(12))
}

#[derive(Clone, Copy)]
struct CpuTime(f64, f64);

impl std::ops::Sub for CpuTime {
    type Output = (f64, f64);
    fn sub(self, earlier: CpuTime) -> (f64, f64) {
        (self.0 - earlier.0, self.1 - earlier.1)
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let traces: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let per_trace: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let batch_size: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(512);
    let dir = std::env::temp_dir().join(format!("wasi-observe-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bench.db");
    let store = Store::open(
        &path,
        StoreOptions {
            retention: Retention {
                max_age: None,
                max_bytes: None,
            },
            hard_max_bytes: None,
        },
    )?;
    let exporter = store.exporter();

    // Ingest: batches of 512 spans, like the host's span queue.
    let start_time = SystemTime::now() - Duration::from_secs(traces);
    let mut batch: Vec<SpanData> = Vec::with_capacity(batch_size);
    let mut batches = 0;
    let started = Instant::now();
    let cpu_started = cpu_time();
    for n in 0..traces {
        let t = start_time + Duration::from_secs(n);
        for span in support::trace(n, per_trace, t, n % 50 == 0) {
            batch.push(span);
            if batch.len() == batch_size {
                block_on(exporter.export(std::mem::take(&mut batch)))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                batches += 1;
            }
        }
    }
    if !batch.is_empty() {
        block_on(exporter.export(batch)).map_err(|e| anyhow::anyhow!("{e}"))?;
        batches += 1;
    }
    let ingest = started.elapsed();
    let cpu = cpu_time() - cpu_started;
    let spans = traces * per_trace;
    let size = std::fs::metadata(&path)?.len()
        + std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());
    println!(
        "ingest: {spans} spans ({traces} traces) in {batches} batches: {:.2}s, {:.0} spans/s, {:.0} µs per batch; file {:.1} MiB",
        ingest.as_secs_f64(),
        spans as f64 / ingest.as_secs_f64(),
        ingest.as_micros() as f64 / batches as f64,
        size as f64 / (1 << 20) as f64
    );
    println!(
        "ingest CPU: {:.2}s user, {:.2}s system: {:.1} µs of CPU per span",
        cpu.0,
        cpu.1,
        (cpu.0 + cpu.1) * 1e6 / spans as f64
    );

    let report = |what: &str, (median, worst): (Duration, Duration)| {
        println!(
            "{what:<52} median {:>8.2} ms   worst {:>8.2} ms",
            median.as_secs_f64() * 1e3,
            worst.as_secs_f64() * 1e3
        );
    };
    let store_ref = &store;
    let list = |f: TraceFilter| move || store_ref.traces(&f).unwrap().len();
    report(
        "trace list (50 newest)",
        time(50, list(TraceFilter::default())),
    );
    report(
        "trace list, one service",
        time(
            50,
            list(TraceFilter {
                service: Some("unknown_service".into()),
                ..Default::default()
            }),
        ),
    );
    report(
        "trace list, errors only",
        time(
            50,
            list(TraceFilter {
                errors_only: true,
                ..Default::default()
            }),
        ),
    );
    report(
        "trace list, having a span named step-3",
        time(
            20,
            list(TraceFilter {
                span_name: Some("step-3".into()),
                ..Default::default()
            }),
        ),
    );
    report(
        "trace list, root name search 'item/42'",
        time(
            20,
            list(TraceFilter {
                search: Some("item/42".into()),
                ..Default::default()
            }),
        ),
    );
    report(
        "trace list, slowest first",
        time(
            20,
            list(TraceFilter {
                slowest_first: true,
                ..Default::default()
            }),
        ),
    );
    report(
        "trace list, at least 9 ms, page 2 (before a time)",
        time(
            20,
            list(TraceFilter {
                min_duration_ns: Some(9_000_000),
                before_ns: Some(wasi_observe_store::unix_ns(
                    start_time + Duration::from_secs(traces / 2),
                )),
                ..Default::default()
            }),
        ),
    );
    let mut n = 0;
    report(
        "one trace by id (spans and logs)",
        time(200, || {
            n = (n + 7919) % traces;
            store
                .trace(&support::trace_id(n).to_string())
                .unwrap()
                .unwrap()
                .spans
                .len()
        }),
    );
    let id = support::trace_id(traces / 3).to_string();
    report(
        "trace id prefix lookup",
        time(200, || store.resolve_trace_id(&id[..16]).unwrap()),
    );
    report(
        "counts (the UI header)",
        time(20, || store.counts().unwrap()),
    );
    drop(exporter);
    drop(store);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

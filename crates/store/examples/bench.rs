//! Store benchmark: ingest cost of spans and log records, and the time of
//! every query the views and the UI make, on a store of TRACES traces.
//!
//! ```sh
//! cargo run --release -p wasi-observe-store --example bench [-- TRACES [SPANS_PER_TRACE [BATCH [LOGS_PER_TRACE]]]]
//! ```
//!
//! Writes a fresh store in a temporary directory (removed at the end): the
//! spans of each trace and its log records (one per trace by default, in the
//! trace's root span), each signal in batches of 512 (as the host's batch
//! queue sends them by default) or BATCH, and a few metric points every
//! thousand traces. It prints the CPU time (user and system, all threads:
//! the figure that holds when other work shares the cores) spent in the
//! store per span and per log record, overall and over the last tenth of
//! the traces (the cost once the store is large), then times the queries.

#[path = "../tests/support/mod.rs"]
mod support;

use support::block_on;

// The allocator of the `wasi-observe` binary, where the store runs: its
// ingest cost is measured with what it really allocates with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// And its tuning.
#[path = "../../cli/src/alloc.rs"]
mod alloc;

use std::time::{Duration, Instant, SystemTime};

use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::SpanId;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogRecord, SdkLoggerProvider};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use wasi_observe_store::{
    LogFilter, MetricFilter, Retention, Store, StoreExporter, StoreOptions, TraceFilter,
};

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

/// CPU time of the whole process (user and system, all threads), in ns:
/// the sum of its threads' run time (Linux; 0 elsewhere). Unlike the tick
/// counts of `/proc/self/stat`, this resolves a single batch.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU time spent in exports of one signal.
#[derive(Default)]
struct Cost {
    items: u64,
    cpu_ns: u64,
    batches: u64,
    /// Over the last tenth of the traces.
    tail_items: u64,
    tail_cpu_ns: u64,
}

impl Cost {
    fn add(&mut self, items: usize, tail: bool, f: impl FnOnce()) {
        let before = cpu_ns();
        f();
        let spent = cpu_ns() - before;
        self.items += items as u64;
        self.cpu_ns += spent;
        self.batches += 1;
        if tail {
            self.tail_items += items as u64;
            self.tail_cpu_ns += spent;
        }
    }

    fn print(&self, what: &str) {
        let per = |cpu: u64, n: u64| cpu as f64 / 1e3 / n.max(1) as f64;
        println!(
            "ingest CPU per {what}: {:.2} µs ({} in {} batches, {:.2}s); last tenth of the traces: {:.2} µs",
            per(self.cpu_ns, self.items),
            self.items,
            self.batches,
            self.cpu_ns as f64 / 1e9,
            per(self.tail_cpu_ns, self.tail_items),
        );
    }
}

fn export_spans(exporter: &StoreExporter, batch: Vec<SpanData>) {
    block_on(SpanExporter::export(exporter, batch)).expect("spans written");
}

fn export_logs(exporter: &StoreExporter, batch: &[SdkLogRecord], scope: &InstrumentationScope) {
    let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
        batch.iter().map(|r| (r, scope)).collect();
    block_on(LogExporter::export(exporter, LogBatch::new(&refs))).expect("logs written");
}

fn main() -> anyhow::Result<()> {
    alloc::tune();
    let mut args = std::env::args().skip(1);
    let mut arg = |default: u64| -> anyhow::Result<u64> {
        Ok(args
            .next()
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let traces = arg(100_000)?;
    let per_trace = arg(5)?;
    let batch_size = arg(512)? as usize;
    let logs_per_trace = arg(1)?;
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
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(store.exporter()).build())
        .build();
    let meter = meter_provider.meter("bench");
    let requests = meter.u64_counter("requests").build();
    let latency = meter.f64_histogram("latency").build();
    let logger_provider = SdkLoggerProvider::builder().build();
    let logger = logger_provider.logger("bench");
    let scope = InstrumentationScope::builder("bench").build();

    let start_time = SystemTime::now() - Duration::from_secs(traces);
    let mut spans: Vec<SpanData> = Vec::with_capacity(batch_size);
    let mut logs: Vec<SdkLogRecord> = Vec::with_capacity(batch_size);
    let (mut span_cost, mut log_cost) = (Cost::default(), Cost::default());
    let started = Instant::now();
    for n in 0..traces {
        let tail = n >= traces - traces / 10;
        let t = start_time + Duration::from_secs(n);
        for mut span in support::trace(n, per_trace, t, n % 50 == 0) {
            // A name that a few old traces have: the span-name filter's
            // worst case (it must look far back).
            if n % 100_000 == 7 && span.parent_span_id != SpanId::INVALID {
                span.name = "rare-step".into();
            }
            // Durations that vary, as real ones do (and as an index on them
            // would feel).
            if span.parent_span_id == SpanId::INVALID {
                span.end_time += Duration::from_micros(n.wrapping_mul(7919) % 5000);
            }
            spans.push(span);
            if spans.len() == batch_size {
                let batch = std::mem::take(&mut spans);
                span_cost.add(batch.len(), tail, || export_spans(&exporter, batch));
            }
        }
        for i in 0..logs_per_trace {
            let mut record = logger.create_log_record();
            record.set_timestamp(t + Duration::from_micros(100 + i));
            let (severity, text) = match n % 50 {
                0 => (Severity::Error, "ERROR"),
                10 | 20 | 30 | 40 => (Severity::Warn, "WARN"),
                _ => (Severity::Info, "INFO"),
            };
            record.set_severity_number(severity);
            record.set_severity_text(text);
            record.set_body(format!("handled request {n} for item {}", n % 100).into());
            record.add_attribute("item.id", n as i64);
            record.set_trace_context(support::trace_id(n), SpanId::from(n << 16 | 1), None);
            logs.push(record);
            if logs.len() == batch_size {
                let batch = std::mem::take(&mut logs);
                log_cost.add(batch.len(), tail, || export_logs(&exporter, &batch, &scope));
            }
        }
        if n % 1000 == 999 {
            for route in 0..10 {
                let attrs = [KeyValue::new("route", format!("/item/{route}"))];
                requests.add(100, &attrs);
                latency.record(n as f64 % 97.0, &attrs);
            }
            meter_provider.force_flush()?;
        }
    }
    if !spans.is_empty() {
        span_cost.add(spans.len(), true, || export_spans(&exporter, spans));
    }
    if !logs.is_empty() {
        log_cost.add(logs.len(), true, || export_logs(&exporter, &logs, &scope));
    }
    let ingest = started.elapsed();
    let size = std::fs::metadata(&path)?.len()
        + std::fs::metadata(path.with_extension("db-wal")).map_or(0, |m| m.len());
    println!(
        "ingest: {traces} traces of {per_trace} spans and {logs_per_trace} log records, batches of {batch_size}: \
         {:.1}s; file {:.1} MiB",
        ingest.as_secs_f64(),
        size as f64 / (1 << 20) as f64
    );
    span_cost.print("span");
    log_cost.print("log record");

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
        "trace list, having a span named rare-step",
        time(
            20,
            list(TraceFilter {
                span_name: Some("rare-step".into()),
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
        "trace list, search matching nothing",
        time(
            5,
            list(TraceFilter {
                search: Some("no such text".into()),
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
    let logs_where = |f: LogFilter| move || store_ref.logs(&f).unwrap().len();
    report(
        "logs (100 newest)",
        time(50, logs_where(LogFilter::default())),
    );
    report(
        "logs of one trace",
        time(
            50,
            logs_where(LogFilter {
                trace_id: Some(id.clone()),
                ..Default::default()
            }),
        ),
    );
    report(
        "logs, at least error",
        time(
            50,
            logs_where(LogFilter {
                min_severity: Some(17),
                ..Default::default()
            }),
        ),
    );
    report(
        "logs, text search 'item 42'",
        time(
            20,
            logs_where(LogFilter {
                search: Some("item 42".into()),
                ..Default::default()
            }),
        ),
    );
    report(
        "logs, text search matching nothing (reads them all)",
        time(
            5,
            logs_where(LogFilter {
                search: Some("no such text".into()),
                ..Default::default()
            }),
        ),
    );
    report(
        "logs, one service",
        time(
            20,
            logs_where(LogFilter {
                service: Some("unknown_service".into()),
                ..Default::default()
            }),
        ),
    );
    report(
        "metrics (current values)",
        time(20, || {
            store.metrics(&MetricFilter::default()).unwrap().len()
        }),
    );
    report(
        "metric series of one instrument",
        time(20, || {
            store
                .metric_series("latency", &MetricFilter::default())
                .unwrap()
                .len()
        }),
    );
    report("services", time(20, || store.services().unwrap().len()));
    report(
        "counts (the UI header)",
        time(20, || store.counts().unwrap()),
    );
    drop(meter_provider);
    drop(exporter);
    drop(store);
    // To look at the store afterwards.
    if std::env::var_os("WASI_OBSERVE_BENCH_KEEP").is_some() {
        println!("kept {}", path.display());
    } else {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

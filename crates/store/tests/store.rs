//! The store through its public API: what the exporters write is what the
//! queries return; concurrent writers lose nothing; a killed writer keeps
//! what it committed; foreign and damaged files are refused untouched; a
//! full store drops and counts; retention prunes.

mod support;

use support::block_on;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter as _};
use wasi_observe_store::{
    LogFilter, MetricFilter, Retention, Store, StoreOptions, TraceFilter, now_ns,
};

/// A fresh directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("wasi-observe-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn open(path: &Path) -> Store {
    Store::open(path, StoreOptions::default()).unwrap()
}

fn resource(service: &str) -> Resource {
    Resource::builder_empty()
        .with_service_name(service.to_string())
        .with_attribute(KeyValue::new("deployment.environment", "test"))
        .build()
}

#[test]
fn spans_logs_and_metrics_from_the_sdk_can_be_queried_back() {
    let dir = temp_dir("roundtrip");
    let store = open(&dir.join("t.db"));

    let tracer_provider = SdkTracerProvider::builder()
        .with_resource(resource("shop"))
        .with_simple_exporter(store.exporter())
        .build();
    let logger_provider = SdkLoggerProvider::builder()
        .with_resource(resource("shop"))
        .with_simple_exporter(store.exporter())
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_resource(resource("shop"))
        .with_reader(PeriodicReader::builder(store.exporter()).build())
        .build();

    let tracer = tracer_provider.tracer("test");
    let logger = logger_provider.logger("test");
    let root = tracer.start("checkout");
    let root_cx = Context::current_with_span(root);
    let trace_id = root_cx.span().span_context().trace_id().to_string();
    {
        let mut child = tracer.start_with_context("charge card", &root_cx);
        child.set_attribute(KeyValue::new("card.kind", "visa"));
        child.add_event("retry", vec![KeyValue::new("attempt", 2)]);
        child.set_status(opentelemetry::trace::Status::error("declined"));
        let cx = root_cx.with_span(child);
        let _guard = cx.clone().attach();
        let mut record = logger.create_log_record();
        record.set_severity_number(Severity::Warn);
        record.set_severity_text("WARN");
        record.set_body("card declined".into());
        record.add_attribute("attempt", 2);
        logger.emit(record);
        cx.span().end();
    }
    root_cx.span().end();
    let mut record = logger.create_log_record();
    record.set_severity_number(Severity::Info);
    record.set_body("outside any span".into());
    logger.emit(record);

    let meter = meter_provider.meter("test");
    let counter = meter.u64_counter("orders").with_unit("{order}").build();
    counter.add(3, &[KeyValue::new("region", "eu")]);
    counter.add(4, &[KeyValue::new("region", "eu")]);
    counter.add(1, &[KeyValue::new("region", "us")]);
    let latency = meter
        .f64_histogram("latency")
        .with_boundaries(vec![10.0, 100.0])
        .build();
    latency.record(5.0, &[]);
    latency.record(50.0, &[]);
    meter_provider.force_flush().unwrap();
    counter.add(5, &[KeyValue::new("region", "eu")]);
    meter_provider.force_flush().unwrap();
    tracer_provider.shutdown().unwrap();
    logger_provider.shutdown().unwrap();
    meter_provider.shutdown().unwrap();

    // The trace list.
    let traces = store.traces(&TraceFilter::default()).unwrap();
    assert_eq!(traces.len(), 1);
    let t = &traces[0];
    assert_eq!(t.trace_id, trace_id);
    assert_eq!(t.root_name, "checkout");
    assert_eq!(t.service, "shop");
    assert_eq!((t.span_count, t.error_count), (2, 1));
    assert_eq!(store.recorded_traces(), vec![trace_id.clone()]);

    // One trace, spans by start, its logs interleaved.
    let full = store.trace(&trace_id).unwrap().unwrap();
    let names: Vec<&str> = full.spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["checkout", "charge card"]);
    let charge = &full.spans[1];
    assert_eq!(
        charge.parent_span_id.as_deref(),
        Some(full.spans[0].span_id.as_str())
    );
    assert_eq!(charge.status_code, "error");
    assert_eq!(charge.status_message, "declined");
    assert_eq!(charge.attributes["card.kind"], "visa");
    assert_eq!(charge.events[0].name, "retry");
    assert_eq!(charge.events[0].attributes["attempt"], 2);
    assert_eq!(charge.resource["deployment.environment"], "test");
    assert_eq!(full.logs.len(), 1);
    assert_eq!(full.logs[0].body, "card declined");
    assert_eq!(full.logs[0].severity_text, "WARN");
    assert_eq!(
        full.logs[0].span_id.as_deref(),
        Some(charge.span_id.as_str())
    );

    // Prefixes resolve.
    assert_eq!(
        store.resolve_trace_id(&trace_id[..8]).unwrap(),
        Some(trace_id.clone())
    );
    assert!(store.resolve_trace_id("xyz").is_err());

    // Filters.
    let only = |f: TraceFilter| store.traces(&f).unwrap().len();
    assert_eq!(
        only(TraceFilter {
            errors_only: true,
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        only(TraceFilter {
            service: Some("other".into()),
            ..Default::default()
        }),
        0
    );
    assert_eq!(
        only(TraceFilter {
            span_name: Some("charge card".into()),
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        only(TraceFilter {
            span_name: Some("charge".into()),
            ..Default::default()
        }),
        0
    );
    assert_eq!(
        only(TraceFilter {
            search: Some("CHECK".into()),
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        only(TraceFilter {
            search: Some(trace_id[..6].into()),
            ..Default::default()
        }),
        1
    );
    assert_eq!(
        only(TraceFilter {
            search: Some("%".into()),
            ..Default::default()
        }),
        0
    );
    assert_eq!(
        only(TraceFilter {
            min_duration_ns: Some(3_600_000_000_000),
            ..Default::default()
        }),
        0
    );

    // Logs.
    let logs = store.logs(&LogFilter::default()).unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[1].body, "outside any span");
    let warn = store
        .logs(&LogFilter {
            min_severity: Some(13),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(warn.len(), 1);
    let in_trace = store
        .logs(&LogFilter {
            trace_id: Some(trace_id.clone()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(in_trace.len(), 1);

    // Metrics: the current value of each series, and the series over time.
    let current = store.metrics(&MetricFilter::default()).unwrap();
    let value = |name: &str, region: Option<&str>| {
        current
            .iter()
            .find(|p| {
                p.name == name && p.attributes.get("region").and_then(|r| r.as_str()) == region
            })
            .unwrap_or_else(|| panic!("{name} {region:?} in {current:#?}"))
    };
    assert_eq!(value("orders", Some("eu")).value, 12.0);
    assert_eq!(value("orders", Some("eu")).kind, "counter");
    assert_eq!(value("orders", Some("eu")).unit, "{order}");
    assert_eq!(value("orders", Some("us")).value, 1.0);
    let h = value("latency", None);
    assert_eq!(
        (h.kind.as_str(), h.count, h.value),
        ("histogram", Some(2), 55.0)
    );
    assert_eq!(
        h.buckets.as_ref().unwrap()["counts"],
        serde_json::json!([1, 1, 0])
    );
    let series = store
        .metric_series("orders", &MetricFilter::default())
        .unwrap();
    let eu: Vec<f64> = series
        .iter()
        .filter(|p| p.attributes["region"] == "eu")
        .map(|p| p.value)
        .collect();
    assert_eq!(&eu[..2], [7.0, 12.0]);
    assert_eq!(store.services().unwrap(), vec!["shop".to_string()]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_span_exported_twice_is_stored_and_counted_once() {
    let dir = temp_dir("dup");
    let store = open(&dir.join("t.db"));
    let exporter = store.exporter();
    let now = SystemTime::now();
    block_on(exporter.export(support::trace(1, 3, now, false))).unwrap();
    block_on(exporter.export(support::trace(1, 3, now, false))).unwrap();
    let t = store.traces(&TraceFilter::default()).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].span_count, 3);
    assert_eq!(t[0].root_name, "GET /item/1");
    assert_eq!(t[0].duration_ns, 10_000_000);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Log records written before their trace's spans (as a request logs while
/// its span is open) find their trace by its key; the trace is listed only
/// once it has spans, with the spans' times and names, not the logs'.
#[test]
fn logs_before_spans_join_their_trace() {
    let dir = temp_dir("logs-first");
    let store = open(&dir.join("t.db"));
    let logger_provider = SdkLoggerProvider::builder()
        .with_resource(resource("shop"))
        .with_simple_exporter(store.exporter())
        .build();
    let logger = logger_provider.logger("test");
    let start = SystemTime::now();
    let emit = |n: u64, body: &'static str, at: SystemTime| {
        let mut record = logger.create_log_record();
        record.set_timestamp(at);
        record.set_body(body.into());
        record.set_trace_context(
            support::trace_id(n),
            opentelemetry::trace::SpanId::from(n << 16 | 1),
            None,
        );
        logger.emit(record);
    };
    // Trace 1: a log a second before its spans start; trace 2: logs only.
    emit(1, "early", start - Duration::from_secs(1));
    emit(1, "inside", start + Duration::from_millis(2));
    emit(2, "orphan", start);
    assert!(store.traces(&TraceFilter::default()).unwrap().is_empty());
    assert_eq!(
        (store.counts().unwrap().traces, store.counts().unwrap().logs),
        (0, 3)
    );
    let t1 = support::trace_id(1).to_string();
    let t2 = support::trace_id(2).to_string();
    let by_trace = |t: &str| {
        store
            .logs(&LogFilter {
                trace_id: Some(t.to_string()),
                ..LogFilter::default()
            })
            .unwrap()
            .into_iter()
            .map(|l| l.body)
            .collect::<Vec<_>>()
    };
    assert_eq!(by_trace(&t1), ["early", "inside"]);

    block_on(store.exporter().export(support::trace(1, 3, start, false))).unwrap();
    let traces = store.traces(&TraceFilter::default()).unwrap();
    assert_eq!(traces.len(), 1, "{traces:?}");
    let t = &traces[0];
    assert_eq!(t.trace_id, t1);
    assert_eq!(t.root_name, "GET /item/1");
    assert_eq!(t.span_count, 3);
    let start_ns = start.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64;
    assert_eq!((t.start_ns, t.duration_ns), (start_ns, 10_000_000));
    let full = store.trace(&t1).unwrap().unwrap();
    assert_eq!(full.spans.len(), 3);
    let bodies: Vec<&str> = full.logs.iter().map(|l| l.body.as_str()).collect();
    assert_eq!(bodies, ["early", "inside"]);
    // A record after the spans joins the same row (no second one is made).
    emit(1, "late", start + Duration::from_millis(20));
    assert_eq!(by_trace(&t1), ["early", "inside", "late"]);
    assert_eq!(store.trace(&t1).unwrap().unwrap().logs.len(), 3);
    assert_eq!(store.traces(&TraceFilter::default()).unwrap().len(), 1);

    // A trace with logs and no spans: not listed, but found by its id.
    let orphan = store.trace(&t2).unwrap().expect("the logs' trace");
    assert_eq!(orphan.summary.span_count, 0);
    assert_eq!(orphan.logs.len(), 1);
    assert_eq!(by_trace(&t2), ["orphan"]);
    logger_provider.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn concurrent_writers_and_readers_lose_nothing() {
    let dir = temp_dir("concurrent");
    let path = dir.join("t.db");
    const WRITERS: u64 = 4;
    const BATCHES: u64 = 25;
    const PER_BATCH: u64 = 20;
    let now = SystemTime::now();
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let path = &path;
            s.spawn(move || {
                // Each writer has its own connection, as separate processes do.
                let store = open(path);
                let exporter = store.exporter();
                for b in 0..BATCHES {
                    let batch = (0..PER_BATCH)
                        .flat_map(|i| {
                            support::trace((w * BATCHES + b) * PER_BATCH + i, 3, now, false)
                        })
                        .collect();
                    block_on(exporter.export(batch)).unwrap();
                }
            });
        }
        let path = &path;
        s.spawn(move || {
            let store = open(path);
            for _ in 0..50 {
                let list = store.traces(&TraceFilter::default()).unwrap();
                for t in list.iter().take(3) {
                    let full = store.trace(&t.trace_id).unwrap().unwrap();
                    // A trace is written in one transaction: never seen half.
                    assert_eq!(full.spans.len(), 3);
                }
            }
        });
    });
    let store = open(&path);
    let counts = store.counts().unwrap();
    assert_eq!(counts.traces as u64, WRITERS * BATCHES * PER_BATCH);
    assert_eq!(counts.spans as u64, WRITERS * BATCHES * PER_BATCH * 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run as a child process by `a_killed_writer_keeps_what_it_committed`:
/// writes batches forever, saying after each commit how many traces it
/// committed.
#[test]
fn child_writer() {
    let Some(path) = std::env::var_os("WASI_OBSERVE_STORE_TEST_CHILD") else {
        return;
    };
    let store = open(Path::new(&path));
    let exporter = store.exporter();
    let now = SystemTime::now();
    for b in 0.. {
        let batch = (0..50)
            .flat_map(|i| support::trace(b * 50 + i, 4, now, false))
            .collect();
        block_on(exporter.export(batch)).unwrap();
        println!("committed {}", (b + 1) * 50);
    }
}

#[test]
fn a_killed_writer_keeps_what_it_committed() {
    use std::io::{BufRead, BufReader};
    let dir = temp_dir("killed");
    let path = dir.join("t.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
        .env("WASI_OBSERVE_STORE_TEST_CHILD", &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut committed = 0;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while committed < 2000 {
        let line = lines.next().unwrap().unwrap();
        if let Some(n) = line.strip_prefix("committed ") {
            committed = n.parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL, in the middle of later writes
    child.wait().unwrap();
    let store = open(&path);
    let counts = store.counts().unwrap();
    assert!(counts.traces >= committed, "{counts:?} < {committed}");
    assert_eq!(counts.spans, counts.traces * 4, "no trace half written");
    let _ = std::fs::remove_dir_all(&dir);
}

fn assert_refused_untouched(path: &Path, expected: &str) {
    let before = std::fs::read(path).unwrap();
    let err = Store::open(path, StoreOptions::default()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(expected), "{msg}");
    assert!(msg.contains("left untouched"), "{msg}");
    assert_eq!(
        std::fs::read(path).unwrap(),
        before,
        "the file was modified"
    );
    assert!(!path.with_extension("db-wal").exists());
}

#[test]
fn foreign_and_damaged_files_are_refused_and_left_untouched() {
    let dir = temp_dir("foreign");

    let random = dir.join("random.db");
    let bytes: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&random, &bytes).unwrap();
    assert_refused_untouched(&random, "not an SQLite database");

    let text = dir.join("notes.db");
    std::fs::write(&text, "hello").unwrap();
    assert_refused_untouched(&text, "not an SQLite database");

    // A valid SQLite database of another application.
    let other = dir.join("other.db");
    {
        let conn = rusqlite::Connection::open(&other).unwrap();
        conn.execute_batch(
            "CREATE TABLE contacts (name TEXT); INSERT INTO contacts VALUES ('ada');",
        )
        .unwrap();
    }
    assert_refused_untouched(&other, "another application");
    let conn = rusqlite::Connection::open(&other).unwrap();
    conn.execute_batch("PRAGMA application_id = 1234").unwrap();
    drop(conn);
    assert_refused_untouched(&other, "application_id 0x4d2");

    // Our store with its pages damaged after the header.
    let damaged = dir.join("damaged.db");
    {
        let store = open(&damaged);
        let exporter = store.exporter();
        block_on(exporter.export(support::trace(7, 3, SystemTime::now(), false))).unwrap();
    }
    let mut bytes = std::fs::read(&damaged).unwrap();
    for b in bytes.iter_mut().skip(100) {
        *b = 0xa5;
    }
    std::fs::write(&damaged, &bytes).unwrap();
    let _ = std::fs::remove_file(damaged.with_extension("db-wal"));
    let _ = std::fs::remove_file(damaged.with_extension("db-shm"));
    assert_refused_untouched(&damaged, "damaged");

    // A store from a newer version.
    let newer = dir.join("newer.db");
    drop(open(&newer));
    let conn = rusqlite::Connection::open(&newer).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let err = Store::open(&newer, StoreOptions::default()).unwrap_err();
    assert!(format!("{err:#}").contains("newer wasi-observe"), "{err:#}");

    // Readers never create a store.
    let missing = dir.join("missing.db");
    let err = Store::open_existing(&missing).unwrap_err();
    assert!(format!("{err:#}").contains("no telemetry store"), "{err:#}");
    assert!(!missing.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_full_store_drops_new_data_counts_it_and_stays_readable() {
    let dir = temp_dir("full");
    let path = dir.join("t.db");
    let store = Store::open(
        &path,
        StoreOptions {
            hard_max_bytes: Some(256 << 10),
            retention: Retention {
                max_age: None,
                max_bytes: None,
            },
        },
    )
    .unwrap();
    let exporter = store.exporter();
    let now = SystemTime::now();
    let mut ok = 0;
    let mut failed = 0;
    for b in 0..200 {
        let batch: Vec<_> = (0..20)
            .flat_map(|i| support::trace(b * 20 + i, 5, now, false))
            .collect();
        match block_on(exporter.export(batch)) {
            Ok(()) => ok += 1,
            Err(e) => {
                assert!(e.to_string().contains("is full"), "{e}");
                failed += 1;
            }
        }
    }
    assert!(ok > 0 && failed > 0, "ok={ok} failed={failed}");
    assert_eq!(store.dropped().spans, failed * 100);
    // What was committed before is intact.
    let counts = store.counts().unwrap();
    assert_eq!(counts.traces, ok * 20);
    assert_eq!(counts.spans, ok * 100);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn retention_prunes_by_age_and_by_size() {
    let dir = temp_dir("retention");
    // Age goes by when a trace was written, not by the times its spans
    // claim (a guest may say 2023, or 2096).
    let store = Store::open(
        &dir.join("age.db"),
        StoreOptions {
            retention: Retention {
                max_age: Some(Duration::from_secs(1)),
                max_bytes: None,
            },
            hard_max_bytes: None,
        },
    )
    .unwrap();
    let exporter = store.exporter();
    let long_ago = SystemTime::now() - Duration::from_secs(3 * 24 * 3600);
    block_on(exporter.export(support::trace(1, 3, SystemTime::now(), false))).unwrap();
    block_on(exporter.export(support::trace(2, 3, long_ago, false))).unwrap();
    store.prune().unwrap();
    assert_eq!(
        store.counts().unwrap().traces,
        2,
        "both were written just now"
    );
    std::thread::sleep(Duration::from_millis(1100));
    block_on(exporter.export(support::trace(3, 3, long_ago, false))).unwrap();
    store.prune().unwrap();
    let left = store.traces(&TraceFilter::default()).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].root_name, "GET /item/3");
    assert_eq!(store.counts().unwrap().spans, 3);

    let max = 1 << 20;
    let store = Store::open(
        &dir.join("size.db"),
        StoreOptions {
            retention: Retention {
                max_age: None,
                max_bytes: Some(max),
            },
            hard_max_bytes: None,
        },
    )
    .unwrap();
    let exporter = store.exporter();
    let start = UNIX_EPOCH + Duration::from_nanos(now_ns() as u64);
    for b in 0..100u64 {
        let batch = (0..50)
            .flat_map(|i| {
                support::trace(
                    b * 50 + i,
                    4,
                    start + Duration::from_secs(b * 50 + i),
                    false,
                )
            })
            .collect();
        block_on(exporter.export(batch)).unwrap();
    }
    assert!(store.data_bytes().unwrap() > max);
    store.prune().unwrap();
    assert!(
        store.data_bytes().unwrap() <= max,
        "{} {:?}",
        store.data_bytes().unwrap(),
        store.counts().unwrap()
    );
    // The newest survive.
    let newest = store
        .traces(&TraceFilter {
            limit: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(newest[0].root_name, format!("GET /item/{}", 4999 % 100));
    let file = std::fs::metadata(dir.join("size.db")).unwrap().len();
    assert!(file < 4 * max, "the file gave space back: {file}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn keep_all() -> StoreOptions {
    StoreOptions {
        retention: Retention {
            max_age: None,
            max_bytes: None,
        },
        hard_max_bytes: None,
    }
}

/// Telemetry is its owner's alone: a store made from nothing gets a 0700
/// directory and 0600 files (the database, its -wal and -shm); one whose
/// files others may read is opened with a warning.
#[cfg(unix)]
#[test]
fn store_files_are_private_and_loose_ones_are_warned_about() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir("modes");
    let store_dir = dir.join("nested").join("wasi-observe");
    let path = store_dir.join("t.db");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let store = open(&path);
    block_on(
        store
            .exporter()
            .export(support::trace(1, 2, SystemTime::now(), false)),
    )
    .unwrap();
    assert_eq!(mode(&store_dir), 0o700);
    assert_eq!(mode(&dir.join("nested")), 0o700);
    for file in ["t.db", "t.db-wal", "t.db-shm"] {
        assert_eq!(mode(&store_dir.join(file)), 0o600, "{file}");
    }
    assert_eq!(store.mode_warning(), None);
    drop(store);

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = open(&path);
    let warning = store.mode_warning().expect("a warning");
    assert!(warning.contains("t.db (644)"), "{warning}");
    assert!(!warning.contains("wasi-observe (7"), "{warning}");
    drop(store);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&store_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = open(&path);
    let warning = store.mode_warning().expect("a warning");
    assert!(warning.contains("wasi-observe (755)"), "{warning}");
    assert!(!warning.contains("t.db ("), "{warning}");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A trace that keeps receiving spans (a client resending one
/// `traceparent`) cannot pin its old spans: age retention goes by when
/// each batch of them was written, and the trace's figures follow.
#[test]
fn retention_removes_old_spans_of_a_trace_that_keeps_growing() {
    let dir = temp_dir("pinned");
    let store = Store::open(
        &dir.join("t.db"),
        StoreOptions {
            retention: Retention {
                max_age: Some(Duration::from_secs(1)),
                max_bytes: None,
            },
            hard_max_bytes: None,
        },
    )
    .unwrap();
    let exporter = store.exporter();
    let start = SystemTime::now();
    // Spans 0-3 of trace 1 (span 3 an error), then, later, more of it.
    block_on(exporter.export(support::trace(1, 4, start, true))).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let later = (0..3)
        .map(|i| {
            let mut s = support::span(1, 10 + i, start + Duration::from_secs(1), false);
            s.parent_span_id = opentelemetry::trace::SpanId::from(1 << 16 | 1);
            s
        })
        .collect();
    block_on(exporter.export(later)).unwrap();
    store.prune().unwrap();
    let id = support::trace_id(1).to_string();
    let t = store
        .trace(&id)
        .unwrap()
        .expect("the trace keeps its new spans");
    let names: Vec<&str> = t.spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["step-10", "step-11", "step-12"]);
    assert_eq!((t.summary.span_count, t.summary.error_count), (3, 0));
    let new_start = start + Duration::from_millis(1000 + 10);
    assert_eq!(t.summary.start_ns, wasi_observe_store::unix_ns(new_start));
    assert_eq!(store.counts().unwrap().spans, 3);
    // A span name only the removed spans had no longer lists the trace.
    let named = |n: &str| {
        store
            .traces(&TraceFilter {
                span_name: Some(n.into()),
                ..Default::default()
            })
            .unwrap()
            .len()
    };
    assert_eq!((named("step-2"), named("step-11")), (0, 1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Traces written in one batch share a write time; pruning by size must
/// still get under the limit (it went by trace write time, and a tenth of
/// the traces falling inside one batch stopped it).
#[test]
fn size_retention_gets_through_traces_written_in_one_batch() {
    let dir = temp_dir("one-batch");
    let max = 1 << 20;
    // Written with no limit (so no automatic prune runs however slow the
    // machine), pruned through a handle with one.
    let path = dir.join("t.db");
    let writer = Store::open(&path, keep_all()).unwrap();
    let exporter = writer.exporter();
    let start = UNIX_EPOCH + Duration::from_nanos(now_ns() as u64);
    for b in 0..2u64 {
        let batch = (0..2500)
            .flat_map(|i| support::trace(b * 2500 + i, 4, start + Duration::from_secs(i), false))
            .collect();
        block_on(exporter.export(batch)).unwrap();
    }
    let store = Store::open(
        &path,
        StoreOptions {
            retention: Retention {
                max_age: None,
                max_bytes: Some(max),
            },
            hard_max_bytes: None,
        },
    )
    .unwrap();
    assert!(store.data_bytes().unwrap() > max);
    assert!(store.prune().unwrap() > 0);
    assert!(store.data_bytes().unwrap() <= max);
    let counts = store.counts().unwrap();
    assert!(counts.traces > 0 && counts.traces < 5000, "{counts:?}");
    assert_eq!(counts.spans, counts.traces * 4);
    // The newest survive.
    let newest = store
        .traces(&TraceFilter {
            limit: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(newest[0].trace_id, support::trace_id(4999).to_string());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A retention age too long for nanoseconds in 64 bits keeps everything
/// (it wrapped, and deleted everything).
#[test]
fn a_very_long_retention_age_keeps_everything() {
    let dir = temp_dir("long-age");
    let store = Store::open(
        &dir.join("t.db"),
        StoreOptions {
            retention: Retention {
                max_age: wasi_observe_store::parse_age("110000d").unwrap(),
                max_bytes: None,
            },
            hard_max_bytes: None,
        },
    )
    .unwrap();
    block_on(
        store
            .exporter()
            .export(support::trace(1, 3, SystemTime::now(), false)),
    )
    .unwrap();
    assert_eq!(store.prune().unwrap(), 0);
    assert_eq!(store.counts().unwrap().spans, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A huge trace is read in bounded pages, each span once; `trace` reads
/// at most `TRACE_SPANS_READ` of it.
#[test]
fn a_trace_is_read_in_pages() {
    let dir = temp_dir("pages");
    let store = Store::open(&dir.join("t.db"), keep_all()).unwrap();
    let exporter = store.exporter();
    let start = SystemTime::now();
    // 2 500 spans of trace 1 in three batches (the third: the root alone).
    let span = |i: u64| {
        let mut s = support::span(1, i, start, false);
        s.parent_span_id = opentelemetry::trace::SpanId::from(1 << 16 | 1);
        s
    };
    block_on(exporter.export((1..1200).map(span).collect())).unwrap();
    block_on(exporter.export((1200..2500).map(span).collect())).unwrap();
    block_on(exporter.export(vec![support::span(1, 0, start, false)])).unwrap();
    let id = support::trace_id(1).to_string();
    let mut seen = std::collections::HashSet::new();
    let mut sizes = Vec::new();
    let mut after = None;
    loop {
        let page = store.trace_spans(&id, after, 700).unwrap();
        sizes.push(page.spans.len());
        for s in &page.spans {
            assert!(seen.insert(s.span_id.clone()), "{} twice", s.span_id);
        }
        // Cursors survive being text (a URL parameter).
        after = match page.next {
            Some(c) => Some(c.to_string().parse().unwrap()),
            None => break,
        };
    }
    assert_eq!(sizes, [700, 700, 700, 400]);
    assert_eq!(seen.len(), 2500);
    let t = store.trace(&id).unwrap().unwrap();
    assert_eq!((t.spans.len(), t.summary.span_count), (2500, 2500));
    assert_eq!(
        t.spans[0].name, "GET /item/1",
        "by start time, the root first"
    );
    assert!(
        store
            .trace_spans(&"f".repeat(32), None, 10)
            .unwrap()
            .spans
            .is_empty()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Traces far apart in arrival order (in different epochs of the id and
/// duration indexes, schema 5) are found by id and prefix, joined by their
/// later spans and log records (through a handle's filter of stored ids,
/// whether this handle or another wrote them), never duplicated, and listed
/// slowest first across epochs.
#[test]
fn traces_in_different_epochs_are_found_joined_and_ordered() {
    let dir = temp_dir("epochs");
    let path = dir.join("t.db");
    let store = open(&path);
    let other = open(&path);
    let (one, two) = (store.exporter(), other.exporter());
    let now = SystemTime::now();
    // Trace 1 in epoch 0, traces 2 and 3 (the last written by the other
    // handle) in epoch 12: keys jump as if 50 000 traces had come between.
    // 1 100 one-span traces first, through one handle only: past them it
    // keeps a filter of the stored ids, while the other still probes the
    // file, so both ways of looking up are used below.
    block_on(one.export(support::trace(1, 2, now, false))).unwrap();
    let filler: Vec<_> = (100..1200)
        .map(|n| support::span(n, 0, now, n == 150))
        .collect();
    block_on(one.export(filler)).unwrap();
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE counts SET last_key = 50000", [])
        .unwrap();
    block_on(one.export(support::trace(2, 3, now, false))).unwrap();
    block_on(two.export(support::trace(3, 5, now, false))).unwrap();
    // Later spans of each trace, each through the handle that did not
    // write it first (or did, for trace 1's second batch).
    let later = |n: u64, i: u64| vec![support::span(n, i, now, false)];
    block_on(two.export(later(1, 15))).unwrap();
    block_on(one.export(later(1, 16))).unwrap();
    // Trace 3's is an error, as filler 150 is.
    block_on(one.export(vec![support::span(3, 17, now, true)])).unwrap();
    block_on(two.export(later(2, 18))).unwrap();
    let logs = SdkLoggerProvider::builder()
        .with_resource(resource("shop"))
        .with_simple_exporter(store.exporter())
        .build();
    let logger = logs.logger("test");
    let mut record = logger.create_log_record();
    record.set_body("for trace 1".into());
    record.set_trace_context(
        support::trace_id(1),
        opentelemetry::trace::SpanId::from(1 << 16 | 1),
        None,
    );
    logger.emit(record);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM traces", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1103, "one row per trace");
    for (n, key) in [(1, 1), (2, 50001), (3, 50002)] {
        let stored: i64 = conn
            .query_row(
                "SELECT trace_key FROM traces WHERE trace_id = ?1",
                [support::trace_id(n).to_string()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stored, key, "trace {n}: no key reused");
    }
    for (n, spans) in [(1, 4), (2, 4), (3, 6)] {
        let id = support::trace_id(n).to_string();
        let t = store.trace(&id).unwrap().unwrap();
        assert_eq!(t.summary.span_count, spans, "trace {n}");
        assert_eq!(t.spans.len(), spans as usize, "trace {n}");
        assert_eq!(store.resolve_trace_id(&id[..12]).unwrap(), Some(id.clone()));
        assert_eq!(t.logs.len(), usize::from(n == 1), "trace {n}");
    }
    assert_eq!(store.counts().unwrap().traces, 1103);
    // Span i ends at max(i + 1, 10) ms: trace 1 runs 17 ms, trace 2 19
    // and trace 3 18.
    let slowest = |limit| {
        store
            .traces(&TraceFilter {
                slowest_first: true,
                limit: Some(limit),
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|t| (t.trace_id, t.duration_ns))
            .collect::<Vec<_>>()
    };
    let id = |n| support::trace_id(n).to_string();
    // The 1 100 others take 10 ms each.
    let top = slowest(4);
    assert_eq!(
        top[..3],
        [
            (id(2), 19_000_000),
            (id(3), 18_000_000),
            (id(1), 17_000_000)
        ]
    );
    assert_eq!(top[3].1, 10_000_000);
    assert_eq!(slowest(1), [(id(2), 19_000_000)]);
    // A filter applies within each epoch's list.
    let errors: Vec<_> = store
        .traces(&TraceFilter {
            slowest_first: true,
            errors_only: true,
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .map(|t| (t.trace_id, t.duration_ns))
        .collect();
    assert_eq!(errors, [(id(3), 18_000_000), (id(150), 10_000_000)]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A writer remembers the keys of the traces it wrote lately, so that a
/// log record or later spans find their trace without a lookup. Once
/// retention removes such a trace (here through another handle, as another
/// process would), its key is not used again: the trace's later telemetry
/// makes a new row, and its spans and logs are found together.
#[test]
fn remembered_trace_keys_go_with_retention() {
    let dir = temp_dir("recent");
    let path = dir.join("t.db");
    let writer = open(&path);
    let pruner = Store::open(
        &path,
        StoreOptions {
            retention: Retention {
                max_age: Some(Duration::from_secs(1)),
                max_bytes: None,
            },
            hard_max_bytes: None,
        },
    )
    .unwrap();
    let logs = SdkLoggerProvider::builder()
        .with_resource(resource("shop"))
        .with_simple_exporter(writer.exporter())
        .build();
    let logger = logs.logger("test");
    let emit = |body: &'static str| {
        let mut record = logger.create_log_record();
        record.set_timestamp(SystemTime::now());
        record.set_body(body.into());
        record.set_trace_context(
            support::trace_id(1),
            opentelemetry::trace::SpanId::from(1 << 16 | 1),
            None,
        );
        logger.emit(record);
    };
    let t1 = support::trace_id(1).to_string();
    let key = |store: &Store| -> Vec<i64> {
        let conn = rusqlite::Connection::open(store.path()).unwrap();
        let mut stmt = conn
            .prepare("SELECT trace_key FROM traces WHERE trace_id = ?1")
            .unwrap();
        stmt.query_map([&t1], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    block_on(
        writer
            .exporter()
            .export(support::trace(1, 2, SystemTime::now(), false)),
    )
    .unwrap();
    emit("before");
    let first = key(&writer);
    assert_eq!(first.len(), 1);
    assert_eq!(writer.trace(&t1).unwrap().unwrap().logs.len(), 1);

    std::thread::sleep(Duration::from_millis(1100));
    assert!(pruner.prune().unwrap() >= 1);
    assert!(writer.trace(&t1).unwrap().is_none(), "trace 1 was removed");

    emit("after");
    block_on(
        writer
            .exporter()
            .export(vec![support::span(1, 5, SystemTime::now(), false)]),
    )
    .unwrap();
    let second = key(&writer);
    assert_eq!(second.len(), 1, "one row for trace 1");
    assert!(second[0] > first[0], "a new key: {first:?} then {second:?}");
    let full = writer.trace(&t1).unwrap().expect("trace 1 again");
    assert_eq!(full.spans.len(), 1);
    let bodies: Vec<&str> = full.logs.iter().map(|l| l.body.as_str()).collect();
    assert_eq!(bodies, ["after"], "the record joined the new row");
    logs.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Log records are kept many to a chunk. Every filter the views use gives
/// what a scan of all the records gives: the newest `limit` that match,
/// oldest first, ties in time in the order written; whatever the chunk
/// boundaries and however times are spread across chunks (a later batch
/// may hold older records). Retention removes whole chunks, with their
/// trace entries and counts.
#[test]
fn log_chunks_answer_every_filter_as_a_scan_would() {
    use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogRecord};
    let dir = temp_dir("log-chunks");
    let path = dir.join("t.db");
    let store = open(&path);
    let provider = SdkLoggerProvider::builder().build();
    let logger = provider.logger("test");
    // What each record is, in the order written: time, severity, service,
    // body, trace.
    type Written<'a> = (i64, i32, &'a str, String, Option<u64>);
    let mut written: Vec<Written<'_>> = Vec::new();
    let base = now_ns() - 3_600_000_000_000;
    // Six batches through two services: 300 records (two chunks), 40, 257,
    // 1, 500 and 99; the third batch's records are older than the first's,
    // and some records share a time.
    for (b, (count, service)) in [
        (300, "svc-a"),
        (40, "svc-b"),
        (257, "svc-a"),
        (1, "svc-b"),
        (500, "svc-a"),
        (99, "svc-b"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut exporter = store.exporter();
        LogExporter::set_resource(&mut exporter, &resource(service));
        let mut records: Vec<SdkLogRecord> = Vec::new();
        for i in 0..count {
            let n = written.len() as u64;
            let time = match b {
                2 => base + (i as i64) * 1_000,
                _ => base + 10_000_000 + (n as i64 / 3) * 1_000,
            };
            let severity = match n % 7 {
                0 => Severity::Error,
                1 | 2 => Severity::Warn,
                _ => Severity::Info,
            };
            let body = format!("Request {} of item {}", n, n % 13);
            let trace = n.is_multiple_of(5).then_some(n % 40);
            let mut record = logger.create_log_record();
            record.set_timestamp(UNIX_EPOCH + Duration::from_nanos(time as u64));
            record.set_severity_number(severity);
            record.set_body(body.clone().into());
            record.add_attribute("n", n as i64);
            if let Some(t) = trace {
                record.set_trace_context(
                    support::trace_id(t),
                    opentelemetry::trace::SpanId::from(n + 1),
                    None,
                );
            }
            written.push((time, severity as i32, service, body, trace));
            records.push(record);
        }
        let scope = opentelemetry::InstrumentationScope::builder("test").build();
        let refs: Vec<_> = records.iter().map(|r| (r, &scope)).collect();
        block_on(LogExporter::export(&exporter, LogBatch::new(&refs))).unwrap();
    }
    assert_eq!(store.counts().unwrap().logs, written.len() as i64);

    let expected = |f: &LogFilter| -> Vec<String> {
        let mut matching: Vec<(usize, &Written<'_>)> = written
            .iter()
            .enumerate()
            .filter(|(_, (time, severity, service, body, trace))| {
                f.min_severity.is_none_or(|s| *severity >= s)
                    && f.service.as_deref().is_none_or(|s| *service == s)
                    && f.since_ns.is_none_or(|s| *time >= s)
                    && f.trace_id.as_ref().is_none_or(|t| {
                        trace.is_some_and(|n| support::trace_id(n).to_string() == *t)
                    })
                    && f.search
                        .as_ref()
                        .is_none_or(|q| body.to_ascii_lowercase().contains(&q.to_ascii_lowercase()))
            })
            .collect();
        matching.sort_by_key(|&(i, (time, ..))| std::cmp::Reverse((*time, i)));
        matching.truncate(f.limit.unwrap_or(100));
        matching.reverse();
        matching.into_iter().map(|(_, r)| r.3.clone()).collect()
    };
    let trace = support::trace_id(15).to_string();
    let filters = [
        LogFilter::default(),
        LogFilter {
            limit: Some(1),
            ..LogFilter::default()
        },
        LogFilter {
            limit: Some(2000),
            ..LogFilter::default()
        },
        LogFilter {
            min_severity: Some(13),
            limit: Some(150),
            ..LogFilter::default()
        },
        LogFilter {
            min_severity: Some(17),
            service: Some("svc-b".into()),
            ..LogFilter::default()
        },
        LogFilter {
            search: Some("rEQUEST 4".into()),
            limit: Some(30),
            ..LogFilter::default()
        },
        LogFilter {
            search: Some("of item 12".into()),
            since_ns: Some(base + 10_000_000 + 200_000),
            ..LogFilter::default()
        },
        LogFilter {
            trace_id: Some(trace.clone()),
            ..LogFilter::default()
        },
        LogFilter {
            trace_id: Some(trace.clone()),
            min_severity: Some(13),
            limit: Some(3),
            ..LogFilter::default()
        },
        LogFilter {
            service: Some("svc-c".into()),
            ..LogFilter::default()
        },
    ];
    for f in &filters {
        let got: Vec<String> = store.logs(f).unwrap().into_iter().map(|l| l.body).collect();
        assert_eq!(got, expected(f), "{f:?}");
    }
    // A trace's own view holds all its records, by time.
    let full = store.trace(&trace).unwrap().expect("the records' trace");
    let bodies: Vec<String> = full.logs.iter().map(|l| l.body.clone()).collect();
    assert_eq!(
        bodies,
        expected(&LogFilter {
            trace_id: Some(trace.clone()),
            limit: Some(10_000),
            ..LogFilter::default()
        })
    );
    assert!(
        full.logs
            .iter()
            .all(|l| l.trace_id.as_deref() == Some(&*trace))
    );
    assert_eq!(full.logs[0].attributes["n"].as_i64().unwrap() % 5, 0);

    // Retention by age goes by when a chunk was written.
    std::thread::sleep(Duration::from_millis(1100));
    let mut exporter = store.exporter();
    LogExporter::set_resource(&mut exporter, &resource("svc-a"));
    let mut record = logger.create_log_record();
    record.set_body("fresh".into());
    record.set_trace_context(
        support::trace_id(15),
        opentelemetry::trace::SpanId::from(9999),
        None,
    );
    let scope = opentelemetry::InstrumentationScope::builder("test").build();
    block_on(LogExporter::export(
        &exporter,
        LogBatch::new(&[(&record, &scope)]),
    ))
    .unwrap();
    let pruner = Store::open(
        &path,
        StoreOptions {
            retention: Retention {
                max_age: Some(Duration::from_secs(1)),
                max_bytes: None,
            },
            hard_max_bytes: None,
        },
    )
    .unwrap();
    pruner.prune().unwrap();
    let left: Vec<String> = store
        .logs(&LogFilter::default())
        .unwrap()
        .into_iter()
        .map(|l| l.body)
        .collect();
    assert_eq!(left, ["fresh"]);
    assert_eq!(store.counts().unwrap().logs, 1);
    // The trace has log records only, the first long written, but a fresh
    // one names it: its row stays, and holds the fresh record.
    let bodies: Vec<String> = store
        .trace(&trace)
        .unwrap()
        .expect("a trace that records still name")
        .logs
        .into_iter()
        .map(|l| l.body)
        .collect();
    assert_eq!(bodies, ["fresh"]);
    let bodies: Vec<String> = store
        .logs(&LogFilter {
            trace_id: Some(trace.clone()),
            ..LogFilter::default()
        })
        .unwrap()
        .into_iter()
        .map(|l| l.body)
        .collect();
    assert_eq!(bodies, ["fresh"]);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let entries: (i64, i64) = conn
        .query_row(
            "SELECT count(*), count(*) FILTER (WHERE chunk_id NOT IN (SELECT chunk_id FROM log_chunks))
             FROM log_traces",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        entries,
        (1, 0),
        "the removed chunks' trace entries went too"
    );
    // The other traces named only by the removed records went with them.
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM traces", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1, "only the trace a fresh record names is left");

    // Chunks whose times overlap: the one read first (its latest record is
    // the newest of all) holds mostly old records; the newest ten are its
    // latest and nine of the next chunk's.
    let other = open(&dir.join("overlap.db"));
    let exporter = other.exporter();
    let batch = |times: &[i64]| {
        let records: Vec<SdkLogRecord> = times
            .iter()
            .map(|&t| {
                let mut record = logger.create_log_record();
                record.set_timestamp(UNIX_EPOCH + Duration::from_nanos(t as u64));
                record.set_body(format!("at {t}").into());
                record
            })
            .collect();
        let refs: Vec<_> = records.iter().map(|r| (r, &scope)).collect();
        block_on(LogExporter::export(&exporter, LogBatch::new(&refs))).unwrap();
    };
    batch(&(0..200).map(|i| base + 500_000 + i).collect::<Vec<_>>());
    batch(&[vec![base + 1_000_000], (0..100).map(|i| base + i).collect()].concat());
    let got: Vec<String> = other
        .logs(&LogFilter {
            limit: Some(10),
            ..LogFilter::default()
        })
        .unwrap()
        .into_iter()
        .map(|l| l.body)
        .collect();
    let want: Vec<String> = (191..200)
        .map(|i| format!("at {}", base + 500_000 + i))
        .chain([format!("at {}", base + 1_000_000)])
        .collect();
    assert_eq!(got, want);
    provider.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A trace's view reads at most 10 000 of its log records, the first by
/// time, whatever order they were written in (and without holding the
/// rest in memory).
#[test]
fn a_trace_view_reads_its_first_ten_thousand_records() {
    use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogRecord};
    use opentelemetry_sdk::trace::SpanExporter;
    let dir = temp_dir("trace-logs");
    let store = open(&dir.join("t.db"));
    block_on(SpanExporter::export(
        &store.exporter(),
        support::trace(1, 1, SystemTime::now(), false),
    ))
    .unwrap();
    let provider = SdkLoggerProvider::builder().build();
    let logger = provider.logger("test");
    let scope = opentelemetry::InstrumentationScope::builder("test").build();
    let exporter = store.exporter();
    // Five batches of 5 000, each older than the one before.
    for b in 0..5u64 {
        let records: Vec<SdkLogRecord> = (0..5_000u64)
            .map(|i| {
                let n = (4 - b) * 5_000 + i;
                let mut record = logger.create_log_record();
                record.set_timestamp(UNIX_EPOCH + Duration::from_secs(1_000_000 + n));
                record.set_body(format!("{n}").into());
                record.set_trace_context(
                    support::trace_id(1),
                    opentelemetry::trace::SpanId::from(n + 1),
                    None,
                );
                record
            })
            .collect();
        let refs: Vec<_> = records.iter().map(|r| (r, &scope)).collect();
        block_on(LogExporter::export(&exporter, LogBatch::new(&refs))).unwrap();
    }
    let trace = store
        .trace(&support::trace_id(1).to_string())
        .unwrap()
        .unwrap();
    let bodies: Vec<String> = trace.logs.into_iter().map(|l| l.body).collect();
    let want: Vec<String> = (0..10_000).map(|n| n.to_string()).collect();
    assert_eq!(bodies, want);
    provider.shutdown().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

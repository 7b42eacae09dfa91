//! `wasi-observe-bench`: what a guest span, log record and measurement cost,
//! side by side with the same work done natively by the OpenTelemetry SDK
//! and with the floor of one host call.
//!
//! ```text
//! cargo run --release -p wasi-observe-bench [-- N]
//! ```
//!
//! Every exporter discards what it gets, so the figures are the cost of
//! making telemetry and handing it to the export pipeline, not of any
//! network. Guest figures are measured inside the guest (wasi monotonic
//! clock) around `N` operations, after `N / 10` warm-up operations; native
//! ones the same way. Memory figures are the peak RSS of a child process
//! that runs one instance.

use std::process::Command as Process;
use std::time::{Duration, Instant};

use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLoggerProvider};
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use wasi_observe_host::export::batch::BatchConfig;
use wasi_observe_host::{Telemetry, WasiObserveCtx};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

mod host;
use host::Host;

// As in the `wasi-observe` binary: glibc's allocator serialises the guest
// thread, which allocates telemetry, and the export thread, which frees it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An exporter for every signal that drops what it gets.
#[derive(Debug, Clone, Default)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Ok(())
    }
}

/// The guest pipeline's form, which reads a batch in place as the native
/// batch processor hands its exporter the batch without a copy.
impl wasi_observe_host::SpanBatchExporter for Discard {
    fn export(&self, _batch: &[SpanData]) -> OTelSdkResult {
        Ok(())
    }
}

impl LogExporter for Discard {
    async fn export(&self, _batch: LogBatch<'_>) -> OTelSdkResult {
        Ok(())
    }
}

impl PushMetricExporter for Discard {
    async fn export(&self, _metrics: &ResourceMetrics) -> OTelSdkResult {
        Ok(())
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

// ---------------------------------------------------------------------------
// Native: the same operations with the OpenTelemetry SDK in this process.

fn time(n: u64, mut op: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        op();
    }
    let start = Instant::now();
    for _ in 0..n {
        op();
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Room in every export queue, native and guest, for all `n` operations
/// and the warm-up: where the export thread falls behind (under callgrind,
/// which runs one thread at a time, it always does) nothing is dropped, so
/// both sides pay for all they make. The default queue (2 048) dropped
/// about two thirds of the native spans under callgrind.
fn queue_for(n: u64) -> usize {
    (n + n / 10 + 64) as usize
}

fn native_tracer_provider(n: u64) -> SdkTracerProvider {
    use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor};
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(queue_for(n))
        .build();
    SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(Discard)
                .with_batch_config(config)
                .build(),
        )
        .build()
}

fn native_logger_provider(n: u64) -> SdkLoggerProvider {
    use opentelemetry_sdk::logs::{BatchConfigBuilder, BatchLogProcessor};
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(queue_for(n))
        .build();
    SdkLoggerProvider::builder()
        .with_log_processor(
            BatchLogProcessor::builder(Discard)
                .with_batch_config(config)
                .build(),
        )
        .build()
}

fn native_span(n: u64) -> f64 {
    let provider = native_tracer_provider(n);
    let tracer = provider.tracer("bench");
    let ns = time(n, || {
        let mut span = tracer
            .span_builder("op")
            .with_attributes([KeyValue::new("a", 1i64), KeyValue::new("b", "x")])
            .start(&tracer);
        span.add_event("ev", vec![]);
        span.end();
    });
    let _ = provider.shutdown();
    ns
}

/// The guest's `tracing` code run natively through `tracing-opentelemetry`
/// and the OpenTelemetry log bridge (what the guest SDK's layer reproduces:
/// the differential test compares the two), batch processors, discarding
/// exporters. Scoped, not global: wasmtime-wasi's own `tracing` spans must
/// not reach it during the guest runs.
fn native_tracing(n: u64) -> f64 {
    use tracing_subscriber::layer::SubscriberExt as _;
    let tracer_provider = native_tracer_provider(n);
    let logger_provider = native_logger_provider(n);
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer_provider.tracer("bench"))
                .with_threads(false)
                .with_tracked_inactivity(false),
        )
        .with(
            opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(
                &logger_provider,
            ),
        );
    let ns = tracing::subscriber::with_default(subscriber, || {
        time(n, || {
            let span = tracing::info_span!("op", a = 1i64, b = "x");
            let _entered = span.enter();
            tracing::info!("ev");
        })
    });
    let _ = tracer_provider.shutdown();
    let _ = logger_provider.shutdown();
    ns
}

/// The same `tracing` code with `tracing-subscriber`'s registry alone
/// (nothing recorded), for comparison with the guest's `tracing-registry`.
fn native_tracing_registry(n: u64) -> f64 {
    tracing::subscriber::with_default(tracing_subscriber::registry(), || {
        time(n, || {
            let span = tracing::info_span!("op", a = 1i64, b = "x");
            let _entered = span.enter();
            tracing::info!("ev");
        })
    })
}

fn native_log(n: u64) -> f64 {
    let provider = native_logger_provider(n);
    let logger = provider.logger("bench");
    let ns = time(n, || {
        let mut record = logger.create_log_record();
        record.set_severity_number(opentelemetry::logs::Severity::Info);
        record.set_severity_text("INFO");
        record.set_body("a log message".into());
        record.set_target("bench");
        logger.emit(record);
    });
    let _ = provider.shutdown();
    ns
}

/// A `log` record with two key-values, through the `log` crate and
/// `opentelemetry-appender-log` (the guest's `log-kv`). Sets the process's
/// logger: for `--native log-kv` alone.
fn native_log_kv(n: u64) -> f64 {
    let provider = native_logger_provider(n);
    let bridge = opentelemetry_appender_log::OpenTelemetryLogBridge::new(&provider);
    log::set_boxed_logger(Box::new(bridge)).expect("the process's only logger");
    log::set_max_level(log::LevelFilter::Info);
    let ns = time(n, || {
        log::info!(route = "/hello", attempt = 1; "a log message");
    });
    let _ = provider.shutdown();
    ns
}

fn native_counter(n: u64) -> f64 {
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(Discard).build())
        .build();
    let counter = provider.meter("bench").u64_counter("ops").build();
    let attrs = [KeyValue::new("k", "v")];
    let ns = time(n, || counter.add(1, &attrs));
    let _ = provider.shutdown();
    ns
}

// ---------------------------------------------------------------------------
// Guests: the bench component under the host, as `wasi-observe run` sets it up.

struct Guests {
    engine: Engine,
    linker: Linker<Host>,
    component: Component,
}

impl Guests {
    fn new() -> Guests {
        let mut config = Config::new();
        config.concurrency_support(false);
        // `perf record` can name guest functions with a perf map.
        if std::env::var_os("WASI_OBSERVE_BENCH_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).expect("engine");
        let mut linker = Linker::<Host>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("wasi");
        wasi_observe_host::add_to_linker(&mut linker).expect("wasi-observe");
        // The floor: an import that does nothing with its string.
        linker
            .root()
            .instance("wasi-observe:bench/floor")
            .and_then(|mut i| i.func_wrap("noop", |_, (_s,): (String,)| Ok(())))
            .expect("floor");
        let component = load_cached(&engine, test_programs_artifacts::BENCH_COMPONENT);
        Guests {
            engine,
            linker,
            component,
        }
    }

    /// Runs `bench <mode> <n>` in a fresh instance; ns per operation.
    fn run(&self, mode: &str, n: u64) -> f64 {
        self.run_with(mode, n, Some(queue_for(n)))
    }

    /// As [`Guests::run`], with export queues of `queue` items (`None`: as
    /// `wasi-observe run` has them, for the memory figures).
    fn run_with(&self, mode: &str, n: u64, queue: Option<usize>) -> f64 {
        let (spans, logs) = (BatchConfig::spans_from_env(), BatchConfig::logs_from_env());
        let telemetry = Telemetry::builder()
            .with_default_service_name("bench")
            .with_span_batch_config(BatchConfig {
                max_queue_size: queue.unwrap_or(spans.max_queue_size),
                ..spans
            })
            .with_log_batch_config(BatchConfig {
                max_queue_size: queue.unwrap_or(logs.max_queue_size),
                ..logs
            })
            .with_span_batch_exporter(Discard)
            .with_log_exporter(Discard)
            .with_metric_exporter(Discard)
            .build()
            .expect("telemetry");
        let stdout = MemoryOutputPipe::new(4096);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .inherit_stderr()
            .args(&["bench", mode, &n.to_string()])
            .build();
        let host = Host::new(wasi, WasiObserveCtx::new(&telemetry));
        let mut store = Store::new(&self.engine, host);
        let instance = self
            .linker
            .instantiate(&mut store, &self.component)
            .expect("instantiate");
        let command = Command::new(&mut store, &instance).expect("a command");
        let result = command
            .wasi_cli_run()
            .call_run(&mut store)
            .and_then(|r| wasi_observe_host::flush_guest(&mut store, &instance).map(|()| r));
        drop(store);
        let _ = telemetry.shutdown();
        if let Err(e) = result {
            eprintln!("{mode}: the guest trapped: {e:?}");
            return f64::NAN;
        }
        let out = String::from_utf8_lossy(&stdout.contents()).to_string();
        let total: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("elapsed_ns "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{mode}: no timing in {out:?}"));
        let stats = telemetry.stats();
        if stats.has_losses() {
            eprintln!("{mode}: losses {stats:?}");
        }
        total / n as f64
    }
}

/// The bench component, compiled once and cached beside it (`.cwasm`), so
/// that runs under callgrind do not spend minutes compiling it again.
fn load_cached(engine: &Engine, path: &str) -> Component {
    let cached = std::path::PathBuf::from(format!("{path}.bench.cwasm"));
    let fresh = |p: &std::path::Path| p.metadata().and_then(|m| m.modified()).ok();
    if fresh(&cached) > fresh(std::path::Path::new(path)) {
        // SAFETY: the file is one this function wrote with
        // `Component::serialize` for this wasmtime (the deserializer also
        // checks the version and engine settings), newer than its source.
        #[allow(unsafe_code)]
        if let Ok(c) = unsafe { Component::deserialize_file(engine, &cached) } {
            return c;
        }
    }
    let component = Component::from_file(engine, path).expect("the bench component");
    if let Ok(bytes) = component.serialize() {
        let _ = std::fs::write(&cached, bytes);
    }
    component
}

/// Peak RSS (kB) of a child process running one guest mode.
fn peak_rss(mode: &str, n: u64) -> (Option<u64>, String) {
    let exe = std::env::current_exe().expect("own path");
    let out = Process::new(exe)
        .args(["--memory", mode, &n.to_string()])
        .output()
        .expect("child");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rss = text
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kb "))
        .and_then(|v| v.trim().parse().ok());
    let note = String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    (rss, note)
}

fn vm_hwm_kb() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Instructions per operation of one figure (`--guest MODE` or `--native
/// MODE`), counted by callgrind: runs of `n1` and `n2` operations, the
/// difference divided by the extra operations (warm-up included), so
/// start-up and compilation cancel out. Returns the count on the thread that
/// makes the telemetry and on all threads together. `crates/bench/ir.sh`
/// and `--json --instructions` both count with it.
fn instructions(flag: &str, mode: &str, n1: u64, n2: u64) -> (f64, f64) {
    let bin = std::env::current_exe().expect("the bench's own path");
    let dir = std::env::temp_dir().join(format!("wasi-observe-ir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    // Code compiled outside valgrind does not load under it: compile (and
    // cache) under valgrind first.
    let _ = Process::new("valgrind")
        .args(["--tool=none".as_ref(), bin.as_os_str()])
        .args([flag, mode, "10"])
        .output();
    let count = |n: u64| -> (f64, f64) {
        let out = dir.join(format!("{mode}-{n}"));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).expect("a temporary directory");
        let status = Process::new("valgrind")
            .arg("--tool=callgrind")
            .arg("--separate-threads=yes")
            .arg(format!("--callgrind-out-file={}/cg.%p", out.display()))
            .arg(&bin)
            .args([flag, mode, &n.to_string()])
            .output()
            .expect("valgrind runs (apt install valgrind)");
        assert!(
            status.status.success(),
            "{flag} {mode} {n} failed under callgrind"
        );
        let (mut main, mut all) = (0.0, 0.0);
        for entry in std::fs::read_dir(&out).expect("callgrind's files") {
            let path = entry.expect("a file").path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let summary: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix("summary:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0);
            all += summary;
            if path.to_string_lossy().ends_with("-01") {
                main = summary;
            }
        }
        (main, all)
    };
    let (m1, a1) = count(n1);
    let (m2, a2) = count(n2);
    let _ = std::fs::remove_dir_all(&dir);
    // Each run adds a tenth of its operations as warm-up.
    let ops = 1.1 * n2.saturating_sub(n1) as f64;
    ((m2 - m1) / ops, (a2 - a1) / ops)
}

/// The figures the issue tracker and CI read, as one JSON object: for each,
/// `ns` per operation and `ratio` to its native counterpart (spans to the
/// native `opentelemetry_sdk` span, the `tracing` span to native `tracing`);
/// with `counted`, also `instructions` per operation on the thread that
/// makes the telemetry and `instructions_all_threads` (callgrind, see
/// [`instructions`]; several minutes).
fn json_summary(guests: &Guests, n: u64, counted: bool) -> String {
    let native_span = native_span(n);
    let native_tracing = native_tracing(n);
    let native_log = native_log(n);
    let native_counter = native_counter(n);
    // Each figure with the mode that measures it alone.
    let figures = [
        ("native_span", native_span, native_span, "--native", "span"),
        (
            "native_tracing_span",
            native_tracing,
            native_tracing,
            "--native",
            "tracing",
        ),
        (
            "guest_raw_span",
            guests.run("raw", n),
            native_span,
            "--guest",
            "raw",
        ),
        (
            "guest_sdk_span",
            guests.run("sdk", n),
            native_span,
            "--guest",
            "sdk",
        ),
        (
            "guest_tracing_span",
            guests.run("tracing", n),
            native_tracing,
            "--guest",
            "tracing",
        ),
        ("native_log", native_log, native_log, "--native", "log"),
        (
            "guest_sdk_log",
            guests.run("log", n),
            native_log,
            "--guest",
            "log",
        ),
        (
            "native_counter",
            native_counter,
            native_counter,
            "--native",
            "counter",
        ),
        (
            "guest_sdk_counter",
            guests.run("counter", n),
            native_counter,
            "--guest",
            "counter",
        ),
        (
            "floor",
            guests.run("floor", n),
            native_span,
            "--guest",
            "floor",
        ),
    ];
    let body: Vec<String> = figures
        .iter()
        .map(|(key, ns, base, flag, mode)| {
            let counts = if counted {
                let (making, all) = instructions(flag, mode, 2_000, 6_000);
                format!(", \"instructions\": {making:.0}, \"instructions_all_threads\": {all:.0}")
            } else {
                String::new()
            };
            format!(
                "\"{key}\": {{\"ns\": {ns:.1}, \"ratio\": {:.3}{counts}}}",
                ns / base
            )
        })
        .collect();
    format!("{{\"operations\": {n}, {}}}", body.join(", "))
}

fn row(what: &str, ns: f64, base: f64) {
    println!("{what:<58} {ns:>9.0} ns {:>6.2}x", ns / base);
}

// mimalloc's tuning, as in the `wasi-observe` binary.
#[path = "../../cli/src/alloc.rs"]
mod alloc;

fn main() {
    alloc::tune();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--guest") {
        // One guest figure alone, for profiling: `--guest MODE N`.
        let n = args[2].parse().expect("a count");
        println!("{} {:.0} ns", args[1], Guests::new().run(&args[1], n));
        return;
    }
    if args.first().map(String::as_str) == Some("--native") {
        // One native figure alone, for profiling:
        // `--native span|tracing|tracing-registry|log|log-kv|counter N`.
        let n = args[2].parse().expect("a count");
        let ns = match args[1].as_str() {
            "span" => native_span(n),
            "tracing" => native_tracing(n),
            "tracing-registry" => native_tracing_registry(n),
            "log" => native_log(n),
            "log-kv" => native_log_kv(n),
            "counter" => native_counter(n),
            other => panic!("unknown native mode {other}"),
        };
        println!("{} {ns:.0} ns", args[1]);
        return;
    }
    if args.first().map(String::as_str) == Some("--count") {
        // `--count --guest|--native MODE [N1 N2]` (what `ir.sh` runs).
        let n = |i: usize, default| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
        let (Some(flag), Some(mode)) = (args.get(1), args.get(2)) else {
            eprintln!("usage: wasi-observe-bench --count --guest|--native MODE [N1 N2]");
            std::process::exit(2);
        };
        let (making, all) = instructions(flag, mode, n(3, 10_000), n(4, 30_000));
        println!(
            "{:<18} {making:7.0} Ir/op main thread  {all:7.0} all threads",
            format!("{flag} {mode}")
        );
        return;
    }
    if args.first().map(String::as_str) == Some("--memory") {
        let n = args[2].parse().expect("a count");
        let ns = Guests::new().run_with(&args[1], n, None);
        println!("ns_per_op {ns}");
        println!("peak_rss_kb {}", vm_hwm_kb().unwrap_or(0));
        return;
    }
    if args.first().map(String::as_str) == Some("--json") {
        // One JSON object: `wasi-observe-bench --json [--instructions] [N]`.
        let counted = args.iter().any(|a| a == "--instructions");
        let n: u64 = args[1..]
            .iter()
            .find_map(|a| a.parse().ok())
            .unwrap_or(200_000);
        println!("{}", json_summary(&Guests::new(), n, counted));
        return;
    }
    let n: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let guests = Guests::new();
    println!("wasi-observe-bench: {n} operations per figure, ns per operation (ratio to native)");
    println!();
    let native = native_span(n);
    println!("span: start, 2 attributes, 1 event, end");
    row(
        "(a) native opentelemetry_sdk (batch, discarding exporter)",
        native,
        native,
    );
    row(
        "(b) guest, raw wasi:observe bindings (3 calls)",
        guests.run("raw", n),
        native,
    );
    row(
        "    guest, raw bindings, one call per operation (5 calls)",
        guests.run("raw5", n),
        native,
    );
    row(
        "(g) guest, OpenTelemetry API through the pipe (wasi_observe)",
        guests.run("sdk", n),
        native,
    );
    let native_tracing = native_tracing(n);
    row(
        "(c) guest, tracing layer (wasi_observe::init), pipe",
        guests.run("tracing", n),
        native,
    );
    row(
        "    guest, tracing layer on a registry, without code.* and target",
        guests.run("tracing-lean", n),
        native,
    );
    row(
        "    native tracing + tracing-opentelemetry + log bridge",
        native_tracing,
        native,
    );
    row(
        "(d) floor: guest calls an empty host import with a string",
        guests.run("floor", n),
        native,
    );
    println!();
    let native_log = native_log(n);
    println!("log record");
    row(
        "    native opentelemetry_sdk logger (batch)",
        native_log,
        native_log,
    );
    row(
        "(e) guest, wasi:logging",
        guests.run("log-raw", n),
        native_log,
    );
    row(
        "(e) guest, log crate through wasi_observe (pipe)",
        guests.run("log", n),
        native_log,
    );
    println!();
    let native_counter = native_counter(n);
    println!("counter add (1 attribute)");
    row(
        "    native opentelemetry_sdk counter",
        native_counter,
        native_counter,
    );
    row(
        "(e) guest, OpenTelemetry API through wasi_observe (pipe)",
        guests.run("counter", n),
        native_counter,
    );
    println!();
    println!("(f) memory: peak RSS of the whole host process");
    for (mode, what) in [
        ("spans", "1M spans started and ended"),
        ("open", "1M spans started and left open"),
    ] {
        let (rss, note) = peak_rss(mode, 1_000_000);
        match rss {
            Some(kb) => println!("    {what:<54} {:>7.1} MB  {note}", kb as f64 / 1024.0),
            None => println!("    {what:<54} (no figure) {note}"),
        }
    }
    let _ = Value::from(0i64);
}

//! Test support (cargo feature `testing`): a store data type for guests, a
//! pipeline with in-memory exporters, a guest runner that captures the
//! guest's output and prints it when a test fails, and assertions on parents
//! and correlation. Used by this crate's tests, the SDK's differential test,
//! the benchmarks and the CLI's tests.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::Value;
use opentelemetry::trace::SpanId;
use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLogRecord};
use opentelemetry_sdk::metrics::InMemoryMetricExporter;
use opentelemetry_sdk::metrics::data::{Metric, ResourceMetrics};
use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SpanData};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::export::batch::BatchConfig;
use crate::{Limits, Telemetry, TelemetryBuilder, WasiObserveCtx, WasiObserveView};

/// A store's data for a guest: WASI, `wasi:http` (outgoing requests get
/// CLIENT spans) and observation, as `wasi-observe run` sets a component up.
pub struct TestHost {
    /// The guest's WASI state.
    pub wasi: WasiCtx,
    /// Its `wasi:http` state.
    pub http: wasmtime_wasi_http::WasiHttpCtx,
    /// Its resources.
    pub table: ResourceTable,
    /// Its telemetry state.
    pub observe: WasiObserveCtx,
}

impl TestHost {
    /// Store data for one instance.
    pub fn new(wasi: WasiCtx, observe: WasiObserveCtx) -> TestHost {
        TestHost {
            wasi,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            table: ResourceTable::new(),
            observe,
        }
    }

    /// Store data for a command run with `args` (the first is the program
    /// name), its standard output going to `output`, its standard error
    /// inherited.
    pub fn with_output(output: &Output, observe: WasiObserveCtx, args: &[&str]) -> TestHost {
        let mut wasi = WasiCtx::builder();
        wasi.stdout(output.pipe()).inherit_stderr().args(args);
        TestHost::new(wasi.build(), observe)
    }
}

impl WasiView for TestHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for TestHost {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.observe,
        }
    }
}

impl WasiObserveView for TestHost {
    fn observe(&mut self) -> &mut WasiObserveCtx {
        &mut self.observe
    }
}

/// A linker for [`TestHost`] stores: WASI (sync), `wasi:observe` and the
/// recorder of instrumented components.
pub fn linker(engine: &Engine) -> Linker<TestHost> {
    let mut linker = Linker::<TestHost>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("adding WASI");
    crate::add_to_linker(&mut linker).expect("adding wasi:observe");
    crate::functions::add_recorder_to_linker(&mut linker).expect("adding the recorder");
    linker
}

/// One engine for a test process.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

/// Compiles each component once per test process (on [`engine`]).
pub fn component(path: &str) -> Component {
    static COMPONENTS: OnceLock<Mutex<HashMap<String, Component>>> = OnceLock::new();
    let cache = COMPONENTS.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap().get(path) {
        return c.clone();
    }
    let c =
        Component::from_file(engine(), path).unwrap_or_else(|e| panic!("compiling {path}: {e:?}"));
    cache.lock().unwrap().insert(path.to_string(), c.clone());
    c
}

/// A guest's captured standard output: printed when the test that holds it
/// fails, so a failure shows what the guest said.
pub struct Output {
    pipe: MemoryOutputPipe,
}

impl Output {
    /// A pipe of up to 1 MiB.
    pub fn new() -> Self {
        Output {
            pipe: MemoryOutputPipe::new(1 << 20),
        }
    }

    /// The pipe to give the guest.
    pub fn pipe(&self) -> MemoryOutputPipe {
        self.pipe.clone()
    }

    /// What the guest printed so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.pipe.contents()).into_owned()
    }
}

impl Default for Output {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- guest stdout ---\n{}--- end ---", self.text());
        }
    }
}

/// One finished guest command run: its result, what it printed and its
/// store (so the test decides when its open spans end).
pub struct Run {
    /// `wasi:cli/run`'s result, or the trap.
    pub result: wasmtime::Result<Result<(), ()>>,
    /// What the guest printed on its standard output.
    pub stdout: String,
    /// The store, still holding the guest's state.
    pub store: Store<TestHost>,
}

impl Run {
    /// Runs the command component at `path` with `args` (the first is the
    /// program name), feeding `observe`.
    pub fn command(path: &str, observe: WasiObserveCtx, args: &[&str]) -> Run {
        Run::component(&component(path), observe, args)
    }

    /// Runs a compiled command component (on [`engine`]).
    pub fn component(component: &Component, observe: WasiObserveCtx, args: &[&str]) -> Run {
        static LINKER: OnceLock<Linker<TestHost>> = OnceLock::new();
        let linker = LINKER.get_or_init(|| linker(engine()));
        let output = Output::new();
        let mut store = Store::new(engine(), TestHost::with_output(&output, observe, args));
        crate::observe_store(&mut store);
        let instance = linker
            .instantiate(&mut store, component)
            .unwrap_or_else(|e| panic!("instantiating the guest: {e:?}"));
        let command =
            Command::new(&mut store, &instance).unwrap_or_else(|e| panic!("not a command: {e:?}"));
        // As `wasi-observe run` does: the run, then what the guest holds.
        let result = command
            .wasi_cli_run()
            .call_run(&mut store)
            .and_then(|r| crate::flush_guest(&mut store, &instance).map(|()| r));
        Run {
            result,
            stdout: output.text(),
            store,
        }
    }

    /// Panics, with the guest's output, unless the guest returned success.
    pub fn succeeded(&self) {
        match &self.result {
            Ok(Ok(())) => {}
            other => panic!("the guest failed: {other:?}\nstdout: {}", self.stdout),
        }
    }

    /// Ends the spans the guest left open (see
    /// [`WasiObserveCtx::end_open_spans`]).
    pub fn end_open_spans(&mut self, reason: &str) -> usize {
        self.store.data_mut().observe.end_open_spans(reason)
    }
}

/// A pipeline with in-memory exporters and every setting given in code (so
/// the test process's environment does not matter): parent-based always-on
/// sampling, the default limits, batches exported every 50 ms.
pub struct InMemoryPipeline {
    /// The pipeline.
    pub telemetry: Telemetry,
    spans: InMemorySpanExporter,
    logs: InMemoryLogExporter,
    metrics: InMemoryMetricExporter,
}

impl InMemoryPipeline {
    /// With the defaults above.
    pub fn new() -> Self {
        Self::with(|b| b)
    }

    /// With the defaults above, adjusted by `f`.
    pub fn with(f: impl FnOnce(TelemetryBuilder) -> TelemetryBuilder) -> Self {
        let spans = InMemorySpanExporter::default();
        let logs = InMemoryLogExporter::default();
        let metrics = InMemoryMetricExporter::default();
        let batch = BatchConfig {
            scheduled_delay: Duration::from_millis(50),
            ..BatchConfig::default()
        };
        let builder = Telemetry::builder()
            .with_default_service_name("host-tests")
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_limits(Limits::default())
            .with_span_batch_config(batch.clone())
            .with_log_batch_config(batch)
            .with_span_exporter(spans.clone())
            .with_log_exporter(logs.clone())
            .with_metric_exporter(metrics.clone());
        let telemetry = f(builder).build().expect("building the pipeline");
        InMemoryPipeline {
            telemetry,
            spans,
            logs,
            metrics,
        }
    }

    /// A fresh ctx for one store.
    pub fn ctx(&self) -> WasiObserveCtx {
        WasiObserveCtx::new(&self.telemetry)
    }

    // The in-memory exporters forget everything when they are shut down, so
    // these flush instead.

    /// Every span exported so far.
    pub fn spans(&self) -> Vec<SpanData> {
        self.telemetry.force_flush().expect("flushing");
        self.spans.get_finished_spans().expect("reading spans")
    }

    /// Every log record exported so far.
    pub fn logs(&self) -> Vec<SdkLogRecord> {
        self.telemetry.force_flush().expect("flushing");
        let logs = self.logs.get_emitted_logs().expect("reading logs");
        logs.into_iter().map(|l| l.record).collect()
    }

    /// Every metric export so far.
    pub fn metrics(&self) -> Vec<ResourceMetrics> {
        self.telemetry.force_flush().expect("flushing");
        self.metrics
            .get_finished_metrics()
            .expect("reading metrics")
    }
}

impl Default for InMemoryPipeline {
    fn default() -> Self {
        Self::new()
    }
}

/// The one span called `name` (panics if there is none, or more than one).
pub fn span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let mut found = spans.iter().filter(|s| s.name == name);
    let s = found
        .next()
        .unwrap_or_else(|| panic!("no span {name:?} in {:?}", names(spans)));
    assert!(found.next().is_none(), "span {name:?} exported twice");
    s
}

/// The spans' names, sorted.
pub fn names(spans: &[SpanData]) -> Vec<String> {
    let mut v: Vec<String> = spans.iter().map(|s| s.name.to_string()).collect();
    v.sort();
    v
}

/// The value of attribute `key`, if present.
pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

/// The last exported state of metric `name`.
pub fn metric<'a>(exports: &'a [ResourceMetrics], name: &str) -> &'a Metric {
    exports
        .iter()
        .rev()
        .flat_map(|rm| rm.scope_metrics())
        .flat_map(|sm| sm.metrics())
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no metric {name:?} exported"))
}

/// Asserts that `child` is a child of `parent`: same trace, parent id.
pub fn assert_child_of(child: &SpanData, parent: &SpanData) {
    assert_eq!(
        child.span_context.trace_id(),
        parent.span_context.trace_id(),
        "{:?} is not in the trace of {:?}",
        child.name,
        parent.name
    );
    assert_eq!(
        child.parent_span_id,
        parent.span_context.span_id(),
        "the parent of {:?} is not {:?}",
        child.name,
        parent.name
    );
}

/// Asserts that `span` is a root span (no parent).
pub fn assert_root(span: &SpanData) {
    assert_eq!(
        span.parent_span_id,
        SpanId::INVALID,
        "{:?} has a parent",
        span.name
    );
}

/// Asserts that the log record carries `span`'s trace and span ids.
pub fn assert_correlated(record: &SdkLogRecord, span: &SpanData) {
    let tc = record
        .trace_context()
        .unwrap_or_else(|| panic!("the log record {:?} has no trace context", record.body()));
    assert_eq!(tc.trace_id, span.span_context.trace_id());
    assert_eq!(
        tc.span_id,
        span.span_context.span_id(),
        "the log record {:?} is not in span {:?}",
        record.body(),
        span.name
    );
}

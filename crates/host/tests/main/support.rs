//! What the subjects share: a host embedded as the crate documentation
//! shows, a pipeline with in-memory exporters, and helpers to look at what
//! it exported.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::logs::AnyValue;
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLogRecord};
use opentelemetry_sdk::metrics::InMemoryMetricExporter;
use opentelemetry_sdk::metrics::data::{Metric, ResourceMetrics};
use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SpanData};
use wasi_observe_host::export::batch::BatchConfig;
use wasi_observe_host::{Limits, Telemetry, TelemetryBuilder, WasiObserveCtx, WasiObserveView};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

// ---------------------------------------------------------------------------
// The embedding, as in the crate documentation.

pub(crate) struct Host {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) observe: WasiObserveCtx,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiObserveView for Host {
    fn observe(&mut self) -> &mut WasiObserveCtx {
        &mut self.observe
    }
}

pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

pub(crate) fn linker() -> &'static Linker<Host> {
    static LINKER: OnceLock<Linker<Host>> = OnceLock::new();
    LINKER.get_or_init(|| new_linker(engine()))
}

pub(crate) fn new_linker(engine: &Engine) -> Linker<Host> {
    let mut linker = Linker::<Host>::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
    wasi_observe_host::add_to_linker(&mut linker).unwrap();
    linker
}

/// Compiles each guest once for all tests.
pub(crate) fn component(path: &'static str) -> Component {
    static COMPONENTS: OnceLock<Mutex<HashMap<&'static str, Component>>> = OnceLock::new();
    let cache = COMPONENTS.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap().get(path) {
        return c.clone();
    }
    let c = Component::from_file(engine(), path).unwrap();
    cache.lock().unwrap().insert(path, c.clone());
    c
}

/// One finished guest run: its result, what it printed, and its store (so
/// the test decides when its open spans end).
pub(crate) struct Run {
    pub(crate) result: wasmtime::Result<Result<(), ()>>,
    pub(crate) stdout: String,
    pub(crate) store: Store<Host>,
}

impl Run {
    pub(crate) fn succeeded(&self) {
        match &self.result {
            Ok(Ok(())) => {}
            other => panic!("the guest failed: {other:?}\nstdout: {}", self.stdout),
        }
    }

    /// `name trace-id span-id` lines the guests print.
    pub(crate) fn printed_ids(&self) -> HashMap<String, (String, String)> {
        self.stdout
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let (name, trace, span) = (words.next()?, words.next()?, words.next()?);
                (words.next().is_none() && trace.len() == 32 && span.len() == 16)
                    .then(|| (name.to_string(), (trace.to_string(), span.to_string())))
            })
            .collect()
    }

    pub(crate) fn end_open_spans(&mut self, reason: &str) -> usize {
        self.store.data_mut().observe.end_open_spans(reason)
    }
}

/// A store's data: the guest's stdout goes to `stdout`.
pub(crate) fn host(observe: WasiObserveCtx, stdout: &MemoryOutputPipe, args: &[&str]) -> Host {
    let mut wasi = WasiCtx::builder();
    wasi.stdout(stdout.clone()).inherit_stderr().args(args);
    Host {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        observe,
    }
}

pub(crate) fn stdout_text(stdout: &MemoryOutputPipe) -> String {
    String::from_utf8(stdout.contents().to_vec()).unwrap()
}

pub(crate) fn run(program: &'static str, observe: WasiObserveCtx, args: &[&str]) -> Run {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let mut store = Store::new(engine(), host(observe, &stdout, args));
    let command = Command::instantiate(&mut store, &component(program), linker()).unwrap();
    let result = command.wasi_cli_run().call_run(&mut store);
    Run {
        result,
        stdout: stdout_text(&stdout),
        store,
    }
}

// ---------------------------------------------------------------------------
// The pipeline, with in-memory exporters.

pub(crate) struct Pipeline {
    pub(crate) telemetry: Telemetry,
    pub(crate) spans: InMemorySpanExporter,
    pub(crate) logs: InMemoryLogExporter,
    pub(crate) metrics: InMemoryMetricExporter,
}

impl Pipeline {
    pub(crate) fn new() -> Self {
        Self::with(|b| b)
    }

    /// A pipeline with every setting given explicitly (so the environment of
    /// the test process does not matter), adjusted by `f`.
    pub(crate) fn with(f: impl FnOnce(TelemetryBuilder) -> TelemetryBuilder) -> Self {
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
        let telemetry = f(builder).build().unwrap();
        Pipeline {
            telemetry,
            spans,
            logs,
            metrics,
        }
    }

    pub(crate) fn ctx(&self) -> WasiObserveCtx {
        WasiObserveCtx::new(&self.telemetry)
    }

    // The in-memory exporters forget everything when they are shut down, so
    // the tests flush instead.

    pub(crate) fn spans(&self) -> Vec<SpanData> {
        self.telemetry.force_flush().unwrap();
        self.spans.get_finished_spans().unwrap()
    }

    pub(crate) fn logs(&self) -> Vec<SdkLogRecord> {
        self.telemetry.force_flush().unwrap();
        let logs = self.logs.get_emitted_logs().unwrap();
        logs.into_iter().map(|l| l.record).collect()
    }

    pub(crate) fn metrics(&self) -> Vec<ResourceMetrics> {
        self.telemetry.force_flush().unwrap();
        self.metrics.get_finished_metrics().unwrap()
    }
}

// ---------------------------------------------------------------------------
// Helpers to look at exported data.

/// The one span called `name`.
pub(crate) fn span<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let mut found = spans.iter().filter(|s| s.name == name);
    let s = found
        .next()
        .unwrap_or_else(|| panic!("no span {name:?} in {:?}", names(spans)));
    assert!(found.next().is_none(), "span {name:?} exported twice");
    s
}

pub(crate) fn names(spans: &[SpanData]) -> Vec<String> {
    let mut v: Vec<String> = spans.iter().map(|s| s.name.to_string()).collect();
    v.sort();
    v
}

pub(crate) fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

pub(crate) fn at(seconds: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(seconds, nanos)
}

pub(crate) fn body(record: &SdkLogRecord) -> &str {
    match record.body() {
        Some(AnyValue::String(s)) => s.as_str(),
        other => panic!("log body is not a string: {other:?}"),
    }
}

/// The last exported state of metric `name`.
pub(crate) fn metric<'a>(exports: &'a [ResourceMetrics], name: &str) -> &'a Metric {
    exports
        .iter()
        .rev()
        .flat_map(|rm| rm.scope_metrics())
        .flat_map(|sm| sm.metrics())
        .find(|m| m.name() == name)
        .unwrap_or_else(|| panic!("no metric {name:?} exported"))
}

pub(crate) fn has_attr(
    attrs: impl Iterator<Item = impl std::borrow::Borrow<KeyValue>>,
    kv: &KeyValue,
) -> bool {
    attrs.into_iter().any(|a| a.borrow() == kv)
}

/// A sampled remote span context with fixed ids, as an embedder would take
/// from an incoming request.
pub(crate) fn remote_parent() -> SpanContext {
    SpanContext::new(
        TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
        SpanId::from_hex("b7ad6b7169203331").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    )
}

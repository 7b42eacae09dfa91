//! The one pipeline all stores feed: sampling, limits, batching and export.
//!
//! A [`Telemetry`] is built once per host and shared (it is cheap to clone)
//! by every store's [`WasiObserveCtx`](crate::WasiObserveCtx). Spans end up as
//! `SpanData` in a batch queue, log records in another, and measurements in
//! the OpenTelemetry SDK's meters, which aggregate them.

use std::env;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::KeyValue;
use opentelemetry::logs::LoggerProvider as _;
use opentelemetry::metrics::{Meter, MeterProvider as _, ObservableCounter};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    LogExporter, LogProcessor, SdkLogRecord, SdkLogger, SdkLoggerProvider,
};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{MeterProviderBuilder, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{RandomIdGenerator, Sampler, ShouldSample, SpanData, SpanExporter};
use tokio::runtime::Runtime;
use wasmtime::Result;
use wasmtime::error::Context as _;

use crate::export::batch::{BatchConfig, BatchQueue, Outcome};
use crate::export::{
    DynLogExporter, DynSpanExporter, Exporter, LogSink, OnRuntime, QueuedLog, Signal, SpanSink,
    console::ConsoleExporter, exporters_from_env, file::JsonLinesExporter, open_store,
};
use crate::limits::Limits;
use crate::metrics::Instruments;
use crate::stats::{Stats, StatsSnapshot};

/// How long shutdown waits for each signal's last export.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The host's telemetry pipeline. Clones share it.
#[derive(Clone)]
pub struct Telemetry {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) enabled: bool,
    pub(crate) resource: Resource,
    pub(crate) scope: InstrumentationScope,
    pub(crate) sampler: Box<dyn ShouldSample>,
    pub(crate) ids: RandomIdGenerator,
    pub(crate) limits: Limits,
    pub(crate) stats: Arc<Stats>,
    pub(crate) spans: Option<BatchQueue<SpanData>>,
    pub(crate) logger: Option<SdkLogger>,
    logger_provider: Option<SdkLoggerProvider>,
    pub(crate) meter: Option<Meter>,
    meter_provider: Option<SdkMeterProvider>,
    _self_metric: Option<ObservableCounter<u64>>,
    /// The HTTP duration histograms, made on first use.
    #[cfg(feature = "http")]
    pub(crate) http_metrics: crate::http::HttpMetricsSlot,
    pub(crate) instruments: Instruments,
    runtime: Mutex<Option<Runtime>>,
    shut_down: AtomicBool,
}

impl Telemetry {
    /// Starts building a pipeline.
    pub fn builder() -> TelemetryBuilder {
        TelemetryBuilder::new()
    }

    /// A pipeline that records nothing: every span is non-recording and every
    /// call a cheap no-op.
    pub fn disabled() -> Telemetry {
        TelemetryBuilder::new()
            .with_enabled(false)
            .build()
            .expect("a disabled pipeline has nothing that can fail")
    }

    /// Whether anything is recorded (false under `OTEL_SDK_DISABLED=true`).
    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    /// The resource every signal is exported with.
    pub fn resource(&self) -> &Resource {
        &self.inner.resource
    }

    /// The limits applied to guest input.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// What was recorded, exported, dropped and rejected so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Exports everything recorded so far, waiting for the exporters.
    pub fn force_flush(&self) -> Result<()> {
        let inner = &self.inner;
        let mut failed = Vec::new();
        if let Some(q) = &inner.spans
            && !q.flush(SHUTDOWN_TIMEOUT)
        {
            failed.push("traces");
        }
        if let Some(p) = &inner.logger_provider
            && p.force_flush().is_err()
        {
            failed.push("logs");
        }
        if let Some(p) = &inner.meter_provider
            && p.force_flush().is_err()
        {
            failed.push("metrics");
        }
        if failed.is_empty() {
            Ok(())
        } else {
            wasmtime::bail!("flushing {} did not complete", failed.join(", "))
        }
    }

    /// Exports everything recorded and stops the exporters. Idempotent; later
    /// telemetry is dropped and counted.
    pub fn shutdown(&self) -> Result<()> {
        self.inner.shutdown()
    }
}

impl Inner {
    fn shutdown(&self) -> Result<()> {
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let mut failed = Vec::new();
        if let Some(q) = &self.spans
            && !q.shutdown(SHUTDOWN_TIMEOUT)
        {
            failed.push("traces");
        }
        if let Some(p) = &self.logger_provider
            && p.shutdown().is_err()
        {
            failed.push("logs");
        }
        if let Some(p) = &self.meter_provider
            && p.shutdown().is_err()
        {
            failed.push("metrics");
        }
        if let Some(rt) = self
            .runtime
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            rt.shutdown_background();
        }
        if failed.is_empty() {
            Ok(())
        } else {
            wasmtime::bail!("shutting down {} did not complete", failed.join(", "))
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("enabled", &self.inner.enabled)
            .field("limits", &self.inner.limits)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Telemetry`]. Configuration given in code wins over the
/// environment; [`from_env`](Self::from_env) reads the standard variables.
pub struct TelemetryBuilder {
    enabled: bool,
    resource: Option<Resource>,
    service_name: Option<String>,
    sampler: Option<Box<dyn ShouldSample>>,
    limits: Option<Limits>,
    span_batch: Option<BatchConfig>,
    log_batch: Option<BatchConfig>,
    span_exporters: Vec<Box<dyn DynSpanExporter>>,
    log_exporters: Vec<Box<dyn DynLogExporter>>,
    /// How many of the exporters above are embedded stores.
    span_stores: usize,
    log_stores: usize,
    meter_builder: MeterProviderBuilder,
    metric_readers: usize,
    runtime: Runtime,
}

impl TelemetryBuilder {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wasi-observe-export")
            .enable_all()
            .build()
            .expect("starting the export runtime");
        TelemetryBuilder {
            enabled: true,
            resource: None,
            service_name: None,
            sampler: None,
            limits: None,
            span_batch: None,
            log_batch: None,
            span_exporters: Vec::new(),
            log_exporters: Vec::new(),
            span_stores: 0,
            log_stores: 0,
            meter_builder: SdkMeterProvider::builder(),
            metric_readers: 0,
            runtime,
        }
    }

    /// Reads the OpenTelemetry environment: `OTEL_SDK_DISABLED`,
    /// `OTEL_TRACES_EXPORTER`/`OTEL_LOGS_EXPORTER`/`OTEL_METRICS_EXPORTER`
    /// (each defaulting to OTLP when an OTLP endpoint is set, else to
    /// `fallback`), and, through the exporters and SDK, the
    /// `OTEL_EXPORTER_OTLP_*`, sampler, limit and batch variables.
    pub fn from_env(mut self, fallback: &[Exporter]) -> Result<Self> {
        if env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            self.enabled = false;
            return Ok(self);
        }
        for signal in [Signal::Traces, Signal::Logs, Signal::Metrics] {
            for exporter in exporters_from_env(signal, fallback).map_err(wasmtime::Error::msg)? {
                self = self.with_exporter(signal, &exporter)?;
            }
        }
        Ok(self)
    }

    /// Adds one of the built-in exporters for `signal`.
    pub fn with_exporter(self, signal: Signal, exporter: &Exporter) -> Result<Self> {
        // The OTLP clients need the runtime when they are built.
        let _guard = self.runtime.enter();
        let what = || format!("building the {exporter} exporter for {signal:?}");
        Ok(match (signal, exporter) {
            (Signal::Traces, Exporter::Otlp) => self.with_span_exporter(
                opentelemetry_otlp::SpanExporter::builder()
                    .build()
                    .with_context(what)?,
            ),
            (Signal::Logs, Exporter::Otlp) => self.with_log_exporter(
                opentelemetry_otlp::LogExporter::builder()
                    .build()
                    .with_context(what)?,
            ),
            (Signal::Metrics, Exporter::Otlp) => self.with_metric_exporter(
                opentelemetry_otlp::MetricExporter::builder()
                    .build()
                    .with_context(what)?,
            ),
            (Signal::Traces, Exporter::Console) => {
                self.with_span_exporter(ConsoleExporter::stderr())
            }
            (Signal::Logs, Exporter::Console) => self.with_log_exporter(ConsoleExporter::stderr()),
            (Signal::Metrics, Exporter::Console) => {
                self.with_metric_exporter(ConsoleExporter::stderr())
            }
            (Signal::Traces, Exporter::JsonLines(p)) => {
                self.with_span_exporter(JsonLinesExporter::create(p).with_context(what)?)
            }
            (Signal::Logs, Exporter::JsonLines(p)) => {
                self.with_log_exporter(JsonLinesExporter::create(p).with_context(what)?)
            }
            (Signal::Metrics, Exporter::JsonLines(p)) => {
                self.with_metric_exporter(JsonLinesExporter::create(p).with_context(what)?)
            }
            (signal, Exporter::Store(path)) => {
                let exporter = open_store(path.as_deref())?.exporter();
                let mut builder = self;
                match signal {
                    Signal::Traces => {
                        builder.span_stores += 1;
                        builder.with_span_exporter(exporter)
                    }
                    Signal::Logs => {
                        builder.log_stores += 1;
                        builder.with_log_exporter(exporter)
                    }
                    Signal::Metrics => builder.with_metric_exporter(exporter),
                }
            }
        })
    }

    /// Turns the whole pipeline off (or on).
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The resource to export with, replacing the one read from
    /// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`.
    pub fn with_resource(mut self, resource: Resource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// `service.name` to use when neither `OTEL_SERVICE_NAME` nor
    /// `OTEL_RESOURCE_ATTRIBUTES` names one (the CLI passes the component's
    /// file stem).
    pub fn with_default_service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// The sampler, replacing `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`.
    pub fn with_sampler(mut self, sampler: impl ShouldSample + 'static) -> Self {
        self.sampler = Some(Box::new(sampler));
        self
    }

    /// The limits, replacing [`Limits::from_env`].
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// The span queue's settings, replacing `OTEL_BSP_*`.
    pub fn with_span_batch_config(mut self, config: BatchConfig) -> Self {
        self.span_batch = Some(config);
        self
    }

    /// The log queue's settings, replacing `OTEL_BLRP_*`.
    pub fn with_log_batch_config(mut self, config: BatchConfig) -> Self {
        self.log_batch = Some(config);
        self
    }

    /// Adds a span exporter (any OpenTelemetry `SpanExporter`).
    pub fn with_span_exporter(mut self, exporter: impl SpanExporter + 'static) -> Self {
        self.span_exporters.push(Box::new(exporter));
        self
    }

    /// Adds a log exporter (any OpenTelemetry `LogExporter`).
    pub fn with_log_exporter(mut self, exporter: impl LogExporter + 'static) -> Self {
        self.log_exporters.push(Box::new(exporter));
        self
    }

    /// Adds a metric exporter, read periodically (`OTEL_METRIC_EXPORT_INTERVAL`)
    /// and at shutdown.
    pub fn with_metric_exporter(mut self, exporter: impl PushMetricExporter) -> Self {
        let exporter = OnRuntime {
            rt: self.runtime.handle().clone(),
            inner: exporter,
        };
        self.meter_builder = self
            .meter_builder
            .with_reader(PeriodicReader::builder(exporter).build());
        self.metric_readers += 1;
        self
    }

    /// Builds the pipeline and starts its export threads.
    pub fn build(self) -> Result<Telemetry> {
        let resource = self.resource.unwrap_or_else(|| {
            let mut b = Resource::builder();
            if let Some(name) = self.service_name.filter(|_| !service_name_in_env()) {
                b = b.with_service_name(name);
            }
            b.build()
        });
        let scope = InstrumentationScope::builder("wasi-observe")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let stats = Arc::new(Stats::default());
        let limits = self.limits.unwrap_or_else(Limits::from_env);
        let sampler = self.sampler.unwrap_or_else(sampler_from_env);
        let rt = self.runtime.handle().clone();
        let enabled = self.enabled;

        let spans = (enabled && !self.span_exporters.is_empty()).then(|| {
            let mut exporters = self.span_exporters;
            for e in &mut exporters {
                e.set_resource(&resource);
            }
            BatchQueue::new(
                "spans",
                &self.span_batch.unwrap_or_else(|| {
                    if self.span_stores == exporters.len() {
                        BatchConfig::for_store_from_env(false)
                    } else {
                        BatchConfig::spans_from_env()
                    }
                }),
                SpanSink {
                    rt: rt.clone(),
                    exporters,
                },
                Outcome {
                    stats: stats.clone(),
                    exported: |s| &s.spans_exported,
                    failed: |s| &s.spans_export_failed,
                    dropped: |s| &s.spans_dropped_queue_full,
                    dropped_retry: |s| &s.spans_dropped_retry_buffer,
                    retries: |s| &s.spans_export_retries,
                },
            )
        });

        let logger_provider = (enabled && !self.log_exporters.is_empty()).then(|| {
            let mut exporters = self.log_exporters;
            for e in &mut exporters {
                e.set_resource(&resource);
            }
            let queue = BatchQueue::new(
                "logs",
                &self.log_batch.unwrap_or_else(|| {
                    if self.log_stores == exporters.len() {
                        BatchConfig::for_store_from_env(true)
                    } else {
                        BatchConfig::logs_from_env()
                    }
                }),
                LogSink {
                    rt: rt.clone(),
                    exporters,
                },
                Outcome {
                    stats: stats.clone(),
                    exported: |s| &s.logs_exported,
                    failed: |s| &s.logs_export_failed,
                    dropped: |s| &s.logs_dropped_queue_full,
                    dropped_retry: |s| &s.logs_dropped_retry_buffer,
                    retries: |s| &s.logs_export_retries,
                },
            );
            SdkLoggerProvider::builder()
                .with_resource(resource.clone())
                .with_log_processor(QueueLogProcessor { queue })
                .build()
        });
        let logger = logger_provider
            .as_ref()
            .map(|p| p.logger_with_scope(scope.clone()));

        let meter_provider = (enabled && self.metric_readers > 0)
            .then(|| self.meter_builder.with_resource(resource.clone()).build());
        let meter = meter_provider
            .as_ref()
            .map(|p| p.meter_with_scope(scope.clone()));
        let self_metric = meter_provider.as_ref().map(|p| self_metric(p, &stats));

        Ok(Telemetry {
            inner: Arc::new(Inner {
                enabled,
                resource,
                scope,
                sampler,
                ids: RandomIdGenerator::default(),
                instruments: Instruments::new(limits.instruments),
                limits,
                stats,
                spans,
                logger,
                logger_provider,
                meter,
                meter_provider,
                _self_metric: self_metric,
                #[cfg(feature = "http")]
                http_metrics: Default::default(),
                runtime: Mutex::new(Some(self.runtime)),
                shut_down: AtomicBool::new(false),
            }),
        })
    }
}

/// The host's own metric, `wasi_observe.dropped{signal, reason}`: what the
/// pipeline lost, exported with the guests' metrics under the scope
/// `wasi-observe.host` (apart from the guests' scope, so no guest instrument
/// can collide with it).
fn self_metric(provider: &SdkMeterProvider, stats: &Arc<Stats>) -> ObservableCounter<u64> {
    let scope = InstrumentationScope::builder("wasi-observe.host")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let stats = stats.clone();
    provider
        .meter_with_scope(scope)
        .u64_observable_counter("wasi_observe.dropped")
        .with_description("Spans, log records and measurements the host dropped")
        .with_unit("{item}")
        .with_callback(move |observer| {
            for (signal, reason, n) in stats.snapshot().drops() {
                if n > 0 {
                    observer.observe(
                        n,
                        &[
                            KeyValue::new("signal", signal),
                            KeyValue::new("reason", reason),
                        ],
                    );
                }
            }
        })
        .build()
}

fn service_name_in_env() -> bool {
    env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| {
            v.split(',').any(|kv| {
                kv.split_once('=')
                    .is_some_and(|(k, _)| k.trim() == "service.name")
            })
        })
}

/// The sampler `OTEL_TRACES_SAMPLER` names, as the SDK reads it.
fn sampler_from_env() -> Box<dyn ShouldSample> {
    if env::var("OTEL_TRACES_SAMPLER").is_err() {
        return Box::new(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    }
    #[allow(deprecated)]
    opentelemetry_sdk::trace::Config::default().sampler
}

/// Hands log records to the log batch queue (with backpressure), instead of
/// the SDK's batch processor, which drops at once when its queue is full.
#[derive(Debug)]
struct QueueLogProcessor {
    queue: BatchQueue<QueuedLog>,
}

impl LogProcessor for QueueLogProcessor {
    fn emit(&self, record: &mut SdkLogRecord, scope: &InstrumentationScope) {
        self.queue.push(Box::new((record.clone(), scope.clone())));
    }

    fn force_flush(&self) -> OTelSdkResult {
        if self.queue.flush(SHUTDOWN_TIMEOUT) {
            Ok(())
        } else {
            Err(opentelemetry_sdk::error::OTelSdkError::Timeout(
                SHUTDOWN_TIMEOUT,
            ))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        if self.queue.shutdown(timeout) {
            Ok(())
        } else {
            Err(opentelemetry_sdk::error::OTelSdkError::Timeout(timeout))
        }
    }
}

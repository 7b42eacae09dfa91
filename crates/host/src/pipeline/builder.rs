//! Building a pipeline: exporters per signal (from the OpenTelemetry
//! environment or given in code), resource, sampler, limits and queues.

use std::env;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::logs::LoggerProvider as _;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{LogExporter, SdkLoggerProvider};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{MeterProviderBuilder, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{RandomIdGenerator, ShouldSample, SpanExporter};
use tokio::runtime::Runtime;
use wasmtime::Result;
use wasmtime::error::Context as _;

use super::budget::SharedBudget;
use super::instruments::Instruments;
use super::logs::QueueLogProcessor;
use super::sampler::sampler_from_env;
use super::stats::Stats;
use super::{Inner, Limits, SHUTDOWN_TIMEOUT, Telemetry, self_metric};
use crate::export::aggregated::{
    AggregatedMetricExporter, AggregatedSink, ConsoleAggregated, OtlpAggregated,
};
use crate::export::batch::{BatchConfig, BatchQueue, Outcome};
use crate::export::{
    Borrowing, DynLogExporter, DynSpanExporter, Exporter, LogSink, OnRuntime, Owning, Signal,
    SpanBatchExporter, SpanSink, console::ConsoleExporter, exporters_from_env,
    jsonl::JsonLinesExporter,
};

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
    /// wasi:otel: where guest-aggregated metrics go.
    aggregated_exporters: Vec<Box<dyn AggregatedMetricExporter>>,
    runtime: Runtime,
}

impl TelemetryBuilder {
    pub(super) fn new() -> Self {
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
            aggregated_exporters: Vec::new(),
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
            (Signal::Metrics, Exporter::Otlp) => {
                let guests = OtlpAggregated::from_env(self.runtime.handle().clone());
                self.with_metric_exporter(
                    opentelemetry_otlp::MetricExporter::builder()
                        .build()
                        .with_context(what)?,
                )
                .with_aggregated_metric_exporter(guests)
            }
            (Signal::Traces, Exporter::Console) => {
                self.with_span_batch_exporter(ConsoleExporter::stderr())
            }
            (Signal::Logs, Exporter::Console) => self.with_log_exporter(ConsoleExporter::stderr()),
            (Signal::Metrics, Exporter::Console) => self
                .with_metric_exporter(ConsoleExporter::stderr())
                .with_aggregated_metric_exporter(ConsoleAggregated),
            (Signal::Traces, Exporter::JsonLines(p)) => {
                self.with_span_exporter(JsonLinesExporter::create(p).with_context(what)?)
            }
            (Signal::Logs, Exporter::JsonLines(p)) => {
                self.with_log_exporter(JsonLinesExporter::create(p).with_context(what)?)
            }
            (Signal::Metrics, Exporter::JsonLines(p)) => {
                let exporter = JsonLinesExporter::create(p).with_context(what)?;
                self.with_aggregated_metric_exporter(exporter.clone())
                    .with_metric_exporter(exporter)
            }
            #[cfg(feature = "store")]
            (signal, Exporter::Store(path)) => {
                self.with_store(signal, crate::export::store::open_store(path.as_deref())?)
            }
            #[cfg(not(feature = "store"))]
            (_, Exporter::Store(_)) => wasmtime::bail!(
                "the embedded telemetry store is not built in (cargo feature `store`)"
            ),
        })
    }

    /// Adds the embedded telemetry store as an exporter of `signal`. A queue
    /// whose only exporters are stores gets the store's batch sizes (16 384
    /// items queued, batches of 8 192: a store writes a batch in one
    /// transaction, so larger batches cost much less per item); adding a
    /// store with [`with_span_exporter`](Self::with_span_exporter) would
    /// not. One store may take several signals.
    #[cfg(feature = "store")]
    pub fn with_store(mut self, signal: Signal, store: wasi_observe_store::Store) -> Self {
        let exporter = store.exporter();
        match signal {
            Signal::Traces => {
                self.span_stores += 1;
                self.with_span_batch_exporter(exporter)
            }
            Signal::Logs => {
                self.log_stores += 1;
                self.with_log_exporter(exporter)
            }
            Signal::Metrics => self
                .with_aggregated_metric_exporter(exporter.clone())
                .with_metric_exporter(exporter),
        }
    }

    /// The span queue's settings this builder would use: those given in
    /// code, else the store's defaults when every span exporter is a store,
    /// else `OTEL_BSP_*`.
    pub fn span_batch_config(&self) -> BatchConfig {
        self.span_batch.clone().unwrap_or_else(|| {
            if self.span_stores > 0 && self.span_stores == self.span_exporters.len() {
                BatchConfig::for_store_from_env(false)
            } else {
                BatchConfig::spans_from_env()
            }
        })
    }

    /// The log queue's settings this builder would use (as
    /// [`span_batch_config`](Self::span_batch_config), with `OTEL_BLRP_*`).
    pub fn log_batch_config(&self) -> BatchConfig {
        self.log_batch.clone().unwrap_or_else(|| {
            if self.log_stores > 0 && self.log_stores == self.log_exporters.len() {
                BatchConfig::for_store_from_env(true)
            } else {
                BatchConfig::logs_from_env()
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

    /// Adds a span exporter (any OpenTelemetry `SpanExporter`). It is handed
    /// a copy of each batch; see [`SpanBatchExporter`] for one that is not.
    pub fn with_span_exporter(mut self, exporter: impl SpanExporter + 'static) -> Self {
        self.span_exporters.push(Box::new(Owning(exporter)));
        self
    }

    /// Adds a span exporter that reads each batch in place.
    pub fn with_span_batch_exporter(mut self, exporter: impl SpanBatchExporter) -> Self {
        self.span_exporters.push(Box::new(Borrowing(exporter)));
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
        let exporter = OnRuntime::new(self.runtime.handle().clone(), exporter);
        self.meter_builder = self
            .meter_builder
            .with_reader(PeriodicReader::builder(exporter).build());
        self.metric_readers += 1;
        self
    }

    /// Adds an exporter of the metrics `wasi:otel` guests aggregate
    /// themselves, passed on as OTLP data (the SDK's metric exporters cannot
    /// take them: see [`crate::export::aggregated`]). The JSON lines and
    /// console exporters add theirs.
    pub fn with_aggregated_metric_exporter(
        mut self,
        exporter: impl AggregatedMetricExporter,
    ) -> Self {
        self.aggregated_exporters.push(Box::new(exporter));
        self
    }

    /// Builds the pipeline and starts its export threads.
    pub fn build(self) -> Result<Telemetry> {
        let span_batch = self.span_batch_config();
        let log_batch = self.log_batch_config();
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
        let guest_sampler = super::sampler::guest_sampler(sampler.as_ref());
        let rt = self.runtime.handle().clone();
        let enabled = self.enabled;
        let export_budget = Arc::new(SharedBudget::new(limits.export_bytes));

        // Spans go first only to a store-only span queue: waiting for other
        // exporters (a slow collector) would hold the logs up.
        let spans_first = self.log_stores > 0
            && self.span_stores > 0
            && self.span_stores == self.span_exporters.len();
        let spans = (enabled && !self.span_exporters.is_empty()).then(|| {
            let mut exporters = self.span_exporters;
            for e in &mut exporters {
                e.set_resource(&resource);
            }
            BatchQueue::new(
                "spans",
                &span_batch,
                SpanSink {
                    rt: rt.clone(),
                    exporters,
                },
                Outcome {
                    stats: stats.clone(),
                    budget: export_budget.clone(),
                    exported: |s| &s.spans_exported,
                    failed: |s| &s.spans_export_failed,
                    dropped: |s| &s.spans_dropped_queue_full,
                    dropped_budget: |s| &s.spans_dropped_export_budget,
                    dropped_retry: |s| &s.spans_dropped_retry_buffer,
                    retries: |s| &s.spans_export_retries,
                },
            )
        });

        let mut log_queue = None;
        let logger_provider = (enabled && !self.log_exporters.is_empty()).then(|| {
            let mut exporters = self.log_exporters;
            for e in &mut exporters {
                e.set_resource(&resource);
            }
            let queue = BatchQueue::new(
                "logs",
                &log_batch,
                LogSink {
                    rt: rt.clone(),
                    exporters,
                    spans_first: spans
                        .as_ref()
                        .filter(|_| spans_first)
                        .map(BatchQueue::drainer),
                },
                Outcome {
                    stats: stats.clone(),
                    budget: export_budget.clone(),
                    exported: |s| &s.logs_exported,
                    failed: |s| &s.logs_export_failed,
                    dropped: |s| &s.logs_dropped_queue_full,
                    dropped_budget: |s| &s.logs_dropped_export_budget,
                    dropped_retry: |s| &s.logs_dropped_retry_buffer,
                    retries: |s| &s.logs_export_retries,
                },
            );
            let queue = Arc::new(queue);
            log_queue = Some(queue.clone());
            SdkLoggerProvider::builder()
                .with_resource(resource.clone())
                .with_log_processor(QueueLogProcessor {
                    queue,
                    flush_timeout: SHUTDOWN_TIMEOUT,
                })
                .build()
        });
        let logger = logger_provider
            .as_ref()
            .map(|p| p.logger_with_scope(scope.clone()));

        // wasi:otel: a queue that never blocks the guest (`max_block` 0).
        let guest_metrics = (enabled && !self.aggregated_exporters.is_empty()).then(|| {
            BatchQueue::new(
                "wasi-otel-metrics",
                &BatchConfig {
                    max_queue_size: 256,
                    max_export_batch_size: 16,
                    scheduled_delay: Duration::from_secs(1),
                    max_block: Duration::ZERO,
                    retry_buffer: 256,
                    ..BatchConfig::default()
                },
                AggregatedSink {
                    exporters: self.aggregated_exporters,
                },
                Outcome {
                    stats: stats.clone(),
                    budget: export_budget.clone(),
                    exported: |s| &s.otel_metric_exports_delivered,
                    failed: |s| &s.otel_metric_exports_dropped,
                    dropped: |s| &s.otel_metric_exports_dropped,
                    dropped_budget: |s| &s.otel_metric_exports_dropped,
                    dropped_retry: |s| &s.otel_metric_exports_dropped,
                    retries: |s| &s.otel_metric_export_retries,
                },
            )
        });

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
                guest_sampler,
                ids: RandomIdGenerator::default(),
                instruments: Instruments::new(&limits),
                limits,
                stats,
                spans,
                guest_metrics,
                logger: logger.zip(log_queue),
                logger_provider,
                meter,
                meter_provider,
                _self_metric: self_metric,
                runtime: Mutex::new(Some(self.runtime)),
                shut_down: AtomicBool::new(false),
                pipe: Arc::new(super::guest::DecodeThread::new()),
            }),
        })
    }
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

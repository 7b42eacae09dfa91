//! The one pipeline all stores feed: sampling, limits, batching and export.
//!
//! A [`Telemetry`] is built once per host and shared (it is cheap to clone)
//! by every store's [`WasiObserveCtx`](crate::WasiObserveCtx) and by the
//! host's own spans. It owns its state; producers (the interfaces, host-made
//! spans, function frames) reach it through a small door:
//!
//! | what | where |
//! |---|---|
//! | begin and end a span | [`span`]: `begin_span`, `frame_context`, `end_span` |
//! | emit a log record | [`logs`]: `emit_log` |
//! | record a measurement | [`instruments`]: `instrument`, `record`, `host_histogram` |
//! | hand over what a guest's own SDK finished (`wasi:otel`) | [`finished`]: `export_finished_span`, `logger_for`, `export_guest_metrics` |
//! | decode batches from the pipe (`wasi-observe:pipe`), off the guest's thread | [`guest`]: `PipeDecoder` |
//! | bound guest values, count what is cut | [`limits`]: `checker`, and [`stats`] |
//! | bound what is held in bytes | [`budget`]: per store, and for export |
//!
//! Spans end up as `SpanData` in a batch queue, log records in another
//! (both drained by export threads, see [`crate::export::batch`]), and
//! measurements in the OpenTelemetry SDK's meters, which aggregate them.

pub(crate) mod budget;
mod builder;
pub(crate) mod finished;
pub(crate) mod guest;
pub(crate) mod instruments;
pub(crate) mod intern;
pub(crate) mod limits;
pub(crate) mod logs;
pub(crate) mod sampler;
pub(crate) mod span;
pub(crate) mod stats;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry::metrics::{Meter, MeterProvider as _, ObservableCounter};
use opentelemetry::{KeyValue, trace::SpanKind};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{SdkLogger, SdkLoggerProvider};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{RandomIdGenerator, ShouldSample, SpanData};
use tokio::runtime::Runtime;
use wasmtime::Result;

pub use builder::TelemetryBuilder;
pub use limits::Limits;
pub use span::HostSpan;
pub use stats::StatsSnapshot;

use crate::export::aggregated::GuestMetrics;
use crate::export::batch::BatchQueue;
use instruments::Instruments;
use limits::Checker;
use stats::Stats;

/// How long shutdown waits for each signal's last export.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The host's telemetry pipeline. Clones share it.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    enabled: bool,
    resource: Resource,
    scope: InstrumentationScope,
    sampler: Box<dyn ShouldSample>,
    /// The sampler in the form pipe guests run it; `None` for a sampler of
    /// the embedder's own, which guests cannot run.
    guest_sampler: Option<sampler::GuestSampler>,
    ids: RandomIdGenerator,
    limits: Limits,
    stats: Arc<Stats>,
    spans: Option<BatchQueue<SpanData>>,
    /// Metrics `wasi:otel` guests aggregated, for the aggregated-metric
    /// exporters.
    guest_metrics: Option<BatchQueue<GuestMetrics>>,
    /// The host's logger, and the queue its one processor feeds, which
    /// [`Telemetry::emit_log`] feeds directly.
    logger: Option<(SdkLogger, Arc<BatchQueue<crate::export::QueuedLog>>)>,
    logger_provider: Option<SdkLoggerProvider>,
    meter: Option<Meter>,
    meter_provider: Option<SdkMeterProvider>,
    _self_metric: Option<ObservableCounter<u64>>,
    instruments: Instruments,
    runtime: Mutex<Option<Runtime>>,
    shut_down: AtomicBool,
    /// Decodes pipe batches off the guests' threads.
    pipe: Arc<guest::DecodeThread>,
}

/// Which signals a pipeline exports (a signal with no exporter is recorded
/// nowhere, so producers may skip it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Signals {
    pub traces: bool,
    pub logs: bool,
    pub metrics: bool,
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

    /// Starts a span the host makes itself (a request served, an outgoing
    /// call) under `parent` (a new trace without one), sampled by the
    /// pipeline's sampler like a guest span.
    pub fn start_span(
        &self,
        name: impl Into<String>,
        kind: SpanKind,
        parent: Option<&opentelemetry::trace::SpanContext>,
        attributes: Vec<KeyValue>,
    ) -> HostSpan {
        HostSpan::start(self, name.into(), kind, parent, attributes)
    }

    /// Exports everything recorded so far, waiting for the exporters.
    pub fn force_flush(&self) -> Result<()> {
        let inner = &self.inner;
        let mut failed = Vec::new();
        if !inner.pipe.flush(SHUTDOWN_TIMEOUT) {
            failed.push("pipe batches");
        }
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
        if let Some(q) = &inner.guest_metrics
            && !q.flush(SHUTDOWN_TIMEOUT)
        {
            failed.push("wasi:otel metrics");
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

    /// Tells a [`shutdown`](Self::shutdown) under way (or to come) not to
    /// retry failed exports any longer: what waits for a retry is counted as
    /// failed and reported, and shutdown returns once the exports under way
    /// do. `wasi-observe` calls it on Ctrl-C at exit.
    pub fn give_up_exit_retries(&self) {
        let inner = &self.inner;
        if let Some(q) = &inner.spans {
            q.give_up_retries();
        }
        if let Some((_, q)) = &inner.logger {
            q.give_up_retries();
        }
        if let Some(q) = &inner.guest_metrics {
            q.give_up_retries();
        }
    }

    /// Bounds values on their way in (see [`limits`]).
    pub(crate) fn checker(&self) -> Checker<'_> {
        Checker {
            limits: &self.inner.limits,
            stats: &self.inner.stats,
        }
    }

    /// The pipe's decode thread.
    pub(crate) fn decode_thread(&self) -> &Arc<guest::DecodeThread> {
        &self.inner.pipe
    }

    /// The sampler pipe guests run (see [`sampler::guest_sampler`]).
    pub(crate) fn guest_sampler(&self) -> Option<sampler::GuestSampler> {
        self.inner.guest_sampler
    }

    /// A random 128-bit seed (a pipe guest's id generator).
    pub(crate) fn random_seed(&self) -> (u64, u64) {
        use opentelemetry_sdk::trace::IdGenerator as _;
        let id = u128::from_be_bytes(self.inner.ids.new_trace_id().to_bytes());
        ((id >> 64) as u64, id as u64)
    }

    /// The scope guest spans are exported with.
    pub(crate) fn guest_scope(&self) -> &InstrumentationScope {
        &self.inner.scope
    }

    /// The live counters, for producers that count what they refuse.
    pub(crate) fn counters(&self) -> &Stats {
        &self.inner.stats
    }

    /// The signals that go to at least one exporter.
    pub(crate) fn signals(&self) -> Signals {
        let p = &self.inner;
        Signals {
            traces: p.enabled && p.spans.is_some(),
            logs: p.enabled && p.logger.is_some(),
            metrics: p.enabled && p.meter.is_some(),
        }
    }
}

impl Inner {
    fn shutdown(&self) -> Result<()> {
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let mut failed = Vec::new();
        // Batches still being decoded feed the queues shut down below.
        if !self.pipe.flush(SHUTDOWN_TIMEOUT) {
            failed.push("pipe batches");
        }
        // The span and log queues export and retry their last batches at
        // once (spans asked first, so that the store gets a trace's spans
        // before its logs): with a collector down, exit waits for one retry
        // window (`WASI_OBSERVE_EXIT_RETRY_MS`), not one per signal. The
        // queue of `wasi:otel` guests' metrics stops after the meter
        // provider, whose last collection feeds it.
        if let Some(q) = &self.spans {
            q.begin_shutdown();
        }
        if let Some((_, q)) = &self.logger {
            q.begin_shutdown();
        }
        if let Some(q) = &self.spans
            && !q.shutdown(SHUTDOWN_TIMEOUT)
        {
            failed.push("traces");
        }
        // The provider's own `shutdown` waits 5 s, less than a queue's exit
        // retries and last export may take.
        if let Some(p) = &self.logger_provider
            && p.shutdown_with_timeout(SHUTDOWN_TIMEOUT).is_err()
        {
            failed.push("logs");
        }
        let mut note = "";
        if let Some(p) = &self.meter_provider
            && p.shutdown().is_err()
        {
            failed.push("metrics");
            note = " (the metrics' last export failed: what changed since the last \
                    one that succeeded is not delivered)";
        }
        if let Some(q) = &self.guest_metrics
            && !q.shutdown(SHUTDOWN_TIMEOUT)
        {
            failed.push("wasi:otel metrics");
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
            wasmtime::bail!("shutting down {} did not complete{note}", failed.join(", "))
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

/// The host's own metric, `wasi_observe.dropped{signal, reason}`: what the
/// pipeline lost, exported with the guests' metrics under the scope
/// `wasi-observe.host` (apart from the guests' scope, so no guest instrument
/// can collide with it).
pub(super) fn self_metric(
    provider: &SdkMeterProvider,
    stats: &Arc<Stats>,
) -> ObservableCounter<u64> {
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opentelemetry::logs::Severity;
    use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
    use opentelemetry_sdk::logs::{LogBatch, LogExporter};
    use opentelemetry_sdk::trace::SpanData;

    use super::*;
    use crate::export::SpanBatchExporter;
    use crate::export::batch::BatchConfig;
    use crate::pipeline::logs::NewLog;

    /// An exporter of spans and logs whose every export fails transiently
    /// (as a collector that is down), noting each attempt and its shutdown
    /// in one list shared by both signals.
    #[derive(Clone, Debug, Default)]
    struct Down(Arc<Mutex<Vec<&'static str>>>);

    impl Down {
        fn note(&self, what: &'static str) -> OTelSdkResult {
            self.0.lock().unwrap().push(what);
            Err(OTelSdkError::InternalFailure(
                "HTTP export failed: network error".into(),
            ))
        }
    }

    impl SpanBatchExporter for Down {
        fn export(&self, _: &[SpanData]) -> OTelSdkResult {
            self.note("spans export")
        }
        fn shutdown(&self, _: Duration) -> OTelSdkResult {
            self.0.lock().unwrap().push("spans shutdown");
            Ok(())
        }
    }

    impl LogExporter for Down {
        async fn export(&self, _: LogBatch<'_>) -> OTelSdkResult {
            self.note("logs export")
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            self.0.lock().unwrap().push("logs shutdown");
            Ok(())
        }
    }

    /// With the collector down at exit, the signals' queues export and retry
    /// their last batches at the same time (the logs' first attempt comes
    /// before the spans give up), and `shutdown` returns only once both have
    /// counted what they gave up, even when that takes longer than the SDK
    /// logger provider's own `shutdown` waits (5 s).
    #[test]
    fn at_exit_the_queues_retry_together_and_count_before_shutdown_returns() {
        let down = Down::default();
        // Exported only at shutdown; the spans retry for 0.3 s, the logs
        // for longer than the logger provider's `shutdown` would wait.
        let spans = BatchConfig {
            scheduled_delay: Duration::from_secs(60),
            retry_initial: Duration::from_millis(20),
            retry_max: Duration::from_millis(100),
            exit_retry: Duration::from_millis(300),
            ..BatchConfig::default()
        };
        let logs = BatchConfig {
            exit_retry: Duration::from_millis(5_500),
            ..spans.clone()
        };
        let t = Telemetry::builder()
            .with_span_batch_config(spans)
            .with_log_batch_config(logs)
            .with_span_batch_exporter(down.clone())
            .with_log_exporter(down.clone())
            .build()
            .unwrap();
        t.start_span("s", opentelemetry::trace::SpanKind::Internal, None, vec![])
            .end();
        t.emit_log(NewLog {
            severity: Severity::Info,
            severity_text: "INFO",
            target: "t".into(),
            body: Some("a record".into()),
            attributes: Vec::new(),
            span: None,
            time: None,
        });
        t.shutdown().unwrap();
        let s = t.stats();
        assert_eq!((s.spans_export_failed, s.logs_export_failed), (1, 1));
        let notes = down.0.lock().unwrap().clone();
        let first = |what| notes.iter().position(|n| *n == what).unwrap();
        let retries = |what| notes.iter().filter(|n| **n == what).count();
        assert!(
            retries("spans export") > 1 && retries("logs export") > 1,
            "{notes:?}"
        );
        assert!(first("logs export") < first("spans shutdown"), "{notes:?}");
    }
}

//! From the pipeline to the outside: exporter selection, and the adapters
//! that run OpenTelemetry exporters on the export threads.
//!
//! Every signal can go to any number of exporters: OTLP (gRPC or
//! http/protobuf, configured entirely by the standard `OTEL_EXPORTER_OTLP_*`
//! variables), a readable console printer, a file of OTLP/JSON lines, or the
//! embedded telemetry store (`wasi-observe-store`, an SQLite file the
//! `wasi-observe traces`/`trace`/`logs`/`metrics`/`ui` commands read).

pub mod aggregated;
pub mod batch;
pub mod console;
pub mod jsonl;
mod retry;
#[cfg(feature = "store")]
pub mod store;

/// The JSON lines exporter's former module name.
#[doc(hidden)]
pub mod file {
    pub use super::jsonl::*;
}

#[cfg(feature = "store")]
pub use store::open_store;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use futures::future::BoxFuture;
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogRecord};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::runtime::Handle;

/// Where a signal goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exporter {
    /// OTLP, configured by the `OTEL_EXPORTER_OTLP_*` variables.
    Otlp,
    /// A readable line per span, log record and metric, on standard error.
    Console,
    /// OTLP/JSON, one export request per line, appended to a file.
    JsonLines(PathBuf),
    /// The embedded SQLite store: the given file, or (`None`)
    /// [`wasi_observe_store::default_path`].
    Store(Option<PathBuf>),
}

impl FromStr for Exporter {
    type Err = String;

    /// `otlp`, `console`, `jsonl:PATH`, `store` or `store:PATH`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "otlp" => Ok(Exporter::Otlp),
            "console" => Ok(Exporter::Console),
            "store" => Ok(Exporter::Store(None)),
            other => match (other.strip_prefix("jsonl:"), other.strip_prefix("store:")) {
                (Some(path), _) if !path.is_empty() => Ok(Exporter::JsonLines(path.into())),
                (_, Some(path)) if !path.is_empty() => Ok(Exporter::Store(Some(path.into()))),
                _ => Err(format!(
                    "unknown exporter `{other}` (expected otlp, console, jsonl:PATH, store[:PATH] or none)"
                )),
            },
        }
    }
}

impl fmt::Display for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exporter::Otlp => f.write_str("otlp"),
            Exporter::Console => f.write_str("console"),
            Exporter::JsonLines(p) => write!(f, "jsonl:{}", p.display()),
            Exporter::Store(None) => f.write_str("store"),
            Exporter::Store(Some(p)) => write!(f, "store:{}", p.display()),
        }
    }
}

/// The three signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Log records.
    Logs,
    /// Metrics.
    Metrics,
}

impl Signal {
    /// The OpenTelemetry variable that selects this signal's exporters.
    pub fn exporter_var(self) -> &'static str {
        match self {
            Signal::Traces => "OTEL_TRACES_EXPORTER",
            Signal::Logs => "OTEL_LOGS_EXPORTER",
            Signal::Metrics => "OTEL_METRICS_EXPORTER",
        }
    }

    fn endpoint_var(self) -> &'static str {
        match self {
            Signal::Traces => "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            Signal::Logs => "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            Signal::Metrics => "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        }
    }
}

/// Parses a comma-separated exporter list as `OTEL_*_EXPORTER` takes it;
/// `none` (alone) means no exporter.
pub fn parse_exporters(list: &str) -> Result<Vec<Exporter>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if item == "none" {
            continue;
        }
        let e: Exporter = item.parse()?;
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

/// The exporters the environment selects for `signal`: `OTEL_<SIGNAL>_EXPORTER`
/// when set; otherwise OTLP if an OTLP endpoint is configured for the signal,
/// else `fallback`.
pub fn exporters_from_env(signal: Signal, fallback: &[Exporter]) -> Result<Vec<Exporter>, String> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    if let Ok(list) = std::env::var(signal.exporter_var()) {
        return parse_exporters(&list).map_err(|e| format!("{}: {e}", signal.exporter_var()));
    }
    if set("OTEL_EXPORTER_OTLP_ENDPOINT") || set(signal.endpoint_var()) {
        return Ok(vec![Exporter::Otlp]);
    }
    Ok(fallback.to_vec())
}

/// A span exporter that reads each batch in place.
///
/// The pipeline keeps a batch until every exporter has taken it, so that an
/// exporter failing transiently can be retried. An OpenTelemetry
/// [`SpanExporter`] takes its batch by value and is therefore handed a copy
/// of every span; an exporter that only reads the batch (writes it somewhere,
/// counts it, drops it) saves that copy by implementing this trait instead.
/// The embedded store and the console exporter do.
pub trait SpanBatchExporter: Send + Sync + fmt::Debug + 'static {
    /// Exports one batch. Called on an export thread, never concurrently.
    fn export(&self, batch: &[SpanData]) -> OTelSdkResult;
    /// Called once, after the last batch.
    fn shutdown(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
    /// The pipeline's resource, given before the first batch.
    fn set_resource(&mut self, _resource: &Resource) {}
}

/// An object-safe span exporter, so a pipeline can hold several kinds.
pub(crate) trait DynSpanExporter: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    fn export<'a>(&'a self, batch: &'a [SpanData]) -> BoxFuture<'a, OTelSdkResult>;
    fn shutdown(&self, timeout: Duration) -> OTelSdkResult;
    fn set_resource(&mut self, resource: &Resource);
}

/// An OpenTelemetry span exporter; it gets a copy of each batch.
#[derive(Debug)]
pub(crate) struct Owning<E>(pub E);

impl<E: SpanExporter + 'static> DynSpanExporter for Owning<E> {
    fn name(&self) -> &'static str {
        short_type_name::<E>()
    }
    fn export<'a>(&'a self, batch: &'a [SpanData]) -> BoxFuture<'a, OTelSdkResult> {
        Box::pin(SpanExporter::export(&self.0, batch.to_vec()))
    }
    fn shutdown(&self, timeout: Duration) -> OTelSdkResult {
        SpanExporter::shutdown_with_timeout(&self.0, timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        SpanExporter::set_resource(&mut self.0, resource)
    }
}

/// A [`SpanBatchExporter`]; it reads each batch in place.
#[derive(Debug)]
pub(crate) struct Borrowing<E>(pub E);

impl<E: SpanBatchExporter> DynSpanExporter for Borrowing<E> {
    fn name(&self) -> &'static str {
        short_type_name::<E>()
    }
    fn export<'a>(&'a self, batch: &'a [SpanData]) -> BoxFuture<'a, OTelSdkResult> {
        Box::pin(std::future::ready(SpanBatchExporter::export(
            &self.0, batch,
        )))
    }
    fn shutdown(&self, timeout: Duration) -> OTelSdkResult {
        SpanBatchExporter::shutdown(&self.0, timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        SpanBatchExporter::set_resource(&mut self.0, resource)
    }
}

/// An object-safe log exporter.
pub(crate) trait DynLogExporter: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    fn export<'a>(&'a self, batch: LogBatch<'a>) -> BoxFuture<'a, OTelSdkResult>;
    fn shutdown(&self, timeout: Duration) -> OTelSdkResult;
    fn set_resource(&mut self, resource: &Resource);
}

impl<E: LogExporter + 'static> DynLogExporter for E {
    fn name(&self) -> &'static str {
        short_type_name::<E>()
    }
    fn export<'a>(&'a self, batch: LogBatch<'a>) -> BoxFuture<'a, OTelSdkResult> {
        Box::pin(LogExporter::export(self, batch))
    }
    fn shutdown(&self, timeout: Duration) -> OTelSdkResult {
        LogExporter::shutdown_with_timeout(self, timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        LogExporter::set_resource(self, resource)
    }
}

/// `opentelemetry_otlp::span::SpanExporter` -> `SpanExporter`: enough to say
/// which exporter failed (their `Debug` output runs to kilobytes).
fn short_type_name<E>() -> &'static str {
    let name = std::any::type_name::<E>();
    let base = name.split('<').next().unwrap_or(name);
    let start = base.rfind("::").map_or(0, |i| i + 2);
    &name[start..]
}

use retry::run;

/// Exports span batches to every exporter; a batch counts as delivered only
/// if every exporter took it, and each exporter is retried on its own.
pub(crate) struct SpanSink {
    pub rt: Handle,
    pub exporters: Vec<Box<dyn DynSpanExporter>>,
}

impl batch::Sink<SpanData> for SpanSink {
    fn targets(&self) -> usize {
        self.exporters.len()
    }

    fn export(
        &mut self,
        target: usize,
        batch: &[SpanData],
        timeout: Duration,
    ) -> Result<(), batch::Failure> {
        let Some(e) = self.exporters.get(target) else {
            return Ok(());
        };
        run(&self.rt, timeout, e.name(), e.export(batch))
    }

    fn shutdown(&mut self, timeout: Duration) {
        for e in &self.exporters {
            let _ = e.shutdown(timeout);
        }
    }
}

/// A log record and the scope that emitted it, as queued.
/// Boxed, as the SDK's batch processor queues it: a record is several hundred
/// bytes, and the queue would copy it in and out of its slots.
pub(crate) type QueuedLog = Box<(SdkLogRecord, InstrumentationScope)>;

/// Exports log batches to every exporter.
pub(crate) struct LogSink {
    pub rt: Handle,
    pub exporters: Vec<Box<dyn DynLogExporter>>,
    /// The span queue, exported before each log batch when both go to the
    /// embedded store: a log record whose trace has no row yet makes the
    /// store write a stand-in row that the trace's spans then rewrite, so
    /// storing the spans first saves that write for nearly every record.
    pub spans_first: Option<batch::Drainer>,
}

/// How long a log batch waits for the span queue to export first.
const SPANS_FIRST_WAIT: Duration = Duration::from_secs(1);

impl batch::Sink<QueuedLog> for LogSink {
    fn targets(&self) -> usize {
        self.exporters.len()
    }

    fn export(
        &mut self,
        target: usize,
        batch: &[QueuedLog],
        timeout: Duration,
    ) -> Result<(), batch::Failure> {
        let Some(e) = self.exporters.get(target) else {
            return Ok(());
        };
        let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            batch.iter().map(|q| (&q.0, &q.1)).collect();
        run(&self.rt, timeout, e.name(), e.export(LogBatch::new(&refs)))
    }

    fn before_batch(&mut self) {
        if let Some(spans) = &self.spans_first {
            spans.drain(SPANS_FIRST_WAIT);
        }
    }

    fn shutdown(&mut self, timeout: Duration) {
        for e in &self.exporters {
            let _ = e.shutdown(timeout);
        }
    }
}

/// Runs a metric exporter's futures on the export runtime: the SDK's periodic
/// reader polls them on a plain thread, where the tonic and reqwest clients
/// of the OTLP exporter would find no runtime. Says when its exports start
/// and stop failing: the SDK's reader does not retry, and says nothing.
#[derive(Debug)]
pub(crate) struct OnRuntime<E> {
    rt: Handle,
    inner: E,
    /// When the exports began to fail, while they do.
    failing: std::sync::Mutex<Option<std::time::Instant>>,
}

impl<E: PushMetricExporter> OnRuntime<E> {
    pub(crate) fn new(rt: Handle, inner: E) -> Self {
        OnRuntime {
            rt,
            inner,
            failing: Default::default(),
        }
    }

    /// What to say about an export's `result`, if anything: the first
    /// failure of an episode, and the first success after it.
    fn note(&self, result: &OTelSdkResult) -> Option<String> {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match (result, *failing) {
            (Err(e), None) => {
                *failing = Some(std::time::Instant::now());
                let what = match self.inner.temporality() {
                    Temporality::Cumulative => "the next export that succeeds carries the totals",
                    _ => "each interval that fails is lost",
                };
                Some(format!(
                    "exporting metrics failed ({e}); {what}, and none is retried"
                ))
            }
            (Ok(()), Some(since)) => {
                *failing = None;
                Some(format!(
                    "exporting metrics works again after {:.1?}",
                    since.elapsed()
                ))
            }
            _ => None,
        }
    }
}

impl<E: PushMetricExporter> PushMetricExporter for OnRuntime<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = if Handle::try_current().is_ok() {
            // Already on a runtime thread (a flush called from async code).
            self.inner.export(metrics).await
        } else {
            self.rt.block_on(self.inner.export(metrics))
        };
        if let Some(note) = self.note(&result) {
            eprintln!("wasi-observe: {note}");
        }
        result
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exporter_lists_parse() {
        assert_eq!(
            parse_exporters("otlp, console,jsonl:/tmp/x.jsonl").unwrap(),
            vec![
                Exporter::Otlp,
                Exporter::Console,
                Exporter::JsonLines("/tmp/x.jsonl".into())
            ]
        );
        assert_eq!(parse_exporters("none").unwrap(), vec![]);
        assert_eq!(parse_exporters("otlp,otlp").unwrap(), vec![Exporter::Otlp]);
        assert_eq!(
            parse_exporters("store,store:/tmp/t.db").unwrap(),
            vec![
                Exporter::Store(None),
                Exporter::Store(Some("/tmp/t.db".into()))
            ]
        );
        assert!(parse_exporters("store:").is_err());
        assert!(parse_exporters("zipkin").is_err());
        assert!(parse_exporters("jsonl:").is_err());
    }

    /// Fails with a transient error until `down` is cleared; records the
    /// names of the spans of each batch it takes.
    #[derive(Debug, Default)]
    struct Flaky {
        down: std::sync::atomic::AtomicBool,
        seen: std::sync::Mutex<Vec<Vec<String>>>,
    }

    impl SpanBatchExporter for std::sync::Arc<Flaky> {
        fn export(&self, batch: &[SpanData]) -> OTelSdkResult {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "HTTP export failed with status code: 503".into(),
                ));
            }
            let names = batch.iter().map(|s| s.name.to_string()).collect();
            self.seen.lock().unwrap().push(names);
            Ok(())
        }
    }

    /// A metric exporter that fails while `down` is set.
    #[derive(Debug, Default)]
    struct DownMetrics {
        down: std::sync::atomic::AtomicBool,
    }

    impl PushMetricExporter for DownMetrics {
        async fn export(&self, _: &ResourceMetrics) -> OTelSdkResult {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "HTTP export failed: network error".into(),
                ));
            }
            Ok(())
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }
        fn temporality(&self) -> Temporality {
            Temporality::Cumulative
        }
    }

    /// A failing metric exporter is reported once per episode, with what
    /// its temporality makes of the failure, and its recovery once: the
    /// exports themselves keep the episode (the wrapper's `export` notes
    /// each result), and the notes say it.
    #[test]
    fn metric_export_failures_are_reported_once_per_episode() {
        use std::sync::atomic::Ordering::SeqCst;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let exporter = OnRuntime::new(rt.handle().clone(), DownMetrics::default());
        let export = || futures::executor::block_on(exporter.export(&ResourceMetrics::default()));
        let failing = || exporter.failing.lock().unwrap().is_some();
        assert!(export().is_ok() && !failing());
        exporter.inner.down.store(true, SeqCst);
        assert!(export().is_err() && failing(), "an episode begins");
        exporter.inner.down.store(false, SeqCst);
        assert!(export().is_ok() && !failing(), "and ends");

        let failed: OTelSdkResult = Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
            "HTTP export failed: network error".into(),
        ));
        let first = exporter.note(&failed).expect("the first failure is told");
        assert!(
            first.contains("network error") && first.contains("carries the totals"),
            "{first}"
        );
        assert_eq!(exporter.note(&failed), None, "once per episode");
        let back = exporter.note(&Ok(())).expect("the recovery is told");
        assert!(back.contains("works again"), "{back}");
        assert_eq!(exporter.note(&Ok(())), None);
    }

    #[test]
    fn a_borrowing_exporter_reads_the_batch_kept_for_its_retry() {
        use batch::Sink as _;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let flaky = std::sync::Arc::new(Flaky::default());
        flaky.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let owning = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let mut sink = SpanSink {
            rt: rt.handle().clone(),
            exporters: vec![
                Box::new(Borrowing(flaky.clone())),
                Box::new(Owning(owning.clone())),
            ],
        };
        let batch: Vec<SpanData> = ["a", "b"]
            .iter()
            .map(|name| SpanData {
                name: (*name).into(),
                ..retry::tests::span()
            })
            .collect();
        let timeout = Duration::from_secs(5);
        let failure = sink.export(0, &batch, timeout).unwrap_err();
        assert!(failure.transient, "{}", failure.message);
        sink.export(1, &batch, timeout).unwrap();
        flaky.down.store(false, std::sync::atomic::Ordering::SeqCst);
        sink.export(0, &batch, timeout).unwrap();
        assert_eq!(*flaky.seen.lock().unwrap(), vec![vec!["a", "b"]]);
        let copied: Vec<_> = owning.get_finished_spans().unwrap();
        assert_eq!(copied.len(), 2);
        assert_eq!(copied[1].name, "b");
    }
}

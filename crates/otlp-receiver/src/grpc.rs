//! A synchronous wrapper around [`fake_opentelemetry_collector::FakeCollectorServer`],
//! the OTLP/gRPC collector the end-to-end tests use.
//!
//! `FakeCollectorServer` is async, needs a live tokio runtime, and hands
//! items over through bounded channels (64 items) that block its export
//! handler once full. [`GrpcCollector`] owns a runtime for the server and
//! drains those channels continuously into its own store, so a plain
//! `#[test]` can start it, point an exporter at [`GrpcCollector::endpoint`],
//! and read what arrived at any time.
//!
//! The fake collector only keeps a reduced view of each item: no resource,
//! no scope, and attribute values rendered as `Debug` strings (e.g.
//! `Some(AnyValue { value: Some(StringValue("x")) })`). Its own types are
//! exposed as they are; see [`GrpcCollector::spans`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fake_opentelemetry_collector::FakeCollectorServer;
pub use fake_opentelemetry_collector::{ExportedLog, ExportedMetric, ExportedSpan};
use tokio::sync::oneshot;

/// How often the channels of the fake collector are drained.
const DRAIN_PERIOD: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Collected {
    spans: Vec<ExportedSpan>,
    logs: Vec<ExportedLog>,
    metrics: Vec<ExportedMetric>,
}

struct Shared {
    collected: Mutex<Collected>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Collected> {
        self.collected.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A fake OTLP/gRPC collector on `127.0.0.1:<random port>` with its own
/// tokio runtime. Shut down when dropped.
pub struct GrpcCollector {
    address: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for GrpcCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcCollector")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl GrpcCollector {
    /// Starts the collector. Panics if it cannot start.
    pub fn start() -> Self {
        Self::try_start().expect("failed to start the fake OTLP/gRPC collector")
    }

    /// Starts the collector.
    pub fn try_start() -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fake-otlp-grpc-collector")
            .enable_all()
            .build()?;
        let mut server = runtime
            .block_on(FakeCollectorServer::start())
            .map_err(|e| io::Error::other(e.to_string()))?;
        let address = server.address();
        let shared = Arc::new(Shared {
            collected: Mutex::new(Collected::default()),
            changed: Condvar::new(),
        });
        let (stop, mut stopped) = oneshot::channel::<()>();
        runtime.spawn({
            let shared = shared.clone();
            async move {
                loop {
                    tokio::select! {
                        _ = &mut stopped => {
                            server.abort();
                            return;
                        }
                        _ = tokio::time::sleep(DRAIN_PERIOD) => {
                            // With `at_least == 0` these return at once with
                            // whatever is queued.
                            let spans = server.exported_spans(0, Duration::ZERO).await;
                            let logs = server.exported_logs(0, Duration::ZERO).await;
                            let metrics = server.exported_metrics(0, Duration::ZERO).await;
                            if spans.is_empty() && logs.is_empty() && metrics.is_empty() {
                                continue;
                            }
                            {
                                let mut collected = shared.lock();
                                collected.spans.extend(spans);
                                collected.logs.extend(logs);
                                collected.metrics.extend(metrics);
                            }
                            shared.changed.notify_all();
                        }
                    }
                }
            }
        });
        Ok(GrpcCollector {
            address,
            shared,
            stop: Some(stop),
            runtime: Some(runtime),
        })
    }

    /// The socket address the collector listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The endpoint, e.g. `http://127.0.0.1:41234`, for a tonic exporter or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` with the `grpc` protocol.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every span received so far, in arrival order. Note: no resource or
    /// scope; `kind` is the proto name (e.g. `"SPAN_KIND_INTERNAL"`);
    /// attribute values are `Debug` renderings of `Option<AnyValue>`.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.shared.lock().spans.clone()
    }

    /// Every log record received so far, in arrival order (no resource,
    /// scope nor `time_unix_nano`; body and attributes as `Debug` strings).
    pub fn logs(&self) -> Vec<ExportedLog> {
        self.shared.lock().logs.clone()
    }

    /// Every `ScopeMetrics` received so far, in arrival order; each holds
    /// its metrics in `.metrics` (name, description, unit, data).
    pub fn metrics(&self) -> Vec<ExportedMetric> {
        self.shared.lock().metrics.clone()
    }

    /// The names of all metrics received so far, in arrival order (with
    /// repetitions when a metric was exported several times).
    pub fn metric_names(&self) -> Vec<String> {
        self.shared
            .lock()
            .metrics
            .iter()
            .flat_map(|scope| scope.metrics.iter().map(|m| m.name.clone()))
            .collect()
    }

    /// Forgets everything received so far.
    pub fn clear(&self) {
        *self.shared.lock() = Collected::default();
    }

    /// Waits until at least `n` spans arrived or `timeout` passed, then
    /// returns all spans received so far.
    pub fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<ExportedSpan> {
        self.wait_for_spans_where(|spans| spans.len() >= n, timeout)
    }

    /// Waits until `done(all spans so far)` holds or `timeout` passed.
    pub fn wait_for_spans_where(
        &self,
        done: impl FnMut(&[ExportedSpan]) -> bool,
        timeout: Duration,
    ) -> Vec<ExportedSpan> {
        self.wait(timeout, |c| &c.spans, done)
    }

    /// Waits until at least `n` log records arrived or `timeout` passed,
    /// then returns all log records received so far.
    pub fn wait_for_logs(&self, n: usize, timeout: Duration) -> Vec<ExportedLog> {
        self.wait_for_logs_where(|logs| logs.len() >= n, timeout)
    }

    /// Waits until `done(all log records so far)` holds or `timeout` passed.
    pub fn wait_for_logs_where(
        &self,
        done: impl FnMut(&[ExportedLog]) -> bool,
        timeout: Duration,
    ) -> Vec<ExportedLog> {
        self.wait(timeout, |c| &c.logs, done)
    }

    /// Waits until at least `n` `ScopeMetrics` arrived or `timeout` passed,
    /// then returns all received so far.
    pub fn wait_for_metrics(&self, n: usize, timeout: Duration) -> Vec<ExportedMetric> {
        self.wait_for_metrics_where(|metrics| metrics.len() >= n, timeout)
    }

    /// Waits until `done(all ScopeMetrics so far)` holds or `timeout` passed.
    pub fn wait_for_metrics_where(
        &self,
        done: impl FnMut(&[ExportedMetric]) -> bool,
        timeout: Duration,
    ) -> Vec<ExportedMetric> {
        self.wait(timeout, |c| &c.metrics, done)
    }

    /// Waits until a metric called `name` arrived or `timeout` passed.
    /// Returns true if it arrived.
    pub fn wait_for_metric(&self, name: &str, timeout: Duration) -> bool {
        let has = |scopes: &[ExportedMetric]| {
            scopes
                .iter()
                .any(|scope| scope.metrics.iter().any(|m| m.name == name))
        };
        has(&self.wait_for_metrics_where(has, timeout))
    }

    fn wait<T: Clone>(
        &self,
        timeout: Duration,
        select: impl Fn(&Collected) -> &Vec<T>,
        mut done: impl FnMut(&[T]) -> bool,
    ) -> Vec<T> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.shared.lock();
        loop {
            let items = select(&guard);
            let now = Instant::now();
            if done(items) || now >= deadline {
                return items.clone();
            }
            guard = self
                .shared
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for GrpcCollector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(runtime) = self.runtime.take() {
            // Does not block, and is allowed even inside another runtime.
            runtime.shutdown_background();
        }
    }
}

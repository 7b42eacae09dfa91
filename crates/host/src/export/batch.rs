//! The batching stage between guests and exporters.
//!
//! Like OpenTelemetry's batch processors, a bounded queue feeds a worker
//! thread that exports in batches, so exporting never runs on a guest's
//! thread. Unlike them, a full queue first applies bounded backpressure: the
//! producer waits up to `max_block` for room, so a burst is delivered rather
//! than dropped. If the queue is still full after that wait, the queue
//! switches to shedding: items are dropped (and counted) without waiting until
//! an item fits again. A guest is therefore never delayed by more than one
//! `max_block` per overload episode.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};

use crate::limits::var_usize;
use crate::stats::Stats;

/// Queue and batch sizes, as the OpenTelemetry `OTEL_BSP_*` / `OTEL_BLRP_*`
/// variables define them, plus the backpressure bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Items the queue holds (`OTEL_BSP_MAX_QUEUE_SIZE`, default 2048).
    pub max_queue_size: usize,
    /// Items per export call (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, default 512).
    pub max_export_batch_size: usize,
    /// Longest wait before a partial batch is exported (`OTEL_BSP_SCHEDULE_DELAY`,
    /// default 5 s for spans, `OTEL_BLRP_SCHEDULE_DELAY` 1 s for logs).
    pub scheduled_delay: Duration,
    /// Longest one export may take (`OTEL_BSP_EXPORT_TIMEOUT`, default 30 s).
    pub export_timeout: Duration,
    /// Longest a producer waits for room in a full queue before shedding
    /// (`WASI_OBSERVE_MAX_BLOCK_MS`, default 2 s; 0 drops at once as the
    /// OpenTelemetry SDKs do).
    pub max_block: Duration,
}

impl BatchConfig {
    /// The span queue's settings from `OTEL_BSP_*`.
    pub fn spans_from_env() -> Self {
        Self::from_env("OTEL_BSP", Duration::from_millis(5000))
    }

    /// The log queue's settings from `OTEL_BLRP_*`.
    pub fn logs_from_env() -> Self {
        Self::from_env("OTEL_BLRP", Duration::from_millis(1000))
    }

    fn from_env(prefix: &str, delay: Duration) -> Self {
        let ms = |name: &str, default: Duration| {
            var_usize(&format!("{prefix}_{name}"))
                .map(|v| Duration::from_millis(v as u64))
                .unwrap_or(default)
        };
        let max_queue_size = var_usize(&format!("{prefix}_MAX_QUEUE_SIZE"))
            .filter(|&n| n > 0)
            .unwrap_or(2048);
        // The specification requires batch <= queue.
        let max_export_batch_size = var_usize(&format!("{prefix}_MAX_EXPORT_BATCH_SIZE"))
            .filter(|&n| n > 0)
            .unwrap_or(512)
            .min(max_queue_size);
        BatchConfig {
            max_queue_size,
            max_export_batch_size,
            scheduled_delay: ms("SCHEDULE_DELAY", delay),
            export_timeout: ms("EXPORT_TIMEOUT", Duration::from_secs(30)),
            max_block: var_usize("WASI_OBSERVE_MAX_BLOCK_MS")
                .map(|v| Duration::from_millis(v as u64))
                .unwrap_or(Duration::from_secs(2)),
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_queue_size: 2048,
            max_export_batch_size: 512,
            scheduled_delay: Duration::from_millis(5000),
            export_timeout: Duration::from_secs(30),
            max_block: Duration::from_secs(2),
        }
    }
}

/// Where a batch goes: called on the worker thread only, never concurrently.
pub(crate) trait Sink<T>: Send + 'static {
    /// Exports one batch; `Err` means the batch was lost.
    fn export(&mut self, batch: Vec<T>, timeout: Duration) -> Result<(), String>;
    /// Called once, after the last batch.
    fn shutdown(&mut self, timeout: Duration);
}

enum Control {
    /// A batch is waiting: export what is queued.
    Export,
    Flush(Sender<()>),
    Shutdown(Sender<()>),
}

/// A bounded queue drained by one export thread.
pub(crate) struct BatchQueue<T> {
    items: Sender<T>,
    control: Sender<Control>,
    /// Set while an `Export` message is on its way, so a producer wakes the
    /// worker once per batch rather than once per item (a wake-up is a
    /// system call).
    wake_pending: Arc<AtomicBool>,
    batch_size: usize,
    shedding: AtomicBool,
    max_block: Duration,
    stats: Arc<Stats>,
    dropped: fn(&Stats) -> &AtomicU64,
    worker: Mutex<Option<JoinHandle<()>>>,
    name: &'static str,
}

/// The counters a queue keeps: items delivered, lost by the exporter, and
/// dropped because the queue stayed full.
pub(crate) struct Outcome {
    pub stats: Arc<Stats>,
    pub exported: fn(&Stats) -> &AtomicU64,
    pub failed: fn(&Stats) -> &AtomicU64,
    pub dropped: fn(&Stats) -> &AtomicU64,
}

impl<T: Send + 'static> BatchQueue<T> {
    pub(crate) fn new(
        name: &'static str,
        config: &BatchConfig,
        sink: impl Sink<T>,
        outcome: Outcome,
    ) -> Self {
        let (stats, dropped) = (outcome.stats.clone(), outcome.dropped);
        let (items, items_rx) = crossbeam_channel::bounded(config.max_queue_size);
        let (control, control_rx) = crossbeam_channel::unbounded();
        let wake_pending = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            items: items_rx,
            control: control_rx,
            wake_pending: wake_pending.clone(),
            sink,
            batch_size: config.max_export_batch_size,
            delay: config.scheduled_delay,
            timeout: config.export_timeout,
            outcome,
        };
        let handle = std::thread::Builder::new()
            .name(format!("wasi-observe-{name}"))
            .spawn(move || worker.run())
            .expect("spawning the export thread");
        BatchQueue {
            items,
            control,
            wake_pending,
            batch_size: config.max_export_batch_size,
            shedding: AtomicBool::new(false),
            max_block: config.max_block,
            stats,
            dropped,
            worker: Mutex::new(Some(handle)),
            name,
        }
    }

    /// Queues an item; returns false if it was dropped.
    pub(crate) fn push(&self, item: T) -> bool {
        let item = match self.items.try_send(item) {
            Ok(()) => {
                if self.shedding.load(Ordering::Relaxed) {
                    self.shedding.store(false, Ordering::Relaxed);
                }
                self.wake_if_batch_ready();
                return true;
            }
            Err(TrySendError::Disconnected(_)) => return self.drop_one(),
            Err(TrySendError::Full(item)) => item,
        };
        if self.shedding.load(Ordering::Relaxed) || self.max_block.is_zero() {
            return self.drop_one();
        }
        self.wake_if_batch_ready();
        match self.items.send_timeout(item, self.max_block) {
            Ok(()) => true,
            Err(SendTimeoutError::Timeout(_)) => {
                self.shedding.store(true, Ordering::Relaxed);
                self.drop_one()
            }
            Err(SendTimeoutError::Disconnected(_)) => self.drop_one(),
        }
    }

    /// Wakes the worker when a full batch is queued. The worker otherwise
    /// sleeps until its scheduled delay, so queueing an item costs no
    /// system call.
    fn wake_if_batch_ready(&self) {
        if self.items.len() >= self.batch_size && !self.wake_pending.swap(true, Ordering::AcqRel) {
            let _ = self.control.send(Control::Export);
        }
    }

    fn drop_one(&self) -> bool {
        if (self.dropped)(&self.stats).fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!(
                "wasi-observe: the {} export queue is full; dropping (counted, reported at exit)",
                self.name
            );
        }
        false
    }

    /// Items dropped because the queue was full or closed.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        (self.dropped)(&self.stats).load(Ordering::Relaxed)
    }

    /// Exports everything queued so far; waits up to `timeout`.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.control.send(Control::Flush(tx)).is_ok() && rx.recv_timeout(timeout).is_ok()
    }

    /// Exports everything queued, shuts the sink down and stops the worker.
    /// Later calls (and pushes) do nothing.
    pub(crate) fn shutdown(&self, timeout: Duration) -> bool {
        let Some(handle) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return true;
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        let done =
            self.control.send(Control::Shutdown(tx)).is_ok() && rx.recv_timeout(timeout).is_ok();
        if done {
            let _ = handle.join();
        }
        done
    }
}

impl<T> fmt::Debug for BatchQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchQueue")
            .field("name", &self.name)
            .field("queued", &self.items.len())
            .field(
                "dropped",
                &(self.dropped)(&self.stats).load(Ordering::Relaxed),
            )
            .finish()
    }
}

struct Worker<T, S> {
    items: Receiver<T>,
    control: Receiver<Control>,
    wake_pending: Arc<AtomicBool>,
    sink: S,
    batch_size: usize,
    delay: Duration,
    timeout: Duration,
    outcome: Outcome,
}

impl<T: Send + 'static, S: Sink<T>> Worker<T, S> {
    fn run(mut self) {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut deadline = Instant::now() + self.delay;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.control.recv_timeout(wait) {
                Ok(Control::Export) => {
                    // Cleared first, so items queued while exporting wake
                    // the worker again.
                    self.wake_pending.store(false, Ordering::Release);
                    self.drain(&mut batch);
                    deadline = Instant::now() + self.delay;
                }
                Ok(Control::Flush(ack)) => {
                    self.drain(&mut batch);
                    let _ = ack.send(());
                    deadline = Instant::now() + self.delay;
                }
                Ok(Control::Shutdown(ack)) => {
                    self.drain(&mut batch);
                    self.sink.shutdown(self.timeout);
                    let _ = ack.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.drain(&mut batch);
                    deadline = Instant::now() + self.delay;
                }
                // The queue is gone: nothing more can arrive.
                Err(RecvTimeoutError::Disconnected) => {
                    self.drain(&mut batch);
                    self.sink.shutdown(self.timeout);
                    return;
                }
            }
        }
    }

    /// Exports what is queued now, in batches.
    fn drain(&mut self, batch: &mut Vec<T>) {
        while let Ok(item) = self.items.try_recv() {
            batch.push(item);
            if batch.len() >= self.batch_size {
                self.export(batch);
            }
        }
        self.export(batch);
    }

    fn export(&mut self, batch: &mut Vec<T>) {
        if batch.is_empty() {
            return;
        }
        let items = std::mem::replace(batch, Vec::with_capacity(self.batch_size));
        let n = items.len() as u64;
        match self.sink.export(items, self.timeout) {
            Ok(()) => (self.outcome.exported)(&self.outcome.stats).fetch_add(n, Ordering::Relaxed),
            Err(e) => {
                if (self.outcome.failed)(&self.outcome.stats).fetch_add(n, Ordering::Relaxed) == 0 {
                    eprintln!("wasi-observe: export failed ({e}); counted, reported at exit");
                }
                0
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Slow {
        seen: Arc<AtomicUsize>,
        delay: Duration,
        fail: bool,
    }

    impl Sink<u32> for Slow {
        fn export(&mut self, batch: Vec<u32>, _: Duration) -> Result<(), String> {
            std::thread::sleep(self.delay);
            if self.fail {
                return Err("down".into());
            }
            self.seen.fetch_add(batch.len(), Ordering::SeqCst);
            Ok(())
        }
        fn shutdown(&mut self, _: Duration) {}
    }

    fn outcome() -> Outcome {
        Outcome {
            stats: Arc::default(),
            exported: |s| &s.spans_exported,
            failed: |s| &s.spans_export_failed,
            dropped: |s| &s.spans_dropped_queue_full,
        }
    }

    fn config(queue: usize, block_ms: u64) -> BatchConfig {
        BatchConfig {
            max_queue_size: queue,
            max_export_batch_size: 8.min(queue),
            scheduled_delay: Duration::from_secs(60),
            export_timeout: Duration::from_secs(5),
            max_block: Duration::from_millis(block_ms),
        }
    }

    #[test]
    fn backpressure_delivers_a_burst_larger_than_the_queue() {
        let seen = Arc::new(AtomicUsize::new(0));
        let out = outcome();
        let stats = out.stats.clone();
        let sink = Slow {
            seen: seen.clone(),
            delay: Duration::from_micros(200),
            fail: false,
        };
        let q = BatchQueue::new("test", &config(16, 2000), sink, out);
        for i in 0..5000 {
            assert!(q.push(i));
        }
        assert!(q.shutdown(Duration::from_secs(10)));
        assert_eq!(seen.load(Ordering::SeqCst), 5000);
        assert_eq!(stats.snapshot().spans_exported, 5000);
        assert_eq!(q.dropped(), 0);
    }

    #[test]
    fn a_stuck_exporter_sheds_and_counts_after_one_bounded_wait() {
        let seen = Arc::new(AtomicUsize::new(0));
        let sink = Slow {
            seen: seen.clone(),
            delay: Duration::from_millis(300),
            fail: false,
        };
        let q = BatchQueue::new("test", &config(4, 50), sink, outcome());
        let start = Instant::now();
        let mut accepted = 0;
        for i in 0..1000 {
            accepted += q.push(i) as u64;
        }
        // One 50 ms wait at most, then shedding without waiting.
        assert!(
            start.elapsed() < Duration::from_millis(1000),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(accepted + q.dropped(), 1000);
        assert!(q.dropped() > 0);
        assert!(q.shutdown(Duration::from_secs(10)));
        assert_eq!(seen.load(Ordering::SeqCst) as u64, accepted);
    }

    #[test]
    fn failed_exports_are_counted_and_flush_waits() {
        let out = outcome();
        let stats = out.stats.clone();
        let sink = Slow {
            seen: Arc::default(),
            delay: Duration::ZERO,
            fail: true,
        };
        let q = BatchQueue::new("test", &config(64, 0), sink, out);
        for i in 0..10 {
            q.push(i);
        }
        assert!(q.flush(Duration::from_secs(5)));
        assert_eq!(stats.snapshot().spans_export_failed, 10);
        assert!(q.shutdown(Duration::from_secs(5)));
        assert!(q.shutdown(Duration::from_secs(5)), "shutdown is idempotent");
        assert!(!q.push(1), "pushing after shutdown drops");
        assert_eq!(q.dropped(), 1);
    }
}

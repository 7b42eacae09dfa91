//! The batching stage between guests and exporters.
//!
//! Like OpenTelemetry's batch processors, a bounded queue feeds a worker
//! thread that exports in batches, so exporting never runs on a guest's
//! thread. Unlike them, a full queue first applies bounded backpressure: the
//! producer waits up to `max_block` for room, so a burst is delivered rather
//! than dropped. If the queue is still full after that wait, the queue
//! switches to shedding: items are dropped (and counted) without waiting until
//! an item fits again. No single push waits longer than `max_block`; a
//! collector slower than the guest paces the guest to the export rate (set
//! `max_block` to zero to never wait).
//!
//! A batch whose export fails for a transient reason (the collector is down,
//! overloaded, or timed out) is kept and retried with exponential backoff
//! (`retry_initial`, doubling up to `retry_max`). While a batch waits, the
//! worker keeps draining the queue into a retry buffer of at most
//! `retry_buffer` items, so the guest sees no difference; when the buffer
//! overflows, the oldest items are dropped and counted. Permanent failures
//! (a refused signal, a malformed request) are not retried, and an exporter
//! that panics is taken to have refused its batch, so one bad batch does not
//! end the worker. At shutdown the worker retries for at most `exit_retry`,
//! then counts what is left as failed.
//!
//! Items are also bounded in bytes: every queue of a pipeline takes its
//! items' bytes from one [`SharedBudget`] and gives them back when they leave
//! the worker (exported, refused, or dropped from the retry buffer). An item
//! that does not fit is dropped at once, counted: waiting could not help a
//! producer when megabytes are already queued.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, TrySendError};

use crate::pipeline::budget::{Held, SharedBudget};
use crate::pipeline::limits::var_usize;
use crate::pipeline::stats::Stats;

/// Queue and batch sizes, as the OpenTelemetry `OTEL_BSP_*` / `OTEL_BLRP_*`
/// variables define them, plus the backpressure and retry bounds.
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
    /// Items kept for retry while exports fail transiently
    /// (`WASI_OBSERVE_RETRY_BUFFER`, default 65 536; 0: no retry, a failed
    /// batch is lost at once). Beyond it the oldest items are dropped.
    pub retry_buffer: usize,
    /// First wait before a retry (`WASI_OBSERVE_RETRY_INITIAL_MS`, default
    /// 100 ms); it doubles after every failed retry.
    pub retry_initial: Duration,
    /// Longest wait between retries (`WASI_OBSERVE_RETRY_MAX_MS`, default 5 s).
    pub retry_max: Duration,
    /// How long shutdown keeps retrying what is buffered
    /// (`WASI_OBSERVE_EXIT_RETRY_MS`, default 5 s) before counting it failed.
    pub exit_retry: Duration,
}

impl BatchConfig {
    /// The span queue's settings from `OTEL_BSP_*` and `WASI_OBSERVE_*`.
    pub fn spans_from_env() -> Self {
        Self::from_env("OTEL_BSP", &BatchConfig::default())
    }

    /// The log queue's settings from `OTEL_BLRP_*` and `WASI_OBSERVE_*`.
    pub fn logs_from_env() -> Self {
        Self::from_env("OTEL_BLRP", &Self::log_defaults())
    }

    fn log_defaults() -> Self {
        BatchConfig {
            scheduled_delay: Duration::from_millis(1000),
            ..BatchConfig::default()
        }
    }

    /// As [`spans_from_env`](Self::spans_from_env) (`logs`: as
    /// [`logs_from_env`](Self::logs_from_env)), with the defaults of a queue
    /// whose only exporters are embedded stores: 16 384 items queued,
    /// batches of 8 192. A store writes a batch in one transaction, which
    /// writes each page it touched once, and the random-keyed trace index
    /// is touched all over: larger batches cost much less per item
    /// (docs/store.md). The variables still win.
    pub(crate) fn for_store_from_env(logs: bool) -> Self {
        let (prefix, d) = if logs {
            ("OTEL_BLRP", Self::log_defaults())
        } else {
            ("OTEL_BSP", BatchConfig::default())
        };
        Self::from_env(
            prefix,
            &BatchConfig {
                max_queue_size: 16_384,
                max_export_batch_size: 8_192,
                ..d
            },
        )
    }

    fn from_env(prefix: &str, d: &BatchConfig) -> Self {
        let ms = |name: &str, default: Duration| {
            var_usize(name)
                .map(|v| Duration::from_millis(v as u64))
                .unwrap_or(default)
        };
        let max_queue_size = var_usize(&format!("{prefix}_MAX_QUEUE_SIZE"))
            .filter(|&n| n > 0)
            .unwrap_or(d.max_queue_size);
        // The specification requires batch <= queue.
        let max_export_batch_size = var_usize(&format!("{prefix}_MAX_EXPORT_BATCH_SIZE"))
            .filter(|&n| n > 0)
            .unwrap_or(d.max_export_batch_size)
            .min(max_queue_size);
        BatchConfig {
            max_queue_size,
            max_export_batch_size,
            scheduled_delay: ms(&format!("{prefix}_SCHEDULE_DELAY"), d.scheduled_delay),
            export_timeout: ms(&format!("{prefix}_EXPORT_TIMEOUT"), d.export_timeout),
            max_block: ms("WASI_OBSERVE_MAX_BLOCK_MS", d.max_block),
            retry_buffer: var_usize("WASI_OBSERVE_RETRY_BUFFER").unwrap_or(d.retry_buffer),
            retry_initial: ms("WASI_OBSERVE_RETRY_INITIAL_MS", d.retry_initial),
            retry_max: ms("WASI_OBSERVE_RETRY_MAX_MS", d.retry_max),
            exit_retry: ms("WASI_OBSERVE_EXIT_RETRY_MS", d.exit_retry),
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
            retry_buffer: 65_536,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            exit_retry: Duration::from_secs(5),
        }
    }
}

/// Why an export failed.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    /// Whether trying again later may succeed (collector down, overloaded,
    /// timed out), as opposed to a refusal that would repeat.
    pub transient: bool,
    pub message: String,
}

/// Where a batch goes: one or more targets (exporters), each of which must
/// take every batch. Called on the worker thread only, never concurrently.
pub(crate) trait Sink<T>: Send + 'static {
    /// How many targets there are (at most 64).
    fn targets(&self) -> usize {
        1
    }
    /// Exports one batch to target `target`.
    fn export(&mut self, target: usize, batch: &[T], timeout: Duration) -> Result<(), Failure>;
    /// Called before a new batch is exported (not before a retry).
    fn before_batch(&mut self) {}
    /// Called once, after the last batch.
    fn shutdown(&mut self, timeout: Duration);
}

enum Control {
    /// A batch is waiting: export what is queued.
    Export,
    Flush(Sender<()>),
    /// As `Flush`, without retrying what waits for a retry before its time.
    Drain(Sender<()>),
    Shutdown(Sender<()>),
}

/// A bounded queue drained by one export thread.
pub(crate) struct BatchQueue<T> {
    /// Each item with the bytes it took from the budget (counted once).
    items: Sender<(T, usize)>,
    control: Sender<Control>,
    /// Set while an `Export` message is on its way, so a producer wakes the
    /// worker once per batch rather than once per item (a wake-up is a
    /// system call).
    wake_pending: Arc<AtomicBool>,
    /// Set to end the exit retries now ([`give_up_retries`](Self::give_up_retries)).
    give_up: Arc<AtomicBool>,
    batch_size: usize,
    shedding: AtomicBool,
    max_block: Duration,
    stats: Arc<Stats>,
    dropped: fn(&Stats) -> &AtomicU64,
    dropped_budget: fn(&Stats) -> &AtomicU64,
    budget: Arc<SharedBudget>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// The worker's answer to a shutdown asked for and not yet waited for
    /// ([`begin_shutdown`](Self::begin_shutdown)).
    shutdown_ack: Mutex<Option<Receiver<()>>>,
    name: &'static str,
}

/// The counters a queue keeps: items delivered, lost by the exporter,
/// dropped because the queue stayed full or the byte budget was, dropped
/// from the retry buffer, and export retries; and the byte budget its items
/// take from.
pub(crate) struct Outcome {
    pub stats: Arc<Stats>,
    pub budget: Arc<SharedBudget>,
    pub exported: fn(&Stats) -> &AtomicU64,
    pub failed: fn(&Stats) -> &AtomicU64,
    pub dropped: fn(&Stats) -> &AtomicU64,
    pub dropped_budget: fn(&Stats) -> &AtomicU64,
    pub dropped_retry: fn(&Stats) -> &AtomicU64,
    pub retries: fn(&Stats) -> &AtomicU64,
}

impl<T: Held + Send + 'static> BatchQueue<T> {
    pub(crate) fn new(
        name: &'static str,
        config: &BatchConfig,
        sink: impl Sink<T>,
        outcome: Outcome,
    ) -> Self {
        let (stats, dropped) = (outcome.stats.clone(), outcome.dropped);
        let (budget, dropped_budget) = (outcome.budget.clone(), outcome.dropped_budget);
        let (items, items_rx) = crossbeam_channel::bounded(config.max_queue_size);
        let (control, control_rx) = crossbeam_channel::unbounded();
        let targets = sink.targets().clamp(1, 64);
        let wake_pending = Arc::new(AtomicBool::new(false));
        let give_up = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            name,
            items: items_rx,
            control: control_rx,
            wake_pending: wake_pending.clone(),
            give_up: give_up.clone(),
            sink,
            batch_bytes: 0,
            all: if targets == 64 {
                u64::MAX
            } else {
                (1u64 << targets) - 1
            },
            config: config.clone(),
            outcome,
            pending: VecDeque::new(),
            pending_items: 0,
            backoff: config.retry_initial,
            next_retry: Instant::now(),
            episode: None,
        };
        let handle = std::thread::Builder::new()
            .name(format!("wasi-observe-{name}"))
            .spawn(move || worker.run())
            .expect("spawning the export thread");
        BatchQueue {
            items,
            control,
            wake_pending,
            give_up,
            batch_size: config.max_export_batch_size,
            shedding: AtomicBool::new(false),
            max_block: config.max_block,
            stats,
            dropped,
            dropped_budget,
            budget,
            worker: Mutex::new(Some(handle)),
            shutdown_ack: Mutex::new(None),
            name,
        }
    }

    /// Queues an item; returns false if it was dropped.
    pub(crate) fn push(&self, item: T) -> bool {
        let bytes = item.held_bytes();
        self.push_held(item, bytes)
    }

    /// [`push`](Self::push) of an item whose [`Held::held_bytes`] the
    /// caller has already counted (`bytes`), as the pipe's decoder does
    /// while it builds a span.
    pub(crate) fn push_held(&self, item: T, bytes: usize) -> bool {
        if !self.budget.take(bytes) {
            Stats::add((self.dropped_budget)(&self.stats), 1);
            return false;
        }
        let pushed = self.push_counted((item, bytes));
        if !pushed {
            self.budget.give(bytes);
        }
        pushed
    }

    /// [`push`](Self::push) once the item's bytes are taken.
    fn push_counted(&self, item: (T, usize)) -> bool {
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
    /// sleeps until its scheduled delay (or a retry), so queueing an item
    /// costs no system call.
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

    /// Exports everything queued so far (one attempt for what waits for a
    /// retry); waits up to `timeout`.
    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.control.send(Control::Flush(tx)).is_ok() && rx.recv_timeout(timeout).is_ok()
    }

    /// A handle that asks this queue's worker to export what is queued, for
    /// another queue's worker to use.
    pub(crate) fn drainer(&self) -> Drainer {
        Drainer(self.control.clone())
    }

    /// Asks the worker to shut down, without waiting: a pipeline asks all
    /// its queues first, so that they export and retry their last batches
    /// at the same time, and exit waits for the slowest rather than for the
    /// sum of them. [`shutdown`](Self::shutdown) waits.
    pub(crate) fn begin_shutdown(&self) {
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        let mut ack = self.shutdown_ack.lock().unwrap_or_else(|e| e.into_inner());
        if worker.is_some() && ack.is_none() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            // A worker that is gone drops the sender: the wait then ends at
            // once, unanswered.
            let _ = self.control.send(Control::Shutdown(tx));
            *ack = Some(rx);
        }
    }

    /// Ends the retries of a shutdown now, rather than after `exit_retry`:
    /// what still waits for a retry is counted as failed (and reported), and
    /// the worker stops once an export under way returns. For a user who
    /// presses Ctrl-C while exit waits for a collector that is down.
    pub(crate) fn give_up_retries(&self) {
        self.give_up.store(true, Ordering::SeqCst);
    }

    /// Exports everything queued, shuts the sink down and stops the worker,
    /// waiting up to `timeout` for it. Later calls (and pushes) do nothing.
    pub(crate) fn shutdown(&self, timeout: Duration) -> bool {
        self.begin_shutdown();
        let Some(handle) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return true;
        };
        let ack = self
            .shutdown_ack
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let done = ack.is_some_and(|rx| rx.recv_timeout(timeout).is_ok());
        if done {
            let _ = handle.join();
        }
        done
    }
}

/// Asks a queue's worker to export what is queued now (see
/// [`BatchQueue::drainer`]).
#[derive(Clone)]
pub(crate) struct Drainer(Sender<Control>);

impl Drainer {
    /// Waits until the worker has exported what was queued, at most
    /// `timeout`; false if it did not answer in time or is gone. While
    /// earlier batches wait for a retry, the new ones queue behind them: the
    /// backoff is kept.
    pub(crate) fn drain(&self, timeout: Duration) -> bool {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.0.send(Control::Drain(tx)).is_ok() && rx.recv_timeout(timeout).is_ok()
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

/// A batch some targets have not taken yet.
struct Pending<T> {
    items: Vec<T>,
    /// What `items` hold, to give back to the budget.
    bytes: usize,
    /// Bit i set: target i still has to take it.
    remaining: u64,
    /// A target refused it for good.
    refused: bool,
}

/// A failure episode: from the first transient failure until the retry
/// buffer is empty again.
struct Episode {
    started: Instant,
    warned_drop: bool,
    /// Items retried in this episode that an exporter then refused for good
    /// (or panicked on): not delivered, whatever ends the episode.
    refused: u64,
}

impl Episode {
    /// What to say when the retry buffer is empty again: delivered, unless
    /// an exporter refused some of it in the end.
    fn ended(&self, name: &str) -> String {
        let took = self.started.elapsed();
        match self.refused {
            0 => format!(
                "exporting {name} works again after {took:.1?}; the buffered items were delivered"
            ),
            n => format!(
                "exporting {name} stopped retrying after {took:.1?}: {n} of the buffered items \
                 were refused for good (counted, reported at exit)"
            ),
        }
    }
}

struct Worker<T, S> {
    name: &'static str,
    items: Receiver<(T, usize)>,
    control: Receiver<Control>,
    wake_pending: Arc<AtomicBool>,
    give_up: Arc<AtomicBool>,
    sink: S,
    /// The bytes of the batch being collected.
    batch_bytes: usize,
    all: u64,
    config: BatchConfig,
    outcome: Outcome,
    /// Batches waiting for a retry, oldest first.
    pending: VecDeque<Pending<T>>,
    pending_items: usize,
    backoff: Duration,
    next_retry: Instant,
    episode: Option<Episode>,
}

/// How often exit retries look for a request to give up.
const GIVE_UP_POLL: Duration = Duration::from_millis(20);

/// The bytes a list of items holds.
fn bytes<T: Held>(items: &[T]) -> usize {
    items.iter().map(Held::held_bytes).sum()
}

impl<T: Held + Send + 'static, S: Sink<T>> Worker<T, S> {
    fn run(mut self) {
        let batch_size = self.config.max_export_batch_size;
        let delay = self.config.scheduled_delay;
        let mut batch = Vec::with_capacity(batch_size);
        let mut deadline = Instant::now() + delay;
        loop {
            let mut wake = deadline;
            if !self.pending.is_empty() {
                wake = wake.min(self.next_retry);
            }
            let wait = wake.saturating_duration_since(Instant::now());
            // Items are not received one by one (each would need a wake-up):
            // the worker sleeps on the control channel and drains the queue
            // when a producer says a batch is ready, or on its schedule.
            match self.control.recv_timeout(wait) {
                Ok(Control::Export) => {
                    // Cleared first, so items queued while exporting wake
                    // the worker again.
                    self.wake_pending.store(false, Ordering::Release);
                    self.drain(&mut batch);
                    deadline = Instant::now() + delay;
                }
                Ok(Control::Flush(ack)) => {
                    self.drain(&mut batch);
                    self.retry();
                    let _ = ack.send(());
                    deadline = Instant::now() + delay;
                }
                Ok(Control::Drain(ack)) => {
                    self.drain(&mut batch);
                    let _ = ack.send(());
                    deadline = Instant::now() + delay;
                }
                Ok(Control::Shutdown(ack)) => {
                    self.drain(&mut batch);
                    self.finish();
                    let _ = ack.send(());
                    return;
                }
                // The queue is gone: nothing more can arrive.
                Err(RecvTimeoutError::Disconnected) => {
                    self.drain(&mut batch);
                    self.finish();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    if now >= deadline {
                        self.drain(&mut batch);
                        deadline = now + delay;
                    }
                    if !self.pending.is_empty() && now >= self.next_retry {
                        self.retry();
                    }
                }
            }
        }
    }

    /// Exports what is queued now, in batches.
    fn drain(&mut self, batch: &mut Vec<T>) {
        while let Ok((item, bytes)) = self.items.try_recv() {
            batch.push(item);
            self.batch_bytes += bytes;
            if batch.len() >= self.config.max_export_batch_size {
                self.export(batch);
            }
        }
        self.export(batch);
    }

    /// Exports a new batch, or queues it behind the batches waiting for a
    /// retry (keeping the order, and not hammering a collector that is down).
    fn export(&mut self, batch: &mut Vec<T>) {
        if batch.is_empty() {
            return;
        }
        self.sink.before_batch();
        let items = std::mem::replace(batch, Vec::with_capacity(self.config.max_export_batch_size));
        let pending = Pending {
            items,
            bytes: std::mem::take(&mut self.batch_bytes),
            remaining: self.all,
            refused: false,
        };
        if !self.pending.is_empty() {
            self.buffer(pending);
            return;
        }
        if let Err(p) = self.attempt(pending) {
            self.buffer(p);
        }
    }

    /// One export attempt to every target that still needs `p`. Returns it
    /// back if a target failed transiently and retrying is allowed.
    fn attempt(&mut self, mut p: Pending<T>) -> Result<(), Pending<T>> {
        let mut transient = None;
        for target in 0..64 {
            if p.remaining & (1 << target) == 0 {
                continue;
            }
            // An exporter that panics (a bug in it, or in a user's own
            // exporter) refuses the batch: counted, and the thread lives on
            // to export the next one.
            let sink = &mut self.sink;
            let exported = panic::catch_unwind(AssertUnwindSafe(|| {
                sink.export(target, &p.items, self.config.export_timeout)
            }))
            .unwrap_or_else(|_| {
                Err(Failure {
                    transient: false,
                    message: "the exporter panicked".into(),
                })
            });
            match exported {
                Ok(()) => p.remaining &= !(1 << target),
                Err(f) if f.transient && self.config.retry_buffer > 0 => {
                    transient = Some(f.message);
                }
                Err(f) => {
                    p.remaining &= !(1 << target);
                    p.refused = true;
                    self.warn_failed(&f.message);
                }
            }
        }
        if p.remaining != 0 {
            if self.episode.is_none() {
                eprintln!(
                    "wasi-observe: exporting {} failed ({}); retrying with backoff, \
                     buffering up to {} items",
                    self.name,
                    transient.unwrap_or_default(),
                    self.config.retry_buffer
                );
                self.episode = Some(Episode {
                    started: Instant::now(),
                    warned_drop: false,
                    refused: 0,
                });
            }
            return Err(p);
        }
        let n = p.items.len() as u64;
        if p.refused
            && let Some(e) = &mut self.episode
        {
            e.refused += n;
        }
        let o = &self.outcome;
        let counter = if p.refused { o.failed } else { o.exported };
        counter(&o.stats).fetch_add(n, Ordering::Relaxed);
        o.budget.give(p.bytes);
        Ok(())
    }

    fn warn_failed(&self, message: &str) {
        let o = &self.outcome;
        if (o.failed)(&o.stats).load(Ordering::Relaxed) == 0 {
            eprintln!(
                "wasi-observe: exporting {} failed for good ({message}); counted, reported at exit",
                self.name
            );
        }
    }

    /// Keeps a batch for retry, dropping the oldest items beyond the buffer.
    fn buffer(&mut self, p: Pending<T>) {
        if self.pending.is_empty() {
            self.backoff = self.config.retry_initial;
            self.next_retry = Instant::now() + self.backoff;
        }
        self.pending_items += p.items.len();
        self.pending.push_back(p);
        let mut dropped = 0;
        while self.pending_items > self.config.retry_buffer {
            let excess = self.pending_items - self.config.retry_buffer;
            let Some(front) = self.pending.front_mut() else {
                break;
            };
            let n = excess.min(front.items.len());
            let gone = bytes(&front.items[..n]).min(front.bytes);
            front.bytes -= gone;
            self.outcome.budget.give(gone);
            front.items.drain(..n);
            self.pending_items -= n;
            dropped += n;
            if front.items.is_empty() {
                self.pending.pop_front();
            }
        }
        if dropped > 0 {
            let o = &self.outcome;
            (o.dropped_retry)(&o.stats).fetch_add(dropped as u64, Ordering::Relaxed);
            if let Some(e) = &mut self.episode
                && !e.warned_drop
            {
                e.warned_drop = true;
                eprintln!(
                    "wasi-observe: the {} retry buffer ({} items) is full; dropping the oldest \
                     (counted, reported at exit)",
                    self.name, self.config.retry_buffer
                );
            }
        }
    }

    /// Retries the waiting batches, oldest first, until one fails again.
    fn retry(&mut self) {
        while let Some(p) = self.pending.pop_front() {
            let o = &self.outcome;
            (o.retries)(&o.stats).fetch_add(1, Ordering::Relaxed);
            let n = p.items.len();
            match self.attempt(p) {
                Ok(()) => self.pending_items -= n,
                Err(p) => {
                    self.pending.push_front(p);
                    self.backoff = (self.backoff * 2).min(self.config.retry_max);
                    self.next_retry = Instant::now() + self.backoff;
                    return;
                }
            }
        }
        if let Some(e) = self.episode.take() {
            eprintln!("wasi-observe: {}", e.ended(self.name));
        }
    }

    /// At shutdown: retries for at most `exit_retry`, counts what is left as
    /// failed, and shuts the sink down.
    fn finish(&mut self) {
        let give_up = Instant::now() + self.config.exit_retry;
        while !self.pending.is_empty() && !self.give_up.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= give_up {
                break;
            }
            // In short naps, so that a request to give up is seen at once.
            let wake = self.next_retry.min(give_up).min(now + GIVE_UP_POLL);
            std::thread::sleep(wake.saturating_duration_since(now));
            if Instant::now() >= self.next_retry {
                self.retry();
            }
        }
        if self.pending_items > 0 {
            let o = &self.outcome;
            (o.failed)(&o.stats).fetch_add(self.pending_items as u64, Ordering::Relaxed);
            eprintln!(
                "wasi-observe: gave up exporting {} {} at exit (counted, reported at exit)",
                self.pending_items, self.name
            );
            for p in self.pending.drain(..) {
                o.budget.give(p.bytes);
            }
            self.pending_items = 0;
        }
        self.sink.shutdown(self.config.export_timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A store-only queue gets larger defaults; the variables, when set,
    /// still win (checked only where the test's environment leaves them unset).
    #[test]
    fn store_queues_default_to_large_batches() {
        for (logs, prefix) in [(false, "OTEL_BSP"), (true, "OTEL_BLRP")] {
            let store = BatchConfig::for_store_from_env(logs);
            let plain = if logs {
                BatchConfig::logs_from_env()
            } else {
                BatchConfig::spans_from_env()
            };
            assert_eq!(store.scheduled_delay, plain.scheduled_delay);
            if std::env::var_os(format!("{prefix}_MAX_QUEUE_SIZE")).is_none()
                && std::env::var_os(format!("{prefix}_MAX_EXPORT_BATCH_SIZE")).is_none()
            {
                assert_eq!(
                    (plain.max_queue_size, plain.max_export_batch_size),
                    (2048, 512)
                );
                assert_eq!(
                    (store.max_queue_size, store.max_export_batch_size),
                    (16_384, 8_192)
                );
            }
        }
    }

    #[derive(Default)]
    struct Slow {
        seen: Arc<Mutex<Vec<u32>>>,
        delay: Duration,
        /// While set, exports fail transiently.
        down: Arc<AtomicBool>,
        /// Exports fail for good.
        refuse: bool,
        /// The first export panics.
        panic: Arc<AtomicBool>,
        attempts: Arc<AtomicUsize>,
    }

    impl Sink<u32> for Slow {
        fn export(&mut self, _: usize, batch: &[u32], _: Duration) -> Result<(), Failure> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            if self.panic.swap(false, Ordering::SeqCst) {
                panic!("the test's exporter panics");
            }
            if self.refuse || self.down.load(Ordering::SeqCst) {
                return Err(Failure {
                    transient: !self.refuse,
                    message: "down".into(),
                });
            }
            self.seen.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }
        fn shutdown(&mut self, _: Duration) {}
    }

    /// Test items hold a kilobyte each.
    impl Held for u32 {
        fn held_bytes(&self) -> usize {
            1024
        }
    }

    fn outcome() -> Outcome {
        outcome_with_budget(usize::MAX)
    }

    fn outcome_with_budget(bytes: usize) -> Outcome {
        Outcome {
            stats: Arc::default(),
            budget: Arc::new(SharedBudget::new(bytes)),
            exported: |s| &s.spans_exported,
            failed: |s| &s.spans_export_failed,
            dropped: |s| &s.spans_dropped_queue_full,
            dropped_budget: |s| &s.spans_dropped_export_budget,
            dropped_retry: |s| &s.spans_dropped_retry_buffer,
            retries: |s| &s.spans_export_retries,
        }
    }

    fn config(queue: usize, block_ms: u64) -> BatchConfig {
        BatchConfig {
            max_queue_size: queue,
            max_export_batch_size: 8.min(queue),
            scheduled_delay: Duration::from_secs(60),
            export_timeout: Duration::from_secs(5),
            max_block: Duration::from_millis(block_ms),
            retry_buffer: 1000,
            retry_initial: Duration::from_millis(10),
            retry_max: Duration::from_millis(50),
            exit_retry: Duration::from_millis(300),
        }
    }

    /// Queued, exporting and retry-buffered items hold their bytes until they
    /// leave; beyond the budget new items are dropped at once, counted.
    #[test]
    fn the_byte_budget_bounds_queue_and_retry_buffer() {
        let sink = Slow::default();
        let (seen, down) = (sink.seen.clone(), sink.down.clone());
        let out = outcome_with_budget(100 * 1024);
        let (stats, budget) = (out.stats.clone(), out.budget.clone());
        down.store(true, Ordering::SeqCst);
        let q = BatchQueue::new("test", &config(16, 2000), sink, out);
        let pushed = (0..300).filter(|&i| q.push(i)).count();
        assert!(q.flush(Duration::from_secs(5)));
        // Nothing exported while the sink is down: the budget admitted
        // exactly 100 items, the rest were dropped without waiting.
        assert_eq!(pushed, 100);
        assert_eq!(budget.used(), 100 * 1024);
        let s = stats.snapshot();
        assert_eq!(s.spans_dropped_export_budget, 200);
        assert_eq!(s.spans_dropped_queue_full, 0);
        down.store(false, Ordering::SeqCst);
        assert!(q.flush(Duration::from_secs(5)));
        assert_eq!(seen.lock().unwrap().len(), 100);
        assert_eq!(budget.used(), 0);
        // Room again.
        assert!(q.push(1));
        assert!(q.shutdown(Duration::from_secs(5)));
        assert_eq!(budget.used(), 0);
    }

    /// A queue into `sink` that took items 0 to 7 and was flushed, with its
    /// counters and byte budget.
    fn eight_flushed(sink: Slow) -> (BatchQueue<u32>, Arc<Stats>, Arc<SharedBudget>) {
        let out = outcome();
        let (stats, budget) = (out.stats.clone(), out.budget.clone());
        let q = BatchQueue::new("test", &config(16, 2000), sink, out);
        for i in 0..8 {
            assert!(q.push(i));
        }
        assert!(q.flush(Duration::from_secs(5)));
        (q, stats, budget)
    }

    /// A batch retried after an outage and then refused (here: the exporter
    /// panics on the retry) is counted failed, and the end of the outage
    /// does not claim it was delivered.
    #[test]
    fn a_retried_batch_then_refused_is_counted_failed_not_delivered() {
        let sink = Slow::default();
        let (down, panic) = (sink.down.clone(), sink.panic.clone());
        down.store(true, Ordering::SeqCst);
        let (q, stats, budget) = eight_flushed(sink);
        panic.store(true, Ordering::SeqCst);
        down.store(false, Ordering::SeqCst);
        assert!(q.shutdown(Duration::from_secs(5)));
        let s = stats.snapshot();
        assert_eq!((s.spans_export_failed, s.spans_exported), (8, 0));
        assert_eq!(budget.used(), 0);

        let mut e = Episode {
            started: Instant::now(),
            warned_drop: false,
            refused: 0,
        };
        assert!(
            e.ended("spans")
                .contains("the buffered items were delivered")
        );
        e.refused = 8;
        let said = e.ended("spans");
        assert!(
            said.contains("8 of the buffered items were refused") && !said.contains("delivered"),
            "{said}"
        );
    }

    /// An exporter's panic fails its batch for good (counted, its bytes
    /// given back); the worker lives on and exports the next batch.
    #[test]
    fn an_exporter_that_panics_loses_one_batch_counted() {
        let sink = Slow::default();
        let seen = sink.seen.clone();
        sink.panic.store(true, Ordering::SeqCst);
        let (q, stats, budget) = eight_flushed(sink);
        for i in 8..16 {
            assert!(q.push(i));
        }
        assert!(q.shutdown(Duration::from_secs(5)));
        assert_eq!(*seen.lock().unwrap(), (8..16).collect::<Vec<_>>());
        let s = stats.snapshot();
        assert_eq!((s.spans_export_failed, s.spans_exported), (8, 8));
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn an_outage_is_bridged_by_retries_in_order_and_without_loss() {
        let sink = Slow::default();
        let (seen, down) = (sink.seen.clone(), sink.down.clone());
        let out = outcome();
        let stats = out.stats.clone();
        down.store(true, Ordering::SeqCst);
        let q = BatchQueue::new("test", &config(16, 2000), sink, out);
        // 500 items pass a queue of 16 while the sink is down: the worker
        // keeps draining the queue into the retry buffer (had it stopped,
        // the producer would have waited 2 s and then shed, counted below).
        for i in 0..500 {
            assert!(q.push(i));
        }
        assert!(q.flush(Duration::from_secs(5)));
        assert!(seen.lock().unwrap().is_empty());
        down.store(false, Ordering::SeqCst);
        assert!(q.flush(Duration::from_secs(5)));
        assert_eq!(*seen.lock().unwrap(), (0..500).collect::<Vec<_>>());
        let s = stats.snapshot();
        assert_eq!(s.spans_exported, 500);
        assert!(s.spans_export_retries > 0);
        assert!(!s.has_losses(), "{s}");
        assert!(q.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn a_full_retry_buffer_drops_the_oldest_and_counts_them() {
        let sink = Slow::default();
        let (seen, down) = (sink.seen.clone(), sink.down.clone());
        let out = outcome();
        let (stats, budget) = (out.stats.clone(), out.budget.clone());
        down.store(true, Ordering::SeqCst);
        let mut cfg = config(16, 2000);
        cfg.retry_buffer = 100;
        let q = BatchQueue::new("test", &cfg, sink, out);
        for i in 0..1000 {
            assert!(q.push(i));
        }
        assert!(q.flush(Duration::from_secs(5)));
        down.store(false, Ordering::SeqCst);
        assert!(q.shutdown(Duration::from_secs(5)));
        let seen = seen.lock().unwrap().clone();
        let s = stats.snapshot();
        assert_eq!(s.spans_exported, seen.len() as u64);
        assert_eq!(s.spans_exported + s.spans_dropped_retry_buffer, 1000, "{s}");
        assert!(s.spans_dropped_retry_buffer >= 900, "{s}");
        // The newest survived.
        assert_eq!(seen.last(), Some(&999));
        // Dropped items gave their bytes back.
        assert_eq!(budget.used(), 0);
    }

    /// Another queue's drain exports what is queued, but does not retry
    /// early what waits for a retry: new batches queue behind it, in order.
    #[test]
    fn a_drain_keeps_the_retry_backoff() {
        let sink = Slow::default();
        let (seen, down, attempts) = (sink.seen.clone(), sink.down.clone(), sink.attempts.clone());
        let mut cfg = config(16, 2000);
        cfg.retry_initial = Duration::from_secs(60);
        cfg.retry_max = Duration::from_secs(60);
        let q = BatchQueue::new("test", &cfg, sink, outcome());
        let drainer = q.drainer();
        down.store(true, Ordering::SeqCst);
        assert!(q.push(1));
        assert!(drainer.drain(Duration::from_secs(5)));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert!(q.push(2));
        assert!(drainer.drain(Duration::from_secs(5)));
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            1,
            "retried before its time"
        );
        // A flush does retry, oldest first.
        down.store(false, Ordering::SeqCst);
        assert!(q.flush(Duration::from_secs(5)));
        assert_eq!(*seen.lock().unwrap(), [1, 2]);
        assert!(q.shutdown(Duration::from_secs(5)));
    }

    #[test]
    fn a_refusal_is_not_retried() {
        let sink = Slow {
            refuse: true,
            ..Slow::default()
        };
        let attempts = sink.attempts.clone();
        let out = outcome();
        let stats = out.stats.clone();
        let q = BatchQueue::new("test", &config(64, 0), sink, out);
        for i in 0..16 {
            q.push(i);
        }
        assert!(q.flush(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(100));
        assert!(q.shutdown(Duration::from_secs(5)));
        assert_eq!(attempts.load(Ordering::SeqCst), 2, "one attempt per batch");
        let s = stats.snapshot();
        assert_eq!(s.spans_export_failed, 16);
        assert_eq!(s.spans_export_retries, 0);
    }

    /// Giving up ends the exit retries at once (here they would last a
    /// minute): what waited is counted as failed, and the worker stops.
    #[test]
    fn giving_up_ends_the_exit_retries_and_counts_the_rest() {
        let sink = Slow::default();
        sink.down.store(true, Ordering::SeqCst);
        let out = outcome();
        let (stats, budget) = (out.stats.clone(), out.budget.clone());
        let q = BatchQueue::new(
            "test",
            &BatchConfig {
                exit_retry: Duration::from_secs(60),
                ..config(64, 0)
            },
            sink,
            out,
        );
        for i in 0..20 {
            q.push(i);
        }
        q.begin_shutdown();
        std::thread::sleep(Duration::from_millis(100));
        q.give_up_retries();
        assert!(q.shutdown(Duration::from_secs(10)), "stopped");
        let s = stats.snapshot();
        assert_eq!((s.spans_export_failed, s.spans_exported), (20, 0), "{s}");
        assert!(s.spans_export_retries > 0, "it was retrying: {s}");
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn shutdown_retries_for_a_bounded_time_then_counts_the_rest() {
        let sink = Slow::default();
        sink.down.store(true, Ordering::SeqCst);
        let out = outcome();
        let stats = out.stats.clone();
        let q = BatchQueue::new("test", &config(64, 0), sink, out);
        for i in 0..20 {
            q.push(i);
        }
        let start = Instant::now();
        assert!(q.shutdown(Duration::from_secs(10)));
        assert!(start.elapsed() >= Duration::from_millis(300));
        let s = stats.snapshot();
        assert_eq!(s.spans_export_failed, 20, "{s}");
        assert!(s.spans_export_retries > 0);
    }

    #[test]
    fn backpressure_delivers_a_burst_larger_than_the_queue() {
        let out = outcome();
        let stats = out.stats.clone();
        let sink = Slow {
            delay: Duration::from_micros(200),
            ..Slow::default()
        };
        let seen = sink.seen.clone();
        let q = BatchQueue::new("test", &config(16, 2000), sink, out);
        for i in 0..5000 {
            assert!(q.push(i));
        }
        assert!(q.shutdown(Duration::from_secs(10)));
        assert_eq!(seen.lock().unwrap().len(), 5000);
        assert_eq!(stats.snapshot().spans_exported, 5000);
        assert_eq!(q.dropped(), 0);
    }

    #[test]
    fn a_stuck_exporter_sheds_and_counts_after_one_bounded_wait() {
        let sink = Slow {
            delay: Duration::from_millis(300),
            ..Slow::default()
        };
        let seen = sink.seen.clone();
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
        assert_eq!(seen.lock().unwrap().len() as u64, accepted);
    }

    #[test]
    fn failed_exports_are_counted_and_flush_waits() {
        let out = outcome();
        let stats = out.stats.clone();
        let sink = Slow {
            refuse: true,
            ..Slow::default()
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

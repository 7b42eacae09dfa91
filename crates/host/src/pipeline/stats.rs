//! Counters of what the host dropped, cut or rejected, so that nothing is lost
//! silently.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! stats {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Live counters, shared by every store of one [`Telemetry`](crate::Telemetry).
        #[derive(Debug, Default)]
        pub(crate) struct Stats {
            $(pub(crate) $name: AtomicU64,)*
        }

        /// A copy of the counters at one moment.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Stats {
            pub(crate) fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Relaxed),)* }
            }
        }

        impl StatsSnapshot {
            fn fields(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$((stringify!($name), self.$name),)*].into_iter()
            }
        }
    };
}

stats! {
    /// Spans ended by guests and handed to the export pipeline.
    spans_ended,
    /// Spans delivered to every exporter.
    spans_exported,
    /// Spans dropped because the export queue stayed full (overload).
    spans_dropped_queue_full,
    /// Spans an exporter refused for good, or that were still waiting for a
    /// retry when shutdown gave up.
    spans_export_failed,
    /// Spans dropped (oldest first) because the retry buffer was full while
    /// exports kept failing.
    spans_dropped_retry_buffer,
    /// Export retries of span batches (not a loss).
    spans_export_retries,
    /// Spans not recorded because the store had too many open spans.
    spans_dropped_open_limit,
    /// Spans a guest exports itself (the pipe, `wasi:otel`) opened past the
    /// open-span limit: exported all the same, but not tracked as open, so
    /// host-made spans under them nest under the span outside, and none
    /// stands in for them if the store ends first.
    spans_untracked,
    /// Spans not recorded because their store's byte budget was full.
    spans_dropped_store_budget,
    /// Attributes, events, links, names and tags refused because their
    /// store's byte budget was full.
    values_dropped_store_budget,
    /// Spans dropped because telemetry waiting for export filled its byte
    /// budget.
    spans_dropped_export_budget,
    /// Span attributes dropped by the count limits (span, event and link attributes).
    attributes_dropped,
    /// Span events dropped by the count limit.
    events_dropped,
    /// Span links dropped by the count limit or for an invalid span context.
    links_dropped,
    /// Strings and arrays cut to the length limits.
    values_truncated,
    /// Guest values rejected as malformed (bad ids, trace-state, timestamps, keys).
    invalid_input,
    /// Log records handed to the export pipeline.
    logs_emitted,
    /// Log records delivered to every exporter.
    logs_exported,
    /// Log records dropped because the export queue stayed full.
    logs_dropped_queue_full,
    /// Log records an exporter refused for good, or that were still waiting
    /// for a retry when shutdown gave up.
    logs_export_failed,
    /// Log records dropped (oldest first) because the retry buffer was full.
    logs_dropped_retry_buffer,
    /// Log records dropped because telemetry waiting for export filled its
    /// byte budget.
    logs_dropped_export_budget,
    /// Export retries of log batches (not a loss).
    logs_export_retries,
    /// Measurements recorded.
    measurements,
    /// Measurements dropped (invalid value or name, instrument limit).
    measurements_dropped,
    /// `wasi:otel` metric exports (guest-aggregated) delivered to every
    /// aggregated-metric exporter.
    otel_metric_exports_delivered,
    /// `wasi:otel` metric exports lost: the queue or the export budget was
    /// full, an exporter refused them, or the retry buffer overflowed.
    otel_metric_exports_dropped,
    /// Export retries of `wasi:otel` metric exports (not a loss).
    otel_metric_export_retries,
    /// Measurements dropped because their instrument had as many series
    /// as it may keep, or all series together held their byte budget.
    measurements_dropped_series_limit,
    /// Pipe batches whose decoding stopped at a malformed record (the rest
    /// of the batch is lost).
    pipe_batches_malformed,
    /// Pipe batches dropped whole for exceeding the largest batch size.
    pipe_batches_rejected,
    /// Pipe batches (or store ends) whose decoding panicked: a bug in
    /// wasi-observe, contained so that it loses only the rest of that batch.
    pipe_decode_panics,
    /// Stores that ended while their guest held records (it had called
    /// `hold`, and no batch or `flush` call followed): the guest trapped or
    /// exited, or the embedder did not call [`crate::flush_guest`] after an
    /// invocation. What was held is lost.
    pipe_stores_ended_holding,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }
}

impl StatsSnapshot {
    /// Whole items lost, as `(signal, reason, count)`: what the host's
    /// `wasi_observe.dropped` self-metric reports.
    pub fn drops(&self) -> [(&'static str, &'static str, u64); 16] {
        [
            ("traces", "queue_full", self.spans_dropped_queue_full),
            (
                "traces",
                "retry_buffer_full",
                self.spans_dropped_retry_buffer,
            ),
            ("traces", "export_failed", self.spans_export_failed),
            ("traces", "open_span_limit", self.spans_dropped_open_limit),
            ("traces", "store_budget", self.spans_dropped_store_budget),
            ("traces", "export_budget", self.spans_dropped_export_budget),
            ("logs", "queue_full", self.logs_dropped_queue_full),
            ("logs", "retry_buffer_full", self.logs_dropped_retry_buffer),
            ("logs", "export_failed", self.logs_export_failed),
            ("logs", "export_budget", self.logs_dropped_export_budget),
            ("metrics", "rejected", self.measurements_dropped),
            (
                "metrics",
                "series_limit",
                self.measurements_dropped_series_limit,
            ),
            (
                "metrics",
                "guest_export_lost",
                self.otel_metric_exports_dropped,
            ),
            ("all", "pipe_batch_malformed", self.pipe_batches_malformed),
            ("all", "pipe_batch_too_large", self.pipe_batches_rejected),
            ("all", "pipe_decode_panic", self.pipe_decode_panics),
        ]
    }

    /// Whether any telemetry was dropped, cut or rejected.
    pub fn has_losses(&self) -> bool {
        self.losses().next().is_some()
    }

    /// The non-zero loss counters, by name.
    pub fn losses(&self) -> impl Iterator<Item = (&'static str, u64)> {
        self.fields().filter(|(name, n)| {
            *n > 0
                && !matches!(
                    *name,
                    "spans_ended"
                        | "spans_exported"
                        | "logs_emitted"
                        | "logs_exported"
                        | "measurements"
                        | "spans_export_retries"
                        | "logs_export_retries"
                        | "otel_metric_exports_delivered"
                        | "otel_metric_export_retries"
                )
        })
    }
}

impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, n) in self.fields().filter(|(_, n)| *n > 0) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{name}={n}")?;
        }
        if first {
            f.write_str("nothing recorded")?;
        }
        Ok(())
    }
}

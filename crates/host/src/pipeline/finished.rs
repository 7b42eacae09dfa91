//! The door for telemetry a guest's own SDK finished (`wasi:otel`): spans
//! whose ids and sampling the guest decided, log records in the guest's
//! scope, and metrics the guest aggregated. The producer
//! ([`crate::interfaces::otel`]) has bounded them by the limits; here they
//! join the same queues, budgets and counters as everything else.

use opentelemetry::InstrumentationScope;
use opentelemetry::logs::LoggerProvider as _;
use opentelemetry_sdk::logs::SdkLogger;
use opentelemetry_sdk::trace::SpanData;

use super::Telemetry;
use super::stats::Stats;
use crate::export::aggregated::GuestMetrics;

impl Telemetry {
    /// Hands a span the guest ended to the span queue, counted as ended;
    /// `held` is its [`held_bytes`](super::budget::Held::held_bytes) where
    /// the caller counted them.
    pub(crate) fn export_finished_span(&self, data: SpanData, held: Option<usize>) {
        let p = &self.inner;
        if let Some(queue) = &p.spans {
            Stats::add(&p.stats.spans_ended, 1);
            match held {
                Some(bytes) => queue.push_held(data, bytes),
                None => queue.push(data),
            };
        }
    }

    /// A logger of the guest's scope (the host's when it names none);
    /// `None` when logs go nowhere. Records it emits are counted with
    /// [`log_emitted`](Self::log_emitted).
    pub(crate) fn logger_for(&self, scope: Option<InstrumentationScope>) -> Option<SdkLogger> {
        let p = &self.inner;
        p.logger.as_ref()?;
        match (scope, &p.logger_provider) {
            (Some(scope), Some(provider)) => Some(provider.logger_with_scope(scope)),
            _ => p.logger.as_ref().map(|(logger, _)| logger.clone()),
        }
    }

    /// Counts a log record emitted through [`logger_for`](Self::logger_for).
    pub(crate) fn log_emitted(&self) {
        Stats::add(&self.inner.stats.logs_emitted, 1);
    }

    /// Whether metrics are exported at all (by the SDK's exporters or the
    /// aggregated-metric ones).
    pub(crate) fn exports_any_metrics(&self) -> bool {
        let p = &self.inner;
        p.enabled && (p.meter.is_some() || p.guest_metrics.is_some())
    }

    /// Whether guest-aggregated metrics go anywhere.
    pub(crate) fn exports_guest_metrics(&self) -> bool {
        self.inner.enabled && self.inner.guest_metrics.is_some()
    }

    /// Queues guest-aggregated metrics for the export thread; never waits.
    /// False if nothing takes them or the queue is full (counted there).
    pub(crate) fn export_guest_metrics(&self, metrics: GuestMetrics) -> bool {
        match &self.inner.guest_metrics {
            Some(queue) => queue.push(metrics),
            None => false,
        }
    }
}

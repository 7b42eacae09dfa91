//! Byte budgets: what the host holds on guests' behalf, bounded in total
//! rather than item by item.
//!
//! Every count and length limit bounds one item, and their product is
//! unbounded (10 000 open spans x 128 attributes x 64 KiB). So each store
//! has a budget for what it keeps between calls ([`Limits::store_bytes`]:
//! open spans with their attributes, events and links, function frames with
//! their names and tags, shared attribute sets), and the process has one for
//! what waits to be exported ([`Limits::export_bytes`]: both queues, the
//! batches being exported and the retry buffers). Sizes are counted as the
//! host holds the data: strings by their bytes, arrays by their elements
//! (an empty string element still costs its handle), plus the fixed size of
//! each item. What does not fit is refused, counted, and warned about once.
//!
//! [`Limits::store_bytes`]: super::Limits::store_bytes
//! [`Limits::export_bytes`]: super::Limits::export_bytes

use std::mem::size_of;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use opentelemetry::logs::AnyValue;
use opentelemetry::trace::{Event, Link, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::logs::SdkLogRecord;
use opentelemetry_sdk::trace::SpanData;

/// The bytes a value holds beyond its own fixed size.
pub(crate) fn value_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.as_str().len(),
        Value::Array(Array::String(a)) => a
            .iter()
            .map(|s| size_of::<StringValue>() + s.as_str().len())
            .sum(),
        Value::Array(Array::Bool(a)) => a.len(),
        Value::Array(Array::I64(a)) => a.len() * 8,
        Value::Array(Array::F64(a)) => a.len() * 8,
        _ => 0,
    }
}

/// The bytes one attribute holds.
pub(crate) fn kv_bytes(kv: &KeyValue) -> usize {
    size_of::<KeyValue>() + kv.key.as_str().len() + value_bytes(&kv.value)
}

/// The bytes a list of attributes holds.
pub(crate) fn attrs_bytes(attrs: &[KeyValue]) -> usize {
    attrs.iter().map(kv_bytes).sum()
}

pub(crate) fn event_bytes(e: &Event) -> usize {
    size_of::<Event>() + e.name.len() + attrs_bytes(&e.attributes)
}

pub(crate) fn link_bytes(l: &Link) -> usize {
    size_of::<Link>() + l.span_context.trace_state().header().len() + attrs_bytes(&l.attributes)
}

pub(crate) fn status_bytes(s: &Status) -> usize {
    match s {
        Status::Error { description } => description.len(),
        _ => 0,
    }
}

/// Something that waits in an export queue, and the bytes it holds there.
pub(crate) trait Held {
    fn held_bytes(&self) -> usize;
}

impl Held for SpanData {
    fn held_bytes(&self) -> usize {
        size_of::<SpanData>()
            + self.name.len()
            + attrs_bytes(&self.attributes)
            + self.events.iter().map(event_bytes).sum::<usize>()
            + self.links.iter().map(link_bytes).sum::<usize>()
            + status_bytes(&self.status)
            + self.span_context.trace_state().header().len()
    }
}

fn any_value_bytes(v: &AnyValue) -> usize {
    match v {
        AnyValue::String(s) => s.as_str().len(),
        AnyValue::Bytes(b) => b.len(),
        AnyValue::ListAny(l) => l
            .iter()
            .map(|v| size_of::<AnyValue>() + any_value_bytes(v))
            .sum(),
        AnyValue::Map(m) => m
            .iter()
            .map(|(k, v)| size_of::<AnyValue>() + k.as_str().len() + any_value_bytes(v))
            .sum(),
        _ => 0,
    }
}

impl Held for Box<(SdkLogRecord, InstrumentationScope)> {
    fn held_bytes(&self) -> usize {
        let (record, scope) = &**self;
        size_of::<(SdkLogRecord, InstrumentationScope)>()
            + record.body().map_or(0, any_value_bytes)
            + record.target().map_or(0, |t| t.len())
            + record
                .attributes_iter()
                .map(|(k, v)| size_of::<AnyValue>() + k.as_str().len() + any_value_bytes(v))
                .sum::<usize>()
            + scope.name().len()
    }
}

/// A byte budget shared by threads: the export side's, the metric series'.
#[derive(Debug)]
pub(crate) struct SharedBudget {
    used: AtomicUsize,
    max: usize,
    warned: AtomicBool,
    /// What it bounds and the variable that sets it, for the warning.
    what: &'static str,
    variable: &'static str,
}

impl SharedBudget {
    /// The export side's budget.
    pub(crate) fn new(max: usize) -> Self {
        Self::named(
            max,
            "telemetry waiting for export",
            "WASI_OBSERVE_MAX_EXPORT_BYTES",
        )
    }

    pub(crate) fn named(max: usize, what: &'static str, variable: &'static str) -> Self {
        SharedBudget {
            used: AtomicUsize::new(0),
            max,
            warned: AtomicBool::new(false),
            what,
            variable,
        }
    }

    /// Takes `n` bytes if they fit; false (and one warning per process)
    /// if they do not.
    pub(crate) fn take(&self, n: usize) -> bool {
        let fits = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.max)
            })
            .is_ok();
        if !fits && !self.warned.swap(true, Ordering::Relaxed) {
            eprintln!(
                "wasi-observe: {} reached its budget of {} bytes ({}); dropping what does \
                 not fit (counted, reported at exit)",
                self.what, self.max, self.variable
            );
        }
        fits
    }

    /// Gives back `n` bytes taken earlier.
    pub(crate) fn give(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One store's budget: used on the store's thread only.
#[derive(Debug, Default)]
pub(crate) struct StoreBudget {
    pub used: usize,
    warned: bool,
}

impl StoreBudget {
    /// Whether `n` more bytes fit under `max`; the first refusal warns.
    pub(crate) fn fits(&mut self, n: usize, max: usize) -> bool {
        let fits = self.used.checked_add(n).is_some_and(|total| total <= max);
        if !fits && !self.warned {
            self.warned = true;
            eprintln!(
                "wasi-observe: a guest's telemetry reached its store's budget of {max} bytes \
                 (WASI_OBSERVE_MAX_STORE_BYTES); refusing what does not fit (counted, \
                 reported at exit)"
            );
        }
        fits
    }

    pub(crate) fn add(&mut self, n: usize) {
        self.used = self.used.saturating_add(n);
    }

    pub(crate) fn sub(&mut self, n: usize) {
        self.used = self.used.saturating_sub(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_count_their_elements() {
        let empty = KeyValue::new(
            "k",
            Value::Array(Array::String(vec![StringValue::from(""); 1024])),
        );
        // An array of empty strings still holds 1024 string handles.
        assert!(kv_bytes(&empty) >= 1024 * size_of::<StringValue>());
        let s = KeyValue::new("key", "x".repeat(1000));
        assert_eq!(kv_bytes(&s), size_of::<KeyValue>() + 3 + 1000);
    }

    #[test]
    fn a_shared_budget_refuses_what_does_not_fit() {
        let b = SharedBudget::new(100);
        assert!(b.take(60));
        assert!(!b.take(41));
        assert!(b.take(40));
        assert_eq!(b.used(), 100);
        b.give(100);
        assert_eq!(b.used(), 0);
        assert!(!b.take(usize::MAX));
    }
}

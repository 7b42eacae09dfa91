//! Between the OpenTelemetry types the SDK works with and the borrowed WIT
//! types the host calls take.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry::{Array, KeyValue, Value};

use crate::bindings::sdk::{ContextParam, ContextResult};
use crate::bindings::tracer;

/// Calls `f` with `attrs` as WIT attributes that borrow from them. Values of
/// kinds newer than the WIT's are left out.
pub(crate) fn with_wit_attributes<R>(
    attrs: &[KeyValue],
    f: impl FnOnce(&[tracer::KeyValue<'_>]) -> R,
) -> R {
    if attrs.is_empty() {
        return f(&[]);
    }
    // The usual few attributes without string arrays are built on the stack:
    // an allocation costs more than the rest of the conversion.
    const INLINE: usize = 8;
    if attrs.len() <= INLINE
        && !attrs
            .iter()
            .any(|kv| matches!(kv.value, Value::Array(Array::String(_))))
    {
        let mut inline: [tracer::KeyValue<'_>; INLINE] =
            std::array::from_fn(|_| tracer::KeyValue {
                key: "",
                value: tracer::Value::Bool(false),
            });
        let mut n = 0;
        for (kv, slot) in attrs
            .iter()
            .filter_map(|kv| Some((kv, scalar_value(&kv.value)?)))
            .zip(inline.iter_mut())
        {
            *slot = tracer::KeyValue {
                key: kv.0.key.as_str(),
                value: kv.1,
            };
            n += 1;
        }
        return f(&inline[..n]);
    }
    // A string array crosses as `&[&str]`, which has to be made first.
    let string_arrays: Vec<Vec<&str>> = attrs
        .iter()
        .filter_map(|kv| match &kv.value {
            Value::Array(Array::String(a)) => Some(a.iter().map(|s| s.as_str()).collect()),
            _ => None,
        })
        .collect();
    let mut string_arrays = string_arrays.iter();
    let wit: Vec<tracer::KeyValue<'_>> = attrs
        .iter()
        .filter_map(|kv| {
            let value = match &kv.value {
                Value::Array(Array::String(_)) => tracer::Value::StringArray(string_arrays.next()?),
                other => scalar_value(other)?,
            };
            Some(tracer::KeyValue {
                key: kv.key.as_str(),
                value,
            })
        })
        .collect();
    f(&wit)
}

/// A value of a kind that crosses without conversion (all but string arrays
/// and kinds newer than the WIT's).
fn scalar_value(value: &Value) -> Option<tracer::Value<'_>> {
    Some(match value {
        Value::Bool(b) => tracer::Value::Bool(*b),
        Value::I64(i) => tracer::Value::S64(*i),
        Value::F64(f) => tracer::Value::Float64(*f),
        Value::String(s) => tracer::Value::String(s.as_str()),
        Value::Array(Array::Bool(a)) => tracer::Value::BoolArray(a),
        Value::Array(Array::I64(a)) => tracer::Value::S64Array(a),
        Value::Array(Array::F64(a)) => tracer::Value::Float64Array(a),
        _ => return None,
    })
}

/// The entries of a trace-state, for a call that takes them as pairs.
fn trace_state_pairs(state: &TraceState) -> Vec<(String, String)> {
    state
        .header()
        .split(',')
        .filter_map(|entry| {
            let (k, v) = entry.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Calls `f` with `cx` as the host's by-value context.
pub(crate) fn with_wit_context<R>(cx: &SpanContext, f: impl FnOnce(ContextParam<'_>) -> R) -> R {
    let trace_id = u128::from_be_bytes(cx.trace_id().to_bytes());
    let mut flags = tracer::TraceFlags::empty();
    if cx.is_sampled() {
        flags |= tracer::TraceFlags::SAMPLED;
    }
    let pairs = if *cx.trace_state() == TraceState::NONE {
        Vec::new()
    } else {
        trace_state_pairs(cx.trace_state())
    };
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&**k, &**v)).collect();
    f(ContextParam {
        trace_id_high: (trace_id >> 64) as u64,
        trace_id_low: trace_id as u64,
        span_id: u64::from_be_bytes(cx.span_id().to_bytes()),
        trace_flags: flags,
        is_remote: cx.is_remote(),
        trace_state: &refs,
    })
}

/// A context the host returned, as OpenTelemetry's type.
pub(crate) fn span_context(cx: ContextResult) -> SpanContext {
    let trace_id = (u128::from(cx.trace_id_high) << 64) | u128::from(cx.trace_id_low);
    let flags = if cx.trace_flags.contains(tracer::TraceFlags::SAMPLED) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::NOT_SAMPLED
    };
    let state = if cx.trace_state.is_empty() {
        TraceState::NONE
    } else {
        TraceState::from_key_value(cx.trace_state).unwrap_or_default()
    };
    SpanContext::new(
        TraceId::from_bytes(trace_id.to_be_bytes()),
        SpanId::from_bytes(cx.span_id.to_be_bytes()),
        flags,
        cx.is_remote,
        state,
    )
}

/// The context of a span `start-span` returned.
pub(crate) fn started_context(started: &crate::bindings::sdk::Started) -> SpanContext {
    let trace_id = (u128::from(started.trace_id_high) << 64) | u128::from(started.trace_id_low);
    let flags = if started.trace_flags.contains(tracer::TraceFlags::SAMPLED) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::NOT_SAMPLED
    };
    let state = match &started.trace_state {
        Some(entries) if !entries.is_empty() => {
            TraceState::from_key_value(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .unwrap_or_default()
        }
        _ => TraceState::NONE,
    };
    SpanContext::new(
        TraceId::from_bytes(trace_id.to_be_bytes()),
        SpanId::from_bytes(started.span_id.to_be_bytes()),
        flags,
        false,
        state,
    )
}

/// A span context as the proposal's `tracer` takes it (links).
pub(crate) fn with_wit_span_context<R>(
    cx: &SpanContext,
    f: impl FnOnce(tracer::SpanContextParam<'_>) -> R,
) -> R {
    let trace_id = format!("{:032x}", cx.trace_id());
    let span_id = format!("{:016x}", cx.span_id());
    let pairs = trace_state_pairs(cx.trace_state());
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&**k, &**v)).collect();
    let mut flags = tracer::TraceFlags::empty();
    if cx.is_sampled() {
        flags |= tracer::TraceFlags::SAMPLED;
    }
    f(tracer::SpanContextParam {
        trace_id: &trace_id,
        span_id: &span_id,
        trace_flags: flags,
        is_remote: cx.is_remote(),
        trace_state: &refs,
    })
}

/// The OpenTelemetry status as the host takes it.
pub(crate) fn wit_status(status: &opentelemetry::trace::Status) -> tracer::Status<'_> {
    match status {
        opentelemetry::trace::Status::Unset => tracer::Status::Unset,
        opentelemetry::trace::Status::Ok => tracer::Status::Ok,
        opentelemetry::trace::Status::Error { description } => tracer::Status::Error(description),
    }
}

/// Applies OpenTelemetry's status rules to a status the guest keeps back:
/// setting `Unset` is ignored, and `Ok` is final.
pub(crate) fn merge_status(
    held: &mut Option<opentelemetry::trace::Status>,
    new: opentelemetry::trace::Status,
) {
    use opentelemetry::trace::Status;
    if new == Status::Unset || matches!(held, Some(Status::Ok)) {
        return;
    }
    *held = Some(new);
}

/// A `SystemTime` as WASI's datetime.
pub(crate) fn datetime(t: std::time::SystemTime) -> crate::bindings::Datetime {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    crate::bindings::Datetime {
        seconds: d.as_secs(),
        nanoseconds: d.subsec_nanos(),
    }
}

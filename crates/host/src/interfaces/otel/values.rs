//! `wasi:otel` attribute values: `AnyValue`s encoded as JSON text (WIT has no
//! recursive types), byte arrays as `data:application/octet-stream;base64,...`
//! strings.
//!
//! Decoding, in the three shapes the pipeline holds:
//! - span attributes ([`attribute`]): OpenTelemetry's `Value` has strings,
//!   bools, i64, f64 and homogeneous arrays of those. Integers that do not fit
//!   an i64 become f64; an array of integers and floats becomes an f64
//!   array; what `Value` cannot hold (maps, nested or mixed arrays) is kept
//!   as its JSON text, and a byte array as its data URI, so nothing is lost;
//! - log bodies and attributes ([`any_value`]): everything, bytes and maps
//!   included, as `AnyValue`;
//! - metric attributes and resources ([`proto_any_value`]): OTLP's
//!   `AnyValue`, everything.
//!
//! Strings are cut to the value length limit and arrays to the array length
//! limit (counted in `values_truncated`); text that is not JSON, JSON
//! `null`, empty keys and values nested deeper than [`MAX_DEPTH`] are
//! rejected (counted in `invalid_input`): never a trap.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use opentelemetry::logs::AnyValue;
use opentelemetry::{Array, Key, KeyValue, StringValue, Value};
use opentelemetry_proto::tonic::common::v1 as proto;
use serde_json::Value as Json;

use super::bindings::types;
use crate::pipeline::limits::Checker;
use crate::pipeline::stats::Stats;

/// The prefix of a byte array value (RFC 2397 data URI).
pub(crate) const BYTES_PREFIX: &str = "data:application/octet-stream;base64,";

/// Deepest nesting of arrays and maps kept; deeper values are rejected.
pub(crate) const MAX_DEPTH: usize = 16;

/// Largest JSON text parsed for one value: room for an array of the longest
/// strings would be gigabytes, so the raw text gets its own bound.
fn max_json_bytes(check: &Checker<'_>) -> usize {
    check.limits.value_length.saturating_mul(4).max(64 * 1024)
}

fn invalid(check: &Checker<'_>) {
    Stats::add(&check.stats.invalid_input, 1);
}

fn truncated(check: &Checker<'_>) {
    Stats::add(&check.stats.values_truncated, 1);
}

/// Parses a value's JSON text; `None` (counted) when it is too long, is not
/// JSON, or is `null`.
pub(crate) fn parse(check: &Checker<'_>, raw: &str) -> Option<Json> {
    if raw.len() > max_json_bytes(check) {
        invalid(check);
        return None;
    }
    match serde_json::from_str::<Json>(raw) {
        Ok(Json::Null) | Err(_) => {
            invalid(check);
            None
        }
        Ok(v) => Some(v),
    }
}

/// Decodes a data URI byte array; `None` if `s` is not one.
pub(crate) fn bytes(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let b64 = s.strip_prefix(BYTES_PREFIX)?;
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

fn cut_array<T>(check: &Checker<'_>, mut items: Vec<T>) -> Vec<T> {
    if items.len() > check.limits.array_length {
        items.truncate(check.limits.array_length);
        truncated(check);
    }
    items
}

/// A span attribute value (see the module docs).
pub(crate) fn attribute(check: &Checker<'_>, json: Json) -> Option<Value> {
    Some(match json {
        Json::Null => {
            invalid(check);
            return None;
        }
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::I64(i),
            None => Value::F64(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(check.string(s).into()),
        Json::Array(items) => array(check, items)?,
        map @ Json::Object(_) => text(check, &map),
    })
}

/// The JSON text of a value `Value` cannot hold, cut to the length limit.
fn text(check: &Checker<'_>, json: &Json) -> Value {
    Value::String(check.string(json.to_string()).into())
}

fn array(check: &Checker<'_>, items: Vec<Json>) -> Option<Value> {
    let items = cut_array(check, items);
    if items.iter().all(Json::is_string) {
        let strings = items
            .into_iter()
            .filter_map(|v| match v {
                Json::String(s) => Some(StringValue::from(check.string(s))),
                _ => None,
            })
            .collect();
        return Some(Value::Array(Array::String(strings)));
    }
    if items.iter().all(Json::is_boolean) {
        return Some(Value::Array(Array::Bool(
            items.iter().filter_map(Json::as_bool).collect(),
        )));
    }
    if items.iter().all(Json::is_i64) {
        return Some(Value::Array(Array::I64(
            items.iter().filter_map(Json::as_i64).collect(),
        )));
    }
    if items.iter().all(Json::is_number) {
        return Some(Value::Array(Array::F64(
            items.iter().filter_map(Json::as_f64).collect(),
        )));
    }
    // Mixed or nested: `Value` has no such array; keep the text.
    Some(text(check, &Json::Array(items)))
}

/// A log body or log attribute value (see the module docs).
pub(crate) fn any_value(check: &Checker<'_>, json: Json, depth: usize) -> Option<AnyValue> {
    if depth > MAX_DEPTH {
        invalid(check);
        return None;
    }
    Some(match json {
        Json::Null => {
            invalid(check);
            return None;
        }
        Json::Bool(b) => AnyValue::Boolean(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => AnyValue::Int(i),
            None => AnyValue::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => match bytes(&s) {
            Some(b) => AnyValue::Bytes(Box::new(cut_bytes(check, b))),
            None => AnyValue::String(check.string(s).into()),
        },
        Json::Array(items) => AnyValue::ListAny(Box::new(
            cut_array(check, items)
                .into_iter()
                .filter_map(|v| any_value(check, v, depth + 1))
                .collect(),
        )),
        Json::Object(map) => {
            let mut out = HashMap::new();
            for (k, v) in map.into_iter().take(check.limits.array_length) {
                if let Some(v) = any_value(check, v, depth + 1) {
                    out.insert(Key::from(check.string(k)), v);
                }
            }
            AnyValue::Map(Box::new(out))
        }
    })
}

fn cut_bytes(check: &Checker<'_>, mut b: Vec<u8>) -> Vec<u8> {
    if b.len() > check.limits.value_length {
        b.truncate(check.limits.value_length);
        truncated(check);
    }
    b
}

/// An OTLP attribute value, for metrics (see the module docs).
pub(crate) fn proto_any_value(
    check: &Checker<'_>,
    json: Json,
    depth: usize,
) -> Option<proto::AnyValue> {
    use proto::any_value::Value as V;
    if depth > MAX_DEPTH {
        invalid(check);
        return None;
    }
    let value = match json {
        Json::Null => {
            invalid(check);
            return None;
        }
        Json::Bool(b) => V::BoolValue(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => V::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => match bytes(&s) {
            Some(b) => V::BytesValue(cut_bytes(check, b)),
            None => V::StringValue(check.string(s)),
        },
        Json::Array(items) => V::ArrayValue(proto::ArrayValue {
            values: cut_array(check, items)
                .into_iter()
                .filter_map(|v| proto_any_value(check, v, depth + 1))
                .collect(),
        }),
        Json::Object(map) => V::KvlistValue(proto::KeyValueList {
            values: map
                .into_iter()
                .take(check.limits.array_length)
                .filter_map(|(k, v)| {
                    Some(proto::KeyValue {
                        key: check.string(k),
                        value: Some(proto_any_value(check, v, depth + 1)?),
                        ..Default::default()
                    })
                })
                .collect(),
        }),
    };
    Some(proto::AnyValue { value: Some(value) })
}

/// A guest key, or `None` (counted) when empty, as OpenTelemetry requires.
fn key(check: &Checker<'_>, key: String) -> Option<String> {
    if key.is_empty() {
        invalid(check);
        return None;
    }
    Some(check.string(key))
}

/// Span-side attributes: at most `max` (the rest counted and returned as
/// dropped); a repeated key keeps its last value, in its first place.
pub(crate) fn attributes(
    check: &Checker<'_>,
    kvs: Vec<types::KeyValue>,
    max: usize,
) -> (Vec<KeyValue>, u32) {
    let mut out: Vec<KeyValue> = Vec::with_capacity(kvs.len().min(max));
    let mut dropped = 0u32;
    for kv in kvs {
        let Some(k) = key(check, kv.key) else {
            continue;
        };
        let Some(v) = parse(check, &kv.value).and_then(|j| attribute(check, j)) else {
            continue;
        };
        let k = Key::from(k);
        if let Some(slot) = out.iter_mut().find(|a| a.key == k) {
            slot.value = v;
        } else if out.len() < max {
            out.push(KeyValue::new(k, v));
        } else {
            dropped = dropped.saturating_add(1);
        }
    }
    Stats::add(&check.stats.attributes_dropped, dropped.into());
    (out, dropped)
}

/// Log attributes, as `AnyValue`s, at most `max`.
pub(crate) fn log_attributes(
    check: &Checker<'_>,
    kvs: Vec<types::KeyValue>,
    max: usize,
) -> Vec<(Key, AnyValue)> {
    let mut out: Vec<(Key, AnyValue)> = Vec::with_capacity(kvs.len().min(max));
    let mut dropped = 0u64;
    for kv in kvs {
        let Some(k) = key(check, kv.key) else {
            continue;
        };
        let Some(v) = parse(check, &kv.value).and_then(|j| any_value(check, j, 0)) else {
            continue;
        };
        let k = Key::from(k);
        if let Some(slot) = out.iter_mut().find(|(old, _)| *old == k) {
            slot.1 = v;
        } else if out.len() < max {
            out.push((k, v));
        } else {
            dropped += 1;
        }
    }
    Stats::add(&check.stats.attributes_dropped, dropped);
    out
}

/// OTLP attributes (metrics, resources, scopes), at most `max`.
pub(crate) fn proto_attributes(
    check: &Checker<'_>,
    kvs: Vec<types::KeyValue>,
    max: usize,
) -> Vec<proto::KeyValue> {
    let mut out: Vec<proto::KeyValue> = Vec::with_capacity(kvs.len().min(max));
    let mut dropped = 0u64;
    for kv in kvs {
        let Some(k) = key(check, kv.key) else {
            continue;
        };
        let Some(v) = parse(check, &kv.value).and_then(|j| proto_any_value(check, j, 0)) else {
            continue;
        };
        if let Some(slot) = out.iter_mut().find(|old| old.key == k) {
            slot.value = Some(v);
        } else if out.len() < max {
            out.push(proto::KeyValue {
                key: k,
                value: Some(v),
                ..Default::default()
            });
        } else {
            dropped += 1;
        }
    }
    Stats::add(&check.stats.attributes_dropped, dropped);
    out
}

/// Distinct texts kept for `&'static str` fields of the SDK's log record
/// (severity text, event name), process-wide.
const MAX_INTERNED: usize = 256;
/// Longest text interned.
const MAX_INTERNED_LEN: usize = 128;

/// `s` as a `&'static str`, for the SDK log record's severity text and event
/// name, which take nothing else. Each distinct text is leaked once; at most
/// [`MAX_INTERNED`] of at most [`MAX_INTERNED_LEN`] bytes, so a guest cannot
/// grow host memory: beyond that `None` (counted).
pub(crate) fn intern(check: &Checker<'_>, s: &str) -> Option<&'static str> {
    static TEXTS: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut texts = TEXTS.lock().unwrap_or_else(|e| e.into_inner());
    let texts = texts.get_or_insert_with(HashSet::new);
    if let Some(&t) = texts.get(s) {
        return Some(t);
    }
    if s.len() > MAX_INTERNED_LEN || texts.len() >= MAX_INTERNED {
        invalid(check);
        return None;
    }
    let t: &'static str = Box::leak(s.to_owned().into_boxed_str());
    texts.insert(t);
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Limits;

    fn with_checker(limits: Limits, f: impl FnOnce(&Checker<'_>)) -> crate::StatsSnapshot {
        let stats = Stats::default();
        f(&Checker {
            limits: &limits,
            stats: &stats,
        });
        stats.snapshot()
    }

    fn kv(k: &str, v: &str) -> types::KeyValue {
        types::KeyValue {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn span_attributes_decode_to_typed_values() {
        let stats = with_checker(Limits::default(), |c| {
            let (attrs, dropped) = attributes(
                c,
                vec![
                    kv("s", r#""text""#),
                    kv("i", "-42"),
                    kv("f", "1.5"),
                    kv("b", "true"),
                    kv("big", "18446744073709551615"),
                    kv("sa", r#"["a","b"]"#),
                    kv("ia", "[1,2,3]"),
                    kv("fa", "[1,2.5]"),
                    kv("ba", "[true,false]"),
                    kv("map", r#"{"k":1}"#),
                    kv("mixed", r#"[1,"a"]"#),
                    kv("bytes", r#""data:application/octet-stream;base64,AAEC""#),
                ],
                128,
            );
            assert_eq!(dropped, 0);
            let get = |k: &str| {
                attrs
                    .iter()
                    .find(|a| a.key.as_str() == k)
                    .map(|a| a.value.clone())
                    .unwrap()
            };
            assert_eq!(get("s"), Value::from("text"));
            assert_eq!(get("i"), Value::I64(-42));
            assert_eq!(get("f"), Value::F64(1.5));
            assert_eq!(get("b"), Value::Bool(true));
            assert_eq!(get("big"), Value::F64(18446744073709551615.0));
            assert_eq!(
                get("sa"),
                Value::Array(Array::String(vec!["a".into(), "b".into()]))
            );
            assert_eq!(get("ia"), Value::Array(Array::I64(vec![1, 2, 3])));
            assert_eq!(get("fa"), Value::Array(Array::F64(vec![1.0, 2.5])));
            assert_eq!(get("ba"), Value::Array(Array::Bool(vec![true, false])));
            assert_eq!(get("map"), Value::from(r#"{"k":1}"#));
            assert_eq!(get("mixed"), Value::from(r#"[1,"a"]"#));
            assert_eq!(
                get("bytes"),
                Value::from("data:application/octet-stream;base64,AAEC")
            );
        });
        assert_eq!(stats.invalid_input, 0);
    }

    #[test]
    fn malformed_values_are_dropped_and_counted_never_a_panic() {
        let stats = with_checker(Limits::default(), |c| {
            let (attrs, _) = attributes(
                c,
                vec![
                    kv("not-json", "text without quotes"),
                    kv("null", "null"),
                    kv("", r#""empty key""#),
                    kv("truncated", r#"{"a":"#),
                    kv("ok", "1"),
                ],
                128,
            );
            assert_eq!(attrs.len(), 1);
        });
        assert_eq!(stats.invalid_input, 4);
    }

    #[test]
    fn limits_cut_strings_arrays_counts_and_huge_text() {
        let limits = Limits {
            value_length: 4,
            array_length: 2,
            ..Limits::default()
        };
        let stats = with_checker(limits, |c| {
            let (attrs, dropped) = attributes(
                c,
                vec![
                    kv("s", r#""abcdefgh""#),
                    kv("a", "[1,2,3,4]"),
                    kv("x", "1"),
                    kv("huge", &format!("\"{}\"", "x".repeat(100_000))),
                ],
                2,
            );
            assert_eq!(attrs[0].value, Value::from("abcd"));
            assert_eq!(attrs[1].value, Value::Array(Array::I64(vec![1, 2])));
            assert_eq!(dropped, 1);
        });
        assert_eq!(stats.values_truncated, 2);
        assert_eq!(stats.attributes_dropped, 1);
        assert_eq!(stats.invalid_input, 1, "the huge text is refused unparsed");
    }

    #[test]
    fn log_values_keep_bytes_and_maps() {
        with_checker(Limits::default(), |c| {
            let v = parse(
                c,
                r#"{"m":{"b":"data:application/octet-stream;base64,AAEC"},"l":[1,"a"]}"#,
            )
            .and_then(|j| any_value(c, j, 0))
            .unwrap();
            let AnyValue::Map(map) = v else {
                panic!("{v:?}")
            };
            let AnyValue::Map(inner) = &map[&Key::from("m")] else {
                panic!()
            };
            assert_eq!(
                inner[&Key::from("b")],
                AnyValue::Bytes(Box::new(vec![0, 1, 2]))
            );
            assert_eq!(
                map[&Key::from("l")],
                AnyValue::ListAny(Box::new(vec![AnyValue::Int(1), AnyValue::from("a")]))
            );
            // Not base64 after the prefix: kept as text.
            assert_eq!(
                any_value(c, Json::String(format!("{BYTES_PREFIX}!!")), 0),
                Some(AnyValue::from(format!("{BYTES_PREFIX}!!")))
            );
        });
    }

    #[test]
    fn deep_nesting_is_refused() {
        let stats = with_checker(Limits::default(), |c| {
            let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
            let v = parse(c, &deep).unwrap();
            let AnyValue::ListAny(_) = any_value(c, v.clone(), 0).unwrap() else {
                panic!()
            };
            assert!(proto_any_value(c, v, 0).is_some());
        });
        assert_eq!(stats.invalid_input, 2);
    }

    #[test]
    fn interned_texts_are_bounded() {
        with_checker(Limits::default(), |c| {
            let a = intern(c, "INFO").unwrap();
            assert!(std::ptr::eq(a, intern(c, "INFO").unwrap()));
            assert!(intern(c, &"x".repeat(MAX_INTERNED_LEN + 1)).is_none());
        });
    }
}

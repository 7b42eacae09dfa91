//! `wasi:otel/metrics`: metrics a guest's SDK already aggregated, passed on
//! losslessly.
//!
//! # Why not through the SDK's meters
//!
//! The pipeline's metric exporters are OpenTelemetry `PushMetricExporter`s,
//! which take `opentelemetry_sdk::metrics::data::ResourceMetrics`. In
//! opentelemetry_sdk 0.33 that type and everything in it (sums, histogram
//! points, exemplars) have crate-private fields and no constructor: only the
//! SDK's own aggregation can fill one. Replaying the guest's numbers into
//! host instruments would re-aggregate them: a histogram would lose its
//! buckets, sum, min and max, exemplars and start times would be lost, and
//! the temporality would become the host exporter's.
//!
//! So the guest's `resource-metrics` becomes OTLP's protobuf
//! `ResourceMetrics` (opentelemetry-proto: every field of the WIT has its
//! place there), which is queued for the export thread (`export` returns at
//! once, never waiting on the network) and delivered to every
//! [`AggregatedMetricExporter`](crate::export::aggregated::AggregatedMetricExporter):
//! the JSON lines and console exporters when they are configured for
//! metrics, and any the embedder adds with
//! [`TelemetryBuilder::with_aggregated_metric_exporter`](crate::TelemetryBuilder::with_aggregated_metric_exporter).
//!
//! # The resource
//!
//! The guest's resource is merged with the host's: the host's attributes win
//! where both name a key (the operator's `service.name` and
//! `OTEL_RESOURCE_ATTRIBUTES` over a guest SDK's defaults such as
//! `unknown_service`), the guest's other attributes are added; the guest's
//! schema URL is kept.
//!
//! # Repairs
//!
//! `low-memory` is an exporter preference, not a temporality: its data is
//! delta for monotonic sums and histograms and cumulative for other sums, as
//! the SDK's low-memory selector makes it. A u64 beyond i64 is sent as a
//! double. A histogram point whose bucket counts do not match its bounds,
//! whose bounds are not finite and increasing, or that has more buckets than
//! the array length limit, is dropped; so are points beyond
//! [`MAX_POINTS`] per export (all counted in `measurements_dropped`). Bad
//! exemplar ids become empty and bad times become "unknown" (counted in
//! `invalid_input`).

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1 as common;
use opentelemetry_proto::tonic::metrics::v1 as proto;
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;

use super::bindings::metrics::{self as wit, Host};
use super::bindings::{Datetime, types};
use super::pipeline_glue as glue;
use super::tracing::time;
use super::values;
use crate::ctx::WasiObserveCtx;
use crate::interfaces::values::{parse_span_id, parse_trace_id};
use crate::pipeline::limits::Checker;
use crate::pipeline::stats::Stats;

/// Data points kept of one `export` call.
pub const MAX_POINTS: usize = 10_000;
/// Exemplars kept per data point.
pub const MAX_EXEMPLARS: usize = 64;

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Converts one `export` call, within the limits.
struct Convert<'a> {
    check: Checker<'a>,
    points: usize,
    dropped: u64,
}

impl Convert<'_> {
    fn time(&self, t: Datetime) -> u64 {
        time(&self.check, t).map_or(0, nanos)
    }

    fn attributes(&self, kvs: Vec<types::KeyValue>) -> Vec<common::KeyValue> {
        values::proto_attributes(&self.check, kvs, self.check.limits.attributes_per_span)
    }

    /// Room for one more data point?
    fn take_point(&mut self) -> bool {
        if self.points >= MAX_POINTS {
            self.dropped += 1;
            return false;
        }
        self.points += 1;
        true
    }

    fn scope(&self, s: types::InstrumentationScope) -> common::InstrumentationScope {
        common::InstrumentationScope {
            name: self.check.string(s.name),
            version: s.version.map(|v| self.check.string(v)).unwrap_or_default(),
            attributes: self.attributes(s.attributes),
            dropped_attributes_count: 0,
        }
    }

    fn exemplars(&self, list: Vec<wit::Exemplar>) -> Vec<proto::Exemplar> {
        if list.len() > MAX_EXEMPLARS {
            Stats::add(&self.check.stats.values_truncated, 1);
        }
        list.into_iter()
            .take(MAX_EXEMPLARS)
            .map(|e| proto::Exemplar {
                filtered_attributes: self.attributes(e.filtered_attributes),
                time_unix_nano: self.time(e.time),
                span_id: self.id(&e.span_id, |s| {
                    parse_span_id(s).map(|id| id.to_bytes().to_vec())
                }),
                trace_id: self.id(&e.trace_id, |s| {
                    parse_trace_id(s).map(|id| id.to_bytes().to_vec())
                }),
                value: Some(match number(e.value) {
                    Num::Int(i) => proto::exemplar::Value::AsInt(i),
                    Num::Double(d) => proto::exemplar::Value::AsDouble(d),
                }),
            })
            .collect()
    }

    /// An exemplar's id: empty when the guest gives none (empty, or all
    /// zeros as some SDKs send it), and when it is malformed (counted).
    fn id(&self, s: &str, parse: impl Fn(&str) -> Option<Vec<u8>>) -> Vec<u8> {
        if s.bytes().all(|b| b == b'0') {
            return Vec::new();
        }
        parse(s).unwrap_or_else(|| {
            Stats::add(&self.check.stats.invalid_input, 1);
            Vec::new()
        })
    }

    fn number_points(
        &mut self,
        points: Vec<(Vec<types::KeyValue>, wit::MetricNumber, Vec<wit::Exemplar>)>,
        start: u64,
        time: u64,
    ) -> Vec<proto::NumberDataPoint> {
        let mut out = Vec::with_capacity(points.len().min(MAX_POINTS));
        for (attributes, value, exemplars) in points {
            if !self.take_point() {
                continue;
            }
            out.push(proto::NumberDataPoint {
                attributes: self.attributes(attributes),
                start_time_unix_nano: start,
                time_unix_nano: time,
                exemplars: self.exemplars(exemplars),
                flags: 0,
                value: Some(match number(value) {
                    Num::Int(i) => proto::number_data_point::Value::AsInt(i),
                    Num::Double(d) => proto::number_data_point::Value::AsDouble(d),
                }),
            });
        }
        out
    }

    fn histogram_point(
        &mut self,
        p: wit::HistogramDataPoint,
        start: u64,
        time: u64,
    ) -> Option<proto::HistogramDataPoint> {
        let consistent = p.bucket_counts.len() == p.bounds.len() + 1
            && p.bounds.len() <= self.check.limits.array_length
            && p.bounds.iter().all(|b| b.is_finite())
            && p.bounds.windows(2).all(|w| w[0] < w[1]);
        if !consistent {
            self.dropped += 1;
            return None;
        }
        if !self.take_point() {
            return None;
        }
        Some(proto::HistogramDataPoint {
            attributes: self.attributes(p.attributes),
            start_time_unix_nano: start,
            time_unix_nano: time,
            count: p.count,
            sum: Some(double(p.sum)),
            bucket_counts: p.bucket_counts,
            explicit_bounds: p.bounds,
            exemplars: self.exemplars(p.exemplars),
            flags: 0,
            min: p.min.map(double),
            max: p.max.map(double),
        })
    }

    fn exponential_point(
        &mut self,
        p: wit::ExponentialHistogramDataPoint,
        start: u64,
        time: u64,
    ) -> Option<proto::ExponentialHistogramDataPoint> {
        let max = self.check.limits.array_length;
        if p.positive_bucket.counts.len() > max
            || p.negative_bucket.counts.len() > max
            || !p.zero_threshold.is_finite()
            || p.zero_threshold < 0.0
        {
            self.dropped += 1;
            return None;
        }
        if !self.take_point() {
            return None;
        }
        let buckets =
            |b: wit::ExponentialBucket| proto::exponential_histogram_data_point::Buckets {
                offset: b.offset,
                bucket_counts: b.counts,
            };
        Some(proto::ExponentialHistogramDataPoint {
            attributes: self.attributes(p.attributes),
            start_time_unix_nano: start,
            time_unix_nano: time,
            count: p.count,
            sum: Some(double(p.sum)),
            scale: i32::from(p.scale),
            zero_count: p.zero_count,
            positive: Some(buckets(p.positive_bucket)),
            negative: Some(buckets(p.negative_bucket)),
            flags: 0,
            exemplars: self.exemplars(p.exemplars),
            min: p.min.map(double),
            max: p.max.map(double),
            zero_threshold: p.zero_threshold,
        })
    }

    fn metric(&mut self, m: wit::Metric) -> Option<proto::Metric> {
        use proto::metric::Data;
        use wit::MetricData as D;
        if m.name.is_empty() {
            Stats::add(&self.check.stats.invalid_input, 1);
            return None;
        }
        let data = match m.data {
            D::F64Gauge(g) | D::U64Gauge(g) | D::S64Gauge(g) => {
                let start = g.start_time.map_or(0, |t| self.time(t));
                let time = self.time(g.time);
                let points = g
                    .data_points
                    .into_iter()
                    .map(|p| (p.attributes, p.value, p.exemplars))
                    .collect();
                Data::Gauge(proto::Gauge {
                    data_points: self.number_points(points, start, time),
                })
            }
            D::F64Sum(s) | D::U64Sum(s) | D::S64Sum(s) => {
                let (start, time) = (self.time(s.start_time), self.time(s.time));
                let points = s
                    .data_points
                    .into_iter()
                    .map(|p| (p.attributes, p.value, p.exemplars))
                    .collect();
                Data::Sum(proto::Sum {
                    data_points: self.number_points(points, start, time),
                    aggregation_temporality: temporality(s.temporality, s.is_monotonic) as i32,
                    is_monotonic: s.is_monotonic,
                })
            }
            D::F64Histogram(h) | D::U64Histogram(h) | D::S64Histogram(h) => {
                let (start, time) = (self.time(h.start_time), self.time(h.time));
                let data_points = h
                    .data_points
                    .into_iter()
                    .filter_map(|p| self.histogram_point(p, start, time))
                    .collect();
                Data::Histogram(proto::Histogram {
                    data_points,
                    aggregation_temporality: temporality(h.temporality, true) as i32,
                })
            }
            D::F64ExponentialHistogram(h)
            | D::U64ExponentialHistogram(h)
            | D::S64ExponentialHistogram(h) => {
                let (start, time) = (self.time(h.start_time), self.time(h.time));
                let data_points = h
                    .data_points
                    .into_iter()
                    .filter_map(|p| self.exponential_point(p, start, time))
                    .collect();
                Data::ExponentialHistogram(proto::ExponentialHistogram {
                    data_points,
                    aggregation_temporality: temporality(h.temporality, true) as i32,
                })
            }
        };
        Some(proto::Metric {
            name: self.check.string(m.name),
            description: self.check.string(m.description),
            unit: self.check.string(m.unit),
            metadata: Vec::new(),
            data: Some(data),
        })
    }
}

enum Num {
    Int(i64),
    Double(f64),
}

/// A guest number as OTLP carries it: integers as i64 (a u64 beyond that
/// as a double), doubles as they are.
fn number(n: wit::MetricNumber) -> Num {
    match n {
        wit::MetricNumber::F64(d) => Num::Double(d),
        wit::MetricNumber::S64(i) => Num::Int(i),
        wit::MetricNumber::U64(u) => match i64::try_from(u) {
            Ok(i) => Num::Int(i),
            Err(_) => Num::Double(u as f64),
        },
    }
}

/// OTLP carries histogram sums, minimums and maximums as doubles.
fn double(n: wit::MetricNumber) -> f64 {
    match n {
        wit::MetricNumber::F64(d) => d,
        wit::MetricNumber::S64(i) => i as f64,
        wit::MetricNumber::U64(u) => u as f64,
    }
}

/// The data's temporality (`low-memory`: see the module docs). `monotonic`
/// is true for histograms.
fn temporality(t: wit::Temporality, monotonic: bool) -> proto::AggregationTemporality {
    use proto::AggregationTemporality as A;
    match t {
        wit::Temporality::Cumulative => A::Cumulative,
        wit::Temporality::Delta => A::Delta,
        wit::Temporality::LowMemory if monotonic => A::Delta,
        wit::Temporality::LowMemory => A::Cumulative,
    }
}

/// The guest's resource merged with the host's (see the module docs).
fn merged_resource(
    host: &opentelemetry_sdk::Resource,
    check: &Checker<'_>,
    guest: types::Resource,
) -> (ProtoResource, String) {
    let mut attributes: Vec<common::KeyValue> = host
        .iter()
        .map(|(k, v)| common::KeyValue {
            key: k.to_string(),
            value: Some(common::AnyValue::from(v.clone())),
            ..Default::default()
        })
        .collect();
    let guest_attrs =
        values::proto_attributes(check, guest.attributes, check.limits.attributes_per_span);
    for kv in guest_attrs {
        if !attributes.iter().any(|h| h.key == kv.key) {
            attributes.push(kv);
        }
    }
    let schema_url = guest
        .schema_url
        .map(|u| check.string(u))
        .or_else(|| host.schema_url().map(str::to_string))
        .unwrap_or_default();
    (
        ProtoResource {
            attributes,
            dropped_attributes_count: 0,
            ..Default::default()
        },
        schema_url,
    )
}

/// Converts a guest's `resource-metrics`; also returns the data points kept
/// and dropped.
pub(crate) fn convert(
    host: &opentelemetry_sdk::Resource,
    check: Checker<'_>,
    rm: wit::ResourceMetrics,
) -> (proto::ResourceMetrics, usize, u64) {
    let (resource, schema_url) = merged_resource(host, &check, rm.resource);
    let mut c = Convert {
        check,
        points: 0,
        dropped: 0,
    };
    let scope_metrics = rm
        .scope_metrics
        .into_iter()
        .map(|sm| {
            let schema_url = sm.scope.schema_url.clone().unwrap_or_default();
            proto::ScopeMetrics {
                scope: Some(c.scope(sm.scope)),
                metrics: sm.metrics.into_iter().filter_map(|m| c.metric(m)).collect(),
                schema_url: c.check.string(schema_url),
            }
        })
        .collect();
    (
        proto::ResourceMetrics {
            resource: Some(resource),
            scope_metrics,
            schema_url,
        },
        c.points,
        c.dropped,
    )
}

impl Host for WasiObserveCtx {
    fn export(&mut self, metrics: wit::ResourceMetrics) -> wasmtime::Result<Result<(), String>> {
        let t = self.scope.telemetry().clone();
        if !glue::metrics_configured(&t) {
            return Ok(Ok(()));
        }
        let check = glue::checker(&t);
        let (rm, kept, dropped) = convert(glue::resource(&t), check, metrics);
        let stats = glue::stats(&t);
        Stats::add(&stats.measurements_dropped, dropped);
        if !glue::exports_metrics(&t) {
            // Metrics are exported, but by exporters that cannot take
            // aggregated data (the store, OTLP): lost, and counted.
            Stats::add(&stats.measurements_dropped, kept as u64);
            return Ok(Ok(()));
        }
        if glue::hand_off_metrics(&t, Box::new(rm)) {
            Stats::add(&stats.measurements, kept as u64);
            Ok(Ok(()))
        } else {
            Stats::add(&stats.measurements_dropped, kept as u64);
            Ok(Err("the host's metric export queue is full".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Limits;
    use opentelemetry::KeyValue;

    fn kv(k: &str, v: &str) -> types::KeyValue {
        types::KeyValue {
            key: k.into(),
            value: v.into(),
        }
    }

    fn at(seconds: u64) -> Datetime {
        Datetime {
            seconds,
            nanoseconds: 0,
        }
    }

    fn scope() -> types::InstrumentationScope {
        types::InstrumentationScope {
            name: "s".into(),
            version: None,
            schema_url: None,
            attributes: vec![],
        }
    }

    fn sum(
        points: usize,
        value: wit::MetricNumber,
        t: wit::Temporality,
        mono: bool,
    ) -> wit::Metric {
        wit::Metric {
            name: "m".into(),
            description: String::new(),
            unit: String::new(),
            data: wit::MetricData::U64Sum(wit::Sum {
                data_points: (0..points)
                    .map(|_| wit::SumDataPoint {
                        attributes: vec![],
                        value,
                        exemplars: vec![wit::Exemplar {
                            filtered_attributes: vec![],
                            time: at(u64::MAX),
                            value,
                            span_id: "bad".into(),
                            trace_id: String::new(),
                        }],
                    })
                    .collect(),
                start_time: at(1),
                time: at(2),
                temporality: t,
                is_monotonic: mono,
            }),
        }
    }

    fn run(
        resource: types::Resource,
        metrics: Vec<wit::Metric>,
    ) -> (proto::ResourceMetrics, usize, u64, crate::StatsSnapshot) {
        let limits = Limits::default();
        let stats = Stats::default();
        let host = opentelemetry_sdk::Resource::builder_empty()
            .with_attributes([KeyValue::new("service.name", "host")])
            .build();
        let check = Checker {
            limits: &limits,
            stats: &stats,
        };
        let (rm, kept, dropped) = convert(
            &host,
            check,
            wit::ResourceMetrics {
                resource,
                scope_metrics: vec![wit::ScopeMetrics {
                    scope: scope(),
                    metrics,
                }],
            },
        );
        (rm, kept, dropped, stats.snapshot())
    }

    #[test]
    fn the_host_resource_wins_and_the_guest_adds() {
        let (rm, ..) = run(
            types::Resource {
                attributes: vec![kv("service.name", r#""guest""#), kv("extra", "1")],
                schema_url: Some("https://example.com/s".into()),
            },
            vec![],
        );
        let r = rm.resource.unwrap();
        assert_eq!(r.attributes.len(), 2);
        assert_eq!(r.attributes[0].key, "service.name");
        assert_eq!(
            r.attributes[0].value.as_ref().unwrap().value,
            Some(common::any_value::Value::StringValue("host".into()))
        );
        assert_eq!(r.attributes[1].key, "extra");
        assert_eq!(rm.schema_url, "https://example.com/s");
    }

    fn empty() -> types::Resource {
        types::Resource {
            attributes: vec![],
            schema_url: None,
        }
    }

    #[test]
    fn low_memory_temporality_and_big_u64() {
        let (rm, kept, dropped, stats) = run(
            empty(),
            vec![
                sum(
                    1,
                    wit::MetricNumber::U64(u64::MAX),
                    wit::Temporality::LowMemory,
                    true,
                ),
                sum(
                    1,
                    wit::MetricNumber::S64(-1),
                    wit::Temporality::LowMemory,
                    false,
                ),
            ],
        );
        assert_eq!((kept, dropped), (2, 0));
        let ms = &rm.scope_metrics[0].metrics;
        let Some(proto::metric::Data::Sum(a)) = &ms[0].data else {
            panic!()
        };
        assert_eq!(
            a.aggregation_temporality,
            proto::AggregationTemporality::Delta as i32
        );
        assert_eq!(
            a.data_points[0].value,
            Some(proto::number_data_point::Value::AsDouble(u64::MAX as f64))
        );
        // The bad exemplar id is emptied and its bad time unknown: counted.
        let ex = &a.data_points[0].exemplars[0];
        assert!(ex.span_id.is_empty() && ex.trace_id.is_empty());
        assert_eq!(ex.time_unix_nano, 0);
        let Some(proto::metric::Data::Sum(b)) = &ms[1].data else {
            panic!()
        };
        assert_eq!(
            b.aggregation_temporality,
            proto::AggregationTemporality::Cumulative as i32
        );
        assert_eq!(stats.invalid_input, 4);
    }

    #[test]
    fn points_beyond_the_limit_and_nameless_metrics_are_dropped() {
        let mut nameless = sum(1, wit::MetricNumber::U64(1), wit::Temporality::Delta, true);
        nameless.name.clear();
        let (rm, kept, dropped, stats) = run(
            empty(),
            vec![
                sum(
                    MAX_POINTS + 5,
                    wit::MetricNumber::U64(1),
                    wit::Temporality::Delta,
                    true,
                ),
                nameless,
            ],
        );
        assert_eq!((kept, dropped), (MAX_POINTS, 5));
        assert_eq!(rm.scope_metrics[0].metrics.len(), 1);
        assert!(stats.invalid_input > 0);
    }

    #[test]
    fn histograms_must_be_consistent() {
        let h = |bounds: Vec<f64>, counts: Vec<u64>| wit::HistogramDataPoint {
            attributes: vec![],
            count: counts.iter().sum(),
            bounds,
            bucket_counts: counts,
            min: None,
            max: None,
            sum: wit::MetricNumber::S64(3),
            exemplars: vec![],
        };
        let metric = wit::Metric {
            name: "h".into(),
            description: String::new(),
            unit: String::new(),
            data: wit::MetricData::S64Histogram(wit::Histogram {
                data_points: vec![
                    h(vec![1.0, 2.0], vec![1, 1, 1]),
                    h(vec![2.0, 1.0], vec![1, 1, 1]),
                    h(vec![f64::NAN], vec![1, 1]),
                    h(vec![1.0], vec![1, 1, 1]),
                ],
                start_time: at(1),
                time: at(2),
                temporality: wit::Temporality::Cumulative,
            }),
        };
        let (rm, kept, dropped, _) = run(empty(), vec![metric]);
        assert_eq!((kept, dropped), (1, 3));
        let Some(proto::metric::Data::Histogram(h)) = &rm.scope_metrics[0].metrics[0].data else {
            panic!()
        };
        assert_eq!(h.data_points[0].sum, Some(3.0));
    }
}

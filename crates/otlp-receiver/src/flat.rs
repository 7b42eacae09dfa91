//! Flattened, test-friendly views of OTLP export requests.
//!
//! An OTLP request nests items as resource → scope → item. Tests mostly want
//! one flat list of items, each carrying its resource attributes and scope, so
//! that is what the types here provide.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use opentelemetry_proto::tonic::metrics::v1::{
    HistogramDataPoint, NumberDataPoint, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

/// Attributes keyed by name. When a key appears more than once, the last
/// occurrence wins. A key/value pair without a value maps to an empty
/// `AnyValue` (`value: None`).
pub type Attributes = BTreeMap<String, AnyValue>;

/// Converts a list of OTLP key/values into an [`Attributes`] map.
pub fn attributes_map(kvs: &[KeyValue]) -> Attributes {
    kvs.iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect()
}

/// Lowercase hex encoding of a trace or span id (empty input gives "").
pub fn hex_id(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Typed access to the content of an OTLP [`AnyValue`].
pub trait AnyValueExt {
    /// The string, if this is a `stringValue`.
    fn as_str(&self) -> Option<&str>;
    /// The integer, if this is an `intValue`.
    fn as_i64(&self) -> Option<i64>;
    /// The number, if this is a `doubleValue`.
    fn as_f64(&self) -> Option<f64>;
    /// The boolean, if this is a `boolValue`.
    fn as_bool(&self) -> Option<bool>;
    /// The bytes, if this is a `bytesValue`.
    fn as_bytes(&self) -> Option<&[u8]>;
    /// The elements, if this is an `arrayValue`.
    fn as_array(&self) -> Option<&[AnyValue]>;
    /// The entries, if this is a `kvlistValue`.
    fn as_kvlist(&self) -> Option<&[KeyValue]>;
    /// A compact human-readable rendering (strings unquoted at top level),
    /// handy in assertion messages.
    fn to_display_string(&self) -> String;
}

impl AnyValueExt for AnyValue {
    fn as_str(&self) -> Option<&str> {
        match &self.value {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match self.value {
            Some(Value::IntValue(i)) => Some(i),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self.value {
            Some(Value::DoubleValue(d)) => Some(d),
            _ => None,
        }
    }

    fn as_bool(&self) -> Option<bool> {
        match self.value {
            Some(Value::BoolValue(b)) => Some(b),
            _ => None,
        }
    }

    fn as_bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Some(Value::BytesValue(b)) => Some(b),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&[AnyValue]> {
        match &self.value {
            Some(Value::ArrayValue(a)) => Some(&a.values),
            _ => None,
        }
    }

    fn as_kvlist(&self) -> Option<&[KeyValue]> {
        match &self.value {
            Some(Value::KvlistValue(l)) => Some(&l.values),
            _ => None,
        }
    }

    fn to_display_string(&self) -> String {
        match &self.value {
            Some(Value::StringValue(s)) => s.clone(),
            _ => render(self),
        }
    }
}

fn render(value: &AnyValue) -> String {
    match &value.value {
        None => "<empty>".to_owned(),
        Some(Value::StringValue(s)) => format!("{s:?}"),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => format!("0x{}", hex_id(b)),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::KvlistValue(l)) => {
            let items: Vec<String> = l
                .values
                .iter()
                .map(|kv| {
                    let v = kv.value.as_ref().map(render);
                    format!("{}: {}", kv.key, v.unwrap_or_else(|| "<empty>".to_owned()))
                })
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Some(Value::StringValueStrindex(i)) => format!("<strindex {i}>"),
    }
}

/// Generates typed attribute getters over a field holding [`Attributes`].
macro_rules! attribute_getters {
    ($ty:ty, $field:ident) => {
        impl $ty {
            /// The attribute `key`, if present.
            pub fn attr(&self, key: &str) -> Option<&AnyValue> {
                self.$field.get(key)
            }
            /// The attribute `key`, if present and a string.
            pub fn attr_str(&self, key: &str) -> Option<&str> {
                self.$field.get(key).and_then(AnyValueExt::as_str)
            }
            /// The attribute `key`, if present and an integer.
            pub fn attr_i64(&self, key: &str) -> Option<i64> {
                self.$field.get(key).and_then(AnyValueExt::as_i64)
            }
            /// The attribute `key`, if present and a double.
            pub fn attr_f64(&self, key: &str) -> Option<f64> {
                self.$field.get(key).and_then(AnyValueExt::as_f64)
            }
            /// The attribute `key`, if present and a boolean.
            pub fn attr_bool(&self, key: &str) -> Option<bool> {
                self.$field.get(key).and_then(AnyValueExt::as_bool)
            }
        }
    };
}

/// Generates resource / scope getters for items carrying a [`Scope`].
macro_rules! resource_getters {
    ($ty:ty) => {
        impl $ty {
            /// The resource attribute `key`, if present and a string
            /// (e.g. `"service.name"`).
            pub fn resource_str(&self, key: &str) -> Option<&str> {
                self.resource.get(key).and_then(AnyValueExt::as_str)
            }
            /// The resource attribute `key`, if present.
            pub fn resource_attr(&self, key: &str) -> Option<&AnyValue> {
                self.resource.get(key)
            }
        }
    };
}

/// What every flattened item inherits from its enclosing resource and scope.
#[derive(Clone, Debug, Default, PartialEq)]
struct Origin {
    resource: Attributes,
    resource_schema_url: String,
    scope_name: String,
    scope_version: String,
    scope_attributes: Attributes,
    scope_schema_url: String,
}

impl Origin {
    fn new(
        resource: Option<&Resource>,
        resource_schema_url: &str,
        scope: Option<&InstrumentationScope>,
        scope_schema_url: &str,
    ) -> Self {
        Origin {
            resource: resource
                .map(|r| attributes_map(&r.attributes))
                .unwrap_or_default(),
            resource_schema_url: resource_schema_url.to_owned(),
            scope_name: scope.map(|s| s.name.clone()).unwrap_or_default(),
            scope_version: scope.map(|s| s.version.clone()).unwrap_or_default(),
            scope_attributes: scope
                .map(|s| attributes_map(&s.attributes))
                .unwrap_or_default(),
            scope_schema_url: scope_schema_url.to_owned(),
        }
    }
}

/// A span event.
#[derive(Clone, Debug, PartialEq)]
pub struct FlatEvent {
    pub name: String,
    pub time_unix_nano: u64,
    pub attributes: Attributes,
    pub dropped_attributes_count: u32,
}
attribute_getters!(FlatEvent, attributes);

/// A span link.
#[derive(Clone, Debug, PartialEq)]
pub struct FlatLink {
    /// Lowercase hex.
    pub trace_id: String,
    /// Lowercase hex.
    pub span_id: String,
    pub trace_state: String,
    pub attributes: Attributes,
    pub dropped_attributes_count: u32,
    pub flags: u32,
}
attribute_getters!(FlatLink, attributes);

/// A span status. A span sent without a status reads as `Unset` with an
/// empty message.
#[derive(Clone, Debug, PartialEq)]
pub struct FlatStatus {
    pub code: StatusCode,
    pub message: String,
}

/// One span with its resource and instrumentation scope.
#[derive(Clone, Debug, PartialEq)]
pub struct FlatSpan {
    /// Lowercase hex (32 digits for a valid id).
    pub trace_id: String,
    /// Lowercase hex (16 digits for a valid id).
    pub span_id: String,
    /// Lowercase hex; empty string for a root span.
    pub parent_span_id: String,
    pub trace_state: String,
    pub flags: u32,
    pub name: String,
    /// Unknown numeric kinds read as `Unspecified`; see `kind_raw`.
    pub kind: SpanKind,
    pub kind_raw: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Attributes,
    pub dropped_attributes_count: u32,
    pub events: Vec<FlatEvent>,
    pub dropped_events_count: u32,
    pub links: Vec<FlatLink>,
    pub dropped_links_count: u32,
    pub status: FlatStatus,
    /// Resource attributes of the enclosing `ResourceSpans`.
    pub resource: Attributes,
    pub resource_schema_url: String,
    /// Instrumentation scope of the enclosing `ScopeSpans` ("" when absent).
    pub scope_name: String,
    pub scope_version: String,
    pub scope_attributes: Attributes,
    pub scope_schema_url: String,
}
attribute_getters!(FlatSpan, attributes);
resource_getters!(FlatSpan);

impl FlatSpan {
    /// True when the span has no parent.
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }

    /// End minus start, saturating at zero.
    pub fn duration_nanos(&self) -> u64 {
        self.end_time_unix_nano
            .saturating_sub(self.start_time_unix_nano)
    }

    /// The first event called `name`.
    pub fn event(&self, name: &str) -> Option<&FlatEvent> {
        self.events.iter().find(|e| e.name == name)
    }
}

/// One log record with its resource and instrumentation scope.
#[derive(Clone, Debug, PartialEq)]
pub struct FlatLog {
    pub time_unix_nano: u64,
    pub observed_time_unix_nano: u64,
    /// Raw severity number (see [`FlatLog::severity`] for the enum).
    pub severity_number: i32,
    pub severity_text: String,
    pub body: Option<AnyValue>,
    pub attributes: Attributes,
    pub dropped_attributes_count: u32,
    pub flags: u32,
    /// Lowercase hex; empty when the record is not tied to a span.
    pub trace_id: String,
    /// Lowercase hex; empty when the record is not tied to a span.
    pub span_id: String,
    pub event_name: String,
    pub resource: Attributes,
    pub resource_schema_url: String,
    pub scope_name: String,
    pub scope_version: String,
    pub scope_attributes: Attributes,
    pub scope_schema_url: String,
}
attribute_getters!(FlatLog, attributes);
resource_getters!(FlatLog);

impl FlatLog {
    /// The severity as an enum (unknown numbers read as `Unspecified`).
    pub fn severity(&self) -> SeverityNumber {
        SeverityNumber::try_from(self.severity_number).unwrap_or(SeverityNumber::Unspecified)
    }

    /// The body, if it is a string.
    pub fn body_str(&self) -> Option<&str> {
        self.body.as_ref().and_then(AnyValueExt::as_str)
    }
}

/// One metric (one `Metric` message, with all its data points) with its
/// resource and instrumentation scope.
#[derive(Clone, Debug, PartialEq)]
pub struct FlatMetric {
    pub name: String,
    pub description: String,
    pub unit: String,
    pub metadata: Attributes,
    pub data: Option<Data>,
    pub resource: Attributes,
    pub resource_schema_url: String,
    pub scope_name: String,
    pub scope_version: String,
    pub scope_attributes: Attributes,
    pub scope_schema_url: String,
}
resource_getters!(FlatMetric);

impl FlatMetric {
    /// "gauge", "sum", "histogram", "exponential_histogram", "summary", or
    /// "none" when the metric carries no data.
    pub fn data_kind(&self) -> &'static str {
        match &self.data {
            Some(Data::Gauge(_)) => "gauge",
            Some(Data::Sum(_)) => "sum",
            Some(Data::Histogram(_)) => "histogram",
            Some(Data::ExponentialHistogram(_)) => "exponential_histogram",
            Some(Data::Summary(_)) => "summary",
            None => "none",
        }
    }

    /// The data points of a gauge or sum (empty for other kinds).
    pub fn number_points(&self) -> &[NumberDataPoint] {
        match &self.data {
            Some(Data::Gauge(g)) => &g.data_points,
            Some(Data::Sum(s)) => &s.data_points,
            _ => &[],
        }
    }

    /// The data points of an explicit-bucket histogram (empty otherwise).
    pub fn histogram_points(&self) -> &[HistogramDataPoint] {
        match &self.data {
            Some(Data::Histogram(h)) => &h.data_points,
            _ => &[],
        }
    }

    /// Gauge or sum points as (attributes, value as f64) pairs; integer
    /// values are converted, points without a value are skipped.
    pub fn number_values(&self) -> Vec<(Attributes, f64)> {
        self.number_points()
            .iter()
            .filter_map(|p| Some((attributes_map(&p.attributes), number_value(p)?)))
            .collect()
    }
}

/// The value of a number data point as f64 (integers converted).
pub fn number_value(point: &NumberDataPoint) -> Option<f64> {
    match point.value? {
        number_data_point::Value::AsDouble(d) => Some(d),
        number_data_point::Value::AsInt(i) => Some(i as f64),
    }
}

/// Flattens every span of a trace export request.
pub fn flatten_traces(request: &ExportTraceServiceRequest) -> Vec<FlatSpan> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        for ss in &rs.scope_spans {
            let origin = Origin::new(
                rs.resource.as_ref(),
                &rs.schema_url,
                ss.scope.as_ref(),
                &ss.schema_url,
            );
            for span in &ss.spans {
                let status = span.status.as_ref();
                let origin = origin.clone();
                out.push(FlatSpan {
                    trace_id: hex_id(&span.trace_id),
                    span_id: hex_id(&span.span_id),
                    parent_span_id: hex_id(&span.parent_span_id),
                    trace_state: span.trace_state.clone(),
                    flags: span.flags,
                    name: span.name.clone(),
                    kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                    kind_raw: span.kind,
                    start_time_unix_nano: span.start_time_unix_nano,
                    end_time_unix_nano: span.end_time_unix_nano,
                    attributes: attributes_map(&span.attributes),
                    dropped_attributes_count: span.dropped_attributes_count,
                    events: span
                        .events
                        .iter()
                        .map(|e| FlatEvent {
                            name: e.name.clone(),
                            time_unix_nano: e.time_unix_nano,
                            attributes: attributes_map(&e.attributes),
                            dropped_attributes_count: e.dropped_attributes_count,
                        })
                        .collect(),
                    dropped_events_count: span.dropped_events_count,
                    links: span
                        .links
                        .iter()
                        .map(|l| FlatLink {
                            trace_id: hex_id(&l.trace_id),
                            span_id: hex_id(&l.span_id),
                            trace_state: l.trace_state.clone(),
                            attributes: attributes_map(&l.attributes),
                            dropped_attributes_count: l.dropped_attributes_count,
                            flags: l.flags,
                        })
                        .collect(),
                    dropped_links_count: span.dropped_links_count,
                    status: FlatStatus {
                        code: status
                            .and_then(|s| StatusCode::try_from(s.code).ok())
                            .unwrap_or(StatusCode::Unset),
                        message: status.map(|s| s.message.clone()).unwrap_or_default(),
                    },
                    resource: origin.resource,
                    resource_schema_url: origin.resource_schema_url,
                    scope_name: origin.scope_name,
                    scope_version: origin.scope_version,
                    scope_attributes: origin.scope_attributes,
                    scope_schema_url: origin.scope_schema_url,
                });
            }
        }
    }
    out
}

/// Flattens every log record of a logs export request.
pub fn flatten_logs(request: &ExportLogsServiceRequest) -> Vec<FlatLog> {
    let mut out = Vec::new();
    for rl in &request.resource_logs {
        for sl in &rl.scope_logs {
            let origin = Origin::new(
                rl.resource.as_ref(),
                &rl.schema_url,
                sl.scope.as_ref(),
                &sl.schema_url,
            );
            for record in &sl.log_records {
                let origin = origin.clone();
                out.push(FlatLog {
                    time_unix_nano: record.time_unix_nano,
                    observed_time_unix_nano: record.observed_time_unix_nano,
                    severity_number: record.severity_number,
                    severity_text: record.severity_text.clone(),
                    body: record.body.clone(),
                    attributes: attributes_map(&record.attributes),
                    dropped_attributes_count: record.dropped_attributes_count,
                    flags: record.flags,
                    trace_id: hex_id(&record.trace_id),
                    span_id: hex_id(&record.span_id),
                    event_name: record.event_name.clone(),
                    resource: origin.resource,
                    resource_schema_url: origin.resource_schema_url,
                    scope_name: origin.scope_name,
                    scope_version: origin.scope_version,
                    scope_attributes: origin.scope_attributes,
                    scope_schema_url: origin.scope_schema_url,
                });
            }
        }
    }
    out
}

/// Flattens every metric of a metrics export request.
pub fn flatten_metrics(request: &ExportMetricsServiceRequest) -> Vec<FlatMetric> {
    let mut out = Vec::new();
    for rm in &request.resource_metrics {
        for sm in &rm.scope_metrics {
            let origin = Origin::new(
                rm.resource.as_ref(),
                &rm.schema_url,
                sm.scope.as_ref(),
                &sm.schema_url,
            );
            for metric in &sm.metrics {
                let origin = origin.clone();
                out.push(FlatMetric {
                    name: metric.name.clone(),
                    description: metric.description.clone(),
                    unit: metric.unit.clone(),
                    metadata: attributes_map(&metric.metadata),
                    data: metric.data.clone(),
                    resource: origin.resource,
                    resource_schema_url: origin.resource_schema_url,
                    scope_name: origin.scope_name,
                    scope_version: origin.scope_version,
                    scope_attributes: origin.scope_attributes,
                    scope_schema_url: origin.scope_schema_url,
                });
            }
        }
    }
    out
}

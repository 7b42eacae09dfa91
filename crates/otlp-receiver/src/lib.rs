//! Test support: real OTLP receivers, started in-process by end-to-end tests.
//!
//! - [`OtlpHttpReceiver`]: an OTLP/HTTP receiver (protobuf or JSON, optionally
//!   gzip) on its own thread and tokio runtime, usable from plain `#[test]`
//!   functions. It records every request and offers flattened views of what
//!   arrived ([`FlatSpan`], [`FlatLog`], [`FlatMetric`]), each carrying its
//!   resource attributes and instrumentation scope. [`ReceiverOptions`] can
//!   make it refuse a signal with a given status, or answer slowly.
//! - [`GrpcCollector`]: a synchronous wrapper around the OTLP/gRPC
//!   `fake_opentelemetry_collector::FakeCollectorServer`.
//!
//! ```no_run
//! use std::time::Duration;
//! use otlp_receiver::{OtlpHttpReceiver, ReceiverOptions, Signal};
//!
//! let receiver = OtlpHttpReceiver::start_with(
//!     ReceiverOptions::new()
//!         .refuse(Signal::Logs, 405)
//!         .refuse(Signal::Metrics, 405),
//! );
//! // ... run something exporting to receiver.endpoint() ...
//! let spans = receiver.wait_for_spans(1, Duration::from_secs(10));
//! assert_eq!(spans[0].resource_str("service.name"), Some("my-service"));
//! ```

mod flat;
pub mod grpc;
mod http;

pub use flat::{
    AnyValueExt, Attributes, FlatEvent, FlatLink, FlatLog, FlatMetric, FlatSpan, FlatStatus,
    attributes_map, flatten_logs, flatten_metrics, flatten_traces, hex_id, number_value,
};
pub use grpc::GrpcCollector;
pub use http::{OtlpHttpReceiver, ReceivedRequest, ReceiverOptions, Signal};

/// The generated OTLP types, re-exported so tests need no direct dependency.
pub use opentelemetry_proto as proto;
pub use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
pub use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
pub use opentelemetry_proto::tonic::metrics::v1::metric::Data as MetricData;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
pub use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatusCode;

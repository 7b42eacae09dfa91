//! Which export failures are worth retrying.
//!
//! Following the OTLP specification: HTTP 408, 429, 5xx and network errors
//! are transient, other HTTP statuses (a 405 from a backend that takes no
//! logs, a 400 for a request it cannot parse) are permanent; gRPC
//! `Cancelled`, `DeadlineExceeded`, `Aborted`, `OutOfRange`, `Unavailable`,
//! `DataLoss` and `ResourceExhausted` are transient, other codes permanent.
//!
//! The exporters report failures as an [`OTelSdkError`]: its variant decides
//! where it says enough (a timeout is transient, an exporter already shut
//! down is permanent). An `InternalFailure` carries only text, so its text
//! is read, as opentelemetry-otlp writes it (the tests pin those exact
//! messages). A failure of the embedded store is permanent: the store has
//! already counted (and reported) what it could not write, e.g. when it is
//! full, and retrying would count it twice. Anything else (a file that
//! cannot be written) is taken as transient: the retry buffer and the exit
//! deadline bound what that costs.

use std::time::Duration;

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use tokio::runtime::Handle;

use super::batch::Failure;

/// Runs one export on the export runtime with a deadline, and classifies its
/// failure.
pub(super) fn run(
    rt: &Handle,
    timeout: Duration,
    exporter: &str,
    fut: impl std::future::Future<Output = OTelSdkResult>,
) -> Result<(), Failure> {
    rt.block_on(async {
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failure {
                transient: is_transient(&e),
                message: format!("{exporter}: {e}"),
            }),
            Err(_) => Err(Failure {
                transient: true,
                message: format!("{exporter}: export timed out after {timeout:?}"),
            }),
        }
    })
}

/// Whether trying `e` again later may succeed.
pub(crate) fn is_transient(e: &OTelSdkError) -> bool {
    match e {
        OTelSdkError::Timeout(_) => true,
        OTelSdkError::AlreadyShutdown => false,
        OTelSdkError::InternalFailure(message) => message_is_transient(message),
    }
}

/// The same for a failure known by its text alone.
pub(crate) fn message_is_transient(message: &str) -> bool {
    if message.contains("telemetry store") {
        return false;
    }
    if let Some(rest) = message.split("status code: ").nth(1) {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(code) = digits.parse::<u16>() {
            return matches!(code, 408 | 429) || code >= 500;
        }
    }
    if let Some(rest) = message.split("gRPC code: ").nth(1) {
        let code: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
        return matches!(
            code.as_str(),
            "Cancelled"
                | "DeadlineExceeded"
                | "Aborted"
                | "OutOfRange"
                | "Unavailable"
                | "DataLoss"
                | "ResourceExhausted"
        );
    }
    true
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    #[test]
    fn error_variants_decide_where_they_can() {
        assert!(is_transient(&OTelSdkError::Timeout(Duration::from_secs(1))));
        assert!(!is_transient(&OTelSdkError::AlreadyShutdown));
    }

    #[test]
    fn export_errors_are_classified_as_the_otlp_specification_says() {
        for transient in [
            "HTTP export failed: network error",
            "HTTP export failed with status code: 503",
            "HTTP export failed with status code: 429",
            "HTTP export failed with status code: 408",
            "TonicTracesClient export failed with gRPC code: Unavailable: connection refused",
        ] {
            assert!(message_is_transient(transient), "{transient}");
        }
        for permanent in [
            "HTTP export failed with status code: 405",
            "HTTP export failed with status code: 400",
            "TonicLogsClient export failed with gRPC code: Unimplemented",
            "TonicLogsClient export failed with gRPC code: Unauthenticated",
            "Operation failed: telemetry store /tmp/t.db is full (disk full or size cap): 512 spans dropped",
        ] {
            assert!(!message_is_transient(permanent), "{permanent}");
        }
    }

    /// One finished span, with ids of its own.
    pub(in crate::export) fn span() -> opentelemetry_sdk::trace::SpanData {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        use opentelemetry::trace::{
            SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
        };
        let now = std::time::SystemTime::now();
        opentelemetry_sdk::trace::SpanData {
            span_context: SpanContext::new(
                TraceId::from(u128::from(n)),
                SpanId::from(n),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "s".into(),
            start_time: now,
            end_time: now,
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    /// A server that answers every request with `status`, on a free port.
    fn answering(status: u16) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut buf = [0u8; 65536];
                // Read the head and whatever body came with it.
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = stream.read(&mut buf);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} Status\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        format!("http://{addr}/v1/traces")
    }

    /// What opentelemetry-otlp's exporter says when exporting one span to
    /// `endpoint` fails.
    fn otlp_error(http: bool, endpoint: &str) -> OTelSdkError {
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        use opentelemetry_sdk::trace::SpanExporter as _;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let exporter = if http {
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(endpoint)
                    .with_headers(Default::default())
                    .build()
            } else {
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .with_timeout(Duration::from_secs(2))
                    .build()
            }
            .unwrap();
            let span = span();
            exporter
                .export(vec![span])
                .await
                .expect_err("the export fails")
        })
    }

    /// The exact errors opentelemetry-otlp returns, classified: HTTP statuses
    /// the OTLP specification calls retryable are transient, others are
    /// permanent; a refused gRPC connection is transient.
    #[test]
    fn the_otlp_exporters_errors_are_classified() {
        for (status, transient) in [
            (503, true),
            (429, true),
            (502, true),
            (405, false),
            (400, false),
        ] {
            let e = otlp_error(true, &answering(status));
            assert_eq!(is_transient(&e), transient, "HTTP {status}: {e}");
        }
        // Nothing listens there: a network error.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let e = otlp_error(true, &format!("http://127.0.0.1:{port}/v1/traces"));
        assert!(is_transient(&e), "{e}");
        let e = otlp_error(false, &format!("http://127.0.0.1:{port}"));
        assert!(is_transient(&e), "{e}");
    }

    /// A full embedded store's error is permanent: it counted its drops.
    #[cfg(feature = "store")]
    #[test]
    fn a_full_stores_error_is_permanent() {
        use opentelemetry_sdk::trace::SpanExporter as _;
        let dir = std::env::temp_dir().join(format!("wasi-observe-retry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("full.db");
        let _ = std::fs::remove_file(&path);
        let options = wasi_observe_store::StoreOptions {
            hard_max_bytes: Some(256 * 1024),
            ..Default::default()
        };
        let store = wasi_observe_store::Store::open(&path, options).unwrap();
        let exporter = store.exporter();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut error = None;
        for _ in 0..64 {
            let batch: Vec<_> = (0..64)
                .map(|_| {
                    let mut span = span();
                    span.attributes
                        .push(opentelemetry::KeyValue::new("big", "x".repeat(4096)));
                    span
                })
                .collect();
            if let Err(e) = rt.block_on(exporter.export(batch)) {
                error = Some(e);
                break;
            }
        }
        let e = error.expect("the store fills up");
        assert!(!is_transient(&e), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

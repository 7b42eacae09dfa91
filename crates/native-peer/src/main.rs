//! The native peer of `wasi-observe serve` in `scripts/bench-serve.sh`: what
//! the test component's `/hello` route does, written as an ordinary Rust
//! service, so the load benchmark can show what the same telemetry costs
//! without WebAssembly.
//!
//! ```text
//! native-peer [--addr 127.0.0.1:8080] [--exporter jsonl:PATH|otlp]
//! ```
//!
//! Per request, with telemetry on: a SERVER span with the attributes `serve`
//! records (`crates/host/src/http.rs`), a `route` span and a log record under
//! it (the guest's `info_span!` and `log::info!`), and an
//! `http.server.request.duration` measurement with the same buckets and
//! attributes. Spans and the log record are made with `tracing`, through
//! `tracing-opentelemetry` and `opentelemetry-appender-tracing`, into the
//! OpenTelemetry SDK's batch processors. `OTEL_SDK_DISABLED=true` installs
//! no subscriber and no meter (as `serve` off): the same code runs, its
//! `tracing` callsites disabled. `otlp` is OTLP/HTTP (protobuf unless
//! `OTEL_EXPORTER_OTLP_PROTOCOL` says otherwise), configured by the usual
//! `OTEL_EXPORTER_OTLP_*` variables.

mod jsonl;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;

// As `wasi-observe` does: the batch processors' threads free what the
// request threads allocate, which glibc's allocator serialises.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Error = Box<dyn std::error::Error + Send + Sync>;

// mimalloc's tuning, as in the `wasi-observe` binary.
#[path = "../../cli/src/alloc.rs"]
mod alloc;

fn main() -> Result<(), Error> {
    alloc::tune();
    let mut addr: SocketAddr = "127.0.0.1:8080".parse()?;
    let mut exporter = String::from("otlp");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--addr" => addr = value()?.parse()?,
            "--exporter" => exporter = value()?,
            _ => return Err(format!("unknown argument {arg}; usage: native-peer [--addr ADDR] [--exporter jsonl:PATH|otlp]").into()),
        }
    }
    let disabled =
        std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"));
    // Built before the runtime: the blocking OTLP client must not be made
    // inside it, and the SDK's processors run on their own threads anyway.
    let telemetry = (!disabled)
        .then(|| Telemetry::install(&exporter))
        .transpose()?;
    let histogram = telemetry.as_ref().map(|t| t.histogram.clone());

    // Multi-threaded, one worker per core, as `serve`.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(addr, histogram))?;
    drop(runtime);
    if let Some(t) = telemetry {
        t.shutdown();
    }
    Ok(())
}

/// The OpenTelemetry pipeline: SDK providers with batch processors (spans,
/// logs) and a periodic reader (metrics), all to one exporter.
struct Telemetry {
    tracer: SdkTracerProvider,
    logger: SdkLoggerProvider,
    meter: SdkMeterProvider,
    histogram: Histogram<f64>,
    written: Option<Arc<jsonl::Written>>,
}

impl Telemetry {
    fn install(exporter: &str) -> Result<Telemetry, Error> {
        let resource = Resource::builder().with_service_name("native-peer").build();
        let tracer = SdkTracerProvider::builder().with_resource(resource.clone());
        let logger = SdkLoggerProvider::builder().with_resource(resource.clone());
        let meter = SdkMeterProvider::builder().with_resource(resource);
        let (tracer, logger, meter, written) = if let Some(path) = exporter.strip_prefix("jsonl:") {
            let written = Arc::new(jsonl::Written::default());
            let file = jsonl::JsonLines::create(path, written.clone())?;
            (
                tracer.with_batch_exporter(file.clone()),
                logger.with_batch_exporter(file.clone()),
                meter.with_periodic_exporter(file),
                Some(written),
            )
        } else if exporter == "otlp" {
            use opentelemetry_otlp::{LogExporter, MetricExporter, SpanExporter};
            (
                tracer.with_batch_exporter(SpanExporter::builder().build()?),
                logger.with_batch_exporter(LogExporter::builder().build()?),
                meter.with_periodic_exporter(MetricExporter::builder().build()?),
                None,
            )
        } else {
            return Err(
                format!("unknown exporter {exporter} (expected jsonl:PATH or otlp)").into(),
            );
        };
        let (tracer, logger, meter) = (tracer.build(), logger.build(), meter.build());

        // Spans go to tracing-opentelemetry, events (the log record) to the
        // logs bridge; each filter keeps the other's kind out (else events
        // would also become span events) and keeps the SDK's own diagnostics,
        // which it emits through `tracing`, out of both.
        let ours = |m: &tracing::Metadata<'_>| m.target().starts_with(env!("CARGO_CRATE_NAME"));
        let spans = tracing_opentelemetry::layer()
            .with_tracer(tracer.tracer("native-peer"))
            // Thread ids and busy/idle times are not what `serve` records.
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(filter_fn(move |m| m.is_span() && ours(m)));
        let logs = OpenTelemetryTracingBridge::new(&logger)
            .with_filter(filter_fn(move |m| m.is_event() && ours(m)));
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(spans).with(logs),
        )?;

        // The bucket boundaries the HTTP semantic conventions advise, as
        // `serve` uses.
        let buckets = vec![
            0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
        ];
        let histogram = meter
            .meter("native-peer")
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_description("Duration of HTTP server requests.")
            .with_boundaries(buckets)
            .build();
        Ok(Telemetry {
            tracer,
            logger,
            meter,
            histogram,
            written,
        })
    }

    /// Flushes everything and says how much the exporter got, so that a
    /// benchmark can tell exported from dropped.
    fn shutdown(self) {
        for (what, result) in [
            ("spans", self.tracer.shutdown()),
            ("logs", self.logger.shutdown()),
            ("metrics", self.meter.shutdown()),
        ] {
            if let Err(e) = result {
                eprintln!("native-peer: shutting down {what}: {e}");
            }
        }
        if let Some(w) = self.written {
            eprintln!(
                "native-peer: exported {} spans, {} log records",
                w.spans.load(Ordering::Relaxed),
                w.logs.load(Ordering::Relaxed)
            );
        }
    }
}

/// Accepts connections until SIGINT or SIGTERM, then lets the open ones end.
async fn serve(addr: SocketAddr, histogram: Option<Histogram<f64>>) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    eprintln!("native-peer: serving http://{local}/");
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                // Out of file descriptors and the like: keep serving.
                Err(e) => {
                    eprintln!("native-peer: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        };
        let histogram = histogram.clone();
        let service = hyper::service::service_fn(move |req| {
            std::future::ready(Ok::<_, Infallible>(handle(
                &req,
                local,
                peer,
                histogram.as_ref(),
            )))
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(conn);
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await;
    Ok(())
}

/// One request: the SERVER span and duration metric around [`route`] when
/// telemetry is on, [`route`] alone when it is off.
fn handle(
    req: &Request<Incoming>,
    local: SocketAddr,
    peer: SocketAddr,
    histogram: Option<&Histogram<f64>>,
) -> Response<Full<Bytes>> {
    let Some(histogram) = histogram else {
        return route(req.uri().path());
    };
    let start = Instant::now();
    let (method, original) = match method_name(req.method()) {
        Some(m) => (m, None),
        None => ("_OTHER", Some(req.method().as_str())),
    };
    let version = protocol_version(req.version());
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(hyper::header::HOST)?.to_str().ok());
    let (address, port) = match host.map(|h| h.parse::<hyper::http::uri::Authority>()) {
        Some(Ok(a)) => (a.host().to_string(), a.port_u16()),
        Some(Err(_)) => (host.unwrap_or_default().to_string(), None),
        None => (local.ip().to_string(), Some(local.port())),
    };
    let span = tracing::info_span!(
        "request",
        otel.name = original.map_or(method, |_| "HTTP"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.request.method_original = original,
        url.scheme = "http",
        url.path = req.uri().path(),
        url.query = req.uri().query(),
        server.address = address,
        server.port = port,
        network.protocol.version = version,
        user_agent.original = req
            .headers()
            .get(hyper::header::USER_AGENT)
            .and_then(|h| h.to_str().ok()),
        client.address = %peer.ip(),
        network.peer.address = %peer.ip(),
        network.peer.port = peer.port(),
        http.response.status_code = Empty,
        error.type = Empty,
    );
    // Continue the caller's trace, as `serve` does.
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let response = span.in_scope(|| route(req.uri().path()));
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    let mut attributes = Vec::with_capacity(5);
    attributes.push(KeyValue::new("http.request.method", method));
    attributes.push(KeyValue::new("url.scheme", "http"));
    if let Some(v) = version {
        attributes.push(KeyValue::new("network.protocol.version", v));
    }
    attributes.push(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        span.record("error.type", status.to_string());
        span.record("otel.status_code", "ERROR");
        attributes.push(KeyValue::new("error.type", status.to_string()));
    }
    drop(span);
    histogram.record(start.elapsed().as_secs_f64(), &attributes);
    response
}

/// What the test component's `/hello` does: a span, a log record in it,
/// a 200 with a short body.
fn route(path: &str) -> Response<Full<Bytes>> {
    let _span = tracing::info_span!("route", route = %path).entered();
    tracing::info!(route = path, "handling");
    let mut response = Response::new(Full::new(Bytes::from_static(b"hello")));
    if path != "/hello" {
        *response.status_mut() = hyper::StatusCode::NOT_FOUND;
    }
    response
}

/// The OpenTelemetry name of a known method (`_OTHER` for the rest).
fn method_name(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => return None,
    })
}

fn protocol_version(v: Version) -> Option<&'static str> {
    Some(match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => return None,
    })
}

//! The OTLP/HTTP receiver.

use std::convert::Infallible;
use std::fmt;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::sync::oneshot;

use crate::flat::{FlatLog, FlatMetric, FlatSpan, flatten_logs, flatten_metrics, flatten_traces};

/// One of the three OTLP signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Traces,
    Logs,
    Metrics,
}

impl Signal {
    /// All signals, in a fixed order.
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Logs, Signal::Metrics];

    /// The OTLP/HTTP path of the signal: "/v1/traces", "/v1/logs" or "/v1/metrics".
    pub fn path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Logs => "/v1/logs",
            Signal::Metrics => "/v1/metrics",
        }
    }

    fn from_path(path: &str) -> Option<Signal> {
        let path = path.strip_suffix('/').unwrap_or(path);
        Signal::ALL.into_iter().find(|s| s.path() == path)
    }

    fn index(self) -> usize {
        match self {
            Signal::Traces => 0,
            Signal::Logs => 1,
            Signal::Metrics => 2,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct SignalBehaviour {
    refuse: Option<u16>,
    delay: Duration,
}

/// How an [`OtlpHttpReceiver`] behaves. The default accepts every signal at
/// once.
#[derive(Clone, Debug, Default)]
pub struct ReceiverOptions {
    behaviours: [SignalBehaviour; 3],
    count_only: bool,
}

impl ReceiverOptions {
    /// Accept everything, answer at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answer every export of `signal` with HTTP `status` (e.g. 405, as Arize
    /// Phoenix does for logs and metrics) and a short text body. The request is
    /// still logged in [`OtlpHttpReceiver::requests`], but its content is not
    /// decoded nor stored. Panics if `status` is not a valid HTTP status code.
    pub fn refuse(mut self, signal: Signal, status: u16) -> Self {
        assert!(
            StatusCode::from_u16(status).is_ok(),
            "invalid HTTP status {status}"
        );
        self.behaviours[signal.index()].refuse = Some(status);
        self
    }

    /// Wait `delay` before answering any export (refused ones included).
    /// The content is stored when the request arrives, before the delay.
    pub fn delay(mut self, delay: Duration) -> Self {
        for b in &mut self.behaviours {
            b.delay = delay;
        }
        self
    }

    /// Wait `delay` before answering exports of `signal` only.
    pub fn delay_signal(mut self, signal: Signal, delay: Duration) -> Self {
        self.behaviours[signal.index()].delay = delay;
        self
    }

    /// Keep only the number of spans and log records that arrive
    /// ([`OtlpHttpReceiver::span_count`], [`OtlpHttpReceiver::log_count`]),
    /// not their content, so that a load test of millions of items does not
    /// fill the test's memory. Metrics are kept as usual.
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }

    fn behaviour(&self, signal: Signal) -> SignalBehaviour {
        self.behaviours[signal.index()]
    }
}

/// A record of one HTTP request the receiver answered (whatever the outcome).
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The signal the path names, if any.
    pub signal: Option<Signal>,
    /// Every header, names lowercase, values lossily decoded, in arrival order.
    pub headers: Vec<(String, String)>,
    /// Length of the body as sent (before any decompression).
    pub body_len: usize,
    /// The status the receiver answered with.
    pub status: u16,
    /// Why the request was not accepted (decode error, refusal, ...).
    pub error: Option<String>,
    pub received_at: Instant,
}

impl ReceivedRequest {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Content-Type` header.
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    /// The `Content-Encoding` header.
    pub fn content_encoding(&self) -> Option<&str> {
        self.header("content-encoding")
    }

    /// True when the receiver answered 2xx.
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Default)]
struct Collected {
    requests: Vec<ReceivedRequest>,
    trace_requests: Vec<ExportTraceServiceRequest>,
    log_requests: Vec<ExportLogsServiceRequest>,
    metric_requests: Vec<ExportMetricsServiceRequest>,
    spans: Vec<FlatSpan>,
    logs: Vec<FlatLog>,
    metrics: Vec<FlatMetric>,
    span_count: usize,
    log_count: usize,
}

struct Shared {
    options: ReceiverOptions,
    collected: Mutex<Collected>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Collected> {
        self.collected.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An OTLP/HTTP receiver listening on `127.0.0.1:<random port>`, served by
/// its own thread and tokio runtime, so it works from plain `#[test]`
/// functions. It is shut down when dropped.
///
/// It accepts `POST /v1/traces`, `/v1/logs` and `/v1/metrics`, with
/// `Content-Type: application/x-protobuf` (also `application/protobuf`, or
/// no content type) or `application/json`, optionally with
/// `Content-Encoding: gzip`, and answers 200 with an empty export response
/// in the same format. A body that cannot be decoded gets 400, an unknown
/// content type or encoding 415, an unknown path 404, another method 405.
pub struct OtlpHttpReceiver {
    address: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for OtlpHttpReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpHttpReceiver")
            .field("address", &self.address)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl OtlpHttpReceiver {
    /// Starts a receiver that accepts everything. Panics if it cannot start.
    pub fn start() -> Self {
        Self::start_with(ReceiverOptions::default())
    }

    /// Starts a receiver with `options`. Panics if it cannot start.
    pub fn start_with(options: ReceiverOptions) -> Self {
        Self::try_start_with(options).expect("failed to start the OTLP/HTTP test receiver")
    }

    /// Starts a receiver with `options`.
    pub fn try_start_with(options: ReceiverOptions) -> io::Result<Self> {
        Self::try_start_on(0, options)
    }

    /// Starts a receiver with `options` on a chosen port of 127.0.0.1 (0:
    /// any free port), e.g. one an exporter has been failing to reach.
    pub fn try_start_on(port: u16, options: ReceiverOptions) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            options,
            collected: Mutex::new(Collected::default()),
            changed: Condvar::new(),
        });
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("otlp-receiver-{}", address.port()))
            .spawn({
                let shared = shared.clone();
                move || {
                    // The runtime, and with it every connection task, is
                    // dropped when `serve` returns.
                    runtime.block_on(serve(listener, shared, stopped));
                }
            })?;
        Ok(OtlpHttpReceiver {
            address,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// A port of 127.0.0.1 that was free a moment ago, where nothing listens:
    /// an endpoint for a collector that is down, to start later with
    /// [`try_start_on`](Self::try_start_on).
    pub fn free_port() -> io::Result<u16> {
        Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port())
    }

    /// Spans received so far (also with [`ReceiverOptions::count_only`]).
    pub fn span_count(&self) -> usize {
        self.shared.lock().span_count
    }

    /// Log records received so far (also with [`ReceiverOptions::count_only`]).
    pub fn log_count(&self) -> usize {
        self.shared.lock().log_count
    }

    /// The socket address the receiver listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The base endpoint, e.g. `http://127.0.0.1:41234` (no trailing slash),
    /// suitable for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The full URL for one signal, e.g. `http://127.0.0.1:41234/v1/traces`,
    /// suitable for `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    pub fn signal_endpoint(&self, signal: Signal) -> String {
        format!("http://{}{}", self.address, signal.path())
    }

    /// The options the receiver was started with.
    pub fn options(&self) -> &ReceiverOptions {
        &self.shared.options
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<FlatSpan> {
        self.shared.lock().spans.clone()
    }

    /// Every log record received so far, in arrival order.
    pub fn logs(&self) -> Vec<FlatLog> {
        self.shared.lock().logs.clone()
    }

    /// Every metric received so far, in arrival order (a metric exported
    /// several times appears several times).
    pub fn metrics(&self) -> Vec<FlatMetric> {
        self.shared.lock().metrics.clone()
    }

    /// The accepted trace export requests, as decoded.
    pub fn trace_requests(&self) -> Vec<ExportTraceServiceRequest> {
        self.shared.lock().trace_requests.clone()
    }

    /// The accepted logs export requests, as decoded.
    pub fn log_requests(&self) -> Vec<ExportLogsServiceRequest> {
        self.shared.lock().log_requests.clone()
    }

    /// The accepted metrics export requests, as decoded.
    pub fn metric_requests(&self) -> Vec<ExportMetricsServiceRequest> {
        self.shared.lock().metric_requests.clone()
    }

    /// Every HTTP request received, whatever the answer (refused, malformed,
    /// unknown path, ...), in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The HTTP requests received on the path of `signal`.
    pub fn requests_for(&self, signal: Signal) -> Vec<ReceivedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.signal == Some(signal))
            .cloned()
            .collect()
    }

    /// Forgets everything received so far.
    pub fn clear(&self) {
        *self.shared.lock() = Collected::default();
    }

    /// Waits until at least `n` spans arrived or `timeout` passed, then
    /// returns all spans received so far.
    pub fn wait_for_spans(&self, n: usize, timeout: Duration) -> Vec<FlatSpan> {
        self.wait_for_spans_where(|spans| spans.len() >= n, timeout)
    }

    /// Waits until `done(all spans so far)` holds or `timeout` passed, then
    /// returns all spans received so far.
    pub fn wait_for_spans_where(
        &self,
        done: impl FnMut(&[FlatSpan]) -> bool,
        timeout: Duration,
    ) -> Vec<FlatSpan> {
        self.wait(timeout, |c| &c.spans, done)
    }

    /// Waits until at least `n` log records arrived or `timeout` passed, then
    /// returns all log records received so far.
    pub fn wait_for_logs(&self, n: usize, timeout: Duration) -> Vec<FlatLog> {
        self.wait_for_logs_where(|logs| logs.len() >= n, timeout)
    }

    /// Waits until `done(all log records so far)` holds or `timeout` passed,
    /// then returns all log records received so far.
    pub fn wait_for_logs_where(
        &self,
        done: impl FnMut(&[FlatLog]) -> bool,
        timeout: Duration,
    ) -> Vec<FlatLog> {
        self.wait(timeout, |c| &c.logs, done)
    }

    /// Waits until at least `n` metrics arrived or `timeout` passed, then
    /// returns all metrics received so far.
    pub fn wait_for_metrics(&self, n: usize, timeout: Duration) -> Vec<FlatMetric> {
        self.wait_for_metrics_where(|metrics| metrics.len() >= n, timeout)
    }

    /// Waits until `done(all metrics so far)` holds or `timeout` passed, then
    /// returns all metrics received so far.
    pub fn wait_for_metrics_where(
        &self,
        done: impl FnMut(&[FlatMetric]) -> bool,
        timeout: Duration,
    ) -> Vec<FlatMetric> {
        self.wait(timeout, |c| &c.metrics, done)
    }

    /// Waits until a metric called `name` arrived or `timeout` passed; returns
    /// the latest one with that name.
    pub fn wait_for_metric(&self, name: &str, timeout: Duration) -> Option<FlatMetric> {
        self.wait_for_metrics_where(|ms| ms.iter().any(|m| m.name == name), timeout)
            .into_iter()
            .rev()
            .find(|m| m.name == name)
    }

    /// Waits until at least `n` HTTP requests (of any kind or outcome)
    /// arrived or `timeout` passed, then returns all of them.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<ReceivedRequest> {
        self.wait_for_requests_where(|requests| requests.len() >= n, timeout)
    }

    /// Waits until `done(all HTTP requests so far)` holds or `timeout`
    /// passed, then returns all of them.
    pub fn wait_for_requests_where(
        &self,
        done: impl FnMut(&[ReceivedRequest]) -> bool,
        timeout: Duration,
    ) -> Vec<ReceivedRequest> {
        self.wait(timeout, |c| &c.requests, done)
    }

    fn wait<T: Clone>(
        &self,
        timeout: Duration,
        select: impl Fn(&Collected) -> &Vec<T>,
        mut done: impl FnMut(&[T]) -> bool,
    ) -> Vec<T> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.shared.lock();
        loop {
            let items = select(&guard);
            let now = Instant::now();
            if done(items) || now >= deadline {
                return items.clone();
            }
            guard = self
                .shared
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for OtlpHttpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("otlp-receiver: cannot register the listener: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request| handle(shared.clone(), request));
                        // Connection errors (client gone, ...) are of no interest.
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                // E.g. too many open files: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// The wire format of an export body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

/// A decoded export request.
enum Export {
    Traces(ExportTraceServiceRequest),
    Logs(ExportLogsServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
    error: Option<String>,
    allow_post: bool,
}

impl Answer {
    fn error(status: StatusCode, message: String) -> Self {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: message.clone().into_bytes(),
            error: Some(message),
            allow_post: false,
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let signal = Signal::from_path(&path);
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        // The client went away mid-body; nobody is listening for an answer.
        Err(e) => {
            return Ok(build_response(Answer::error(
                StatusCode::BAD_REQUEST,
                e.to_string(),
            )));
        }
    };

    let (answer, export) = process(&shared.options, &parts, signal, &body);

    let record = ReceivedRequest {
        method: parts.method.to_string(),
        path,
        signal,
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len: body.len(),
        status: answer.status.as_u16(),
        error: answer.error.clone(),
        received_at: Instant::now(),
    };
    {
        let mut collected = shared.lock();
        match export {
            Some(Export::Traces(r)) => {
                collected.span_count += r
                    .resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .map(|ss| ss.spans.len())
                    .sum::<usize>();
                if !shared.options.count_only {
                    collected.spans.extend(flatten_traces(&r));
                    collected.trace_requests.push(r);
                }
            }
            Some(Export::Logs(r)) => {
                collected.log_count += r
                    .resource_logs
                    .iter()
                    .flat_map(|rl| &rl.scope_logs)
                    .map(|sl| sl.log_records.len())
                    .sum::<usize>();
                if !shared.options.count_only {
                    collected.logs.extend(flatten_logs(&r));
                    collected.log_requests.push(r);
                }
            }
            Some(Export::Metrics(r)) => {
                collected.metrics.extend(flatten_metrics(&r));
                collected.metric_requests.push(r);
            }
            None => {}
        }
        collected.requests.push(record);
    }
    shared.changed.notify_all();

    if let Some(signal) = signal {
        let delay = shared.options.behaviour(signal).delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    Ok(build_response(answer))
}

fn build_response(answer: Answer) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(answer.body)));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(answer.content_type));
    if answer.allow_post {
        headers.insert(ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

fn process(
    options: &ReceiverOptions,
    parts: &hyper::http::request::Parts,
    signal: Option<Signal>,
    body: &[u8],
) -> (Answer, Option<Export>) {
    let Some(signal) = signal else {
        let message = format!("no OTLP signal at {}", parts.uri.path());
        return (Answer::error(StatusCode::NOT_FOUND, message), None);
    };
    if parts.method != Method::POST {
        let mut answer = Answer::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed, use POST", parts.method),
        );
        answer.allow_post = true;
        return (answer, None);
    }
    if let Some(status) = options.behaviour(signal).refuse {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut answer = Answer::error(
            status,
            format!("{signal:?} refused by the test receiver's options"),
        );
        answer.allow_post = status == StatusCode::METHOD_NOT_ALLOWED;
        return (answer, None);
    }

    let header = |name| {
        parts.headers.get(name).map(|v: &HeaderValue| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        })
    };
    let format = match header(CONTENT_TYPE).as_deref() {
        None => Format::Protobuf,
        Some(content_type) => {
            let media_type = content_type.split(';').next().unwrap_or("").trim();
            match media_type {
                "" | "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
                "application/json" => Format::Json,
                other => {
                    let message = format!("unsupported content type {other:?}");
                    return (
                        Answer::error(StatusCode::UNSUPPORTED_MEDIA_TYPE, message),
                        None,
                    );
                }
            }
        }
    };
    let inflated;
    let payload: &[u8] = match header(CONTENT_ENCODING).as_deref() {
        None | Some("") | Some("identity") => body,
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::new();
            if let Err(e) = flate2::read::MultiGzDecoder::new(body).read_to_end(&mut out) {
                let message = format!("invalid gzip body: {e}");
                return (Answer::error(StatusCode::BAD_REQUEST, message), None);
            }
            inflated = out;
            &inflated
        }
        Some(other) => {
            let message = format!("unsupported content encoding {other:?}");
            return (
                Answer::error(StatusCode::UNSUPPORTED_MEDIA_TYPE, message),
                None,
            );
        }
    };

    let decoded = match signal {
        Signal::Traces => decode(format, payload).map(|r| {
            let ok = encode_empty::<ExportTraceServiceResponse>(format);
            (ok, Export::Traces(r))
        }),
        Signal::Logs => decode(format, payload).map(|r| {
            let ok = encode_empty::<ExportLogsServiceResponse>(format);
            (ok, Export::Logs(r))
        }),
        Signal::Metrics => decode(format, payload).map(|r| {
            let ok = encode_empty::<ExportMetricsServiceResponse>(format);
            (ok, Export::Metrics(r))
        }),
    };
    match decoded {
        Ok((body, export)) => {
            let content_type = match format {
                Format::Protobuf => "application/x-protobuf",
                Format::Json => "application/json",
            };
            let answer = Answer {
                status: StatusCode::OK,
                content_type,
                body,
                error: None,
                allow_post: false,
            };
            (answer, Some(export))
        }
        Err(message) => (Answer::error(StatusCode::BAD_REQUEST, message), None),
    }
}

fn decode<T>(format: Format, payload: &[u8]) -> Result<T, String>
where
    T: Message + Default + serde::de::DeserializeOwned,
{
    match format {
        Format::Protobuf => {
            T::decode(payload).map_err(|e| format!("invalid protobuf export request: {e}"))
        }
        Format::Json => {
            serde_json::from_slice(payload).map_err(|e| format!("invalid JSON export request: {e}"))
        }
    }
}

/// The body of a full-success answer: an empty export response.
fn encode_empty<T: Message + Default>(format: Format) -> Vec<u8> {
    match format {
        Format::Protobuf => T::default().encode_to_vec(),
        // Every field of an export response is optional.
        Format::Json => b"{}".to_vec(),
    }
}

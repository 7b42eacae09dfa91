//! `wasi:http` around guests: a SERVER span per request served
//! ([`ServerSpan`]), a CLIENT span per outgoing request with W3C trace
//! context injected ([`WasiObserveCtx`] as the `wasi:http` hooks), following
//! the OpenTelemetry HTTP semantic conventions, plus their duration metrics.
//!
//! Guest spans nest under the SERVER span when the store's ctx is built with
//! [`WasiObserveCtx::with_parent`]`(server.context())`; CLIENT spans hang
//! under the guest's innermost open span, so no guest code is needed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, Method, Request, Version};
use http_body_util::BodyExt as _;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{Link, SpanContext, SpanKind, Status, TraceContextExt as _};
use opentelemetry::{Context, KeyValue, StringValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_semantic_conventions::attribute as semconv;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use super::HostSpan;
use crate::ctx::WasiObserveCtx;
use crate::pipeline::Telemetry;
use crate::pipeline::instruments::HostHistogram;

/// The W3C trace context a request carries (`traceparent`, `tracestate`).
/// A missing or malformed header gives `None`: the request starts a new trace
/// and is served as usual.
pub fn extract_context(headers: &HeaderMap) -> Option<SpanContext> {
    // Looked up by a constant name first: the propagator parses the name
    // it asks for (about 300 instructions), and most requests carry none.
    static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
    if !headers.contains_key(&TRACEPARENT) {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let span = cx.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Writes `cx` as `traceparent` (and `tracestate`) into `headers`, replacing
/// what was there; an invalid context removes them.
pub fn inject_context(cx: &SpanContext, headers: &mut HeaderMap) {
    headers.remove("traceparent");
    headers.remove("tracestate");
    if cx.is_valid() {
        let cx = Context::new().with_remote_span_context(cx.clone());
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }
}

/// What a server does with the trace context (`traceparent`, `tracestate`)
/// a request carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IncomingContext {
    /// The caller is trusted: the SERVER span continues its trace, as a
    /// child of its span, and its sampled flag decides with a parent-based
    /// sampler.
    #[default]
    Continue,
    /// The caller is not trusted: the request starts a new trace, which
    /// the host's own sampler decides on, and the caller's span context is
    /// kept as a link on the SERVER span, so the two can still be joined.
    Link,
}

/// The most bytes of `server.address` a client duration metric carries:
/// a DNS name is at most 253 bytes, an IP address far less. The guest
/// chooses the URL; a longer value is cut, so it cannot grow the host's
/// series by their size. (The CLIENT span has the value whole, up to the
/// attribute length limit.)
pub const MAX_METRIC_ADDRESS_LEN: usize = 255;

/// `value`, cut to at most `max` bytes at a character boundary.
fn cut(value: &str, max: usize) -> String {
    let mut s = value.to_string();
    crate::pipeline::limits::truncate(&mut s, max);
    s
}

/// The OpenTelemetry name of a method: the known ones as they are, any other
/// as `_OTHER` (the span is then named `HTTP`).
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

fn method_attributes(method: &Method, attrs: &mut Vec<KeyValue>) -> &'static str {
    match method_name(method) {
        Some(name) => {
            attrs.push(KeyValue::new(semconv::HTTP_REQUEST_METHOD, name));
            name
        }
        None => {
            attrs.push(KeyValue::new(semconv::HTTP_REQUEST_METHOD, "_OTHER"));
            attrs.push(KeyValue::new(
                semconv::HTTP_REQUEST_METHOD_ORIGINAL,
                method.as_str().to_string(),
            ));
            "HTTP"
        }
    }
}

/// The attributes a duration metric may carry of those a span has so far:
/// `http.request.method_original` is the client's (or guest's) to choose,
/// so, as the HTTP conventions say, it goes on spans only; on metrics an
/// unknown method is `_OTHER`, and no one can grow the host's series.
fn metric_subset(attrs: &[KeyValue]) -> Vec<KeyValue> {
    attrs
        .iter()
        .filter(|kv| kv.key.as_str() != semconv::HTTP_REQUEST_METHOD_ORIGINAL)
        .cloned()
        .collect()
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

/// `host[:port]` split, for `server.address` / `server.port`. A name or
/// IPv4 address with a port, what nearly every `Host` header holds, is
/// split here; anything else goes through `http`'s parser, which took
/// about 1 000 instructions of every request `serve` answered.
fn split_authority(authority: &str) -> (String, Option<u16>) {
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    if let Some((host, port)) = authority.split_once(':')
        && plain(host)
        && (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && let Ok(port) = port.parse::<u16>()
    {
        return (host.to_string(), Some(port));
    }
    match authority.parse::<http::uri::Authority>() {
        Ok(a) => (a.host().to_string(), a.port_u16()),
        Err(_) => (authority.to_string(), None),
    }
}

/// `url.scheme`: the two a server has as constants.
fn scheme_value(scheme: &str) -> StringValue {
    match scheme {
        "http" => "http".into(),
        "https" => "https".into(),
        other => other.to_string().into(),
    }
}

/// An IP address as text, made once per request and shared by the
/// attributes that carry it. An IPv4 address is written here: `Display`
/// goes through the formatter for each octet, about 600 instructions,
/// paid by every request `serve` answers.
fn ip_value(ip: IpAddr) -> StringValue {
    let IpAddr::V4(v4) = ip else {
        return StringValue::from(Arc::<str>::from(ip.to_string()));
    };
    let mut buf = [0u8; 15];
    let mut n = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            buf[n] = b'.';
            n += 1;
        }
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        n += 1;
    }
    // Digits and dots: always UTF-8.
    StringValue::from(Arc::<str>::from(
        std::str::from_utf8(&buf[..n]).unwrap_or_default(),
    ))
}

/// The bucket boundaries the HTTP semantic conventions advise.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

const SERVER_DURATION: HostHistogram = HostHistogram {
    name: "http.server.request.duration",
    unit: "s",
    description: "Duration of HTTP server requests.",
    boundaries: BUCKETS,
};

const CLIENT_DURATION: HostHistogram = HostHistogram {
    name: "http.client.request.duration",
    unit: "s",
    description: "Duration of HTTP client requests.",
    boundaries: BUCKETS,
};

/// What a request span needs to record its outcome and duration metric.
struct Exchange {
    span: HostSpan,
    telemetry: Telemetry,
    start: Instant,
    /// Attributes the duration metric carries (a low-cardinality subset).
    metric_attributes: Vec<KeyValue>,
    status: Option<u16>,
    error_type: Option<String>,
}

impl Exchange {
    fn new(
        telemetry: &Telemetry,
        name: &str,
        kind: SpanKind,
        parent: Option<&SpanContext>,
        attributes: Vec<KeyValue>,
        metric_attributes: Vec<KeyValue>,
    ) -> Exchange {
        Self::linked(
            telemetry,
            name,
            kind,
            parent,
            attributes,
            metric_attributes,
            Vec::new(),
        )
    }

    fn linked(
        telemetry: &Telemetry,
        name: &str,
        kind: SpanKind,
        parent: Option<&SpanContext>,
        attributes: Vec<KeyValue>,
        metric_attributes: Vec<KeyValue>,
        links: Vec<Link>,
    ) -> Exchange {
        Exchange {
            span: HostSpan::start_linked(
                telemetry,
                name.to_string(),
                kind,
                parent,
                attributes,
                links,
            ),
            telemetry: telemetry.clone(),
            start: Instant::now(),
            metric_attributes,
            status: None,
            error_type: None,
        }
    }

    /// Records nothing: telemetry is off (nothing is computed either, so
    /// `OTEL_SDK_DISABLED=true` costs no attribute work per request).
    fn disabled(telemetry: &Telemetry) -> Exchange {
        Exchange::new(
            telemetry,
            "",
            SpanKind::Internal,
            None,
            Vec::new(),
            Vec::new(),
        )
    }

    fn response(&mut self, status: u16, server: bool) {
        if !self.telemetry.is_enabled() {
            return;
        }
        self.status = Some(status);
        self.span.set_attribute(KeyValue::new(
            semconv::HTTP_RESPONSE_STATUS_CODE,
            i64::from(status),
        ));
        // Servers fail on 5xx; clients on 4xx too (the request failed).
        let failed = if server { status >= 500 } else { status >= 400 };
        if failed && self.error_type.is_none() {
            self.error_type = Some(status.to_string());
            self.span
                .set_attribute(KeyValue::new(semconv::ERROR_TYPE, status.to_string()));
            self.span.set_status(Status::error(""));
        }
    }

    fn error(&mut self, error_type: &str, message: String) {
        if !self.telemetry.is_enabled() {
            return;
        }
        self.error_type = Some(error_type.to_string());
        self.span
            .set_attribute(KeyValue::new(semconv::ERROR_TYPE, error_type.to_string()));
        self.span.set_status(Status::error(message));
    }

    fn finish(&mut self, histogram: &HostHistogram) {
        let Some(histogram) = self.telemetry.host_histogram(histogram) else {
            return;
        };
        let mut attrs = std::mem::take(&mut self.metric_attributes);
        if let Some(status) = self.status {
            attrs.push(KeyValue::new(
                semconv::HTTP_RESPONSE_STATUS_CODE,
                i64::from(status),
            ));
        }
        if let Some(e) = self.error_type.take() {
            attrs.push(KeyValue::new(semconv::ERROR_TYPE, e));
        }
        histogram.record(self.start.elapsed().as_secs_f64(), &attrs);
    }
}

/// The SERVER span of one incoming request. Set its outcome with
/// [`response`](Self::response) and [`error`](Self::error); dropping it ends
/// it and records `http.server.request.duration`.
pub struct ServerSpan {
    exchange: Exchange,
}

impl ServerSpan {
    /// Starts the span for `request`, continuing the caller's trace when the
    /// request carries a valid `traceparent`. `scheme` is how it arrived
    /// (`http`), `local` the address it arrived at (used when the request
    /// names no host), `peer` the client's.
    pub fn start<B>(
        telemetry: &Telemetry,
        request: &Request<B>,
        scheme: &str,
        local: SocketAddr,
        peer: Option<SocketAddr>,
    ) -> ServerSpan {
        Self::start_with(
            telemetry,
            request,
            scheme,
            local,
            peer,
            IncomingContext::Continue,
        )
    }

    /// As [`start`](Self::start), with the caller's trace context continued
    /// or only linked, as `incoming` says.
    pub fn start_with<B>(
        telemetry: &Telemetry,
        request: &Request<B>,
        scheme: &str,
        local: SocketAddr,
        peer: Option<SocketAddr>,
        incoming: IncomingContext,
    ) -> ServerSpan {
        if !telemetry.is_enabled() {
            return ServerSpan {
                exchange: Exchange::disabled(telemetry),
            };
        }
        let mut attrs = Vec::with_capacity(12);
        let name = method_attributes(request.method(), &mut attrs);
        attrs.push(KeyValue::new(semconv::URL_SCHEME, scheme_value(scheme)));
        let mut metric_attributes = metric_subset(&attrs);
        attrs.push(KeyValue::new(
            semconv::URL_PATH,
            request.uri().path().to_string(),
        ));
        if let Some(q) = request.uri().query() {
            attrs.push(KeyValue::new(semconv::URL_QUERY, q.to_string()));
        }
        let (address, port) = match request.uri().authority() {
            Some(a) => (a.host().to_string(), a.port_u16()),
            None => match request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
            {
                Some(host) => split_authority(host),
                None => (local.ip().to_string(), Some(local.port())),
            },
        };
        // Not on the duration metric: opt-in there in the conventions, and
        // the Host header is the client's to choose (unbounded series).
        attrs.push(KeyValue::new(semconv::SERVER_ADDRESS, address));
        if let Some(port) = port {
            attrs.push(KeyValue::new(semconv::SERVER_PORT, i64::from(port)));
        }
        if let Some(v) = protocol_version(request.version()) {
            attrs.push(KeyValue::new(semconv::NETWORK_PROTOCOL_VERSION, v));
            metric_attributes.push(KeyValue::new(semconv::NETWORK_PROTOCOL_VERSION, v));
        }
        if let Some(ua) = request
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|h| h.to_str().ok())
        {
            attrs.push(KeyValue::new(semconv::USER_AGENT_ORIGINAL, ua.to_string()));
        }
        if let Some(peer) = peer {
            let ip = ip_value(peer.ip());
            attrs.push(KeyValue::new(semconv::CLIENT_ADDRESS, ip.clone()));
            attrs.push(KeyValue::new(semconv::NETWORK_PEER_ADDRESS, ip));
            attrs.push(KeyValue::new(
                semconv::NETWORK_PEER_PORT,
                i64::from(peer.port()),
            ));
        }
        let caller = extract_context(request.headers());
        let (parent, links) = match (incoming, caller) {
            (IncomingContext::Continue, caller) => (caller, Vec::new()),
            (IncomingContext::Link, Some(caller)) => (None, vec![Link::with_context(caller)]),
            (IncomingContext::Link, None) => (None, Vec::new()),
        };
        ServerSpan {
            exchange: Exchange::linked(
                telemetry,
                name,
                SpanKind::Server,
                parent.as_ref(),
                attrs,
                metric_attributes,
                links,
            ),
        }
    }

    /// A SERVER span for a request too malformed to parse (no method, no
    /// path): named `HTTP`, with an error status saying why.
    pub fn malformed(
        telemetry: &Telemetry,
        local: SocketAddr,
        peer: Option<SocketAddr>,
        error_type: &str,
        message: String,
    ) -> ServerSpan {
        let metric_attributes = vec![
            KeyValue::new(semconv::HTTP_REQUEST_METHOD, "_OTHER"),
            KeyValue::new(semconv::URL_SCHEME, "http"),
        ];
        let mut attrs = metric_attributes.clone();
        attrs.push(KeyValue::new(
            semconv::SERVER_ADDRESS,
            local.ip().to_string(),
        ));
        attrs.push(KeyValue::new(semconv::SERVER_PORT, i64::from(local.port())));
        if let Some(peer) = peer {
            attrs.push(KeyValue::new(
                semconv::CLIENT_ADDRESS,
                peer.ip().to_string(),
            ));
        }
        let mut span = ServerSpan {
            exchange: Exchange::new(
                telemetry,
                "HTTP",
                SpanKind::Server,
                None,
                attrs,
                metric_attributes,
            ),
        };
        span.error(error_type, message);
        span
    }

    /// The span's context: the parent of the guest's spans.
    pub fn context(&self) -> &SpanContext {
        self.exchange.span.context()
    }

    /// Records the response status; 5xx marks the span as failed.
    pub fn response(&mut self, status: u16) {
        self.exchange.response(status, true);
    }

    /// Marks the request as failed: `error_type` is a short, low-cardinality
    /// name (`trap`, `timeout`), `message` the details.
    pub fn error(&mut self, error_type: &str, message: impl Into<String>) {
        self.exchange.error(error_type, message.into());
    }
}

impl Drop for ServerSpan {
    fn drop(&mut self) {
        // Dropped with no outcome: the request was cancelled before its
        // answer (`serve`: a second Ctrl-C stopped it). An error, so that
        // it is not taken for a success.
        let x = &mut self.exchange;
        if x.status.is_none() && x.error_type.is_none() {
            x.error(
                "cancelled",
                "the request was cancelled before it was answered".into(),
            );
        }
        self.exchange.finish(&SERVER_DURATION);
    }
}

/// The CLIENT span of one outgoing request.
struct ClientSpan {
    exchange: Exchange,
}

impl ClientSpan {
    fn start<B>(telemetry: &Telemetry, request: &Request<B>, parent: Option<&SpanContext>) -> Self {
        if !telemetry.is_enabled() {
            return ClientSpan {
                exchange: Exchange::disabled(telemetry),
            };
        }
        let mut attrs = Vec::with_capacity(6);
        let name = method_attributes(request.method(), &mut attrs);
        let mut metric_attributes = metric_subset(&attrs);
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("http");
        if let Some(host) = uri.host() {
            let port = uri
                .port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 });
            attrs.push(KeyValue::new(semconv::SERVER_ADDRESS, host.to_string()));
            attrs.push(KeyValue::new(semconv::SERVER_PORT, i64::from(port)));
            metric_attributes.push(KeyValue::new(
                semconv::SERVER_ADDRESS,
                cut(host, MAX_METRIC_ADDRESS_LEN),
            ));
            metric_attributes.push(KeyValue::new(semconv::SERVER_PORT, i64::from(port)));
        }
        // wasmtime-wasi-http sends only `http` and `https` (the hooks'
        // `is_supported_scheme`), so this is one of two values.
        metric_attributes.push(KeyValue::new(semconv::URL_SCHEME, scheme.to_string()));
        attrs.push(KeyValue::new(semconv::URL_FULL, redacted_url(uri)));
        ClientSpan {
            exchange: Exchange::new(
                telemetry,
                name,
                SpanKind::Client,
                parent,
                attrs,
                metric_attributes,
            ),
        }
    }
}

impl Drop for ClientSpan {
    fn drop(&mut self) {
        self.exchange.finish(&CLIENT_DURATION);
    }
}

/// The URL with any credentials replaced, as the conventions ask.
fn redacted_url(uri: &http::Uri) -> String {
    let s = uri.to_string();
    match uri.authority() {
        Some(a) if a.as_str().contains('@') => {
            let host = a.as_str().rsplit_once('@').map_or("", |(_, h)| h);
            s.replacen(a.as_str(), &format!("REDACTED:REDACTED@{host}"), 1)
        }
        _ => s,
    }
}

/// A `wasmtime_wasi_http::Error` as `error.type`: the I/O error's kind for
/// a failed connection (`ConnectionRefused`), else the variant's name.
fn error_type(e: &wasmtime_wasi_http::Error) -> String {
    if let wasmtime_wasi_http::Error::Connect(io) = e {
        return format!("{:?}", io.kind());
    }
    let debug = format!("{e:?}");
    let end = debug
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(debug.len());
    debug[..end].to_string()
}

type ResponseFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

/// Each outgoing request a guest makes through `wasi:http/outgoing-handler`
/// gets a CLIENT span under the guest's innermost open span (or function
/// frame, in an instrumented guest), and carries
/// that span's W3C trace context (replacing any the guest set), so the next
/// service continues the trace. The request is then sent as wasmtime's
/// default does. The span ends when the response head arrives (or the
/// request fails).
impl WasiHttpHooks for WasiObserveCtx {
    fn send_request(
        &mut self,
        mut request: Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> ResponseFuture {
        let _ = fut;
        // Function frames of an instrumented guest count: the request is
        // then under the function that sent it (which is kept as a span).
        let parent = self.scope.implicit_parent();
        let mut span = ClientSpan::start(self.scope.telemetry(), &request, parent.as_ref());
        let cx = span.exchange.span.context();
        if cx.is_valid() {
            inject_context(cx, request.headers_mut());
        }
        Box::new(async move {
            match wasmtime_wasi_http::default_send_request(request, options).await {
                Ok((response, io)) => {
                    span.exchange.response(response.status().as_u16(), false);
                    Ok((
                        response.map(|b| b.boxed_unsync()),
                        Box::new(io) as Box<dyn Future<Output = _> + Send>,
                    ))
                }
                Err(e) => {
                    span.exchange.error(&error_type(&e), format!("{e:?}"));
                    Err(e)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a opentelemetry::Value> {
        attrs
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    /// Addresses written by hand read as `Display` writes them: every
    /// octet value in every position, and IPv6 through `Display` itself.
    #[test]
    fn ip_text_is_what_display_writes() {
        for octet in 0..=255u8 {
            for ip in [
                [octet, 0, 0, 0],
                [0, octet, 0, 0],
                [9, 99, octet, 100],
                [255, 10, 1, octet],
            ] {
                let ip = IpAddr::from(ip);
                assert_eq!(ip_value(ip).as_str(), ip.to_string());
            }
        }
        let v6: IpAddr = "2001:db8::ff00:42:8329".parse().unwrap();
        assert_eq!(ip_value(v6).as_str(), "2001:db8::ff00:42:8329");
    }

    /// The hand-written split of a `Host` header gives what `http`'s parser
    /// gives, for the headers it takes and the ones it leaves to the parser.
    #[test]
    fn authority_split_is_what_the_parser_gives() {
        let parsed = |a: &str| match a.parse::<http::uri::Authority>() {
            Ok(p) => (p.host().to_string(), p.port_u16()),
            Err(_) => (a.to_string(), None),
        };
        let mut cases: Vec<String> = [
            "127.0.0.1:8080",
            "localhost:80",
            "example.com:443",
            "a-b.c:0",
            "a:65535",
            "a:65536",
            "a:99999",
            "a:123456",
            "a:",
            ":80",
            "a:+80",
            "a:-1",
            "a:8a",
            "a:80:81",
            "[::1]:8080",
            "[::1]",
            "user@host:80",
            "ex ample:80",
            "h_st:80",
            "éxample:80",
            "example.com",
            "",
            ":",
        ]
        .map(String::from)
        .to_vec();
        // Every byte as a host's first byte and as a port's.
        for b in 0..128u8 {
            let c = char::from(b);
            cases.push(format!("{c}a:80"));
            cases.push(format!("a:8{c}"));
        }
        for case in &cases {
            assert_eq!(split_authority(case), parsed(case), "{case:?}");
        }
    }

    /// The guest picks the URL of its outgoing requests: the client duration
    /// metric's `server.address` is cut to 255 bytes, and an unknown method is `_OTHER` there with no original;
    /// the CLIENT span keeps both.
    #[test]
    fn client_metrics_carry_a_bounded_address_and_no_original_method() {
        let telemetry = Telemetry::builder().build().unwrap();
        let host = format!("{}.example", "a".repeat(600));
        let request = Request::builder()
            .method("BREW")
            .uri(format!("http://{host}:8080/pot"))
            .body(())
            .unwrap();
        let span = ClientSpan::start(&telemetry, &request, None);
        let metric = &span.exchange.metric_attributes;
        let address = value(metric, semconv::SERVER_ADDRESS).unwrap().as_str();
        assert_eq!(address, "a".repeat(MAX_METRIC_ADDRESS_LEN));
        assert_eq!(
            value(metric, semconv::HTTP_REQUEST_METHOD).map(|v| v.as_str().into_owned()),
            Some("_OTHER".into())
        );
        assert!(value(metric, semconv::HTTP_REQUEST_METHOD_ORIGINAL).is_none());
        assert_eq!(
            value(metric, semconv::SERVER_PORT),
            Some(&opentelemetry::Value::I64(8080))
        );
        assert!(value(metric, semconv::URL_FULL).is_none());

        let short = Request::builder()
            .uri("http://backend.internal/x")
            .body(())
            .unwrap();
        let span = ClientSpan::start(&telemetry, &short, None);
        assert_eq!(
            value(&span.exchange.metric_attributes, semconv::SERVER_ADDRESS)
                .map(|v| v.as_str().into_owned()),
            Some("backend.internal".into())
        );
        let _ = telemetry.shutdown();
    }

    #[test]
    fn cut_keeps_whole_characters() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc");
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("ééé", 5), "éé");
        assert_eq!(cut("", 0), "");
    }
}

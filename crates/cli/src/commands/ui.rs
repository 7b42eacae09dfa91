//! `wasi-observe ui`: a local web page over the telemetry store.
//!
//! The page (HTML, CSS and plain JavaScript, compiled into the binary) talks
//! to a small JSON API:
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /api/traces?q=&service=&name=&min_ms=&errors=1&slowest=1&limit=&before=` | `[TraceSummary]` |
//! | `GET /api/traces/{id}` | `Trace` (spans and logs) |
//! | `GET /api/logs?level=&service=&trace=&q=&limit=` | `[LogRecord]` |
//! | `GET /api/metrics?service=` | `[MetricPoint]`, the current values |
//! | `GET /api/metrics/{name}?service=` | `[MetricPoint]`, every point over time |
//! | `GET /api/services` | `[String]` |
//! | `GET /api/stats` | counts and the store's path |

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use clap::Parser;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use wasi_observe_store::{LogFilter, MetricFilter, Store, TraceFilter};
use wasmtime::Result;
use wasmtime::error::Context as _;

use crate::commands::logs::parse_level;
use crate::common::DbOptions;

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

/// Serve a web UI over the telemetry store: traces with search and filters,
/// waterfalls with span details, logs, and metrics charted over time.
#[derive(Parser)]
pub struct UiCommand {
    /// Address to listen on (port 0 picks a free port). Anything but a
    /// loopback address makes your telemetry readable from the network.
    #[arg(long, default_value = "127.0.0.1:7878")]
    addr: SocketAddr,

    #[command(flatten)]
    db: DbOptions,
}

impl UiCommand {
    /// Serves until interrupted.
    pub fn execute(self) -> Result<()> {
        let store = self.db.open()?;
        let loopback = self.addr.ip().is_loopback();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the server runtime")?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(self.addr)
                .await
                .with_context(|| format!("cannot listen on {}", self.addr))?;
            let addr = listener.local_addr()?;
            if !loopback {
                eprintln!(
                    "wasi-observe ui: warning: listening on {addr}, which is not a loopback address: \
                     anyone who can reach it can read this telemetry"
                );
            }
            println!(
                "wasi-observe ui: http://{addr}/ (store: {}); Ctrl-C to stop",
                store.path().display()
            );
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        eprintln!("wasi-observe ui: accept failed: {e}");
                        continue;
                    }
                };
                let store = store.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let store = store.clone();
                        async move {
                            // Store queries block briefly; keep them off the
                            // reactor threads.
                            let response = tokio::task::spawn_blocking(move || {
                                handle(&store, &req, loopback)
                            })
                            .await
                            .unwrap_or_else(|_| {
                                text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                            });
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    }
}

fn response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, content_type.parse().expect("a valid header"));
    h.insert(CACHE_CONTROL, "no-store".parse().expect("a valid header"));
    h.insert(
        "x-content-type-options",
        "nosniff".parse().expect("a valid header"),
    );
    h.insert(
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
            .parse()
            .expect("a valid header"),
    );
    r
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body.to_string())
}

fn json(value: anyhow::Result<impl Serialize>) -> Response<Full<Bytes>> {
    match value.and_then(|v| Ok(serde_json::to_vec(&v)?)) {
        Ok(body) => response(StatusCode::OK, "application/json", body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    }
}

/// Answers one request.
fn handle(store: &Store, req: &Request<Incoming>, loopback: bool) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET");
    }
    // Bound to loopback, answer only to loopback names: a web page elsewhere
    // cannot read the telemetry through a rebound DNS name.
    if loopback {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let name = host
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(host, |(name, _)| name);
        if !matches!(name, "localhost" | "127.0.0.1" | "[::1]") {
            return text(StatusCode::FORBIDDEN, "unexpected Host header");
        }
    }
    let path = req.uri().path();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let q = |k: &str| query.get(k).filter(|v| !v.is_empty()).cloned();
    let num = |k: &str| q(k).and_then(|v| v.parse::<f64>().ok());
    match path {
        "/" | "/index.html" => response(StatusCode::OK, "text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => response(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS),
        "/app.css" => response(StatusCode::OK, "text/css; charset=utf-8", APP_CSS),
        "/api/services" => json(store.services()),
        "/api/stats" => json(store.counts().map(
            |c| serde_json::json!({ "counts": c, "path": store.path().display().to_string() }),
        )),
        "/api/traces" => json(store.traces(&TraceFilter {
            service: q("service"),
            span_name: q("name"),
            search: q("q"),
            min_duration_ns: num("min_ms").map(|ms| (ms * 1e6) as i64),
            errors_only: q("errors").is_some_and(|v| v == "1" || v == "true"),
            slowest_first: q("slowest").is_some_and(|v| v == "1" || v == "true"),
            before_ns: num("before").map(|v| v as i64),
            limit: Some(num("limit").map_or(100, |v| v.clamp(1.0, 1000.0) as usize)),
            ..Default::default()
        })),
        "/api/logs" => {
            let level = match q("level").map(|l| parse_level(&l)).transpose() {
                Ok(level) => level,
                Err(e) => return text(StatusCode::BAD_REQUEST, &e),
            };
            json(store.logs(&LogFilter {
                min_severity: level,
                service: q("service"),
                trace_id: q("trace").map(|t| t.to_ascii_lowercase()),
                search: q("q"),
                limit: Some(num("limit").map_or(200, |v| v.clamp(1.0, 5000.0) as usize)),
                ..Default::default()
            }))
        }
        "/api/metrics" => json(store.metrics(&MetricFilter {
            service: q("service"),
            ..Default::default()
        })),
        _ => {
            if let Some(id) = path.strip_prefix("/api/traces/") {
                let id = percent_decode(id);
                return match store.resolve_trace_id(&id) {
                    Ok(Some(id)) => match store.trace(&id) {
                        Ok(Some(t)) => json(Ok(t)),
                        Ok(None) => text(StatusCode::NOT_FOUND, "no such trace"),
                        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
                    },
                    Ok(None) => text(StatusCode::NOT_FOUND, "no such trace"),
                    Err(e) => text(StatusCode::BAD_REQUEST, &format!("{e:#}")),
                };
            }
            if let Some(name) = path.strip_prefix("/api/metrics/") {
                let filter = MetricFilter {
                    service: q("service"),
                    ..Default::default()
                };
                return json(store.metric_series(&percent_decode(name), &filter));
            }
            text(StatusCode::NOT_FOUND, "not found")
        }
    }
}

/// `a=1&b=x%20y` to a map (the last of a repeated key wins).
fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` and `+`; invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'+', _, _) => out.push(b' '),
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            (b, _, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        let q = parse_query("q=GET%20%2Fitem&errors=1&x=%zz&y=a+b&z=%4");
        assert_eq!(q["q"], "GET /item");
        assert_eq!(q["errors"], "1");
        assert_eq!(q["x"], "%zz");
        assert_eq!(q["y"], "a b");
        assert_eq!(q["z"], "%4");
        assert_eq!(percent_decode("%E2%9C%93"), "✓");
    }
}

//! `wasi-observe serve`: serve HTTP with a `wasi:http/proxy` component, one
//! fresh store per request, each request traced.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::Semaphore;
use wasi_observe_host::export::batch::BatchConfig;
use wasi_observe_host::functions::FunctionNames;
use wasi_observe_host::host_spans::calls;
use wasi_observe_host::host_spans::http::{IncomingContext, ServerSpan};
use wasi_observe_host::{Telemetry, TelemetryBuilder, WasiObserveCtx};
use wasmtime::component::Linker;
use wasmtime::error::Context as _;
use wasmtime::{Engine, Result, Store};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{ProxyIndices, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::commands::run::report_store;
use crate::common::{
    CallOptions, ExportOptions, Host, LimitOptions, Loaded, engine, finish, format_size, load,
    parse_duration, parse_env, pooled_engine, trap_summary,
};

/// Serve HTTP with a `wasi:http/proxy` component: every request runs in a
/// fresh instance under a SERVER span that continues the caller's trace;
/// the component's outgoing requests get CLIENT spans and carry the trace.
#[derive(Parser)]
pub struct ServeCommand {
    /// The address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,

    /// Set a guest environment variable (`KEY` alone passes the host's value).
    #[arg(long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env)]
    envs: Vec<(String, String)>,

    /// How long one request may take, from its arrival until the component
    /// returns; then it is stopped and answered 504 if nothing was sent yet.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    request_timeout: Duration,

    /// How long a shutdown (Ctrl-C, SIGTERM) waits for requests in flight.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    shutdown_timeout: Duration,

    /// In an instrumented component (`wasi-observe instrument`), calls
    /// shorter than this are not spans unless something kept happened inside
    /// them (`0` keeps every call).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "100us")]
    min_function_duration: Duration,

    /// How instances are allocated: `pooling` reuses preallocated slots,
    /// `on-demand` maps fresh memory for each request. Pooling falls back to
    /// on-demand, with a notice, where the pool cannot be reserved or the
    /// component does not fit its slots.
    #[arg(long, value_name = "KIND", default_value = "pooling")]
    allocator: Allocator,

    /// How many requests may run at once (one instance each), whichever
    /// the allocator; more are answered 503 at once (`error.type`
    /// `overloaded`), counted and reported at exit.
    #[arg(long, value_name = "N", default_value = "1000",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_instances: u32,

    #[command(flatten)]
    limits: LimitOptions,

    /// Whose `traceparent` decides a request's trace: `always` (every
    /// caller's: the request continues its trace, and its sampled flag
    /// counts), `never` (no one's: each request starts a trace of its own,
    /// sampled by this host, with the caller's context kept as a span link),
    /// or `loopback` (callers on this machine are trusted, others are not).
    #[arg(long, value_name = "WHEN", default_value = "always")]
    trust_traceparent: Trust,

    #[command(flatten)]
    export: ExportOptions,

    #[command(flatten)]
    calls: CallOptions,

    /// The component to serve.
    component: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Allocator {
    Pooling,
    OnDemand,
}

/// Whose incoming trace context is continued (`--trust-traceparent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Trust {
    Always,
    Never,
    Loopback,
}

impl Trust {
    /// What a request from `peer` does with its `traceparent`.
    fn incoming(self, peer: SocketAddr) -> IncomingContext {
        let trusted = match self {
            Trust::Always => true,
            Trust::Never => false,
            // `::ffff:127.0.0.1` too.
            Trust::Loopback => peer.ip().to_canonical().is_loopback(),
        };
        if trusted {
            IncomingContext::Continue
        } else {
            IncomingContext::Link
        }
    }
}

/// What the server refused or stopped, reported at exit.
#[derive(Default)]
struct Counts {
    /// Requests that reached the component's door (a Host header, parsed).
    requests: AtomicU64,
    /// Answered 503 because `--max-instances` requests were running.
    overloaded: AtomicU64,
    /// Stopped because an instance was refused memory (or a table) past
    /// `--max-memory`.
    memory_limit: AtomicU64,
}

impl Counts {
    /// Counts one; says so on stderr the first time (later ones are only
    /// counted: a client must not be able to flood the log).
    fn add(counter: &AtomicU64, first: impl FnOnce() -> String) {
        if counter.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!("wasi-observe: {} (counted, reported at exit)", first());
        }
    }

    /// The line printed at exit.
    fn summary(&self, max_instances: u32, max_memory: usize) -> String {
        format!(
            "{} requests; {} refused at --max-instances {max_instances} (503); \
             {} stopped at --max-memory {} (503)",
            self.requests.load(Ordering::Relaxed),
            self.overloaded.load(Ordering::Relaxed),
            self.memory_limit.load(Ordering::Relaxed),
            format_size(max_memory)
        )
    }
}

/// What every request shares.
struct Server {
    engine: Engine,
    pre: ProxyPre<Host>,
    /// Where the component's exports are, found once: a request's
    /// instance needs the handler and, after it, the SDK's `flush`.
    proxy: ProxyIndices,
    telemetry: Telemetry,
    /// The guests' environment (`--env`), shared by every request's ctx.
    envs: Arc<[(String, String)]>,
    local: SocketAddr,
    request_timeout: Duration,
    functions: Arc<FunctionNames>,
    min_function_duration: Duration,
    /// With --trace-calls: the component's import names, and the qualified
    /// name of the `handle` export when the filter selects it.
    calls: Option<(Arc<calls::ImportNames>, Option<String>)>,
    /// One permit per request that may run (`--max-instances`).
    slots: Arc<Semaphore>,
    max_instances: u32,
    limits: LimitOptions,
    trust: Trust,
    counts: Counts,
}

/// How often the epoch ticks: a running guest yields to other requests (and
/// notices its timeout) this often.
const TICK: Duration = Duration::from_millis(10);

/// The largest request head hyper reads (larger: 431).
const MAX_HEAD: usize = 64 * 1024;

impl ServeCommand {
    /// The engine and the compiled guest: pooled if asked for and possible.
    fn load(&self) -> Result<(Engine, Loaded)> {
        let pooled = match self.allocator {
            Allocator::Pooling => pooled_engine(self.max_instances, self.limits.max_memory)
                .and_then(|engine| Ok((engine.clone(), load(&engine, &self.component)?))),
            Allocator::OnDemand => return self.load_on_demand(),
        };
        let why = match pooled {
            Ok(loaded) => return Ok(loaded),
            Err(why) => why,
        };
        // Say why only when on-demand does better: a file that is not a
        // component fails there too, with its own error.
        let loaded = self.load_on_demand()?;
        eprintln!(
            "wasi-observe: the pooling allocator cannot be used ({why:#}); \
             allocating instances on demand"
        );
        Ok(loaded)
    }

    fn load_on_demand(&self) -> Result<(Engine, Loaded)> {
        let engine = engine(false)?;
        let loaded = load(&engine, &self.component)?;
        Ok((engine, loaded))
    }

    /// Serves until Ctrl-C or SIGTERM, then finishes the requests in flight
    /// and flushes telemetry.
    pub fn execute(self) -> Result<()> {
        if !self.component.exists() {
            wasmtime::bail!("no such file: {}", self.component.display());
        }
        let (engine, loaded) = self.load()?;
        let Loaded::Component(component, bytes) = loaded else {
            wasmtime::bail!(
                "{} is a core module; serve needs a wasi:http/proxy component",
                self.component.display()
            );
        };
        // Names of the functions of an instrumented component.
        let functions = Arc::new(FunctionNames::from_wasm(&bytes));
        drop(bytes);
        let mut linker = Linker::<Host>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasi_observe_host::add_to_linker(&mut linker)?;
        wasi_observe_host::functions::add_recorder_to_linker(&mut linker)?;
        let pre = linker.instantiate_pre(&component).with_context(|| {
            crate::common::missing_imports(&engine, &component, "serve", &self.component)
        })?;
        let pre = ProxyPre::new(pre).with_context(|| {
            format!(
                "{} is not a wasi:http/proxy component (it exports no wasi:http/incoming-handler)",
                self.component.display()
            )
        })?;
        if std::env::var("WASI_OBSERVE_MAX_BLOCK_MS").is_ok_and(|v| v.trim() != "0") {
            eprintln!(
                "wasi-observe: serve never waits for room in a full export queue \
                 (WASI_OBSERVE_MAX_BLOCK_MS is ignored): it drops, and counts, what does not fit"
            );
        }
        let pipeline = self.export.telemetry_with(&self.component, never_wait)?;
        let telemetry = pipeline.telemetry;
        let calls = self.calls.install()?.map(|tracing| {
            let handle = calls::export_interface(&engine, &component, "incoming-handler")
                .filter(|interface| tracing.selects(interface, "handle"));
            (
                Arc::new(calls::ImportNames::of(&engine, &component)),
                handle,
            )
        });

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(self.addr))
            .with_context(|| format!("cannot listen on {}", self.addr))?;
        let local = listener.local_addr()?;
        eprintln!("wasi-observe: serving http://{local}/");

        let ticking = Arc::new(AtomicBool::new(true));
        {
            let (engine, ticking) = (engine.clone(), ticking.clone());
            std::thread::spawn(move || {
                while ticking.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            });
        }

        let server = Arc::new(Server {
            engine,
            proxy: ProxyIndices::new(pre.instance_pre())?,
            pre,
            telemetry: telemetry.clone(),
            envs: self.envs.into(),
            local,
            request_timeout: self.request_timeout,
            functions,
            min_function_duration: self.min_function_duration,
            calls,
            slots: Arc::new(Semaphore::new(self.max_instances as usize)),
            max_instances: self.max_instances,
            limits: self.limits,
            trust: self.trust_traceparent,
            counts: Counts::default(),
        });
        let signal = runtime.block_on(serve(server.clone(), listener, self.shutdown_timeout))?;
        drop(runtime);
        ticking.store(false, Ordering::Relaxed);
        eprintln!(
            "wasi-observe: {}",
            server
                .counts
                .summary(server.max_instances, server.limits.max_memory)
        );
        finish(&telemetry);
        if let Some(store) = &pipeline.store {
            report_store(store, &self.export.db);
        }
        std::process::exit(128 + signal);
    }
}

/// serve's export queues never make a request wait for room: the wait
/// would hold a runtime worker thread, and with it every request that
/// thread serves. A full queue drops, and counts, what does not fit (as the
/// OpenTelemetry SDKs do); the queue sizes (`OTEL_BSP_MAX_QUEUE_SIZE`,
/// `OTEL_BLRP_MAX_QUEUE_SIZE`) absorb bursts.
fn never_wait(builder: TelemetryBuilder) -> TelemetryBuilder {
    let spans = BatchConfig {
        max_block: Duration::ZERO,
        ..builder.span_batch_config()
    };
    let logs = BatchConfig {
        max_block: Duration::ZERO,
        ..builder.log_batch_config()
    };
    builder
        .with_span_batch_config(spans)
        .with_log_batch_config(logs)
}

/// Accepts connections until a signal; returns its number.
async fn serve(
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    shutdown_timeout: Duration,
) -> Result<i32> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut sigint = signal(SignalKind::interrupt()).context("installing signal handlers")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing signal handlers")?;
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .max_buf_size(MAX_HEAD)
        .header_read_timeout(Duration::from_secs(30));
    let signal = loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving.
                    eprintln!("wasi-observe: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = sigint.recv() => break 2,
            _ = sigterm.recv() => break 15,
        };
        let svc_server = server.clone();
        let service = hyper::service::service_fn(move |req| {
            let server = svc_server.clone();
            async move { Ok::<_, Infallible>(handle(server, req, peer).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let server = server.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                connection_error(&server, peer, &e);
            }
        });
    };
    drop(listener);
    eprintln!(
        "wasi-observe: {} received; finishing the requests in flight",
        if signal == 2 { "SIGINT" } else { "SIGTERM" }
    );
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(shutdown_timeout) => {
            eprintln!("wasi-observe: requests still running after {shutdown_timeout:?}; stopping them");
        }
        // A second signal: the user will not wait.
        _ = sigint.recv() => {
            eprintln!("wasi-observe: SIGINT again; stopping the requests in flight");
        }
        _ = sigterm.recv() => {
            eprintln!("wasi-observe: SIGTERM again; stopping the requests in flight");
        }
    }
    Ok(signal)
}

/// A request hyper could not parse never reaches the component; hyper has
/// answered it (400, or 431 for a head over ~64 KiB) and it still gets an
/// error span, as does a client too slow to send its head.
fn connection_error(server: &Server, peer: SocketAddr, e: &hyper::Error) {
    let (status, kind) = if e.is_parse_too_large() {
        (Some(431), "header_too_large")
    } else if e.is_parse() {
        (Some(400), "malformed_request")
    } else if e.is_timeout() {
        // hyper closes the connection without a response.
        (None, "header_read_timeout")
    } else {
        // The client went away or reset: nothing to report as a request.
        return;
    };
    let mut span = ServerSpan::malformed(
        &server.telemetry,
        server.local,
        Some(peer),
        kind,
        e.to_string(),
    );
    if let Some(status) = status {
        span.response(status);
    }
}

/// The answer when `--max-instances` requests are running: 503, counted.
fn overloaded(server: &Server, span: &mut ServerSpan) -> Response<HyperOutgoingBody> {
    let message = format!(
        "too many requests in flight: --max-instances {} are running",
        server.max_instances
    );
    Counts::add(&server.counts.overloaded, || {
        format!("{message}; answering 503")
    });
    span.response(503);
    span.error("overloaded", message.clone());
    text(503, message)
}

/// A plain-text response the host makes itself.
fn text(status: u16, body: String) -> Response<HyperOutgoingBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(body + "\n"))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// How a request ended when the component sent no response of its own.
struct Failure {
    status: u16,
    /// The span's `error.type`.
    kind: &'static str,
    message: String,
}

async fn handle(
    server: Arc<Server>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<HyperOutgoingBody> {
    let mut span = ServerSpan::start_with(
        &server.telemetry,
        &req,
        "http",
        server.local,
        Some(peer),
        server.trust.incoming(peer),
    );
    if req.uri().authority().is_none() && !req.headers().contains_key(hyper::header::HOST) {
        let message = "the request names no host (no Host header)".to_string();
        span.response(400);
        span.error("missing_host", message.clone());
        return text(400, message);
    }
    server.counts.requests.fetch_add(1, Ordering::Relaxed);

    // Admission: at most --max-instances requests run at once, whichever
    // the allocator. The permit is held until the instance is dropped.
    let Ok(permit) = server.slots.clone().try_acquire_owned() else {
        return overloaded(&server, &mut span);
    };

    // --trace-calls: a span around the `handle` export, under the request's.
    let mut handle_span = server.calls.as_ref().and_then(|(_, handle)| {
        let interface = handle.as_deref()?;
        Some(calls::export_span(
            &server.telemetry,
            interface,
            "handle",
            Some(span.context()),
        ))
    });
    let parent = handle_span
        .as_ref()
        .map_or(span.context(), |h| h.context())
        .clone();

    let mut wasi = WasiCtx::builder();
    wasi.inherit_stdout().inherit_stderr();
    for (k, v) in server.envs.iter() {
        wasi.env(k, v);
    }
    let mut observe = WasiObserveCtx::builder(&server.telemetry)
        .with_guest_environment(server.envs.clone())
        .with_parent(Some(parent))
        .with_function_names(server.functions.clone())
        .with_min_function_duration(server.min_function_duration);
    if let Some((names, _)) = &server.calls {
        observe = observe.with_call_tracing(names.clone());
    }
    let host = Host::new(wasi.build(), observe.build(), server.limits.limiter());
    let mut store = Store::new(&server.engine, host);
    Host::limit(&mut store);
    wasi_observe_host::observe_store(&mut store);
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);

    // The status the component sends, for the span (0: none yet).
    let sent = Arc::new(AtomicU16::new(0));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let resources = {
        let sent = sent.clone();
        let mut http = store.data_mut().http();
        http.new_incoming_request(Scheme::Http, req)
            .and_then(|req| {
                let out = http.new_response_outparam_from_callback(move |response| {
                    // An error the component sends is answered 500.
                    let status = response.as_ref().map_or(500, |r| r.status().as_u16());
                    sent.store(status, Ordering::SeqCst);
                    let _ = tx.send(response);
                })?;
                Ok((req, out))
            })
    };
    let (req, out) = match resources {
        Ok(r) => r,
        Err(e) => {
            let message = format!("bad request: {e:#}");
            span.response(400);
            span.error("invalid_request", message.clone());
            return text(400, message);
        }
    };

    let timeout = server.request_timeout;
    let pre = server.pre.clone();
    let task_server = server.clone();
    let task = tokio::spawn(async move {
        let server = task_server;
        let run = async {
            let instance = pre.instance_pre().instantiate_async(&mut store).await?;
            let proxy = server.proxy.load(&mut store, &instance)?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await?;
            // What the guest holds (measurements made outside spans).
            wasi_observe_host::flush_guest_async(&mut store, &instance).await
        };
        let result = tokio::time::timeout(timeout, run).await;
        let refusal = store.data().limits.refusal();
        let failure = match result {
            Ok(Ok(())) => None,
            // Every pooled slot is in use: the server is overloaded, the
            // component did nothing wrong.
            Ok(Err(e)) if e.is::<wasmtime::PoolConcurrencyLimitError>() => {
                Counts::add(&server.counts.overloaded, || {
                    format!("the instance pool is full: answering 503 ({e})")
                });
                Some(Failure {
                    status: 503,
                    kind: "overloaded",
                    message: format!("too many requests in flight: {e}"),
                })
            }
            // Refused memory, the component trapped (or could not be
            // instantiated): the server's limit, said as such.
            Ok(Err(e)) if refusal.is_some() => {
                let refusal = refusal.unwrap_or_default();
                let message = format!(
                    "the component was stopped: {refusal}; it trapped: {}",
                    trap_summary(&e)
                );
                Counts::add(&server.counts.memory_limit, || {
                    format!("a request was stopped at the memory limit: {message}; answering 503")
                });
                Some(Failure {
                    status: 503,
                    kind: "memory_limit",
                    message,
                })
            }
            Ok(Err(e)) => Some(Failure {
                status: 500,
                kind: "trap",
                message: format!("the component trapped: {}", trap_summary(&e)),
            }),
            Err(_) => Some(Failure {
                status: 504,
                kind: "timeout",
                message: format!("the component did not finish within {timeout:?}"),
            }),
        };
        let reason = match &failure {
            None => "the component returned while this span was open".to_string(),
            Some(f) => f.message.clone(),
        };
        store.data_mut().observe.end_open_spans(&reason);
        drop(store);
        drop(permit);
        if let (Some(handle), Some(f)) = (&mut handle_span, &failure) {
            calls::export_failed(handle, f.kind, f.message.clone());
        }
        drop(handle_span);
        let status = sent.load(Ordering::SeqCst);
        match &failure {
            Some(f) => {
                span.response(if status == 0 { f.status } else { status });
                span.error(f.kind, f.message.clone());
            }
            None if status == 0 => {
                span.response(500);
                span.error(
                    "no_response",
                    "the component returned without sending a response",
                );
            }
            None => span.response(status),
        }
        failure
    });

    match rx.await {
        Ok(Ok(response)) => response,
        Ok(Err(code)) => text(500, format!("the component failed the request: {code:?}")),
        // The component returned (or trapped, or timed out) without a
        // response: say why.
        Err(_) => match task.await {
            Ok(Some(f)) => text(f.status, f.message),
            Ok(None) => text(
                500,
                "the component returned without sending a response".to_string(),
            ),
            Err(e) => text(500, format!("the request's task failed: {e}")),
        },
    }
}

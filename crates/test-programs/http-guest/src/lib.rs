//! One route per behaviour `wasi-observe serve` must handle:
//! `/hello`, `/status?code=N`, `/trap`, `/trap-after-response`, `/spin`
//! (CPU loop), `/slow?ms=N`, `/sleep` (blocked in a host call for an hour), `/no-response`,
//! `/error-response`, `/call?url=URL` (an outgoing GET), `/headers` (echoes
//! `traceparent`), `/stream?chunks=N` (the body sent in N chunks after the
//! response's head, telemetry made for each), `/otel-call?url=URL` (the same call inside a span made
//! through `wasi:otel`, as a wasi:otel guest SDK would), `/grow?mb=N`
//! (allocates N MiB, 1 MiB at a time, at most 4 096, then answers
//! `grew N MiB`), `/count` (adds 1 to the counter `counted` outside any
//! span: the SDK holds it until `serve` asks), `/leftovers` (reports whether
//! this instance's static data is as the component defines it, then
//! overwrites it). For the load benchmark's cost breakdown
//! (`BENCH_PATH=... scripts/bench-serve.sh`): `/bare` (no `init()`),
//! `/init-only`, `/span-only`, `/log-only`, and `/twice` (two spans and two
//! log records); `/hello` is one of each. `/first-span` times the steps of
//! an instance's first span and log record (`scripts/bench-first-span.sh`).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use wasip2::http::types::{ErrorCode, IncomingRequest, ResponseOutparam};

struct Guest;

impl wasip2::exports::http::incoming_handler::Guest for Guest {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = http_util::path_with_query(&request);
        if path == "/bare" {
            return http_util::respond(out, 200, "hello");
        }
        if path == "/leftovers" {
            return http_util::respond(out, 200, &leftovers());
        }
        if path == "/first-span" {
            return http_util::respond(out, 200, &first_span_steps());
        }
        wasi_observe::init();
        match path.as_str() {
            "/init-only" => return http_util::respond(out, 200, "hello"),
            "/span-only" => {
                let _span = tracing::info_span!("route", route = %path).entered();
                return http_util::respond(out, 200, "hello");
            }
            "/log-only" => {
                log::info!(route = path.as_str(); "handling");
                return http_util::respond(out, 200, "hello");
            }
            "/count" => {
                opentelemetry::global::meter("http-guest")
                    .u64_counter("counted")
                    .build()
                    .add(1, &[]);
                return http_util::respond(out, 200, "counted");
            }
            "/twice" => {
                for _ in 0..2 {
                    let _span = tracing::info_span!("route", route = %path).entered();
                    log::info!(route = path.as_str(); "handling");
                }
                return http_util::respond(out, 200, "hello");
            }
            _ => {}
        }
        let route = path.split('?').next().unwrap_or("/").to_string();
        let _span = tracing::info_span!("route", route = %route).entered();
        log::info!(route = route.as_str(); "handling");
        match route.as_str() {
            "/hello" => http_util::respond(out, 200, "hello"),
            "/status" => {
                let code = http_util::query_param(&path, "code")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(200);
                http_util::respond(out, code, "as asked");
            }
            "/trap" => panic!("asked to trap"),
            "/trap-after-response" => {
                http_util::respond(out, 200, "sent");
                panic!("asked to trap after responding");
            }
            "/spin" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "/slow" => {
                let ms: u64 = http_util::query_param(&path, "ms")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(500);
                wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                http_util::respond(out, 200, "done");
            }
            "/sleep" => {
                wasip2::clocks::monotonic_clock::subscribe_duration(3_600_000_000_000).block();
                http_util::respond(out, 200, "woke up");
            }
            "/no-response" => drop(out),
            "/error-response" => ResponseOutparam::set(
                out,
                Err(ErrorCode::InternalError(Some("asked to fail".into()))),
            ),
            "/call" => {
                let url = http_util::query_param(&path, "url")
                    .unwrap_or("")
                    .to_string();
                let _call = tracing::info_span!("call", url = %url).entered();
                match http_util::get(&url) {
                    Ok((status, body)) => {
                        http_util::respond(out, 200, &format!("{status} {body}"));
                    }
                    Err(e) => {
                        log::error!(url = url.as_str(); "call failed: {e}");
                        http_util::respond(out, 502, &e);
                    }
                }
            }
            "/otel-call" => {
                let url = http_util::query_param(&path, "url")
                    .unwrap_or("")
                    .to_string();
                let status = otel::call_in_span(&url);
                http_util::respond(out, 200, &status);
            }
            "/grow" => {
                let mb: usize = http_util::query_param(&path, "mb")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(64)
                    .min(4096);
                let mut held = Vec::new();
                for _ in 0..mb {
                    held.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
                http_util::respond(out, 200, &format!("grew {} MiB", held.len()));
            }
            "/stream" => {
                let chunks: u32 = http_util::query_param(&path, "chunks")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(3)
                    .min(100);
                stream(out, chunks);
            }
            "/headers" => {
                let tp = http_util::header(&request, "traceparent").unwrap_or_default();
                http_util::respond(out, 200, &tp);
            }
            _ => http_util::respond(out, 404, "no such route"),
        }
    }
}

/// Sends the response's head, then its body in `chunks` pieces 20 ms
/// apart, each in a `chunk` span with a log record and a measurement: the
/// telemetry a handler makes after responding, while the client reads.
fn stream(out: ResponseOutparam, chunks: u32) {
    use wasip2::http::types::{Fields, OutgoingBody, OutgoingResponse};
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(response));
    let sent = opentelemetry::global::meter("http-guest")
        .u64_counter("chunks_sent")
        .build();
    {
        let stream = body.write().expect("the body's stream, once");
        for i in 0..chunks {
            let _chunk = tracing::info_span!("chunk", index = i).entered();
            log::info!("sending chunk {i}");
            stream
                .blocking_write_and_flush(format!("chunk {i}\n").as_bytes())
                .expect("writing the response body");
            sent.add(1, &[]);
            wasip2::clocks::monotonic_clock::subscribe_duration(20_000_000).block();
        }
    }
    OutgoingBody::finish(body, None).expect("finishing the response body");
}

/// Times each step of a fresh instance's first telemetry (monotonic clock,
/// ns), space separated: `init()`; a span's creation, enter and exit, and
/// close; a second callsite's span (create and close); a third callsite
/// used three times; two log records.
fn first_span_steps() -> String {
    use wasip2::clocks::monotonic_clock::now;
    let mut t = vec![now()];
    wasi_observe::init();
    t.push(now());
    let first = tracing::info_span!("first");
    t.push(now());
    drop(first.enter());
    t.push(now());
    drop(first);
    t.push(now());
    drop(tracing::info_span!("second"));
    t.push(now());
    for _ in 0..3 {
        drop(tracing::info_span!("third"));
        t.push(now());
    }
    for _ in 0..2 {
        log::info!("logged");
        t.push(now());
    }
    let steps: Vec<String> = t.windows(2).map(|w| (w[1] - w[0]).to_string()).collect();
    steps.join(" ")
}

wasip2::http::proxy::export!(Guest);

/// A span made the way a `wasi:otel` guest SDK makes one: its parent from
/// `outer-span-context`, `on-start`, the work, `on-end` with the finished
/// span.
mod otel {
    mod bindings {
        wit_bindgen::generate!({
            path: "../../../wit-otel",
            world: "wasi:otel/imports",
            generate_all,
        });
    }

    use bindings::wasi::clocks::wall_clock::{self, Datetime};
    use bindings::wasi::otel::tracing::{
        self as otel, SpanContext, SpanData, SpanKind, Status, TraceFlags,
    };
    use bindings::wasi::otel::types::InstrumentationScope;

    /// Calls `url` inside a span; returns the call's status (or error).
    pub fn call_in_span(url: &str) -> String {
        let outer = otel::outer_span_context();
        let valid = outer.trace_id.chars().any(|c| c != '0');
        let trace_id = if valid {
            outer.trace_id.clone()
        } else {
            "5b8efff798038103d269b633813fc60c".into()
        };
        let cx = SpanContext {
            trace_id,
            span_id: "eee19b7ec3c1b174".into(),
            trace_flags: TraceFlags::SAMPLED,
            is_remote: false,
            trace_state: vec![],
        };
        let start = wall_clock::now();
        otel::on_start(&cx);
        let result = http_util::get(url);
        let end: Datetime = wall_clock::now();
        let (status, text) = match result {
            Ok((code, _)) => (Status::Ok, code.to_string()),
            Err(e) => (Status::Error(e.clone()), e),
        };
        otel::on_end(&SpanData {
            span_context: cx,
            parent_span_id: if valid { outer.span_id } else { String::new() },
            span_kind: SpanKind::Internal,
            name: "otel-call".into(),
            start_time: start,
            end_time: end,
            attributes: vec![],
            events: vec![],
            links: vec![],
            status,
            instrumentation_scope: InstrumentationScope {
                name: "http-guest".into(),
                version: None,
                schema_url: None,
                attributes: vec![],
            },
            dropped_attributes: 0,
            dropped_events: 0,
            dropped_links: 0,
        });
        text
    }
}

/// Initialised data and zeroed data (`.data` and `.bss`) that `/leftovers`
/// overwrites: a fresh instance must see them as the component defines them
/// again, whatever a request before it in the same pooled slot wrote.
static DATA: AtomicU64 = AtomicU64::new(7);
static BSS: [AtomicU8; 1 << 16] = [const { AtomicU8::new(0) }; 1 << 16];

fn leftovers() -> String {
    let state = || {
        let dirty = BSS
            .iter()
            .filter(|b| b.load(Ordering::Relaxed) != 0)
            .count();
        format!("data {} bss {dirty}", DATA.load(Ordering::Relaxed))
    };
    let before = state();
    DATA.store(99, Ordering::Relaxed);
    for b in &BSS {
        b.store(0xaa, Ordering::Relaxed);
    }
    format!("{before} -> {}", state())
}

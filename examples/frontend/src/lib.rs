//! The demo's frontend: `GET /checkout?item=NAME` asks the backend
//! (`BACKEND_URL`, default `http://127.0.0.1:8081`) for the price.
//!
//! The outgoing request is an ordinary `wasi:http` call: `wasi-observe serve`
//! wraps it in a CLIENT span under the current `tracing` span and injects
//! `traceparent`, so the backend's spans join this trace.

use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Frontend;

impl wasip2::exports::http::incoming_handler::Guest for Frontend {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        wasi_observe::init();
        let path = http_util::path_with_query(&request);
        let item = http_util::query_param(&path, "item")
            .unwrap_or("teapot")
            .to_string();
        let span = tracing::info_span!("checkout", item = %item, price = tracing::field::Empty);
        let _entered = span.enter();
        log::info!(item; "checkout started");
        let backend =
            std::env::var("BACKEND_URL").unwrap_or_else(|_| "http://127.0.0.1:8081".into());
        match http_util::get(&format!("{backend}/price?item={item}")) {
            Ok((200, cents)) => {
                span.record("price", cents.as_str());
                log::info!(item, cents = cents.as_str(); "checkout priced");
                http_util::respond(out, 200, &format!("{item}: {cents} cents\n"));
            }
            Ok((status, body)) => {
                log::warn!(item, status; "backend refused: {body}");
                http_util::respond(out, 502, &format!("backend answered {status}: {body}"));
            }
            Err(e) => {
                tracing::error!(error = %e, "backend unreachable");
                http_util::respond(out, 502, &format!("backend unreachable: {e}"));
            }
        }
    }
}

wasip2::http::proxy::export!(Frontend);

//! The demo's pricing service: `GET /price?item=NAME` answers a price.
//!
//! Nothing here knows about trace context: `wasi-observe serve` continues
//! the caller's trace (the `traceparent` the frontend's host injected) in a
//! SERVER span, and these `tracing` spans and `log` records nest under it.

use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct Backend;

impl wasip2::exports::http::incoming_handler::Guest for Backend {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        wasi_observe::init();
        let path = http_util::path_with_query(&request);
        let item = http_util::query_param(&path, "item")
            .unwrap_or("")
            .to_string();
        let _span = tracing::info_span!("price lookup", item = %item).entered();
        match price(&item) {
            Some(cents) => {
                log::info!(item, cents; "price found");
                http_util::respond(out, 200, &format!("{cents}"));
            }
            None => {
                log::warn!(item; "unknown item");
                http_util::respond(out, 404, "unknown item");
            }
        }
    }
}

#[tracing::instrument]
fn price(item: &str) -> Option<u64> {
    match item {
        "teapot" => Some(1999),
        "cup" => Some(450),
        "saucer" => Some(300),
        _ => None,
    }
}

wasip2::http::proxy::export!(Backend);

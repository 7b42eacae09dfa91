//! The guest SDK beyond what the differential scenario covers: the
//! availability check, `init` twice, a remote parent the guest carries
//! itself (argument 1: a `traceparent`), propagation out, the OpenTelemetry
//! metrics API, `log` key-values, and the edges of the subscriber `init`
//! installs: fields whose `Debug` makes telemetry itself, an id kept after
//! its span closed, a span entered twice, a parent dropped before its
//! child, `Span::current`.

use std::collections::HashMap;
use std::fmt;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Tracer as _};
use tracing::info_span;
use wasi_observe::OpenTelemetrySpanExt as _;

fn main() {
    let signals = wasi_observe::enabled();
    println!(
        "enabled traces={} logs={} metrics={}",
        signals.traces, signals.logs, signals.metrics
    );
    println!("first {:?}", wasi_observe::try_init());
    println!("second {:?}", wasi_observe::try_init());
    wasi_observe::init(); // again: does nothing

    let traceparent = std::env::args().nth(1).expect("a traceparent argument");
    let incoming = HashMap::from([("traceparent".to_string(), traceparent)]);
    let remote = wasi_observe::propagation::extract(&incoming);

    let span = info_span!("handle_request");
    span.set_parent(&remote);
    span.set_attribute("http.route", "/orders");
    span.in_scope(|| {
        let mut outgoing = HashMap::new();
        wasi_observe::propagation::inject(&mut outgoing);
        println!("outgoing {}", outgoing["traceparent"]);
    });
    drop(span);

    let tracer = opentelemetry::global::tracer("features");
    let mut child = tracer.start_with_context("otel_remote_child", &remote);
    child.set_attribute(KeyValue::new("ok", true));
    child.end();

    let meter = opentelemetry::global::meter("features");
    let requests = meter
        .u64_counter("requests")
        .with_description("requests served")
        .with_unit("{request}")
        .build();
    requests.add(2, &[KeyValue::new("route", "/a")]);
    requests.add(3, &[KeyValue::new("route", "/a")]);
    let inflight = meter.i64_up_down_counter("inflight").build();
    inflight.add(5, &[]);
    inflight.add(-2, &[]);
    let latency = meter
        .f64_histogram("latency")
        .with_unit("s")
        .with_boundaries(vec![0.1, 1.0])
        .build();
    for v in [0.05, 0.5, 5.0] {
        latency.record(v, &[]);
    }
    let temperature = meter.i64_gauge("temperature").build();
    temperature.record(20, &[]);
    temperature.record(21, &[]);
    meter.f64_counter("bytes").build().add(1.5, &[]);

    log::info!(user = "ada", retries = 2; "logged in");

    subscriber_edges();
}

/// A field value whose `Debug` records telemetry while the subscriber is
/// recording the field.
struct Noisy;

impl fmt::Debug for Noisy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _inner = info_span!("span_inside_a_field").entered();
        tracing::info!("event inside a field");
        f.write_str("noisy")
    }
}

/// Spans in the chain `subscriber_edges` makes.
const CHAIN: usize = 20_000;

fn subscriber_edges() {
    let outer = info_span!("with_noisy_field", noisy = ?Noisy);
    outer.in_scope(|| {
        tracing::info!(noisy = ?Noisy, "event with a noisy field");
        println!(
            "current {}",
            tracing::Span::current().metadata().unwrap().name()
        );
    });
    drop(outer);

    // An id kept after its span closed names no span, even once its slot
    // holds another.
    let gone = info_span!("gone");
    let stale = gone.id().unwrap();
    drop(gone);
    let _reuses = info_span!("reuses_the_slot").entered();
    drop(info_span!(parent: stale, "stale_parent"));

    // A span entered again while entered stays current when the inner
    // guard goes, and ends once.
    let reentered = info_span!("reentered");
    let outer_guard = reentered.enter();
    drop(reentered.enter());
    tracing::info!("after the inner guard");
    // The span ends at least this much after the record was made.
    std::thread::sleep(std::time::Duration::from_millis(5));
    drop(outer_guard);
    drop(reentered);

    // A chain of spans, each holding its parent open, all handles dropped
    // outermost first: the innermost's close ends the whole chain.
    let mut chain = vec![info_span!(parent: None, "chain")];
    for _ in 1..CHAIN {
        let link = info_span!(parent: chain.last().unwrap(), "chain");
        chain.push(link);
    }
    drop(chain);

    // A child holds its parent open: the parent ends after it.
    let parent = info_span!(parent: None, "dropped_first");
    let child = info_span!(parent: &parent, "outlives_its_parent");
    drop(parent);
    child.in_scope(|| tracing::info!("the child still runs"));
    drop(child);
}

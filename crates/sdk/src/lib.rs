//! Telemetry for Rust code in a WebAssembly component, shipped by a
//! [WASI Observe] host such as `wasi-observe run`.
//!
//! Add the crate, call [`init()`] once, and the instrumentation you already
//! have works inside the component:
//!
//! - **`tracing`**: spans (`info_span!`, `#[instrument]`, `in_scope`, entered
//!   guards, `record`) become host spans, parented exactly as `tracing`
//!   parents them. Fields become attributes with their types; events become
//!   log records and span events; `follows_from` becomes a link. The special
//!   fields `otel.name`, `otel.kind`, `otel.status_code`,
//!   `otel.status_description` and `error` behave as in
//!   `tracing-opentelemetry`.
//! - **`log`**: records become host log records, correlated with the current
//!   span.
//! - **OpenTelemetry API**: `opentelemetry::global::tracer(..)` and
//!   `global::meter(..)` (counters, up-down counters, histograms, gauges)
//!   record through the host; [`propagation`] carries W3C context in and out.
//!
//! The host does the rest: limits, export, retries. The guest holds the
//! spans it has open, at most one batch (64 KiB) of records and the sums
//! of at most 1 024 metric series.
//!
//! ```no_run
//! use tracing::{info, instrument, warn};
//!
//! #[instrument]
//! fn checkout(cart: u64, total: f64) -> Result<(), String> {
//!     info!(items = 3, "pricing the cart");
//!     if total > 100.0 {
//!         warn!("large order");
//!     }
//!     Ok(())
//! }
//!
//! fn main() {
//!     wasi_observe::init();
//!     log::info!("starting");
//!     let _ = checkout(42, 120.0);
//!
//!     // The OpenTelemetry API records through the host too.
//!     let orders = opentelemetry::global::meter("shop").u64_counter("orders").build();
//!     orders.add(1, &[opentelemetry::KeyValue::new("region", "eu")]);
//! }
//! ```
//!
//! # Cost
//!
//! Crossing into the host is the main cost of guest telemetry, so the SDK
//! records into a buffer in the component's memory and hands it over in
//! batches (the pipe, `wasi-observe:pipe@0.2.2`; docs/pipe.md). Ids and
//! sampling decisions are made here. A span crosses twice on its own, at its
//! start and end, to tell the host which span is open (so the host's spans
//! for outgoing requests and import calls nest under it) and to read the
//! clock; events and log records inside a span read the clock with one
//! small host call (the pipe's `now`) and travel with the batch, and
//! measurements do not cross at all until the batch does. Measurements are
//! summed per series in the component (a counter's add is a table lookup),
//! and those made outside any span are held until the host asks for them
//! when the invocation returns. Entering and exiting spans never crosses.
//! When the host records nothing for a signal ([`enabled()`]), the SDK
//! disables those callsites and they cost what a disabled `tracing`
//! callsite costs.
//!
//! # Filtering
//!
//! Every level is recorded unless the component's `RUST_LOG` variable says
//! otherwise (`info`, `my_crate=debug,info`, ...: `tracing-subscriber`'s
//! `Targets` syntax). Pass it with `wasi-observe run --env RUST_LOG=info`.
//!
//! # Differences from `tracing-opentelemetry`
//!
//! Parents, names, kinds, attributes, events, statuses and links match what
//! `tracing-opentelemetry` (with `opentelemetry-appender-tracing` and
//! `opentelemetry-appender-log` for logs) produces from the same code, with
//! these deliberate exceptions: unsigned and 128-bit integers are kept as
//! integers when they fit in an `i64` (it records them as text); a span ends
//! when it closes, not at its last exit; there are no `thread.*`, `busy_ns`
//! or `idle_ns` attributes (a component has one thread, and timing an idle
//! span would cost clock calls). An OpenTelemetry API span started with a
//! context that holds no span is parented to the current `tracing` span.
//!
//! [WASI Observe]: https://github.com/WebAssembly/wasi-observe

#![warn(missing_docs)]

mod bindings;
mod layer;
mod local;
mod logger;
mod metrics;
mod pending;
mod pipe;
pub mod propagation;
mod span_ext;
mod subscriber;
mod trace;

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Filtered;

pub use layer::{SignalFilter, WasiObserveLayer};
pub use metrics::MeterProvider;
pub use span_ext::OpenTelemetrySpanExt;
pub use trace::{Span, Tracer, TracerProvider};

/// Which signals the host records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signals {
    /// Spans are exported.
    pub traces: bool,
    /// Log records are exported.
    pub logs: bool,
    /// Measurements are exported.
    pub metrics: bool,
}

impl Signals {
    /// Whether any signal is recorded.
    pub fn any(self) -> bool {
        self.traces || self.logs || self.metrics
    }
}

/// What the host records. One host call the first time (the pipe's
/// configuration, which brings everything else the SDK needs from the host
/// too), a load after: ask it at start-up and skip the work of building
/// telemetry nobody records.
pub fn enabled() -> Signals {
    pipe::config().signals
}

/// Sends everything recorded so far to the host now. Never needed for
/// correctness (a batch crosses when the outermost span ends, when a log
/// record is made outside any span, when the buffer fills, in the panic
/// hook, and when the host asks for the measurements held after an
/// invocation); useful before an operation that may trap without a panic,
/// such as a deliberate `abort` or `std::process::exit`.
pub fn flush() {
    pipe::flush();
}

/// The `tracing` layer, filtered to what the host records and to
/// `RUST_LOG`, for adding to a subscriber of your own:
///
/// ```no_run
/// use tracing_subscriber::prelude::*;
///
/// tracing_subscriber::registry()
///     .with(wasi_observe::layer())
///     // .with(tracing_subscriber::fmt::layer()) and any other layer
///     .init();
/// ```
///
/// It needs a [`tracing_subscriber::Registry`] underneath, as
/// `tracing-opentelemetry` does.
pub fn layer<S>() -> Filtered<WasiObserveLayer, SignalFilter, S>
where
    S: tracing_core::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    WasiObserveLayer::default().with_filter(SignalFilter::new(enabled()))
}

/// Makes a panic send what was recorded before the panic message is
/// printed and the component traps, so a panic loses nothing.
fn install_panic_flush() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        pipe::flush();
        previous(info);
    }));
}

/// The component's `RUST_LOG` filter, if it is set and valid: as the host
/// gave it with the configuration, else (a host that does not know the
/// component's environment) read from the environment, a further host call.
fn rust_log() -> Option<tracing_subscriber::filter::Targets> {
    let value = match &pipe::config().rust_log {
        Some(given) => given.clone(),
        None => std::env::var("RUST_LOG").ok(),
    };
    value.and_then(|v| v.parse().ok())
}

/// Why [`try_init`] did not install everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitError {
    /// `init` or `try_init` already ran; nothing was changed.
    AlreadyInitialized,
    /// Another global `tracing` subscriber is set; nothing was installed.
    /// Add [`layer()`] to that subscriber instead.
    SubscriberAlreadySet,
    /// Another `log` logger is set. Everything else was installed; `log`
    /// records go to that logger.
    LoggerAlreadySet,
}

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InitError::AlreadyInitialized => "wasi_observe is already initialized",
            InitError::SubscriberAlreadySet => {
                "a global tracing subscriber is already set; add wasi_observe::layer() to it instead"
            }
            InitError::LoggerAlreadySet => {
                "a log logger is already set; log records will not reach the host"
            }
        })
    }
}

impl std::error::Error for InitError {}

/// Installs everything: the `tracing` subscriber (the logic of [`layer()`]
/// over a span table of its own, lighter in a component than
/// `tracing-subscriber`'s registry), the `log` logger, and the OpenTelemetry
/// global tracer and meter providers and W3C propagator.
///
/// Calling it again does nothing. It panics if another `tracing` subscriber
/// or `log` logger is already installed; use [`try_init`] to handle that.
pub fn init() {
    match try_init() {
        Ok(()) | Err(InitError::AlreadyInitialized) => {}
        Err(e) => panic!("wasi_observe::init: {e}"),
    }
}

/// Like [`init`], but says what went wrong instead of panicking, and
/// [`InitError::AlreadyInitialized`] when called again.
pub fn try_init() -> Result<(), InitError> {
    static STARTED: AtomicBool = AtomicBool::new(false);
    if STARTED.swap(true, Ordering::SeqCst) {
        return Err(InitError::AlreadyInitialized);
    }
    let signals = enabled();
    // Read once: each read of the environment is a host call that copies
    // every variable into the component.
    let targets = rust_log();
    let filter = SignalFilter::with_targets(signals, targets.clone());
    let subscriber = subscriber::WasiObserveSubscriber::new(WasiObserveLayer::default(), filter);
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        STARTED.store(false, Ordering::SeqCst);
        return Err(InitError::SubscriberAlreadySet);
    }
    opentelemetry::global::set_tracer_provider(TracerProvider::new());
    opentelemetry::global::set_meter_provider(MeterProvider::new());
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    install_panic_flush();
    let logger = logger::Logger { targets };
    if log::set_boxed_logger(Box::new(logger)).is_err() {
        return Err(InitError::LoggerAlreadySet);
    }
    log::set_max_level(if signals.logs {
        log::LevelFilter::Trace
    } else {
        log::LevelFilter::Off
    });
    Ok(())
}

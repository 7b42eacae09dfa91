//! The SDK's differential scenario inside a component: with what
//! `wasi_observe::init()` installs or, given `--layer`, with the SDK's layer
//! on a `tracing-subscriber` registry (as users add it to their own
//! subscribers), which must record the same.

use tracing_subscriber::layer::SubscriberExt as _;

fn main() {
    wasi_observe::init();
    if std::env::args().any(|a| a == "--layer") {
        let subscriber = tracing_subscriber::registry().with(wasi_observe::layer());
        tracing::subscriber::with_default(subscriber, sdk_scenario::run);
    } else {
        sdk_scenario::run();
    }
}

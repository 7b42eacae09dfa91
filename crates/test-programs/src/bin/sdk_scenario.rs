//! The SDK's differential scenario inside a component.

fn main() {
    wasi_observe::init();
    sdk_scenario::run();
}

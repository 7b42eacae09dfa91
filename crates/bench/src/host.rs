//! The store data of the benchmarks' guests: the host library's test host
//! (WASI plus wasi-observe, as `wasi-observe run` sets a component up).
//! Shared by the bench binaries.

use wasi_observe_host::WasiObserveCtx;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

pub use wasi_observe_host::testing::TestHost as Host;

/// The instrumentation benchmarks' fib command, run as `instrumented N`
/// with its output captured (and dropped).
#[allow(dead_code, reason = "the main benchmark runs other commands")]
pub fn fib(n: i32, observe: WasiObserveCtx) -> Host {
    let mut wasi = WasiCtx::builder();
    wasi.stdout(MemoryOutputPipe::new(1 << 16))
        .args(&["instrumented".to_string(), n.to_string()]);
    Host::new(wasi.build(), observe)
}

//! The store data of the benchmarks' guests: WASI plus wasi-observe, as
//! `wasi-observe run` sets a component up. Shared by the bench binaries.

use wasi_observe_host::{WasiObserveCtx, WasiObserveView};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub struct Host {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub observe: WasiObserveCtx,
}

impl Host {
    pub fn new(wasi: WasiCtx, observe: WasiObserveCtx) -> Host {
        Host {
            wasi,
            table: ResourceTable::new(),
            observe,
        }
    }

    /// The instrumentation benchmarks' fib command, run as
    /// `instrumented N` with its output captured (and dropped).
    #[allow(dead_code, reason = "the main benchmark runs other commands")]
    pub fn fib(n: i32, observe: WasiObserveCtx) -> Host {
        let mut wasi = WasiCtx::builder();
        wasi.stdout(MemoryOutputPipe::new(1 << 16))
            .args(&["instrumented".to_string(), n.to_string()]);
        Host::new(wasi.build(), observe)
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiObserveView for Host {
    fn observe(&mut self) -> &mut WasiObserveCtx {
        &mut self.observe
    }
}

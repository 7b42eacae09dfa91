//! The store data of the benchmarks' guests: WASI plus wasi-observe, as
//! `wasi-observe run` sets a component up. Shared by the bench binaries.

use wasi_observe_host::{WasiObserveCtx, WasiObserveView};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub struct Host {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub observe: WasiObserveCtx,
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

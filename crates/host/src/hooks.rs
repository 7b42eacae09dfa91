//! The one store call hook: every feature that must know when a guest calls
//! the host, or returns from it, is served by a single hook, which chains an
//! embedder's own.
//!
//! - Call tracing ([`crate::host_spans::calls`]): on a call into the host, the
//!   [`CallLayer`](crate::host_spans::calls::CallLayer) learns which store
//!   calls and under which span; on the return, it forgets.
//! - Recorder timing ([`crate::functions`]): the events an instrumented
//!   component records after a host call are not spread over that call.
//!
//! A store that needs none of these and has no embedder hook gets no hook
//! at all (a hook costs every host call a little).

use wasmtime::{CallHook, Result, Store, StoreContextMut};

use crate::ctx::WasiObserveView;
use crate::host_spans::calls;

/// Prepares `store` for observation: installs the one call hook its
/// [`WasiObserveCtx`](crate::WasiObserveCtx) needs (import-call tracing,
/// recorder timing), if any. Call it once the store's data holds the ctx
/// its builder made. It replaces any call hook the store had: to keep
/// yours, use [`observe_store_with_hook`].
pub fn observe_store<T: WasiObserveView + 'static>(store: &mut Store<T>) {
    install(
        store,
        None::<fn(StoreContextMut<'_, T>, CallHook) -> Result<()>>,
    );
}

/// As [`observe_store`], calling `hook` too, after this crate's work, on
/// every transition (an embedder's own call hook).
pub fn observe_store_with_hook<T, F>(store: &mut Store<T>, hook: F)
where
    T: WasiObserveView + 'static,
    F: FnMut(StoreContextMut<'_, T>, CallHook) -> Result<()> + Send + Sync + 'static,
{
    install(store, Some(hook));
}

fn install<T, F>(store: &mut Store<T>, mut embedder: Option<F>)
where
    T: WasiObserveView + 'static,
    F: FnMut(StoreContextMut<'_, T>, CallHook) -> Result<()> + Send + Sync + 'static,
{
    let observe = store.data_mut().observe();
    let calls = observe.call_tracing().cloned();
    let timing = observe.has_recorder();
    if calls.is_none() && !timing && embedder.is_none() {
        return;
    }
    store.call_hook(move |mut cx, hook| {
        match hook {
            CallHook::CallingHost => {
                if let Some(names) = &calls {
                    calls::calling_host(cx.data_mut().observe(), names);
                }
            }
            CallHook::ReturningFromHost => {
                if calls.is_some() {
                    calls::returning_from_host();
                }
                // Cheap when the guest has no recorder (no clock read).
                cx.data_mut().observe().note_guest_resumed();
            }
            CallHook::CallingWasm | CallHook::ReturningFromWasm => {}
        }
        match &mut embedder {
            Some(f) => f(cx, hook),
            None => Ok(()),
        }
    });
}

//! Per-thread state, without `thread_local!`'s indirection where a
//! component has a single thread.
//!
//! On `wasm32` without the `atomics` feature there is one thread, and a
//! `thread_local!` is a static reached through a function pointer: every
//! access is a `call_indirect`, and in each fresh instance the first one
//! through each key makes a function-table entry, which wasmtime does in
//! about 745 instructions (docs/serve.md, "Fifth round"). There [`local!`]
//! declares a plain static; on every other target (native builds, wasm
//! with threads) a `thread_local!`. Both have `with` and `try_with`.

/// `static NAME: T = const_init;` as a per-thread value (see the module).
macro_rules! local {
    ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
        #[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
        $(#[$attr])*
        static $name: $crate::local::Local<$t> = $crate::local::Local::new($init);

        #[cfg(not(all(target_family = "wasm", not(target_feature = "atomics"))))]
        thread_local! {
            $(#[$attr])*
            static $name: $t = const { $init };
        }
    };
}
pub(crate) use local;

/// A value only one thread can reach: see the module.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
pub(crate) struct Local<T>(T);

// The one `unsafe` of the SDK outside its generated bindings.
// SAFETY: without the `atomics` feature a wasm module cannot share its
// memory with another thread, so the one thread that runs it is the only
// one that can reach the value.
#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
#[allow(unsafe_code)]
unsafe impl<T> Sync for Local<T> {}

#[cfg(all(target_family = "wasm", not(target_feature = "atomics")))]
impl<T> Local<T> {
    pub(crate) const fn new(value: T) -> Self {
        Local(value)
    }

    /// As `LocalKey::with`.
    pub(crate) fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        f(&self.0)
    }

    /// As `LocalKey::try_with`, which fails only while a thread's
    /// locals are destroyed: this one never is.
    pub(crate) fn try_with<R>(
        &'static self,
        f: impl FnOnce(&T) -> R,
    ) -> Result<R, std::convert::Infallible> {
        Ok(f(&self.0))
    }
}

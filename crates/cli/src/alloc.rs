//! mimalloc's tuning, shared by the binaries that run guests and by the
//! native peer of the load benchmark (included with `#[path]`), so that
//! both sides of that comparison allocate alike.
//!
//! The guest's thread allocates telemetry (batches, records) that the
//! export threads free. With mimalloc's default purge delay (10 ms), the
//! pages those frees empty go back to the kernel before the guest's
//! thread reuses them, and it then takes fresh pages, which the kernel
//! zeroes: a quarter of that thread's time in `clear_page_erms` in a
//! profile of the span benchmark. A longer delay keeps them for reuse.

// Two calls into mimalloc's C API, which the `mimalloc` crate does not wrap.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_long};

/// How long freed memory waits before mimalloc returns it to the kernel.
const PURGE_DELAY_MS: c_long = 1_000;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e`, the version the
/// `mimalloc` crate builds by default.
const MI_OPTION_PURGE_DELAY: c_int = 15;

unsafe extern "C" {
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_option_set(option: c_int, value: c_long);
}

/// Applies the tuning, unless `MIMALLOC_PURGE_DELAY` says otherwise.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some_and(|v| !v.is_empty()) {
        return;
    }
    // SAFETY: mimalloc's option functions take any option number (unknown
    // ones are ignored) and may be called at any time; 10 is the default
    // of the option this number names in the linked mimalloc, which guards
    // against a version whose numbering differs.
    unsafe {
        if mi_option_get(MI_OPTION_PURGE_DELAY) == 10 {
            mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option number names the purge delay in the mimalloc linked
    /// here: `tune` changes it (and `tune` would do nothing otherwise).
    #[test]
    fn tune_sets_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some_and(|v| !v.is_empty()) {
            return;
        }
        tune();
        // SAFETY: as in `tune`.
        let delay = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, PURGE_DELAY_MS);
    }
}

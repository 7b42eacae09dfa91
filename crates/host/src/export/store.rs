//! The embedded telemetry store as an exporter of every signal
//! (`wasi-observe-store`, an SQLite file the `wasi-observe traces`, `trace`,
//! `logs`, `metrics` and `ui` commands read). Cargo feature `store`.
//!
//! Add it with [`TelemetryBuilder::with_store`](crate::TelemetryBuilder::with_store),
//! which also gives a store-only queue the store's batch sizes.

pub use wasi_observe_store::Store;

/// Opens the telemetry store at `path` (default:
/// [`wasi_observe_store::default_path`]), with retention from the environment.
pub fn open_store(path: Option<&std::path::Path>) -> wasmtime::Result<wasi_observe_store::Store> {
    let open = || {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => wasi_observe_store::default_path()?,
        };
        wasi_observe_store::Store::open(&path, wasi_observe_store::StoreOptions::from_env()?)
    };
    open().map_err(|e| wasmtime::Error::msg(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::super::{Exporter, Signal};

    #[test]
    fn the_store_exporter_opens_its_store_and_refuses_foreign_files() {
        let dir =
            std::env::temp_dir().join(format!("wasi-observe-host-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let _ = std::fs::remove_file(&path);
        let telemetry = crate::Telemetry::builder()
            .with_exporter(Signal::Traces, &Exporter::Store(Some(path.clone())))
            .unwrap()
            .with_exporter(Signal::Logs, &Exporter::Store(Some(path.clone())))
            .unwrap()
            .build()
            .unwrap();
        telemetry.shutdown().unwrap();
        let store = wasi_observe_store::Store::open_existing(&path).unwrap();
        assert_eq!(store.counts().unwrap().traces, 0);

        let foreign = dir.join("notes.txt");
        std::fs::write(&foreign, "not a database").unwrap();
        let err = crate::Telemetry::builder()
            .with_exporter(Signal::Metrics, &Exporter::Store(Some(foreign.clone())))
            .err()
            .expect("a foreign file is refused");
        assert!(
            err.to_string()
                .contains("is not a wasi-observe telemetry store"),
            "{err}"
        );
        assert_eq!(std::fs::read(&foreign).unwrap(), b"not a database");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A queue whose only exporters are stores gets the store's batch
    /// sizes; one with another exporter beside the store does not.
    #[test]
    fn a_store_only_queue_gets_the_store_batch_sizes() {
        let dir =
            std::env::temp_dir().join(format!("wasi-observe-host-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = super::open_store(Some(&dir.join("t.db"))).unwrap();
        let only = crate::Telemetry::builder()
            .with_store(Signal::Traces, store.clone())
            .with_store(Signal::Logs, store.clone());
        assert_eq!(only.span_batch_config().max_export_batch_size, 8_192);
        assert_eq!(only.span_batch_config().max_queue_size, 16_384);
        assert_eq!(only.log_batch_config().max_export_batch_size, 8_192);
        let mixed = crate::Telemetry::builder()
            .with_store(Signal::Traces, store)
            .with_exporter(Signal::Traces, &Exporter::Console)
            .unwrap();
        assert_eq!(mixed.span_batch_config().max_export_batch_size, 512);
        // No exporter at all: the ordinary defaults.
        let none = crate::Telemetry::builder();
        assert_eq!(none.log_batch_config().max_export_batch_size, 512);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Options and helpers shared by the commands.

use std::path::{Path, PathBuf};

use clap::Args;
use wasi_observe_host::export::{
    Exporter, Signal, exporters_from_env, open_store, parse_exporters,
};
use wasi_observe_host::{Telemetry, TelemetryBuilder};
use wasi_observe_store::Store;
use wasmtime::component::Component;
use wasmtime::error::Context as _;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime::{Result, bail};

/// Which telemetry store to use.
#[derive(Args, Clone, Debug, Default)]
pub struct DbOptions {
    /// The telemetry store (an SQLite file). Default:
    /// `$XDG_DATA_HOME/wasi-observe/telemetry.db` (`~/.local/share/...`).
    #[arg(long, value_name = "PATH", env = wasi_observe_store::DB_ENV)]
    pub db: Option<PathBuf>,
}

impl DbOptions {
    /// The store's path.
    pub fn path(&self) -> Result<PathBuf> {
        match &self.db {
            Some(p) => Ok(p.clone()),
            None => wasi_observe_store::default_path().map_err(store_err),
        }
    }

    /// Opens the store for reading; it must exist.
    pub fn open(&self) -> Result<Store> {
        let path = self.path()?;
        Store::open_existing(&path).map_err(store_err)
    }

    /// `--db PATH` when the store is not the default one, for commands we
    /// suggest to the user.
    pub fn flag(&self) -> String {
        let default = wasi_observe_store::default_path().ok();
        match &self.db {
            Some(p) if Some(p) != default.as_ref() => format!(" --db {}", p.display()),
            _ => String::new(),
        }
    }
}

/// Where telemetry goes.
#[derive(Args, Clone, Debug, Default)]
pub struct ExportOptions {
    /// Exporters for every signal, comma separated: `store` (the embedded
    /// telemetry store, see --db), `store:PATH`, `otlp`, `console`,
    /// `jsonl:PATH` (OTLP/JSON lines), `none`. Overrides OTEL_TRACES_EXPORTER,
    /// OTEL_LOGS_EXPORTER and OTEL_METRICS_EXPORTER. Default: `otlp` when an
    /// OTLP endpoint is configured, else `store`.
    #[arg(long, value_name = "LIST")]
    pub exporter: Option<String>,

    #[command(flatten)]
    pub db: DbOptions,
}

/// Import and export call tracing.
#[derive(Args, Clone, Debug, Default)]
pub struct CallOptions {
    /// Trace every call the guest (component or core module) makes to a host
    /// import, and every export the host calls, as a span under the guest's
    /// current span;
    /// with `=GLOBS` (comma separated, `*` wildcard), only matching interfaces
    /// or `interface#function` names, e.g. `wasi:http/*,wasi:filesystem/*`.
    #[arg(long, value_name = "GLOBS", num_args = 0..=1, require_equals = true, default_missing_value = "*")]
    pub trace_calls: Option<String>,

    /// With --trace-calls: drop import spans shorter than this (e.g. `1ms`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "trace_calls")]
    pub trace_calls_min: Option<std::time::Duration>,

    /// With --trace-calls: record the arguments that are not lists as
    /// `wasm.arg.NAME` attributes. They may hold secrets.
    #[arg(long, requires = "trace_calls")]
    pub trace_call_arguments: bool,
}

impl CallOptions {
    /// The tracing asked for, installed as the process's `tracing`
    /// subscriber; `None` when --trace-calls is absent.
    pub fn install(&self) -> Result<Option<wasi_observe_host::host_spans::calls::CallTracing>> {
        let Some(globs) = &self.trace_calls else {
            return Ok(None);
        };
        let tracing = wasi_observe_host::host_spans::calls::CallTracing::new()
            .with_filter(globs.split(',').map(|g| g.trim().to_string()))
            .with_min_duration(self.trace_calls_min.unwrap_or_default())
            .with_arguments(self.trace_call_arguments);
        tracing.clone().install()?;
        Ok(Some(tracing))
    }
}

/// A telemetry pipeline, and the store it writes to, if any.
pub struct Pipeline {
    /// The pipeline.
    pub telemetry: Telemetry,
    /// The store some signal goes to.
    pub store: Option<Store>,
}

impl ExportOptions {
    /// Builds the telemetry pipeline, named after `component` unless the
    /// environment names the service.
    pub fn telemetry(&self, component: &Path) -> Result<Pipeline> {
        let (builder, store) = self.builder(component)?;
        Ok(Pipeline {
            telemetry: builder.build()?,
            store,
        })
    }

    /// The pipeline's builder with every exporter added, and the store some
    /// signal goes to (one store handle for all signals, kept so that `run`
    /// can say what it recorded).
    fn builder(&self, component: &Path) -> Result<(TelemetryBuilder, Option<Store>)> {
        let service = component
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("wasm-component");
        let mut builder = Telemetry::builder().with_default_service_name(service);
        let mut store: Option<Store> = None;
        if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok((builder.with_enabled(false), None));
        }
        let fallback = [Exporter::Store(None)];
        for signal in [Signal::Traces, Signal::Logs, Signal::Metrics] {
            let exporters = match &self.exporter {
                Some(list) => parse_exporters(list),
                None => exporters_from_env(signal, &fallback),
            }
            .map_err(wasmtime::Error::msg)?;
            for e in &exporters {
                builder = match e {
                    Exporter::Store(path) => {
                        let path = match path {
                            Some(p) => p.clone(),
                            None => self.db.path()?,
                        };
                        let s = match &store {
                            Some(s) if s.path() == path => s.clone(),
                            _ => open_store(Some(&path))?,
                        };
                        store = Some(s.clone());
                        builder.with_store(signal, s)
                    }
                    other => builder.with_exporter(signal, other)?,
                };
            }
        }
        Ok((builder, store))
    }
}

/// A store error as the commands report it (with its causes).
pub fn store_err(e: anyhow::Error) -> wasmtime::Error {
    wasmtime::Error::msg(format!("{e:#}"))
}

/// The engine every command uses: epoch interruption lets Ctrl-C, SIGTERM
/// and `--timeout` stop a running guest so its telemetry can be closed and
/// flushed; `fuel` turns on fuel metering for `--fuel`.
pub fn engine(fuel: bool) -> Result<Engine> {
    Engine::new(&config(fuel))
}

fn config(fuel: bool) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    // No component-model-async is needed; without it host calls are cheaper.
    config.concurrency_support(false);
    // For profiling guests with `perf`: their functions get names.
    if std::env::var_os("WASI_OBSERVE_PERFMAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

/// How much of each linear memory and table a pooled slot keeps mapped
/// between instances: it is zeroed with `memset`, not returned to the
/// kernel, so the next instance takes no page faults and no TLB shootdowns
/// there. Most components touch less than this per request.
const KEEP_RESIDENT: usize = 4 << 20;

/// The engine `serve` uses: as [`engine`], with wasmtime's pooling allocator
/// (instances, memories, tables and stacks reused from preallocated slots,
/// for up to `instances` component instances at once). Per-request
/// instantiation then costs a fraction of what fresh mappings cost. Fails
/// where the pool's address space cannot be reserved (`ulimit -v`).
pub fn pooled_engine(instances: u32) -> Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    // A component made by wit-component instantiates a few core modules
    // (the program, shims, adapters), with one memory and up to two tables
    // between them; the slack covers components with more.
    pool.total_component_instances(instances)
        .total_stacks(instances)
        .total_core_instances(instances.saturating_mul(8))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(4))
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT);
    let mut config = config(false);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// A guest as `run` loaded it, with its bytes (for function names).
pub enum Loaded {
    /// A component.
    Component(Component, Vec<u8>),
    /// A core module (run as a WASI preview 1 command).
    Module(wasmtime::Module, Vec<u8>),
}

impl Loaded {
    /// The binary it was compiled from.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Loaded::Component(_, b) | Loaded::Module(_, b) => b,
        }
    }
}

/// Loads a component or a core module (told apart by the header; text
/// format files by their first form), with clear errors for a missing file
/// and a file that is not WebAssembly at all.
pub fn load(engine: &Engine, path: &Path) -> Result<Loaded> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = if path.extension().is_some_and(|e| e == "wat") {
        wat::parse_bytes(&bytes)
            .with_context(|| format!("cannot parse {}", path.display()))?
            .into_owned()
    } else {
        bytes
    };
    let compile = || format!("cannot compile {}", path.display());
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
            let module = wasmtime::Module::new(engine, &bytes).with_context(compile)?;
            Ok(Loaded::Module(module, bytes))
        }
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => {
            let component = Component::new(engine, &bytes).with_context(compile)?;
            Ok(Loaded::Component(component, bytes))
        }
        _ => bail!(
            "{} is not a WebAssembly component or module",
            path.display()
        ),
    }
}

/// A duration as `--timeout` takes it: a number with a unit (`ns`, `us`,
/// `ms`, `s`, `m`, `h`), or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{s}`: expected a duration such as 500ms, 30s or 2m"))?;
    let seconds = match unit.trim() {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "`{s}`: unknown unit `{other}` (ns, us, ms, s, m, h)"
            ));
        }
    };
    std::time::Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{s}`: {e}"))
}

/// `HOST[::GUEST]` as `--dir` takes it.
pub fn parse_dir(s: &str) -> Result<(PathBuf, String), String> {
    match s.split_once("::") {
        Some((host, guest)) if !host.is_empty() && !guest.is_empty() => {
            Ok((host.into(), guest.to_string()))
        }
        Some(_) => Err(format!("`{s}`: expected HOST or HOST::GUEST")),
        None => Ok((s.into(), s.to_string())),
    }
}

/// `KEY=VALUE`, or `KEY` to pass the host's value through.
pub fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) => Err(format!("`{s}`: empty variable name")),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => std::env::var(s)
            .map(|v| (s.to_string(), v))
            .map_err(|_| format!("`{s}` is not set in the host environment")),
    }
}

/// Flushes and stops the pipeline, and says what was lost, if anything.
pub fn finish(telemetry: &Telemetry) {
    if let Err(e) = telemetry.shutdown() {
        eprintln!("wasi-observe: {e}");
    }
    let stats = telemetry.stats();
    if stats.has_losses() {
        let losses: Vec<String> = stats.losses().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!(
            "wasi-observe: telemetry was dropped or cut: {}",
            losses.join(", ")
        );
    }
}

/// A component's store data, for `run` and `serve` alike.
pub struct Host {
    wasi: wasmtime_wasi::WasiCtx,
    http: wasmtime_wasi_http::WasiHttpCtx,
    table: wasmtime::component::ResourceTable,
    /// The guest's telemetry state.
    pub observe: wasi_observe_host::WasiObserveCtx,
}

impl Host {
    /// Store data for one instance.
    pub fn new(wasi: wasmtime_wasi::WasiCtx, observe: wasi_observe_host::WasiObserveCtx) -> Self {
        Host {
            wasi,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            table: wasmtime::component::ResourceTable::new(),
            observe,
        }
    }
}

impl wasmtime_wasi::WasiView for Host {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for Host {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            // Outgoing requests get CLIENT spans and trace context.
            hooks: &mut self.observe,
        }
    }
}

impl wasi_observe_host::WasiObserveView for Host {
    fn observe(&mut self) -> &mut wasi_observe_host::WasiObserveCtx {
        &mut self.observe
    }
}

/// What stopped a guest, in one line: the trap, or the error's causes.
pub fn trap_summary(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded store alone gets the store's batch sizes (16 384 queued,
    /// 8 192 a batch), as docs/store.md promises; beside another exporter,
    /// the ordinary ones.
    #[test]
    fn a_store_only_pipeline_gets_the_store_batch_sizes() {
        let dir =
            std::env::temp_dir().join(format!("wasi-observe-cli-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("t.db");
        let options = ExportOptions {
            exporter: Some(format!("store:{}", db.display())),
            db: DbOptions::default(),
        };
        let (builder, store) = options.builder(Path::new("app.wasm")).unwrap();
        assert!(store.is_some());
        assert_eq!(builder.span_batch_config().max_export_batch_size, 8_192);
        assert_eq!(builder.span_batch_config().max_queue_size, 16_384);
        assert_eq!(builder.log_batch_config().max_export_batch_size, 8_192);

        let options = ExportOptions {
            exporter: Some(format!("store:{},console", db.display())),
            db: DbOptions::default(),
        };
        let (builder, _) = options.builder(Path::new("app.wasm")).unwrap();
        assert_eq!(builder.span_batch_config().max_export_batch_size, 512);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

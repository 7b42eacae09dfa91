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
use wasmtime::{ResourceLimiter, Result, bail};

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

/// The variable that sets `--max-memory`.
pub const MAX_MEMORY_ENV: &str = "WASI_OBSERVE_MAX_MEMORY";

/// The most one instance's resources may grow to.
#[derive(Args, Clone, Debug)]
pub struct LimitOptions {
    /// The most each of the guest's linear memories may grow to (`256MiB`,
    /// `1GiB`, `512KiB`, or bytes; at most 4GiB). A growth past it is
    /// refused, which most guests (Rust's included) turn into a trap; the
    /// host then says the limit was reached.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "256MiB",
          env = MAX_MEMORY_ENV)]
    pub max_memory: usize,
}

impl LimitOptions {
    /// A fresh limiter for one store.
    pub fn limiter(&self) -> InstanceLimits {
        InstanceLimits::new(self.max_memory)
    }
}

/// The most elements a table may grow to (8 bytes each: 8 MiB). Tables
/// hold function references; the largest programs have tens of thousands.
/// The pooling allocator keeps its own, smaller cap (20 000).
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// A store's [`ResourceLimiter`]: each linear memory may grow to at most
/// `--max-memory` bytes and each table to [`MAX_TABLE_ELEMENTS`]. A growth
/// past them is refused (`memory.grow` returns -1, as the WebAssembly
/// specification allows), and the first refusal is remembered, so that the
/// trap a guest usually makes of it can be explained.
#[derive(Clone, Debug)]
pub struct InstanceLimits {
    max_memory: usize,
    refused: Option<Refusal>,
}

/// A growth the limiter refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// A linear memory, to this many bytes.
    Memory(usize),
    /// A table, to this many elements.
    Table(usize),
}

impl InstanceLimits {
    /// Limits with `max_memory` bytes per linear memory.
    pub fn new(max_memory: usize) -> Self {
        InstanceLimits {
            max_memory,
            refused: None,
        }
    }

    /// Whether the first refusal was of a linear memory (`--max-memory`).
    pub fn memory_refused(&self) -> bool {
        matches!(self.refused, Some(Refusal::Memory(_)))
    }

    /// What was refused, in words (`None`: nothing was).
    pub fn refusal(&self) -> Option<String> {
        Some(match self.refused? {
            Refusal::Memory(desired) => format!(
                "its linear memory reached --max-memory {} (growing it to {} was refused)",
                format_size(self.max_memory),
                format_size(desired)
            ),
            Refusal::Table(desired) => format!(
                "a table reached {MAX_TABLE_ELEMENTS} elements (growing it to {desired} was refused)"
            ),
        })
    }
}

impl ResourceLimiter for InstanceLimits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        if desired > self.max_memory {
            self.refused.get_or_insert(Refusal::Memory(desired));
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.refused.get_or_insert(Refusal::Table(desired));
            return Ok(false);
        }
        Ok(true)
    }
}

/// The largest `--max-memory`: what a 32-bit linear memory can address,
/// and what the pooling allocator's slots reserve.
const MAX_MEMORY_LIMIT: u64 = 4 << 30;

/// A size as `--max-memory` takes it: a whole number of bytes, or with a
/// binary unit (`KiB`, `MiB`, `GiB`; `K`, `M`, `G` and `KB`, `MB`, `GB`
/// mean the same here), between 64 KiB (one WebAssembly page) and 4 GiB.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}`: expected a size such as 256MiB, 1GiB or 65536"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("`{s}`: unknown unit `{other}` (KiB, MiB, GiB)")),
    };
    let bytes = n
        .checked_mul(scale)
        .filter(|b| (64 << 10..=MAX_MEMORY_LIMIT).contains(b))
        .ok_or_else(|| format!("`{s}`: must be between 64KiB and 4GiB"))?;
    usize::try_from(bytes).map_err(|_| format!("`{s}`: too large for this machine"))
}

/// Bytes as the messages say them: `256 MiB`, `1 GiB`, `640 KiB`.
pub fn format_size(bytes: usize) -> String {
    let b = bytes as u64;
    for (unit, scale) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if b >= scale && b.is_multiple_of(scale) {
            return format!("{} {unit}", b / scale);
        }
    }
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20))
    } else {
        format!("{b} bytes")
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
        self.telemetry_with(component, |b| b)
    }

    /// As [`telemetry`](Self::telemetry), with `adjust` applied to the
    /// builder once every exporter is added (so that it sees the queue
    /// settings the exporters call for).
    pub fn telemetry_with(
        &self,
        component: &Path,
        adjust: impl FnOnce(TelemetryBuilder) -> TelemetryBuilder,
    ) -> Result<Pipeline> {
        let (builder, store) = self.builder(component)?;
        Ok(Pipeline {
            telemetry: adjust(builder).build()?,
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

/// Whether a pooled slot is reset by scanning for the pages the instance
/// touched (Linux's `PAGEMAP_SCAN`, kernels 6.7 and later) instead of
/// zeroing its whole first [`KEEP_RESIDENT`] bytes. A component's initial
/// memory includes its shadow stack (1 MiB for Rust's default), almost all
/// of it untouched by a request; zeroing it every request took a fifth of
/// `serve`'s CPU and flushed the caches, and scanning doubled the requests
/// served per second (docs/serve.md). `WASI_OBSERVE_PAGEMAP_SCAN=0` turns
/// it off, for comparison; where the kernel lacks it, wasmtime zeroes.
fn pagemap_scan() -> wasmtime::Enabled {
    match std::env::var("WASI_OBSERVE_PAGEMAP_SCAN").as_deref() {
        Ok("0") => wasmtime::Enabled::No,
        _ => wasmtime::Enabled::Auto,
    }
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
/// where the pool's address space cannot be reserved (`ulimit -v`). Each
/// linear memory slot may grow to `max_memory` bytes, as the store's
/// [`InstanceLimits`] allow.
pub fn pooled_engine(instances: u32, max_memory: usize) -> Result<Engine> {
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
        .table_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(pagemap_scan())
        .max_memory_size(max_memory);
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

/// Flushes and stops the pipeline, and says what was lost, if anything. A
/// SIGINT or SIGTERM meanwhile ends the exporters' retries (a collector that
/// is down is retried for `WASI_OBSERVE_EXIT_RETRY_MS`): what they still
/// hold is counted as failed and reported, and the process exits.
pub fn finish(telemetry: &Telemetry) {
    let watcher = give_up_on_signal(telemetry);
    if let Err(e) = telemetry.shutdown() {
        eprintln!("wasi-observe: {e}");
    }
    if let Some(handle) = watcher {
        handle.close();
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

/// Watches for SIGINT and SIGTERM while the pipeline shuts down; the first
/// makes it give up its exit retries.
fn give_up_on_signal(telemetry: &Telemetry) -> Option<signal_hook::iterator::Handle> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).ok()?;
    let handle = signals.handle();
    let telemetry = telemetry.clone();
    std::thread::Builder::new()
        .name("wasi-observe-exit-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                eprintln!(
                    "wasi-observe: {name} at exit: no more export retries; \
                     what they held is counted as failed"
                );
                telemetry.give_up_exit_retries();
            }
        })
        .ok()?;
    Some(handle)
}

/// A component's store data, for `run` and `serve` alike.
pub struct Host {
    /// Caps the instance's memories and tables.
    pub limits: InstanceLimits,
    wasi: wasmtime_wasi::WasiCtx,
    http: wasmtime_wasi_http::WasiHttpCtx,
    table: wasmtime::component::ResourceTable,
    /// The guest's telemetry state.
    pub observe: wasi_observe_host::WasiObserveCtx,
}

impl Host {
    /// Store data for one instance; install `limits` with
    /// [`Host::limit`].
    pub fn new(
        wasi: wasmtime_wasi::WasiCtx,
        observe: wasi_observe_host::WasiObserveCtx,
        limits: InstanceLimits,
    ) -> Self {
        Host {
            limits,
            wasi,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            table: wasmtime::component::ResourceTable::new(),
            observe,
        }
    }
}

impl Host {
    /// Makes the store's [`InstanceLimits`] its resource limiter.
    pub fn limit(store: &mut wasmtime::Store<Host>) {
        store.limiter(|host| &mut host.limits);
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

/// What to say when `component`'s imports cannot all be linked: `action`
/// ("run", "serve") and the component's path, and, when it imports Spin's
/// own interfaces (as components built with Spin's SDK do), which ones and
/// why they cannot be provided here. wasmtime's error, chained below this,
/// names the first missing import.
pub fn missing_imports(
    engine: &Engine,
    component: &Component,
    action: &str,
    path: &Path,
) -> String {
    let spin: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .filter(|name| name.starts_with("fermyon:spin/") || name.starts_with("spin:"))
        .collect();
    if spin.is_empty() {
        return format!("cannot {action} {}: an import is missing", path.display());
    }
    format!(
        "cannot {action} {}: it imports Spin's own {} {}, which only Spin provides. \
         wasi-observe provides WASI 0.2, wasi:http, wasi:otel, wasi:observe and \
         wasi:logging: build the component without the Spin SDK features that use \
         {}, or run it under Spin (`spin up --experimental-wasi-otel`)",
        path.display(),
        if spin.len() == 1 {
            "interface"
        } else {
            "interfaces"
        },
        spin.join(", "),
        if spin.len() == 1 { "it" } else { "them" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units_within_bounds() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size(" 1 GiB "), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("65536"), Ok(65536));
        for bad in ["", "MiB", "-1", "1.5GiB", "5GiB", "1KiB", "0", "10 parsecs"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        // No overflow on a huge number.
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert!(parse_size("18446744073709551615GiB").is_err());
        assert_eq!(format_size(256 << 20), "256 MiB");
        assert_eq!(format_size(4 << 30), "4 GiB");
        assert_eq!(format_size(640 << 10), "640 KiB");
        assert_eq!(format_size((3 << 20) + (1 << 19)), "3584 KiB");
        assert_eq!(format_size(100), "100 bytes");
    }

    /// Growths past the limits are refused, not trapped on, and the first
    /// refusal is what the message names.
    #[test]
    fn the_limiter_refuses_growth_past_the_limits_and_remembers_the_first() {
        let mut limits = InstanceLimits::new(1 << 20);
        assert_eq!(limits.memory_growing(0, 1 << 20, None).ok(), Some(true));
        assert_eq!(
            limits.table_growing(0, MAX_TABLE_ELEMENTS, None).ok(),
            Some(true)
        );
        assert!(limits.refusal().is_none() && !limits.memory_refused());
        assert_eq!(
            limits.memory_growing(1 << 20, 2 << 20, None).ok(),
            Some(false)
        );
        assert_eq!(
            limits.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).ok(),
            Some(false)
        );
        assert!(limits.memory_refused());
        assert_eq!(
            limits.refusal().as_deref(),
            Some("its linear memory reached --max-memory 1 MiB (growing it to 2 MiB was refused)")
        );
    }

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

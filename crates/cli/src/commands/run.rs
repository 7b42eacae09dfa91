//! `wasi-observe run`: run a `wasi:cli/command` component, or a core module
//! (WASI preview 1, `_start`), told apart by their header.

use std::path::PathBuf;
use std::process;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use wasi_observe_host::functions::FunctionNames;
use wasi_observe_host::host_spans::calls;
use wasi_observe_host::{Telemetry, WasiObserveCtx, WasiObserveView};
use wasmtime::Result;
use wasmtime::component::Linker;
use wasmtime::error::Context as _;
use wasmtime::{Store, Trap};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::{Command, CommandPre};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder};

use crate::common::{
    CallOptions, DbOptions, ExportOptions, Host, InstanceLimits, LimitOptions, Loaded, engine,
    finish, load, parse_dir, parse_duration, parse_env, trap_summary,
};
use crate::view::{plural, printable, short_id};
use wasi_observe_store::{Store as TelemetryStore, TraceSummary};

/// Run a command component (`wasi:cli/command`) and export its telemetry.
#[derive(Parser)]
pub struct RunCommand {
    /// Grant the guest a host directory, optionally under another name.
    #[arg(long = "dir", value_name = "HOST[::GUEST]", value_parser = parse_dir)]
    dirs: Vec<(PathBuf, String)>,

    /// Set a guest environment variable (`KEY` alone passes the host's value).
    #[arg(long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env)]
    envs: Vec<(String, String)>,

    /// Stop the guest after this long (e.g. `500ms`, `30s`, `2m`): its open
    /// spans are ended, telemetry is flushed, and the exit code is 124, as
    /// with `timeout(1)`.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,

    /// Stop the guest once it has consumed this much fuel (about one unit
    /// per WebAssembly instruction); the exit code is then 124 too.
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,

    /// In an instrumented guest (`wasi-observe instrument`, or Dylibso's),
    /// calls shorter than this are not spans unless something kept happened
    /// inside them (`0` keeps every call).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "100us")]
    min_function_duration: Duration,

    #[command(flatten)]
    limits: LimitOptions,

    #[command(flatten)]
    export: ExportOptions,

    #[command(flatten)]
    calls: CallOptions,

    /// The component (or core module) to run.
    component: PathBuf,

    /// Arguments for the guest.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// A core module's store data.
struct ModuleHost {
    limits: InstanceLimits,
    wasi: WasiP1Ctx,
    observe: WasiObserveCtx,
}

impl WasiObserveView for ModuleHost {
    fn observe(&mut self) -> &mut WasiObserveCtx {
        &mut self.observe
    }
}

/// A guest ready to run, of either kind.
enum Guest {
    Component(Store<Host>, CommandPre<Host>),
    Module(Store<ModuleHost>, wasmtime::InstancePre<ModuleHost>),
}

impl Guest {
    fn observe(&mut self) -> &mut WasiObserveCtx {
        match self {
            Guest::Component(store, _) => &mut store.data_mut().observe,
            Guest::Module(store, _) => &mut store.data_mut().observe,
        }
    }

    /// The store's limiter.
    fn limits(&self) -> &InstanceLimits {
        match self {
            Guest::Component(store, _) => &store.data().limits,
            Guest::Module(store, _) => &store.data().limits,
        }
    }

    fn set_limits(&mut self, fuel: Option<u64>) -> Result<()> {
        match self {
            Guest::Component(store, _) => Host::limit(store),
            Guest::Module(store, _) => store.limiter(|host| &mut host.limits),
        }
        fn apply<T>(store: &mut Store<T>, fuel: Option<u64>) -> Result<()> {
            store.set_epoch_deadline(1);
            store.epoch_deadline_trap();
            if let Some(fuel) = fuel {
                store.set_fuel(fuel)?;
            }
            Ok(())
        }
        match self {
            Guest::Component(store, _) => apply(store, fuel),
            Guest::Module(store, _) => apply(store, fuel),
        }
    }

    /// Runs the command; `Ok(Err(()))` when it returned an error.
    fn run(&mut self) -> Result<Result<(), ()>> {
        match self {
            Guest::Component(store, pre) => {
                let instance = pre.instance_pre().instantiate(&mut *store)?;
                let command = Command::new(&mut *store, &instance)?;
                let result = command.wasi_cli_run().call_run(&mut *store)?;
                // What the guest holds (measurements made outside spans).
                wasi_observe_host::flush_guest(&mut *store, &instance)?;
                Ok(result)
            }
            Guest::Module(store, pre) => {
                let instance = pre.instantiate(&mut *store)?;
                let start = instance
                    .get_typed_func::<(), ()>(&mut *store, "_start")
                    .context("the module exports no `_start` function")?;
                start.call(&mut *store, ()).map(Ok)
            }
        }
    }
}

/// Which signal stopped the guest: 0 none, else the signal number.
static INTERRUPTED: AtomicU8 = AtomicU8::new(0);

/// Whether `--timeout` stopped the guest.
static TIMED_OUT: AtomicBool = AtomicBool::new(false);

/// How long a guest blocked in a host call gets to notice Ctrl-C (or the
/// timeout) before the process flushes and exits without it.
const INTERRUPT_GRACE: Duration = Duration::from_secs(3);

/// The exit code when `--timeout` or `--fuel` stopped the guest.
const LIMIT_EXIT: i32 = 124;

impl RunCommand {
    /// Runs the component; never returns on success (the guest's exit code
    /// becomes the process's).
    pub fn execute(self) -> Result<()> {
        if !self.component.exists() {
            wasmtime::bail!("no such file: {}", self.component.display());
        }
        let engine = engine(self.fuel.is_some())?;
        let loaded = load(&engine, &self.component)?;
        let pipeline = self.export.telemetry(&self.component)?;
        let telemetry = pipeline.telemetry;

        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdio().inherit_network();
        let name = self.component.display().to_string();
        wasi.args(
            &std::iter::once(name)
                .chain(self.args.iter().cloned())
                .collect::<Vec<_>>(),
        );
        for (k, v) in &self.envs {
            wasi.env(k, v);
        }
        for (host, guest) in &self.dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadWrite)
                .with_context(|| format!("cannot open directory {}", host.display()))?;
        }
        let functions = Arc::new(FunctionNames::from_wasm(loaded.bytes()));
        // A pipeline's trace context (TRACEPARENT, TRACESTATE): the guest's
        // root spans join that trace.
        let parent = wasi_observe_host::context_from_env();
        // --trace-calls: a span around the `run` export (`_start` for a core
        // module), the guest's spans under it, and a span per import call.
        let calls = match (self.calls.install()?, &loaded) {
            (Some(tracing), Loaded::Component(component, _)) => {
                let names = Arc::new(calls::ImportNames::of(&engine, component));
                let span = calls::export_interface(&engine, component, "run")
                    .filter(|interface| tracing.selects(interface, "run"))
                    .map(|interface| {
                        calls::export_span(&telemetry, &interface, "run", parent.as_ref())
                    });
                Some((names, span))
            }
            (Some(tracing), Loaded::Module(..)) => {
                let span = tracing
                    .selects("", "_start")
                    .then(|| calls::core_export_span(&telemetry, "_start", parent.as_ref()));
                Some((Arc::new(calls::ImportNames::default()), span))
            }
            (None, _) => None,
        };
        let (names, run_span) = calls.unzip();
        let mut run_span = run_span.flatten();
        let mut observe = WasiObserveCtx::builder(&telemetry)
            .with_guest_environment(self.envs.clone().into())
            .with_function_names(functions)
            .with_min_function_duration(self.min_function_duration)
            .with_parent(run_span.as_ref().map(|s| s.context().clone()).or(parent));
        if let Some(names) = names {
            observe = observe.with_call_tracing(names);
        }
        let mut guest = self.prepare(&engine, loaded, wasi, observe.build())?;
        match &mut guest {
            Guest::Component(store, _) => wasi_observe_host::observe_store(store),
            Guest::Module(store, _) => wasi_observe_host::observe_store(store),
        }
        guest.set_limits(self.fuel)?;

        let stopper = Stopper {
            engine: engine.clone(),
            telemetry: Arc::new(Mutex::new(Some(telemetry.clone()))),
        };
        install_signal_handler(stopper.clone())?;
        if let Some(timeout) = self.timeout {
            stopper.clone().after(timeout);
        }

        let result = guest.run();
        // The guest has stopped: from here on this thread flushes and exits.
        stopper
            .telemetry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let limit_hit = result
            .as_ref()
            .is_err_and(|e| timed_out(e) || e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel));

        let (code, reason) = match &result {
            Ok(Ok(())) => (0, "the guest returned while this span was open".to_string()),
            Ok(Err(())) => (
                1,
                "the guest returned an error while this span was open".to_string(),
            ),
            Err(e) => match (
                e.downcast_ref::<I32Exit>(),
                INTERRUPTED.load(Ordering::SeqCst),
            ) {
                _ if timed_out(e) => (
                    LIMIT_EXIT,
                    format!(
                        "the guest was stopped by --timeout {:?}",
                        self.timeout.unwrap_or_default()
                    ),
                ),
                _ if e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) => (
                    LIMIT_EXIT,
                    format!(
                        "the guest ran out of fuel (--fuel {})",
                        self.fuel.unwrap_or_default()
                    ),
                ),
                (_, sig) if sig != 0 => (
                    128 + i32::from(sig),
                    format!("the guest was interrupted by {}", signal_name(sig)),
                ),
                (Some(exit), _) => (
                    exit.0,
                    format!(
                        "the guest exited with code {} while this span was open",
                        exit.0
                    ),
                ),
                (None, _) => match guest.limits().refusal() {
                    Some(refusal) => (
                        134,
                        format!("the guest trapped: {}; {refusal}", trap_summary(e)),
                    ),
                    None => (134, format!("the guest trapped: {}", trap_summary(e))),
                },
            },
        };
        let refusal = guest
            .limits()
            .refusal()
            .map(|r| (r, guest.limits().memory_refused()));
        guest.observe().end_open_spans(&reason);
        drop(guest);
        if let Some(span) = &mut run_span {
            match &result {
                Ok(Ok(())) => {}
                Ok(Err(())) => {
                    calls::export_failed(span, "error_result", "run returned an error".into())
                }
                Err(e) => match e.downcast_ref::<I32Exit>() {
                    Some(I32Exit(0)) => {}
                    Some(I32Exit(code)) => calls::export_failed(
                        span,
                        "exit",
                        format!("the guest exited with code {code}"),
                    ),
                    None => calls::export_failed(span, "trap", reason.clone()),
                },
            }
        }
        drop(run_span);

        match INTERRUPTED.load(Ordering::SeqCst) {
            _ if limit_hit => eprintln!("wasi-observe: {reason}"),
            0 => {
                if let Err(e) = &result
                    && e.downcast_ref::<I32Exit>().is_none()
                {
                    eprintln!("Error: {e:?}");
                }
                if let Some((refusal, memory)) = &refusal {
                    let hint = if *memory {
                        format!(
                            "; raise it with --max-memory or {}",
                            crate::common::MAX_MEMORY_ENV
                        )
                    } else {
                        String::new()
                    };
                    eprintln!("wasi-observe: the guest reached a limit: {refusal}{hint}");
                }
            }
            sig => eprintln!("wasi-observe: interrupted by {}", signal_name(sig)),
        }
        finish(&telemetry);
        if let Some(store) = &pipeline.store {
            report_store(store, &self.export.db);
        }
        process::exit(code);
    }
}

impl RunCommand {
    /// Links the guest: WASI preview 2 and wasi-observe for a component
    /// (plus the recorder import of instrumented ones); WASI preview 1 and
    /// Dylibso's Observe ABI for a core module.
    fn prepare(
        &self,
        engine: &wasmtime::Engine,
        loaded: Loaded,
        mut wasi: WasiCtxBuilder,
        observe: WasiObserveCtx,
    ) -> Result<Guest> {
        let missing = || {
            format!(
                "cannot run {}: an import is missing",
                self.component.display()
            )
        };
        match loaded {
            Loaded::Component(component, _) => {
                let mut linker = Linker::<Host>::new(engine);
                wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
                wasi_observe_host::add_to_linker(&mut linker)?;
                wasi_observe_host::functions::add_recorder_to_linker(&mut linker)?;
                let pre = linker.instantiate_pre(&component).with_context(|| {
                    crate::common::missing_imports(engine, &component, "run", &self.component)
                })?;
                let pre = CommandPre::new(pre).with_context(|| {
                    format!(
                        "{} is not a wasi:cli/command component",
                        self.component.display()
                    )
                })?;
                let host = Host::new(wasi.build(), observe, self.limits.limiter());
                Ok(Guest::Component(Store::new(engine, host), pre))
            }
            Loaded::Module(module, _) => {
                let mut linker = wasmtime::Linker::<ModuleHost>::new(engine);
                wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |h| &mut h.wasi)?;
                wasi_observe_host::functions::dylibso::add_to_linker(&mut linker, &module)?;
                let pre = linker.instantiate_pre(&module).with_context(missing)?;
                let host = ModuleHost {
                    limits: self.limits.limiter(),
                    wasi: wasi.build_p1(),
                    observe,
                };
                Ok(Guest::Module(Store::new(engine, host), pre))
            }
        }
    }
}

/// One line naming the traces this run recorded and the command that shows
/// them; and what the store had to drop, if anything.
pub(crate) fn report_store(store: &TelemetryStore, db: &DbOptions) {
    let dropped = store.dropped();
    if dropped.any() {
        eprintln!(
            "wasi-observe: the telemetry store {} dropped {} spans, {} log records and {} metric points (it was full)",
            store.path().display(),
            dropped.spans,
            dropped.logs,
            dropped.metric_points
        );
    }
    let line = recorded_line(
        &store.recorded_traces(),
        store.recorded_count(),
        &db.flag(),
        |id| store.trace_summary(id).ok().flatten(),
    );
    eprintln!("wasi-observe: {line}");
}

/// What [`report_store`] says about the traces: `traces` are the first ids
/// recorded, `total` how many there were, `summary` looks one up. Apart from
/// the store so that it can be tested on ids and names no real run records.
fn recorded_line(
    traces: &[String],
    total: usize,
    flag: &str,
    summary: impl Fn(&str) -> Option<TraceSummary>,
) -> String {
    let name = |id: &str| match summary(id) {
        Some(t) => format!(
            "{} (\"{}\", {})",
            printable(id),
            printable(&t.root_name),
            plural(usize::try_from(t.span_count).unwrap_or(0), "span")
        ),
        None => printable(id),
    };
    match traces {
        [] => format!(
            "recorded no traces; see logs and metrics with: wasi-observe logs{flag}, wasi-observe metrics{flag}"
        ),
        [one] => format!(
            "recorded trace {}; see it with: wasi-observe trace {}{flag}",
            name(one),
            short_id(one)
        ),
        many => {
            let shown: Vec<String> = many.iter().take(3).map(|id| name(id)).collect();
            let more = match total.saturating_sub(shown.len()) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            format!(
                "recorded {total} traces: {}{more}; see them with: wasi-observe traces{flag}",
                shown.join(", ")
            )
        }
    }
}

/// Whether `--timeout` interrupted the guest (rather than the guest ending
/// on its own just as the timeout fired).
fn timed_out(e: &wasmtime::Error) -> bool {
    TIMED_OUT.load(Ordering::SeqCst) && e.downcast_ref::<Trap>() == Some(&Trap::Interrupt)
}

fn signal_name(sig: u8) -> &'static str {
    match sig {
        2 => "SIGINT",
        15 => "SIGTERM",
        _ => "a signal",
    }
}

/// Stops a running guest from another thread: at its next epoch check the
/// guest traps, and `execute` ends its open spans and flushes. A guest blocked
/// in a host call gets a grace period, after which telemetry is flushed and
/// the process exits without it.
#[derive(Clone)]
struct Stopper {
    engine: wasmtime::Engine,
    telemetry: Arc<Mutex<Option<Telemetry>>>,
}

impl Stopper {
    fn stop(&self, exit_code: i32) {
        self.engine.increment_epoch();
        let telemetry = self.telemetry.clone();
        std::thread::spawn(move || {
            std::thread::sleep(INTERRUPT_GRACE);
            // Taken by `execute` once the guest has stopped: then `execute`
            // finishes (retrying exports for a bounded time) and exits.
            if let Some(t) = telemetry.lock().unwrap_or_else(|e| e.into_inner()).take() {
                eprintln!("wasi-observe: the guest did not stop; flushing telemetry and exiting");
                finish(&t);
                process::exit(exit_code);
            }
        });
    }

    /// Stops the guest after `timeout` (unless a signal stopped it first).
    fn after(self, timeout: Duration) {
        std::thread::spawn(move || {
            std::thread::sleep(timeout);
            if INTERRUPTED.load(Ordering::SeqCst) == 0 && !TIMED_OUT.swap(true, Ordering::SeqCst) {
                self.stop(LIMIT_EXIT);
            }
        });
    }
}

/// On SIGINT (Ctrl-C) or SIGTERM: stop the guest, reporting which signal
/// (exit code 128 + its number: 130, 143).
fn install_signal_handler(stopper: Stopper) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("wasi-observe-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let sig = u8::try_from(sig).unwrap_or(u8::MAX);
                if TIMED_OUT.load(Ordering::SeqCst) || INTERRUPTED.swap(sig, Ordering::SeqCst) != 0
                {
                    continue;
                }
                stopper.stop(128 + i32::from(sig));
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: &str) -> Option<TraceSummary> {
        Some(TraceSummary {
            trace_id: id.to_string(),
            root_name: "invoice\u{202e}fdp.exe\u{200b}".to_string(),
            service: "svc".to_string(),
            start_ns: 0,
            duration_ns: 1,
            span_count: 2,
            error_count: 0,
        })
    }

    /// A store holds whatever its writer put there: ids shorter than the 12
    /// characters shown, or with a multi-byte character where the cut falls,
    /// are named without a panic, and root names with bidi or zero-width
    /// characters come out escaped.
    #[test]
    fn the_recorded_line_takes_odd_ids_and_escapes_root_names() {
        assert_eq!(
            recorded_line(&["abc".into()], 1, "", summary),
            "recorded trace abc (\"invoice\\u{202e}fdp.exe\\u{200b}\", 2 spans); \
             see it with: wasi-observe trace abc"
        );
        let one_span = |id: &str| summary(id).map(|t| TraceSummary { span_count: 1, ..t });
        assert!(
            recorded_line(&["abc".into()], 1, "", one_span)
                .contains("fdp.exe\\u{200b}\", 1 span);")
        );
        let cut_inside = "0123456789aé-and-more".to_string();
        assert_eq!(
            recorded_line(&[cut_inside], 1, " --db x.db", |_| None),
            "recorded trace 0123456789aé-and-more; see it with: wasi-observe trace 0123456789aé --db x.db"
        );
        let hidden = "\u{2066}0123456789abcdef".to_string();
        let line = recorded_line(&[hidden.clone(), "é".into()], 5, "", summary);
        assert!(
            !line.contains('\u{2066}') && !line.contains('\u{202e}'),
            "{line}"
        );
        assert!(
            line.starts_with("recorded 5 traces: \\u{2066}0123456789abcdef (\""),
            "{line}"
        );
        assert!(
            line.contains(", é (\"") && line.contains(" and 3 more;"),
            "{line}"
        );
    }
}

//! `wasi-observe run`: run a `wasi:cli/command` component.

use std::path::PathBuf;
use std::process;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use wasi_observe_host::{Telemetry, WasiObserveCtx, WasiObserveView, calls};
use wasmtime::Result;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::error::Context as _;
use wasmtime::{Store, Trap};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxView, WasiView};

use crate::common::{
    CallOptions, DbOptions, ExportOptions, engine, finish, load_component, parse_dir,
    parse_duration, parse_env,
};
use wasi_observe_store::Store as TelemetryStore;

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

    #[command(flatten)]
    export: ExportOptions,

    #[command(flatten)]
    calls: CallOptions,

    /// The component to run.
    component: PathBuf,

    /// Arguments for the component.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    observe: WasiObserveCtx,
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
        let component = load_component(&engine, &self.component)?;
        let mut linker = Linker::<Host>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        wasi_observe_host::add_to_linker(&mut linker)?;
        let pre = linker.instantiate_pre(&component).with_context(|| {
            format!(
                "cannot run {}: an import is missing",
                self.component.display()
            )
        })?;
        let pre = CommandPre::new(pre).with_context(|| {
            format!(
                "{} is not a wasi:cli/command component",
                self.component.display()
            )
        })?;

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
        let mut host = Host {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            observe: WasiObserveCtx::new(&telemetry),
        };
        // A pipeline's trace context (TRACEPARENT, TRACESTATE): the guest's
        // root spans join that trace.
        let parent = wasi_observe_host::context_from_env();
        host.observe.set_parent(parent.clone());
        // --trace-calls: a span around the `run` export, the guest's spans
        // under it, and a span per import call.
        let calls = self.calls.install()?;
        let mut run_span = calls.as_ref().and_then(|calls| {
            let interface = calls::export_interface(&engine, &component, "run")?;
            calls
                .selects(&interface, "run")
                .then(|| calls::export_span(&telemetry, &interface, "run", parent.as_ref()))
        });
        if let Some(span) = &run_span {
            host.observe.set_parent(Some(span.context().clone()));
        }
        let mut store = Store::new(&engine, host);
        if calls.is_some() {
            calls::trace_calls(
                &mut store,
                Arc::new(calls::ImportNames::of(&engine, &component)),
            );
        }
        store.set_epoch_deadline(1);
        store.epoch_deadline_trap();
        if let Some(fuel) = self.fuel {
            store.set_fuel(fuel)?;
        }

        let stopper = Stopper {
            engine: engine.clone(),
            telemetry: Arc::new(Mutex::new(Some(telemetry.clone()))),
        };
        install_signal_handler(stopper.clone())?;
        if let Some(timeout) = self.timeout {
            stopper.clone().after(timeout);
        }

        let result = pre
            .instantiate(&mut store)
            .and_then(|command| command.wasi_cli_run().call_run(&mut store));
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
                (None, _) => (134, format!("the guest trapped: {}", trap_summary(e))),
            },
        };
        store.data_mut().observe.end_open_spans(&reason);
        drop(store);
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
    let traces = store.recorded_traces();
    let flag = db.flag();
    let name = |id: &str| {
        store
            .trace_summary(id)
            .ok()
            .flatten()
            .map(|t| format!("{id} ({:?}, {} spans)", t.root_name, t.span_count))
            .unwrap_or_else(|| id.to_string())
    };
    match traces.as_slice() {
        [] => eprintln!(
            "wasi-observe: recorded no traces; see logs and metrics with: wasi-observe logs{flag}, wasi-observe metrics{flag}"
        ),
        [one] => eprintln!(
            "wasi-observe: recorded trace {}; see it with: wasi-observe trace {}{flag}",
            name(one),
            &one[..12]
        ),
        many => {
            let shown: Vec<String> = many.iter().take(3).map(|id| name(id)).collect();
            let total = store.recorded_count();
            let more = match total - shown.len() {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            eprintln!(
                "wasi-observe: recorded {total} traces: {}{more}; see them with: wasi-observe traces{flag}",
                shown.join(", ")
            );
        }
    }
}

/// Whether `--timeout` interrupted the guest (rather than the guest ending
/// on its own just as the timeout fired).
fn timed_out(e: &wasmtime::Error) -> bool {
    TIMED_OUT.load(Ordering::SeqCst) && e.downcast_ref::<Trap>() == Some(&Trap::Interrupt)
}

fn trap_summary(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => e.root_cause().to_string(),
    }
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

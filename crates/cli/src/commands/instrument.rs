//! `wasi-observe instrument`: rewrite a module or component so that every
//! function reports its calls (see `docs/instrumentation.md`).

use std::path::PathBuf;

use clap::Parser;
use wasmtime::Result;
use wasmtime::error::Context as _;

/// Rewrite a core module or a component so that every function (or those
/// the filter selects) becomes a span under `wasi-observe run`.
///
/// Core modules import Dylibso's Observe ABI (`dylibso:observe/instrument`);
/// components record calls in the guest and flush them in batches through
/// `wasi-observe:instrument/recorder`.
#[derive(Parser)]
pub struct InstrumentCommand {
    /// The module or component to rewrite.
    input: PathBuf,

    /// Where to write the result.
    #[arg(short, long, value_name = "PATH")]
    output: PathBuf,

    /// Instrument only functions whose demangled name matches this glob
    /// (`*` any run of characters, `?` one); repeatable. Default: all.
    #[arg(long, value_name = "GLOB")]
    filter: Vec<String>,
}

impl InstrumentCommand {
    /// Rewrites the input; the output is validated before it is written.
    pub fn execute(self) -> Result<()> {
        let wasm = std::fs::read(&self.input)
            .with_context(|| format!("cannot read {}", self.input.display()))?;
        let wasm = if self.input.extension().is_some_and(|e| e == "wat") {
            wat::parse_bytes(&wasm)
                .with_context(|| format!("cannot parse {}", self.input.display()))?
                .into_owned()
        } else {
            wasm
        };
        let options = wasi_observe_instrument::Options {
            filter: self.filter,
        };
        let (out, report) = wasi_observe_instrument::instrument(&wasm, &options)
            .map_err(|e| wasmtime::Error::msg(format!("{e:#}")))
            .with_context(|| format!("cannot instrument {}", self.input.display()))?;
        std::fs::write(&self.output, &out)
            .with_context(|| format!("cannot write {}", self.output.display()))?;
        eprintln!(
            "wasi-observe: instrumented {} functions in {} module{} of {} ({} left alone: filtered out or cabi_* helpers); wrote {}",
            report.functions,
            report.modules,
            if report.modules == 1 { "" } else { "s" },
            if report.component {
                "the component"
            } else {
                "the module"
            },
            report.skipped,
            self.output.display()
        );
        Ok(())
    }
}

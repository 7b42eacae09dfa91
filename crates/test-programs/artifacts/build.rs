//! Builds every guest program in `crates/test-programs/src/bin` for
//! wasm32-wasip2 and writes `pub const <NAME>_COMPONENT: &str` with the path
//! of each component, plus `foreach_program!` listing them all.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let programs = manifest.parent().unwrap().to_path_buf();
    let root = programs.parent().unwrap().parent().unwrap().to_path_buf();
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let target_dir = out.join("guests");

    // Everything the guests are built from: the programs and the crates
    // they use (the SDK and its wire format, the scenario, the HTTP helpers), the WIT, the
    // examples, and the lock file. A directory counts as changed when any
    // file under it does.
    for dir in [
        "crates/test-programs",
        "crates/sdk",
        "crates/wire",
        "wit",
        "wit-otel",
        "examples/frontend",
        "examples/backend",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "test-programs",
            // HTTP components (libraries, not in `foreach_program!`).
            "-p",
            "http-guest",
            // The OpenTelemetry SDK behind wasi:otel (a command of its own
            // crate, so that the other programs do not build the SDK).
            "-p",
            "otel-sdk-guest",
            "-p",
            "frontend",
            "-p",
            "backend",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("running cargo to build the guest programs");
    if !status.success() {
        panic!(
            "building the guest programs failed; is the target installed? \
             run `rustup target add wasm32-wasip2`"
        );
    }

    let mut names: Vec<String> = fs::read_dir(programs.join("src/bin"))
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    names.sort();

    let wasm_dir = target_dir.join("wasm32-wasip2/release");
    let mut src = String::new();
    for name in &names {
        let path = wasm_dir.join(format!("{name}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        src.push_str(&format!(
            "/// The `{name}` guest program, a wasm32-wasip2 component.\npub const {}_COMPONENT: &str = {:?};\n",
            name.to_uppercase(),
            path.display().to_string()
        ));
    }
    for (name, what) in [
        (
            "http_guest",
            "The test HTTP component (`crates/test-programs/http-guest`)",
        ),
        (
            "frontend",
            "The demo's frontend HTTP component (`examples/frontend`)",
        ),
        (
            "backend",
            "The demo's backend HTTP component (`examples/backend`)",
        ),
    ] {
        let path = wasm_dir.join(format!("{name}.wasm"));
        assert!(path.exists(), "{} was not built", path.display());
        src.push_str(&format!(
            "/// {what}, a wasi:http/proxy component.\npub const {}_COMPONENT: &str = {:?};\n",
            name.to_uppercase(),
            path.display().to_string()
        ));
    }
    let path = wasm_dir.join("otel-sdk-guest.wasm");
    assert!(path.exists(), "{} was not built", path.display());
    src.push_str(&format!(
        "/// The OpenTelemetry SDK guest (`crates/test-programs/otel-sdk-guest`), a wasm32-wasip2 command.\npub const OTEL_SDK_GUEST_COMPONENT: &str = {:?};\n",
        path.display().to_string()
    ));
    src.push_str(
        "/// Calls `$mac!(name)` for every guest program, so a test file can make\n\
         /// sure that each has a test.\n#[macro_export]\nmacro_rules! foreach_program {\n    ($mac:ident) => {\n",
    );
    for name in &names {
        src.push_str(&format!("        $mac!({name});\n"));
    }
    src.push_str("    };\n}\n");
    fs::write(out.join("programs.rs"), src).unwrap();
    let _ = Path::new(&root);
}

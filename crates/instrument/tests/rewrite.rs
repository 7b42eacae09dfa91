//! The rewriter on hand-written modules: every output validates, imports
//! the hooks, and keeps enter/exit balanced on every way out of a function.

use wasi_observe_instrument::{HOOKS_MODULE, Options, instrument};
use wasmparser::{Operator, Parser, Payload, Validator};

/// The module the host tests run too.
pub const FEATURES_WAT: &str = include_str!("features.wat");

fn imports(wasm: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in Parser::new(0).parse_all(wasm) {
        if let Payload::ImportSection(r) = p.unwrap() {
            for i in r.into_imports() {
                let i = i.unwrap();
                out.push((i.module.to_string(), i.name.to_string()));
            }
        }
    }
    out
}

fn validate(wasm: &[u8]) {
    Validator::new_with_features(wasi_observe_instrument::features())
        .validate_all(wasm)
        .expect("the rewritten binary validates");
}

#[test]
fn core_module_gets_hooks_and_validates() {
    let wasm = wat::parse_str(FEATURES_WAT).unwrap();
    let (out, report) = instrument(&wasm, &Options::default()).unwrap();
    validate(&out);
    assert!(!report.component);
    assert_eq!(report.modules, 1);
    assert_eq!(report.functions, 10);
    assert_eq!(report.skipped, 0);
    let imports = imports(&out);
    for name in ["enter", "exit", "memory-grow"] {
        assert!(
            imports.contains(&(HOOKS_MODULE.to_string(), name.to_string())),
            "{imports:?}"
        );
    }
    // Every function of a module that can throw catches, exits and rethrows.
    let mut try_tables = 0;
    for p in Parser::new(0).parse_all(&out) {
        if let Payload::CodeSectionEntry(body) = p.unwrap() {
            let mut ops = body.get_operators_reader().unwrap();
            while !ops.eof() {
                if let Operator::TryTable { .. } = ops.read().unwrap() {
                    try_tables += 1;
                }
            }
        }
    }
    // Ten wrappers, and the guest's own.
    assert_eq!(try_tables, 11);
    assert_eq!(calls_to_hook(&out, "enter"), 10);
}

#[test]
fn filter_leaves_other_functions_alone() {
    let wasm = wat::parse_str(FEATURES_WAT).unwrap();
    let options = Options {
        filter: vec!["fib".into(), "ma*".into()],
    };
    let (out, report) = instrument(&wasm, &options).unwrap();
    validate(&out);
    assert_eq!(report.functions, 2);
    assert_eq!(report.skipped, 8);
    // Only the two selected functions call `enter`, once each.
    assert_eq!(calls_to_hook(&out, "enter"), 2);
}

/// How many `call`s the module's code makes to the hook `name`.
fn calls_to_hook(wasm: &[u8], name: &str) -> usize {
    let mut funcs = 0;
    let mut hook = None;
    let mut calls = 0;
    for p in Parser::new(0).parse_all(wasm) {
        match p.unwrap() {
            Payload::ImportSection(r) => {
                for i in r.into_imports() {
                    let i = i.unwrap();
                    if let wasmparser::TypeRef::Func(_) = i.ty {
                        if i.module == HOOKS_MODULE && i.name == name {
                            hook = Some(funcs);
                        }
                        funcs += 1;
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                for op in body.get_operators_reader().unwrap() {
                    if let Operator::Call { function_index } = op.unwrap()
                        && Some(function_index) == hook
                    {
                        calls += 1;
                    }
                }
            }
            _ => {}
        }
    }
    calls
}

#[test]
fn module_without_imports_or_tags() {
    let wasm = wat::parse_str(
        r#"(module (memory 1) (func (export "f") (result i32) (memory.grow (i32.const 1))))"#,
    )
    .unwrap();
    let (out, report) = instrument(&wasm, &Options::default()).unwrap();
    validate(&out);
    assert_eq!(report.functions, 1);
    assert_eq!(imports(&out).len(), 3);
}

#[test]
fn bad_inputs_are_errors() {
    assert!(instrument(b"not wasm", &Options::default()).is_err());
    assert!(instrument(&[0, b'a', b's', b'm', 1, 0, 0, 0, 99], &Options::default()).is_err());
    // Instrumenting twice is refused rather than nesting hooks.
    let wasm = wat::parse_str(FEATURES_WAT).unwrap();
    let (once, _) = instrument(&wasm, &Options::default()).unwrap();
    let err = instrument(&once, &Options::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains("already instrumented"),
        "{err:#}"
    );
}

#[test]
fn module_without_functions_is_unchanged() {
    let wasm = wat::parse_str(r#"(module (memory 1))"#).unwrap();
    let (out, report) = instrument(&wasm, &Options::default()).unwrap();
    assert_eq!(out, wasm);
    assert_eq!(report.modules, 0);
}

/// A component with a nested component whose core module calls an import:
/// the recorder import is threaded through both levels (validation fails if
/// an instantiation lacks it) and the names table covers the inner module.
#[test]
fn nested_components_get_the_recorder() {
    let wasm = wat::parse_str(
        r#"(component
  (import "host" (func $host (result u32)))
  (component $inner
    (import "host" (func $host (result u32)))
    (core func $lowered (canon lower (func $host)))
    (core instance $env (export "host" (func $lowered)))
    (core module $m
      (import "env" "host" (func $host (result i32)))
      (func $answer (export "f") (result i32) (i32.add (call $host) (i32.const 42))))
    (core instance $i (instantiate $m (with "env" (instance $env))))
    (func (export "f") (result u32) (canon lift (core func $i "f"))))
  (instance $x (instantiate $inner (with "host" (func $host))))
  (export "f" (func $x "f")))"#,
    )
    .unwrap();
    let (out, report) = instrument(&wasm, &Options::default()).unwrap();
    validate(&out);
    assert!(report.component);
    assert_eq!((report.modules, report.functions), (1, 1));
    assert_eq!(
        wasi_observe_instrument::names::component_function_names(&out),
        ["answer"]
    );
    let mut imports = Vec::new();
    for p in Parser::new(0).parse_all(&out) {
        if let Payload::ComponentImportSection(r) = p.unwrap() {
            for i in r {
                imports.push(i.unwrap().name.name.to_string());
            }
        }
    }
    // Outer and inner level each import the recorder once.
    let recorder = imports
        .iter()
        .filter(|n| n.starts_with("wasi-observe:instrument/recorder"))
        .count();
    assert_eq!(recorder, 2, "{imports:?}");
    // Instrumenting the output again is refused, and says why.
    let err = instrument(&out, &Options::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains("already instrumented"),
        "{err:#}"
    );

    // Also when no module of it has a function (the recorder import is then
    // the only trace of the first rewrite).
    let empty = wat::parse_str(r#"(component (core module $m))"#).unwrap();
    let (once, _) = instrument(&empty, &Options::default()).unwrap();
    let err = instrument(&once, &Options::default()).unwrap_err();
    assert!(
        format!("{err:#}").contains("already instrumented"),
        "{err:#}"
    );
}

/// The name section is not validated: one naming a function that cannot
/// exist, or cut short, is dropped or kept as it is, and the rewrite still
/// succeeds.
#[test]
fn junk_in_the_name_section_does_not_fail_the_rewrite() {
    let base = wat::parse_str(r#"(module (func (export "f")))"#).unwrap();
    // A function-names subsection (id 1): one entry, index u32::MAX, "x".
    let huge_index = [1, 8, 1, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, b'x'];
    // The same subsection claiming 8 bytes and holding 1.
    let truncated = [1, 8, 1];
    for payload in [&huge_index[..], &truncated[..]] {
        let mut wasm = base.clone();
        wasm.push(0); // a custom section
        wasm.push((5 + payload.len()) as u8);
        wasm.extend_from_slice(b"\x04name");
        wasm.extend_from_slice(payload);
        Validator::new().validate_all(&wasm).unwrap();
        let (out, report) = instrument(&wasm, &Options::default()).unwrap();
        assert_eq!(report.functions, 1);
        validate(&out);
    }
}

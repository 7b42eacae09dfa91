//! Function names: read from a module's name section or an instrumented
//! component's [`FUNCTIONS_SECTION`](crate::FUNCTIONS_SECTION), and
//! demangled (Rust, both manglings, and C++).

use std::collections::HashMap;

use wasmparser::{BinaryReader, KnownCustom, Name, Parser, Payload};

/// Longest name kept (longer names are cut): C++ templates can demangle to
/// kilobytes, and a name is paid for on every span.
pub const MAX_NAME: usize = 1024;

/// Longest symbol demangled (a longer one is kept as it is, then cut).
const MAX_MANGLED: usize = 4096;

/// The demangled, readable form of a symbol: Rust names lose their hash
/// (`app::fib`), C++ names become their declaration, others stay as they are.
pub fn demangle(name: &str) -> String {
    // Demangling expands back-references with no bound on the output: a
    // hostile name could blow up. Real symbols are far shorter than this.
    let mut out = if name.len() > MAX_MANGLED {
        name.to_string()
    } else if let Ok(d) = rustc_demangle::try_demangle(name) {
        format!("{d:#}")
    } else if name.starts_with("_Z")
        && let Some(d) = cpp_demangle::Symbol::new(name)
            .ok()
            .and_then(|s| s.demangle().ok())
    {
        d
    } else {
        name.to_string()
    };
    if out.len() > MAX_NAME {
        let mut end = MAX_NAME;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// The name of a function without one: wasmtime's form.
pub fn unnamed(index: u32) -> String {
    format!("wasm-function[{index}]")
}

/// The demangled function names of a core module's name section, by
/// function index. Malformed sections yield what could be read.
pub fn module_function_names(wasm: &[u8]) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let Ok(payload) = payload else { break };
        if let Payload::CustomSection(c) = payload
            && let KnownCustom::Name(reader) = c.as_known()
        {
            for sub in reader {
                let Ok(Name::Function(map)) = sub else {
                    continue;
                };
                for naming in map.into_iter().flatten() {
                    names.insert(naming.index, demangle(naming.name));
                }
            }
        }
    }
    names
}

/// The names of an instrumented component's function ids (from its
/// [`FUNCTIONS_SECTION`](crate::FUNCTIONS_SECTION)); empty if it has none.
pub fn component_function_names(wasm: &[u8]) -> Vec<String> {
    let mut parser = Parser::new(0);
    let mut rest = wasm;
    // Only the outermost component's sections: nested modules and
    // components are skipped whole.
    loop {
        let Ok(chunk) = parser.parse(rest, true) else {
            return Vec::new();
        };
        let wasmparser::Chunk::Parsed { consumed, payload } = chunk else {
            return Vec::new();
        };
        rest = &rest[consumed..];
        match payload {
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => {
                let skip = (unchecked_range.end - unchecked_range.start) as usize;
                rest = rest.get(skip..).unwrap_or_default();
            }
            Payload::CustomSection(c) if c.name() == crate::FUNCTIONS_SECTION => {
                return decode_names(c.data()).unwrap_or_default();
            }
            Payload::End(_) => return Vec::new(),
            _ => {}
        }
    }
}

fn decode_names(data: &[u8]) -> Option<Vec<String>> {
    let mut reader = BinaryReader::new(data, 0);
    let count = reader.read_var_u32().ok()?;
    let mut names = Vec::with_capacity(count.min(1 << 16) as usize);
    for _ in 0..count {
        names.push(reader.read_string().ok()?.to_string());
    }
    Some(names)
}

/// Encodes names as [`FUNCTIONS_SECTION`](crate::FUNCTIONS_SECTION) holds them.
pub(crate) fn encode_names(names: &[String]) -> Vec<u8> {
    use wasm_encoder::Encode as _;
    let mut out = Vec::new();
    (names.len() as u32).encode(&mut out);
    for n in names {
        n.as_str().encode(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_rust_and_cpp() {
        assert_eq!(
            demangle("_ZN4test3fib17h0123456789abcdefE"),
            "test::fib".to_string()
        );
        assert_eq!(demangle("_ZN3foo3barEv"), "foo::bar()");
        assert_eq!(demangle("plain_c_name"), "plain_c_name");
        assert_eq!(demangle("_Zgarbage"), "_Zgarbage");
        assert!(demangle(&"x".repeat(5000)).len() <= MAX_NAME);
    }

    #[test]
    fn names_section_round_trip() {
        let names = vec!["a".to_string(), "b::c".to_string(), String::new()];
        assert_eq!(decode_names(&encode_names(&names)), Some(names));
        assert_eq!(decode_names(&[5, 1]), None);
    }
}

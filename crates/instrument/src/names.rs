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
/// At most [`MAX_NAME`] bytes.
pub fn demangle(name: &str) -> String {
    use std::fmt::Write as _;
    let mut out = Capped(String::new(), false);
    // Demangling expands back-references: a short hostile name can ask for
    // gigabytes. Writing stops at `MAX_NAME` (the writer then fails, which
    // stops the demangler), and very long symbols are not demangled at all.
    let demangled = name.len() <= MAX_MANGLED
        && if let Ok(d) = rustc_demangle::try_demangle(name) {
            let _ = write!(out, "{d:#}");
            true
        } else if name.starts_with("_Z")
            && let Ok(sym) = cpp_demangle::Symbol::new(name)
        {
            // Cut at the cap, the output is kept; a symbol that fails to
            // demangle is kept as it is.
            let done = sym.structured_demangle(&mut out, &cpp_demangle::DemangleOptions::default());
            done.is_ok() || out.1
        } else {
            false
        };
    if !demangled {
        out.0.clear();
        let _ = out.write_str(name);
    }
    out.0
}

/// A string that takes at most [`MAX_NAME`] bytes (cut at a character
/// boundary) and fails the write that would exceed it (then `.1` is set).
struct Capped(String, bool);

impl std::fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = MAX_NAME - self.0.len();
        if s.len() <= room {
            self.0.push_str(s);
            return Ok(());
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.0.push_str(&s[..end]);
        self.1 = true;
        Err(std::fmt::Error)
    }
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

    /// Back-references make the demangled form of a short symbol grow
    /// exponentially: the output stops at the cap, at once.
    #[test]
    fn hostile_symbols_are_cut_short() {
        // Each round's function type takes four of the previous round's
        // pointer (substitutions: `S_` is `Pi`, then each round adds its
        // function type and a pointer to it, numbered in base 36).
        let base36 = |n: u32| char::from_digit(n, 36).unwrap().to_ascii_uppercase();
        let mut sym = String::from("_Z1fPi");
        for k in 0..14 {
            let back = if k == 0 {
                "S_".to_string()
            } else {
                format!("S{}_", base36(2 * k - 1))
            };
            sym.push_str("PFv");
            for _ in 0..4 {
                sym.push_str(&back);
            }
            sym.push('E');
        }
        assert!(sym.len() < 300);
        let start = std::time::Instant::now();
        let d = demangle(&sym);
        assert!(d.len() <= MAX_NAME, "{}", d.len());
        assert!(d.starts_with("f("), "{d}");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn names_section_round_trip() {
        let names = vec!["a".to_string(), "b::c".to_string(), String::new()];
        assert_eq!(decode_names(&encode_names(&names)), Some(names));
        assert_eq!(decode_names(&[5, 1]), None);
    }
}

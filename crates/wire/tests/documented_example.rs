//! The annotated batch in docs/pipe.md ("The wire format, byte by byte") is
//! what this crate writes and reads: an SDK in another language can test its
//! encoder against those bytes.

use wasi_observe_wire::{
    Attributes, Decoded, End, Log, LogContext, Record, Share, Start, Value, decode, encode, kind,
    status,
};

const TRACE: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
const SPAN: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];

fn example() -> Vec<Decoded<'static>> {
    vec![
        Record::Share(Share {
            id: 0,
            attributes: vec![("target", Value::Str("app"))],
        }),
        Record::Start(Start {
            span_id: SPAN,
            trace_id: TRACE,
            parent: [0; 8],
            parent_remote: false,
            flags: 1,
            kind: kind::SERVER,
            time: 1_700_000_000_000_000_000,
            name: "GET /",
            trace_state: "",
            shared: Some(0),
            attributes: vec![("status", Value::I64(200))],
        }),
        Record::Log(Log {
            time: 0,
            severity: 9,
            target: "app",
            body: Some("hi"),
            context: Some(LogContext {
                trace_id: TRACE,
                span_id: SPAN,
                flags: 1,
            }),
            attributes: vec![("ratio", Value::F64(0.5))],
        }),
        Record::End(End {
            span_id: SPAN,
            time: 0,
            status: status::ERROR,
            description: "boom",
            name: None,
            attributes: Attributes::new(),
        }),
    ]
}

/// The bytes of the fenced block after the `wire-example` marker: on each
/// line, the leading two-digit hex tokens (the rest is commentary).
fn documented_bytes() -> Vec<u8> {
    let doc = include_str!("../../../docs/pipe.md");
    let start = doc
        .find("<!-- wire-example -->")
        .expect("the example's marker in docs/pipe.md");
    let block = doc[start..]
        .split("```")
        .nth(1)
        .expect("a fenced block after the marker");
    block
        .lines()
        .skip(1) // the fence's language tag
        .flat_map(|line| {
            line.split_whitespace()
                .map_while(|t| {
                    (t.len() == 2)
                        .then(|| u8::from_str_radix(t, 16).ok())
                        .flatten()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_documented_batch_is_what_the_crate_writes_and_reads() {
    let mut written = Vec::new();
    for record in &example() {
        encode(record, &mut written);
    }
    let documented = documented_bytes();
    assert_eq!(
        hex(&documented),
        hex(&written),
        "docs/pipe.md's example and the encoder disagree"
    );
    let read: Vec<Decoded<'_>> = decode(&documented).collect::<Result<_, _>>().unwrap();
    assert_eq!(read, example());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x} ")).collect()
}

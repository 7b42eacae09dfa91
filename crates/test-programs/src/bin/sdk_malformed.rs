//! Hands `wasi:observe/sdk` malformed input: zero ids, a bad trace-state,
//! a span made its own parent, calls on ended spans, huge strings. The host
//! must neither trap nor crash, and keeps one valid span.

use test_programs::tracer::{self, TraceFlags, Value};
use test_programs::{kv, logging::Level, opts, sdk};

fn context(high: u64, low: u64, span: u64, state: Vec<(String, String)>) -> sdk::Context {
    sdk::Context {
        trace_id_high: high,
        trace_id_low: low,
        span_id: span,
        trace_flags: TraceFlags::SAMPLED,
        is_remote: true,
        trace_state: state,
    }
}

fn main() {
    let huge = "y".repeat(1 << 20);
    // Zero ids: the parent is ignored (ambient, i.e. a new trace).
    let zero = sdk::start_span(
        "zero-parent",
        &sdk::Parent::Context(context(0, 0, 0, vec![])),
        None,
        None,
    );
    println!("zero-parent recording={}", zero.is_recording);
    // A bad trace-state is emptied; the parent stays.
    let bad_state = sdk::start_span(
        "bad-state",
        &sdk::Parent::Context(context(1, 2, 3, vec![("BAD KEY".into(), "v,=".into())])),
        None,
        // A handle `share-attributes` never gave: ignored.
        Some(12345),
    );
    // A span made its own parent, or moved within its own trace: ignored.
    let own = sdk::set_parent(&bad_state.span, &sdk::Parent::Span(&bad_state.span));
    println!("own-parent kept={}", own.span_id == bad_state.span_id);
    // Huge strings, empty keys, an event on a span given by context.
    sdk::emit(
        &sdk::Parent::Span(&zero.span),
        Level::Warn,
        &huge,
        &huge,
        &[
            kv("", Value::Bool(true)),
            kv("big", Value::String(huge.clone())),
        ],
        Some(&sdk::SpanEvent {
            name: huge.clone(),
            attributes: vec![kv("e", Value::S64(1))],
            with_record_attributes: true,
            shared: Some(u32::MAX),
        }),
    );
    sdk::emit(
        &sdk::Parent::Context(context(0, 0, 0, vec![])),
        Level::Info,
        "ctx",
        "",
        &[],
        Some(&sdk::SpanEvent {
            name: "nowhere".into(),
            attributes: vec![],
            with_record_attributes: false,
            shared: None,
        }),
    );
    // Finish with a status and a name; then calls on the ended span.
    // Shared sets are bounded in bytes: 60 KiB values fit 17 times in 1 MiB.
    let big = "z".repeat(60 * 1024);
    let kept = (0..40)
        .filter(|_| sdk::share_attributes(&[kv("k", Value::String(big.clone()))]).is_some())
        .count();
    println!("big-shared-kept={kept}");
    // Shared attributes: none for an empty list; a real set applies.
    println!("empty-shared={:?}", sdk::share_attributes(&[]));
    let set = sdk::share_attributes(&[kv("shared", Value::String("yes".into()))]);
    let ended = sdk::start_span("to-end", &sdk::Parent::Ambient, Some(&opts()), set);
    let ended_span = ended.span;
    ended_span.end(None);
    let again = sdk::set_parent(&ended_span, &sdk::Parent::Ambient);
    println!("ended-kept={}", again.span_id == ended.span_id);
    sdk::emit(
        &sdk::Parent::Span(&ended_span),
        Level::Error,
        "c",
        "late",
        &[],
        None,
    );
    drop(ended_span);
    sdk::finish(
        zero.span,
        &[kv("after", Value::S64(2))],
        Some(&tracer::Status::Error(huge.clone())),
        Some(&huge),
        Some(test_programs::Datetime {
            seconds: u64::MAX,
            nanoseconds: u32::MAX,
        }),
    );
    sdk::finish(bad_state.span, &[], None, None, None);
    println!("survived");
}

//! A pipeline's trace context (`TRACEPARENT`, `TRACESTATE`) joins the
//! guest's spans to its trace.

use otlp_receiver::OtlpHttpReceiver;
use test_programs_artifacts::*;

use crate::support::*;

#[test]
fn traceparent_in_the_environment_joins_the_pipelines_trace() {
    let receiver = OtlpHttpReceiver::start();
    let mut cmd = cli_http(&receiver);
    cmd.env(
        "TRACEPARENT",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    .env("TRACESTATE", "vendor=opaque");
    let out = run(cmd, &[TRACER_FEATURES_COMPONENT]);
    assert!(out.status.success());
    let spans = receiver.spans();
    let s = by_name(&spans);
    // The guest's root span hangs under the pipeline's span; new-root still
    // starts a trace of its own.
    let root = s["root"];
    assert_eq!(root.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(root.parent_span_id, "b7ad6b7169203331");
    assert_eq!(root.trace_state, "vendor=opaque");
    assert_eq!(s["grandchild-renamed"].trace_id, root.trace_id);
    assert_ne!(s["detached"].trace_id, root.trace_id);
    assert_eq!(s["detached"].parent_span_id, "");

    // A malformed TRACEPARENT is ignored: a new trace, and the run succeeds.
    let receiver = OtlpHttpReceiver::start();
    let mut cmd = cli_http(&receiver);
    cmd.env("TRACEPARENT", "00-not-a-context-01");
    let out = run(cmd, &[TRACER_FEATURES_COMPONENT]);
    assert!(out.status.success());
    let spans = receiver.spans();
    assert_eq!(by_name(&spans)["root"].parent_span_id, "");
}

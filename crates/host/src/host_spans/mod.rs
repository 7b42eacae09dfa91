//! Spans the host makes around its guests (the SRE's view of the platform):
//! a request served and an outgoing call ([`http`]), an import or export
//! call ([`calls`]). Each is a [`HostSpan`], born and exported through the
//! pipeline like any guest span.

pub mod calls;
#[cfg(feature = "http")]
pub mod http;

use opentelemetry::trace::SpanContext;

pub use crate::pipeline::HostSpan;

/// The former name of [`HostSpan`].
pub type PlatformSpan = HostSpan;

/// The trace context a pipeline handed this process in its environment:
/// `TRACEPARENT` and `TRACESTATE`, as OpenTelemetry's environment carrier
/// names them. A missing or malformed value gives `None` (a new trace).
pub fn context_from_env() -> Option<SpanContext> {
    context_from_vars(|name| std::env::var(name).ok())
}

fn context_from_vars(var: impl Fn(&str) -> Option<String>) -> Option<SpanContext> {
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::TraceContextExt as _;
    let mut carrier = std::collections::HashMap::new();
    for (env, key) in [("TRACEPARENT", "traceparent"), ("TRACESTATE", "tracestate")] {
        if let Some(v) = var(env) {
            carrier.insert(key.to_string(), v);
        }
    }
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    let span = cx.span().span_context().clone();
    span.is_valid().then_some(span)
}

#[cfg(test)]
mod tests {
    use super::context_from_vars;

    #[test]
    fn environment_carrier() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cx = context_from_vars(|k| match k {
            "TRACEPARENT" => Some(tp.into()),
            "TRACESTATE" => Some("vendor=x".into()),
            _ => None,
        })
        .expect("a valid traceparent");
        assert_eq!(
            cx.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(cx.span_id().to_string(), "b7ad6b7169203331");
        assert!(cx.is_remote() && cx.is_sampled());
        assert_eq!(cx.trace_state().get("vendor"), Some("x"));
        for bad in [
            "",
            "garbage",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        ] {
            assert!(context_from_vars(|k| (k == "TRACEPARENT").then(|| bad.into())).is_none());
        }
        assert!(context_from_vars(|_| None).is_none());
    }
}

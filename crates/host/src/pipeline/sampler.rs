//! The sampling policy, for every span the host makes or records.
//!
//! - Guest spans and host-made spans (SERVER, CLIENT, import and export
//!   calls) ask the pipeline's sampler, with their parent, name, kind,
//!   attributes and links, as an OpenTelemetry SDK span would. The sampler is
//!   `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG` (default
//!   `parentbased_always_on`) or the one given in code.
//! - A span moved under another parent (`wasi:observe/sdk`'s `set-parent`)
//!   asks again, as if it started there.
//! - Function frames (instrumented guests, Dylibso spans) are decided when
//!   they are kept, which may be long after they began: a frame under a
//!   parent inherits the parent's sampling flags and trace-state (so a trace
//!   is never cut in the middle); a root frame asks the sampler with its
//!   name alone.
//!
//! A span that is not sampled but recorded (`RecordOnly`) collects data for
//! the guest to read and is never exported; a dropped one records nothing.

use std::env;

use opentelemetry::trace::{
    Link, SpanContext, SpanKind, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};

/// A sampler's decision, in the terms a span needs.
pub(crate) struct Sampling {
    pub flags: TraceFlags,
    /// Whether the span records data (sampled, or record-only).
    pub recording: bool,
    pub trace_state: TraceState,
    /// Attributes the sampler adds.
    pub attributes: Vec<KeyValue>,
}

/// Asks `sampler` about a span in `trace_id` under `parent`.
pub(crate) fn sample(
    sampler: &dyn ShouldSample,
    parent: Option<&SpanContext>,
    trace_id: TraceId,
    name: &str,
    kind: &SpanKind,
    attributes: &[KeyValue],
    links: &[Link],
) -> Sampling {
    let parent_cx = parent.map(|p| Context::new().with_remote_span_context(p.clone()));
    let result = sampler.should_sample(parent_cx.as_ref(), trace_id, name, kind, attributes, links);
    let sampled = result.decision == SamplingDecision::RecordAndSample;
    Sampling {
        flags: if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::NOT_SAMPLED
        },
        recording: result.decision != SamplingDecision::Drop,
        trace_state: result.trace_state,
        attributes: result.attributes,
    }
}

/// The flags and trace-state of a function frame kept under `parent`, or,
/// for a root frame, what the sampler says of `name` in `trace_id`.
pub(crate) fn frame_sampling(
    sampler: &dyn ShouldSample,
    parent: Option<&SpanContext>,
    trace_id: TraceId,
    name: impl FnOnce() -> String,
) -> (TraceFlags, TraceState) {
    match parent {
        Some(p) => (p.trace_flags(), p.trace_state().clone()),
        None => {
            let s = sample(
                sampler,
                None,
                trace_id,
                &name(),
                &SpanKind::Internal,
                &[],
                &[],
            );
            (s.flags, TraceState::default())
        }
    }
}

/// The sampler `OTEL_TRACES_SAMPLER` names, as the SDK reads it.
pub(crate) fn sampler_from_env() -> Box<dyn ShouldSample> {
    if env::var("OTEL_TRACES_SAMPLER").is_err() {
        return Box::new(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    }
    #[allow(deprecated)]
    opentelemetry_sdk::trace::Config::default().sampler
}

/// A sampler a guest can run itself (the pipe's guests sample the spans they
/// start): whether it is parent-based, and its root decision as a ratio
/// (1: always on, 0: always off).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct GuestSampler {
    pub parent_based: bool,
    pub ratio: f64,
}

/// The guest form of `sampler`, if it is one of `opentelemetry_sdk`'s
/// standard samplers (as `OTEL_TRACES_SAMPLER` makes them); read from its
/// `Debug` form, the only view a `dyn ShouldSample` gives.
pub(crate) fn guest_sampler(sampler: &dyn ShouldSample) -> Option<GuestSampler> {
    let text = format!("{sampler:?}");
    let (parent_based, root) = match text
        .strip_prefix("ParentBased(")
        .and_then(|t| t.strip_suffix(')'))
    {
        Some(inner) => (true, inner),
        None => (false, text.as_str()),
    };
    let ratio = match root {
        "AlwaysOn" => 1.0,
        "AlwaysOff" => 0.0,
        other => other
            .strip_prefix("TraceIdRatioBased(")?
            .strip_suffix(')')?
            .parse()
            .ok()?,
    };
    Some(GuestSampler {
        parent_based,
        ratio,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_samplers_have_a_guest_form() {
        let g = |s: Sampler| guest_sampler(&s);
        assert_eq!(
            g(Sampler::ParentBased(Box::new(Sampler::AlwaysOn))),
            Some(GuestSampler {
                parent_based: true,
                ratio: 1.0
            })
        );
        assert_eq!(
            g(Sampler::AlwaysOff),
            Some(GuestSampler {
                parent_based: false,
                ratio: 0.0
            })
        );
        assert_eq!(
            g(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                0.25
            )))),
            Some(GuestSampler {
                parent_based: true,
                ratio: 0.25
            })
        );
    }
}

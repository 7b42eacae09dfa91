//! `wasi:otel/tracing`: spans a guest's own SDK made, exported as they are.
//!
//! `on-start` puts the span's context on the store's open-span stack (bounded
//! by the open-span limit), `on-end` takes it off and exports the span. Only
//! sampled spans are exported (the guest's SDK sampled them; the host's
//! sampler decides for the spans the host makes, which follow these as
//! parents). A span whose `on-end` comes without `on-start` is still
//! exported, and counted in `invalid_input`.

use std::time::SystemTime;

use opentelemetry::InstrumentationScope;
use opentelemetry::trace::{Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use super::bindings::tracing::{self as wit, Host};
use super::bindings::{Datetime, types};
use super::pipeline_glue as glue;
use super::values;
use crate::ctx::WasiObserveCtx;
use crate::interfaces::values::{parse_span_id, parse_trace_id, trace_state_entries};
use crate::pipeline::limits::Checker;
use crate::pipeline::stats::Stats;

/// Name of the stand-in exported for a span whose `on-end` never came: the
/// host only learns a span's name when it ends.
const UNENDED: &str = "wasi:otel span (never ended)";

/// A guest span context; `None` (counted) when an id is malformed. A
/// malformed trace-state becomes empty, as the WIT says.
pub(crate) fn span_context(check: &Checker<'_>, sc: wit::SpanContext) -> Option<SpanContext> {
    let (Some(trace_id), Some(span_id)) =
        (parse_trace_id(&sc.trace_id), parse_span_id(&sc.span_id))
    else {
        Stats::add(&check.stats.invalid_input, 1);
        return None;
    };
    let flags = if sc.trace_flags.contains(wit::TraceFlags::SAMPLED) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::NOT_SAMPLED
    };
    Some(SpanContext::new(
        trace_id,
        span_id,
        flags,
        sc.is_remote,
        check.trace_state(sc.trace_state),
    ))
}

/// A context as the guest sees it; all-zero ids (invalid, so the guest's SDK
/// starts a new trace) for none.
fn to_wit(cx: Option<&SpanContext>) -> wit::SpanContext {
    let none = SpanContext::NONE;
    let cx = cx.filter(|cx| cx.is_valid()).unwrap_or(&none);
    let mut flags = wit::TraceFlags::empty();
    if cx.is_sampled() {
        flags |= wit::TraceFlags::SAMPLED;
    }
    wit::SpanContext {
        trace_id: format!("{:032x}", cx.trace_id()),
        span_id: format!("{:016x}", cx.span_id()),
        trace_flags: flags,
        is_remote: cx.is_remote(),
        trace_state: trace_state_entries(cx.trace_state()),
    }
}

/// What `outer-span-context` and `current-span-context` return: the
/// innermost span the host knows to be open in this store (a guest span
/// announced by `on-start`, a `wasi:observe` span, a function frame), else
/// the invocation's ambient context.
pub(crate) fn span_context_for_guest(ctx: &mut WasiObserveCtx) -> wit::SpanContext {
    to_wit(glue::innermost(ctx).as_ref())
}

/// A guest time; `None` (counted) when OTLP cannot carry it.
pub(crate) fn time(check: &Checker<'_>, t: Datetime) -> Option<SystemTime> {
    check.timestamp(t.seconds, t.nanoseconds)
}

/// A guest instrumentation scope, bounded like any other guest value.
pub(crate) fn scope(check: &Checker<'_>, s: types::InstrumentationScope) -> InstrumentationScope {
    let (attributes, _) = values::attributes(check, s.attributes, check.limits.attributes_per_span);
    let mut b = InstrumentationScope::builder(check.string(s.name));
    if let Some(v) = s.version {
        b = b.with_version(check.string(v));
    }
    if let Some(u) = s.schema_url {
        b = b.with_schema_url(check.string(u));
    }
    b.with_attributes(attributes).build()
}

fn kind(k: wit::SpanKind) -> SpanKind {
    match k {
        wit::SpanKind::Client => SpanKind::Client,
        wit::SpanKind::Server => SpanKind::Server,
        wit::SpanKind::Producer => SpanKind::Producer,
        wit::SpanKind::Consumer => SpanKind::Consumer,
        wit::SpanKind::Internal => SpanKind::Internal,
    }
}

/// Builds the exported span from the guest's, within the limits. The
/// guest's own dropped counts are kept and the host's added to them.
pub(crate) fn span_data(
    check: &Checker<'_>,
    cx: SpanContext,
    parent: Option<(SpanId, bool)>,
    span: wit::SpanData,
) -> SpanData {
    let limits = check.limits;
    let now = SystemTime::now();
    let start = time(check, span.start_time).unwrap_or(now);
    let mut end = time(check, span.end_time).unwrap_or(now);
    if end < start {
        Stats::add(&check.stats.invalid_input, 1);
        end = start;
    }
    let (attributes, dropped_attributes) =
        values::attributes(check, span.attributes, limits.attributes_per_span);

    let mut events = SpanEvents::default();
    events.dropped_count = span.dropped_events;
    for e in span.events {
        if events.events.len() >= limits.events_per_span {
            events.dropped_count = events.dropped_count.saturating_add(1);
            Stats::add(&check.stats.events_dropped, 1);
            continue;
        }
        let (attrs, dropped) = values::attributes(check, e.attributes, limits.attributes_per_event);
        let t = time(check, e.time).unwrap_or(start);
        events
            .events
            .push(Event::new(check.string(e.name), t, attrs, dropped));
    }

    let mut links = SpanLinks::default();
    links.dropped_count = span.dropped_links;
    for l in span.links {
        let linked = span_context(check, l.span_context);
        match linked {
            Some(linked) if links.links.len() < limits.links_per_span => {
                let (attrs, dropped) =
                    values::attributes(check, l.attributes, limits.attributes_per_link);
                links.links.push(Link::new(linked, attrs, dropped));
            }
            _ => {
                links.dropped_count = links.dropped_count.saturating_add(1);
                Stats::add(&check.stats.links_dropped, 1);
            }
        }
    }

    let status = match span.status {
        wit::Status::Unset => Status::Unset,
        wit::Status::Ok => Status::Ok,
        wit::Status::Error(d) => Status::error(check.string(d)),
    };
    let (parent_span_id, parent_span_is_remote) = parent.unwrap_or((SpanId::INVALID, false));
    SpanData {
        span_context: cx,
        parent_span_id,
        parent_span_is_remote,
        span_kind: kind(span.span_kind),
        name: check.string(span.name).into(),
        start_time: start,
        end_time: end,
        attributes,
        dropped_attributes_count: span.dropped_attributes.saturating_add(dropped_attributes),
        events,
        links,
        status,
        instrumentation_scope: scope(check, span.instrumentation_scope),
    }
}

/// The parent id a guest gives (empty or all zeros: a root span); a
/// malformed one is dropped (counted), making the span a root.
fn parent_id(check: &Checker<'_>, id: &str) -> Option<SpanId> {
    if id.is_empty() || id.bytes().all(|b| b == b'0') {
        return None;
    }
    let parsed = parse_span_id(id);
    if parsed.is_none() {
        Stats::add(&check.stats.invalid_input, 1);
    }
    parsed
}

impl Host for WasiObserveCtx {
    fn on_start(&mut self, context: wit::SpanContext) -> wasmtime::Result<()> {
        let t = self.scope.telemetry().clone();
        if !glue::enabled(&t) {
            return Ok(());
        }
        let Some(cx) = span_context(&glue::checker(&t), context) else {
            return Ok(());
        };
        if glue::is_open(self, &cx) {
            // Announced twice: one entry is enough.
            Stats::add(&glue::stats(&t).invalid_input, 1);
            return Ok(());
        }
        if glue::open_limit_reached(self) {
            return Ok(());
        }
        // The stand-in's parent: the innermost open span of its trace (the
        // host is not told the real one until the span ends).
        let parent = glue::innermost(self).filter(|p| p.trace_id() == cx.trace_id());
        let stand_in = (cx.is_sampled() && glue::exports_spans(&t)).then(|| UNENDED.to_string());
        glue::push_open(self, cx, parent.as_ref(), stand_in);
        Ok(())
    }

    fn on_end(&mut self, span: wit::SpanData) -> wasmtime::Result<()> {
        let t = self.scope.telemetry().clone();
        if !glue::enabled(&t) {
            return Ok(());
        }
        let check = glue::checker(&t);
        let Some(cx) = span_context(&check, span.span_context.clone()) else {
            return Ok(());
        };
        if !glue::pop_open(self, &cx) {
            // No `on-start`: exported all the same (the data is whole).
            Stats::add(&check.stats.invalid_input, 1);
        }
        if !cx.is_sampled() || !glue::exports_spans(&t) {
            return Ok(());
        }
        // A parent the host handed out as the ambient context keeps its
        // remote flag; any other is the guest's own.
        let parent = parent_id(&check, &span.parent_span_id).map(|id| {
            let remote = glue::ambient(self).is_some_and(|a| a.span_id() == id && a.is_remote());
            (id, remote)
        });
        let data = span_data(&check, cx, parent, span);
        glue::push_span(&t, data);
        Ok(())
    }

    fn outer_span_context(&mut self) -> wasmtime::Result<wit::SpanContext> {
        Ok(span_context_for_guest(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Limits;

    fn checker_parts() -> (Limits, Stats) {
        (Limits::default(), Stats::default())
    }

    fn wit_cx(trace: &str, span: &str) -> wit::SpanContext {
        wit::SpanContext {
            trace_id: trace.into(),
            span_id: span.into(),
            trace_flags: wit::TraceFlags::SAMPLED,
            is_remote: false,
            trace_state: vec![("vendor".into(), "v1".into())],
        }
    }

    #[test]
    fn contexts_round_trip_and_bad_ids_are_counted() {
        let (limits, stats) = checker_parts();
        let c = Checker {
            limits: &limits,
            stats: &stats,
        };
        let cx = span_context(
            &c,
            wit_cx("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
        )
        .unwrap();
        assert!(cx.is_sampled());
        assert_eq!(cx.trace_state().header(), "vendor=v1");
        let back = to_wit(Some(&cx));
        assert_eq!(back.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(back.trace_state, vec![("vendor".into(), "v1".into())]);
        for (t, s) in [
            ("xyz", "00f067aa0ba902b7"),
            ("4bf92f3577b34da6a3ce929d0e0e4736", "00000000000000000"),
            ("00000000000000000000000000000000", "00f067aa0ba902b7"),
            ("4bf92f3577b34da6a3ce929d0e0e4736", "ü0f067aa0ba902b"),
        ] {
            assert!(span_context(&c, wit_cx(t, s)).is_none());
        }
        assert_eq!(stats.snapshot().invalid_input, 4);
        let none = to_wit(None);
        assert_eq!(none.trace_id, "0".repeat(32));
        assert_eq!(none.span_id, "0".repeat(16));
    }

    #[test]
    fn parent_ids_empty_zero_or_malformed() {
        let (limits, stats) = checker_parts();
        let c = Checker {
            limits: &limits,
            stats: &stats,
        };
        assert_eq!(parent_id(&c, ""), None);
        assert_eq!(parent_id(&c, "0000000000000000"), None);
        assert_eq!(stats.snapshot().invalid_input, 0);
        assert_eq!(parent_id(&c, "zz"), None);
        assert_eq!(stats.snapshot().invalid_input, 1);
        assert!(parent_id(&c, "00f067aa0ba902b7").is_some());
    }

    fn datetime(seconds: u64, nanoseconds: u32) -> Datetime {
        Datetime {
            seconds,
            nanoseconds,
        }
    }

    fn scope() -> types::InstrumentationScope {
        types::InstrumentationScope {
            name: "lib".into(),
            version: Some("1.0".into()),
            schema_url: None,
            attributes: vec![],
        }
    }

    fn data() -> wit::SpanData {
        wit::SpanData {
            span_context: wit_cx("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
            parent_span_id: String::new(),
            span_kind: wit::SpanKind::Server,
            name: "op".into(),
            start_time: datetime(1_700_000_000, 0),
            end_time: datetime(1_700_000_001, 0),
            attributes: vec![],
            events: vec![],
            links: vec![],
            status: wit::Status::Error("bad".into()),
            instrumentation_scope: scope(),
            dropped_attributes: 2,
            dropped_events: 0,
            dropped_links: 0,
        }
    }

    #[test]
    fn span_data_repairs_times_and_bounds_lists() {
        let limits = Limits {
            events_per_span: 1,
            links_per_span: 1,
            ..Limits::default()
        };
        let stats = Stats::default();
        let c = Checker {
            limits: &limits,
            stats: &stats,
        };
        let mut d = data();
        d.end_time = datetime(1, 0); // before the start
        let event = |name: &str| wit::Event {
            name: name.into(),
            time: datetime(u64::MAX, 0), // out of range: the start time
            attributes: vec![],
        };
        d.events = vec![event("a"), event("b")];
        d.links = vec![
            wit::Link {
                span_context: wit_cx("bad", "bad"),
                attributes: vec![],
            },
            wit::Link {
                span_context: wit_cx("4bf92f3577b34da6a3ce929d0e0e4737", "00f067aa0ba902b8"),
                attributes: vec![types::KeyValue {
                    key: "k".into(),
                    value: "1".into(),
                }],
            },
        ];
        d.attributes = vec![types::KeyValue {
            key: "a".into(),
            value: "{".into(),
        }];
        let cx = span_context(&c, d.span_context.clone()).unwrap();
        let s = span_data(&c, cx, None, d);
        assert_eq!(s.end_time, s.start_time);
        assert_eq!(s.events.events.len(), 1);
        assert_eq!(s.events.events[0].timestamp, s.start_time);
        assert_eq!(s.events.dropped_count, 1);
        assert_eq!(s.links.links.len(), 1);
        assert_eq!(
            s.links.links[0].span_context.trace_state().header(),
            "vendor=v1"
        );
        assert_eq!(s.links.dropped_count, 1);
        assert_eq!(s.dropped_attributes_count, 2, "the guest's count is kept");
        assert_eq!(s.status, Status::error("bad"));
        assert_eq!(s.span_kind, SpanKind::Server);
        assert_eq!(s.instrumentation_scope.name(), "lib");
        assert_eq!(s.instrumentation_scope.version(), Some("1.0"));
        let snap = stats.snapshot();
        // end before start, event time, bad link ids, bad attribute JSON
        assert_eq!(snap.invalid_input, 4);
        assert_eq!(snap.events_dropped, 1);
        assert_eq!(snap.links_dropped, 1);
    }

    fn pipeline(
        limits: Limits,
    ) -> (
        crate::Telemetry,
        opentelemetry_sdk::trace::InMemorySpanExporter,
    ) {
        let spans = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let t = crate::Telemetry::builder()
            .with_limits(limits)
            .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
            .with_span_exporter(spans.clone())
            .build()
            .unwrap();
        (t, spans)
    }

    #[test]
    fn the_store_stack_tracks_announced_spans() {
        let (t, spans) = pipeline(Limits {
            open_spans_per_store: 2,
            ..Limits::default()
        });
        let mut ctx = WasiObserveCtx::new(&t);
        let root = wit_cx("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
        Host::on_start(&mut ctx, root.clone()).unwrap();
        // Announced twice: one entry, counted.
        Host::on_start(&mut ctx, root.clone()).unwrap();
        assert_eq!(ctx.open_spans(), 1);
        let inner = wit_cx("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b8");
        Host::on_start(&mut ctx, inner.clone()).unwrap();
        // Beyond the open-span limit: not tracked, counted (as untracked:
        // it is still exported when it ends).
        Host::on_start(
            &mut ctx,
            wit_cx("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b9"),
        )
        .unwrap();
        assert_eq!(ctx.open_spans(), 2);
        // Host-made spans would hang under the innermost.
        let current = ctx.current_span_context().unwrap();
        assert_eq!(format!("{:016x}", current.span_id()), "00f067aa0ba902b8");
        assert_eq!(
            Host::outer_span_context(&mut ctx).unwrap().span_id,
            "00f067aa0ba902b8"
        );

        let mut d = data();
        d.span_context = inner;
        d.parent_span_id = "00f067aa0ba902b7".into();
        Host::on_end(&mut ctx, d).unwrap();
        assert_eq!(ctx.open_spans(), 1);
        // The untracked span's end: exported, not invalid.
        let mut d = data();
        d.span_context = wit_cx("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b9");
        Host::on_end(&mut ctx, d).unwrap();
        assert_eq!(t.stats().invalid_input, 1);
        // An end without a start: exported, counted.
        let mut orphan = data();
        orphan.span_context = wit_cx("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902c0");
        Host::on_end(&mut ctx, orphan).unwrap();
        // Not sampled: not exported, but taken off the stack.
        let mut unsampled = root.clone();
        unsampled.trace_flags = wit::TraceFlags::empty();
        let mut d = data();
        d.span_context = unsampled;
        Host::on_end(&mut ctx, d).unwrap();
        assert_eq!(ctx.open_spans(), 0);
        assert_eq!(ctx.end_open_spans("x"), 0);
        t.force_flush().unwrap();
        let exported = spans.get_finished_spans().unwrap();
        assert_eq!(exported.len(), 3, "the inner, untracked and orphan spans");
        assert_eq!(
            exported[0].parent_span_id,
            parse_span_id("00f067aa0ba902b7").unwrap()
        );
        let stats = t.stats();
        // The double announce and the end without a start.
        assert_eq!(stats.invalid_input, 2, "{stats}");
        assert_eq!(stats.spans_untracked, 1);
        assert_eq!(stats.spans_dropped_open_limit, 0);
    }

    #[test]
    fn a_span_never_ended_is_exported_with_an_error() {
        let (t, spans) = pipeline(Limits::default());
        let mut ctx = WasiObserveCtx::new(&t);
        Host::on_start(
            &mut ctx,
            wit_cx("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
        )
        .unwrap();
        drop(ctx);
        t.force_flush().unwrap();
        let exported = spans.get_finished_spans().unwrap();
        assert_eq!(exported.len(), 1);
        assert_eq!(exported[0].name, UNENDED);
        assert!(matches!(exported[0].status, Status::Error { .. }));
    }
}

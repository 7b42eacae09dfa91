//! The batched pipe (`wasi-observe:pipe`) at its edges: what a panic, a
//! trap the SDK cannot see and a full buffer do to the batches, and what
//! hostile pipe input does to the host. The SDK's ordinary behaviour
//! through the pipe is the differential test's and `sdk_features`'.

use opentelemetry::trace::Status;

use crate::support::{Pipeline, attr, body, run, span};

/// The `sdk_losses` guest program.
pub(crate) mod sdk_losses {
    use super::*;

    const PROGRAM: &str = test_programs_artifacts::SDK_LOSSES_COMPONENT;

    #[test]
    fn a_panic_loses_nothing() {
        let p = Pipeline::new();
        let mut r = run(PROGRAM, p.ctx(), &["sdk_losses", "panic"]);
        assert!(r.result.is_err(), "the panic traps");
        r.end_open_spans("the guest trapped");
        drop(r);
        let spans = p.spans();
        let s = span(&spans, "before_panic");
        // Its start and event crossed in the panic hook; the host ended it.
        assert_eq!(attr(&s.attributes, "step"), Some(&1i64.into()));
        assert_eq!(s.events.len(), 1, "{s:?}");
        assert_eq!(s.events.events[0].name, "recorded before the panic");
        assert_eq!(s.status, Status::error("the guest trapped"));
        let logs = p.logs();
        for text in ["recorded before the panic", "a log record before the panic"] {
            let l = logs
                .iter()
                .find(|l| body(l) == text)
                .unwrap_or_else(|| panic!("no log {text:?}"));
            assert_eq!(
                l.trace_context().map(|c| c.span_id),
                Some(s.span_context.span_id()),
                "{text:?} is correlated with its span"
            );
        }
    }

    #[test]
    fn an_abort_loses_at_most_what_followed_the_last_batch() {
        let p = Pipeline::new();
        let mut r = run(PROGRAM, p.ctx(), &["sdk_losses", "abort"]);
        assert!(r.result.is_err(), "the abort traps");
        r.end_open_spans("the guest trapped");
        drop(r);
        let spans = p.spans();
        let done: Vec<_> = spans.iter().filter(|s| s.name == "done").collect();
        assert_eq!(done.len(), 3, "every span that ended crossed");
        assert!(
            done.iter()
                .all(|s| s.events.len() == 1 && s.status == Status::Unset)
        );
        // The open span's start never crossed: the host exports its
        // stand-in, by the name `open` gave, with an error status.
        let open = span(&spans, "open_at_abort");
        assert_eq!(open.status, Status::error("the guest trapped"));
        assert!(open.events.is_empty());
        let logs = p.logs();
        assert_eq!(
            logs.iter()
                .filter(|l| body(l) == "inside a span that ended")
                .count(),
            3
        );
        // The bound: what was recorded since the last batch is lost.
        assert!(!logs.iter().any(|l| body(l) == "lost with the abort"));
        assert!(
            !p.telemetry.stats().has_losses(),
            "{:?}",
            p.telemetry.stats()
        );
    }

    /// The indexes of the `child` spans exported, sorted.
    fn child_indexes(spans: &[opentelemetry_sdk::trace::SpanData]) -> Vec<i64> {
        let mut seen: Vec<i64> = spans
            .iter()
            .filter(|s| s.name == "child")
            .filter_map(|c| match attr(&c.attributes, "i") {
                Some(opentelemetry::Value::I64(i)) => Some(*i),
                _ => None,
            })
            .collect();
        seen.sort_unstable();
        seen
    }

    #[test]
    fn every_record_arrives_in_order_across_batches() {
        let p = Pipeline::new();
        let r = run(PROGRAM, p.ctx(), &["sdk_losses", "many", "3000"]);
        r.succeeded();
        drop(r);
        let spans = p.spans();
        let root = span(&spans, "root");
        let children: Vec<_> = spans.iter().filter(|s| s.name == "child").collect();
        assert_eq!(children.len(), 3000);
        assert!(
            children
                .iter()
                .all(|c| c.parent_span_id == root.span_context.span_id()
                    && c.span_context.trace_id() == root.span_context.trace_id())
        );
        assert_eq!(child_indexes(&spans), (0..3000).collect::<Vec<_>>());
    }

    /// The root never ends, so only batches that crossed because the buffer
    /// filled can hold the children: a prefix of them arrives, and what
    /// follows the last full batch (at most 64 KiB) is lost.
    #[test]
    fn a_full_buffer_crosses_before_the_span_ends() {
        let p = Pipeline::new();
        let mut r = run(PROGRAM, p.ctx(), &["sdk_losses", "many", "3000", "abort"]);
        assert!(r.result.is_err(), "the abort traps");
        r.end_open_spans("the guest trapped");
        drop(r);
        let spans = p.spans();
        // The root's start crossed with the first full batch: exported whole.
        let root = span(&spans, "root");
        assert_eq!(root.status, Status::error("the guest trapped"));
        let seen = child_indexes(&spans);
        let n = seen.len() as i64;
        assert!((2000..3000).contains(&n), "{n} children arrived");
        assert_eq!(seen, (0..n).collect::<Vec<_>>(), "a prefix, in order");
    }

    #[test]
    fn hostile_pipe_input_is_counted_and_the_pipe_keeps_working() {
        let p = Pipeline::new();
        let r = run(PROGRAM, p.ctx(), &["sdk_losses", "hostile"]);
        r.succeeded();
        drop(r);
        let spans = p.spans();
        let s = span(&spans, "after_hostile");
        assert_eq!(s.events.len(), 1);
        let stats = p.telemetry.stats();
        assert!(stats.pipe_batches_malformed >= 3, "{stats:?}");
        // The zero ids, the bad trace-state, the unknown close, the End and
        // the Measure naming what the host never saw.
        assert!(stats.invalid_input >= 4, "{stats:?}");
    }
}

/// The `sdk_held_metrics` guest program: measurements made outside any
/// span are summed and held in the guest, and cross when the host asks.
pub(crate) mod sdk_held_metrics {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use wasi_observe_host::testing::{TestHost, component, engine, linker, metric};
    use wasmtime::Store;
    use wasmtime_wasi::p2::bindings::sync::Command;

    use super::*;

    const PROGRAM: &str = test_programs_artifacts::SDK_HELD_METRICS_COMPONENT;

    #[test]
    fn held_measurements_cross_when_the_host_asks() {
        let p = Pipeline::new();
        let r = run(PROGRAM, p.ctx(), &["sdk_held_metrics"]);
        r.succeeded();
        drop(r);
        let exports = p.metrics();
        // Read once the exports are in: the decode thread counts the
        // records as it decodes them, after the store has ended.
        let stats = p.telemetry.stats();
        assert_eq!(stats.pipe_stores_ended_holding, 0, "{stats:?}");
        // The guest summed, within its table of 1 024 series: of 3 007
        // measurements (3 000 adds, 2 of the up-down counter, 2 of the
        // gauge, 3 of the histogram) the host received 3 005 records. The
        // first round's 1 500 series fill the table at `misses` 274 (1 024
        // written out), the second round's `hits` fill it again at 548
        // (1 024: 476 `misses`, 548 `hits`), and 952 counter series, the
        // up-down counter's and the gauge's sums and the 3 histogram
        // measurements cross at the end. Without summing it would be 3 007,
        // with an unbounded table 1 505.
        assert_eq!(stats.measurements, 3_005, "{stats:?}");
        // Every series got 1 then 2, though the guest sums at most 1 024
        // series at once: a series written out early and summed again adds
        // up on the host.
        for name in ["hits", "misses"] {
            let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric(&exports, name).data() else {
                panic!("{name} is not an integer sum");
            };
            let mut series: Vec<i64> = sum
                .data_points()
                .map(|d| {
                    assert_eq!(d.value(), 3, "{name}: {d:?}");
                    match &d.attributes().next().unwrap().value {
                        opentelemetry::Value::I64(n) => *n,
                        v => panic!("{v:?}"),
                    }
                })
                .collect();
            series.sort_unstable();
            assert_eq!(series, (0..750).collect::<Vec<_>>(), "{name}");
        }
        let AggregatedMetrics::I64(MetricData::Sum(depth)) = metric(&exports, "depth").data()
        else {
            panic!("depth is not an integer sum");
        };
        assert_eq!(depth.data_points().next().unwrap().value(), 3);
        let AggregatedMetrics::F64(MetricData::Gauge(level)) = metric(&exports, "level").data()
        else {
            panic!("level is not a float gauge");
        };
        assert_eq!(level.data_points().next().unwrap().value(), 2.5);
        let AggregatedMetrics::F64(MetricData::Histogram(sizes)) = metric(&exports, "sizes").data()
        else {
            panic!("sizes is not a float histogram");
        };
        let h = sizes.data_points().next().unwrap();
        assert_eq!((h.count(), h.sum()), (3, 111.0), "each measurement crossed");
    }

    /// An embedder that never calls `flush_guest` loses what was held, and
    /// the loss is counted, not silent.
    #[test]
    fn a_store_that_ends_holding_is_counted() {
        let p = Pipeline::new();
        let output = wasi_observe_host::testing::Output::new();
        let mut store = Store::new(
            engine(),
            TestHost::with_output(&output, p.ctx(), &["sdk_held_metrics"]),
        );
        let command =
            Command::instantiate(&mut store, &component(PROGRAM), &linker(engine())).unwrap();
        command
            .wasi_cli_run()
            .call_run(&mut store)
            .unwrap()
            .unwrap();
        assert_eq!(output.text(), "recorded\n");
        drop(store);
        let stats = p.telemetry.stats();
        assert_eq!(stats.pipe_stores_ended_holding, 1, "{stats:?}");
        assert!(stats.has_losses());
        let exports = p.metrics();
        assert!(
            exports
                .iter()
                .flat_map(|r| r.scope_metrics())
                .flat_map(|s| s.metrics())
                .all(|m| m.name() != "depth"),
            "nothing held crossed"
        );
    }
}

/// A component that says it holds pipe records but exports no `flush` (it
/// does not use the SDK): the host's request finds no export, counts the
/// loss, and carries on.
#[test]
fn hold_without_a_flush_export_is_counted() {
    let (p, mut store, instance) = instantiate_and_run(&holding_component(false));
    wasi_observe_host::flush_guest(&mut store, &instance).unwrap();
    let stats = p.telemetry.stats();
    assert_eq!(
        (stats.pipe_stores_ended_holding, stats.invalid_input),
        (1, 1),
        "{stats:?}"
    );
    // Asked once: the store's end does not count it again.
    drop(store);
    assert_eq!(p.telemetry.stats().pipe_stores_ended_holding, 1);
}

/// A component built against the pipe's 0.2.0 (before
/// `configure-with-environment`) links against this host's 0.2.1, and its
/// `flush` export, named by its own version, is found and called: here it
/// traps, and the trap is what `flush_guest` returns.
#[test]
fn a_component_built_against_0_2_0_is_linked_and_asked_to_flush() {
    let (p, mut store, instance) = instantiate_and_run(&holding_component(true));
    let trap = wasi_observe_host::flush_guest(&mut store, &instance).unwrap_err();
    assert_eq!(
        trap.downcast_ref::<wasmtime::Trap>(),
        Some(&wasmtime::Trap::UnreachableCodeReached),
        "{trap:?}"
    );
    assert_eq!(p.telemetry.stats().invalid_input, 0);
}

/// A component built against the pipe's 0.2.0 whose `run` calls `hold`;
/// with `flush`, it exports the 0.2.0 `flush`, which traps.
fn holding_component(flush: bool) -> Vec<u8> {
    let (flush_func, flush_export) = if flush {
        (
            r#"(func (export "flush") unreachable)"#,
            r#"(func $flush (canon lift (core func $i "flush")))
            (instance $flush (export "flush" (func $flush)))
            (export "wasi-observe:pipe/flush@0.2.0" (instance $flush))"#,
        )
    } else {
        ("", "")
    };
    wat::parse_str(format!(
        r#"(component
            (import "wasi-observe:pipe/pipe@0.2.0" (instance $pipe
                (export "hold" (func (result u64)))))
            (core func $hold (canon lower (func $pipe "hold")))
            (core module $m
                (import "pipe" "hold" (func $hold (result i64)))
                (func (export "run") (drop (call $hold)))
                {flush_func})
            (core instance $i (instantiate $m
                (with "pipe" (instance (export "hold" (func $hold))))))
            (func $run (canon lift (core func $i "run")))
            {flush_export}
            (export "run" (func $run)))"#
    ))
    .unwrap()
}

/// Instantiates the component `bytes` in a fresh store and calls its `run`
/// export.
fn instantiate_and_run(
    bytes: &[u8],
) -> (
    Pipeline,
    wasmtime::Store<wasi_observe_host::testing::TestHost>,
    wasmtime::component::Instance,
) {
    use wasi_observe_host::testing::{Output, TestHost, engine, linker};

    let component = wasmtime::component::Component::new(engine(), bytes).unwrap();
    let p = Pipeline::new();
    let output = Output::new();
    let mut store = wasmtime::Store::new(engine(), TestHost::with_output(&output, p.ctx(), &[]));
    let instance = linker(engine())
        .instantiate(&mut store, &component)
        .unwrap();
    let run = instance
        .get_typed_func::<(), ()>(&mut store, "run")
        .unwrap();
    run.call(&mut store, ()).unwrap();
    (p, store, instance)
}

//! `wasi-observe:pipe@0.2.2` (and `@0.2.0`, `@0.2.1`): batches of records a guest SDK
//! encoded in its own memory, handed to the pipeline's decode thread
//! ([`crate::pipeline::guest`]); and the two calls per span that tell the
//! store which guest span is open (so host-made spans nest under it), each
//! returning the clock the span needs anyway. `wit/deps/pipe/pipe.wit` says
//! why the pipe is shaped this way; docs/pipe.md has the whole design.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId};
use wasmtime::AsContextMut;
use wasmtime::component::{Instance, TypedFunc};

use crate::bindings::pipe::{Config, Host, Sampler, SpanRef};
use crate::ctx::{WasiObserveCtx, WasiObserveView};
use crate::pipeline::Telemetry;
use crate::pipeline::guest::{MAX_BATCH, PipeDecoder};
use crate::pipeline::stats::Stats;

fn now() -> u64 {
    nanos(SystemTime::now())
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

fn trace_id(high: u64, low: u64) -> TraceId {
    TraceId::from_bytes(((u128::from(high) << 64) | u128::from(low)).to_be_bytes())
}

fn span_ref(cx: &SpanContext) -> SpanRef {
    let id = u128::from_be_bytes(cx.trace_id().to_bytes());
    SpanRef {
        trace_id_high: (id >> 64) as u64,
        trace_id_low: id as u64,
        span_id: u64::from_be_bytes(cx.span_id().to_bytes()),
        trace_flags: cx.trace_flags().to_u8(),
    }
}

impl Host for WasiObserveCtx {
    fn configure(&mut self) -> wasmtime::Result<Config> {
        let t = self.scope.telemetry();
        let signals = t.signals();
        let event_log = if self.event_log_records {
            wasi_observe_wire::config::EVENT_LOG
        } else {
            0
        };
        // An instrumented component's spans ask for the frame they start in.
        let frames = if self.scope.has_recorder() {
            wasi_observe_wire::config::FRAMES
        } else {
            0
        };
        let bits = u8::from(signals.traces)
            | u8::from(signals.logs) << 1
            | u8::from(signals.metrics) << 2
            | event_log
            | frames;
        let (seed_high, seed_low) = t.random_seed();
        let sampler = match t.guest_sampler() {
            Some(s) => match (s.parent_based, s.ratio) {
                (true, r) if r >= 1.0 => Sampler::ParentBasedAlwaysOn,
                (true, r) if r <= 0.0 => Sampler::ParentBasedAlwaysOff,
                (true, r) => Sampler::ParentBasedTraceIdRatio(r),
                (false, r) if r >= 1.0 => Sampler::AlwaysOn,
                (false, r) if r <= 0.0 => Sampler::AlwaysOff,
                (false, r) => Sampler::TraceIdRatio(r),
            },
            // A sampler of the embedder's own cannot run in the guest.
            None => Sampler::ParentBasedAlwaysOn,
        };
        let ambient = self.scope.ambient.clone();
        Ok(Config {
            signals: bits,
            seed_high,
            seed_low,
            sampler,
            ambient: ambient.as_ref().map(span_ref),
            ambient_trace_state: ambient
                .as_ref()
                .map(|a| a.trace_state().header())
                .unwrap_or_default(),
            max_batch: MAX_BATCH as u32,
        })
    }

    fn configure_with_environment(
        &mut self,
        name: String,
    ) -> wasmtime::Result<(Config, Option<Option<String>>)> {
        let value = self.guest_environment.as_ref().map(|vars| {
            // The last of duplicates, as `wasi:cli` hands them.
            vars.iter()
                .rev()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        });
        Ok((self.configure()?, value))
    }

    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(now())
    }

    fn submit(&mut self, batch: Vec<u8>) -> wasmtime::Result<()> {
        self.submit_batch(batch, now());
        Ok(())
    }

    fn open(
        &mut self,
        span: SpanRef,
        name: String,
        trace_state: Option<String>,
    ) -> wasmtime::Result<u64> {
        let state = match trace_state {
            Some(s) if !s.is_empty() => s.parse().unwrap_or_else(|_| {
                self.scope.telemetry().checker().invalid();
                Default::default()
            }),
            _ => Default::default(),
        };
        let cx = SpanContext::new(
            trace_id(span.trace_id_high, span.trace_id_low),
            SpanId::from_bytes(span.span_id.to_be_bytes()),
            TraceFlags::new(span.trace_flags & TraceFlags::SAMPLED.to_u8()),
            false,
            state,
        );
        // One clock read: the span's start as the guest gets it, and its
        // stand-in's.
        let now = SystemTime::now();
        if cx.is_valid() {
            let t = self.scope.telemetry();
            let stand_in = (cx.is_sampled() && t.signals().traces && !name.is_empty())
                .then(|| t.checker().string(name));
            self.scope.open_pipe(cx, stand_in, now);
        } else {
            self.scope.telemetry().checker().invalid();
        }
        Ok(nanos(now))
    }

    fn frame(&mut self) -> wasmtime::Result<Option<(SpanRef, String)>> {
        Ok(self
            .scope
            .innermost_user_function()
            .map(|cx| (span_ref(&cx), cx.trace_state().header())))
    }

    fn hold(&mut self) -> wasmtime::Result<u64> {
        self.held = true;
        Ok(now())
    }

    fn close(&mut self, span_id: u64, batch: Vec<u8>) -> wasmtime::Result<u64> {
        let now = now();
        self.scope
            .close_pipe(SpanId::from_bytes(span_id.to_be_bytes()));
        self.submit_batch(batch, now);
        Ok(now)
    }
}

impl WasiObserveCtx {
    /// Hands a batch received at `received` to the store's decoder.
    fn submit_batch(&mut self, batch: Vec<u8>, received: u64) {
        if batch.is_empty() {
            return;
        }
        #[cfg(feature = "testing")]
        if let Some(tap) = &self.batch_tap {
            tap.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(batch.clone());
        }
        // The batch carries what the guest held.
        self.held = false;
        if !self.scope.telemetry().is_enabled() {
            return;
        }
        let telemetry = self.scope.telemetry();
        self.pipe
            .get_or_insert_with(|| PipeDecoder::new(telemetry.clone()))
            .submit(batch, received);
    }
}

/// The export a guest that calls `hold` provides. Wasmtime finds exports
/// by semver-compatible name, so this also finds the `@0.2.0` and `@0.2.1`
/// exports of components built against those versions.
const FLUSH_INTERFACE: &str = "wasi-observe:pipe/flush@0.2.2";

/// The guest's `flush` export, if it has one.
fn flush_export(mut store: impl AsContextMut, instance: &Instance) -> Option<TypedFunc<(), ()>> {
    let interface = instance.get_export_index(&mut store, None, FLUSH_INTERFACE)?;
    let func = instance.get_export_index(&mut store, Some(&interface), "flush")?;
    instance.get_typed_func(&mut store, func).ok()
}

/// Asks the guest of `instance` for the records it holds (made outside any
/// span: measurements the SDK sums), if it said it holds some. Call it
/// after every call into the component's exports returns, as `wasi-observe
/// run` and `serve` do: without it those records are lost when the store
/// ends (counted in `pipe_stores_ended_holding`). Costs nothing when the
/// guest holds nothing. An error is the guest's own trap in `flush`.
pub fn flush_guest<T: WasiObserveView + 'static>(
    mut store: impl AsContextMut<Data = T>,
    instance: &Instance,
) -> wasmtime::Result<()> {
    match held_flush(&mut store, instance) {
        Some(flush) => flush.call(&mut store, ()),
        None => Ok(()),
    }
}

/// [`flush_guest`] for a store with async support (as `serve`'s).
pub async fn flush_guest_async<T: WasiObserveView + Send + 'static>(
    mut store: impl AsContextMut<Data = T>,
    instance: &Instance,
) -> wasmtime::Result<()> {
    match held_flush(&mut store, instance) {
        Some(flush) => flush.call_async(&mut store, ()).await,
        None => Ok(()),
    }
}

/// The `flush` export to call, if the guest holds records; the flag is
/// cleared either way, and a guest that holds without the export counted.
fn held_flush<T: WasiObserveView + 'static>(
    mut store: impl AsContextMut<Data = T>,
    instance: &Instance,
) -> Option<TypedFunc<(), ()>> {
    let mut store = store.as_context_mut();
    if !std::mem::take(&mut store.data_mut().observe().held) {
        return None;
    }
    let flush = flush_export(&mut store, instance);
    if flush.is_none() {
        no_flush_export(store.data_mut().observe());
    }
    flush
}

/// A guest called `hold` but exports no `flush`: what it held is lost.
fn no_flush_export(ctx: &mut WasiObserveCtx) {
    ctx.scope.telemetry().checker().invalid();
    ended_holding(ctx.scope.telemetry());
}

/// Counts a store that ended (or could not be asked) while its guest held
/// records, with one warning per process.
pub(crate) fn ended_holding(t: &Telemetry) {
    Stats::add(&t.counters().pipe_stores_ended_holding, 1);
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "wasi-observe: a guest's store ended while it held telemetry (measurements made \
             outside any span): it trapped or exited, or the host did not call `flush_guest` \
             after the invocation; those records are lost (counted in \
             pipe_stores_ended_holding)"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pipeline::{Limits, Telemetry};

    fn pipeline(limits: Limits) -> Telemetry {
        Telemetry::builder()
            .with_limits(limits)
            .with_span_exporter(opentelemetry_sdk::trace::InMemorySpanExporter::default())
            .build()
            .unwrap()
    }

    fn span(id: u64) -> SpanRef {
        SpanRef {
            trace_id_high: 1,
            trace_id_low: 2,
            span_id: id,
            trace_flags: 1,
        }
    }

    #[test]
    fn the_guest_environment_comes_with_the_configuration() {
        let t = pipeline(Limits::default());
        // The embedder gave no environment: no answer, the guest reads it.
        let mut ctx = WasiObserveCtx::new(&t);
        let (_, value) = Host::configure_with_environment(&mut ctx, "RUST_LOG".into()).unwrap();
        assert_eq!(value, None);

        let env: Arc<[(String, String)]> = vec![
            ("RUST_LOG".to_string(), "debug".to_string()),
            ("OTHER".to_string(), "1".to_string()),
            ("RUST_LOG".to_string(), "warn".to_string()),
        ]
        .into();
        let mut ctx = WasiObserveCtx::builder(&t)
            .with_guest_environment(env)
            .build();
        let (config, value) =
            Host::configure_with_environment(&mut ctx, "RUST_LOG".into()).unwrap();
        // The last of duplicates, as the guest's environment has it.
        assert_eq!(value, Some(Some("warn".to_string())));
        assert_eq!(config.max_batch, MAX_BATCH as u32);
        for unset in ["UNSET", "", "RUST_LOG=warn"] {
            let (_, value) = Host::configure_with_environment(&mut ctx, unset.into()).unwrap();
            assert_eq!(value, Some(None), "{unset}");
        }
    }

    #[test]
    fn close_reaches_only_pipe_spans() {
        let t = pipeline(Limits::default());
        let mut ctx = WasiObserveCtx::new(&t);
        // A span the store holds for another interface (as wasi:otel's
        // `on-start` opens one).
        let other = SpanContext::new(
            trace_id(0, 3),
            SpanId::from_bytes(9u64.to_be_bytes()),
            TraceFlags::SAMPLED,
            false,
            Default::default(),
        );
        ctx.scope.open_foreign(other, None, None);
        Host::open(&mut ctx, span(5), "piped".into(), None).unwrap();
        assert_eq!(ctx.open_spans(), 2);
        // The guest names the other span: refused, counted.
        Host::close(&mut ctx, 9, Vec::new()).unwrap();
        assert_eq!(ctx.open_spans(), 2);
        assert_eq!(t.stats().invalid_input, 1);
        Host::close(&mut ctx, 5, Vec::new()).unwrap();
        assert_eq!(ctx.open_spans(), 1);
        assert_eq!(ctx.held_bytes(), 0, "the stand-in's bytes were given back");
    }

    /// `hold` marks the store as holding until a batch crosses; a store
    /// that ends holding is counted.
    #[test]
    fn a_held_batch_is_cleared_by_a_batch_and_counted_at_the_end() {
        let t = pipeline(Limits::default());
        let mut ctx = WasiObserveCtx::new(&t);
        Host::hold(&mut ctx).unwrap();
        Host::submit(&mut ctx, Vec::new()).unwrap();
        assert!(ctx.held, "an empty batch carries nothing");
        Host::open(&mut ctx, span(1), "s".into(), None).unwrap();
        Host::close(&mut ctx, 1, vec![0]).unwrap();
        assert!(!ctx.held, "the close's batch carried what was held");
        drop(ctx);
        assert_eq!(t.stats().pipe_stores_ended_holding, 0);
        let mut ctx = WasiObserveCtx::new(&t);
        Host::hold(&mut ctx).unwrap();
        drop(ctx);
        assert_eq!(t.stats().pipe_stores_ended_holding, 1);
    }

    /// Past the open-span limit a pipe span is still exported by the
    /// decoder: it is counted as untracked, not as dropped, and its close
    /// is not invalid input.
    #[test]
    fn pipe_spans_past_the_open_limit_are_untracked_not_dropped() {
        let t = pipeline(Limits {
            open_spans_per_store: 2,
            ..Limits::default()
        });
        let mut ctx = WasiObserveCtx::new(&t);
        for id in 1..=3 {
            Host::open(&mut ctx, span(id), format!("s{id}"), None).unwrap();
        }
        assert_eq!(ctx.open_spans(), 2);
        for id in (1..=3).rev() {
            Host::close(&mut ctx, id, Vec::new()).unwrap();
        }
        assert_eq!(ctx.open_spans(), 0);
        let stats = t.stats();
        assert_eq!(
            (
                stats.spans_untracked,
                stats.spans_dropped_open_limit,
                stats.invalid_input
            ),
            (1, 0, 0)
        );
        // Once the untracked span is closed, an unknown id is invalid again.
        Host::close(&mut ctx, 77, Vec::new()).unwrap();
        assert_eq!(t.stats().invalid_input, 1);
    }

    #[test]
    fn stand_ins_are_held_within_the_store_budget() {
        let t = pipeline(Limits {
            store_bytes: 4096,
            value_length: 1 << 20,
            ..Limits::default()
        });
        let mut ctx = WasiObserveCtx::new(&t);
        Host::open(&mut ctx, span(5), "n".repeat(10_000), None).unwrap();
        // Tracked for parenting, without a stand-in.
        assert_eq!(ctx.open_spans(), 1);
        assert_eq!(ctx.held_bytes(), 0);
        assert_eq!(t.stats().values_dropped_store_budget, 1);
        Host::open(&mut ctx, span(6), "small".into(), None).unwrap();
        assert!(ctx.held_bytes() > 0);
        assert_eq!(ctx.end_open_spans("ended"), 2);
        assert_eq!(ctx.held_bytes(), 0);
    }
}

//! A driver for fuzzing: turns arbitrary bytes into a sequence of guest calls
//! on one store's [`WasiObserveCtx`], through the same trait implementations
//! the linker calls, with arbitrary data (ids, trace-states, names, attribute
//! lists, timestamps, numbers) and arbitrary handles, including handles used
//! after `end` or after `drop`, and handles that never existed; and batches
//! for `wasi-observe:pipe`: well-formed records with hostile contents (spans
//! ended twice or never started, unknown shared sets and instruments, times
//! OTLP cannot carry, bad kinds and severities), sometimes corrupted or cut.
//! The driver decodes the store's batches on its own thread after each
//! call, so that a panic in decoding is the fuzzer's to see.
//!
//! Not part of the API: it exists for `fuzz/` (cargo fuzz) and the proptest
//! in `tests/fuzz.rs`. The only promise checked is the one a guest relies on:
//! no input makes the host panic.
//!
//! One difference from a real store: wasmtime's resource table rejects a
//! handle the guest does not own before the host sees it, so a stale or
//! forged handle never reaches these functions there. Here they do, which is
//! harsher: the host must cope with reps it never issued, or issued to a
//! span since released and reused.

#![allow(missing_docs)]

use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::{Result, Unstructured};
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::Sampler;
use wasmtime::component::Resource;

use crate::bindings::Datetime;
use crate::bindings::logging::{Host as _, Level};
use crate::bindings::metrics::{HostInstrument, InstrumentKind, InstrumentOptions, Number};
use crate::bindings::pipe::{Host as PipeHost, SpanRef};
use crate::bindings::sdk::{self, Host as _, Parent};
use crate::bindings::tracer::{
    self, HostSpan, KeyValue, Link, SpanKind, StartOptions, Status, TraceFlags as WitFlags, Value,
};
use crate::export::batch::BatchConfig;
use crate::export::jsonl::JsonLinesExporter;
use crate::{Limits, Telemetry, WasiObserveCtx};
use wasi_observe_wire as wire;

/// The pipeline every fuzz input feeds: small limits (so that inputs reach
/// them), a sampler that records about half the traces, and exporters that
/// serialize everything to OTLP/JSON and throw it away.
pub fn telemetry() -> &'static Telemetry {
    static T: OnceLock<Telemetry> = OnceLock::new();
    T.get_or_init(|| {
        let batch = BatchConfig {
            max_queue_size: 256,
            max_export_batch_size: 64,
            scheduled_delay: Duration::from_millis(10),
            max_block: Duration::ZERO,
            ..BatchConfig::default()
        };
        Telemetry::builder()
            .with_default_service_name("fuzz")
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                0.5,
            ))))
            .with_limits(Limits {
                attributes_per_span: 8,
                events_per_span: 4,
                links_per_span: 4,
                attributes_per_event: 4,
                attributes_per_link: 4,
                attributes_per_log: 4,
                value_length: 48,
                array_length: 8,
                open_spans_per_store: 16,
                instruments: 32,
                // Small, so that fuzzing reaches every budget's edge.
                store_bytes: 16 << 10,
                export_bytes: 1 << 20,
                metric_value_length: 16,
                series_per_instrument: 8,
                metric_bytes: 4 << 10,
            })
            .with_span_batch_config(batch.clone())
            .with_log_batch_config(batch)
            .with_span_exporter(JsonLinesExporter::new(std::io::sink()))
            .with_log_exporter(JsonLinesExporter::new(std::io::sink()))
            .with_metric_exporter(JsonLinesExporter::new(std::io::sink()))
            .build()
            .expect("building the fuzzing pipeline")
    })
}

/// Runs one input: a fresh store's ctx, calls decoded from `data` until it
/// runs out, then the store is dropped (ending what is open). Inputs that
/// start with a zero byte also flush the pipeline, so that export code runs.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut driver = Driver {
        ctx: WasiObserveCtx::new(telemetry()),
        spans: Vec::new(),
        instruments: Vec::new(),
    };
    while !u.is_empty() {
        if driver.step(&mut u).is_err() {
            break;
        }
    }
    // The store's end (spans still open exported) is decoded here too.
    let pipe = driver.ctx.pipe.clone();
    drop(driver);
    if let Some(pipe) = pipe {
        pipe.drain();
    }
    // The decoder catches its own panics (counted), so that one bad batch
    // cannot end a host; here a caught one must still fail the input, with
    // or without a panic hook that aborts.
    let panics = telemetry().stats().pipe_decode_panics;
    assert_eq!(panics, 0, "decoding a batch panicked");
    // Not every input: the metric state grows across inputs (up to the SDK's
    // cardinality limit), and exporting all of it each time would dominate.
    if data.first() == Some(&0) {
        let _ = telemetry().force_flush();
    }
}

struct Driver {
    ctx: WasiObserveCtx,
    /// Reps handed out (and maybe ended or dropped since).
    spans: Vec<u32>,
    instruments: Vec<u32>,
}

/// A rep: mostly one handed out before, sometimes any number.
fn rep(u: &mut Unstructured, issued: &[u32]) -> Result<u32> {
    if !issued.is_empty() && u.ratio(7, 8)? {
        return Ok(*u.choose(issued)?);
    }
    Ok(match u.int_in_range(0..=3)? {
        0 => u32::MAX,
        1 => u32::MAX - 1,
        _ => u.int_in_range(0..=64)?,
    })
}

/// A string: short arbitrary text, sometimes long, sometimes hex-like.
fn string(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=9)? {
        0 => String::new(),
        1 => "x".repeat(u.int_in_range(40..=200)?),
        2 => "é🦀".repeat(u.int_in_range(1..=40)?),
        3 => hex(u, 32)?,
        4 => hex(u, 16)?,
        _ => u.arbitrary()?,
    })
}

fn hex(u: &mut Unstructured, len: usize) -> Result<String> {
    const DIGITS: &[u8] = b"0123456789abcdefABCDEF0g -";
    (0..len)
        .map(|_| {
            let pick = if u.ratio(15, 16)? {
                u.int_in_range(0..=15)?
            } else {
                u.int_in_range(0..=DIGITS.len() - 1)?
            };
            Ok(char::from(DIGITS[pick]))
        })
        .collect()
}

fn list<'a, T>(
    u: &mut Unstructured<'a>,
    max: usize,
    f: impl Fn(&mut Unstructured<'a>) -> Result<T>,
) -> Result<Vec<T>> {
    let n = u.int_in_range(0..=max)?;
    (0..n).map(|_| f(u)).collect()
}

fn f64(u: &mut Unstructured) -> Result<f64> {
    Ok(match u.int_in_range(0..=6)? {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => -0.0,
        4 => f64::MAX,
        _ => u.arbitrary()?,
    })
}

fn value(u: &mut Unstructured) -> Result<Value> {
    Ok(match u.int_in_range(0..=7)? {
        0 => Value::String(string(u)?),
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Float64(f64(u)?),
        3 => Value::S64(u.arbitrary()?),
        4 => Value::StringArray(list(u, 12, string)?),
        5 => Value::BoolArray(list(u, 12, |u| u.arbitrary())?),
        6 => Value::Float64Array(list(u, 12, f64)?),
        _ => Value::S64Array(list(u, 12, |u| u.arbitrary())?),
    })
}

fn attributes(u: &mut Unstructured) -> Result<Vec<KeyValue>> {
    list(u, 12, |u| {
        Ok(KeyValue {
            key: if u.ratio(1, 3)? {
                u.choose(&["k", "", "a.b", "k2"])?.to_string()
            } else {
                string(u)?
            },
            value: value(u)?,
        })
    })
}

fn datetime(u: &mut Unstructured) -> Result<Datetime> {
    Ok(match u.int_in_range(0..=3)? {
        0 => Datetime {
            seconds: 1_700_000_000 + u.int_in_range(0..=1000)?,
            nanoseconds: u.int_in_range(0..=999_999_999)?,
        },
        _ => Datetime {
            seconds: u.arbitrary()?,
            nanoseconds: u.arbitrary()?,
        },
    })
}

fn flags(u: &mut Unstructured) -> Result<WitFlags> {
    Ok(if u.arbitrary()? {
        WitFlags::SAMPLED
    } else {
        WitFlags::empty()
    })
}

fn trace_state(u: &mut Unstructured) -> Result<Vec<(String, String)>> {
    list(u, 40, |u| {
        Ok(if u.ratio(1, 2)? {
            (
                u.choose(&["vendor", "a@b", "x", "Bad", "k"])?.to_string(),
                u.choose(&["v", "1", "a=b", "", "x,y"])?.to_string(),
            )
        } else {
            (string(u)?, string(u)?)
        })
    })
}

fn span_context(u: &mut Unstructured) -> Result<tracer::SpanContext> {
    Ok(tracer::SpanContext {
        trace_id: if u.ratio(1, 8)? {
            string(u)?
        } else {
            hex(u, 32)?
        },
        span_id: if u.ratio(1, 8)? {
            string(u)?
        } else {
            hex(u, 16)?
        },
        trace_flags: flags(u)?,
        is_remote: u.arbitrary()?,
        trace_state: trace_state(u)?,
    })
}

fn link(u: &mut Unstructured) -> Result<Link> {
    Ok(Link {
        span_context: span_context(u)?,
        attributes: attributes(u)?,
    })
}

fn options(u: &mut Unstructured) -> Result<Option<StartOptions>> {
    if u.ratio(1, 3)? {
        return Ok(None);
    }
    Ok(Some(StartOptions {
        new_root: u.ratio(1, 4)?,
        span_kind: if u.arbitrary()? {
            Some(*u.choose(&[
                SpanKind::Client,
                SpanKind::Server,
                SpanKind::Producer,
                SpanKind::Consumer,
                SpanKind::Internal,
            ])?)
        } else {
            None
        },
        attributes: if u.arbitrary()? {
            Some(attributes(u)?)
        } else {
            None
        },
        links: if u.arbitrary()? {
            Some(list(u, 6, link)?)
        } else {
            None
        },
        timestamp: if u.arbitrary()? {
            Some(datetime(u)?)
        } else {
            None
        },
    }))
}

fn status(u: &mut Unstructured) -> Result<Status> {
    Ok(match u.int_in_range(0..=2)? {
        0 => Status::Unset,
        1 => Status::Ok,
        _ => Status::Error(string(u)?),
    })
}

fn level(u: &mut Unstructured) -> Result<Level> {
    Ok(*u.choose(&[
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Critical,
    ])?)
}

fn kind(u: &mut Unstructured) -> Result<InstrumentKind> {
    Ok(*u.choose(&[
        InstrumentKind::Counter,
        InstrumentKind::UpDownCounter,
        InstrumentKind::Histogram,
        InstrumentKind::Gauge,
    ])?)
}

fn number(u: &mut Unstructured) -> Result<Number> {
    Ok(if u.arbitrary()? {
        Number::S64(match u.int_in_range(0..=3)? {
            0 => i64::MIN,
            1 => i64::MAX,
            _ => u.arbitrary()?,
        })
    } else {
        Number::F64(f64(u)?)
    })
}

fn instrument_name(u: &mut Unstructured) -> Result<String> {
    Ok(if u.ratio(3, 4)? {
        u.choose(&["requests", "latency", "queue.depth", "a/b", "1bad", ""])?
            .to_string()
    } else {
        string(u)?
    })
}

fn sdk_context(u: &mut Unstructured) -> Result<sdk::Context> {
    Ok(sdk::Context {
        trace_id_high: u.arbitrary()?,
        trace_id_low: u.arbitrary()?,
        span_id: u.arbitrary()?,
        trace_flags: flags(u)?,
        is_remote: u.arbitrary()?,
        trace_state: trace_state(u)?,
    })
}

fn ambient(u: &mut Unstructured) -> Result<Option<SpanContext>> {
    if u.ratio(1, 3)? {
        return Ok(None);
    }
    Ok(Some(SpanContext::new(
        TraceId::from_bytes(u.arbitrary()?),
        SpanId::from_bytes(u.arbitrary()?),
        if u.arbitrary()? {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        u.arbitrary()?,
        TraceState::NONE,
    )))
}

impl Driver {
    fn parent(&self, u: &mut Unstructured) -> Result<Parent> {
        Ok(match u.int_in_range(0..=2)? {
            0 => Parent::Ambient,
            1 => Parent::Span(Resource::new_borrow(rep(u, &self.spans)?)),
            _ => Parent::Context(sdk_context(u)?),
        })
    }

    fn span(&self, u: &mut Unstructured) -> Result<Resource<crate::interfaces::tracer::GuestSpan>> {
        Ok(Resource::new_borrow(rep(u, &self.spans)?))
    }

    /// Decodes and makes one call. Host errors are not expected: every call
    /// returns `Ok` (a trap would be a host bug), which is asserted.
    fn step(&mut self, u: &mut Unstructured) -> Result<()> {
        let ok = |r: wasmtime::Result<()>| r.expect("a host call trapped");
        match u.int_in_range(0..=26)? {
            0 | 1 => {
                let (name, options) = (string(u)?, options(u)?);
                let span = tracer::Host::start(&mut self.ctx, name, options).expect("start");
                self.spans.push(span.rep());
            }
            2 => {
                let parent = self.parent(u)?;
                let (name, options) = (string(u)?, options(u)?);
                // A set that exists, or any number (an unknown handle).
                let shared = if u.arbitrary()? {
                    let attrs = attributes(u)?;
                    sdk::Host::share_attributes(&mut self.ctx, attrs).expect("share-attributes")
                } else {
                    u.arbitrary()?
                };
                let started = sdk::Host::start_span(&mut self.ctx, name, parent, options, shared)
                    .expect("start-span");
                self.spans.push(started.span.rep());
            }
            3 => {
                let s = self.span(u)?;
                self.ctx.span_context(s).expect("span-context");
            }
            4 => {
                let s = self.span(u)?;
                self.ctx.is_recording(s).expect("is-recording");
            }
            5 => {
                let s = self.span(u)?;
                let attrs = attributes(u)?;
                ok(self.ctx.set_attributes(s, attrs));
            }
            6 => {
                let s = self.span(u)?;
                let name = string(u)?;
                let ts = if u.arbitrary()? {
                    Some(datetime(u)?)
                } else {
                    None
                };
                let attrs = if u.arbitrary()? {
                    Some(attributes(u)?)
                } else {
                    None
                };
                ok(self.ctx.add_event(s, name, ts, attrs));
            }
            7 => {
                let s = self.span(u)?;
                let l = link(u)?;
                ok(self.ctx.add_link(s, l));
            }
            8 => {
                let s = self.span(u)?;
                let st = status(u)?;
                ok(self.ctx.set_status(s, st));
            }
            9 => {
                let s = self.span(u)?;
                let name = string(u)?;
                ok(self.ctx.update_name(s, name));
            }
            10 | 11 => {
                let s = self.span(u)?;
                let ts = if u.arbitrary()? {
                    Some(datetime(u)?)
                } else {
                    None
                };
                ok(HostSpan::end(&mut self.ctx, s, ts));
            }
            12 => {
                let s = Resource::new_own(rep(u, &self.spans)?);
                ok(HostSpan::drop(&mut self.ctx, s));
            }
            13 => {
                let (l, c, m) = (level(u)?, string(u)?, string(u)?);
                ok(self.ctx.log(l, c, m));
            }
            14 => {
                let parent = self.parent(u)?;
                let event = if u.arbitrary()? {
                    Some(sdk::SpanEvent {
                        name: string(u)?,
                        attributes: attributes(u)?,
                        with_record_attributes: u.arbitrary()?,
                        shared: u.arbitrary()?,
                    })
                } else {
                    None
                };
                let (level, context, message, attrs) =
                    (level(u)?, string(u)?, string(u)?, attributes(u)?);
                ok(self.ctx.emit(parent, level, context, message, attrs, event));
            }
            15 => {
                let s = Resource::new_own(rep(u, &self.spans)?);
                let attrs = attributes(u)?;
                let st = if u.arbitrary()? {
                    Some(status(u)?)
                } else {
                    None
                };
                let name = if u.arbitrary()? {
                    Some(string(u)?)
                } else {
                    None
                };
                let ts = if u.arbitrary()? {
                    Some(datetime(u)?)
                } else {
                    None
                };
                ok(self.ctx.finish(s, attrs, st, name, ts));
            }
            16 => {
                let s = self.span(u)?;
                let parent = self.parent(u)?;
                sdk::Host::set_parent(&mut self.ctx, s, parent).expect("set-parent");
            }
            17 => {
                self.ctx.enabled().expect("enabled");
            }
            18 => {
                let (k, name, n, attrs) =
                    (kind(u)?, instrument_name(u)?, number(u)?, attributes(u)?);
                ok(crate::bindings::metrics::Host::record(
                    &mut self.ctx,
                    k,
                    name,
                    n,
                    attrs,
                ));
            }
            19 => {
                let (k, name) = (kind(u)?, instrument_name(u)?);
                let options = if u.arbitrary()? {
                    Some(InstrumentOptions {
                        description: if u.arbitrary()? {
                            Some(string(u)?)
                        } else {
                            None
                        },
                        unit: if u.arbitrary()? {
                            Some(string(u)?)
                        } else {
                            None
                        },
                        boundaries: if u.arbitrary()? {
                            Some(list(u, 20, f64)?)
                        } else {
                            None
                        },
                    })
                } else {
                    None
                };
                let i = HostInstrument::new(&mut self.ctx, k, name, options).expect("instrument");
                self.instruments.push(i.rep());
            }
            20 => {
                let i = Resource::new_borrow(rep(u, &self.instruments)?);
                let (n, attrs) = (number(u)?, attributes(u)?);
                ok(HostInstrument::record(&mut self.ctx, i, n, attrs));
            }
            21 => {
                let i = Resource::new_own(rep(u, &self.instruments)?);
                ok(HostInstrument::drop(&mut self.ctx, i));
            }
            23 | 24 => {
                let batch = batch(u)?;
                ok(PipeHost::submit(&mut self.ctx, batch));
                self.decode_pipe();
            }
            25 => {
                let span = SpanRef {
                    trace_id_high: u.arbitrary()?,
                    trace_id_low: u.arbitrary()?,
                    span_id: u64::from_be_bytes(pipe_span_id(u)?),
                    trace_flags: u.arbitrary()?,
                };
                let name = string(u)?;
                let state = if u.arbitrary()? {
                    Some(pipe_trace_state(u)?.to_string())
                } else {
                    None
                };
                PipeHost::open(&mut self.ctx, span, name, state).expect("open");
            }
            26 => {
                let span_id = u64::from_be_bytes(pipe_span_id(u)?);
                let batch = batch(u)?;
                PipeHost::close(&mut self.ctx, span_id, batch).expect("close");
                self.decode_pipe();
            }
            _ => match u.int_in_range(0..=5)? {
                4 => {
                    PipeHost::hold(&mut self.ctx).expect("hold");
                }
                5 => {
                    let name = string(u)?;
                    PipeHost::configure_with_environment(&mut self.ctx, name)
                        .expect("configure-with-environment");
                }
                0 => {
                    let parent = ambient(u)?;
                    self.ctx.set_parent(parent);
                }
                1 => {
                    let reason = string(u)?;
                    self.ctx.end_open_spans(&reason);
                }
                2 => {
                    self.ctx.current_span_context();
                    PipeHost::frame(&mut self.ctx).expect("frame");
                }
                _ => {
                    self.ctx.recorder_flush(&recorder_words(u)?);
                }
            },
        }
        Ok(())
    }
}

impl Driver {
    /// Decodes the store's queued batches here (the decode thread may have
    /// taken some already).
    fn decode_pipe(&self) {
        if let Some(pipe) = &self.ctx.pipe {
            pipe.drain();
        }
    }
}

/// A pipe span id: mostly one of a few, so that starts, events, links and
/// ends meet, sometimes any (zero included).
fn pipe_span_id(u: &mut Unstructured) -> Result<wire::SpanId> {
    Ok(if u.ratio(7, 8)? {
        u.int_in_range(1..=6u64)?.to_be_bytes()
    } else {
        u.arbitrary()?
    })
}

/// A trace id: mostly one, sometimes any (zero included).
fn pipe_trace_id(u: &mut Unstructured) -> Result<wire::TraceId> {
    Ok(if u.ratio(3, 4)? {
        [7; 16]
    } else {
        u.arbitrary()?
    })
}

/// A time: the batch's (0), a plausible one, or one OTLP cannot carry.
fn pipe_time(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.int_in_range(0..=4)? {
        0 => 0,
        1 => u64::MAX,
        2 => u.arbitrary()?,
        _ => 1_700_000_000_000_000_000 + u.int_in_range(0..=1_000_000_000)?,
    })
}

/// Text borrowed from the input, or one of a few shapes.
fn pipe_str<'a>(u: &mut Unstructured<'a>) -> Result<&'a str> {
    const LONG: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    Ok(match u.int_in_range(0..=7)? {
        0 => "",
        1 => LONG,
        2 => "é🦀é🦀é🦀é🦀é🦀é🦀é🦀é🦀é🦀é🦀é🦀é🦀",
        3 => *u.choose(&["k", "a.b", "k2", "code.lineno"])?,
        _ => u.arbitrary()?,
    })
}

fn pipe_trace_state<'a>(u: &mut Unstructured<'a>) -> Result<&'a str> {
    Ok(if u.ratio(1, 2)? {
        *u.choose(&["", "a=b", "vendor=x,k=v", "Bad State", "a=b,a=c", "=,="])?
    } else {
        pipe_str(u)?
    })
}

/// A small number: mostly one of a few (shared sets, instruments), sometimes
/// any.
fn pipe_id(u: &mut Unstructured) -> Result<u32> {
    Ok(if u.ratio(7, 8)? {
        u.int_in_range(0..=3)?
    } else {
        u.arbitrary()?
    })
}

/// A byte field with a few valid values: mostly one of them, sometimes any.
fn pipe_byte(u: &mut Unstructured, valid: u8) -> Result<u8> {
    Ok(if u.ratio(7, 8)? {
        u.int_in_range(0..=valid)?
    } else {
        u.arbitrary()?
    })
}

fn pipe_value<'a>(u: &mut Unstructured<'a>) -> Result<wire::Value<'a>> {
    Ok(match u.int_in_range(0..=7)? {
        0 => wire::Value::Str(pipe_str(u)?),
        1 => wire::Value::Bool(u.arbitrary()?),
        2 => wire::Value::F64(f64(u)?),
        3 => wire::Value::I64(u.arbitrary()?),
        4 => wire::Value::StrArray(list(u, 12, pipe_str)?),
        5 => wire::Value::BoolArray(list(u, 12, |u| u.arbitrary())?),
        6 => wire::Value::F64Array(list(u, 12, f64)?),
        _ => wire::Value::I64Array(list(u, 12, |u| u.arbitrary())?),
    })
}

fn pipe_attributes<'a>(u: &mut Unstructured<'a>) -> Result<wire::Attributes<'a>> {
    list(u, 10, |u| Ok((pipe_str(u)?, pipe_value(u)?)))
}

fn pipe_shared(u: &mut Unstructured) -> Result<Option<u32>> {
    Ok(if u.arbitrary()? {
        Some(pipe_id(u)?)
    } else {
        None
    })
}

fn pipe_event<'a>(u: &mut Unstructured<'a>) -> Result<wire::Event<'a, wire::Attributes<'a>>> {
    Ok(wire::Event {
        span_id: pipe_span_id(u)?,
        time: pipe_time(u)?,
        name: pipe_str(u)?,
        shared: pipe_shared(u)?,
        attributes: pipe_attributes(u)?,
    })
}

/// One record of every kind, with hostile contents.
fn pipe_record<'a>(u: &mut Unstructured<'a>) -> Result<wire::Decoded<'a>> {
    use wire::Record;
    Ok(match u.int_in_range(0..=9)? {
        0 | 1 => Record::Start(wire::Start {
            span_id: pipe_span_id(u)?,
            trace_id: pipe_trace_id(u)?,
            parent: pipe_span_id(u)?,
            parent_remote: u.arbitrary()?,
            flags: u.arbitrary()?,
            kind: pipe_byte(u, 5)?,
            time: pipe_time(u)?,
            name: pipe_str(u)?,
            trace_state: pipe_trace_state(u)?,
            shared: pipe_shared(u)?,
            attributes: pipe_attributes(u)?,
        }),
        2 => Record::End(wire::End {
            span_id: pipe_span_id(u)?,
            time: pipe_time(u)?,
            status: pipe_byte(u, 3)?,
            description: pipe_str(u)?,
            name: if u.arbitrary()? {
                Some(pipe_str(u)?)
            } else {
                None
            },
            attributes: pipe_attributes(u)?,
        }),
        3 => Record::Event(pipe_event(u)?),
        4 => Record::Link(wire::Link {
            span_id: pipe_span_id(u)?,
            trace_id: pipe_trace_id(u)?,
            linked_span_id: pipe_span_id(u)?,
            flags: u.arbitrary()?,
            remote: u.arbitrary()?,
            trace_state: pipe_trace_state(u)?,
            attributes: pipe_attributes(u)?,
        }),
        5 => Record::Reparent(wire::Reparent {
            span_id: pipe_span_id(u)?,
            trace_id: pipe_trace_id(u)?,
            parent: pipe_span_id(u)?,
            parent_remote: u.arbitrary()?,
            flags: u.arbitrary()?,
        }),
        6 => Record::Log(wire::Log {
            time: pipe_time(u)?,
            severity: pipe_byte(u, 25)?,
            target: pipe_str(u)?,
            body: if u.arbitrary()? {
                Some(pipe_str(u)?)
            } else {
                None
            },
            context: if u.arbitrary()? {
                Some(wire::LogContext {
                    trace_id: pipe_trace_id(u)?,
                    span_id: pipe_span_id(u)?,
                    flags: u.arbitrary()?,
                })
            } else {
                None
            },
            attributes: pipe_attributes(u)?,
        }),
        7 => Record::Instrument(wire::Instrument {
            id: pipe_id(u)?,
            kind: pipe_byte(u, 4)?,
            name: if u.ratio(3, 4)? {
                u.choose(&["requests", "latency", "queue.depth", "a/b", "1bad", ""])?
            } else {
                pipe_str(u)?
            },
            description: pipe_str(u)?,
            unit: pipe_str(u)?,
            boundaries: if u.arbitrary()? {
                Some(list(u, 20, f64)?)
            } else {
                None
            },
        }),
        8 => match u.int_in_range(0..=1)? {
            0 => Record::Measure(wire::Measure {
                instrument: pipe_id(u)?,
                value: if u.arbitrary()? {
                    wire::Number::I64(u.arbitrary()?)
                } else {
                    wire::Number::F64(f64(u)?)
                },
                attributes: pipe_attributes(u)?,
            }),
            _ => Record::Share(wire::Share {
                id: pipe_id(u)?,
                attributes: pipe_attributes(u)?,
            }),
        },
        _ => Record::EventLog(wire::EventLog {
            event: pipe_event(u)?,
            trace_id: pipe_trace_id(u)?,
            flags: u.arbitrary()?,
            severity: pipe_byte(u, 25)?,
            target: pipe_str(u)?,
            body_is_name: u.arbitrary()?,
            log_attributes: pipe_attributes(u)?,
        }),
    })
}

/// A batch of records, sometimes corrupted: a byte changed, cut short, or
/// followed by stray bytes.
fn batch(u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for record in list(u, 8, pipe_record)? {
        wire::encode(&record, &mut out);
    }
    match u.int_in_range(0..=7)? {
        0 if !out.is_empty() => {
            let i = u.choose_index(out.len())?;
            out[i] ^= u.arbitrary::<u8>()? | 1;
        }
        1 => {
            let n = u.int_in_range(0..=out.len())?;
            out.truncate(n);
        }
        2 => {
            let n = u.int_in_range(0..=16)?;
            out.extend_from_slice(u.bytes(n)?);
        }
        _ => {}
    }
    Ok(out)
}

/// A recorder batch (16 words): arbitrary words, or slots of few ids (so
/// enters and exits match), with `high` slots and out-of-range values.
fn recorder_words(u: &mut Unstructured) -> Result<[u64; 16]> {
    let mut words = [0u64; 16];
    for w in &mut words {
        *w = if u.ratio(1, 8)? {
            u.arbitrary()?
        } else {
            let mut word = 0;
            for k in 0..3 {
                let kind: u64 = u.int_in_range(0..=3)?;
                let value: u64 = if u.ratio(1, 16)? {
                    u.int_in_range(0..=(1 << 19) - 1)?
                } else {
                    u.int_in_range(0..=7)?
                };
                word |= ((value << 2) | kind) << (21 * k);
            }
            word
        };
    }
    Ok(words)
}

/// Single guest calls by handle rep, for tests that act as a guest of one
/// store would (isolation tests): `tracer.start`, `set-attributes` with one
/// string attribute, `is-recording`, `span-context`, `end` and dropping a
/// handle.
pub mod calls {
    use super::*;

    /// `tracer.start(name)`; returns the handle's rep.
    pub fn start(ctx: &mut WasiObserveCtx, name: &str) -> u32 {
        tracer::Host::start(ctx, name.to_string(), None)
            .expect("start")
            .rep()
    }

    /// `span.set-attributes([key = value])` on the handle `rep`.
    pub fn set_attribute(ctx: &mut WasiObserveCtx, rep: u32, key: &str, value: &str) {
        let kv = KeyValue {
            key: key.to_string(),
            value: Value::String(value.to_string()),
        };
        ctx.set_attributes(Resource::new_borrow(rep), vec![kv])
            .expect("set-attributes");
    }

    /// `span.is-recording()` on the handle `rep`.
    pub fn is_recording(ctx: &mut WasiObserveCtx, rep: u32) -> bool {
        ctx.is_recording(Resource::new_borrow(rep))
            .expect("is-recording")
    }

    /// `span.span-context()` on the handle `rep`: (trace id, span id) in hex.
    pub fn span_context(ctx: &mut WasiObserveCtx, rep: u32) -> (String, String) {
        let cx = ctx
            .span_context(Resource::new_borrow(rep))
            .expect("span-context");
        (cx.trace_id, cx.span_id)
    }

    /// `span.end(none)` on the handle `rep`.
    pub fn end(ctx: &mut WasiObserveCtx, rep: u32) {
        HostSpan::end(ctx, Resource::new_borrow(rep), None).expect("end");
    }

    /// Drops the handle `rep` (its key may then be given to a new span).
    pub fn drop_handle(ctx: &mut WasiObserveCtx, rep: u32) {
        HostSpan::drop(ctx, Resource::new_own(rep)).expect("drop");
    }
}

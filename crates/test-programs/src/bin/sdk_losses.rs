//! How the SDK's batches cross when things go wrong; the first argument
//! says what to do:
//!
//! - `panic`: a span with an event and a log record, then a panic inside it:
//!   the panic hook sends the batch, so the host has all of it.
//! - `abort`: three root spans that end (each batch crosses as it ends),
//!   then a span left open with an event and a log record, then an abort
//!   (a trap the SDK cannot see): the open span's records are lost, the
//!   bound docs/reliability.md states, and the host exports its stand-in.
//! - `many N [abort]`: N child spans with a 100-byte attribute under one
//!   root, so batches cross because the buffer fills; with `abort`, the
//!   component aborts before the root ends, so only the batches that
//!   crossed because the buffer filled reach the host.
//! - `hostile`: raw pipe calls with malformed batches, ids the host never
//!   saw and a batch of records naming unknown spans and instruments, then
//!   a span through the SDK, which must still arrive.

use test_programs::wasi_observe::pipe::pipe;
use tracing::{info, info_span};

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    wasi_observe::init();
    match mode.as_str() {
        "panic" => {
            let span = info_span!("before_panic", step = 1);
            let _g = span.enter();
            info!(detail = "kept", "recorded before the panic");
            log::warn!("a log record before the panic");
            panic!("boom");
        }
        "abort" => {
            for i in 0..3 {
                info_span!("done", i).in_scope(|| info!("inside a span that ended"));
            }
            let span = info_span!("open_at_abort");
            let _g = span.enter();
            info!("lost with the abort");
            std::process::abort();
        }
        "many" => {
            let n: usize = std::env::args()
                .nth(2)
                .and_then(|a| a.parse().ok())
                .unwrap_or(2000);
            let pad = "x".repeat(100);
            let abort = std::env::args().nth(3).as_deref() == Some("abort");
            info_span!("root").in_scope(|| {
                for i in 0..n {
                    info_span!("child", i, pad = pad.as_str()).in_scope(|| {});
                }
                if abort {
                    std::process::abort();
                }
            });
        }
        "hostile" => {
            // Garbage, a truncated record, a huge length claim, an unknown
            // record kind.
            pipe::submit(&[0xff; 64]);
            pipe::submit(&[0, 1, 2]);
            pipe::submit(&[5, 0xff, 0xff, 0xff, 0xff, 0x0f]);
            pipe::submit(&[42]);
            // Closing a span never opened; opening one with zero ids.
            pipe::close(7, &[]);
            let zero = pipe::SpanRef {
                trace_id_high: 0,
                trace_id_low: 0,
                span_id: 0,
                trace_flags: 1,
            };
            pipe::open(zero, "zero", Some("not a trace state"));
            // Well-formed records naming a span and an instrument the host
            // never saw: an End (variant 1, the span id as a byte string of
            // length 8, time 0, status 0, empty description, no name, no
            // attributes) and a Measure (variant 7, instrument 9, I64 1, no
            // attributes).
            let mut batch = vec![1, 8];
            batch.extend_from_slice(&[9; 8]);
            batch.extend_from_slice(&[0, 0, 0, 0, 0]);
            batch.extend_from_slice(&[7, 9, 0, 2, 0]);
            pipe::submit(&batch);
            info_span!("after_hostile").in_scope(|| info!("still recorded"));
        }
        other => panic!("unknown mode {other:?}"),
    }
}

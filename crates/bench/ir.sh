#!/bin/bash
# Instructions per operation of one bench figure, counted by callgrind:
# stable when the machine is loaded, unlike nanoseconds.
#
#   crates/bench/ir.sh --guest MODE [N1 N2]   # raw, tracing, log, counter, ...
#   crates/bench/ir.sh --native MODE [N1 N2]  # span, tracing, log, log-kv, counter
#
# Runs the figure for N1 and N2 operations (default 10 000 and 30 000) and
# divides the difference by 1.1 x (N2 - N1) (each run does N / 10 warm-up
# operations), so start-up and compilation cancel out. Prints the main
# (guest) thread's count and that of all threads (the export threads
# included). The counting is the bench's own (`--count`, as
# `--json --instructions` counts); BIN overrides the binary.
set -euo pipefail
bin=${BIN:-${CARGO_TARGET_DIR:-target}/release/wasi-observe-bench}
exec "$bin" --count "$@"

#!/bin/bash
# Instructions per operation of one bench figure, counted by callgrind:
# stable when the machine is loaded, unlike nanoseconds.
#
#   crates/bench/ir.sh --guest MODE      # raw, tracing, log-raw, counter, ...
#   crates/bench/ir.sh --native MODE     # span, tracing, log, counter
#
# Runs the figure for N1 and N2 operations and divides the difference by
# 1.1 x (N2 - N1) (each run does N / 10 warm-up operations), so start-up and
# compilation cancel out. Prints the main (guest) thread's count and that of
# all threads (the export threads included). BIN overrides the binary.
set -euo pipefail
flag=$1 mode=$2 n1=${3:-10000} n2=${4:-30000}
bin=${BIN:-${CARGO_TARGET_DIR:-target}/release/wasi-observe-bench}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
count() {
  valgrind --tool=callgrind --separate-threads=yes \
    --callgrind-out-file="$dir/$1.%p" "$bin" "$flag" "$mode" "$1" >/dev/null 2>&1
  local main all
  main=$(grep -h '^summary' "$dir"/"$1".*-01 | awk '{print $2}')
  all=$(grep -h '^summary' "$dir"/"$1".*-* | awk '{s += $2} END {print s}')
  echo "$main $all"
}
# The bench caches the compiled component; code compiled outside valgrind
# does not load under it, so compile (and cache) under valgrind first.
valgrind --tool=none "$bin" "$flag" "$mode" 10 >/dev/null 2>&1 || true
read -r m1 a1 < <(count "$n1")
read -r m2 a2 < <(count "$n2")
awk -v m1="$m1" -v m2="$m2" -v a1="$a1" -v a2="$a2" -v n1="$n1" -v n2="$n2" -v what="$flag $mode" \
  'BEGIN { d = 1.1 * (n2 - n1); printf "%-18s %7.0f Ir/op main thread  %7.0f all threads\n", what, (m2 - m1) / d, (a2 - a1) / d }'

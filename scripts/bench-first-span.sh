#!/usr/bin/env bash
# What the first span and log record of a fresh instance cost, timed inside
# the test component (route /first-span of crates/test-programs/http-guest):
# N sequential requests to `wasi-observe serve`, each a fresh instance, and
# the mean of each step in µs. Telemetry goes to EXPORTER (default
# jsonl:/dev/null: made and encoded, then discarded).
#
#   scripts/bench-first-span.sh [N] [EXPORTER]
#
# BIN runs another build of wasi-observe, GUEST another build of the test
# component (to compare two builds, as bench-serve.sh does).
#
# See docs/serve.md ("The first span of an instance").
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
exporter=${2:-jsonl:/dev/null}
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build -q --release -p wasi-observe-cli
cargo build -q --release --target wasm32-wasip2 -p http-guest
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=18766
target=${CARGO_TARGET_DIR:-target}
WASI_OBSERVE_DB="$work/telemetry.db" "${BIN:-$target/release/wasi-observe}" serve --addr 127.0.0.1:$port \
  --exporter "$exporter" "${GUEST:-$target/wasm32-wasip2/release/http_guest.wasm}" 2>"$work/serve.log" &
for _ in $(seq 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$port/bare" && break
  sleep 0.1
done
for _ in $(seq "$n"); do echo "url = \"http://127.0.0.1:$port/first-span\""; done >"$work/urls"
curl -sf -K "$work/urls" >/dev/null # warm-up
curl -sf -K "$work/urls" -w '\n' | awk '
  { for (i = 1; i <= NF; i++) s[i] += $i; n++ }
  END {
    split("init() | first span: create | enter+exit | close | second callsite: create+close | third callsite, use 1 | use 2 | use 3 | log record 1 | log record 2", name, " [|] ")
    for (i = 1; i <= 10; i++) printf "%-34s %6.1f us\n", name[i], s[i] / n / 1000
    printf "(%d requests)\n", n
  }'

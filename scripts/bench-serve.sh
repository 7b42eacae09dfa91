#!/usr/bin/env bash
# Load benchmark of `wasi-observe serve`: requests/s and latency of a small
# traced component (one request = a SERVER span, a guest span, a log record
# and a duration measurement) with telemetry on (the default embedded store)
# and off (OTEL_SDK_DISABLED=true), alternating in one run.
#
#   scripts/bench-serve.sh [SECONDS_PER_ROUND] [ROUNDS] [CONNECTIONS]
#
# "On" exports to the embedded store unless ON_EXPORTER names another
# `--exporter` list (`jsonl:/dev/null`: everything made and encoded, then
# discarded; `none`: no exporter, so the guest's SDK records nothing either;
# `otlp` with OTEL_EXPORTER_OTLP_ENDPOINT).
# SERVE_ARGS adds flags to both modes (`--allocator on-demand`); BENCH_PATH
# picks the guest's route (default /hello; see crates/test-programs/http-guest
# for the routes that break the cost down).
# Needs wrk (Debian: apt-get install wrk). Prints one line per round and the
# median of each mode. See docs/serve.md.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-3}
conns=${3:-32}
on_exporter=${ON_EXPORTER:-store}
path=${BENCH_PATH:-/hello}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 2; }

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build -q --release -p wasi-observe-cli
cargo build -q --release --target wasm32-wasip2 -p http-guest
bin=target/release/wasi-observe
guest=target/wasm32-wasip2/release/http_guest.wasm
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

port=18765
# One round: start serve in MODE, warm up, load it for $secs seconds, stop.
round() {
  local mode=$1
  local env=(env WASI_OBSERVE_DB="$work/telemetry.db")
  [ "$mode" = off ] && env+=(OTEL_SDK_DISABLED=true)
  # shellcheck disable=SC2086
  "${env[@]}" "$bin" serve --addr 127.0.0.1:$port --exporter "$on_exporter" ${SERVE_ARGS:-} "$guest" 2>"$work/serve.log" &
  local pid=$!
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port$path" && break
    sleep 0.1
  done
  wrk -t2 -c"$conns" -d2s "http://127.0.0.1:$port$path" >/dev/null
  local out
  out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$port$path")
  kill -INT $pid
  wait $pid 2>/dev/null || true
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
  printf '%-4s %10s req/s   p50 %8s   p99 %8s   %s\n' "$mode" "$rps" "$p50" "$p99" "$errors"
  echo "$mode $rps" >>"$work/results"
}

echo "wasi-observe serve ${SERVE_ARGS:+$SERVE_ARGS }$path (on: --exporter $on_exporter), $conns connections, ${secs}s per round, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
for _ in $(seq "$rounds"); do
  round off
  round on
done
median() { grep "^$1 " "$work/results" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
off=$(median off)
on=$(median on)
awk -v on="$on" -v off="$off" 'BEGIN { printf "median: on %.0f req/s, off %.0f req/s: on keeps %.1f%% of off\n", on, off, 100 * on / off }'

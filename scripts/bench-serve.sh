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
# `otlp`: OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT, or, when that is unset,
# to an `otlp-sink` (crates/otlp-receiver) the script starts for each round
# on 127.0.0.1:14318).
# With `jsonl:PATH` or `otlp`, each round also measures the native peer
# (crates/native-peer: a hyper server doing what /hello does, traced with
# tracing-opentelemetry and the OpenTelemetry SDK) on and off with the same
# exporter: rows `peer-on`/`peer-off`. PEER=0 leaves it out.
# BIN runs another build of wasi-observe, GUEST another build of the test
# component (to compare two builds side by side).
# SERVE_ARGS adds flags to both modes of serve (`--allocator on-demand`);
# BENCH_PATH picks the guest's route (default /hello; see
# crates/test-programs/http-guest for the routes that break the cost down;
# the peer has only /hello).
# Needs wrk (Debian: apt-get install wrk). Prints one line per round and the
# median of each mode; "delivered" is the share of the round's spans that
# reached the exporter, where it can be counted (the sink's counts, the
# peer's own for jsonl); "cpu" is the server's CPU time (all threads, user
# and system) per request, from the start of the measurement until it has
# exported everything and exited: unlike requests/s, it leaves out wrk,
# which shares the cores, so it shows what telemetry costs more steadily.
# See docs/serve.md.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rounds=${2:-3}
conns=${3:-32}
on_exporter=${ON_EXPORTER:-store}
path=${BENCH_PATH:-/hello}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 2; }

peer=${PEER:-1}
case "$on_exporter" in jsonl:* | otlp) ;; *) peer=0 ;; esac
if [ "$peer" = 1 ] && [ "$path" != /hello ]; then
  echo "the native peer serves only /hello: leaving it out" >&2
  peer=0
fi
# Our own receiver for `otlp` when no endpoint is given; both servers use it.
sink_port=
if [ "$on_exporter" = otlp ] && [ -z "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ]; then
  sink_port=14318
  export OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$sink_port
  export OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf
fi

rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build -q --release -p wasi-observe-cli
cargo build -q --release --target wasm32-wasip2 -p http-guest
# Separate invocations: built together, their features would be unified and
# the CLI's dependencies rebuilt.
[ "$peer" = 1 ] && cargo build -q --release -p native-peer
[ -n "$sink_port" ] && cargo build -q --release -p otlp-receiver --bin otlp-sink
target=${CARGO_TARGET_DIR:-target}
bin=${BIN:-$target/release/wasi-observe}
peer_bin=$target/release/native-peer
sink_bin=$target/release/otlp-sink
guest=${GUEST:-$target/wasm32-wasip2/release/http_guest.wasm}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

port=18765
# The server's CPU time so far (user and system, all threads), in ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# One round: start SERVER (serve or peer) in MODE (on or off), warm up, load
# it for $secs seconds, stop it (and the round's sink).
round() {
  local server=$1 mode=$2
  local label=$mode
  [ "$server" = peer ] && label=peer-$mode
  local env=(env WASI_OBSERVE_DB="$work/telemetry.db")
  [ "$mode" = off ] && env+=(OTEL_SDK_DISABLED=true)
  local sink_pid=
  if [ "$mode" = on ] && [ -n "$sink_port" ]; then
    "$sink_bin" "$sink_port" >"$work/sink.out" 2>/dev/null &
    sink_pid=$!
    for _ in $(seq 100); do
      curl -s -o /dev/null "http://127.0.0.1:$sink_port/" && break
      sleep 0.1
    done
  fi
  # The server runs in a subshell that records its CPU time when it exits
  # (bash's `times`: the subshell's only child is the server), so that
  # what it exports at shutdown counts too.
  rm -f "$work/pid" "$work/times"
  (
    if [ "$server" = serve ]; then
      # shellcheck disable=SC2086
      "${env[@]}" "$bin" serve --addr 127.0.0.1:$port --exporter "$on_exporter" ${SERVE_ARGS:-} "$guest" 2>"$work/server.log" &
    else
      "${env[@]}" "$peer_bin" --addr 127.0.0.1:$port --exporter "$on_exporter" 2>"$work/server.log" &
    fi
    echo $! >"$work/pid"
    wait $! 2>/dev/null || true
    times >"$work/times"
  ) &
  local sub=$!
  while [ ! -s "$work/pid" ]; do sleep 0.01; done
  local pid
  pid=$(cat "$work/pid")
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$port$path" && break
    sleep 0.1
  done
  local warm out cpu0
  warm=$(wrk -t2 -c"$conns" -d2s "http://127.0.0.1:$port$path")
  cpu0=$(cpu_ticks "$pid")
  out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$port$path")
  kill -INT "$pid"
  wait "$sub" 2>/dev/null || true
  local rps p50 p99 errors requests spans= cpu
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  # The server's CPU per request measured: from the start of the
  # measurement to its exit, all threads, user and system.
  cpu=$(awk -v a="$cpu0" -v t="$(getconf CLK_TCK)" -v n="$(awk '/requests in/ {print $1}' <<<"$out")" '
    NR == 2 { split($1, u, "m"); split($2, s, "m"); total = u[1] * 60 + u[2] + s[1] * 60 + s[2] }
    END { printf "%.1f", (total - a / t) / n * 1e6 }' "$work/times")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
  # Requests served this round: the probe, the warm-up and the measurement;
  # each makes two spans.
  requests=$(awk '/requests in/ {n += $1} END {print n + 1}' <<<"$warm"$'\n'"$out")
  if [ -n "$sink_pid" ]; then
    kill -INT "$sink_pid"
    wait "$sink_pid" 2>/dev/null || true
    spans=$(awk '{print $1}' "$work/sink.out")
  elif [ "$server" = peer ] && [ "$mode" = on ]; then
    spans=$(awk '/exported/ {print $3}' "$work/server.log")
  fi
  local delivered=
  [ -n "$spans" ] && delivered=$(awk -v s="$spans" -v r="$requests" 'BEGIN { printf "delivered %.1f%%", 100 * s / (2 * r) }')
  printf '%-8s %10s req/s   p50 %8s   p99 %8s   cpu %6s us/req   %s\n' "$label" "$rps" "$p50" "$p99" "$cpu" "$delivered${errors:+  $errors}"
  echo "$label $rps $cpu" >>"$work/results"
}

echo "wasi-observe serve ${SERVE_ARGS:+$SERVE_ARGS }$path (on: --exporter $on_exporter)$([ "$peer" = 1 ] && echo ", and the native peer"), $conns connections, ${secs}s per round, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)"
for _ in $(seq "$rounds"); do
  round serve off
  round serve on
  if [ "$peer" = 1 ]; then
    round peer off
    round peer on
  fi
done
# The median of column $2 (2: req/s, 3: CPU us per request) of mode $1.
median() { grep "^$1 " "$work/results" | awk -v c="$2" '{print $c}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
summary() {
  awk -v who="$1" -v on="$(median "$2" 2)" -v off="$(median "$3" 2)" \
    -v con="$(median "$2" 3)" -v coff="$(median "$3" 3)" \
    'BEGIN { printf "median%s: on %.0f req/s, off %.0f req/s: on keeps %.1f%% of off; server CPU per request on %.1f us, off %.1f: telemetry %.1f us\n", who, on, off, 100 * on / off, con, coff, con - coff }'
}
summary "" on off
[ "$peer" = 1 ] && summary " (peer)" peer-on peer-off
exit 0

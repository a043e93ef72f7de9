#!/usr/bin/env bash
# Records Micronode (or the bare hyper baseline) under a wrk load with `perf record -g` and
# renders an SVG flamegraph with inferno. Server pinned to core SERVER_CPU (one worker), wrk
# to CLIENT_CPU; the load runs DUR and stops by itself.
#   perf/flamegraph.sh                      # /healthz → perf/out/healthz.svg
#   TARGET=/readyz perf/flamegraph.sh       # any path of the running node
#   WRK_LUA=perf/enc.lua TARGET=/v1/ping perf/flamegraph.sh
#   BARE=1 perf/flamegraph.sh               # examples/bare_hyper.rs, for comparison
# Knobs: TARGET (/healthz), DUR (8s; perf records the middle SAMPLE_SECS=4), FREQ (2999 Hz),
# CONNS (64), NAME (output name), BARE=1, WRK_LUA (a wrk script), and any MICRONODE_* variable.
# Installs perf (linux-perf), wrk and inferno when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib_bench.sh

TARGET="${TARGET:-/healthz}"
DUR="${DUR:-8s}"
SAMPLE_SECS="${SAMPLE_SECS:-4}"
FREQ="${FREQ:-2999}"
PORT="${PORT:-5397}"
name="${NAME:-$( [ "${BARE:-0}" = 1 ] && echo bare || echo "$TARGET" | tr -c 'a-zA-Z0-9\n' '_' | sed 's/^_//')}"
out=perf/out
mkdir -p "$out"

bench_init
trap bench_cleanup EXIT
bench_prereqs
if ! command -v perf >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
fi
command -v inferno-flamegraph >/dev/null || cargo install inferno --locked --quiet
# Kernel frames need this; harmless if it cannot be changed (containers).
sysctl -qw kernel.perf_event_paranoid=-1 2>/dev/null || true

cargo build --release --quiet --bin micronode --example bare_hyper
if [ "${BARE:-0}" = 1 ]; then
  start_bare "$PORT"
  pid=$BARE_PID
  url="http://127.0.0.1:$PORT/"
else
  start_node "$PORT" MICRONODE_STORAGE_ENGINE="${MICRONODE_STORAGE_ENGINE:-mem}"
  pid=$NODE_PID
  url="http://127.0.0.1:$PORT$TARGET"
fi

wrk_args=()
[ -n "${WRK_LUA:-}" ] && wrk_args+=(-s "$WRK_LUA")
taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$DUR" "${wrk_args[@]}" "$url" >"$out/$name.wrk.txt" &
load=$!
sleep 1
perf record -F "$FREQ" -g --call-graph dwarf,16384 -p "$pid" -o "$out/$name.perf.data" -- sleep "$SAMPLE_SECS" 2>"$out/$name.perf.log"
wait "$load"
perf script -i "$out/$name.perf.data" 2>/dev/null | inferno-collapse-perf >"$out/$name.folded"
inferno-flamegraph --title "micronode $name ($(awk '/Requests\/sec/{print $2}' "$out/$name.wrk.txt") req/s)" \
  <"$out/$name.folded" >"$out/$name.svg"
# The top frames by self time, for a quick look without a browser.
perf report -i "$out/$name.perf.data" --no-children --stdio -g none --sort dso,sym --percent-limit 1 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | head -25 >"$out/$name.top.txt"
cat "$out/$name.top.txt"
echo "flamegraph: $out/$name.svg  (folded stacks: $out/$name.folded, wrk: $out/$name.wrk.txt)"

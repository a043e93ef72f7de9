#!/usr/bin/env bash
# Quick pinned comparison: bare hyper vs Micronode /healthz, /readyz, hot rejects (415, 429)
# and a KV GET of 128 B. Server pinned to core 0 with one worker, wrk to core 1.
# Prints RPS, wrk p50/p99 and server CPU time per request (utime+stime from /proc ÷ requests).
# Knobs: DUR (default 5s), CONNS (default 64), ROUNDS (default 3). Loopback only; every run is
# bounded by DUR. Needs wrk, bc, taskset (installs wrk when missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
DUR="${DUR:-5s}"
CONNS="${CONNS:-64}"
ROUNDS="${ROUNDS:-3}"
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk bc >/dev/null; }
cargo build --release --quiet --bin micronode --example bare_hyper

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
run() { # name pid url [wrk args…]
  local name=$1 pid=$2 url=$3
  shift 3
  local c0 c1 out reqs
  c0=$(cpu_ticks "$pid")
  out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"$DUR" --latency "$@" "$url")
  c1=$(cpu_ticks "$pid")
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  printf '%-10s rps=%-10s p50=%-9s p99=%-9s cpu_us_per_req=%.2f\n' "$name" \
    "$(echo "$out" | awk '/Requests\/sec/{print $2}')" \
    "$(echo "$out" | awk '$1=="50%"{print $2}')" \
    "$(echo "$out" | awk '$1=="99%"{print $2}')" \
    "$(echo "($c1-$c0)*1000000/$(getconf CLK_TCK)/$reqs" | bc -l)"
}

tmp=$(mktemp -d)
MICRONODE_WORKERS=1 taskset -c 0 ./target/release/examples/bare_hyper 127.0.0.1:5399 2>/dev/null &
bare=$!
MICRONODE_WORKERS=1 MICRONODE_DEV_ROUTES=1 MICRONODE_STORAGE_ENGINE=mem RUST_LOG=warn \
  MICRONODE_BIND_ADDR=127.0.0.1:5398 taskset -c 0 ./target/release/micronode 2>/dev/null &
node=$!
trap 'kill $bare $node 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 1 100); do curl -fs http://127.0.0.1:5398/healthz >/dev/null && break; sleep 0.05; done
echo 'wrk.headers["Content-Encoding"] = "gzip"' >"$tmp/enc.lua"
head -c 128 /dev/zero | tr '\0' a | curl -fs -X PUT --data-binary @- http://127.0.0.1:5398/v1/kv/b/k128 >/dev/null
echo "idle RSS kB: $(awk '/VmRSS/{print $2}' /proc/$node/status)"
for _ in $(seq 1 "$ROUNDS"); do
  run bare "$bare" http://127.0.0.1:5399/healthz
  run healthz "$node" http://127.0.0.1:5398/healthz
  run readyz "$node" http://127.0.0.1:5398/readyz
  run rej415 "$node" http://127.0.0.1:5398/v1/ping -s "$tmp/enc.lua"
  run rej429 "$node" http://127.0.0.1:5398/dev/rl
  run kvget128 "$node" http://127.0.0.1:5398/v1/kv/b/k128
done
echo "loaded RSS kB: $(awk '/VmRSS/{print $2}' /proc/$node/status)"

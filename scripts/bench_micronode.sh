#!/usr/bin/env bash
# The wrk harness: every fast path and hot reject of docs/PERFORMANCE.md against the release
# binary (${CARGO_TARGET_DIR:-target}/release), the server pinned to core SERVER_CPU with one
# worker, wrk to core CLIENT_CPU. Per row: client RPS,
# wrk p50/p99, server CPU µs per request (utime+stime from /proc ÷ requests), server-side mean
# service time (Prometheus histogram sum/count delta) and p99 (from /dev/latency). Medians of
# ROUNDS runs. Rows:
#   healthz, readyz                 the fast path and the guarded probe
#   rej415, rej413, rej429          hot rejects: Content-Encoding, oversized Content-Length
#                                   (answered with Connection: close, so wrk reconnects), /dev/rl
#   kvget128                        KV GET of a 128 B value (sled)
#   kvput128_sync, kvput128_sync_c1 KV PUT 128 B, durability=sync, CONNS and 1 connection
#   kvput128_periodic               KV PUT 128 B, durability=periodic
#   bare                            examples/bare_hyper.rs on the same pinning, for the ratios
# Knobs: THREADS (1), CONNS (64), DUR (5s), ROUNDS (3), ROWS (space-separated subset),
# LATENCY=0 to run without MICRONODE_DEV_METRICS (then no p99 column), AUDIT=1 to run the server
# with an audit trail (MICRONODE_AUDIT_PATH in the bench's temp dir, beside the data).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib_bench.sh
ROUNDS="${ROUNDS:-3}"
ROWS="${ROWS:-bare healthz readyz rej415 rej413 rej429 kvget128 kvput128_sync kvput128_sync_c1 kvput128_periodic}"
PORT="${PORT:-5398}"
LATENCY="${LATENCY:-1}"
base="http://127.0.0.1:$PORT"

bench_init
trap bench_cleanup EXIT
bench_prereqs
cargo build --release --quiet --bin micronode --example bare_hyper
BARE_PORT="${BARE_PORT:-5399}"
if wanted_early() { case " $ROWS " in *" bare "*) return 0 ;; *) return 1 ;; esac; }; wanted_early; then
  start_bare "$BARE_PORT"
fi

cat >"$BENCH_TMP/enc.lua" <<'LUA'
wrk.headers["Content-Encoding"] = "gzip"
LUA
cat >"$BENCH_TMP/big.lua" <<'LUA'
wrk.method = "PUT"
wrk.headers["Content-Length"] = "2000000"
LUA
cat >"$BENCH_TMP/put.lua" <<'LUA'
local body = string.rep("v", 128)
local n = 0
request = function()
  n = n + 1
  return wrk.format("PUT", "/v1/kv/bench/k" .. n, nil, body)
end
LUA

node_env=(MICRONODE_DEV_ROUTES=1)
[ "$LATENCY" = "1" ] && node_env+=(MICRONODE_DEV_METRICS=1)
[ "${AUDIT:-0}" = "1" ] && node_env+=(MICRONODE_AUDIT_PATH="$BENCH_TMP/audit.log")
current=""
# use_server MODE — (re)starts the server when the durability mode changes.
use_server() {
  [ "$current" = "$1" ] && return 0
  [ -n "$current" ] && stop_pid "$NODE_PID"
  rm -rf "$BENCH_TMP/data-$PORT"
  start_node "$PORT" "${node_env[@]}" MICRONODE_DURABILITY="$1"
  head -c 128 /dev/zero | tr '\0' v | curl -fs -X PUT --data-binary @- "$base/v1/kv/bench/k128" >/dev/null
  current=$1
  echo "# server ($1): idle RSS $(awk '/VmRSS/{print $2}' "/proc/$NODE_PID/status") KiB"
}

# prom METHOD ROUTE — "sum count" of the latency histogram series.
prom() {
  curl -fs "$base/metrics" | awk -v sel="method=\"$1\",route=\"$2\"" '
    index($0, "micronode_request_latency_seconds_sum{" sel "}") == 1 { s = $2 }
    index($0, "micronode_request_latency_seconds_count{" sel "}") == 1 { c = $2 }
    END { printf "%s %s\n", s + 0, c + 0 }'
}

# dev_p99 ROUTE — p99 µs from /dev/latency ("-" when off).
dev_p99() {
  if [ "$LATENCY" = "1" ]; then
    curl -fs "$base/dev/latency" | jq -r --arg r "$1" '.routes[] | select(.route == $r) | .p99'
  else
    echo "-"
  fi
}

wanted() { case " $ROWS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# measure NAME METHOD ROUTE PATH [wrk args…] — one round of one row.
measure() {
  local name=$1 method=$2 route=$3 path=$4
  shift 4
  wanted "$name" || return 0
  local s0 c0 s1 c1 rps p50 p99 cpu mean lp99
  [ "$LATENCY" = "1" ] && curl -fs -X POST "$base/dev/latency/reset" >/dev/null
  read -r s0 c0 < <(prom "$method" "$route")
  read -r rps p50 p99 cpu _ < <(wrk_run "$NODE_PID" "$base$path" "$@")
  read -r s1 c1 < <(prom "$method" "$route")
  mean=$(awk -v a="$s0" -v b="$s1" -v x="$c0" -v y="$c1" 'BEGIN { if (y > x) printf "%.2f", (b - a) / (y - x) * 1e6; else print 0 }')
  lp99=$(dev_p99 "$route")
  echo "$rps $p50 $p99 $cpu $mean $lp99" >>"$BENCH_TMP/row-$name"
}

# report NAME — the row's medians.
report() {
  wanted "$1" || return 0
  local f="$BENCH_TMP/row-$1"
  col() { awk -v c="$1" '{print $c}' "$f"; }
  printf '%-18s %-9s %-16s %-8s %-8s %-7s %-11s %-8s\n' "$1" "$(col 1 | median)" "($(col 1 | minmax))" \
    "$(col 2 | median)" "$(col 3 | median)" "$(col 4 | median)" "$(col 5 | median)" "$(col 6 | median)"
}

KV='/v1/kv/{bucket}/{*key}'
echo "# wrk -t$THREADS -c$CONNS -d$DUR, server on core $SERVER_CPU (1 worker), wrk on core $CLIENT_CPU; medians of $ROUNDS interleaved rounds"
printf '%-18s %-9s %-16s %-8s %-8s %-7s %-11s %-8s\n' row rps "(min–max)" p50_us p99_us cpu_us svc_mean_us svc_p99_us

sync_rows="bare healthz readyz rej415 rej413 rej429 kvget128 kvput128_sync kvput128_sync_c1"
if [ -n "$(for r in $sync_rows; do wanted "$r" && echo y; done)" ]; then
  use_server sync
  for _ in $(seq 1 "$ROUNDS"); do
    if wanted bare; then
      read -r rps p50 p99 cpu _ < <(wrk_run "$BARE_PID" "http://127.0.0.1:$BARE_PORT/")
      echo "$rps $p50 $p99 $cpu - -" >>"$BENCH_TMP/row-bare"
    fi
    measure healthz GET /healthz /healthz
    measure readyz GET /readyz /readyz
    measure rej415 GET /v1/ping /v1/ping -s "$BENCH_TMP/enc.lua"
    measure rej413 PUT "$KV" /v1/kv/bench/big -s "$BENCH_TMP/big.lua"
    measure rej429 GET /dev/rl /dev/rl
    measure kvget128 GET "$KV" /v1/kv/bench/k128
    measure kvput128_sync PUT "$KV" /v1/kv/bench/x -s "$BENCH_TMP/put.lua"
    CONNS=1 measure kvput128_sync_c1 PUT "$KV" /v1/kv/bench/x -s "$BENCH_TMP/put.lua"
  done
  for r in $sync_rows; do report "$r"; done
  curl -fs "$base/metrics" | awk '
    /^micronode_storage_commit_batch_size_sum/ { bs = $2 } /^micronode_storage_commit_batch_size_count/ { bc = $2 }
    /^micronode_storage_flush_seconds_sum/ { fs = $2 } /^micronode_storage_flush_seconds_count/ { fc = $2 }
    END { if (bc > 0) printf "# group commit: %d flushes, %.1f writes per flush, %.3f ms per flush + fsync\n", bc, bs / bc, fs / fc * 1000 }'
  echo "# loaded RSS $(awk '/VmRSS/{print $2}' "/proc/$NODE_PID/status") KiB, peak $(awk '/VmHWM/{print $2}' "/proc/$NODE_PID/status") KiB"
fi
if wanted kvput128_periodic; then
  use_server periodic
  for _ in $(seq 1 "$ROUNDS"); do
    measure kvput128_periodic PUT "$KV" /v1/kv/bench/x -s "$BENCH_TMP/put.lua"
  done
  report kvput128_periodic
fi

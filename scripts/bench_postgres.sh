#!/usr/bin/env bash
# The postgres engine against sled (`durability = "sync"`) on the same machine: KV PUT 128 B
# (64 connections, then 1), KV GET 128 B, one node each, server on core SERVER_CPU with one
# worker, wrk on CLIENT_CPU. PostgreSQL (a throwaway cluster from scripts/pg_cluster.sh, fsync
# on) is not pinned: it shares the machine, as a database on the same host would. Then the
# same PUT spread over two postgres nodes (half the connections each): writes are serialized on
# the revision counter, so two nodes should not write faster than one.
# Knobs: DUR (5s), CONNS (64), THREADS (1), SLED_PORT (5381), PG_PORT (5382), PG2_PORT (5383).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib_bench.sh
SLED_PORT="${SLED_PORT:-5381}"
PG_PORT="${PG_PORT:-5382}"
PG2_PORT="${PG2_PORT:-5383}"

bench_init
pg_dir=$(mktemp -d)
cleanup() {
  bench_cleanup
  scripts/pg_cluster.sh stop "$pg_dir" >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap cleanup EXIT
bench_prereqs
cargo build --release --quiet --bin micronode
url=$(scripts/pg_cluster.sh start "$pg_dir" | sed -n 's/^MICRONODE_TEST_PG_URL=//p')
: "${url:?pg_cluster.sh printed no URL}"

start_node "$SLED_PORT" MICRONODE_STORAGE_ENGINE=sled MICRONODE_DURABILITY=sync
sled_pid=$NODE_PID
start_node "$PG_PORT" MICRONODE_STORAGE_ENGINE=postgres MICRONODE_PG_URL="$url" \
  MICRONODE_PG_SCHEMA=bench
pg_pid=$NODE_PID

cat >"$BENCH_TMP/put.lua" <<'LUA'
local body = string.rep("v", 128)
local n = 0
request = function()
  n = n + 1
  return wrk.format("PUT", "/v1/kv/bench/k" .. n, nil, body)
end
LUA
value=$(head -c 128 /dev/zero | tr '\0' 'a')
for port in "$SLED_PORT" "$PG_PORT"; do
  curl -sf -o /dev/null -X PUT --data-binary "$value" "http://127.0.0.1:$port/v1/kv/bench/get128"
done

row() {
  local name=$1 pid=$2 port=$3 path=$4
  shift 4
  read -r rps p50 p99 cpu _ < <(wrk_run "$pid" "http://127.0.0.1:$port$path" "$@")
  printf '%-22s %-10s %-8s %-8s %s\n' "$name" "$rps" "$p50" "$p99" "$cpu"
}

echo "row                    rps        p50_us   p99_us   server_cpu_us/req"
for engine in sled postgres; do
  if [ "$engine" = sled ]; then pid=$sled_pid port=$SLED_PORT; else pid=$pg_pid port=$PG_PORT; fi
  row "$engine put128 c$CONNS" "$pid" "$port" /v1/kv/bench/x -s "$BENCH_TMP/put.lua"
  CONNS=1 row "$engine put128 c1" "$pid" "$port" /v1/kv/bench/x -s "$BENCH_TMP/put.lua"
  row "$engine get128 c$CONNS" "$pid" "$port" /v1/kv/bench/get128
done

# Two postgres nodes over one schema, half the connections each, at the same time.
start_node "$PG2_PORT" MICRONODE_STORAGE_ENGINE=postgres MICRONODE_PG_URL="$url" \
  MICRONODE_PG_SCHEMA=bench
half=$((CONNS / 2))
wrk_pids=()
for port in "$PG_PORT" "$PG2_PORT"; do
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$half" -d"$DUR" -s "$BENCH_TMP/put.lua" \
    "http://127.0.0.1:$port/v1/kv/bench/x" >"$BENCH_TMP/two-$port.txt" &
  wrk_pids+=($!)
done
for p in "${wrk_pids[@]}"; do wait "$p"; done
total=0
for port in "$PG_PORT" "$PG2_PORT"; do
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$BENCH_TMP/two-$port.txt")
  total=$((total + ${rps:-0}))
done
printf '%-22s %-10s\n' "postgres x2 put128" "$total"

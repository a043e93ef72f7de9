#!/usr/bin/env bash
# KV GET 128 B with a token against the same GET with auth off, in one run on the same pinning
# (server on core SERVER_CPU with one worker, wrk on CLIENT_CPU), rounds interleaved. The token
# carries three caveats (bucket, prefix, ops), so each request pays the whole check: parse,
# HMAC chain, time window, revocation lookup, caveats. Prints per-round numbers, medians
# (min–max) and the ratios (target: CPU per request with a token ≤ 1.10× without).
# Knobs: ROUNDS (5), DUR (5s), CONNS (64), THREADS (1), OFF_PORT (5396), ON_PORT (5397).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib_bench.sh
ROUNDS="${ROUNDS:-5}"
OFF_PORT="${OFF_PORT:-5396}"
ON_PORT="${ON_PORT:-5397}"

bench_init
trap bench_cleanup EXIT
bench_prereqs
cargo build --release --quiet --bin micronode
bin="$(target_dir)/release/micronode"
"$bin" auth init --keys "$BENCH_TMP/keys.toml" >/dev/null
token=$("$bin" auth mint --keys "$BENCH_TMP/keys.toml" --tenant bench --bucket b --prefix k \
  --ops get,put)
start_node "$OFF_PORT" MICRONODE_STORAGE_ENGINE=mem
off_pid=$NODE_PID
start_node "$ON_PORT" MICRONODE_STORAGE_ENGINE=mem MICRONODE_AUTH=on \
  MICRONODE_AUTH_KEYS_FILE="$BENCH_TMP/keys.toml"
on_pid=$NODE_PID
value=$(head -c 128 /dev/zero | tr '\0' 'a')
curl -sf -o /dev/null -X PUT --data-binary "$value" "http://127.0.0.1:$OFF_PORT/v1/kv/b/k128"
curl -sf -o /dev/null -X PUT --data-binary "$value" -H "authorization: Bearer $token" \
  "http://127.0.0.1:$ON_PORT/v1/kv/b/k128"
off_url="http://127.0.0.1:$OFF_PORT/v1/kv/b/k128"
on_url="http://127.0.0.1:$ON_PORT/v1/kv/b/k128"
hdr="authorization: Bearer $token"

DUR=1s wrk_run "$off_pid" "$off_url" >/dev/null
DUR=1s wrk_run "$on_pid" "$on_url" -H "$hdr" >/dev/null

echo "round  auth  rps        p50_us  p99_us  cpu_us/req"
for r in $(seq 1 "$ROUNDS"); do
  read -r rps p50 p99 cpu _ < <(wrk_run "$off_pid" "$off_url")
  printf '%-6s %-5s %-10s %-7s %-7s %s\n' "$r" off "$rps" "$p50" "$p99" "$cpu"
  echo "$rps $cpu" >>"$BENCH_TMP/off"
  read -r rps p50 p99 cpu _ < <(wrk_run "$on_pid" "$on_url" -H "$hdr")
  printf '%-6s %-5s %-10s %-7s %-7s %s\n' "$r" on "$rps" "$p50" "$p99" "$cpu"
  echo "$rps $cpu" >>"$BENCH_TMP/on"
done
col() { awk -v c="$2" '{print $c}' "$BENCH_TMP/$1"; }
off_rps=$(col off 1 | median); on_rps=$(col on 1 | median)
off_cpu=$(col off 2 | median); on_cpu=$(col on 2 | median)
echo
echo "KV GET 128 B, HTTP/1.1, wrk -t$THREADS -c$CONNS -d$DUR, medians of $ROUNDS (min–max):"
printf '  auth off  rps %s (%s)  cpu_us/req %s (%s)\n' "$off_rps" "$(col off 1 | minmax)" "$off_cpu" "$(col off 2 | minmax)"
printf '  token     rps %s (%s)  cpu_us/req %s (%s)\n' "$on_rps" "$(col on 1 | minmax)" "$on_cpu" "$(col on 2 | minmax)"
awk -v a="$on_rps" -v b="$off_rps" -v c="$on_cpu" -v d="$off_cpu" \
  'BEGIN {printf "  ratios    rps %.3f  cpu %.3f (target <= 1.10)\n", a / b, c / d}'

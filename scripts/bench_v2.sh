#!/usr/bin/env bash
# KV v2 benches (docs/PERFORMANCE.md, "KV v2"): the costs of the v2 features against the release
# binary, server pinned to core SERVER_CPU with one worker, load on core CLIENT_CPU. Rows:
#   mix    KV GET/PUT 90/10 over 1,000 keys of 128 B, wrk -c CONNS, a `sync` and a `periodic`
#          server side by side, alternated round by round: what visibility = durability costs reads
#   txn    4-put transaction vs single PUT 128 B (both sync, CONNS connections), alternated
#   watch  WATCHERS (1,000) SSE watchers, WRITES (200) PUTs INTERVAL_MS (10) apart
#          (examples/watch_fanout.rs): per-delivery and per-write-to-all latency; the server is
#          `sync` unless WATCH_DURABILITY=periodic (then the fsync is out of the path)
#   idle   RSS before / after IDLE_WATCHERS (10,000) idle watch streams, a fresh server per round
#   ttl    TTL_KEYS (100,000) keys whose expiries are spread over TTL_SPREAD (10) seconds, loaded
#          with 32-put transactions; server CPU over the window in which they are swept
#   snap   SNAP_KEYS (1,000,000) keys of 100 B loaded with 32-put transactions (periodic server),
#          `micronode snapshot save` (MB/s) and `snapshot restore` into an empty dir (seconds)
# Every wrk run is bounded by DUR (or LOAD_DUR for loaders), every wait by a count of polls.
# Knobs: ROUNDS (3), DUR (5s), CONNS (64), ROWS (subset of "mix txn watch idle ttl snap"),
#        WATCHERS, WRITES, INTERVAL_MS, IDLE_WATCHERS, TTL_KEYS, TTL_SPREAD, SNAP_KEYS, LOAD_DUR (120s).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib_bench.sh
ROUNDS="${ROUNDS:-3}"
ROWS="${ROWS:-mix txn watch idle ttl snap}"
WATCHERS="${WATCHERS:-1000}"
WRITES="${WRITES:-200}"
INTERVAL_MS="${INTERVAL_MS:-10}"
IDLE_WATCHERS="${IDLE_WATCHERS:-10000}"
TTL_KEYS="${TTL_KEYS:-100000}"
TTL_SPREAD="${TTL_SPREAD:-10}"
SNAP_KEYS="${SNAP_KEYS:-1000000}"
LOAD_DUR="${LOAD_DUR:-120s}"
WATCH_DURABILITY="${WATCH_DURABILITY:-sync}"
PORT0="${PORT0:-5420}"

bench_init
trap bench_cleanup EXIT
bench_prereqs
[ "${SKIP_BUILD:-0}" = "1" ] || cargo build --release --quiet --bin micronode --example watch_fanout
TCK=$(getconf CLK_TCK)
KV='/v1/kv/{bucket}/{*key}'
wanted() { case " $ROWS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
note() { echo "# $*"; echo "$*" >>"$BENCH_TMP/notes"; }
now() { date +%s.%N; }
rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
# metric BASE NAME_AND_LABELS — the value of the series that starts with it (0 when absent).
metric() { curl -fs "$1/metrics" | awk -v p="$2" 'index($0, p " ") == 1 { v = $2 } END { printf "%.6f\n", v + 0 }'; }
gt0() { awk -v v="$1" 'BEGIN { exit !(v > 0) }'; }
lat_sum() { metric "$1" "micronode_request_latency_seconds_sum{method=\"$2\",route=\"$3\"}"; }
lat_cnt() { metric "$1" "micronode_request_latency_seconds_count{method=\"$2\",route=\"$3\"}"; }
VAL128=$(head -c 128 /dev/zero | tr '\0' v)
B64_128=$(printf %s "$VAL128" | base64 -w0)
B64_100=$(head -c 100 /dev/zero | tr '\0' v | base64 -w0)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
note "ulimit -n $(ulimit -n); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# loader_lua FILE BUCKET N BATCH B64 TTL_BASE PER_SEC DONE_FILE — a wrk script that writes keys k0..k(N-1)
# with BATCH-put transactions and writes DONE_FILE once every transaction is answered. TTL_BASE > 0:
# key n gets the ttl that makes it expire at about unix second TTL_BASE + n / PER_SEC.
loader_lua() {
  cat >"$1" <<LUA
local N, B, bucket, value = $3, $4, "$2", "$5"
local ttl_base, per_sec = $6, $7
local n, txns, answered, ok = 0, math.ceil($3 / $4), 0, 0
local verified = false
request = function()
  -- wrk calls request() once at start-up to check the script and drops that request.
  if not verified then verified = true; return wrk.format("GET", "/healthz") end
  if n >= N then return wrk.format("GET", "/healthz") end
  local ops = {}
  for j = 1, B do
    if n >= N then break end
    local op = '{"op":"put","bucket":"' .. bucket .. '","key":"k' .. n .. '","value":"' .. value .. '"'
    if ttl_base > 0 then
      local ttl = ttl_base + math.floor(n / per_sec) - os.time()
      if ttl < 1 then ttl = 1 end
      op = op .. ',"ttl":' .. ttl
    end
    ops[#ops + 1] = op .. '}'
    n = n + 1
  end
  return wrk.format("POST", "/v1/txn", {["Content-Type"] = "application/json"}, '{"then":[' .. table.concat(ops, ",") .. ']}')
end
response = function(status, headers, body)
  if body ~= '{"status":"ok"}' then
    answered = answered + 1
    if status == 200 and string.find(body, '"succeeded":true', 1, true) then
      ok = ok + 1
    elseif answered - ok <= 3 then
      io.write("loader: answer " .. status .. " " .. string.sub(body, 1, 200) .. "\n")
    end
    if answered >= txns then
      local f = io.open("$8", "w")
      f:write(string.format("loader: %d of %d transactions answered, %d ok\n", answered, txns, ok))
      f:close()
      wrk.thread:stop()
    end
  end
end
LUA
}

# load_keys PID BASE BUCKET N BATCH B64 [TTL_BASE PER_SEC] — runs the loader (bounded by
# LOAD_DUR); prints "secs txns_ok". PID (the server's) is not used yet.
load_keys() {
  local base=$2 bucket=$3 n=$4 batch=$5 b64=$6 tb=${7:-0} ps=${8:-1} t0 t1 wpid donef
  donef="$BENCH_TMP/load-$bucket.done"
  rm -f "$donef"
  loader_lua "$BENCH_TMP/load-$bucket.lua" "$bucket" "$n" "$batch" "$b64" "$tb" "$ps" "$donef"
  t0=$(now)
  # wrk's main thread sleeps the whole -d even after the script stops its thread: the script
  # writes $donef when every transaction is answered and we stop wrk then (SIGINT).
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"$LOAD_DUR" -s "$BENCH_TMP/load-$bucket.lua" "$base/healthz" >"$BENCH_TMP/load-$bucket.out" 2>&1 &
  wpid=$!
  while [ ! -s "$donef" ] && kill -0 "$wpid" 2>/dev/null; do sleep 0.05; done
  t1=$(now)
  kill -INT "$wpid" 2>/dev/null || true
  wait "$wpid" 2>/dev/null || true
  cat "$donef" >&2 2>/dev/null || echo "loader: did not finish within $LOAD_DUR" >&2
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b - a}') $(sed -n 's/^loader: .* \([0-9]*\) ok$/\1/p' "$donef" 2>/dev/null)"
}

port=$PORT0
next_port() { port=$((port + 1)); }

###############################################################################################
if wanted mix; then
  cat >"$BENCH_TMP/mix.lua" <<LUA
local body = "$VAL128"
math.randomseed(42)
request = function()
  local k = math.random(1, 1000)
  if math.random(1, 10) == 1 then
    return wrk.format("PUT", "/v1/kv/mix/k" .. k, nil, body)
  end
  return wrk.format("GET", "/v1/kv/mix/k" .. k)
end
LUA
  declare -A MPID MBASE
  for mode in sync periodic; do
    next_port
    start_node "$port" MICRONODE_DURABILITY="$mode"
    MPID[$mode]=$NODE_PID
    MBASE[$mode]="http://127.0.0.1:$port"
    load_keys "$NODE_PID" "${MBASE[$mode]}" mix 1000 50 "$B64_128" >/dev/null
  done
  for r in $(seq 1 "$ROUNDS"); do
    order="sync periodic"
    [ $((r % 2)) = 0 ] && order="periodic sync"
    for mode in $order; do
      b=${MBASE[$mode]}
      gs0=$(lat_sum "$b" GET "$KV"); gc0=$(lat_cnt "$b" GET "$KV")
      ps0=$(lat_sum "$b" PUT "$KV"); pc0=$(lat_cnt "$b" PUT "$KV")
      read -r rps p50 p99 cpu reqs < <(wrk_run "${MPID[$mode]}" "$b/" -s "$BENCH_TMP/mix.lua")
      gs1=$(lat_sum "$b" GET "$KV"); gc1=$(lat_cnt "$b" GET "$KV")
      ps1=$(lat_sum "$b" PUT "$KV"); pc1=$(lat_cnt "$b" PUT "$KV")
      awk -v rps="$rps" -v p50="$p50" -v p99="$p99" -v cpu="$cpu" -v reqs="$reqs" \
        -v gs0="$gs0" -v gs1="$gs1" -v gc0="$gc0" -v gc1="$gc1" -v ps0="$ps0" -v ps1="$ps1" -v pc0="$pc0" -v pc1="$pc1" '
        BEGIN { g = gc1 - gc0; p = pc1 - pc0
          printf "%s %.0f %s %s %s %.2f %.1f\n", rps, rps * g / (g + p), p50, p99, cpu,
            (g > 0 ? (gs1 - gs0) / g * 1e6 : 0), (p > 0 ? (ps1 - ps0) / p * 1e6 : 0) }' >>"$BENCH_TMP/mix-$mode"
      echo "# mix round $r $mode: $(tail -1 "$BENCH_TMP/mix-$mode")"
    done
  done
  for mode in sync periodic; do stop_pid "${MPID[$mode]}"; done
fi

###############################################################################################
if wanted txn; then
  cat >"$BENCH_TMP/put.lua" <<LUA
local body = "$VAL128"
local n = 0
request = function()
  n = n + 1
  return wrk.format("PUT", "/v1/kv/p/k" .. n, nil, body)
end
LUA
  cat >"$BENCH_TMP/txn.lua" <<LUA
local v = "$B64_128"
local n = 0
request = function()
  n = n + 1
  local ops = {}
  for j = 1, 4 do
    ops[j] = '{"op":"put","bucket":"t","key":"k' .. n .. '-' .. j .. '","value":"' .. v .. '"}'
  end
  return wrk.format("POST", "/v1/txn", {["Content-Type"] = "application/json"}, '{"then":[' .. table.concat(ops, ",") .. ']}')
end
LUA
  next_port
  start_node "$port" MICRONODE_DURABILITY=sync
  tb="http://127.0.0.1:$port"
  for r in $(seq 1 "$ROUNDS"); do
    order="put txn"
    [ $((r % 2)) = 0 ] && order="txn put"
    for w in $order; do
      read -r rps p50 p99 cpu reqs < <(wrk_run "$NODE_PID" "$tb/" -s "$BENCH_TMP/$w.lua")
      echo "$rps $p50 $p99 $cpu" >>"$BENCH_TMP/txn-$w"
      echo "# txn round $r $w: $rps/s p50 ${p50}µs p99 ${p99}µs cpu ${cpu}µs/req"
    done
  done
  curl -fs "$tb/metrics" | grep -E '^micronode_http_requests_total\{method="(POST|PUT)"' | grep -v ' 0$' >"$BENCH_TMP/txn-status" || true
  stop_pid "$NODE_PID"
fi

###############################################################################################
if wanted watch; then
  next_port
  start_node "$port" MICRONODE_DURABILITY="$WATCH_DURABILITY" MICRONODE_MAX_CONNECTIONS=20000 MICRONODE_MAX_WATCHERS=20000
  for r in $(seq 1 "$ROUNDS"); do
    c0=$(cpu_ticks "$NODE_PID")
    out=$(timeout 120 taskset -c "$CLIENT_CPU" "$(target_dir)/release/examples/watch_fanout" \
      "127.0.0.1:$port" fan "$WATCHERS" "$WRITES" "$INTERVAL_MS" | tail -1)
    c1=$(cpu_ticks "$NODE_PID")
    echo "$out cpu_s=$(awk -v a="$c0" -v b="$c1" -v t="$TCK" 'BEGIN{printf "%.2f", (b - a) / t}')" >>"$BENCH_TMP/watch"
    echo "# watch round $r: $(tail -1 "$BENCH_TMP/watch")"
    for _ in $(seq 1 100); do gt0 "$(metric "http://127.0.0.1:$port" micronode_watchers_current)" || break; sleep 0.1; done
  done
  stop_pid "$NODE_PID"
fi

###############################################################################################
if wanted idle; then
  for r in $(seq 1 "$ROUNDS"); do
    next_port
    start_node "$port" MICRONODE_MAX_CONNECTIONS=20000 MICRONODE_MAX_WATCHERS=20000
    ib="http://127.0.0.1:$port"
    for _ in 1 2 3; do curl -fs "$ib/v1/kv/idle/x" -o /dev/null || true; done
    before=$(rss_kib "$NODE_PID")
    taskset -c "$CLIENT_CPU" "$(target_dir)/release/examples/watch_fanout" "127.0.0.1:$port" idle "$IDLE_WATCHERS" 0 0 20 \
      >"$BENCH_TMP/idle-out" 2>&1 &
    cpid=$!
    for _ in $(seq 1 300); do grep -q '^open=' "$BENCH_TMP/idle-out" && break; kill -0 "$cpid" 2>/dev/null || break; sleep 0.1; done
    sleep 2
    after=$(rss_kib "$NODE_PID")
    n=$(metric "$ib" micronode_watchers_current)
    prss=$(metric "$ib" process_resident_memory_bytes)
    kill "$cpid" 2>/dev/null || true
    wait "$cpid" 2>/dev/null || true
    echo "$before $after $n $prss $(head -1 "$BENCH_TMP/idle-out")" >>"$BENCH_TMP/idle"
    echo "# idle round $r: before ${before} KiB, after ${after} KiB, watchers_current $n, process_resident_memory_bytes $prss; client: $(head -1 "$BENCH_TMP/idle-out")"
    stop_pid "$NODE_PID"
  done
fi

###############################################################################################
if wanted ttl; then
  next_port
  start_node "$port" MICRONODE_DURABILITY=sync
  xb="http://127.0.0.1:$port"
  start_at=$(($(date +%s) + 30))
  per_sec=$((TTL_KEYS / TTL_SPREAD))
  read -r lsecs lok < <(load_keys "$NODE_PID" "$xb" ttl "$TTL_KEYS" 32 "$B64_128" "$start_at" "$per_sec")
  note "ttl: loaded $TTL_KEYS keys in ${lsecs}s ($lok transactions ok); expiries due from unix $start_at, $per_sec/s"
  # Idle CPU before the window, for reference.
  while [ "$(date +%s)" -lt $((start_at - 4)) ]; do sleep 0.2; done
  i0=$(cpu_ticks "$NODE_PID"); it0=$(now); sleep 3; i1=$(cpu_ticks "$NODE_PID"); it1=$(now)
  while [ "$(date +%s)" -lt "$start_at" ]; do sleep 0.05; done
  e0=$(metric "$xb" micronode_kv_expired_total)
  c0=$(cpu_ticks "$NODE_PID"); t0=$(now)
  for _ in $(seq 1 1200); do
    e=$(metric "$xb" micronode_kv_expired_total)
    [ "${e%.*}" -ge "$TTL_KEYS" ] && break
    sleep 0.1
  done
  c1=$(cpu_ticks "$NODE_PID"); t1=$(now)
  awk -v i0="$i0" -v i1="$i1" -v it0="$it0" -v it1="$it1" -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v e="$e" -v e0="$e0" -v t="$TCK" \
    'BEGIN { w = t1 - t0; printf "%d %.2f %.0f %.2f %.2f\n", e - e0, w, (e - e0) / w, (c1 - c0) / t / w * 100, (i1 - i0) / t / (it1 - it0) * 100 }' >"$BENCH_TMP/ttl"
  echo "# ttl: expired wall_s expiries_per_s cpu_pct idle_cpu_pct = $(cat "$BENCH_TMP/ttl")"
  stop_pid "$NODE_PID"
fi

###############################################################################################
if wanted snap; then
  next_port
  start_node "$port" MICRONODE_DURABILITY=periodic
  sb="http://127.0.0.1:$port"
  read -r lsecs lok < <(load_keys "$NODE_PID" "$sb" snap "$SNAP_KEYS" 32 "$B64_100")
  note "snap: loaded $SNAP_KEYS keys of 100 B in ${lsecs}s ($lok transactions ok), server RSS $(rss_kib "$NODE_PID") KiB, data dir $(du -sm "$BENCH_TMP/data-$port" | cut -f1) MiB"
  for r in $(seq 1 "$ROUNDS"); do
    rm -f "$BENCH_TMP/snap.ndjson"
    t0=$(now)
    sout=$(timeout 600 taskset -c "$CLIENT_CPU" "$(micronode_bin)" snapshot save "$BENCH_TMP/snap.ndjson" --url "$sb")
    t1=$(now)
    bytes=$(stat -c %s "$BENCH_TMP/snap.ndjson")
    rm -rf "$BENCH_TMP/restore"
    t2=$(now)
    rout=$(env -u MICRONODE_CONFIG MICRONODE_STORAGE_PATH="$BENCH_TMP/restore" timeout 600 taskset -c "$CLIENT_CPU" "$(micronode_bin)" snapshot restore "$BENCH_TMP/snap.ndjson" 2>&1 | tail -1)
    t3=$(now)
    awk -v b="$bytes" -v t0="$t0" -v t1="$t1" -v t2="$t2" -v t3="$t3" 'BEGIN { printf "%d %.2f %.1f %.2f\n", b, t1 - t0, b / 1e6 / (t1 - t0), t3 - t2 }' >>"$BENCH_TMP/snap"
    echo "# snap round $r: bytes save_s MB/s restore_s = $(tail -1 "$BENCH_TMP/snap"); save: $sout; restore: $rout"
  done
  stop_pid "$NODE_PID"
fi

###############################################################################################
echo
echo "# KV v2 — ROUNDS=$ROUNDS DUR=$DUR CONNS=$CONNS; medians (min–max); load average now $(cut -d' ' -f1-3 /proc/loadavg)"
col() { awk -v c="$2" '{print $c}' "$1"; }
mm() { echo "$(col "$1" "$2" | median) ($(col "$1" "$2" | minmax))"; }
if wanted mix; then
  echo "## mix 90/10 GET/PUT, 1000 keys, 128 B"
  printf '%-9s %-26s %-26s %-8s %-8s %-20s %-12s %-12s\n' mode rps get_rps p50_us p99_us cpu_us_per_req get_svc_us put_svc_us
  for mode in sync periodic; do
    f="$BENCH_TMP/mix-$mode"
    printf '%-9s %-26s %-26s %-8s %-8s %-20s %-12s %-12s\n' "$mode" "$(mm "$f" 1)" "$(mm "$f" 2)" "$(col "$f" 3 | median)" "$(col "$f" 4 | median)" "$(mm "$f" 5)" "$(col "$f" 6 | median)" "$(col "$f" 7 | median)"
  done
  echo "ratio sync/periodic: GET rps $(awk -v a="$(col "$BENCH_TMP/mix-sync" 2 | median)" -v b="$(col "$BENCH_TMP/mix-periodic" 2 | median)" 'BEGIN{printf "%.3f", a / b}'), CPU/req $(awk -v a="$(col "$BENCH_TMP/mix-sync" 5 | median)" -v b="$(col "$BENCH_TMP/mix-periodic" 5 | median)" 'BEGIN{printf "%.3f", a / b}')"
  echo "per-round ratios (sync/periodic GET rps, CPU/req): $(paste -d' ' "$BENCH_TMP/mix-sync" "$BENCH_TMP/mix-periodic" | awk '{printf "%.3f/%.3f ", $2 / $9, $5 / $12}')"
fi
if wanted txn; then
  echo "## 4-put txn vs PUT 128 B, sync"
  printf '%-5s %-26s %-8s %-8s %-20s\n' row per_s p50_us p99_us cpu_us_per_req
  for w in put txn; do
    f="$BENCH_TMP/txn-$w"
    printf '%-5s %-26s %-8s %-8s %-20s\n' "$w" "$(mm "$f" 1)" "$(col "$f" 2 | median)" "$(col "$f" 3 | median)" "$(mm "$f" 4)"
  done
  echo "ratio txn/put (per second): $(awk -v a="$(col "$BENCH_TMP/txn-txn" 1 | median)" -v b="$(col "$BENCH_TMP/txn-put" 1 | median)" 'BEGIN{printf "%.3f", a / b}'); per round: $(paste -d' ' "$BENCH_TMP/txn-txn" "$BENCH_TMP/txn-put" | awk '{printf "%.3f ", $1 / $5}')"
  echo "request counters (POST = txn, PUT):"; cat "$BENCH_TMP/txn-status"
fi
if wanted watch; then
  echo "## watch fan-out: $WATCHERS watchers, $WRITES writes $INTERVAL_MS ms apart ($WATCH_DURABILITY)"
  cat "$BENCH_TMP/watch"
  for k in deliv_p50_us deliv_p99_us deliv_max_us all_p50_us all_p99_us all_max_us missing; do
    printf '%s median %s\n' "$k" "$(grep -o "$k=[0-9]*" "$BENCH_TMP/watch" | cut -d= -f2 | median)"
  done
fi
if wanted idle; then
  echo "## idle watchers: before_kib after_kib watchers_current process_resident_memory_bytes client"
  cat "$BENCH_TMP/idle"
  echo "delta MiB median $(awk '{print ($2 - $1) / 1024}' "$BENCH_TMP/idle" | median) ($(awk '{print ($2 - $1) / 1024}' "$BENCH_TMP/idle" | minmax))"
fi
if wanted ttl; then
  echo "## ttl: expired wall_s expiries_per_s server_cpu_pct idle_cpu_pct"
  cat "$BENCH_TMP/ttl"
fi
if wanted snap; then
  echo "## snapshot: bytes save_s save_MB_per_s restore_s"
  cat "$BENCH_TMP/snap"
  echo "save MB/s median $(mm "$BENCH_TMP/snap" 3); restore s median $(mm "$BENCH_TMP/snap" 4)"
fi
[ -f "$BENCH_TMP/notes" ] && { echo "## notes"; cat "$BENCH_TMP/notes"; }

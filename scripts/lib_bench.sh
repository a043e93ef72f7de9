# shellcheck shell=bash
# Shared by the bench scripts and perf/flamegraph.sh (sourced, not run). Sourcing only defines
# functions; a script calls them in this order:
#   . scripts/lib_bench.sh
#   bench_init                  # knob defaults, BENCH_TMP
#   trap bench_cleanup EXIT     # the calling script owns its traps
#   bench_prereqs               # installs wrk, h2load, curl, jq with apt-get when missing
# The server under test is pinned to core SERVER_CPU with one runtime worker, the load generator
# to core CLIENT_CPU; every load run is bounded by DUR (wrk) or a request count (h2load).
# Loopback only. Binaries come from ${CARGO_TARGET_DIR:-target}/release.
# Knobs: DUR (5s), CONNS (64), THREADS (1), SERVER_CPU (0), CLIENT_CPU (1), H2_REQUESTS (200000).

# shellcheck source=scripts/lib_boot.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib_boot.sh"

# bench_init — sets the knob defaults, an empty pid list and BENCH_TMP, a fresh temp dir that
# bench_cleanup removes.
bench_init() {
  DUR="${DUR:-5s}"
  CONNS="${CONNS:-64}"
  THREADS="${THREADS:-1}"
  SERVER_CPU="${SERVER_CPU:-0}"
  CLIENT_CPU="${CLIENT_CPU:-1}"
  H2_REQUESTS="${H2_REQUESTS:-200000}"
  BENCH_PIDS=()
  BENCH_TMP=$(mktemp -d)
}

# bench_prereqs — installs the load tools that are missing (apt-get).
bench_prereqs() {
  local need=()
  command -v wrk >/dev/null || need+=(wrk)
  command -v h2load >/dev/null || need+=(nghttp2-client)
  command -v curl >/dev/null || need+=(curl)
  command -v jq >/dev/null || need+=(jq)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

# bench_cleanup — stops every server started here and removes BENCH_TMP; for `trap … EXIT`.
bench_cleanup() {
  local p
  for p in ${BENCH_PIDS[@]+"${BENCH_PIDS[@]}"}; do kill "$p" 2>/dev/null || true; done
  for p in ${BENCH_PIDS[@]+"${BENCH_PIDS[@]}"}; do wait "$p" 2>/dev/null || true; done
  [ -n "${BENCH_TMP:-}" ] && rm -rf "$BENCH_TMP"
  return 0
}

# start_bare PORT — the bare hyper baseline (examples/bare_hyper.rs); sets BARE_PID.
start_bare() {
  local log="$BENCH_TMP/bare-$1.log"
  MICRONODE_WORKERS=1 taskset -c "$SERVER_CPU" "$(target_dir)/release/examples/bare_hyper" "127.0.0.1:$1" >"$log" 2>&1 &
  BARE_PID=$!
  BENCH_PIDS+=("$BARE_PID")
  boot_wait "$BARE_PID" "$log" "127.0.0.1:$1" /
}

# start_node PORT [VAR=value…] — Micronode with one worker on SERVER_CPU, its data in
# BENCH_TMP; sets NODE_PID.
start_node() {
  local port=$1
  shift
  boot_micronode "$BENCH_TMP/node-$port.log" MICRONODE_WORKERS=1 RUST_LOG=warn \
    MICRONODE_BIND_ADDR="127.0.0.1:$port" MICRONODE_STORAGE_PATH="$BENCH_TMP/data-$port" "$@" \
    -- taskset -c "$SERVER_CPU"
  NODE_PID=$BOOT_PID
  BENCH_PIDS+=("$NODE_PID")
}

# stop_pid PID — SIGTERM, then waits for it.
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# wrk_run PID URL [wrk args…] — prints "rps p50_us p99_us cpu_us_per_req requests". With
# WRK_STRICT=1, a run that got any non-2xx/3xx response prints nothing (and says so on stderr),
# so that a caller's `read … < <(wrk_run …)` fails instead of counting errors as requests.
wrk_run() {
  local pid=$1 url=$2
  shift 2
  local c0 c1 out
  c0=$(cpu_ticks "$pid")
  out=$(taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c"$CONNS" -d"$DUR" --latency "$@" "$url")
  c1=$(cpu_ticks "$pid")
  echo "$out" | awk -v c0="$c0" -v c1="$c1" -v tck="$(getconf CLK_TCK)" -v strict="${WRK_STRICT:-0}" '
    function us(v) {
      if (v ~ /us$/) { sub(/us$/, "", v); return v + 0 }
      if (v ~ /ms$/) { sub(/ms$/, "", v); return v * 1000 }
      if (v ~ /s$/) { sub(/s$/, "", v); return v * 1000000 }
      return v + 0
    }
    /requests in/ { reqs = $1 }
    /Requests\/sec/ { rps = $2 }
    $1 == "50%" { p50 = us($2) }
    $1 == "99%" { p99 = us($2) }
    /Non-2xx or 3xx responses/ { bad = $NF }
    END {
      if (strict == 1 && bad > 0) { print "wrk: " bad " non-2xx/3xx responses" > "/dev/stderr"; exit 1 }
      if (reqs == 0) { print "0 0 0 0 0"; exit }
      printf "%.0f %.0f %.0f %.2f %d\n", rps, p50, p99, (c1 - c0) * 1000000 / tck / reqs, reqs
    }'
}

# h2_run PID URL — HTTP/2 prior knowledge with h2load; prints "rps cpu_us_per_req requests".
h2_run() {
  local pid=$1 url=$2 c0 c1 out
  c0=$(cpu_ticks "$pid")
  out=$(taskset -c "$CLIENT_CPU" h2load -n "$H2_REQUESTS" -c 16 -m 10 "$url" 2>&1)
  c1=$(cpu_ticks "$pid")
  echo "$out" | awk -v c0="$c0" -v c1="$c1" -v tck="$(getconf CLK_TCK)" '
    /^finished in/ { rps = $4 }
    /^requests:/ { ok = $8 }
    END {
      if (ok == 0) { print "0 0 0"; exit }
      printf "%.0f %.2f %d\n", rps, (c1 - c0) * 1000000 / tck / ok, ok
    }'
}

# median — of the numbers on stdin, one per line.
median() { sort -g | awk '{v[NR] = $1} END { if (NR == 0) { print 0 } else if (NR % 2) { print v[(NR + 1) / 2] } else { print (v[NR / 2] + v[NR / 2 + 1]) / 2 } }'; }
minmax() { sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%s–%s", lo, hi}'; }

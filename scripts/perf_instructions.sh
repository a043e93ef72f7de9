#!/usr/bin/env bash
# Instructions per request, counted exactly by callgrind (valgrind) in the server process:
# bare hyper (examples/bare_hyper.rs), Micronode /healthz and Micronode KV GET 128 B (mem
# engine, one runtime worker), each HTTP/1.1 request sent by `h2load --h1 -c 1`. Each server is
# run twice, with no requests and with N, and the difference is divided by N, so boot and
# one-time costs drop out. Unlike requests per second these counts do not move with the
# machine's load, which makes them a regression check that noise cannot fail:
#   healthz ratio = /healthz instructions ÷ bare's   (fails above MAX_HEALTHZ, default 1.65)
#   get ratio     = KV GET instructions ÷ bare's     (fails above MAX_GET, default 2.5)
# The kernel's share of a request (the socket syscalls, the same for both servers) is not
# counted, so these ratios are larger than the CPU-per-request ratios of bench_compare.sh.
# Prints one line per server and a last, machine-readable line:
#   INSTRUCTIONS bare=<n> healthz=<n> get=<n> healthz_ratio=<r> get_ratio=<r>
# Knobs: N (20000), MAX_HEALTHZ (1.65), MAX_GET (2.5), CHECK=0 to report without failing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib_bench.sh
N="${N:-20000}"
MAX_HEALTHZ="${MAX_HEALTHZ:-1.65}"
MAX_GET="${MAX_GET:-2.5}"

bench_init
trap bench_cleanup EXIT
bench_prereqs
command -v valgrind >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
}
cargo build --release --quiet --bin micronode --example bare_hyper

# total OUT — sets TOTAL to the instruction total callgrind wrote to OUT; fails when there is none.
total() {
  TOTAL=$(sed -n 's/^summary: //p' "$1")
  [ -n "$TOTAL" ] || {
    echo "callgrind wrote no total to $1" >&2
    return 1
  }
}

# load URL COUNT — COUNT keep-alive HTTP/1.1 requests on one connection; fails on any non-2xx.
load() {
  [ "$2" -gt 0 ] || return 0
  local out
  out=$(h2load --h1 -c 1 -n "$2" "$1")
  echo "$out" | grep -q "status codes: $2 2xx" || {
    echo "h2load did not get $2 2xx answers from $1:" >&2
    echo "$out" >&2
    return 1
  }
}

# free_port — a loopback port nothing listens on now.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
}

# finish PID — stops PID (SIGTERM, callgrind writes its totals) and drops it from BENCH_PIDS.
finish() {
  local p kept=()
  stop_pid "$1"
  for p in ${BENCH_PIDS[@]+"${BENCH_PIDS[@]}"}; do
    [ "$p" = "$1" ] || kept+=("$p")
  done
  BENCH_PIDS=(${kept[@]+"${kept[@]}"})
}

# bare_run COUNT — TOTAL: instructions of bare hyper booting and answering COUNT requests.
bare_run() {
  local out="$BENCH_TMP/bare-$1.cg" port
  port=$(free_port)
  MICRONODE_WORKERS=1 valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$(target_dir)/release/examples/bare_hyper" "127.0.0.1:$port" >"$BENCH_TMP/bare.log" 2>&1 &
  local pid=$!
  BENCH_PIDS+=("$pid")
  BOOT_ATTEMPTS=1200 boot_wait "$pid" "$BENCH_TMP/bare.log" "127.0.0.1:$port" /
  load "http://127.0.0.1:$port/" "$1"
  finish "$pid"
  total "$out"
}

# node_run COUNT PATH — TOTAL: instructions of Micronode booting, storing one 128 B value and
# answering COUNT GETs of PATH.
node_run() {
  local out="$BENCH_TMP/node-$1-${2//\//_}.cg" port
  port=$(free_port)
  BOOT_ATTEMPTS=1200 boot_micronode "$BENCH_TMP/node.log" MICRONODE_WORKERS=1 RUST_LOG=warn \
    MICRONODE_BIND_ADDR="127.0.0.1:$port" MICRONODE_STORAGE_ENGINE=mem \
    -- valgrind --tool=callgrind --callgrind-out-file="$out"
  local pid=$BOOT_PID base="http://$BOOT_ADDR"
  BENCH_PIDS+=("$pid")
  head -c 128 /dev/zero | tr '\0' x |
    curl -fsS -o /dev/null -X PUT --data-binary @- "$base/v1/kv/bench/k128"
  load "$base$2" "$1"
  finish "$pid"
  total "$out"
}

# per_request RUN [ARGS…] — sets PER to (RUN with N requests − RUN with none) ÷ N.
per_request() {
  local run=$1 idle
  shift
  "$run" 0 "$@"
  idle=$TOTAL
  "$run" "$N" "$@"
  PER=$(awk -v a="$idle" -v b="$TOTAL" -v n="$N" 'BEGIN {printf "%.0f", (b - a) / n}')
}

per_request bare_run
bare=$PER
per_request node_run /healthz
healthz=$PER
per_request node_run /v1/kv/bench/k128
get=$PER
healthz_ratio=$(awk -v a="$healthz" -v b="$bare" 'BEGIN {printf "%.3f", a / b}')
get_ratio=$(awk -v a="$get" -v b="$bare" 'BEGIN {printf "%.3f", a / b}')

echo "instructions per HTTP/1.1 request (callgrind, $N requests on one connection):"
printf '  bare hyper      %s\n' "$bare"
printf '  /healthz        %s  (%s x bare, must stay <= %s)\n' "$healthz" "$healthz_ratio" "$MAX_HEALTHZ"
printf '  KV GET 128 B    %s  (%s x bare, must stay <= %s)\n' "$get" "$get_ratio" "$MAX_GET"
echo "INSTRUCTIONS bare=$bare healthz=$healthz get=$get healthz_ratio=$healthz_ratio get_ratio=$get_ratio"

[ "${CHECK:-1}" = "1" ] || exit 0
fail=0
awk -v r="$healthz_ratio" -v m="$MAX_HEALTHZ" 'BEGIN { exit !(r <= m) }' || {
  echo "instruction guard: FAILED — /healthz costs $healthz_ratio x bare hyper's instructions (> $MAX_HEALTHZ)" >&2
  fail=1
}
awk -v r="$get_ratio" -v m="$MAX_GET" 'BEGIN { exit !(r <= m) }' || {
  echo "instruction guard: FAILED — KV GET costs $get_ratio x bare hyper's instructions (> $MAX_GET)" >&2
  fail=1
}
exit "$fail"

# Starting a server and waiting until it answers, written once for run_micronode.sh, the bench
# scripts (lib_bench.sh), perf/flamegraph.sh and .ci/run. Sourced, not run: it only defines
# functions, so sourcing it changes nothing.
#
#   . scripts/lib_boot.sh
#   boot_micronode "$log" MICRONODE_BIND_ADDR=127.0.0.1:0 MICRONODE_STORAGE_ENGINE=mem
#   curl "http://$BOOT_ADDR/healthz"; kill "$BOOT_PID"
#
# Knobs: CARGO_TARGET_DIR (where cargo put the binaries, default target), BOOT_ATTEMPTS (200)
# and BOOT_INTERVAL (0.05 s): the poll gives up after about ATTEMPTS × INTERVAL (10 s).

# target_dir — cargo's output directory, as cargo itself resolves CARGO_TARGET_DIR (relative
# paths are relative to the repository root, where every script runs).
target_dir() { echo "${CARGO_TARGET_DIR:-target}"; }

# micronode_bin — the release binary.
micronode_bin() { echo "$(target_dir)/release/micronode"; }

# addr_in_log LOG — the address in the first JSON log line that has an "addr" field; nothing
# (and success, so `set -e` callers go on polling) while there is none or LOG does not exist
# yet — the server's shell may not have opened it when the first poll runs.
addr_in_log() {
  [ -f "$1" ] || return 0
  sed -n '/"addr":"/{s/.*"addr":"\([^"]*\)".*/\1/p;q;}' "$1" 2>/dev/null || true
}

# boot_wait PID LOG ADDR PATH — polls http://ADDR/PATH until it answers 2xx. An empty ADDR is
# read from LOG (the server's JSON "addr" line) as soon as it appears. Bounded: fails after
# BOOT_ATTEMPTS polls, or at once when PID exits; on failure prints LOG to stderr, stops PID
# and returns 1. Sets BOOT_ADDR to the address that answered.
boot_wait() {
  local pid=$1 log=$2 fixed=$3 path=$4 i
  BOOT_ADDR=""
  for i in $(seq 1 "${BOOT_ATTEMPTS:-200}"); do
    BOOT_ADDR=$(addr_in_log "$log")
    [ -n "$BOOT_ADDR" ] || BOOT_ADDR=$fixed
    if [ -n "$BOOT_ADDR" ] && curl -fs -o /dev/null "http://$BOOT_ADDR$path" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "server (pid $pid) exited during boot; its log ($log):" >&2
      cat "$log" >&2 || true
      wait "$pid" 2>/dev/null || true
      return 1
    fi
    sleep "${BOOT_INTERVAL:-0.05}"
  done
  echo "server (pid $pid) did not answer ${BOOT_ADDR:-<no address: no JSON \"addr\" line and no fixed port>}$path after $i polls; its log ($log):" >&2
  cat "$log" >&2 || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return 1
}

# boot_micronode LOG [VAR=value…] [-- WRAPPER…] — starts the release binary in the background
# with the caller's environment plus VAR=value pairs, run under WRAPPER if given (e.g.
# `-- taskset -c 0`), stdout and stderr to LOG, and waits (boot_wait) until /healthz answers.
# Logs are JSON unless the caller set MICRONODE_LOG_FORMAT, so that the bound address (port 0
# included) is read from the log; without an "addr" line (text logs, RUST_LOG=warn) the
# MICRONODE_BIND_ADDR it was given is polled instead. Sets BOOT_PID and BOOT_ADDR.
boot_micronode() {
  local log=$1 bind="${MICRONODE_BIND_ADDR:-}" fixed=""
  shift
  local pairs=() wrap=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case "$1" in MICRONODE_BIND_ADDR=*) bind=${1#*=} ;; esac
    pairs+=("$1")
    shift
  done
  if [ $# -gt 0 ]; then
    shift
    wrap=("$@")
  fi
  case "$bind" in *:0 | "") ;; *) fixed=$bind ;; esac
  env MICRONODE_LOG_FORMAT="${MICRONODE_LOG_FORMAT:-json}" ${pairs[@]+"${pairs[@]}"} \
    ${wrap[@]+"${wrap[@]}"} "$(micronode_bin)" >"$log" 2>&1 &
  BOOT_PID=$!
  boot_wait "$BOOT_PID" "$log" "$fixed" /healthz
}

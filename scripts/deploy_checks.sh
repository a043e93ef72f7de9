#!/usr/bin/env bash
# Checks the deploy assets in docs/deploy/ (docs/deploy/README.md, "What the checks verify"):
#   1. systemd-analyze verify on micronode.service, with ExecStart pointed at a real binary
#      ($MICRONODE_BIN) in a temporary copy; any warning it prints fails the check;
#   2. systemd-analyze security --offline=yes: the overall exposure must be <= MAX_EXPOSURE (2.0);
#   3. the system calls the release binary makes while serving (boot, KV writes with fsync,
#      SIGHUP, SIGTERM; over TLS), traced with strace, all pass the unit's SystemCallFilter,
#      it writes only under its storage path and maps no writable-executable memory
#      (skipped without strace or $MICRONODE_BIN);
#   4. promtool check rules and promtool test rules on the alert rules and their tests;
#   5. jq parses the Grafana dashboard and finds the variables it relies on;
#   6. every metric name used by the dashboard's queries and the alert rules is in a /metrics
#      scrape (file argument, or $METRICS_FILE) or in FEATURE_FAMILIES below (skipped, with a
#      message, without a scrape).
#
# Usage: [MICRONODE_BIN=path/to/micronode] [METRICS_FILE=scrape.txt] scripts/deploy_checks.sh [scrape.txt]
# (a relative MICRONODE_BIN is taken from the repository root, where the script runs).
# Installs nothing unless CI=true (then it apt-get installs what is missing); outside CI a
# missing tool is exit 3 with a message naming it. Any failed check is exit 1.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=docs/deploy
unit=$dir/micronode.service
rules=$dir/prometheus-alerts.yml
rules_test=$dir/prometheus-alerts.test.yml
dashboard=$dir/grafana-dashboard.json
MAX_EXPOSURE="${MAX_EXPOSURE:-2.0}"
metrics_file="${1:-${METRICS_FILE:-}}"

# Metric families that a scrape of a default server does not show: they appear only with a
# feature on (TLS, tenants, watch, the postgres engine), or are not exported yet by this build.
# A name here is accepted by the cross-check; histograms are listed by family name.
FEATURE_FAMILIES=(
  micronode_tls_cert_not_after_seconds   # only while TLS is on
  micronode_watchers_current             # watch streams
  micronode_watch_events_total
  micronode_watch_overflows_total
  micronode_tenant_requests_total        # tenants named in the config
  micronode_tenant_bytes
  micronode_tenant_keys
  micronode_storage_pool_connections     # postgres engine
)

# --- tools -------------------------------------------------------------------------------
need=()
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v promtool >/dev/null || need+=(prometheus)
command -v jq >/dev/null || need+=(jq)
if [ "${CI:-}" = true ] && ! command -v strace >/dev/null; then need+=(strace); fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "${CI:-}" = true ]; then
    echo "deploy checks: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "deploy checks: missing tools; install the Debian packages: ${need[*]} (or run with CI=true to have them installed)" >&2
    exit 3
  fi
fi

work=$(mktemp -d)
trace_pid=""
server_pid=""
cleanup() {
  local p
  for p in "$server_pid" "$trace_pid"; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then kill -9 "$p" 2>/dev/null || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
failed=0
fail() {
  echo "FAIL: $*" >&2
  failed=1
}

# --- 1. systemd-analyze verify -------------------------------------------------------------
echo "== systemd-analyze verify $unit"
if [ -n "${MICRONODE_BIN:-}" ]; then
  if [ ! -x "$MICRONODE_BIN" ]; then
    echo "deploy checks: MICRONODE_BIN=$MICRONODE_BIN is not an executable file" >&2
    exit 1
  fi
  bin=$(cd "$(dirname "$MICRONODE_BIN")" && pwd)/$(basename "$MICRONODE_BIN")
  exec_note="ExecStart pointed at $bin"
else
  # Without a binary, verify against an executable stand-in so that the rest of the unit is
  # still checked.
  bin=/bin/true
  exec_note="no MICRONODE_BIN: ExecStart pointed at $bin"
fi
grep -q '^ExecStart=/usr/local/bin/micronode serve$' "$unit" ||
  fail "$unit: ExecStart is not '/usr/local/bin/micronode serve'"
sed "s#^ExecStart=/usr/local/bin/micronode #ExecStart=$bin #" "$unit" >"$work/micronode.service"
if out=$(systemd-analyze verify "$work/micronode.service" 2>&1) && [ -z "$out" ]; then
  echo "verify: clean ($exec_note)"
else
  printf '%s\n' "$out" >&2
  fail "systemd-analyze verify printed warnings or errors ($exec_note)"
fi

# --- 2. systemd-analyze security ------------------------------------------------------------
echo "== systemd-analyze security --offline=yes $unit (exposure must be <= $MAX_EXPOSURE)"
sec=$(systemd-analyze security --offline=yes --no-pager "$unit" 2>&1 || true)
exposure=$(printf '%s\n' "$sec" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p' | tail -1)
if [ -z "$exposure" ]; then
  printf '%s\n' "$sec" >&2
  fail "could not read the overall exposure from systemd-analyze security"
elif awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }'; then
  echo "exposure: $exposure"
else
  printf '%s\n' "$sec" | grep '✗' >&2 || true
  fail "exposure $exposure > $MAX_EXPOSURE"
fi

# --- 3. system calls against the unit's filter -----------------------------------------------
# The filter's allow and deny lists, expanded recursively from systemd's own groups.
expand_syscalls() {
  local item
  systemd-analyze syscall-filter --no-pager "$1" | sed -n '2,$p' | sed 's/^ *//; /^#/d; /^$/d' |
    while read -r item; do
      case "$item" in
        @*) expand_syscalls "$item" ;;
        *) echo "$item" ;;
      esac
    done
}
echo "== system calls of a serving release binary vs the unit's SystemCallFilter"
if ! command -v strace >/dev/null; then
  echo "syscalls: SKIPPED (no strace)"
elif [ "$bin" = /bin/true ]; then
  echo "syscalls: SKIPPED (no MICRONODE_BIN)"
elif ! strace -qq -o /dev/null true 2>/dev/null; then
  echo "syscalls: SKIPPED (strace cannot trace here: ptrace refused)"
else
  : >"$work/allow"
  : >"$work/deny"
  while IFS= read -r line; do
    value=${line#SystemCallFilter=}
    target=allow
    case "$value" in "~"*)
      target=deny
      value=${value#\~}
      ;;
    esac
    for item in $value; do
      case "$item" in
        @*) expand_syscalls "$item" >>"$work/$target" ;;
        *) echo "$item" >>"$work/$target" ;;
      esac
    done
  done < <(grep '^SystemCallFilter=' "$unit")
  sort -u "$work/allow" -o "$work/allow"
  sort -u "$work/deny" -o "$work/deny"
  comm -23 "$work/allow" "$work/deny" >"$work/permitted"

  # Served over TLS when the binary can make a development certificate, so that the
  # handshake paths are traced too.
  mkdir "$work/data"
  tls_env=()
  scheme=http
  curl_tls=()
  if "$bin" tls dev-cert --out "$work/certs" >/dev/null 2>&1; then
    tls_env=(MICRONODE_TLS_CERT="$work/certs/cert.pem" MICRONODE_TLS_KEY="$work/certs/key.pem")
    scheme=https
    curl_tls=(--cacert "$work/certs/cert.pem")
  fi
  env MICRONODE_BIND_ADDR=127.0.0.1:0 MICRONODE_LOG_FORMAT=json MICRONODE_STORAGE_PATH="$work/data" \
    "${tls_env[@]}" strace -f -qq -o "$work/trace" "$bin" serve >"$work/trace.log" 2>&1 &
  trace_pid=$!
  addr=""
  for _ in $(seq 1 200); do
    addr=$(sed -n '/"addr":"/{s/.*"addr":"\([^"]*\)".*/\1/p;q;}' "$work/trace.log")
    [ -n "$addr" ] && curl -fs "${curl_tls[@]}" -o /dev/null "$scheme://$addr/healthz" && break
    kill -0 "$trace_pid" 2>/dev/null || break
    addr=""
    sleep 0.05
  done
  # The server is strace's child, the first pid in the trace (its execve).
  server_pid=$(awk 'NR == 1 { print $1; exit }' "$work/trace" 2>/dev/null || true)
  if [ -z "$addr" ] || [ -z "$server_pid" ]; then
    cat "$work/trace.log" >&2
    fail "the traced server did not come up"
  else
    base="$scheme://$addr"
    req() { curl -fsS "${curl_tls[@]}" -o /dev/null "$@" || fail "traced server: curl $*"; }
    for i in 1 2 3; do
      req -X PUT --data-binary "v$i" "$base/v1/kv/deploy/k$i"
    done
    req "$base/v1/kv/deploy/k1"
    req "$base/v1/kv/deploy"
    req -X DELETE "$base/v1/kv/deploy/k2"
    req --http2 "$base/metrics"
    req "$base/readyz"
    kill -HUP "$server_pid"
    sleep 0.5
    req "$base/healthz"
    kill -TERM "$server_pid"
    rc=0
    wait "$trace_pid" || rc=$?
    trace_pid=""
    server_pid=""
    [ "$rc" -eq 0 ] || {
      cat "$work/trace.log" >&2
      fail "the traced server exited $rc"
    }
    grep -q '"configuration reloaded"' "$work/trace.log" || fail "the traced server did not log the SIGHUP reload"
    # One syscall name per line of strace output: "PID name(args) = result".
    awk '{ sub(/^[0-9]+ +/, ""); if (match($0, /^[a-z0-9_]+\(/)) print substr($0, 1, RLENGTH - 1) }' \
      "$work/trace" | sort -u >"$work/used"
    # execve is strace starting the binary; systemd does that before the filter applies.
    outside=$(comm -23 "$work/used" "$work/permitted" | grep -vx execve || true)
    if [ -n "$outside" ]; then
      fail "system calls outside the unit's SystemCallFilter: $(echo "$outside" | tr '\n' ' ')"
    else
      echo "syscalls ($scheme): $(wc -l <"$work/used") distinct, all permitted by the filter"
    fi
    # ProtectSystem=strict leaves only the state directory writable: every file the server
    # creates, opens for writing, renames or removes must be under its storage path.
    writes=$(grep -E '^[0-9]+ +(open|openat|openat2)\([^"]*"[^"]*", [A-Z_|]*O_(WRONLY|RDWR|CREAT)|^[0-9]+ +(creat|mkdir|mkdirat|rename|renameat|renameat2|unlink|unlinkat|rmdir|link|linkat|symlink|symlinkat|truncate|mknod|mknodat)\(' "$work/trace" |
      grep -oE '"[^"]*"' | tr -d '"' | sort -u || true)
    outside_writes=$(printf '%s\n' "$writes" | grep -v -e '^$' -e "^$work/data\(/\|\$\)" -e '^/dev/null$' || true)
    if [ -n "$outside_writes" ]; then
      fail "writes outside the storage path, refused by ProtectSystem=strict: $(echo "$outside_writes" | tr '\n' ' ')"
    else
      echo "files: $(printf '%s\n' "$writes" | grep -c . || true) paths written, all under the storage path"
    fi
    # MemoryDenyWriteExecute=yes refuses writable+executable mappings and making memory
    # executable after the fact.
    wx=$(grep -E 'mmap\([^)]*PROT_WRITE\|PROT_EXEC|(pkey_)?mprotect\([^)]*PROT_EXEC' "$work/trace" | head -3 || true)
    if [ -n "$wx" ]; then
      fail "writable-executable memory, refused by MemoryDenyWriteExecute=yes: $wx"
    else
      echo "memory: no writable-executable mappings (MemoryDenyWriteExecute=yes holds)"
    fi
  fi
fi

# --- 4. promtool ------------------------------------------------------------------------------
echo "== promtool check rules $rules"
promtool check rules "$rules" || fail "promtool check rules"
echo "== promtool test rules $rules_test"
promtool test rules "$rules_test" || fail "promtool test rules"

# --- 5. Grafana dashboard ---------------------------------------------------------------------
echo "== jq $dashboard"
if jq -e '
    (.templating.list | map(.name) | index("datasource") != null)
    and (.templating.list[] | select(.name == "datasource") | .type == "datasource" and .query == "prometheus")
    and (.templating.list | map(.name) | index("instance") != null)
    and ([.panels[] | select(.type != "row") | .targets[]? | .expr] | length > 0)
    and ([.panels[] | select(.type != "row") | .datasource.uid] | all(. == "${datasource}"))
  ' "$dashboard" >/dev/null; then
  echo "dashboard: valid JSON, datasource and instance variables, every panel on \${datasource}"
else
  fail "$dashboard: not JSON, or missing the datasource/instance variables or a panel's datasource"
fi

# --- 6. metric names against a scrape -----------------------------------------------------------
echo "== metric names used by the dashboard and the alerts vs /metrics"
if [ -z "$metrics_file" ]; then
  echo "metric names: SKIPPED (no scrape: pass a /metrics file as argument or METRICS_FILE)"
elif [ ! -s "$metrics_file" ]; then
  fail "metrics file '$metrics_file' is missing or empty"
else
  {
    # Sample names and family names of the scrape.
    grep -v '^#' "$metrics_file" | sed -n 's/^\([a-zA-Z_:][a-zA-Z0-9_:]*\).*/\1/p'
    sed -n 's/^# TYPE \([a-zA-Z_:][a-zA-Z0-9_:]*\) .*/\1/p' "$metrics_file"
    printf '%s\n' "${FEATURE_FAMILIES[@]}"
  } | sort -u >"$work/known"
  {
    jq -r '.. | objects | (.expr?, .definition?) | strings' "$dashboard"
    cat "$rules"
  } | grep -oE '\b(micronode|process)_[a-zA-Z0-9_:]+' | sort -u >"$work/used_names"
  unknown=""
  while read -r name; do
    family=$(echo "$name" | sed -E 's/_(bucket|sum|count)$//')
    if ! grep -qxF "$name" "$work/known" && ! grep -qxF "$family" "$work/known"; then
      unknown+="$name "
    fi
  done <"$work/used_names"
  if [ -n "$unknown" ]; then
    fail "metric names in the dashboard or alerts that are neither in $metrics_file nor in FEATURE_FAMILIES: $unknown"
  else
    echo "metric names: $(wc -l <"$work/used_names") used, all in the scrape or in FEATURE_FAMILIES"
  fi
fi

if [ "$failed" -ne 0 ]; then
  echo "deploy checks: FAILED" >&2
  exit 1
fi
echo "deploy checks: passed"

#!/usr/bin/env bash
# Runs the client examples (examples/README.md) against a fresh server: starts $MICRONODE_BIN
# (default: the release binary, scripts/lib_boot.sh) on 127.0.0.1:0 with a temporary sled
# directory, then runs
#   - examples/python/kv_tour.py (python3);
#   - examples/js/kv_tour.mjs (Node 18+): outside CI a missing or older node is skipped with a
#     message; with CI=true a missing node is installed with apt-get (nodejs);
#   - the Rust example binary $MICRONODE_EXAMPLE_CLIENT, when set
#     (cargo build --release --example client → target/release/examples/client).
# Each gets MICRONODE_URL; MICRONODE_TOKEN is passed through when the caller set it, and its
# value must not appear in any example's output. Each example is bounded (EXAMPLE_TIMEOUT,
# 120 s). Exit 1 if any example fails.
#
# With AUTH=1 the server requires tokens and the examples get a freshly minted one.
#
# Usage: [AUTH=1] [MICRONODE_BIN=path/to/micronode] [MICRONODE_EXAMPLE_CLIENT=path/to/client] scripts/examples_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib_boot.sh
bin="${MICRONODE_BIN:-$(micronode_bin)}"
[ -x "$bin" ] || { echo "examples_smoke: no server binary at $bin (set MICRONODE_BIN)" >&2; exit 1; }
# boot_micronode starts whatever micronode_bin names.
micronode_bin() { echo "$bin"; }

work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill "$pid" 2>/dev/null || true; fi
  if [ -n "$pid" ]; then wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# AUTH=1: the server requires tokens; a token for tenant `examples`, allowed every op, is minted
# with the binary and handed to the examples as MICRONODE_TOKEN (unless the caller gave one).
auth_env=()
if [ "${AUTH:-0}" = 1 ]; then
  "$bin" auth init --keys "$work/keys.toml" >/dev/null
  auth_env=(MICRONODE_AUTH=on MICRONODE_AUTH_KEYS_FILE="$work/keys.toml")
  if [ -z "${MICRONODE_TOKEN:-}" ]; then
    MICRONODE_TOKEN=$("$bin" auth mint --keys "$work/keys.toml" --tenant examples)
    export MICRONODE_TOKEN
  fi
fi
boot_micronode "$work/log" MICRONODE_BIND_ADDR=127.0.0.1:0 \
  MICRONODE_STORAGE_PATH="$work/data" "${auth_env[@]}"
pid=$BOOT_PID
export MICRONODE_URL="http://$BOOT_ADDR"
echo "server at $MICRONODE_URL${auth_env:+ (tokens required)}"

failed=() passed=() skipped=()

# run NAME CMD… — runs one example, bounded; records the verdict.
run() {
  local name=$1 rc=0
  shift
  echo "== $name"
  timeout "${EXAMPLE_TIMEOUT:-120}" "$@" >"$work/out" 2>&1 || rc=$?
  cat "$work/out"
  if [ -n "${MICRONODE_TOKEN:-}" ] && grep -qF -- "$MICRONODE_TOKEN" "$work/out"; then
    echo "examples_smoke: $name printed the token"
    rc=1
  fi
  if [ "$rc" -eq 0 ]; then
    passed+=("$name")
  else
    [ "$rc" -eq 124 ] && echo "examples_smoke: $name did not finish within ${EXAMPLE_TIMEOUT:-120} s"
    failed+=("$name (exit $rc)")
  fi
}

apt_install() {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Python
if ! command -v python3 >/dev/null && [ "${CI:-}" = true ]; then
  echo "== installing python3"
  apt_install python3
fi
if command -v python3 >/dev/null; then
  run "python: examples/python/kv_tour.py" python3 examples/python/kv_tour.py
else
  echo "== python: SKIPPED (no python3 on this machine)"
  skipped+=(python)
fi

# Node (18 or later: the built-in fetch)
if ! command -v node >/dev/null && [ "${CI:-}" = true ]; then
  echo "== installing nodejs"
  apt_install nodejs
fi
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -ge 18 ]; then
  run "node: examples/js/kv_tour.mjs" node examples/js/kv_tour.mjs
elif [ "${CI:-}" = true ]; then
  echo "== node: needs Node 18 or later, found ${node_major/#0/none}"
  failed+=("node (Node 18+ missing)")
else
  echo "== node: SKIPPED (needs Node 18 or later, found ${node_major/#0/none})"
  skipped+=(node)
fi

# Rust
if [ -n "${MICRONODE_EXAMPLE_CLIENT:-}" ]; then
  if [ -x "$MICRONODE_EXAMPLE_CLIENT" ]; then
    run "rust: $MICRONODE_EXAMPLE_CLIENT" "$MICRONODE_EXAMPLE_CLIENT"
  else
    echo "== rust: no executable at $MICRONODE_EXAMPLE_CLIENT"
    failed+=("rust (no binary)")
  fi
else
  echo "== rust: not run (set MICRONODE_EXAMPLE_CLIENT to the built example)"
  skipped+=(rust)
fi

if ! curl -fsS -o /dev/null "$MICRONODE_URL/healthz"; then
  echo "examples_smoke: the server stopped answering; its log:"
  cat "$work/log"
  failed+=("server alive after the examples")
fi

echo "== examples: passed ${#passed[@]}, skipped ${#skipped[@]}${skipped[*]:+ (${skipped[*]})}, failed ${#failed[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  printf '  FAILED: %s\n' "${failed[@]}"
  exit 1
fi

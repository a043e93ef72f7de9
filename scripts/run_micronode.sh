#!/usr/bin/env bash
# Format, lint, build (release), start Micronode in the background, wait for /healthz by
# polling, show /readyz and the head of /metrics, and write a PID file.
# Knobs: BIND (default 127.0.0.1:5310), PID_FILE (default ./micronode.pid),
# LOG_FILE (default ./micronode.log), SKIP_CHECKS=1 to skip fmt/clippy. Every MICRONODE_*
# variable in the environment is passed through to the server.
set -euo pipefail
cd "$(dirname "$0")/.."

BIND="${BIND:-127.0.0.1:5310}"
PID_FILE="${PID_FILE:-./micronode.pid}"
LOG_FILE="${LOG_FILE:-./micronode.log}"

if [ "${SKIP_CHECKS:-0}" != "1" ]; then
  cargo fmt --check
  cargo clippy --all-targets -- -D warnings
fi
cargo build --release --quiet

MICRONODE_BIND_ADDR="$BIND" ./target/release/micronode >"$LOG_FILE" 2>&1 &
echo $! >"$PID_FILE"

for _ in $(seq 1 200); do
  if curl -fsS "http://$BIND/healthz" >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    echo "micronode exited during boot:" >&2
    cat "$LOG_FILE" >&2
    exit 1
  fi
  sleep 0.05
done
curl -fsS "http://$BIND/healthz" >/dev/null

echo "micronode running: pid $(cat "$PID_FILE"), http://$BIND"
echo "--- /readyz"
curl -sS "http://$BIND/readyz"
echo
echo "--- /metrics (head)"
curl -sS "http://$BIND/metrics" | awk 'NR <= 12'

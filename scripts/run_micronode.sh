#!/usr/bin/env bash
# Format, lint, build (release), start Micronode in the background, wait for /healthz by
# polling (scripts/lib_boot.sh), show /readyz and the head of /metrics, and write a PID file.
# Knobs: MICRONODE_BIND_ADDR (kept when set), else BIND (default 127.0.0.1:5310); PID_FILE
# (default ./micronode.pid); LOG_FILE (default ./micronode.log, JSON lines unless
# MICRONODE_LOG_FORMAT is set); SKIP_CHECKS=1 to skip fmt/clippy; CARGO_TARGET_DIR. Every
# MICRONODE_* variable in the environment is passed through to the server.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib_boot.sh

BIND="${MICRONODE_BIND_ADDR:-${BIND:-127.0.0.1:5310}}"
PID_FILE="${PID_FILE:-./micronode.pid}"
LOG_FILE="${LOG_FILE:-./micronode.log}"

if [ "${SKIP_CHECKS:-0}" != "1" ]; then
  cargo fmt --check
  cargo clippy --all-targets -- -D warnings
fi
cargo build --release --quiet

boot_micronode "$LOG_FILE" MICRONODE_BIND_ADDR="$BIND"
echo "$BOOT_PID" >"$PID_FILE"
base="http://$BOOT_ADDR"

echo "micronode running: pid $BOOT_PID, $base (log: $LOG_FILE)"
echo "--- /readyz"
curl -sS "$base/readyz"
echo
echo "--- /metrics (head)"
curl -sS "$base/metrics" | awk 'NR <= 12'

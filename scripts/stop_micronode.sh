#!/usr/bin/env bash
# Stops the server started by run_micronode.sh (SIGTERM, then waits for it to exit).
# Knobs: PID_FILE (default ./micronode.pid), WAIT_SECS (default 15).
set -euo pipefail
cd "$(dirname "$0")/.."

PID_FILE="${PID_FILE:-./micronode.pid}"
WAIT_SECS="${WAIT_SECS:-15}"

if [ ! -f "$PID_FILE" ]; then
  echo "no PID file at $PID_FILE" >&2
  exit 1
fi
pid="$(cat "$PID_FILE")"
if ! kill -0 "$pid" 2>/dev/null; then
  echo "micronode (pid $pid) is not running"
  rm -f "$PID_FILE"
  exit 0
fi
kill -TERM "$pid"
for _ in $(seq 1 $((WAIT_SECS * 20))); do
  if ! kill -0 "$pid" 2>/dev/null; then
    rm -f "$PID_FILE"
    echo "micronode (pid $pid) stopped"
    exit 0
  fi
  sleep 0.05
done
echo "micronode (pid $pid) did not stop within ${WAIT_SECS}s" >&2
exit 1

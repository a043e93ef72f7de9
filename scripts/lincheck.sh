#!/usr/bin/env bash
# Linearizability of the KV API (docs/TESTING-LINEARIZABILITY.md): the checker's own tests,
# (a) no restart and (b) clean restarts — the same as `cargo test --test linearizability` —
# then (c) kill -9 with requests in flight, ROUNDS times (`cargo test` runs 3).
# Knobs: ROUNDS (default 5), MICRONODE_LINCHECK_SEED (repeat a run's op mix), SKIP_DEFAULT=1
# to run only (c). Exit status non-zero if any history is not shown linearizable; every
# failing history is saved as JSON under target/tmp/ (replay it with the `replay` test).
set -euo pipefail
cd "$(dirname "$0")/.."

export MICRONODE_LINCHECK_ROUNDS="${ROUNDS:-5}"
status=0
if [ "${SKIP_DEFAULT:-0}" != "1" ]; then
  echo "== checker tests, (a) no restart, (b) clean restarts"
  cargo test --test linearizability || status=1
fi
echo "== (c) kill -9 while requests are in flight, $MICRONODE_LINCHECK_ROUNDS rounds"
cargo test --test linearizability c_kill_9 -- --nocapture || status=1
if [ "$status" != 0 ]; then
  echo "== NOT all histories shown linearizable; witnesses above; histories in target/tmp/lincheck-history-*.json"
fi
exit "$status"

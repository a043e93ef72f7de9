#!/usr/bin/env bash
# Regression guard for CI: a short bench_compare (HTTP/1 only) that fails only when Micronode's
# /healthz falls below 0.8 of the bare hyper baseline's RPS (the median of the per-round ratios,
# each round timing bare and /healthz back to back) — loose on purpose, so that noise
# on a shared 2-core machine never fails a build, while a real regression (an allocation storm,
# a lock, logging on the hot path) does. The targets of docs/PERFORMANCE.md are measured by
# scripts/bench_compare.sh and reported there, not asserted here.
# Knobs: MIN_RATIO (0.8), ROUNDS (3), DUR (2s).
set -euo pipefail
cd "$(dirname "$0")/.."
MIN_RATIO="${MIN_RATIO:-0.8}"
out=$(H2=0 ROUNDS="${ROUNDS:-3}" DUR="${DUR:-2s}" scripts/bench_compare.sh)
echo "$out" | sed -n '/^HTTP\/1.1/,/per-round/p'
rps=$(echo "$out" | awk '/^RATIOS/ { sub("pair_rps=", "", $6); print $6 }')
if awk -v r="$rps" -v m="$MIN_RATIO" 'BEGIN { exit !(r >= m) }'; then
  echo "perf guard: healthz/bare RPS ratio $rps >= $MIN_RATIO"
else
  echo "perf guard: FAILED — healthz/bare RPS ratio $rps < $MIN_RATIO" >&2
  exit 1
fi

#!/usr/bin/env bash
# Regression guard for CI, in two parts:
# 1. Instructions per request, counted by callgrind (scripts/perf_instructions.sh): /healthz and
#    KV GET against bare hyper's, exact and unmoved by the machine's load, so it fails on a real
#    regression (an allocation storm, logging on the hot path, a heavier route) and on nothing else.
# 2. Requests per second: a short bench_compare (HTTP/1 only) that fails when Micronode's /healthz
#    falls below MIN_RATIO (0.8) of bare hyper's RPS (the median of the per-round ratios, each
#    round timing bare and /healthz back to back). Loose on purpose: this catches what
#    instruction counts cannot see (a lock, a sleep, an extra syscall). A shared 2-core machine
#    has slow minutes that can pull one run's median under it, so a run below the threshold is
#    measured once more, and the guard fails only when every attempt (ATTEMPTS, 2) is below;
#    a real regression is below in all of them. Every attempt is printed.
# The targets of docs/PERFORMANCE.md are measured by scripts/bench_compare.sh and reported
# there, not asserted here.
# Knobs: MIN_RATIO (0.8), ROUNDS (3), DUR (2s), ATTEMPTS (2); MAX_HEALTHZ, MAX_GET and N go to
# scripts/perf_instructions.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
MIN_RATIO="${MIN_RATIO:-0.8}"
ATTEMPTS="${ATTEMPTS:-2}"

scripts/perf_instructions.sh

for attempt in $(seq 1 "$ATTEMPTS"); do
  out=$(H2=0 ROUNDS="${ROUNDS:-3}" DUR="${DUR:-2s}" scripts/bench_compare.sh)
  echo "attempt $attempt of $ATTEMPTS:"
  echo "$out" | sed -n '/^HTTP\/1.1/,/per-round/p'
  rps=$(echo "$out" | awk '/^RATIOS/ { sub("pair_rps=", "", $6); print $6 }')
  if awk -v r="$rps" -v m="$MIN_RATIO" 'BEGIN { exit !(r >= m) }'; then
    echo "perf guard: healthz/bare RPS ratio $rps >= $MIN_RATIO"
    exit 0
  fi
  echo "perf guard: healthz/bare RPS ratio $rps < $MIN_RATIO on attempt $attempt"
done
echo "perf guard: FAILED — healthz/bare RPS ratio below $MIN_RATIO in all $ATTEMPTS attempts" >&2
exit 1

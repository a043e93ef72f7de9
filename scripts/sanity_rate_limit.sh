#!/usr/bin/env bash
# Rate-limit smoke: bursts /dev/rl past its bucket and expects 429s with Retry-After, then
# waits (polling, bounded) for the bucket to refill. Knobs: BASE_URL, N (default 40).
# Starts nothing itself.
set -euo pipefail
BASE_URL="${BASE_URL:-http://127.0.0.1:5310}"
N="${N:-40}"
. "$(dirname "$0")/lib_smoke.sh"

ok=0
limited=0
for _ in $(seq 1 "$N"); do
  case "$(status "$BASE_URL/dev/rl")" in
    200) ok=$((ok + 1)) ;;
    429) limited=$((limited + 1)) ;;
  esac
done
echo "burst of $N: $ok x 200, $limited x 429"
check "some requests pass" yes "$([ "$ok" -gt 0 ] && echo yes || echo no)"
check "the burst is limited" yes "$([ "$limited" -gt 0 ] && echo yes || echo no)"
# One 429 captured whole (headers and body), so its checks cannot race a refill.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
got429=no
for _ in $(seq 1 "$N"); do
  if [ "$(curl -sS -D "$tmp/h" -o "$tmp/b" -w '%{http_code}' "$BASE_URL/dev/rl")" = 429 ]; then
    got429=yes
    break
  fi
done
check "a 429 was captured" yes "$got429"
hdr=$(tr -d '\r' <"$tmp/h" | awk -F': ' 'tolower($1)=="retry-after"{print $2}')
check "429 carries Retry-After in whole seconds" yes "$(echo "$hdr" | grep -Eq '^[0-9]+$' && echo yes || echo no)"
check "429 envelope code" rate_limit "$(jq -r .code <"$tmp/b")"
refilled=no
for _ in $(seq 1 60); do
  if [ "$(status "$BASE_URL/dev/rl")" = 200 ]; then refilled=yes; break; fi
  sleep 0.1
done
check "bucket refills" yes "$refilled"
check "admin plane is never rate limited" 200 "$(status "$BASE_URL/healthz")"
finish

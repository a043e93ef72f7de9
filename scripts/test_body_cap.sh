#!/usr/bin/env bash
# Body-cap smoke against a running server with dev routes on and the default 1 MiB cap.
# Knobs: BASE_URL (default http://127.0.0.1:5310), CAP (the server's MICRONODE_MAX_BODY_BYTES,
# default 1048576). Starts nothing itself.
set -euo pipefail
BASE_URL="${BASE_URL:-http://127.0.0.1:5310}"
. "$(dirname "$0")/lib_smoke.sh"

cap="${CAP:-1048576}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -c "$cap" /dev/zero | tr '\0' 'a' >"$tmp/at_cap"
head -c $((cap + 1)) /dev/zero | tr '\0' 'a' >"$tmp/over_cap"

check "PUT at the cap is stored" 201 \
  "$(status -X PUT --data-binary @"$tmp/at_cap" "$BASE_URL/v1/kv/smoke/at-cap-$$")"
check "PUT one byte over the cap is 413" 413 \
  "$(status -X PUT --data-binary @"$tmp/over_cap" "$BASE_URL/v1/kv/smoke/over-$$")"
check "413 envelope code" body_cap \
  "$(code -X PUT --data-binary @"$tmp/over_cap" "$BASE_URL/v1/kv/smoke/over-$$")"
check "declared length over the cap, no body sent: 413" 413 \
  "$(status -X PUT -H 'content-length: 99999999' "$BASE_URL/v1/kv/smoke/x" --max-time 5)"
check "chunked POST is 411" 411 \
  "$(status -X POST -H 'transfer-encoding: chunked' -H 'content-type: application/json' --data-binary '{}' "$BASE_URL/dev/echo")"
check "empty PUT is fine" 201 \
  "$(status -X PUT --data-binary '' "$BASE_URL/v1/kv/smoke/empty-$$")"
check "echo round trip" '{"message":"hi"}' \
  "$(curl -sS -X POST -H 'content-type: application/json' --data-binary '{"message":"hi"}' "$BASE_URL/dev/echo")"
check "malformed JSON is 400" 400 \
  "$(status -X POST --data-binary '{nope' "$BASE_URL/dev/echo")"
finish

#!/usr/bin/env bash
# Decode-guard smoke against a running server with dev routes on and compression off.
# Knob: BASE_URL (default http://127.0.0.1:5310). Starts nothing itself.
set -euo pipefail
BASE_URL="${BASE_URL:-http://127.0.0.1:5310}"
. "$(dirname "$0")/lib_smoke.sh"

body='{"message":"hi"}'
for enc in gzip GZIP identity br; do
  check "Content-Encoding: $enc is 415 unsupported_encoding" unsupported_encoding \
    "$(code -X POST -H "content-encoding: $enc" --data-binary "$body" "$BASE_URL/dev/echo")"
done
check "Content-Encoding: gzip, br is 415 stacked_encoding" stacked_encoding \
  "$(code -X POST -H 'content-encoding: gzip, br' --data-binary "$body" "$BASE_URL/dev/echo")"
check "two Content-Encoding headers are 415 stacked_encoding" stacked_encoding \
  "$(code -X POST -H 'content-encoding: gzip' -H 'content-encoding: gzip' --data-binary "$body" "$BASE_URL/dev/echo")"
check "status of a stacked encoding" 415 \
  "$(status -X PUT -H 'content-encoding: gzip, br' --data-binary x "$BASE_URL/v1/kv/smoke/enc")"
check "nothing was stored" 404 "$(status "$BASE_URL/v1/kv/smoke/enc")"
check "plain body passes" 200 \
  "$(status -X POST --data-binary "$body" "$BASE_URL/dev/echo")"
finish

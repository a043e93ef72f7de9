#!/usr/bin/env bash
# Runs the README's token tour ("Tokens, a tour") against a fresh release server on
# 127.0.0.1:0 in a temp dir, checking each answer the README shows: init → mint → curl with a
# token → 403 outside its caveats → attenuate → whoami → revoke → 401. Exit 1 on the first
# answer that differs. Usage: [MICRONODE_BIN=path] scripts/auth_tour.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib_boot.sh
bin=$(realpath "${MICRONODE_BIN:-$(micronode_bin)}")
[ -x "$bin" ] || { echo "auth_tour: no server binary at $bin" >&2; exit 1; }
micronode_bin() { echo "$bin"; }
work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "auth_tour: FAILED: $*" >&2; exit 1; }
cd "$work"

"$bin" auth init --keys keys.toml
boot_micronode "$work/server.log" MICRONODE_BIND_ADDR=127.0.0.1:0 MICRONODE_LOG_FORMAT=json \
  MICRONODE_AUTH=on MICRONODE_AUTH_KEYS_FILE=keys.toml MICRONODE_STORAGE_PATH="$work/data"
pid=$BOOT_PID
url="http://$BOOT_ADDR"
ADMIN=$("$bin" auth mint --keys keys.toml --tenant ops)
APP=$("$bin" auth mint --keys keys.toml --tenant acme --bucket app --ops get,put,list --ttl 3600)
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

s=$(status -X PUT --data-binary hello -H "authorization: Bearer $APP" "$url/v1/kv/app/greeting")
[ "$s" = 201 ] || fail "PUT with the app token: $s, want 201"
body=$(curl -sf -H "authorization: Bearer $APP" "$url/v1/kv/app/greeting")
[ "$body" = hello ] || fail "GET with the app token: $body"
s=$(status -H "authorization: Bearer $APP" "$url/v1/kv/other/x")
[ "$s" = 403 ] || fail "another bucket: $s, want 403"
READER=$(echo "$APP" | "$bin" auth attenuate - --ops get)
s=$(status -X PUT --data-binary no -H "authorization: Bearer $READER" "$url/v1/kv/app/greeting")
[ "$s" = 403 ] || fail "PUT with the attenuated token: $s, want 403"
who=$(curl -sf -H "authorization: Bearer $APP" "$url/v1/auth/whoami")
echo "$who" | grep -q '"tenant":"acme"' || fail "whoami: $who"
echo "$who" | grep -q '"keys":1' || fail "whoami usage: $who"
out=$(echo "$APP" | "$bin" auth revoke - --token "$ADMIN" --url "$url")
echo "$out" | grep -q '"revoked"' || fail "revoke: $out"
s=$(status -H "authorization: Bearer $READER" "$url/v1/kv/app/greeting")
[ "$s" = 401 ] || fail "the attenuated token after revoking its parent: $s, want 401"
grep -qF "$APP" "$work/server.log" && fail "a token is in the server log"
echo "auth_tour: OK (init, mint, 201/200, 403, attenuate, whoami, revoke, 401)"

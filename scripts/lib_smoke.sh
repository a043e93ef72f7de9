# Shared helpers for the curl smoke scripts (sourced, not run).
# check NAME WANT GOT: prints the verdict, counts failures.
fails=0
check() {
  local name="$1" want="$2" got="$3"
  if [ "$want" = "$got" ]; then
    printf 'ok    %-58s %s\n' "$name" "$got"
  else
    printf 'FAIL  %-58s want %s, got %s\n' "$name" "$want" "$got"
    fails=$((fails + 1))
  fi
}
# status ARGS...: the HTTP status of a curl call.
status() { curl -sS -o /dev/null -w '%{http_code}' "$@"; }
# code ARGS...: the envelope "code" of a curl call.
code() { curl -sS "$@" | jq -r .code; }
finish() {
  if [ "$fails" -gt 0 ]; then
    echo "$fails check(s) failed"
    exit 1
  fi
  echo "all checks passed"
}

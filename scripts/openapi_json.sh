#!/usr/bin/env bash
# usage: scripts/openapi_json.sh [--check]
# Writes docs/openapi.json from docs/openapi.yaml (the document GET /openapi.json serves, built
# into the binary), or with --check regenerates it to a temp file and fails (exit 1, with the
# diff) when the checked-in docs/openapi.json differs. Needs python3 with PyYAML
# (`pip install pyyaml`); exit 3 when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

yaml=docs/openapi.yaml
json=docs/openapi.json
if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "openapi_json: python3 with PyYAML is needed (pip install pyyaml)" >&2
  exit 3
fi
gen() {
  python3 -c 'import yaml,json,sys; json.dump(yaml.safe_load(open(sys.argv[1])), open(sys.argv[2],"w"), indent=1, sort_keys=False)' "$yaml" "$1"
  printf '\n' >>"$1"
}
case "${1:-}" in
  --check)
    tmp=$(mktemp)
    trap 'rm -f "$tmp"' EXIT
    gen "$tmp"
    if ! diff -u "$json" "$tmp"; then
      echo "openapi_json: $json is stale: run scripts/openapi_json.sh and commit it" >&2
      exit 1
    fi
    echo "openapi_json: $json matches $yaml"
    ;;
  "") gen "$json" ;;
  *) sed -n 's/^# usage: /usage: /p' "$0" >&2; exit 2 ;;
esac

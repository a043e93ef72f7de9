#!/usr/bin/env bash
# Runs each cargo-fuzz target for a bounded time. Needs the nightly toolchain and a C++
# compiler (libFuzzer); installs cargo-fuzz when missing. Not run in CI.
#   FUZZ_SECS=60 scripts/fuzz.sh            # every target, 60 s each
#   FUZZ_SECS=300 scripts/fuzz.sh key       # one target
# Crashes land in fuzz/artifacts/<target>/; the corpus grows in fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECS:-60}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(head key config token)

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

for t in "${targets[@]}"; do
  echo "== fuzz $t for ${secs}s"
  cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=2048
done
echo "fuzz: ${#targets[@]} targets ran ${secs}s each without a crash"

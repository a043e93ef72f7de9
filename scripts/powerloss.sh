#!/usr/bin/env bash
# Power-loss test: Micronode's store on LazyFS, writes in flight, every un-fsynced byte dropped,
# kill -9, remount, restart, every acknowledged write checked. See scripts/powerloss/README.md.
#
# Knobs (environment):
#   ROUNDS       rounds to run (default 100; SCENARIO=regression: 3)
#   DUR          max seconds of load per round; the crash point is random in [0.4*DUR, DUR] (default 4)
#   DURABILITY   sync (default) or periodic
#   CONTROL=1    expect loss: exit 0 only when at least one acknowledged write was lost
#                (use with DURABILITY=periodic, to show the harness really drops data)
#   SCENARIO     load (default) or regression (one 600 KiB PUT, then small acked writes, crash)
#                REGRESSION_BIG_KIB sets the first PUT's size (default 600)
#   WRITERS      concurrent writers (default 16); LARGE_FRAC share of large PUTs (default 0.08)
#   SEED         random seed (default: time)
#   MICRONODE_BIN  server binary (default ${CARGO_TARGET_DIR:-target}/release/micronode; built
#                  with `cargo build --release` when missing)
#   LAZYFS_BIN   LazyFS binary (default ${LAZYFS_HOME:-$HOME/.cache/micronode-lazyfs}/bin/lazyfs)
#   WORK         scratch directory (default: a new temp dir, removed at the end unless KEEP_WORK=1
#                or a failed round was kept for inspection)
#   SUMMARY      write the totals as JSON to this file
# Exit: 0 pass, 1 acknowledged writes lost / corrupted / failed restarts (or CONTROL=1 and no
# loss), 2 harness error, 3 this machine cannot run it (no /dev/fuse, FUSE mount refused,
# LazyFS not built).
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIO="${SCENARIO:-load}"
if [ "$SCENARIO" = regression ]; then ROUNDS="${ROUNDS:-3}"; else ROUNDS="${ROUNDS:-100}"; fi
DUR="${DUR:-4}"
DURABILITY="${DURABILITY:-sync}"
LAZYFS_HOME="${LAZYFS_HOME:-$HOME/.cache/micronode-lazyfs}"
LAZYFS_BIN="${LAZYFS_BIN:-$LAZYFS_HOME/bin/lazyfs}"
MICRONODE_BIN="${MICRONODE_BIN:-${CARGO_TARGET_DIR:-target}/release/micronode}"

cannot() {
  echo "powerloss: cannot run here: $*" >&2
  exit 3
}

[ -e /dev/fuse ] || cannot "/dev/fuse does not exist (FUSE is needed for LazyFS)"
[ -r /dev/fuse ] && [ -w /dev/fuse ] || cannot "/dev/fuse is not readable and writable by $(id -un)"
command -v fusermount3 >/dev/null || cannot "fusermount3 missing (apt-get install fuse3)"
command -v python3 >/dev/null || cannot "python3 missing"
[ -x "$LAZYFS_BIN" ] || cannot "LazyFS not found at $LAZYFS_BIN (set LAZYFS_BIN to a LazyFS binary; see scripts/powerloss/README.md)"

if [ ! -x "$MICRONODE_BIN" ]; then
  echo "powerloss: $MICRONODE_BIN missing: cargo build --release"
  cargo build --release --quiet
fi
[ -x "$MICRONODE_BIN" ] || { echo "powerloss: no binary at $MICRONODE_BIN" >&2; exit 2; }
MICRONODE_BIN="$(cd "$(dirname "$MICRONODE_BIN")" && pwd)/$(basename "$MICRONODE_BIN")"

own_work=0
if [ -z "${WORK:-}" ]; then
  WORK="$(mktemp -d /tmp/micronode-powerloss.XXXXXX)"
  own_work=1
fi
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"

cleanup() {
  # Anything still mounted under WORK (a harness error mid-round) is unmounted.
  awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | while read -r m; do
    fusermount3 -uz "$m" 2>/dev/null || true
  done
  if [ "$own_work" = 1 ] && [ "${KEEP_WORK:-0}" != 1 ] && ! ls -d "$WORK"/round-* >/dev/null 2>&1; then
    rm -rf "$WORK"
  elif [ -d "$WORK" ]; then
    echo "powerloss: work directory kept: $WORK"
  fi
}
trap cleanup EXIT

# Can this machine mount FUSE at all? A one-second LazyFS mount answers it.
probe="$WORK/probe"
mkdir -p "$probe/root" "$probe/mnt"
cat >"$probe/cfg.toml" <<EOF
[faults]
fifo_path="$probe/faults.fifo"
[cache]
apply_eviction=false
[cache.simple]
custom_size="16mb"
blocks_per_page=1
[filesystem]
log_all_operations=false
logfile=""
EOF
"$LAZYFS_BIN" "$probe/mnt" --config-path "$probe/cfg.toml" -o modules=subdir -o "subdir=$probe/root" -f \
  >"$probe/log" 2>&1 &
probe_pid=$!
disown "$probe_pid" # LazyFS aborts when unmounted; keep bash from reporting that
mounted=0
for _ in $(seq 1 400); do
  if awk -v m="$probe/mnt" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; then mounted=1; break; fi
  kill -0 "$probe_pid" 2>/dev/null || break
  sleep 0.05
done
if [ "$mounted" = 1 ]; then
  echo ok >"$probe/mnt/x" && [ -f "$probe/root/x" ] || mounted=0
  fusermount3 -u "$probe/mnt" || fusermount3 -uz "$probe/mnt" || true
fi
for _ in $(seq 1 200); do kill -0 "$probe_pid" 2>/dev/null || break; sleep 0.05; done
if [ "$mounted" != 1 ]; then
  cat "$probe/log" >&2 || true
  rm -rf "$probe"
  cannot "a FUSE mount with LazyFS failed (needs root or user_allow_other, and /dev/fuse usable in this container)"
fi
rm -rf "$probe"

args=(--lazyfs "$LAZYFS_BIN" --micronode "$MICRONODE_BIN" --work "$WORK" --rounds "$ROUNDS"
  --dur "$DUR" --durability "$DURABILITY" --scenario "$SCENARIO")
[ "${CONTROL:-0}" = 1 ] && args+=(--control)
[ -n "${WRITERS:-}" ] && args+=(--writers "$WRITERS")
[ -n "${LARGE_FRAC:-}" ] && args+=(--large-frac "$LARGE_FRAC")
[ -n "${SEED:-}" ] && args+=(--seed "$SEED")
[ -n "${SUMMARY:-}" ] && args+=(--summary "$SUMMARY")
[ -n "${REGRESSION_BIG_KIB:-}" ] && args+=(--regression-big-kib "$REGRESSION_BIG_KIB")
[ -n "${LAZYFS_CACHE:-}" ] && args+=(--cache-size "$LAZYFS_CACHE")

set +e
python3 scripts/powerloss/driver.py "${args[@]}"
rc=$?
set -e
exit "$rc"

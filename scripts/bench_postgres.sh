#!/usr/bin/env bash
# The postgres engine against the database's own ceiling, in one run on one throwaway cluster
# (scripts/pg_cluster.sh, fsync on, not pinned: it shares the machine as a database on the same
# host would). Each round alternates a pgbench row and a Micronode row:
#   pgbench  -n -M prepared -j 1, pinned to CLIENT_CPU like wrk, on the engine's own tables in
#            schema `bench`: `select` is the engine's single-row read exactly as the node sent it
#            (read back from pg_stat_activity) on the 128 B record the node wrote; `upsert` one
#            new row into kv in the engine's statement shape (random key, 128 B); `step` the
#            engine's whole write step (BEGIN; lock the counter row; lock the key; then pipelined:
#            bump the counter, upsert, insert the change row, pg_notify; COMMIT);
#   micronode KV GET / PUT 128 B (random new keys) through the postgres engine, one node on
#            core SERVER_CPU with one worker, wrk on CLIENT_CPU;
#   2 nodes  the same GET and PUT with the connections split over two nodes on one schema, the
#            second node started for these rows only; before them, a key written through either
#            node must read back the same through the other, or the run fails;
#   sled     `durability = "sync"`, same pinning, for reference (SLED=0 leaves it out).
# pgbench runs at CONNS connections and, for the writes, also at 1; the select also at POOL,
# the node's pool size (the number of database connections its reads can use). Every row reports
# PostgreSQL's CPU per request: utime + stime of the cluster's postmaster and all its children
# (exited ones too, through the postmaster's cutime + cstime); Micronode rows also the server's.
# Prints the rows of each round, then medians (min–max) of ROUNDS and the ratios (each round's
# own, then their median) against the targets (Micronode GET ≥ 0.5 × pgbench select, PUT ≥ 0.5 × pgbench upsert, same connections).
# Every load run is bounded by DUR. Needs pgbench and psql (Debian: postgresql-client).
# Knobs: ROUNDS (3), DUR (5s, whole seconds), CONNS (64), THREADS (1), POOL (16), SLED (1), PGBENCH
# (pgbench from the newest /usr/lib/postgresql/*/bin), SLED_PORT (5381), PG_PORT (5382),
# PG2_PORT (5383).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib_bench.sh
ROUNDS="${ROUNDS:-3}"
SLED="${SLED:-1}"
POOL="${POOL:-16}"
SLED_PORT="${SLED_PORT:-5381}"
PG_PORT="${PG_PORT:-5382}"
PG2_PORT="${PG2_PORT:-5383}"

bench_init
case "$DUR" in
  *s) secs=${DUR%s} ;;
  *) secs=$DUR ;;
esac
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -lt 1 ]; then
  echo "DUR must be whole seconds (e.g. 5s): pgbench takes -T in seconds" >&2
  exit 2
fi
if [ -z "${PGBENCH:-}" ]; then
  for f in /usr/lib/postgresql/*/bin/pgbench; do [ -x "$f" ] && PGBENCH=$f; done
  : "${PGBENCH:=$(command -v pgbench || true)}"
fi
if [ ! -x "${PGBENCH:-}" ]; then
  echo "pgbench not found: install PostgreSQL (Debian: apt-get install postgresql)" >&2
  exit 1
fi
PSQL="${PGBENCH%/*}/psql"
[ -x "$PSQL" ] || PSQL=psql

pg_dir=$(mktemp -d)
cleanup() {
  bench_cleanup
  scripts/pg_cluster.sh stop "$pg_dir" >/dev/null 2>&1 || true
  rm -rf "$pg_dir"
}
trap cleanup EXIT
bench_prereqs
cargo build --release --quiet --bin micronode
url=$(scripts/pg_cluster.sh start "$pg_dir" | sed -n 's/^MICRONODE_TEST_PG_URL=//p')
: "${url:?pg_cluster.sh printed no URL}"
postmaster=$(head -1 "$pg_dir/data/postmaster.pid")
TCK=$(getconf CLK_TCK)
note() { echo "# $*"; }
note "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); $("$PGBENCH" --version)"

PG_ENV=(MICRONODE_STORAGE_ENGINE=postgres MICRONODE_PG_URL="$url" MICRONODE_PG_SCHEMA=bench
  MICRONODE_PG_POOL_SIZE="$POOL")
start_node "$PG_PORT" "${PG_ENV[@]}"
pg_pid=$NODE_PID
if [ "$SLED" = 1 ]; then
  start_node "$SLED_PORT" MICRONODE_STORAGE_ENGINE=sled MICRONODE_DURABILITY=sync
  sled_pid=$NODE_PID
fi

value=$(head -c 128 /dev/zero | tr '\0' v)
psql_q() { "$PSQL" -XAtq -v ON_ERROR_STOP=1 "$url" -c "$1"; }
for port in "$PG_PORT" ${sled_pid:+"$SLED_PORT"}; do
  curl -sf -o /dev/null -X PUT --data-binary "$value" "http://127.0.0.1:$port/v1/kv/bench/get128"
  curl -sf -o /dev/null "http://127.0.0.1:$port/v1/kv/bench/get128"
done
[ "$(psql_q "SELECT octet_length(value) FROM bench.kv WHERE bucket = 'bench' AND key = 'get128'")" = 128 ] \
  || { echo "the node's 128 B record is not in bench.kv" >&2; exit 1; }

# The engine's read, as its pool connections last sent it ($1 bucket, $2 key).
get_sql=$(psql_q "SELECT query FROM pg_stat_activity
  WHERE datname = current_database() AND query LIKE 'SELECT r.v, k.value, %' LIMIT 1")
# shellcheck disable=SC2016 # $1 and $2 are the statement's parameters, not the shell's
case "$get_sql" in
  *'$1'*'$2'*) ;;
  *) echo "the engine's read is not in pg_stat_activity (got: ${get_sql:-nothing})" >&2; exit 1 ;;
esac
# shellcheck disable=SC2016 # as above
printf '%s;\n' "$(printf '%s' "$get_sql" | sed 's/\$1/:bucket/; s/\$2/:key/')" >"$BENCH_TMP/select.sql"

# The engine's upsert (Sql::upsert), one row: its array parameters as one-element arrays.
upsert() { # KEY_EXPR REVISION_EXPR
  cat <<SQL
INSERT INTO bench.kv (bucket, key, value, content_type, revision, expires_at, owner)
SELECT b, k, v, c, $2, e, o
FROM unnest(ARRAY[:bucket]::text[], ARRAY[$1]::text[], ARRAY[:val]::bytea[], ARRAY['']::bytea[],
            ARRAY[NULL]::int8[], ARRAY[:owner]::text[]) AS t(b, k, v, c, e, o)
ON CONFLICT (bucket, key) DO UPDATE SET
    value = EXCLUDED.value, content_type = EXCLUDED.content_type,
    revision = EXCLUDED.revision, expires_at = EXCLUDED.expires_at, owner = EXCLUDED.owner;
SQL
}
{
  echo '\set id random(1, 1000000000)'
  upsert "'u' || :id" ":id"
} >"$BENCH_TMP/upsert.sql"
# The write step (run_step + View::apply) of one PUT of a new key. The notification names no
# schema a node serves ("pgbench <rev>"): PostgreSQL pays the same pg_notify, and the running
# node's listener picks these revisions up by its once-a-second poll instead of once per step.
{
  cat <<'SQL'
\set id random(1, 1000000000)
BEGIN;
SELECT v, 'pgbench ' || (v + 1) AS payload FROM bench.rev FOR UPDATE \gset
\set rev :v + 1
SELECT k.bucket, k.key, k.revision, k.expires_at, k.owner, octet_length(k.value)::bigint
FROM bench.kv k
JOIN unnest(ARRAY[:bucket]::text[], ARRAY['s' || :id]::text[]) AS t(b, k)
  ON k.bucket = t.b AND k.key = t.k
FOR UPDATE OF k;
\startpipeline
UPDATE bench.rev SET v = v + 1 RETURNING v;
SQL
  upsert "'s' || :id" ":rev"
  cat <<'SQL'
INSERT INTO bench.changes (revision, seq, bucket, key, kind, value, content_type, expires_at)
SELECT :rev, t.* FROM unnest(ARRAY[0]::int4[], ARRAY[:bucket]::text[], ARRAY['s' || :id]::text[],
                             ARRAY['put']::text[], ARRAY[:val]::bytea[], ARRAY['']::bytea[],
                             ARRAY[NULL]::int8[]) AS t;
SELECT pg_notify(:channel, :payload);
\endpipeline
COMMIT;
SQL
} >"$BENCH_TMP/step.sql"
PGB_VARS=(-D bucket=bench -D key=get128 -D "val=$value" -D owner=default -D channel=micronode_changes)

# put_lua NAME PREFIX — a wrk script that PUTs 128 B to random new keys PREFIX<n>.
put_lua() {
  cat >"$BENCH_TMP/$1.lua" <<LUA
math.randomseed(os.time())
local body = string.rep("v", 128)
request = function()
  return wrk.format("PUT", "/v1/kv/bench/$2" .. math.random(1, 1000000000), nil, body)
end
LUA
}
put_lua put k
put_lua put_a a
put_lua put_b b

# pg_ticks — CPU ticks of the cluster: the postmaster, its live children, and its exited
# children (cutime + cstime, added when it reaps them).
pg_ticks() {
  local stats=("/proc/$postmaster/stat") kid
  for kid in $(pgrep -P "$postmaster"); do stats+=("/proc/$kid/stat"); done
  { cat "${stats[@]}" 2>/dev/null || true; } | sed 's/.*) //' |
    awk 'NR == 1 { t += $14 + $15 } { t += $12 + $13 } END { print t }'
}
# per_req TICKS0 TICKS1 REQUESTS — CPU µs per request.
per_req() { awk -v a="$1" -v b="$2" -v n="$3" -v t="$TCK" 'BEGIN { printf "%.1f", (n > 0 ? (b - a) * 1e6 / t / n : 0) }'; }
# pctl — "p50 p99" of the numbers on stdin, one per line.
pctl() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "0 0"; exit }
  a = int(NR * 0.50 + 0.999999); b = int(NR * 0.99 + 0.999999); print v[a], v[b] }'; }

declare -A LABEL
ORDER=()
# record ID LABEL RPS P50 P99 SERVER_CPU PG_CPU — keeps one round's row and prints it.
record() {
  [ -n "${LABEL[$1]:-}" ] || ORDER+=("$1")
  LABEL[$1]=$2
  echo "$3 $4 $5 $6 $7" >>"$BENCH_TMP/row-$1"
  printf '%-6s %-34s %-8s %-8s %-9s %-9s %s\n' "$round" "$2" "$3" "$4" "$5" "$6" "$7"
}

# pgb ID LABEL FILE CONNS — a pgbench row; latency percentiles from its per-transaction log.
pgb() {
  local id=$1 label=$2 file=$3 conns=$4 g0 g1 out txns tps p50 p99
  rm -f "$BENCH_TMP"/pgblog.*
  g0=$(pg_ticks)
  if ! out=$(taskset -c "$CLIENT_CPU" "$PGBENCH" -n -M prepared -f "$BENCH_TMP/$file" \
    -c "$conns" -j 1 -T "$secs" -l --log-prefix="$BENCH_TMP/pgblog" "${PGB_VARS[@]}" "$url" 2>&1); then
    echo "pgbench $file failed:" >&2
    echo "$out" >&2
    exit 1
  fi
  # Its backends exit when it does: wait until the postmaster has reaped them (bounded).
  for _ in $(seq 50); do
    [ "$(pgrep -c -P "$postmaster")" -le "$pg_kids" ] && break
    sleep 0.1
  done
  g1=$(pg_ticks)
  txns=$(echo "$out" | awk -F': ' '/^number of transactions actually processed/ { print $2 + 0 }')
  tps=$(echo "$out" | awk '/^tps = / { printf "%.0f", $3 }')
  read -r p50 p99 < <(cat "$BENCH_TMP"/pgblog.* | awk '{ print $3 }' | pctl)
  rm -f "$BENCH_TMP"/pgblog.*
  record "$id" "$label" "$tps" "$p50" "$p99" - "$(per_req "$g0" "$g1" "$txns")"
}

# mn ID LABEL PID PORT PATH [wrk args…] — a Micronode row (wrk_run), with PostgreSQL's CPU.
mn() {
  local id=$1 label=$2 pid=$3 port=$4 path=$5 g0 g1 rps p50 p99 cpu reqs pgcpu=-
  shift 5
  g0=$(pg_ticks)
  read -r rps p50 p99 cpu reqs < <(WRK_STRICT=1 wrk_run "$pid" "http://127.0.0.1:$port$path" "$@")
  g1=$(pg_ticks)
  [ "$pid" = "${sled_pid:-}" ] || pgcpu=$(per_req "$g0" "$g1" "$reqs")
  record "$id" "$label" "$rps" "$p50" "$p99" "$cpu" "$pgcpu"
}

# two ID LABEL PATH_OR_SCRIPT… — CONNS/2 connections on each node at once: summed rps, the
# slower node's p50 and p99, both nodes' CPU and PostgreSQL's per request.
two() {
  local id=$1 label=$2 path=$3 g0 g1 s0 s1 port i=0 pids=() p sum rps p50 p99 reqs
  shift 3
  s0=$(($(cpu_ticks "$pg_pid") + $(cpu_ticks "$pg2_pid")))
  g0=$(pg_ticks)
  for port in "$PG_PORT" "$PG2_PORT"; do
    local script=()
    [ $# -gt 0 ] && script=(-s "$BENCH_TMP/$1.lua") && shift
    taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c$((CONNS / 2)) -d"$DUR" --latency "${script[@]}" \
      "http://127.0.0.1:$port$path" >"$BENCH_TMP/two-$i.txt" &
    pids+=($!)
    i=$((i + 1))
  done
  for p in "${pids[@]}"; do wait "$p"; done
  s1=$(($(cpu_ticks "$pg_pid") + $(cpu_ticks "$pg2_pid")))
  g1=$(pg_ticks)
  sum=$(awk -f "$BENCH_TMP/wrk_sum.awk" "$BENCH_TMP/two-0.txt" "$BENCH_TMP/two-1.txt")
  read -r rps p50 p99 reqs <<<"$sum"
  record "$id" "$label" "$rps" "$p50" "$p99" "$(per_req "$s0" "$s1" "$reqs")" "$(per_req "$g0" "$g1" "$reqs")"
}
cat >"$BENCH_TMP/wrk_sum.awk" <<'AWK'
function us(v) {
  if (v ~ /us$/) { sub(/us$/, "", v); return v + 0 }
  if (v ~ /ms$/) { sub(/ms$/, "", v); return v * 1000 }
  if (v ~ /s$/) { sub(/s$/, "", v); return v * 1000000 }
  return v + 0
}
/requests in/ { reqs += $1 }
/Requests\/sec/ { rps += $2 }
/Non-2xx or 3xx responses/ { bad += $NF }
$1 == "50%" && us($2) > p50 { p50 = us($2) }
$1 == "99%" && us($2) > p99 { p99 = us($2) }
END {
  if (bad > 0) { print bad " non-2xx/3xx responses over two nodes" > "/dev/stderr"; exit 1 }
  printf "%.0f %.0f %.0f %d\n", rps, p50, p99, reqs
}
AWK

# drop_pid PID — forgets a server stopped here, so that bench_cleanup never signals its pid.
drop_pid() {
  local keep=() p
  for p in "${BENCH_PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  BENCH_PIDS=(${keep[@]+"${keep[@]}"})
}

# same_data A B — a key written through node A reads back the same through node B.
same_data() {
  local body got
  body="written through $1 at $(date +%s.%N)"
  curl -sf -o /dev/null -X PUT --data-binary "$body" "http://127.0.0.1:$1/v1/kv/bench/two-nodes"
  got=$(curl -sf "http://127.0.0.1:$2/v1/kv/bench/two-nodes") || got="(no answer)"
  if [ "$got" != "$body" ]; then
    echo "two nodes disagree: wrote '$body' through :$1, read '$got' through :$2" >&2
    exit 1
  fi
}

# Warm-up: the pool's connections and their prepared statements, the cluster's caches.
round=0
pg_kids=$(pgrep -c -P "$postmaster")
DUR=1s wrk_run "$pg_pid" "http://127.0.0.1:$PG_PORT/v1/kv/bench/get128" >/dev/null
DUR=1s wrk_run "$pg_pid" "http://127.0.0.1:$PG_PORT/v1/kv/bench/x" -s "$BENCH_TMP/put.lua" >/dev/null
pg_kids=$(pgrep -c -P "$postmaster")

get=/v1/kv/bench/get128
echo "round  row                                rps      p50_us   p99_us    srv_us/req pg_us/req"
for round in $(seq 1 "$ROUNDS"); do
  pgb sel "pgbench select (engine get), c$CONNS" select.sql "$CONNS"
  mn get "micronode GET 128 B, c$CONNS" "$pg_pid" "$PG_PORT" "$get"
  [ "$POOL" = "$CONNS" ] || pgb selp "pgbench select, c$POOL (the node's pool)" select.sql "$POOL"
  pgb ups "pgbench upsert, c$CONNS" upsert.sql "$CONNS"
  mn put "micronode PUT 128 B, c$CONNS" "$pg_pid" "$PG_PORT" /v1/kv/bench/x -s "$BENCH_TMP/put.lua"
  pgb step "pgbench write step, c$CONNS" step.sql "$CONNS"
  pgb ups1 "pgbench upsert, c1" upsert.sql 1
  CONNS=1 mn put1 "micronode PUT 128 B, c1" "$pg_pid" "$PG_PORT" /v1/kv/bench/x -s "$BENCH_TMP/put.lua"
  pgb step1 "pgbench write step, c1" step.sql 1
  start_node "$PG2_PORT" "${PG_ENV[@]}"
  pg2_pid=$NODE_PID
  same_data "$PG_PORT" "$PG2_PORT"
  same_data "$PG2_PORT" "$PG_PORT"
  DUR=1s wrk_run "$pg2_pid" "http://127.0.0.1:$PG2_PORT$get" >/dev/null
  two get2 "2 nodes GET 128 B, c$((CONNS / 2)) each" "$get"
  two put2 "2 nodes PUT 128 B, c$((CONNS / 2)) each" /v1/kv/bench/x put_a put_b
  same_data "$PG_PORT" "$PG2_PORT"
  stop_pid "$pg2_pid"
  drop_pid "$pg2_pid"
  if [ "$SLED" = 1 ]; then
    mn sget "sled GET 128 B, c$CONNS" "$sled_pid" "$SLED_PORT" "$get"
    mn sput "sled sync PUT 128 B, c$CONNS" "$sled_pid" "$SLED_PORT" /v1/kv/bench/x -s "$BENCH_TMP/put.lua"
    CONNS=1 mn sput1 "sled sync PUT 128 B, c1" "$sled_pid" "$SLED_PORT" /v1/kv/bench/x -s "$BENCH_TMP/put.lua"
  fi
done

# The table: medians of the rounds (min–max for the rate).
col() { awk -v c="$2" '{ print $c }' "$BENCH_TMP/row-$1"; }
med() { if [ "$(col "$1" "$2" | head -1)" = - ]; then echo —; else col "$1" "$2" | median; fi; }
echo
echo "PostgreSQL engine, medians of $ROUNDS rounds, DUR=$DUR (rps min–max); wrk -t$THREADS," \
  "pgbench -M prepared -j 1; load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| row | rps | p50 µs | p99 µs | server CPU µs/req | PostgreSQL CPU µs/req |"
echo "|---|---|---|---|---|---|"
for id in "${ORDER[@]}"; do
  printf '| %s | %s (%s) | %s | %s | %s | %s |\n' "${LABEL[$id]}" "$(med "$id" 1)" \
    "$(col "$id" 1 | minmax)" "$(med "$id" 2)" "$(med "$id" 3)" "$(med "$id" 4)" "$(med "$id" 5)"
done
# ratio NAME A B [TARGET] — A's rate over B's in each round (the two rows ran back to back, so a
# round's ratio is less exposed to the machine's drift than a ratio of medians): their median
# (min–max).
ratio() {
  paste -d' ' <(col "$2" 1) <(col "$3" 1) | awk '{ printf "%.3f\n", ($2 > 0 ? $1 / $2 : 0) }' >"$BENCH_TMP/ratio"
  awk -v n="$1" -v m="$(median <"$BENCH_TMP/ratio")" -v r="$(minmax <"$BENCH_TMP/ratio")" -v t="${4:-}" 'BEGIN {
    v = t == "" ? "" : (m >= t ? "  target >= " t ": met" : "  target >= " t ": NOT met")
    printf "  %-44s %.3f (%s)%s\n", n, m, r, v }'
}
echo
echo "Ratios, median (min–max) of the $ROUNDS rounds' own ratios:"
ratio "micronode GET / pgbench select, c$CONNS" get sel 0.5
[ "$POOL" = "$CONNS" ] || ratio "micronode GET / pgbench select, c$POOL" get selp
ratio "micronode PUT / pgbench upsert, c$CONNS" put ups 0.5
ratio "micronode PUT / pgbench upsert, c1" put1 ups1
ratio "micronode PUT / pgbench write step, c$CONNS" put step
ratio "micronode PUT / pgbench write step, c1" put1 step1
ratio "pgbench write step / upsert, c$CONNS" step ups
ratio "2 nodes / 1 node, GET" get2 get
ratio "2 nodes / 1 node, PUT" put2 put

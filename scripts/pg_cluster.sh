#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the postgres engine's tests (docs/STORAGE.md,
# "PostgreSQL engine").
#
#   scripts/pg_cluster.sh start DIR   initdb into DIR, start on 127.0.0.1 with a free port,
#                                     trust auth for loopback, create database `micronode`,
#                                     print MICRONODE_TEST_PG_URL=... (also written to DIR/url);
#                                     TLS on, with a certificate for 127.0.0.1 and localhost
#                                     from a throwaway CA, DIR/ca.pem (needs openssl)
#   scripts/pg_cluster.sh stop DIR    pg_ctl stop -m fast (the data stays in DIR)
#   scripts/pg_cluster.sh resume DIR  start a stopped cluster again, on the same port
#
# PostgreSQL refuses to run as root: as root, the cluster runs as the unprivileged user
# $PG_USER (default micronode-pg, created when missing). With CI=true and no initdb, the
# Debian package `postgresql` is installed first. Every wait polls pg_isready with a bound.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [ -z "$cmd" ] || [ -z "$dir" ]; then
  echo "usage: $0 start|stop|resume DIR" >&2
  exit 2
fi
PG_USER=${PG_USER:-micronode-pg}

find_bin() {
  local name=$1 d
  for d in /usr/lib/postgresql/*/bin /usr/local/bin /usr/bin; do
    if [ -x "$d/$name" ]; then
      echo "$d/$name"
      return 0
    fi
  done
  command -v "$name" 2>/dev/null || return 1
}

# Runs a command as the cluster's owner (as is, when not root).
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$PG_USER" -- "$@"
  else
    "$@"
  fi
}

start() {
  if ! find_bin initdb >/dev/null; then
    if [ "${CI:-}" = true ]; then
      echo "== installing postgresql (initdb missing)" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    else
      echo "initdb not found: install PostgreSQL (Debian: apt-get install postgresql)" >&2
      exit 1
    fi
  fi
  local initdb pg_ctl pg_isready psql
  initdb=$(find_bin initdb)
  pg_ctl=$(find_bin pg_ctl)
  pg_isready=$(find_bin pg_isready)
  psql=$(find_bin psql)

  if [ "$(id -u)" = 0 ] && ! id "$PG_USER" >/dev/null 2>&1; then
    useradd -r -M -s /usr/sbin/nologin "$PG_USER"
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -e "$dir/data/PG_VERSION" ]; then
    echo "$dir already holds a cluster: stop it and remove the directory first" >&2
    exit 1
  fi
  mkdir -p "$dir/data" "$dir/sock"
  if [ "$(id -u)" = 0 ]; then
    chown -R "$PG_USER" "$dir"
    # Every parent must be traversable by the cluster's owner.
    chmod o+x "$dir"
  fi
  chmod 700 "$dir/data"
  tls_files

  as_owner "$initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }

  # A free port: ask the kernel for one, then hand it to the server (a tiny race, retried).
  local port attempt
  for attempt in 1 2 3 4 5; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    if as_owner "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
      -o "$(server_opts "$port")" start >/dev/null; then
      break
    fi
    echo "start on port $port failed (attempt $attempt); server.log:" >&2
    tail -5 "$dir/server.log" >&2 || true
    port=""
  done
  if [ -z "$port" ]; then
    echo "PostgreSQL did not start" >&2
    exit 1
  fi

  # Bounded readiness: pg_isready up to 30 s (pg_ctl -w already waited; this confirms TCP).
  local ok=""
  for _ in $(seq 300); do
    if "$pg_isready" -q -h 127.0.0.1 -p "$port" -t 1; then ok=1; break; fi
    sleep 0.1
  done
  if [ -z "$ok" ]; then
    echo "PostgreSQL not ready on 127.0.0.1:$port" >&2
    exit 1
  fi
  "$psql" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE micronode" >/dev/null
  echo "$port" >"$dir/port"
  local url="postgres://postgres@127.0.0.1:$port/micronode"
  echo "$url" >"$dir/url"
  echo "MICRONODE_TEST_PG_URL=$url"
}

# A throwaway CA (DIR/ca.pem, what clients trust) and the server's certificate for 127.0.0.1
# and localhost, signed by it (DIR/tls/server.{crt,key}, readable by the cluster's owner only).
tls_files() {
  if ! command -v openssl >/dev/null; then
    if [ "${CI:-}" = true ]; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >/dev/null
    else
      echo "openssl not found: the cluster runs without TLS" >&2
      return 0
    fi
  fi
  local t="$dir/tls" log="$dir/openssl.log"
  mkdir -p "$t"
  {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
      -subj "/CN=micronode test CA" -keyout "$t/ca.key" -out "$dir/ca.pem" &&
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=micronode test database" -keyout "$t/server.key" -out "$t/server.csr" &&
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$t/ext" &&
      openssl x509 -req -in "$t/server.csr" -CA "$dir/ca.pem" -CAkey "$t/ca.key" \
        -CAcreateserial -days 7 -extfile "$t/ext" -out "$t/server.crt"
  } >"$log" 2>&1 || {
    echo "openssl could not make the test certificates:" >&2
    cat "$log" >&2
    exit 1
  }
  rm -f "$t/ca.key" "$t/server.csr" "$dir/ca.srl"
  chmod 600 "$t/server.key"
  if [ "$(id -u)" = 0 ]; then chown -R "$PG_USER" "$t"; fi
}

# The server's options; the port is the only one that varies.
server_opts() {
  local tls=""
  if [ -e "$dir/tls/server.crt" ]; then
    tls="-c ssl=on -c ssl_cert_file=$dir/tls/server.crt -c ssl_key_file=$dir/tls/server.key"
  fi
  echo "-c listen_addresses=127.0.0.1 -p $1 -k $dir/sock -c fsync=on -c max_connections=200 -c shared_buffers=32MB $tls"
}

resume() {
  if [ ! -e "$dir/data/PG_VERSION" ] || [ ! -e "$dir/port" ]; then
    echo "no stopped cluster in $dir" >&2
    exit 1
  fi
  local pg_ctl pg_isready port
  pg_ctl=$(find_bin pg_ctl)
  pg_isready=$(find_bin pg_isready)
  dir=$(cd "$dir" && pwd)
  port=$(cat "$dir/port")
  as_owner "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 -o "$(server_opts "$port")" \
    start >/dev/null
  for _ in $(seq 300); do
    if "$pg_isready" -q -h 127.0.0.1 -p "$port" -t 1; then return 0; fi
    sleep 0.1
  done
  echo "PostgreSQL not ready on 127.0.0.1:$port" >&2
  exit 1
}

stop() {
  if [ ! -e "$dir/data/PG_VERSION" ]; then
    echo "no cluster in $dir" >&2
    exit 1
  fi
  local pg_ctl
  pg_ctl=$(find_bin pg_ctl)
  dir=$(cd "$dir" && pwd)
  as_owner "$pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  resume) resume ;;
  *) echo "usage: $0 start|stop|resume DIR" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Micronode over TLS against nginx (Debian's nginx-light, `return 200`), in one run, alternated
# round by round, with the same ECDSA P-256 certificate (`micronode tls dev-cert`) and the same
# pinning: each server on core SERVER_CPU (Micronode with one worker, nginx with one worker
# process), the load on core CLIENT_CPU. Rows (docs/PERFORMANCE.md):
#   ka_h1  keep-alive /healthz over TLS 1.3, wrk -c CONNS (OpenSSL client: X25519)
#   ka_h2  the same over HTTP/2 by ALPN, h2load -c 16 -m 10
#   hs_wrk full handshakes: wrk with `connection: close` (a new TLS 1.3 connection per request)
#   hs_x25519 / hs_hybrid  full handshakes from examples/tls_handshakes.rs (rustls, one group
#          offered, no resumption); nginx here links OpenSSL 3.0, which has no hybrid
# Each row: requests (or handshakes) per second and server CPU µs per request, from the
# server's utime+stime in /proc/<pid>/stat over the run. Medians of ROUNDS (min–max).
# Knobs: ROUNDS (3), DUR (5s), CONNS (64), HS_CONNS (16), HS_COUNT (20000), H2_REQUESTS
# (200000), NODE_PORT (5396), NGINX_PORT (5395), SERVER_CPU (0), CLIENT_CPU (1), PQ (preferred).
# Installs wrk, h2load, curl, jq and nginx-light with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib_bench.sh
ROUNDS="${ROUNDS:-3}"
NODE_PORT="${NODE_PORT:-5396}"
NGINX_PORT="${NGINX_PORT:-5395}"
HS_CONNS="${HS_CONNS:-16}"
HS_COUNT="${HS_COUNT:-20000}"
PQ="${PQ:-preferred}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

bench_tools
if ! command -v nginx >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
fi
cargo build --release --quiet --bin micronode --example tls_handshakes
bin="$TARGET_DIR/release/micronode"
hs="$TARGET_DIR/release/examples/tls_handshakes"

certs="$BENCH_TMP/certs"
"$bin" tls dev-cert --out "$certs" >/dev/null
cert="$certs/cert.pem"
key="$certs/key.pem"

# wait_tls URL PID — polls until URL answers over TLS (bounded: 10 s).
wait_tls() {
  local i
  for i in $(seq 1 200); do
    curl -fs --cacert "$cert" -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "server exited during boot" >&2; return 1; }
    sleep 0.05
  done
  echo "server did not answer $1" >&2
  return 1
}

env MICRONODE_WORKERS=1 RUST_LOG=warn MICRONODE_BIND_ADDR="127.0.0.1:$NODE_PORT" \
  MICRONODE_STORAGE_ENGINE=mem MICRONODE_TLS_CERT="$cert" MICRONODE_TLS_KEY="$key" \
  MICRONODE_TLS_PQ="$PQ" taskset -c "$SERVER_CPU" "$bin" 2>"$BENCH_TMP/node.log" &
NODE_PID=$!
BENCH_PIDS+=("$NODE_PID")
wait_tls "https://localhost:$NODE_PORT/healthz" "$NODE_PID"

ngx="$BENCH_TMP/nginx"
mkdir -p "$ngx/logs"
cat >"$ngx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $ngx/nginx.pid;
error_log $ngx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path $ngx/body;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl http2;
    ssl_certificate $cert;
    ssl_certificate_key $key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ecdh_curve X25519:prime256v1:secp384r1;
    location / { return 200 "ok\n"; }
  }
}
EOF
taskset -c "$SERVER_CPU" nginx -p "$ngx" -c "$ngx/nginx.conf" &
NGINX_PID=$!
BENCH_PIDS+=("$NGINX_PID")
wait_tls "https://localhost:$NGINX_PORT/healthz" "$NGINX_PID"
# nginx: the master forks one worker; count the CPU of both.
nginx_pids() { echo "$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"; }
cpu_of() {
  local t=0 p
  for p in $1; do t=$((t + $(cpu_ticks "$p"))); done
  echo "$t"
}
tck=$(getconf CLK_TCK)

# Each runner prints "rate cpu_us_per_request".
run_wrk() { # PIDS URL [wrk args…]
  local pids=$1 url=$2 c0 c1 out
  shift 2
  c0=$(cpu_of "$pids")
  out=$(taskset -c "$CLIENT_CPU" wrk -t"$THREADS" -c"$CONNS" -d"$DUR" "$@" "$url")
  c1=$(cpu_of "$pids")
  echo "$out" | awk -v c0="$c0" -v c1="$c1" -v tck="$tck" '
    /requests in/ { reqs = $1 } /Requests\/sec/ { rps = $2 }
    END { if (reqs == 0) { print "0 0"; exit } printf "%.0f %.2f\n", rps, (c1 - c0) * 1e6 / tck / reqs }'
}
run_h2() { # PIDS URL
  local c0 c1 out
  c0=$(cpu_of "$1")
  out=$(taskset -c "$CLIENT_CPU" h2load -n "$H2_REQUESTS" -c 16 -m 10 "$2" 2>&1)
  c1=$(cpu_of "$1")
  echo "$out" | awk -v c0="$c0" -v c1="$c1" -v tck="$tck" '
    /^finished in/ { rps = $4 } /^requests:/ { ok = $8 }
    END { if (ok == 0) { print "0 0"; exit } printf "%.0f %.2f\n", rps, (c1 - c0) * 1e6 / tck / ok }'
}
run_hs() { # PIDS PORT GROUP
  local c0 c1 out
  c0=$(cpu_of "$1")
  out=$(taskset -c "$CLIENT_CPU" "$hs" "127.0.0.1:$2" "$cert" "$3" "$HS_COUNT" "$HS_CONNS")
  c1=$(cpu_of "$1")
  echo "$out" | awk -v c0="$c0" -v c1="$c1" -v tck="$tck" '
    { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END { n = v["handshakes"] - v["errors"]; if (n <= 0) { print "0 0"; exit }
          printf "%.0f %.2f\n", v["rate"], (c1 - c0) * 1e6 / tck / n }'
}

node_url="https://localhost:$NODE_PORT/healthz"
nginx_url="https://localhost:$NGINX_PORT/healthz"
node="$NODE_PID"

# Warm both.
DUR=1s run_wrk "$node" "$node_url" >/dev/null
DUR=1s run_wrk "$(nginx_pids)" "$nginx_url" >/dev/null

rows=(ka_h1 ka_h2 hs_wrk hs_x25519 hs_hybrid)
echo "round  row        server     rate       cpu_us/req"
for r in $(seq 1 "$ROUNDS"); do
  ngx_pids=$(nginx_pids)
  for row in "${rows[@]}"; do
    for server in micronode nginx; do
      if [ "$server" = micronode ]; then pids=$node url=$node_url port=$NODE_PORT; else pids=$ngx_pids url=$nginx_url port=$NGINX_PORT; fi
      case $row in
        ka_h1) res=$(run_wrk "$pids" "$url") ;;
        ka_h2) res=$(run_h2 "$pids" "$url") ;;
        hs_wrk) res=$(CONNS=$HS_CONNS run_wrk "$pids" "$url" -H "connection: close") ;;
        hs_x25519) res=$(run_hs "$pids" "$port" x25519) ;;
        hs_hybrid)
          [ "$server" = nginx ] && continue # OpenSSL 3.0: no X25519MLKEM768
          res=$(run_hs "$pids" "$port" hybrid) ;;
      esac
      printf '%-6s %-10s %-10s %-10s %s\n' "$r" "$row" "$server" $res
      echo "$res" >>"$BENCH_TMP/$row.$server"
    done
  done
done

col() { awk -v c="$2" '{print $c}' "$BENCH_TMP/$1"; }
echo
echo "medians of $ROUNDS rounds (min–max); MICRONODE_TLS_PQ=$PQ, ECDSA P-256 certificate, TLS 1.3"
printf '%-10s %-10s %-28s %-24s\n' row server "rate" "cpu_us/req"
for row in "${rows[@]}"; do
  for server in micronode nginx; do
    f="$row.$server"
    [ -s "$BENCH_TMP/$f" ] || continue
    printf '%-10s %-10s %-28s %-24s\n' "$row" "$server" \
      "$(col "$f" 1 | median) ($(col "$f" 1 | minmax))" "$(col "$f" 2 | median) ($(col "$f" 2 | minmax))"
  done
  if [ -s "$BENCH_TMP/$row.nginx" ]; then
    awk -v a="$(col "$row.micronode" 1 | median)" -v b="$(col "$row.nginx" 1 | median)" \
        -v c="$(col "$row.micronode" 2 | median)" -v d="$(col "$row.nginx" 2 | median)" \
        -v row="$row" 'BEGIN { printf "%-10s ratio      rate %.3f  cpu %.3f  (micronode / nginx)\n", row, a / b, c / d }'
  fi
done
awk -v a="$(col hs_hybrid.micronode 2 | median)" -v b="$(col hs_x25519.micronode 2 | median)" \
  'BEGIN { printf "hybrid / X25519 server CPU per handshake: %.3f (target <= 1.3)\n", a / b }'

#!/usr/bin/env bash
# scripts/bench.sh - the gateway, nginx and haproxy side by side, in one run, on loopback, in
# front of the same upstream (a second nginx). Prints, per scenario, throughput, p99 latency,
# the proxy's CPU time (user+sys from /proc/PID/stat) per request or per GiB, and its peak RSS
# (VmHWM), for the gateway and both anchors, with the ratios gateway/nginx and
# gateway/haproxy, then each goal of issue 11 with its ratio.
# Method and recorded figures: docs/benchmarks.md.
#
#   scripts/bench.sh             install (apt: nginx-light, wrk, haproxy), build, run (~3 min)
#
# Scenario 2: 1 MiB image creates over BENCH_MIB_CONNS (64) connections; 2S the same through
# the limits + store gateway (1S's). Scenario M: 256
# connections of 1 MiB creates, the peak RSS, then the RSS BENCH_SETTLE_SECS (30) s after the
# load against the RSS after start-up. Scenario I: BENCH_IDLE_CONNS (10000) idle keep-alive
# connections (one request each, then nothing): memory per connection.
#
# Scenario 1S is scenario 1 through a third gateway with a [store] (SQLite, WAL) and every
# per-key limit on: what limits and the job ledger cost per create (issue 6: at most 3 us).
# Scenario 1R is 1S with the store and the limits on Redis (a private redis-server, no
# persistence): the gateway's CPU per create next to SQLite's (issue 7: at most 5 us more),
# and the redis-server's own CPU per create, reported apart.
#
# Knobs (environment): BENCH_SMALL_SECS (10) BENCH_SMALL_CONNS (32) BENCH_LOG_SECS (5)
#   BENCH_MIB_SECS (9) BENCH_MIB_ROUNDS (3) BENCH_MIB_CONNS (8) BENCH_UPLOAD_MIB (200) BENCH_UPLOAD_REPS (10)
#   BENCH_DOWNLOAD_MIB (50) BENCH_DOWNLOAD_REPS (20) BENCH_WRK_THREADS (2)
#   BENCH_MEM_SECS (6) BENCH_SETTLE_SECS (30) BENCH_IDLE_CONNS (10000)
#   BENCH_GW=PATH  use this gateway binary instead of building the tree (before/after runs)
#   BENCH_PIN=1    the issue's placement: clients (wrk, curl) on CPU 0, the proxies and the
#                  upstream on CPU 1 (taskset)
#   BENCH_PERF=1   after the table: perf top symbols of the gateway (without and with limits +
#                  store), syscalls per request (strace)
#   BENCH_KEEP=1   keep the temp dir (configs, logs, wrk outputs); it is kept on failure too
#   BENCH_TLS=1    HTTPS upstream (issue 11's production path): the upstream nginx also listens
#                  with TLS (a certificate for 127.0.0.1 signed by a CA made here with openssl),
#                  the gateway has `url = https://` and `ca_file` (verification on), nginx
#                  `proxy_pass https://` (keep-alive, proxy_ssl_session_reuse on), haproxy
#                  `server ... ssl` (both verifying with the same CA). Scenarios 1, 2, 3 and 4
#                  only (I, 1S, 1R, 1L, 4b and M measure the client side or the store, which TLS
#                  to the upstream does not change).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

SMALL_SECS=${BENCH_SMALL_SECS:-10}
SMALL_CONNS=${BENCH_SMALL_CONNS:-32}
LOG_SECS=${BENCH_LOG_SECS:-5}
MIB_SECS=${BENCH_MIB_SECS:-9}
MIB_ROUNDS=${BENCH_MIB_ROUNDS:-3}
MIB_CONNS=${BENCH_MIB_CONNS:-64}
MEM_SECS=${BENCH_MEM_SECS:-6}
SETTLE_SECS=${BENCH_SETTLE_SECS:-30}
IDLE_CONNS=${BENCH_IDLE_CONNS:-10000}
# the client's and the servers' CPUs (BENCH_PIN=1), else nothing
CLI=() SRV=()
if [ "${BENCH_PIN:-0}" = 1 ]; then CLI=(taskset -c 0) SRV=(taskset -c 1); fi
UPLOAD_MIB=${BENCH_UPLOAD_MIB:-200}
UPLOAD_REPS=${BENCH_UPLOAD_REPS:-10}
DOWNLOAD_MIB=${BENCH_DOWNLOAD_MIB:-50}
DOWNLOAD_REPS=${BENCH_DOWNLOAD_REPS:-20}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
TLS=${BENCH_TLS:-0}
PROMPT='a cow dancing on a frozen lake at dawn, slow dolly shot'
VIDEO_ID=video_bench0001
JOB='{"id":"video_bench0001","object":"video","model":"veo_3_1","status":"queued","progress":0,"created_at":1700000000,"seconds":"8","size":"16x9"}'

die() { echo "bench: $*" >&2; exit 1; }
say() { printf '== %s\n' "$*"; }

# ------------------------------------------------------------------ install, build
scripts/install-deps.sh --bench
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || die "nginx not found"
command -v wrk >/dev/null || die "wrk not found"
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[ -x "$HAPROXY" ] || die "haproxy not found"
# idle connections: one descriptor each in the client and in the proxy, and haproxy reserves
# two per connection of its maxconn: fewer than BENCH_IDLE_CONNS if the limit is lower
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -gt $((2 * IDLE_CONNS + 1000)) ] || IDLE_CONNS=$((($(ulimit -n) - 1000) / 2))
ECHO_MOD=/usr/lib/nginx/modules/ngx_http_echo_module.so # from nginx-light (libnginx-mod-http-echo)
[ -f "$ECHO_MOD" ] || die "$ECHO_MOD missing (apt-get install libnginx-mod-http-echo)"
if [ -n "${BENCH_GW:-}" ]; then
    GW=$(realpath "$BENCH_GW") # another build (an older commit, say) for before/after runs
    say "gateway binary: $GW (BENCH_GW)"
else
    say "building the gateway (RelWithDebInfo, build-bench/)"
    cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
    cmake --build build-bench -j"$(nproc)" --target gateway >/dev/null
    GW=$root/build-bench/gateway
fi

# ------------------------------------------------------------------ temp dir, cleanup
tmp=$(mktemp -d "${TMPDIR:-/tmp}/videogw-bench.XXXXXX")
pids=() # the processes this script started (nginx masters, gateways); workers found by ppid
cleanup() {
    local rc=$? p kids=()
    trap - EXIT INT TERM
    for p in "${pids[@]}"; do
        kids+=($(pgrep -P "$p" 2>/dev/null || true))
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}" "${kids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    if [ "$rc" -ne 0 ] || [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "bench: files kept in $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$tmp"/{up/www,up/tmp,ngx/tmp,gw,gwlog,gwstore,gwredis,redis,hap}
chmod 755 "$tmp" "$tmp/up" "$tmp/up/www" # nginx workers run as nobody when started by root
read -r UP_PORT GW_PORT GWLOG_PORT NGX_PORT NGXNB_PORT NGXLOG_PORT UPJ_PORT GWS_PORT GWR_PORT \
    REDIS_PORT HAP_PORT UPS_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(12)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
UPKEY="sk-upstream-bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
CLK_TCK=$(getconf CLK_TCK)

# BENCH_TLS: a CA and a certificate for 127.0.0.1 (IP SAN) that it signs; the proxies verify
# the upstream with the CA, as in production
if [ "$TLS" = 1 ]; then
    mkdir -p "$tmp/pki"
    (
        cd "$tmp/pki"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj /CN=bench-ca -keyout ca.key -out ca.pem 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
            -keyout up.key -out up.csr 2>/dev/null
        printf 'subjectAltName = IP:127.0.0.1\n' >ext.cnf
        openssl x509 -req -in up.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
            -extfile ext.cnf -out up.pem 2>/dev/null
    ) || die "openssl could not make the test certificates"
    chmod 644 "$tmp"/pki/*
    chmod 755 "$tmp/pki"
fi

say "test data: ${DOWNLOAD_MIB} MiB video, ${UPLOAD_MIB} MiB upload (random bytes)"
head -c $((DOWNLOAD_MIB * 1048576)) /dev/urandom >"$tmp/up/www/video.mp4"
head -c $((UPLOAD_MIB * 1048576)) /dev/urandom >"$tmp/upload.png"

# ------------------------------------------------------------------ upstream nginx
# POST /v1/videos: the whole body is read (echo_read_request_body; a bare `return` would
# answer before the body has arrived and both proxies would cut the upload short), then
# an internal redirect answers the job JSON with a Content-Length. Bodies go to temp files
# past 1 MiB and are deleted at once. GET .../content: a static file with sendfile.
# Requests carrying X-Bench-Sanity are logged with their body (if in memory) and length.
# The part of an nginx.conf both instances share: processes, pid, logs and temp paths
# under DIR. It opens the http block; the caller adds the rest and closes it.
ngx_prelude() { # DIR
    cat <<EOF
worker_processes 2;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
EOF
}
# A second server (port UPJ), for the gateway with a store, answers the same job JSON with
# a fresh id per create (video_ + nginx's 32-hex $request_id: 23 bytes longer than
# video_bench0001; the store's UNIQUE index would refuse a repeated id) and the current
# time as created_at (same length; 1700000000 would make every job older than [jobs]
# retention). It also answers a retrieve, which the store gateway's [jobs] refresh sends.
up_server() { # PORT JOB_JSON EXTRA_LOCATIONS [TLS_PORT]
    cat <<EOF
    server {
        listen 127.0.0.1:$1 backlog=1024;${4:+
        listen 127.0.0.1:$4 ssl backlog=1024;
        ssl_certificate $tmp/pki/up.pem;
        ssl_certificate_key $tmp/pki/up.key;}
        client_max_body_size 0;
        client_body_buffer_size 1m;
        access_log $tmp/up/sanity.log sanity if=\$http_x_bench_sanity;
        location = /v1/videos {
            echo_read_request_body;
            echo_exec /_job;
        }
        location = /_job {
            internal;
            default_type application/json;
            return 200 '$2';
        }
        location ~ ^/v1/videos/[A-Za-z0-9_-]+/content\$ {
            root $tmp/up/www;
            rewrite ^ /video.mp4 break;
            types { }
            default_type video/mp4;
        }$3
    }
EOF
}
JOBU=${JOB/1700000000/\$now_s}
{ echo "load_module $ECHO_MOD;"; ngx_prelude "$tmp/up"; } >"$tmp/up/nginx.conf"
cat >>"$tmp/up/nginx.conf" <<EOF
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    log_format sanity '\$http_x_bench_sanity \$status \$content_length \$request_length "\$request_body"';
    map \$msec \$now_s { "~^(?<s>[0-9]+)[.]" \$s; }
$(up_server "$UP_PORT" "$JOB" "" "$([ "$TLS" = 1 ] && echo "$UPS_PORT")")
$(up_server "$UPJ_PORT" "${JOBU/video_bench0001/video_\$request_id}" "
        location ~ ^/v1/videos/(?<vid>[A-Za-z0-9_-]+)\$ {
            default_type application/json;
            return 200 '${JOBU/video_bench0001/\$vid}';
        }")
}
EOF

# ------------------------------------------------------------------ nginx, the baseline proxy
# Three servers in one nginx (2 workers): proxy_buffering on (the default), off, and on with
# an access log to a file. Request bodies are streamed (proxy_request_buffering off), the
# upstream is reached over HTTP/1.1 with a keep-alive pool, the client's Authorization is
# replaced by the upstream key (as the gateway does). No per-connection request cap on
# either side (the gateway has none).
ngx_server() { # PORT EXTRA
    cat <<EOF
    server {
        listen 127.0.0.1:$1 reuseport backlog=1024;
        $2
        location / { proxy_pass $UP_SCHEME://video; }
    }
EOF
}
# BENCH_TLS: the three proxies reach the upstream over TLS, verifying it with the test CA
UP_SCHEME=http UP_PORT_PROXIED=$UP_PORT NGX_TLS="" HAP_TLS=""
if [ "$TLS" = 1 ]; then
    UP_SCHEME=https UP_PORT_PROXIED=$UPS_PORT
    NGX_TLS="proxy_ssl_session_reuse on;
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $tmp/pki/ca.pem;
    proxy_ssl_name 127.0.0.1;"
    HAP_TLS=" ssl verify required ca-file $tmp/pki/ca.pem verifyhost 127.0.0.1"
fi
ngx_prelude "$tmp/ngx" >"$tmp/ngx/nginx.conf"
cat >>"$tmp/ngx/nginx.conf" <<EOF
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_max_body_size 2g;
    upstream video {
        server 127.0.0.1:$UP_PORT_PROXIED;
        keepalive 64;
        keepalive_requests 1000000;
    }
    $NGX_TLS
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Authorization "Bearer $UPKEY";
    proxy_request_buffering off;
$(ngx_server "$NGX_PORT" "proxy_buffering on;")
$(ngx_server "$NGXNB_PORT" "proxy_buffering off;")
$(ngx_server "$NGXLOG_PORT" "access_log $tmp/ngx/access.log;")
}
EOF

# ------------------------------------------------------------------ haproxy, the second anchor
# As the issue measured it: 64 KiB buffers, two threads (the gateway's two loops), keep-alive
# to the upstream with connections reused, no log, bodies streamed (haproxy's default:
# no `option http-buffer-request`), the Authorization replaced by the upstream key.
cat >"$tmp/hap/haproxy.cfg" <<EOF
global
    nbthread 2
    maxconn $((IDLE_CONNS + 200))
    tune.bufsize 65536
    pidfile $tmp/hap/haproxy.pid
defaults
    mode http
    timeout connect 5s
    timeout client 75s
    timeout server 75s
    timeout http-keep-alive 75s
    http-reuse always
frontend bench
    bind 127.0.0.1:$HAP_PORT
    default_backend video
backend video
    http-request set-header Authorization "Bearer $UPKEY"
    server up 127.0.0.1:$UP_PORT_PROXIED$HAP_TLS
EOF
"$HAPROXY" -c -q -f "$tmp/hap/haproxy.cfg" || die "haproxy configuration has errors"

# ------------------------------------------------------------------ the gateway
# As scripts/demo.sh builds it, plus threads = 2, access_log = off and pool_size = 64 (the
# same keep-alive pool as nginx's `keepalive 64`). A second instance logs to a file.
"$GW" mint-key bench >"$tmp/gw/key.txt"
KEY=$(sed -n 's/^#   \(sk-vgw-.*\)$/\1/p' "$tmp/gw/key.txt")
[ -n "$KEY" ] || die "mint-key printed no key"
gw_conf() { # PORT ACCESS_LOG [UPSTREAM_PORT [SCHEME]]
    echo "include = $root/config/models.conf"
    echo "[server]"
    echo "listen = 127.0.0.1:$1"
    echo "threads = 2"
    echo "access_log = $2"
    echo "[upstream]"
    echo "url = ${4:-http}://127.0.0.1:${3:-$UP_PORT}"
    [ "${4:-http}" = https ] && echo "ca_file = $tmp/pki/ca.pem"
    echo "key = env:VIDEO_UPSTREAM_KEY"
    echo "pool_size = 64"
    echo "[models]"
    echo "unknown = reject"
    sed -n '/^\[key/,$p' "$tmp/gw/key.txt"
}
gw_conf "$GW_PORT" off "$UP_PORT_PROXIED" "$UP_SCHEME" >"$tmp/gw/gateway.conf"
gw_conf "$GWLOG_PORT" "$tmp/gwlog/access.log" >"$tmp/gwlog/gateway.conf"
# A third instance for 1S: the same, plus the store (SQLite in the temp dir, WAL,
# synchronous = normal, the default: a commit appends to the -wal file, fsync only at
# checkpoints) and every limit on the bench key, at the largest values the config accepts
# (rpm is applied as at most 100,000 per minute, the GCRA's ceiling, but burst 1,000,000
# lets a million creates through at once: the whole run stays within it), so that each
# create takes an rpm token and a concurrency slot, reserves its 8 seconds and has its job
# row committed by the store thread before its answer, and none is refused.
# Its upstream is the UPJ server (a fresh job id per create). [jobs] refresh and retention
# keep their defaults (30 s, 30 d), as in production.
{
    gw_conf "$GWS_PORT" off "$UPJ_PORT" | sed '/^\[key/,$d'
    echo "[store]"
    echo "path = $tmp/gwstore/gateway.db"
    echo "synchronous = normal"
    sed -n '/^\[key/,$p' "$tmp/gw/key.txt"
    echo "rpm = 100000"
    echo "burst = 1000000"
    echo "concurrency = 1000000"
    echo "daily_seconds = 100000000"
} >"$tmp/gwstore/gateway.conf"
# A fourth for 1R: 1S's configuration with the store (and so rpm and concurrency) on Redis.
# timeout 2s, not the default 250ms: on a shared bench machine (load 10+ on 2 cores) Redis
# itself is sometimes descheduled for longer, and 1R measures CPU per create, not the stalls.
sed -e "s/^listen = .*/listen = 127.0.0.1:$GWR_PORT/" \
    -e "s|^path = .*|backend = redis\nredis = 127.0.0.1:$REDIS_PORT\nprefix = bench:\ntimeout = 2s|" \
    -e '/^synchronous = /d' "$tmp/gwstore/gateway.conf" >"$tmp/gwredis/gateway.conf"
for d in gw gwlog gwstore gwredis; do
    VIDEO_UPSTREAM_KEY=$UPKEY "$GW" -t -c "$tmp/$d/gateway.conf" >/dev/null ||
        die "gateway configuration $tmp/$d/gateway.conf has errors"
done

# ------------------------------------------------------------------ start everything
wait_http() { # URL: until anything answers
    for _ in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" 2>/dev/null)" != 000 ] && return 0
        sleep 0.1
    done
    return 1
}
start_nginx() { # DIR
    "${SRV[@]}" "$NGINX" -p "$1/" -c "$1/nginx.conf" -e "$1/error.log" -g 'daemon off;' \
        >"$1/stdout.log" 2>&1 &
    pids+=($!)
}
start_gw() { # DIR
    VIDEO_UPSTREAM_KEY=$UPKEY "${SRV[@]}" "$GW" -c "$1/gateway.conf" >"$1/stdout.log" 2>"$1/stderr.log" &
    pids+=($!)
}
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$tmp/redis" >"$tmp/redis/stdout.log" 2>&1 &
pids+=($!); REDIS_PID=${pids[-1]}
for _ in $(seq 100); do
    [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
    sleep 0.1
done
[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] || die "redis-server did not start"
start_nginx "$tmp/up";    UP_PID=${pids[-1]}
start_nginx "$tmp/ngx";   NGX_PID=${pids[-1]}
start_gw "$tmp/gw";       GW_PID=${pids[-1]}
start_gw "$tmp/gwlog";    GWLOG_PID=${pids[-1]}
start_gw "$tmp/gwstore";  GWS_PID=${pids[-1]}
start_gw "$tmp/gwredis";  GWR_PID=${pids[-1]}
"${SRV[@]}" "$HAPROXY" -db -f "$tmp/hap/haproxy.cfg" >"$tmp/hap/stdout.log" 2>&1 &
pids+=($!); HAP_PID=${pids[-1]}
wait_http "http://127.0.0.1:$UP_PORT/" || die "upstream nginx did not start: $(cat "$tmp/up/error.log")"
wait_http "http://127.0.0.1:$UPJ_PORT/" || die "upstream nginx did not start: $(cat "$tmp/up/error.log")"
for p in $NGX_PORT $NGXNB_PORT $NGXLOG_PORT; do
    wait_http "http://127.0.0.1:$p/" || die "nginx did not start: $(cat "$tmp/ngx/error.log")"
done
wait_http "http://127.0.0.1:$GW_PORT/healthz" || die "gateway did not start: $(cat "$tmp/gw/stderr.log")"
wait_http "http://127.0.0.1:$GWLOG_PORT/healthz" || die "gateway did not start: $(cat "$tmp/gwlog/stderr.log")"
wait_http "http://127.0.0.1:$GWS_PORT/healthz" || die "gateway did not start: $(cat "$tmp/gwstore/stderr.log")"
wait_http "http://127.0.0.1:$GWR_PORT/healthz" || die "gateway did not start: $(cat "$tmp/gwredis/stderr.log")"
wait_http "http://127.0.0.1:$HAP_PORT/" || die "haproxy did not start: $(cat "$tmp/hap/stdout.log")"
# resident memory after start-up, before any load (scenario M compares against it)
rss_kb() { # summed over master and workers for nginx
    local t=0 p
    for p in $(proc_pids "$1"); do
        t=$((t + $(awk '/^VmRSS:/{print $2}' "/proc/$p/status")))
    done
    echo "$t"
}
proc_pids() { echo "$1"; pgrep -P "$1" || true; } # a process and its children (nginx workers)
RSS0_gateway=$(rss_kb "$GW_PID") RSS0_nginx=$(rss_kb "$NGX_PID") RSS0_haproxy=$(rss_kb "$HAP_PID")
# every listening socket on our ports must be ours (SO_REUSEPORT would share a port silently)
ours=" $UP_PID $NGX_PID $GW_PID $GWLOG_PID $GWS_PID $GWR_PID $REDIS_PID $HAP_PID $(for p in $UP_PID $NGX_PID; do pgrep -P "$p"; done | tr '\n' ' ') "
for port in $UP_PORT $GW_PORT $GWLOG_PORT $NGX_PORT $NGXNB_PORT $NGXLOG_PORT $UPJ_PORT $GWS_PORT \
    $GWR_PORT $REDIS_PORT $HAP_PORT; do
    for p in $(ss -Hltnp "sport = :$port" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
        case "$ours" in *" $p "*) ;; *) die "port $port is also held by pid $p" ;; esac
    done
done

# ------------------------------------------------------------------ sanity checks
say "sanity: one create and one download through each proxy"
create_once() { # URL TAG -> prints the status code
    curl -sS -o "$tmp/$2.json" -w '%{http_code}' -H 'Expect:' \
        -H "Authorization: Bearer $KEY" -H "X-Bench-Sanity: $2" \
        -F model=veo3.1 -F "prompt=$PROMPT" -F seconds=8 -F size=16x9 "$1/v1/videos"
}
code=$(create_once "http://127.0.0.1:$GW_PORT" sanity-gw)
[ "$code" = 200 ] || die "the gateway answered $code to a create: $(cat "$tmp/sanity-gw.json")"
code=$(create_once "http://127.0.0.1:$GWLOG_PORT" sanity-gwlog)
[ "$code" = 200 ] || die "the gateway (access log on) answered $code: $(cat "$tmp/sanity-gwlog.json")"
for p in $NGX_PORT $NGXNB_PORT $NGXLOG_PORT $HAP_PORT; do
    code=$(create_once "http://127.0.0.1:$p" "sanity-ngx-$p")
    [ "$code" = 200 ] || die "nginx answered $code to a create: $(cat "$tmp/sanity-ngx-$p.json")"
done
grep -q "$VIDEO_ID" "$tmp/sanity-gw.json" || die "the gateway's answer is not the upstream's job"
sleep 0.3 # the upstream writes its log line after answering
line=$(grep '^sanity-gw ' "$tmp/up/sanity.log") || die "the upstream saw no request from the gateway"
# the upstream logs the body with \x22 for " and \x0D\x0A for CRLF
grep -qF 'x0D\x0A\x0D\x0Aveo_3_1\x0D\x0A' <<<"$line" ||
    die "the gateway did not send model=veo_3_1 upstream: $line"
line=$(grep "^sanity-ngx-$NGX_PORT " "$tmp/up/sanity.log") || die "the upstream saw no request from nginx"
grep -qF 'x0D\x0A\x0D\x0Aveo3.1\x0D\x0A' <<<"$line" || die "nginx changed the body: $line"
line=$(grep "^sanity-ngx-$HAP_PORT " "$tmp/up/sanity.log") || die "the upstream saw no request from haproxy"
grep -qF 'x0D\x0A\x0D\x0Aveo3.1\x0D\x0A' <<<"$line" || die "haproxy changed the body: $line"
# the gateway with limits + store: a fresh job id, the rate-limit headers of a key with rpm,
# the model rewritten, and the job in the store (GET /v1/videos is answered from it)
code=$(curl -sS -o "$tmp/sanity-gws.json" -D "$tmp/sanity-gws.head" -w '%{http_code}' -H 'Expect:' \
    -H "Authorization: Bearer $KEY" -H "X-Bench-Sanity: sanity-gws" \
    -F model=veo3.1 -F "prompt=$PROMPT" -F seconds=8 -F size=16x9 "http://127.0.0.1:$GWS_PORT/v1/videos")
[ "$code" = 200 ] || die "the gateway (limits + store) answered $code: $(cat "$tmp/sanity-gws.json")"
gws_id=$(grep -o '"id":"video_[0-9a-f]\{32\}"' "$tmp/sanity-gws.json" | cut -d'"' -f4) ||
    die "the gateway (limits + store) did not answer a fresh job id: $(cat "$tmp/sanity-gws.json")"
grep -qi '^x-ratelimit-limit-requests: ' "$tmp/sanity-gws.head" ||
    die "the gateway (limits + store) sent no x-ratelimit-* headers: the key's rpm is not in force"
line=$(grep '^sanity-gws ' "$tmp/up/sanity.log") || die "the upstream saw no request from the gateway (store)"
grep -qF 'x0D\x0A\x0D\x0Aveo_3_1\x0D\x0A' <<<"$line" ||
    die "the gateway (limits + store) did not send model=veo_3_1 upstream: $line"
curl -sS -H "Authorization: Bearer $KEY" "http://127.0.0.1:$GWS_PORT/v1/videos" | grep -qF "\"$gws_id\"" ||
    die "the store does not list the job $gws_id just created"
# the gateway on Redis: the same, the job listed from Redis
code=$(curl -sS -o "$tmp/sanity-gwr.json" -D "$tmp/sanity-gwr.head" -w '%{http_code}' -H 'Expect:' \
    -H "Authorization: Bearer $KEY" -F model=veo3.1 -F "prompt=$PROMPT" -F seconds=8 -F size=16x9 \
    "http://127.0.0.1:$GWR_PORT/v1/videos")
[ "$code" = 200 ] || die "the gateway (Redis) answered $code: $(cat "$tmp/sanity-gwr.json")"
gwr_id=$(grep -o '"id":"video_[0-9a-f]\{32\}"' "$tmp/sanity-gwr.json" | cut -d'"' -f4) ||
    die "the gateway (Redis) did not answer a fresh job id: $(cat "$tmp/sanity-gwr.json")"
grep -qi '^x-ratelimit-limit-requests: ' "$tmp/sanity-gwr.head" ||
    die "the gateway (Redis) sent no x-ratelimit-* headers: the key's rpm is not in force"
curl -sS -H "Authorization: Bearer $KEY" "http://127.0.0.1:$GWR_PORT/v1/videos" | grep -qF "\"$gwr_id\"" ||
    die "Redis does not list the job $gwr_id just created"
video_bytes=$(stat -c %s "$tmp/up/www/video.mp4")
for p in $GW_PORT $NGX_PORT $NGXNB_PORT $HAP_PORT; do
    got=$(curl -sS -o /dev/null -w '%{http_code} %{size_download}' -H "Authorization: Bearer $KEY" \
        "http://127.0.0.1:$p/v1/videos/$VIDEO_ID/content")
    [ "$got" = "200 $video_bytes" ] || die "download through port $p: got '$got', want '200 $video_bytes'"
done

# ------------------------------------------------------------------ measurement helpers
cpu_ticks() { # "USER SYS" clock ticks of the process (all threads) and its children
    local u=0 s=0 p pu ps
    for p in $(proc_pids "$1"); do
        read -r pu ps < <(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12, $13}')
        u=$((u + pu)); s=$((s + ps))
    done
    echo "$u $s"
}
ticks_between() { # "U0 S0" "U1 S1" -> total ticks, and the split for the progress line
    local u0 s0 u1 s1
    read -r u0 s0 <<<"$1"; read -r u1 s1 <<<"$2"
    echo "$((u1 + s1 - u0 - s0)) $((u1 - u0)) $((s1 - s0))"
}
hwm_reset() { # "5" resets VmHWM to the current RSS (Linux >= 4.0)
    local p
    for p in $(proc_pids "$1"); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done
}
hwm_kb() { # summed over master and workers for nginx
    local t=0 p
    for p in $(proc_pids "$1"); do
        t=$((t + $(awk '/^VmHWM:/{print $2}' "/proc/$p/status")))
    done
    echo "$t"
}
results=$tmp/results.tsv
: >"$results"
invalid=0
# record SCEN LABEL WHO THROUGHPUT UNIT P99_MS CPU CPU_UNIT HWM_KB NOTE [USER SYS (per unit)]
record() {
    local f=("$@")
    while [ "${#f[@]}" -lt 12 ]; do f+=(""); done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${f[@]}" >>"$results"
}
kv() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$2"; }

run_wrk() { # SCEN LABEL WHO PID URL CONNS SECS IMAGE_BYTES
    local scen=$1 label=$2 who=$3 pid=$4 url=$5 conns=$6 secs=$7 img=$8
    local c0 c1 ticks tu ts out line n dur p99 non2xx errs note=""
    hwm_reset "$pid"
    c0=$(cpu_ticks "$pid")
    out=$(BENCH_KEY=$KEY BENCH_IMAGE_BYTES=$img "${CLI[@]}" wrk -t"$WRK_THREADS" -c"$conns" -d"${secs}s" \
        --timeout 10s -s "$root/scripts/bench/create.lua" "$url/v1/videos" 2>&1) ||
        die "wrk failed: $out"
    c1=$(cpu_ticks "$pid")
    read -r ticks tu ts < <(ticks_between "$c0" "$c1")
    echo "$out" >"$tmp/wrk-$scen-$who.txt"
    line=$(grep '^BENCH ' <<<"$out") || die "wrk printed no summary: $out"
    n=$(kv requests "$line"); dur=$(kv duration_us "$line"); p99=$(kv p99_us "$line")
    non2xx=$(kv non2xx "$line"); errs=$(kv errors "$line")
    if [ "$n" -eq 0 ] || [ "$non2xx" -ne 0 ] || [ "$errs" -ne 0 ]; then
        note="INVALID: $non2xx non-2xx, $errs socket errors of $n"
        invalid=1
    fi
    [ "$n" -gt 0 ] || n=1
    printf '   %-8s %s cpu_ticks=%s (user %s, sys %s)\n' "$who" "${line#BENCH }" "$ticks" "$tu" "$ts"
    record "$scen" "$label" "$who" \
        "$(awk -v n="$n" -v d="$dur" 'BEGIN{printf "%.0f", n / (d / 1e6)}')" "req/s" \
        "$(awk -v p="$p99" 'BEGIN{printf "%.2f", p / 1000}')" \
        "$(awk -v t="$ticks" -v h="$CLK_TCK" -v n="$n" 'BEGIN{printf "%.1f", t / h * 1e6 / n}')" \
        "us/req" "$(hwm_kb "$pid")" "$note" \
        "$(awk -v t="$tu" -v h="$CLK_TCK" -v n="$n" 'BEGIN{printf "%.1f", t / h * 1e6 / n}')" \
        "$(awk -v t="$ts" -v h="$CLK_TCK" -v n="$n" 'BEGIN{printf "%.1f", t / h * 1e6 / n}')"
}

# SCEN: replace the rows of SCEN's rounds by one row per proxy. The rounds last alike, so a
# round weighs by its requests per second: CPU per request is sum(cpu * rate) / sum(rate);
# p99 and peak RSS are the worst round's; a round's INVALID note stays.
merge_rounds() {
    awk -F'\t' -v OFS='\t' -v s="$1" '
        $1 != s { print; next }
        { k = $3; if (!(k in rate)) order[++n] = k
          rate[k] += $4; cnt[k]++; cpu[k] += $7 * $4; cu[k] += $11 * $4; cs[k] += $12 * $4
          if ($6 + 0 > p99[k] + 0) p99[k] = $6
          if ($9 + 0 > hwm[k] + 0) hwm[k] = $9
          if ($10 != "") note[k] = $10
          row[k] = $0 }
        END { for (i = 1; i <= n; i++) { k = order[i]; m = split(row[k], f, "\t")
                r = rate[k] > 0 ? rate[k] : 1
                f[4] = sprintf("%.0f", rate[k] / cnt[k]); f[6] = p99[k]; f[9] = hwm[k]
                f[7] = sprintf("%.1f", cpu[k] / r); f[10] = note[k]
                f[11] = sprintf("%.1f", cu[k] / r); f[12] = sprintf("%.1f", cs[k] / r)
                line = f[1]; for (j = 2; j <= m; j++) line = line OFS f[j]; print line } }' \
        "$results" >"$results.merged" && mv "$results.merged" "$results"
}

curl_once() { # KIND URL SCEN WHO I SAMPLES: one transfer, its "code bytes seconds" appended
    local kind=$1 url=$2 scen=$3 who=$4 i=$5 samples=$6
    if [ "$kind" = upload ]; then
        "${CLI[@]}" curl -sS -o /dev/null -w '%{http_code} %{size_upload} %{time_total}\n' -H 'Expect:' \
            -H "Authorization: Bearer $KEY" -H "X-Bench-Sanity: $scen-$who-$i" \
            -F model=veo3.1 -F "prompt=$PROMPT" -F seconds=8 -F size=16x9 \
            -F "input_reference=@$tmp/upload.png;type=image/png;filename=frame.png" \
            "$url/v1/videos" >>"$samples" || true
    else
        "${CLI[@]}" curl -sS -o /dev/null -w '%{http_code} %{size_download} %{time_total}\n' \
            -H "Authorization: Bearer $KEY" "$url/v1/videos/$VIDEO_ID/content" \
            >>"$samples" || true
    fi
}

# SCEN LABEL KIND(upload|download) REPS WHO=PID=URL...: REPS transfers through each proxy, taken
# in turn (gateway, nginx, haproxy, gateway, ...) so that a change of the machine's speed during
# the scenario weighs on each proxy alike; each proxy's CPU is summed over its own transfers.
run_curl() {
    local scen=$1 label=$2 kind=$3 reps=$4 i spec who pid url c0 c1 t tu ts samples note bad
    shift 4
    declare -A tot totu tots
    for spec in "$@"; do
        IFS== read -r who pid url <<<"$spec"
        : >"$tmp/curl-$scen-$who.txt"
        hwm_reset "$pid"
        tot[$who]=0; totu[$who]=0; tots[$who]=0
    done
    for i in $(seq "$reps"); do
        for spec in "$@"; do
            IFS== read -r who pid url <<<"$spec"
            c0=$(cpu_ticks "$pid")
            curl_once "$kind" "$url" "$scen" "$who" "$i" "$tmp/curl-$scen-$who.txt"
            c1=$(cpu_ticks "$pid")
            read -r t tu ts < <(ticks_between "$c0" "$c1")
            tot[$who]=$((tot[$who] + t)); totu[$who]=$((totu[$who] + tu))
            tots[$who]=$((tots[$who] + ts))
        done
    done
    for spec in "$@"; do
        IFS== read -r who pid url <<<"$spec"
        samples=$tmp/curl-$scen-$who.txt note=""
        bad=$(awk -v k="$kind" -v v="$video_bytes" \
            '$1 != 200 || (k == "download" && $2 != v) {n++} END {print n + 0}' "$samples")
        if [ "$bad" -ne 0 ] || [ "$(wc -l <"$samples")" -ne "$reps" ]; then
            note="INVALID: $bad failed transfers"
            invalid=1
        fi
        printf '   %-8s %s transfers, %s MiB, %s s, cpu_ticks=%s (user %s, sys %s)\n' "$who" \
            "$reps" "$(awk '{b += $2} END {printf "%.0f", b / 1048576}' "$samples")" \
            "$(awk '{t += $3} END {printf "%.2f", t}' "$samples")" "${tot[$who]}" \
            "${totu[$who]}" "${tots[$who]}"
        record "$scen" "$label" "$who" \
            "$(awk '{b += $2; t += $3} END {printf "%.0f", b / 1048576 / t}' "$samples")" "MiB/s" \
            "$(awk '{print $3}' "$samples" | sort -n | awk '{v[NR] = $1}
                END {i = int(NR * 0.99); if (i < NR * 0.99) i++; if (i < 1) i = 1; printf "%.1f", v[i] * 1000}')" \
            "$(awk -v t="${tot[$who]}" -v h="$CLK_TCK" '{b += $2}
                END {printf "%.0f", t / h * 1000 / (b / 1073741824)}' "$samples")" \
            "ms/GiB" "$(hwm_kb "$pid")" "$note"
    done
}

GWU=http://127.0.0.1:$GW_PORT
GWLOGU=http://127.0.0.1:$GWLOG_PORT
NGXU=http://127.0.0.1:$NGX_PORT
NGXNBU=http://127.0.0.1:$NGXNB_PORT
NGXLOGU=http://127.0.0.1:$NGXLOG_PORT
GWSU=http://127.0.0.1:$GWS_PORT
GWRU=http://127.0.0.1:$GWR_PORT
HAPU=http://127.0.0.1:$HAP_PORT
warm() { BENCH_KEY=$KEY wrk -t"$WRK_THREADS" -c"$SMALL_CONNS" -d1s -s "$root/scripts/bench/create.lua" \
    "$1/v1/videos" >/dev/null; }

echo
say "machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(uname -r);" \
    "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$TLS" = 1 ] && say "HTTPS upstream (BENCH_TLS=1): the proxies reach the upstream nginx over TLS on port $UPS_PORT"
if [ "${BENCH_PIN:-0}" = 1 ]; then
    say "pinned: wrk ($WRK_THREADS threads) and curl on CPU 0; the proxies and the upstream nginx on CPU 1"
else
    say "wrk ($WRK_THREADS threads), curl and the upstream nginx share these cores with the proxy; nothing is pinned"
fi
say "versions: gateway $("$GW" -v | cut -d' ' -f2) ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- gateway 2>/dev/null || echo '+local changes')), $("$NGINX" -v 2>&1 | cut -d' ' -f3), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
# I: idle keep-alive connections, one request each; resident memory per connection. First,
# before any load (after one, a process reuses the free memory it kept and the figure says
# nothing), and for the gateway on the access-log instance (idle connections log nothing): the
# gateway keeps about two thirds of what they cost once they are closed (docs/benchmarks.md),
# which would count in M's "after the load"
if [ "$TLS" = 0 ]; then
SI="I ${IDLE_CONNS} idle keep-alive connections"
say "$SI"
idle=$tmp/idle.tsv # WHO CONNS BEFORE_KB AFTER_KB
: >"$idle"
for who in gateway nginx haproxy; do
    case $who in
    gateway) pid=$GWLOG_PID port=$GWLOG_PORT ;;
    nginx) pid=$NGX_PID port=$NGX_PORT ;;
    haproxy) pid=$HAP_PID port=$HAP_PORT ;;
    esac
    out=$("${CLI[@]}" python3 "$root/scripts/bench/idle.py" "$port" "$IDLE_CONNS" $(proc_pids "$pid"))
    printf '   %-8s %s\n' "$who" "${out#IDLE }"
    printf '%s\t%s\t%s\t%s\n' "$who" "$(kv conns "$out")" "$(kv before_kb "$out")" \
        "$(kv after_kb "$out")" >>"$idle"
done
fi

say "warm-up: 1 s of small creates through each proxy"
warm "$GWU"; warm "$GWLOGU"; warm "$GWSU"; warm "$GWRU"; warm "$NGXU"; warm "$NGXLOGU"; warm "$HAPU"

# 1 and 1S: the two gateway runs back to back, then nginx, which has no limits or store
# to switch on: its one run is the baseline of both rows.
store_jobs() { # rows in the store gateway's jobs table (read-only; WAL readers never block it)
    python3 -c 'import sqlite3, sys
db = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True)
print(db.execute("SELECT count(*) FROM jobs").fetchone()[0])' "$tmp/gwstore/gateway.db"
}
S1="1 small create, ${SMALL_CONNS} conns ${SMALL_SECS}s"
S1S="1S same, limits + store (SQLite, synchronous = normal), ${SMALL_SECS}s"
say "$S1"
run_wrk 1 "$S1" gateway "$GW_PID" "$GWU" "$SMALL_CONNS" "$SMALL_SECS" 0
if [ "$TLS" = 0 ]; then
say "$S1S"
# the store thread names itself gw-store (the loops gw-loop-N)
store_tid=$(grep -lx gw-store /proc/"$GWS_PID"/task/*/comm | cut -d/ -f5 | head -1)
[ -n "$store_tid" ] || die "the store gateway has no gw-store thread"
store_ticks() { sed 's/^.*) //' "/proc/$GWS_PID/task/$store_tid/stat" | awk '{print $12 + $13}'; }
jobs0=$(store_jobs)
st0=$(store_ticks)
run_wrk 1S "$S1S" gateway "$GWS_PID" "$GWSU" "$SMALL_CONNS" "$SMALL_SECS" 0
st1=$(store_ticks)
sleep 0.3 # creates cut by wrk's stop may still be committed
jobs1=$(store_jobs)
S1R="1R same, limits + store on Redis (loopback, no persistence), ${SMALL_SECS}s"
say "$S1R"
redis_jobs() { redis-cli -p "$REDIS_PORT" eval "return #redis.call('KEYS', 'bench:job:*')" 0; }
rj0=$(redis_jobs)
rt0=$(cpu_ticks "$REDIS_PID")
run_wrk 1R "$S1R" gateway "$GWR_PID" "$GWRU" "$SMALL_CONNS" "$SMALL_SECS" 0
rt1=$(cpu_ticks "$REDIS_PID")
sleep 0.3
rj1=$(redis_jobs)
n1r=$(kv requests "$(grep '^BENCH ' "$tmp/wrk-1R-gateway.txt")")
read -r rticks _ _ < <(ticks_between "$rt0" "$rt1")
say "redis: $((rj1 - rj0)) jobs recorded during 1R for $n1r creates answered; redis-server:" \
    "$(awk -v t="$rticks" -v h="$CLK_TCK" -v n="$n1r" 'BEGIN{printf "%.1f", t / h * 1e6 / n}') us per create"
[ $((rj1 - rj0)) -ge "$n1r" ] || die "Redis recorded $((rj1 - rj0)) jobs for $n1r creates"
if grep -qE 'not recorded|store: ' "$tmp/gwredis/stderr.log"; then
    grep -E 'not recorded|store: ' "$tmp/gwredis/stderr.log" | head -5 >&2 || true
    die "the Redis gateway logged store errors (above)"
fi
fi
say "$S1, 1S and 1R: nginx (one run for the three rows)"
run_wrk 1 "$S1" nginx "$NGX_PID" "$NGXU" "$SMALL_CONNS" "$SMALL_SECS" 0
run_wrk 1 "$S1" haproxy "$HAP_PID" "$HAPU" "$SMALL_CONNS" "$SMALL_SECS" 0
if [ "$TLS" = 0 ]; then
awk -F'\t' -v OFS='\t' -v l="$S1S" -v r="$S1R" '$1 == "1" && $3 == "nginx" {
    $1 = "1S"; $2 = l; print; $1 = "1R"; $2 = r; print }' "$results" >>"$results"
# every create the run counted was recorded (creates wrk cut at its stop may be too)
n1s=$(kv requests "$(grep '^BENCH ' "$tmp/wrk-1S-gateway.txt")")
say "store: $((jobs1 - jobs0)) jobs recorded during 1S for $n1s creates answered ($jobs1 in the" \
    "store); its thread: $((st1 - st0)) ticks, $(awk -v t=$((st1 - st0)) -v h="$CLK_TCK" -v n="$n1s" \
    'BEGIN{printf "%.1f", t / h * 1e6 / n}') us per create of the process's CPU"
[ $((jobs1 - jobs0)) -ge "$n1s" ] || die "the store recorded $((jobs1 - jobs0)) jobs for $n1s creates"
# The floor under issue 6's +3 us: SQLite alone inserting 1S's job rows into a copy of its
# store, in transactions of 32 (about what the commit delay gathers here), 256 and 4096 rows.
cc -O2 -o "$tmp/sqlite_floor" "$root/scripts/bench/sqlite_floor.c" -lsqlite3 ||
    die "cannot build scripts/bench/sqlite_floor.c"
floor=$("$tmp/sqlite_floor" "$tmp/gwstore/gateway.db" "$tmp/floor.db" 50000 32 256 4096) ||
    die "sqlite_floor failed"
say "SQLite alone, us of CPU per job row by rows per transaction:" \
    "$(sed 's/FLOOR batch=\([0-9]*\) us_per_row=\([0-9.]*\)/\1: \2/' <<<"$floor" | paste -sd' ')"
sed 's/^FLOOR /FLOOR\t/' <<<"$floor" >"$tmp/floor.tsv"
rm -f "$tmp"/floor.db*
if grep -qE 'not recorded|store .*(failed|cannot)' "$tmp/gwstore/stderr.log"; then
    grep -E 'not recorded|store .*(failed|cannot)' "$tmp/gwstore/stderr.log" | head -5 >&2 || true
    die "the store gateway logged store errors (above)"
fi
fi

if [ "$TLS" = 0 ]; then
S1L="1L same, access log to a file, ${LOG_SECS}s"
say "$S1L"
run_wrk 1L "$S1L" gateway "$GWLOG_PID" "$GWLOGU" "$SMALL_CONNS" "$LOG_SECS" 0
run_wrk 1L "$S1L" nginx "$NGX_PID" "$NGXLOGU" "$SMALL_CONNS" "$LOG_SECS" 0
fi

# Scenario 2 (and 2S) in MIB_ROUNDS rounds, the proxies in turn within each: the machine's
# speed moves by 10-30% within minutes here, and one long run per proxy gave ratios from 0.93
# to 1.21 for the same gateway. Each proxy's rounds are merged into one row (merge_rounds).
S2="2 1 MiB create, ${MIB_CONNS} conns ${MIB_SECS}s (${MIB_ROUNDS} rounds, proxies in turn)"
S2S="2S same, limits + store (SQLite)"
say "$S2"
round_secs=$(( (MIB_SECS + MIB_ROUNDS - 1) / MIB_ROUNDS ))
for r in $(seq "$MIB_ROUNDS"); do
    run_wrk 2 "$S2" gateway "$GW_PID" "$GWU" "$MIB_CONNS" "$round_secs" 1048576
    if [ "$TLS" = 0 ]; then
        run_wrk 2S "$S2S" gateway "$GWS_PID" "$GWSU" "$MIB_CONNS" "$round_secs" 1048576
    fi
    run_wrk 2 "$S2" nginx "$NGX_PID" "$NGXU" "$MIB_CONNS" "$round_secs" 1048576
    run_wrk 2 "$S2" haproxy "$HAP_PID" "$HAPU" "$MIB_CONNS" "$round_secs" 1048576
done
merge_rounds 2
if [ "$TLS" = 0 ]; then
# 2S: the same through the gateway with limits + store (issue 11: "measured with a key that
# has limits and with the store on"); the anchors' rows are scenario 2's
merge_rounds 2S
awk -F'\t' -v OFS='\t' -v l="$S2S" '$1 == "2" && ($3 == "nginx" || $3 == "haproxy") {
    $1 = "2S"; $2 = l; print }' "$results" >>"$results"
fi

S3="3 ${UPLOAD_MIB} MiB upload x${UPLOAD_REPS}, proxies in turn"
say "$S3"
run_curl 3 "$S3" upload "$UPLOAD_REPS" "gateway=$GW_PID=$GWU" "nginx=$NGX_PID=$NGXU" \
    "haproxy=$HAP_PID=$HAPU"
# the upstream must have received every byte: the client's body, +1 byte through the
# gateway (veo3.1 -> veo_3_1), with an exact Content-Length
sleep 0.3
upload_body=$(head -1 "$tmp/curl-3-nginx.txt" | cut -d' ' -f2)
for who in gateway nginx haproxy; do
    want=$upload_body
    [ "$who" = gateway ] && want=$((upload_body + 1))
    got=$(awk -v w="$who" '$1 ~ "^3-" w "-" {print $3}' "$tmp/up/sanity.log" | sort -u | tr '\n' ' ')
    [ "$got" = "$want " ] || die "upstream Content-Length through $who: got '$got', want '$want'"
done

S4="4 ${DOWNLOAD_MIB} MiB download x${DOWNLOAD_REPS}, nginx proxy_buffering on"
say "$S4"
run_curl 4 "$S4" download "$DOWNLOAD_REPS" "gateway=$GW_PID=$GWU" "nginx=$NGX_PID=$NGXU" \
    "haproxy=$HAP_PID=$HAPU"

if [ "$TLS" = 0 ]; then
S4B="4b same, nginx proxy_buffering off"
say "$S4B"
run_curl 4b "$S4B" download "$DOWNLOAD_REPS" "gateway=$GW_PID=$GWU" "nginx=$NGX_PID=$NGXNBU"
fi

# M: many concurrent uploads. The peak (VmHWM, reset at the start of each run) and, once all
# three have run, the RSS SETTLE_SECS after the last load against the RSS after start-up
# (the gateway's load ended earliest: its figure is at least that long after).
if [ "$TLS" = 0 ]; then
SM="M memory: 1 MiB creates, 256 conns ${MEM_SECS}s"
say "$SM"
run_wrk M "$SM" gateway "$GW_PID" "$GWU" 256 "$MEM_SECS" 1048576
run_wrk M "$SM" nginx "$NGX_PID" "$NGXU" 256 "$MEM_SECS" 1048576
run_wrk M "$SM" haproxy "$HAP_PID" "$HAPU" 256 "$MEM_SECS" 1048576
say "waiting ${SETTLE_SECS}s for the RSS after the load"
sleep "$SETTLE_SECS"
mem=$tmp/mem.tsv # WHO START_KB HWM_KB AFTER_KB
: >"$mem"
for who in gateway nginx haproxy; do
    case $who in gateway) pid=$GW_PID ;; nginx) pid=$NGX_PID ;; haproxy) pid=$HAP_PID ;; esac
    start=RSS0_$who
    hwm=$(awk -F'\t' -v w="$who" '$1 == "M" && $3 == w {print $9}' "$results")
    printf '%s\t%s\t%s\t%s\n' "$who" "${!start}" "$hwm" "$(rss_kb "$pid")" >>"$mem"
done
fi

say "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -s "$tmp/gw/stderr.log" ] && { echo "gateway error log:"; head -20 "$tmp/gw/stderr.log"; }
[ -s "$tmp/gwstore/stderr.log" ] && { echo "gateway (limits + store) error log:"; head -20 "$tmp/gwstore/stderr.log"; }
[ -s "$tmp/ngx/error.log" ] && { echo "nginx error log:"; head -20 "$tmp/ngx/error.log"; }
echo "gateway access log (1L run): $(wc -l <"$tmp/gwlog/access.log") lines;" \
    "nginx access log: $(wc -l <"$tmp/ngx/access.log") lines"

# ------------------------------------------------------------------ the table
echo
awk -F'\t' '
    { k = $1; if (!(k in label)) { order[++n] = k; label[k] = $2 }
      tp[k, $3] = $4; tu[k] = $5; p99[k, $3] = $6; cpu[k, $3] = $7; cu[k] = $8
      rss[k, $3] = $9 / 1024; if ($10 != "") note[k] = note[k] " [" $3 ": " $10 "]" }
    function cell(v, fmt) { return v == "" ? sprintf("%12s", "-") : sprintf(fmt, v) }
    function ratio(g, x) { return (x > 0 && g != "") ? sprintf("%.2f", g / x) : "-" }
    function row(name, g, x, h, fmt) {
        printf "  %-16s %s %s %s  %8s %8s\n", name, cell(g, fmt), cell(x, fmt), cell(h, fmt),
            ratio(g, x), ratio(g, h)
    }
    BEGIN { printf "%-18s %12s %12s %12s  %8s %8s\n", "", "gateway", "nginx", "haproxy",
            "gw/ngx", "gw/hap" }
    END {
        for (i = 1; i <= n; i++) {
            k = order[i]
            print label[k] note[k]
            row(tu[k], tp[k, "gateway"], tp[k, "nginx"], tp[k, "haproxy"], "%12.0f")
            row("p99 ms", p99[k, "gateway"], p99[k, "nginx"], p99[k, "haproxy"], "%12.2f")
            row("CPU " cu[k], cpu[k, "gateway"], cpu[k, "nginx"], cpu[k, "haproxy"], "%12.1f")
            row("peak RSS MiB", rss[k, "gateway"], rss[k, "nginx"], rss[k, "haproxy"], "%12.1f")
        }
    }' "$results"
echo
if [ "$TLS" = 0 ]; then
echo "M: resident memory (MiB) after start-up, at the peak of 256 concurrent 1 MiB creates, and"
echo "   ${SETTLE_SECS}s after the load"
awk -F'\t' '{ w[NR] = $1; s[$1] = $2 / 1024; h[$1] = $3 / 1024; a[$1] = $4 / 1024 }
    END {
        printf "  %-16s %12s %12s %12s  %8s %8s\n", "", "gateway", "nginx", "haproxy", "gw/ngx", "gw/hap"
        printf "  %-16s %12.1f %12.1f %12.1f\n", "after start-up", s["gateway"], s["nginx"], s["haproxy"]
        printf "  %-16s %12.1f %12.1f %12.1f  %8.2f %8.2f\n", "peak (VmHWM)", h["gateway"], h["nginx"],
            h["haproxy"], h["gateway"] / h["nginx"], h["gateway"] / h["haproxy"]
        printf "  %-16s %12.1f %12.1f %12.1f  %8.2f %8.2f\n", "after the load", a["gateway"], a["nginx"],
            a["haproxy"], a["gateway"] / a["nginx"], a["gateway"] / a["haproxy"]
        for (i = 1; i <= 3; i++) pu[w[i]] = (h[w[i]] - s[w[i]]) * 1024 / 256
        printf "  %-16s %12.0f %12.0f %12.0f  %8.2f %8.2f\n", "KiB per upload", pu["gateway"],
            pu["nginx"], pu["haproxy"], (pu["nginx"] > 0 ? pu["gateway"] / pu["nginx"] : 0),
            (pu["haproxy"] > 0 ? pu["gateway"] / pu["haproxy"] : 0)
    }' "$mem"
echo "I: ${IDLE_CONNS} idle keep-alive connections, resident memory added per connection (KiB)"
awk -F'\t' '{ c[$1] = $2; k[$1] = ($4 - $3) / ($2 > 0 ? $2 : 1) }
    END {
        printf "  %-16s %12.2f %12.2f %12.2f  %8.2f %8.2f\n", "KiB per conn", k["gateway"], k["nginx"],
            k["haproxy"], (k["nginx"] > 0 ? k["gateway"] / k["nginx"] : 0),
            (k["haproxy"] > 0 ? k["gateway"] / k["haproxy"] : 0)
        printf "  %-16s %12d %12d %12d\n", "connections", c["gateway"], c["nginx"], c["haproxy"]
    }' "$idle"
fi
cat <<EOF

CPU = user+sys of the proxy (gateway: the process, all threads; nginx: master + 2 workers)
from /proc/PID/stat, 1/$CLK_TCK s ticks, over the run. Peak RSS = VmHWM after a reset
(clear_refs 5) at the start of the run, summed over nginx's processes. For 3 and 4, p99 is
the nearest-rank p99 of the per-transfer times (the maximum for fewer than 100 transfers).
1L: the gateway instance with access_log = FILE against nginx with access_log FILE.
1S: the gateway instance with a [store] (SQLite in the temp dir, WAL, synchronous = normal)
and rpm, burst, concurrency and daily_seconds on the key (none refused), run right after 1;
its CPU includes the store thread. Its nginx column is the nginx run of 1.
1R: 1S's configuration with backend = redis (rpm and concurrency decided in Redis), run
right after 1S; its CPU is the gateway's only (redis-server's is printed apart above).
4b: a second gateway run against nginx with proxy_buffering off.
haproxy: 2 threads, tune.bufsize 65536, http-reuse always, no log, bodies streamed; it has no
run in 1L, 1S, 1R and 4b.
EOF
if [ "$TLS" = 0 ]; then
# issue 11's goals, each with its ratio in this run
awk -F'\t' 'FILENAME == ARGV[1] { c[$1, $3] = $7; next }
    FILENAME == ARGV[2] { s[$1] = $2; h[$1] = $3; a[$1] = $4; next }
    { ic[$1] = ($4 - $3) / ($2 > 0 ? $2 : 1) }
    function goal(what, r, lim, unit) {
        printf "  %-58s %6.2f%s (goal %s%s): %s\n", what, r, unit, "<= ", lim unit,
            (r <= lim ? "met" : "NOT met")
    }
    END {
        print "\nissue 11 goals (this run):"
        goal("1 MiB image create CPU, gateway/haproxy", c[2, "gateway"] / c[2, "haproxy"], 1, "")
        goal("the same with limits + store, gateway/haproxy", c["2S", "gateway"] / c[2, "haproxy"],
             1, "")
        goal("200 MiB upload CPU, gateway/haproxy", c[3, "gateway"] / c[3, "haproxy"], 1, "")
        goal("50 MiB download CPU, gateway/nginx", c[4, "gateway"] / c[4, "nginx"], 0.8, "")
        goal("small create CPU, gateway/nginx", c[1, "gateway"] / c[1, "nginx"], 1, "")
        goal("small create with limits + store, gateway/nginx", c["1S", "gateway"] / c[1, "nginx"],
             1, "")
        goal("memory per concurrent upload, KiB", (h["gateway"] - s["gateway"]) / 256, 128, "")
        goal("VmHWM with 256 concurrent 1 MiB creates, MiB", h["gateway"] / 1024, 48, "")
        goal("RSS after the load over start-up, MiB", (a["gateway"] - s["gateway"]) / 1024, 16, "")
        goal("memory per idle connection, gateway/nginx",
             ic["gateway"] / (ic["nginx"] > 0.01 ? ic["nginx"] : 0.01), 1, "")
    }' "$results" "$mem" "$idle"
# the cost of limits + store per create, and the goal of issue 6 (at most 3 us more)
awk -F'\t' '$3 == "gateway" && ($1 == "1" || $1 == "1S" || $1 == "1R") { c[$1] = $7; u[$1] = $11; s[$1] = $12 }
    END { d = c["1S"] - c["1"]
        printf "\nlimits + store: %.1f -> %.1f us per create, %+.1f us (user %+.1f, sys %+.1f); " \
            "goal: at most +3.0 us: %s\n", c["1"], c["1S"], d, u["1S"] - u["1"], s["1S"] - s["1"],
            (d <= 3.0 ? "met" : "NOT met")
        if (f32 != "")
            printf "  its floor: SQLite alone spends %s us per job row in transactions of 32, " \
                "%s of 256, %s of 4096 (sqlite_floor, this run)\n", f32, f256, f4096
        r = c["1R"] - c["1S"]
        printf "store on Redis: %.1f -> %.1f us per create, %+.1f us next to SQLite (user %+.1f, " \
            "sys %+.1f); goal: at most +5.0 us: %s\n", c["1S"], c["1R"], r, u["1R"] - u["1S"],
            s["1R"] - s["1S"], (r <= 5.0 ? "met" : "NOT met") }' \
    f32="$(sed -n 's/.*batch=32 us_per_row=//p' "$tmp/floor.tsv")" \
    f256="$(sed -n 's/.*batch=256 us_per_row=//p' "$tmp/floor.tsv")" \
    f4096="$(sed -n 's/.*batch=4096 us_per_row=//p' "$tmp/floor.tsv")" "$results"
else
# the same goals with an HTTPS upstream (issue 11: "the same ratios ... the production path")
awk -F'\t' '{ c[$1, $3] = $7 }
    function goal(what, r, lim) {
        printf "  %-58s %6.2f (goal <= %s): %s\n", what, r, lim, (r <= lim ? "met" : "NOT met")
    }
    END {
        print "\nissue 11 goals, HTTPS upstream (this run):"
        goal("1 MiB image create CPU, gateway/haproxy", c[2, "gateway"] / c[2, "haproxy"], 1)
        goal("200 MiB upload CPU, gateway/haproxy", c[3, "gateway"] / c[3, "haproxy"], 1)
        goal("50 MiB download CPU, gateway/nginx", c[4, "gateway"] / c[4, "nginx"], 0.8)
        goal("small create CPU, gateway/nginx", c[1, "gateway"] / c[1, "nginx"], 1)
    }' "$results"
fi

# ------------------------------------------------------------------ optional profile
# Not part of the figures above: perf and strace slow the proxy down.
if [ "${BENCH_PERF:-0}" = 1 ]; then
    psecs=5
    if command -v perf >/dev/null; then
        # where a small create's time goes, by library: the floor under the small-create goal
        perf_dsos() {
            perf report -i "$1" --stdio --no-children --sort dso --percent-limit 0.5 -g none \
                2>/dev/null | awk '!/^#/ && NF >= 2 {printf "%s%s %s", (n++ ? ", " : "   "), $2, $1}
                END {print ""}'
        }
        for who in gateway haproxy; do
            if [ "$who" = gateway ]; then pid=$GW_PID url=$GWU; else pid=$HAP_PID url=$HAPU; fi
            say "perf: $who's time by library during 5 uploads of ${UPLOAD_MIB} MiB (user and kernel)"
            perf record -F 999 -o "$tmp/perf-up-$who.data" -p "$pid" -- sleep 600 >/dev/null 2>&1 &
            perf_pid=$!
            sleep 0.5
            for i in 1 2 3 4 5; do
                curl_once upload "$url" perf "$who" "$i" "$tmp/curl-perf-$who.txt"
            done
            kill -INT "$perf_pid" 2>/dev/null || true
            wait "$perf_pid" || true
            perf_dsos "$tmp/perf-up-$who.data"
        done
        hosts=(gateway)
        [ "$TLS" = 0 ] && hosts+=(gwstore)
        for who in "${hosts[@]}"; do
            if [ "$who" = gateway ]; then pid=$GW_PID url=$GWU; else pid=$GWS_PID url=$GWSU; fi
            say "perf (user space): $who's top symbols during ${psecs}s of small creates"
            perf record --all-user -g -F 999 -o "$tmp/perf-$who.data" -p "$pid" -- sleep "$psecs" \
                >/dev/null 2>&1 &
            perf_pid=$!
            BENCH_KEY=$KEY wrk -t"$WRK_THREADS" -c"$SMALL_CONNS" -d"${psecs}s" \
                -s "$root/scripts/bench/create.lua" "$url/v1/videos" >/dev/null
            wait "$perf_pid" || true
            perf report -i "$tmp/perf-$who.data" --stdio --no-children --sort dso,symbol \
                --percent-limit 1 -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -25
            echo "   by library (user space):"
            perf_dsos "$tmp/perf-$who.data"
        done
    fi
    if command -v strace >/dev/null; then
        say "strace -c: system calls per small create (${psecs}s each)"
        hosts=(gateway nginx)
        [ "$TLS" = 0 ] && hosts=(gateway gwstore nginx)
        for who in "${hosts[@]}"; do
            case $who in
            gateway) pid=$GW_PID url=$GWU ;;
            gwstore) pid=$GWS_PID url=$GWSU ;;
            nginx) pid=$NGX_PID url=$NGXU ;;
            esac
            args=()
            for p in $(proc_pids "$pid"); do args+=(-p "$p"); done
            strace -c -f "${args[@]}" -o "$tmp/strace-$who.txt" 2>/dev/null &
            strace_pid=$!
            sleep 0.5
            out=$(BENCH_KEY=$KEY wrk -t"$WRK_THREADS" -c"$SMALL_CONNS" -d"${psecs}s" \
                -s "$root/scripts/bench/create.lua" "$url/v1/videos" | grep '^BENCH ')
            kill -INT "$strace_pid" 2>/dev/null || true
            wait "$strace_pid" || true
            printf '   %-8s %s per request\n' "$who" "$(awk -v n="$(kv requests "$out")" '
                /^-----/ { sep++; next }
                sep == 1 && NF >= 5 && $4 / n >= 0.01 { printf "%.2f %s\n", $4 / n, $NF }
                sep == 2 { printf "%.2f total\n", $4 / n }' "$tmp/strace-$who.txt" |
                sort -rn | awk '{printf "%s%s=%s", (NR > 1 ? " " : ""), $2, $1}')"
        done
    fi
fi
[ "$invalid" -eq 0 ] || die "some runs had failed requests (marked INVALID above)"

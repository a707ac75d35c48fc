#!/usr/bin/env bash
# Install dependencies, build, and start the bundled stub upstream with the
# gateway in front of it (the embedded default: limits in the process, jobs, usage
# and keys in an SQLite file, the admin listener with the usage page). Prints what to try.
#   scripts/demo.sh         start (in the background; logs in build/demo/)
#   scripts/demo.sh stop    stop both
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
demo=$root/build/demo
stop() {
    for p in gateway stub; do
        [ -f "$demo/$p.pid" ] && kill "$(cat "$demo/$p.pid")" 2>/dev/null || true
        rm -f "$demo/$p.pid"
    done
}
if [ "${1:-}" = "stop" ]; then stop; echo "stopped"; exit 0; fi

scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target gateway >/dev/null
mkdir -p "$demo"
stop
rm -f "$demo/stub.port" # a stale one would point the gateway at a stub that is gone

port=${GW_DEMO_PORT:-8080}
upkey="sk-upstream-demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
python3 tests/stub/stub_upstream.py --port 0 --key "$upkey" --ready-file "$demo/stub.port" \
    --job-seconds 10 >"$demo/stub.log" 2>&1 &
echo $! >"$demo/stub.pid"
for _ in $(seq 100); do [ -s "$demo/stub.port" ] && break; sleep 0.1; done
stub_port=$(cat "$demo/stub.port")

admin_port=${GW_DEMO_ADMIN_PORT:-8081}
# a team member's key with limits, and the team lead's (admin: the console, the admin API)
build/gateway mint-key demo >"$demo/key.txt"
build/gateway mint-key lead >"$demo/lead.txt"
key=$(sed -n 's/^#   \(sk-vgw-.*\)$/\1/p' "$demo/key.txt")
lead=$(sed -n 's/^#   \(sk-vgw-.*\)$/\1/p' "$demo/lead.txt")
{
    echo "include = $root/config/models.conf"
    echo "[server]"
    echo "listen = 127.0.0.1:$port"
    echo "[upstream]"
    echo "url = http://127.0.0.1:$stub_port"
    echo "key = env:VIDEO_UPSTREAM_KEY"
    echo "[models]"
    echo "unknown = reject"
    echo "[store]"
    echo "path = $demo/gateway.db"
    echo "[jobs]"
    echo "refresh = 5s"
    echo "[admin]"
    echo "listen = 127.0.0.1:$admin_port"
    sed -n '/^\[key/,$p' "$demo/key.txt"
    echo "rpm = 10"
    echo "burst = 3"
    echo "concurrency = 2"
    echo "daily_seconds = 600"
    sed -n '/^\[key/,$p' "$demo/lead.txt"
    echo "admin = yes"
} >"$demo/gateway.conf"
VIDEO_UPSTREAM_KEY=$upkey build/gateway -c "$demo/gateway.conf" >"$demo/access.log" 2>"$demo/gateway.log" &
echo $! >"$demo/gateway.pid"
for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$demo/gateway.log"; exit 1; }
printf 'P' >"$demo/frame.png"
cat <<MSG

Gateway listening on http://127.0.0.1:$port (stub upstream on $stub_port).
Your demo team key: $key   (config: $demo/gateway.conf)

Create a video (the gateway rewrites model veo3.1 -> veo_3_1):
  curl -sS http://127.0.0.1:$port/v1/videos -H "Authorization: Bearer $key" \\
    -F model=veo3.1 -F prompt='a cow dancing' -F seconds=8 -F size=16x9 \\
    -F input_reference=@$demo/frame.png
Then poll it and download it (ids come from the answer):
  curl -sS http://127.0.0.1:$port/v1/videos/VIDEO_ID -H "Authorization: Bearer $key"
  curl -sS -o video.mp4 http://127.0.0.1:$port/v1/videos/VIDEO_ID/content -H "Authorization: Bearer $key"
With the official OpenAI Node SDK (pinned in tests/sdk):
  (cd tests/sdk && npm ci --no-audit --no-fund && KEY=$key BASE_URL=http://127.0.0.1:$port node demo.mjs $demo/frame.png)
The demo key is limited (10 creates a minute, 3 at once in a burst, 2 in flight, 600
video-seconds a day); jobs, usage and keys live in $demo/gateway.db.
Team lead's key (admin): $lead
  usage page and key management: http://127.0.0.1:$admin_port/admin/  (sign in with the lead's key)
  usage as JSON:   curl -sS http://127.0.0.1:$admin_port/admin/usage -H "Authorization: Bearer $lead"
  metrics:         curl -sS http://127.0.0.1:$admin_port/metrics -H "Authorization: Bearer $lead"
  from the shell:  build/gateway usage -c $demo/gateway.conf; build/gateway keys list -c $demo/gateway.conf
Logs: $demo/gateway.log (errors), $demo/access.log (one JSON line per request).
Stop: scripts/demo.sh stop
MSG

#!/usr/bin/env bash
# Install the Debian packages the gateway needs to build, run and be tested.
# Idempotent; needs root (or sudo). Nothing is downloaded outside apt and npm.
set -euo pipefail

pkgs=(
    # build
    build-essential cmake pkg-config
    # libraries (see README "Dependencies" for why each is there)
    libevent-dev libevhtp-dev libonig-dev libssl-dev libhttp-parser-dev
    libcjson-dev libinih-dev libcmocka-dev libsqlite3-dev libhiredis-dev
    # tests: stub upstream and integration tests, certificates, SDK test; the admin
    # console's browser test (playwright-core from npm drives this chromium); a private
    # redis-server for the Redis store's tests (never the system's service)
    python3 openssl curl ca-certificates nodejs chromium redis-server
    # operations: sd_notify (systemd Type=notify); promtool and a real Prometheus for the tests
    libsystemd-dev prometheus
)
[ "${1:-}" = "--bench" ] && pkgs+=(nginx-light wrk haproxy)
[ "${1:-}" = "--fuzz" ] && pkgs+=(clang libclang-rt-14-dev)

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# nodesource's nodejs bundles npm; Debian's needs the separate package
command -v npm >/dev/null || $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null

#!/usr/bin/env bash
# Build with warnings as errors and run the whole test suite under ctest.
#   scripts/test.sh              normal build (build/)
#   scripts/test.sh --sanitize   ASan + UBSan build (build-asan/)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# JS dependencies, pinned in each package-lock.json: the SDK test's, the console's
# (uPlot, embedded into the binary at build time) and the browser test's
for d in tests/sdk gateway/admin/console tests/browser; do
    if [ ! -d "$d/node_modules" ]; then
        (cd "$d" && npm ci --no-audit --no-fund --loglevel=error)
    fi
done
dir=build
opts=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DGW_WERROR=ON)
if [ "${1:-}" = "--sanitize" ]; then
    dir=build-asan
    opts=(-DCMAKE_BUILD_TYPE=Debug -DGW_WERROR=ON -DGW_SANITIZE=ON)
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
cmake -S . -B "$dir" "${opts[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)"
cd "$dir" && ctest --output-on-failure -j2 --timeout 300

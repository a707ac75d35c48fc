#!/usr/bin/env bash
# scripts/fuzz.sh - build the libFuzzer targets (clang, ASan + UBSan, -Werror) and fuzz each
# one for a bounded time, one after the other.
#
#   scripts/fuzz.sh                        every tests/fuzz/fuzz_*.c, 60 s each
#   scripts/fuzz.sh multipart fuzz_router  only those (with or without the fuzz_ prefix)
#   FUZZ_SECONDS=3600 scripts/fuzz.sh      the hour-long runs
#
# A target is any tests/fuzz/fuzz_<name>.c (tests/CMakeLists.txt builds it as fuzz_<name>
# and says what it links); it fuzzes a copy of its committed corpus tests/fuzz/corpus/<name>,
# so new coverage inputs stay in build-fuzz/fuzz-results/fuzz_<name>/ (corpus/, artifacts/,
# log) and the work tree stays clean. A crasher (also a leak, timeout or out-of-memory) is
# printed and copied into tests/fuzz/corpus/<name>/ under libFuzzer's name (crash-<sha1>, ...),
# where the corpus replay (ctest -L fuzz) runs it from then on: commit it with the fix.
# The script ends with one line per target and "N passed, N failed"; it exits 1 if any
# target failed. Parallel invocations are safe (the build is serialised by a lock).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
build="build-fuzz"
results=$build/fuzz-results
case $seconds in '' | *[!0-9]*) echo "FUZZ_SECONDS: expected seconds, got \"$seconds\"" >&2; exit 2 ;; esac

targets=()
if [ $# -eq 0 ]; then
    for src in tests/fuzz/fuzz_*.c; do
        [ -e "$src" ] || continue
        src=${src##*/}
        targets+=("${src%.c}")
    done
else
    for t in "$@"; do
        t=${t##*/}
        t=fuzz_${t#fuzz_}
        t=${t%.c}
        [ -f "tests/fuzz/$t.c" ] || { echo "no fuzz target tests/fuzz/$t.c" >&2; exit 2; }
        targets+=("$t")
    done
fi
[ ${#targets[@]} -gt 0 ] || { echo "no tests/fuzz/fuzz_*.c" >&2; exit 2; }

scripts/install-deps.sh --fuzz
mkdir -p "$build"
(
    flock 9
    CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGW_FUZZ=ON \
        -DGW_WERROR=ON >/dev/null
    cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"
) 9>"$build/.build.lock"

# UB is fatal by compilation (-fno-sanitize-recover); say where it happened
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

# final_stat LOG NAME: the number libFuzzer's -print_final_stats gave for NAME
final_stat() { sed -n "s/^stat::$2: *\([0-9]*\).*/\1/p" "$1" | tail -n 1; }

summary=()
passed=0
failed=0
for t in "${targets[@]}"; do
    name=${t#fuzz_}
    committed=tests/fuzz/corpus/$name
    out=$results/$t
    rm -rf "$out"
    mkdir -p "$out/corpus" "$out/artifacts"
    if [ -d "$committed" ]; then
        cp -R "$committed/." "$out/corpus/"
    fi
    echo "== $t: ${seconds} s on a copy of $committed ($(find "$out/corpus" -type f | wc -l) inputs)"
    rc=0
    "$build/tests/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$out/artifacts/" "$out/corpus" \
        >"$out/log" 2>&1 || rc=$?

    runs=$(final_stat "$out/log" number_of_executed_units)
    [ -n "$runs" ] || runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$out/log" | tail -n 1)
    execs=$(final_stat "$out/log" average_exec_per_sec)
    new=$(final_stat "$out/log" new_units_added)

    # what libFuzzer saves on a failure; slow-unit-* is a hint, not a failure
    bad=()
    for f in "$out"/artifacts/crash-* "$out"/artifacts/leak-* "$out"/artifacts/timeout-* \
             "$out"/artifacts/oom-*; do
        if [ -e "$f" ]; then bad+=("$f"); fi
    done
    if [ "$rc" -ne 0 ] || [ ${#bad[@]} -gt 0 ]; then
        failed=$((failed + 1))
        crash=yes
        echo "!! $t FAILED (exit $rc); the end of $out/log:"
        # the sanitizer's or libFuzzer's report from its first line, without ASan's shadow map
        awk '!s && /^==[0-9]+==|deadly signal|runtime error:|ALARM: working|out-of-memory/ { s = 1 }
             /^Shadow bytes around/ { h = 1 } /^==[0-9]+==ABORTING/ { h = 0 } s && !h' \
            "$out/log" | tail -n 80
        [ ${#bad[@]} -gt 0 ] || tail -n 20 "$out/log"
        mkdir -p "$committed"
        for f in "${bad[@]}"; do
            dest=$committed/${f##*/}
            if [ -e "$dest" ]; then
                echo "!! input $dest (already in the committed corpus: still failing)"
            else
                cp "$f" "$dest"
                echo "!! input saved as $dest (commit it with the fix)"
            fi
            echo "!! $(wc -c <"$f") bytes, base64 $(head -c 4096 "$f" | base64 -w0)"
            head -c 512 "$f" | od -A d -c | head -n 32
            echo "!! reproduce: $build/tests/$t $dest"
        done
    else
        passed=$((passed + 1))
        crash=no
    fi
    summary+=("$(printf '%-16s runs %-10s exec/s %-7s new corpus items %-5s crash %s' "$t" \
        "${runs:-?}" "${execs:-?}" "${new:-?}" "$crash")")
done

echo "== fuzz summary (${seconds} s per target; logs and new inputs in $results/)"
printf '%s\n' "${summary[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

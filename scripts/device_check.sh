#!/usr/bin/env bash
# On the GPU machine, from the repository root (the device tool, carry [".device", ".whl"]): unpacks what
# scripts/pack_device.sh packed, runs `linea verify --backend cuda` with bf16, f16 and f32 inputs and, when
# .device/tests.tar.xz is there, the GPU test suites (NVRTC kernel cache in and out as .device/cache.tar.xz and
# $OUT/cache.tar.xz); with --compare, also lab/compare_gpu.py (fla's wheels
# installed from .whl when present). Full outputs go to $OUT (else /tmp/linea-device); a summary line each to stdout.
# LINEA_SKIP_VERIFY=1 skips the verify runs; TEST_SUITES="A B" runs those GPU suites one at a time, TEST_SUITES=each
# every one. In verify and the tests, outputs the ops write whole are allocated filled with NaN
# (LINEA_POISON_UNINITIALIZED=1), so an element a kernel forgets to write fails the checks (not in the timed
# comparison: the fill would be timed).
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/linea-device}
mkdir -p "$out" /tmp/linea-d /tmp/linea-t
unpack() { python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$1" "$2"; }
if [ -f .device/linea.tar.xz ]; then
    unpack .device/linea.tar.xz /tmp/linea-d
    export LD_LIBRARY_PATH=/tmp/linea-d/lib
elif [ ! -f .device/tests.tar.xz ]; then
    echo "device_check: neither .device/linea.tar.xz nor .device/tests.tar.xz (run scripts/pack_device.sh [--tests])" >&2; exit 1
fi
# NVRTC compiles of every module take minutes on a fresh machine: the kernel cache comes in as .device/cache.tar.xz (a
# previous call's $OUT/cache.tar.xz, one file because the device tool returns only a few files) and goes back out the same way.
export LINEA_CUDA_CACHE=/tmp/linea-cache
mkdir -p "$LINEA_CUDA_CACHE"
[ -f .device/cache.tar.xz ] && xz -dc .device/cache.tar.xz | tar -C "$LINEA_CUDA_CACHE" -xf -
trap 'tar -C "$LINEA_CUDA_CACHE" -cf - . | xz -6 -T0 > "$out/cache.tar.xz"' EXIT
status=0
for dtype in $([ "${LINEA_SKIP_VERIFY:-0}" = 1 ] || [ ! -f /tmp/linea-d/linea ] || echo bf16 f16 f32); do
    LINEA_POISON_UNINITIALIZED=1 /tmp/linea-d/linea verify --backend cuda --dtype "$dtype" > "$out/verify_$dtype.txt" 2>&1 || status=1
    echo "verify $dtype: $(tail -1 "$out/verify_$dtype.txt")"
done
if [ -f .device/tests.tar.xz ]; then
    unpack .device/tests.tar.xz /tmp/linea-t
    # Bounded (TESTS_LIMIT seconds, default 420) so that the script still ends, and writes the cache, within a call.
    # TEST_SUITES="A B ..." runs those suites one after another, each bounded by TESTS_LIMIT, a summary line each
    # (TEST_SUITES=each: every suite of LineaCUDATests, below);
    # TESTS_ARGS adds arguments (e.g. --no-parallel, to name a test that never ends). Every 30 s a line counts the
    # tests started and ended, the process's CPU use, the kernel cache's files and the GPU's use (compiling, waiting,
    # or a kernel that never ends?); at the limit every thread's stack goes to $out/tests[_<suite>]_stacks.txt
    # (scripts/stacks.c; symbolize it here with `scripts/symbolize_stacks.py FILE .device/symbols`, where
    # pack_device.sh left the unstripped test binary), and the tests that started but did not end are named.
    run_tests() {
        local log=$2 limit=${TESTS_LIMIT:-420} start=$SECONDS report=30
        (cd /tmp/linea-t && LINEA_POISON_UNINITIALIZED=1 LD_LIBRARY_PATH=/tmp/linea-t/lib \
            exec ./LineaPackageTests.xctest --testing-library swift-testing ${TESTS_ARGS:-} --filter "$1" > "$log" 2>&1) &
        local pid=$!
        while kill -0 $pid 2>/dev/null; do
            sleep 1  # a suite that ends at once costs a second, not a poll period
            if (( SECONDS - start >= report )); then
                report=$((report + 30))
                # Swift Testing prints a "Test case passing ..." start for each case of a parameterized test but no
                # end for it: the test functions are counted apart from their cases.
                echo "  $1 at $((SECONDS - start)) s: $(grep 'started\.$' "$log" | grep -vcE ' Test (case|run) ') tests started" \
                    "($(grep -c ' Test case .*started\.$' "$log") cases), $(grep -cE ' (passed|failed|skipped)' "$log") ended," \
                    "cpu $(ps -o %cpu= -p $pid 2>/dev/null)%, $(ls "$LINEA_CUDA_CACHE" | wc -l) cached kernels," \
                    "gpu $(nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader 2>/dev/null | head -1)"
            fi
            if (( SECONDS - start > limit )); then
                /tmp/linea-t/stacks $pid > "${log%.txt}_stacks.txt" 2>&1
                kill -9 $pid
                echo "  $1: stopped at the limit; not ended: $(python3 -c '
import re, sys
started, ended = [], set()
for line in open(sys.argv[1], errors="replace"):
    line = line.strip()
    if re.match(r"^\S+ Test (case|run) ", line): continue  # the cases of a parameterized test, the whole run
    if m := re.match(r"^\S+ Test (.+?) started\.$", line): started.append(m.group(1))
    elif m := re.match(r"^\S+ Test (.+?) (passed|failed|skipped)", line): ended.add(m.group(1))
print(", ".join(t for t in started if t not in ended)[:3000])' "$log")"
                break
            fi
        done
        wait $pid || status=1
        echo "GPU tests $1: $(grep -v 'started\.$' "$log" | tail -1) ($(grep -c ' skipped' "$log") suites or tests skipped)"
    }
    if [ "${TEST_SUITES:-}" = each ]; then
        # Every suite of LineaCUDATests in its own process, one after another, each within TESTS_LIMIT (default 120 s
        # here) and all within TESTS_DEADLINE seconds of the script's start (default 540), so that a suite that never
        # ends leaves the others' results, and the kernel cache grows for the next call.
        suites=$(cd /tmp/linea-t && LD_LIBRARY_PATH=/tmp/linea-t/lib ./LineaPackageTests.xctest --testing-library swift-testing \
            --list-tests 2>/dev/null | sed -n 's|^LineaCUDATests\.\([A-Za-z0-9_]*\)/.*|\1|p' | sort -u)
        for suite in $suites; do
            left=$(( ${TESTS_DEADLINE:-540} - SECONDS )) each=${TESTS_LIMIT:-120}
            if (( left < 20 )); then echo "GPU tests: no time left for $suite and the suites after it"; break; fi
            TESTS_LIMIT=$(( left < each ? left : each )) run_tests "LineaCUDATests.$suite/" "$out/tests_$suite.txt"
        done
    elif [ -n "${TEST_SUITES:-}" ]; then
        for suite in $TEST_SUITES; do run_tests "$suite" "$out/tests_${suite//[^A-Za-z0-9_.-]/_}.txt"; done
    else
        run_tests LineaCUDATests "$out/tests.txt"
    fi
fi
if [ "${1:-}" = "--compare" ]; then
    if compgen -G ".whl/*.whl" > /dev/null; then
        python3 -m pip install -q --no-index --no-deps --target /tmp/linea-site .whl/*.whl
        export PYTHONPATH=/tmp/linea-site
    fi
    python3 -u lab/compare_gpu.py --linea /tmp/linea-d/linea > "$out/compare.txt" 2>&1 || status=1
    tail -25 "$out/compare.txt"
fi
exit $status

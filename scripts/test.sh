#!/usr/bin/env bash
# Installs dependencies, builds kbfleet and runs every test: once in a normal build and once with
# AddressSanitizer + UndefinedBehaviorSanitizer. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
jobs=$(nproc)
# ccache keyed on paths relative to the checkout, so clones in other folders share the cache.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1

echo "== build (RelWithDebInfo)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
ninja -C build
echo "== tests"
ctest --test-dir build -j"$jobs" --output-on-failure --timeout 300

echo "== build (ASan + UBSan)"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DKBFLEET_SANITIZE=ON >/dev/null
ninja -C build-asan
echo "== tests under sanitizers"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan -j"$jobs" --output-on-failure --timeout 300

echo "== fuzz targets (known reproducers must not crash; then 15 s of fuzzing each)"
KBFLEET_FUZZ_NEW_FINDS=warn scripts/fuzz.sh 15

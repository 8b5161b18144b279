#!/usr/bin/env bash
# Builds the libFuzzer targets in fuzz/ (clang, ASan + UBSan) and runs each one for a bounded
# time: usage: scripts/fuzz.sh [SECONDS per target, default 20].
# For each target it first replays fuzz/crashes/<target>/* (regressions: each must not crash),
# then fuzzes a scratch copy of fuzz/corpus/<target>/ so the committed corpus never grows here.
# Exits 1 if anything crashed, timed out or ran out of memory, printing the reproducer's path;
# fuzz/README.md says how to turn one into a regression input.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: scripts/fuzz.sh [SECONDS per target, default 20]" >&2
  exit 64
fi
targets=(protocol_body_fuzz json_input_fuzz manifest_fuzz fd3_line_fuzz line_splitter_fuzz journal_fields_fuzz)

scripts/install-deps.sh
# clang and libFuzzer are optional developer tools, not in install-deps.sh (docs/dependencies.md).
if ! command -v clang++ >/dev/null ||
   ! dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null | grep -q "install ok installed"; then
  echo "installing: clang libclang-rt-14-dev lld" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends clang libclang-rt-14-dev lld
fi
# ccache keyed on paths relative to the checkout, so clones in other folders share the cache.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1

build=build-fuzz
echo "== build ($build: clang, -fsanitize=fuzzer,address,undefined)"
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKBFLEET_FUZZ=ON -DKBFLEET_TESTS=OFF >/dev/null
ninja -C "$build" fuzzers

# UBSan only reports by default: make undefined behaviour a crash libFuzzer records.
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1
fuzz_flags=(-max_len=65536 -timeout=10 -rss_limit_mb=2048)
out="$build/fuzz-out"           # logs and reproducers of this run, kept for CI to upload
rm -rf "$out"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()     # known reproducers that crash again: always fatal
new_finds=()  # crashes found by this run's random search

for t in "${targets[@]}"; do
  bin="$build/bin/$t"
  mkdir -p "$out/$t"
  if compgen -G "fuzz/crashes/$t/*" >/dev/null; then
    echo "== $t: replaying fuzz/crashes/$t/"
    for input in fuzz/crashes/"$t"/*; do
      log="$out/$t/regression-$(basename "$input").log"
      if "$bin" "${fuzz_flags[@]}" "$input" >"$log" 2>&1; then
        echo "   ok    $input"
      else
        echo "   CRASH $input (log: $log)"
        grep -m3 -E "invariant broken|runtime error|ERROR: AddressSanitizer|ERROR: libFuzzer" "$log" | sed 's/^/         /' || true
        failed+=("$t: reproducer $input")
      fi
    done
  fi

  echo "== $t: fuzzing for ${seconds}s"
  corpus="$scratch/$t"
  mkdir -p "$corpus"
  cp -r "fuzz/corpus/$t/." "$corpus/" 2>/dev/null || true
  dict=()
  [ -f "fuzz/dicts/$t.dict" ] && dict=(-dict="fuzz/dicts/$t.dict")
  log="$out/$t/fuzz.log"
  if "$bin" "${fuzz_flags[@]}" "${dict[@]}" -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="$out/$t/" "$corpus" >"$log" 2>&1; then
    grep -E "^#[0-9]+[[:space:]]+DONE" "$log" | tail -1 | sed 's/^/   /' || true
  else
    echo "   CRASH (log: $log)"
    grep -m3 -E "invariant broken|runtime error|ERROR: AddressSanitizer|ERROR: libFuzzer|SUMMARY" "$log" | sed 's/^/   /' || true
    found=0
    for r in "$out/$t"/crash-* "$out/$t"/leak-* "$out/$t"/timeout-* "$out/$t"/oom-*; do
      [ -e "$r" ] || continue
      echo "   reproducer: $r"
      new_finds+=("$t: new reproducer $r")
      found=1
    done
    [ "$found" = 1 ] || new_finds+=("$t: the fuzzer failed without a reproducer, see $log")
  fi
done

# KBFLEET_FUZZ_NEW_FINDS=warn (scripts/test.sh sets it): a crash the random search happens to hit
# in this run is printed loudly but does not fail the run, so CI stays deterministic; regressions
# (fuzz/crashes/) always fail. Run scripts/fuzz.sh by hand to treat new finds as failures.
if [ ${#new_finds[@]} -gt 0 ] && [ "${KBFLEET_FUZZ_NEW_FINDS:-fail}" = warn ]; then
  echo "== WARNING: new fuzz finds (not failing this run; add them to fuzz/crashes/ and fix)"
  printf '   %s\n' "${new_finds[@]}"
  new_finds=()
fi
failed+=("${new_finds[@]}")
if [ ${#failed[@]} -gt 0 ]; then
  echo "== FAILED"
  printf '   %s\n' "${failed[@]}"
  echo "   replay one: $build/bin/<target> <file>; keep it: copy it to fuzz/crashes/<target>/ (fuzz/README.md)"
  exit 1
fi
echo "== all fuzz targets ran ${seconds}s without a crash"

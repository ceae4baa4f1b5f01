#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, with ASan + UBSan) and runs each for a bounded time,
# starting from the committed seed corpus. Usage: scripts/fuzz.sh [seconds per harness, default 45]
# For long runs by hand: build/fuzz/fuzz_encode -runs=1000000 tests/fuzz/corpus/fuzz_encode
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-45}
bash scripts/apt_install.sh clang-14 libclang-rt-14-dev  # libFuzzer lives in the second
# -g1 (clang: line tables only): enough for the crash reports (as scripts/sanitize.sh).
CXX=clang++-14 cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" -DTURBOKV_BUILD_FUZZ=ON >/dev/null
cmake --build build/fuzz
for harness in fuzz_encode fuzz_packed_readers fuzz_state_restore; do
  work=build/fuzz/corpus-$harness
  mkdir -p "$work"
  echo "== $harness: $seconds s"
  # New inputs go to the scratch corpus; the committed seeds are only read. Any crash fails.
  status=0
  build/fuzz/$harness -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix=build/fuzz/ \
    "$work" "tests/fuzz/corpus/$harness" > "build/fuzz/$harness.log" 2>&1 || status=$?
  grep -E "stat::number_of_executed_units|ERROR|SUMMARY|==[0-9]+==" "build/fuzz/$harness.log" | head -20
  if [ "$status" -ne 0 ]; then
    tail -40 "build/fuzz/$harness.log"
    exit "$status"
  fi
done

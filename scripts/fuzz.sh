#!/usr/bin/env bash
# Runs the libFuzzer harnesses (built with ASan + UBSan by scripts/sanitize_build.sh) side by side
# for a bounded time, starting from the committed seed corpus. Any crash fails.
# Usage: scripts/fuzz.sh [seconds per harness, default 45]
# For long runs by hand: build/sanitize/fuzz_encode -runs=1000000 tests/fuzz/corpus/fuzz_encode
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-45}
bash scripts/sanitize_build.sh
harnesses=(fuzz_encode fuzz_packed_readers fuzz_state_restore)
pids=()
for harness in "${harnesses[@]}"; do
  work=build/sanitize/corpus-$harness
  mkdir -p "$work"
  # New inputs go to the scratch corpus; the committed seeds are only read.
  build/sanitize/$harness -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix=build/sanitize/$harness- "$work" "tests/fuzz/corpus/$harness" \
    > "build/sanitize/$harness.log" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!harnesses[@]}"; do
  harness_status=0
  wait "${pids[$i]}" || harness_status=$?
  echo "== ${harnesses[$i]}: $seconds s, exit $harness_status"
  grep -E "stat::number_of_executed_units|ERROR|SUMMARY|==[0-9]+==" "build/sanitize/${harnesses[$i]}.log" | head -20
  if [ "$harness_status" -ne 0 ]; then
    tail -40 "build/sanitize/${harnesses[$i]}.log"
    status=$harness_status
  fi
done
exit $status

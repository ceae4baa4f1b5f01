#!/usr/bin/env bash
# The GoogleTest suite on arm64: cross-compiled with Debian's g++-aarch64-linux-gnu and run under
# qemu-user, at both levels arm64 has (scalar and NEON; SimdParity checks NEON codes and norms are
# bit-identical to scalar). Left to the native and sanitizer runs, as they take minutes under
# emulation and test logic rather than instructions: the concurrency tests (locking) and two
# attention-option sweeps (their kernels are the ones FusedAttentionEqualsDecodedAttention runs).
# Also left out: ChunkSlabs.LargeSlabsAskForHugePages, as qemu-user drops madvise advice (the
# host kernel's pages are not the emulated program's to ask for).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/apt_install.sh g++-aarch64-linux-gnu qemu-user googletest
cmake -S . -B build/arm64 -G Ninja -Wno-dev -Wno-deprecated -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
  -DTURBOKV_BUILD_TESTS=ON -DTURBOKV_GTEST_SOURCE=/usr/src/googletest >/dev/null
cmake --build build/arm64 --target turbokv_tests
# Two shards side by side (emulation is single-threaded per process).
filter='-*Concurrency*:KVCache.TilesAndCodesAgreeUnderEveryOption:KVCache.SlidingWindowSeesOnlyItsNewestTokens:ChunkSlabs.LargeSlabsAskForHugePages'
pids=()
for shard in 0 1; do
  GTEST_TOTAL_SHARDS=2 GTEST_SHARD_INDEX=$shard qemu-aarch64 -L /usr/aarch64-linux-gnu \
    build/arm64/turbokv_tests --gtest_brief=1 --gtest_filter="$filter" "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status

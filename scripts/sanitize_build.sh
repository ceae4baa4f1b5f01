#!/usr/bin/env bash
# Configures and builds build/sanitize: the GoogleTest suite and the libFuzzer harnesses against one
# core compiled once with clang, AddressSanitizer, UndefinedBehaviorSanitizer and the fuzzer's
# coverage hooks (scripts/sanitize.sh runs the suite, scripts/fuzz.sh the harnesses). One build
# for both instead of one each saves ~3 minutes of CI's 30.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/apt_install.sh clang-14 libclang-rt-14-dev  # libFuzzer lives in the second
# A build/sanitize configured with another compiler (GCC, before this build served the fuzzers
# too) keeps it in its cache, which CXX does not override: start that one afresh.
if [ -f build/sanitize/CMakeCache.txt ] && ! grep -q '^CMAKE_CXX_COMPILER:[A-Z]*=.*clang++-14$' build/sanitize/CMakeCache.txt; then
  rm -rf build/sanitize
fi
# -g1 (clang: line tables only): enough for the reports' stack traces, without the variable
# descriptions of -g, which made this build ~1.4x longer; debug info never changes the code.
# -O1, the level AddressSanitizer's documentation suggests: on a 2-core Zen 3 VM (CI runs on the
# session's own machine) the int8 and int16 score kernels' templates took 257 and 290 s of this
# build at -O2; at -O1 the build took 920 CPU-seconds against 1,173, the section 491 s against
# 571 (its tests 168 s against 146; session 62). Without the VNNI forms where the CPU runs neither
# (scripts/vnni_forms_here.sh): ASan checks only code that runs.
CXX=clang++-14 cmake -S . -B build/sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DTURBOKV_BUILD_TESTS=ON -DTURBOKV_SANITIZE=ON -DTURBOKV_BUILD_FUZZ=ON \
  -DTURBOKV_VNNI_FORMS="$(bash scripts/vnni_forms_here.sh)" >/dev/null
cmake --build build/sanitize

#!/usr/bin/env bash
# The C++ concurrency tests (readers racing a writer on one cache) under ThreadSanitizer: any data
# race report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
# -O1 -g1: line tables for the reports, the build's time kept down (as scripts/sanitize_build.sh).
cmake -S . -B build/tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTURBOKV_BUILD_TESTS=ON \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DTURBOKV_TSAN=ON \
  -DTURBOKV_VNNI_FORMS="$(bash scripts/vnni_forms_here.sh)" >/dev/null
cmake --build build/tsan --target turbokv_tests
# Under TSan the test binary holds only the suites that start threads (CMakeLists.txt:
# turbokv_threaded_test_sources): KVCache, Concurrency, ThreadPool, WriterFirstMutex. ctest runs
# each test in its own process, two at a time: three attention sweeps take 122 of the 153 s one
# process took on a 2-core Zen 3 VM.
TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 ctest --test-dir build/tsan --output-on-failure -j 2

#!/usr/bin/env bash
# Sets up and runs every test: GoogleTest (plain, ASan+UBSan, TSan, arm64 under qemu), bounded fuzzing, a valgrind leak
# check, the transformers 4.57 tests, then pytest on the package.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
bash scripts/setup.sh

echo "== C++ tests (GoogleTest) =="
cmake -S . -B build/cpp-tests -G Ninja -DTURBOKV_BUILD_TESTS=ON -DTURBOKV_BUILD_BENCH=ON >/dev/null
cmake --build build/cpp-tests
ctest --test-dir build/cpp-tests --output-on-failure -j 2

echo "== C++ tests under AddressSanitizer + UndefinedBehaviorSanitizer =="
bash scripts/sanitize.sh

echo "== C++ concurrency tests under ThreadSanitizer =="
bash scripts/tsan.sh

echo "== C++ tests on arm64 (cross-compiled, qemu-user; scalar and NEON) =="
bash scripts/test_arm.sh

echo "== Fuzzing (libFuzzer, bounded) =="
bash scripts/fuzz.sh 20

echo "== Leak check of the Python extension (valgrind) =="
bash scripts/leakcheck.sh

echo "== Hugging Face integration on transformers 4.57 =="
bash scripts/test_transformers_457.sh

echo "== Python tests (pytest, one worker per core up to 4, whole files per worker) =="
workers=$(nproc); workers=$(( workers > 4 ? 4 : workers ))
"$PYTHON" -m pytest -q -n "$workers" --dist loadfile tests/python

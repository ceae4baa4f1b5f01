#!/usr/bin/env bash
# Runs the Hugging Face integration tests against transformers 4.57 as well: transformers 4.57.6 and
# the hub/tokenizers versions it needs go into build/transformers-4.57, ahead of the installed 5.x
# on PYTHONPATH (numpy, torch and turbokv itself come from the active environment).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
target=build/transformers-4.57
if [ ! -e "$target/transformers/__init__.py" ]; then
  "$PYTHON" -m pip install -q --root-user-action=ignore --no-deps --target "$target" \
    transformers==4.57.6 "huggingface-hub==0.36.2" "tokenizers==0.22.2"
fi
PYTHONPATH="$PWD/$target${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c \
  "import transformers; assert transformers.__version__ == '4.57.6', transformers.__version__"
PYTHONPATH="$PWD/$target${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m pytest -q tests/python/test_hf.py

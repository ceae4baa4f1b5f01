#!/usr/bin/env bash
# Runs the Hugging Face integration tests against the other transformers versions turbokv supports
# (the main environment has 5.18, scripts/setup.sh): 4.57.6, the oldest, and 5.25.0, whose forward
# and generate take the cache as `cache=` (`past_key_values=` is deprecated there). FutureWarnings
# are errors here, so a call by a deprecated name fails the run. Each version, and what it needs
# beyond the main environment, goes into build/transformers-VERSION, ahead of it on PYTHONPATH
# (numpy, torch and turbokv itself come from the active environment).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

test_version() {  # test_version VERSION [PACKAGES the version needs beyond the main environment]
  local version=$1 target=build/transformers-$1
  shift
  if [ ! -e "$target/transformers/__init__.py" ]; then
    "$PYTHON" -m pip install -q --root-user-action=ignore --no-deps --target "$target" \
      "transformers==$version" "$@"
  fi
  echo "transformers $version:"
  PYTHONPATH="$PWD/$target${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c \
    "import transformers; assert transformers.__version__ == '$version', transformers.__version__"
  TURBOKV_TEST_HF=1 PYTHONPATH="$PWD/$target${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m pytest -q -W error::FutureWarning \
    tests/python/test_hf.py tests/python/test_hf_models.py
}

test_version 4.57.6 "huggingface-hub==0.36.2" "tokenizers==0.22.2"
test_version 5.25.0 "huggingface-hub==2.4.0" "kernels==0.19.1" "tomlkit==0.15.3"

"""Whether the [hf] extra (torch, transformers) is there, and which test code needs it.

It is optional: `pip install '.[test]'` alone gives a run where the tests that need it are skipped,
each with HF_REASON (conftest.py). scripts/test.sh sets TURBOKV_TEST_HF=1, and there a missing
extra fails those tests instead: nothing is skipped in CI for want of it.
"""

import importlib.util
import os
import re

HF_INSTALLED = all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))
HF_REQUIRED = os.environ.get("TURBOKV_TEST_HF") == "1"
SKIP_HF = not HF_INSTALLED and not HF_REQUIRED
HF_REASON = "needs the [hf] extra (torch, transformers): pip install '.[hf]'"

# Whole test files that import torch or transformers at the top.
HF_FILES = ["test_hf.py", "test_hf_models.py", "test_inputs.py", "test_model_loading.py", "test_quality.py"]

_HF_CODE = re.compile(r"\b(import torch|from transformers|import transformers|turbokv\.hf|turbokv\.models)\b")


def uses_hf(code: str) -> bool:
    """Whether this source text (a notebook, a README block) needs the [hf] extra."""
    return _HF_CODE.search(code) is not None

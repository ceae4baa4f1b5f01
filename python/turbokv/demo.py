"""``python -m turbokv demo``: greedy generation on the embedded llama2.c model with the float32
cache and with turbokv settings, side by side."""

from __future__ import annotations

import time
from typing import Any, Dict, List

import numpy as np

from .cache import KVCache
from .dense_cache import DenseKVCache
from .models import llama2c
from .quality import compare_logits, matching_prefix, teacher_forced_logits

# (label, KVCache keyword arguments); bits 0 = float16.
SETTINGS: List[tuple] = [
    ("K16V16 (float16)", dict(key_bits=0, value_bits=0)),
    ("K8V8", dict(key_bits=8, value_bits=8)),
    ("K8V4", dict(key_bits=8, value_bits=4)),
    ("K16V4", dict(key_bits=0, value_bits=4)),
    ("K4V4", dict(key_bits=4, value_bits=4)),
    ("K4V4 f16 norms", dict(key_bits=4, value_bits=4, norm_dtype="float16")),
    ("K4V2", dict(key_bits=4, value_bits=2)),
    ("K3V3", dict(key_bits=3, value_bits=3)),
    ("K2V2", dict(key_bits=2, value_bits=2)),
]


def run(tokens: int = 100, show_progress: bool = True) -> Dict[str, Any]:
    """Generates ``tokens`` greedy tokens from BOS per setting; returns rows of results.
    ``show_progress`` draws a progress bar on stderr (tqdm)."""
    from tqdm import tqdm

    model = llama2c.load()
    cfg = model.config

    def dense():
        return [DenseKVCache(cfg.head_dim, cfg.n_kv_heads) for _ in range(cfg.n_layers)]

    def timed(make):
        caches = make()
        start = time.perf_counter()
        ids = model.generate(caches, tokens)
        return ids, tokens / (time.perf_counter() - start), caches

    base_ids, base_tps, base_caches = timed(dense)
    forced = [llama2c.BOS] + base_ids[:-1]
    base_logits = teacher_forced_logits(model, dense(), forced)
    f16_bytes = sum(2 * c.offset * cfg.n_kv_heads * cfg.head_dim * 2 for c in base_caches)
    rows = [{"setting": "float32 (DenseKVCache)", "identical": tokens, "first_divergence": None,
             "kl_mean": 0.0, "top1_agreement": 1.0, "kv_bytes": sum(c.nbytes for c in base_caches),
             "ratio_vs_float16": f16_bytes / sum(c.nbytes for c in base_caches), "tokens_per_s": base_tps}]
    for label, kwargs in tqdm(SETTINGS, desc="cache settings", disable=not show_progress, leave=False):
        make = lambda: [KVCache(cfg.head_dim, cfg.n_kv_heads, layer_index=i, **kwargs)
                        for i in range(cfg.n_layers)]
        ids, tps, caches = timed(make)
        quality = compare_logits(base_logits, teacher_forced_logits(model, make(), forced))
        same = matching_prefix(base_ids, ids)
        used = sum(c.used_nbytes for c in caches)
        rows.append({"setting": label, "identical": int(np.sum(np.asarray(ids) == np.asarray(base_ids))),
                     "first_divergence": None if same == tokens else same,
                     "kl_mean": quality["kl_mean"], "top1_agreement": quality["top1_agreement"],
                     "kv_bytes": used, "ratio_vs_float16": f16_bytes / used, "tokens_per_s": tps})
    return {"model": "stories260K (llama2.c, head_dim 8, GQA 8/4)", "tokens": tokens,
            "baseline_ids": base_ids, "rows": rows}


def print_table(result: Dict[str, Any]) -> None:
    n = result["tokens"]
    print(f"Greedy generation of {n} tokens from BOS on {result['model']}.")
    print(f"float32 ids: {' '.join(map(str, result['baseline_ids'][:20]))} ...\n")
    print("| cache | same tokens as float32 | first divergence | teacher-forced KL | top-1 agreement "
          "| KV bytes | vs float16 | tokens/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in result["rows"]:
        div = "-" if r["first_divergence"] is None else str(r["first_divergence"])
        print(f"| {r['setting']} | {r['identical']}/{n} | {div} | {r['kl_mean']:.2e} | "
              f"{r['top1_agreement']:.3f} | {r['kv_bytes']:,} | {r['ratio_vs_float16']:.2f}x | "
              f"{r['tokens_per_s']:.0f} |")
    print("\nKV bytes: stored tokens (codes, norms, float16 values) of all 5 layers; head_dim 8 makes "
          "the per-vector norm a large share (at head_dim 128 it is 1/32 of 4-bit codes).")

"""``python -m turbokv demo``: greedy generation with the float32 cache and with turbokv settings,
side by side. Default model: the KJV Llama in the package (head_dim 64, GQA, RoPE); also
SmolLM2-135M (if installed) and the embedded llama2.c stories260K."""

from __future__ import annotations

import shutil
import textwrap
import time
from typing import Any, Dict, List, Optional

import numpy as np

from ..cache import KVCache
from ..dense_cache import DenseKVCache
from ..models import llama2c
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


def check_tokens(tokens: Any, prompt_tokens: int, positions: Optional[int]) -> None:
    """Raises ValueError unless ``tokens`` is a positive integer and the prompt plus the tokens
    fed back (all but the last) fit the model's ``positions`` (None: no limit known)."""
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
        raise ValueError(f"tokens must be a positive integer, got {tokens!r}")
    if positions is not None and prompt_tokens + tokens - 1 > positions:
        raise ValueError(f"the prompt's {prompt_tokens} tokens and {tokens} generated ones exceed the model's "
                         f"{positions} positions: ask for at most {positions - prompt_tokens + 1} tokens")


def run_stories(tokens: int = 100, show_progress: bool = True) -> Dict[str, Any]:
    """stories260K: generates ``tokens`` greedy tokens from BOS per setting; returns rows.
    ``show_progress`` draws a progress bar on stderr (tqdm).

    Raises:
        ValueError: ``tokens`` is not a positive integer, or BOS and the tokens fed back exceed
            the model's positions (512).
    """
    from ._progress import tqdm

    model = llama2c.load()
    cfg = model.config
    check_tokens(tokens, prompt_tokens=1, positions=cfg.seq_len)

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


def print_stories(result: Dict[str, Any]) -> None:
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


# The settings the text demo shows (labels of turbokv.eval.settings).
TEXT_SETTINGS = ["K8V4", "K4V4", "K3V3", "K3V3 window 128", "K2V2"]
PROMPTS = {"kjv": "And God said unto Moses,",
           "smollm2": "The printing press changed Europe because"}


def run_text(model: str = "kjv", tokens: int = 100, prompt: Optional[str] = None,
             settings: Optional[List[str]] = None, show_progress: bool = True) -> Dict[str, Any]:
    """Greedy generation of ``tokens`` tokens after ``prompt`` with transformers' float32
    DynamicCache and with a :class:`turbokv.hf.TurboQuantCache` per setting (fused attention on
    the codes). Returns the texts, identical-token counts, KV bytes and tokens/s."""
    import torch
    from ._progress import tqdm
    from transformers import DynamicCache

    from .causal import greedy
    from .settings import by_label
    from ..hf import TurboQuantCache
    from ..models import kjv_llama, smollm2

    if model not in ("kjv", "smollm2"):
        raise ValueError(f"model must be 'kjv' or 'smollm2', got {model!r}")
    check_tokens(tokens, prompt_tokens=1, positions=None)
    loader = {"kjv": kjv_llama, "smollm2": smollm2}[model]
    net, tokenizer = loader.load()
    prompt = PROMPTS[model] if prompt is None else prompt
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    if ids.shape[1] == 0:
        raise ValueError("the prompt is empty")
    cfg = net.config
    check_tokens(tokens, prompt_tokens=ids.shape[1], positions=getattr(cfg, "max_position_embeddings", None))
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    total = ids.shape[1] + tokens
    float32_bytes = 2 * 4 * cfg.num_key_value_heads * head_dim * total * cfg.num_hidden_layers
    chosen = by_label(settings or TEXT_SETTINGS)
    bar = tqdm(total=len(chosen) + 1, desc="generating", disable=not show_progress, leave=False)
    greedy(net, DynamicCache(), ids, 4)  # warm-up: first-call costs stay out of the tokens/s
    base_ids, _, seconds = greedy(net, DynamicCache(), ids, tokens)
    bar.update()
    rows = [{"setting": "float32 (DynamicCache)", "text": tokenizer.decode(base_ids[0]),
             "identical": tokens, "kv_bytes": float32_bytes, "bits_per_coordinate": 32.0,
             "tokens_per_s": (tokens - 1) / seconds}]
    for setting in chosen:
        cache = TurboQuantCache(layer_settings=setting.layer_settings(cfg.num_hidden_layers),
                                **setting.kwargs)
        out, _, seconds = greedy(net, cache, ids, tokens)
        same = next((i for i, (a, b) in enumerate(zip(base_ids[0], out[0])) if a != b), tokens)
        used = sum(layer.cache.used_nbytes for layer in cache.layers)
        coords = 2 * cfg.num_key_value_heads * head_dim * total * cfg.num_hidden_layers
        rows.append({"setting": setting.label, "text": tokenizer.decode(out[0]), "identical": same,
                     "kv_bytes": used, "bits_per_coordinate": 8.0 * used / coords,
                     "tokens_per_s": (tokens - 1) / seconds})
        bar.update()
    bar.close()
    return {"model": loader.NAME, "prompt": prompt, "tokens": tokens, "rows": rows,
            "threads": torch.get_num_threads()}


def print_text(result: Dict[str, Any]) -> None:
    """Each setting's text in a column beside the float32 text."""
    width = max(30, (min(shutil.get_terminal_size((120, 20)).columns, 140) - 3) // 2)
    base = result["rows"][0]
    print(f"{result['model']}: greedy, {result['tokens']} tokens after the prompt {result['prompt']!r}.")
    print(f"float32 cache: {base['kv_bytes']:,} bytes of K/V, {base['tokens_per_s']:.0f} tokens/s.\n")
    left = textwrap.wrap(base["text"].replace("\n", " / "), width)
    for row in result["rows"][1:]:
        same = "all" if row["identical"] == result["tokens"] else f"the first {row['identical']}"
        print(f"== {row['setting']}: {row['bits_per_coordinate']:.2f} bits per coordinate, "
              f"{row['kv_bytes']:,} bytes ({base['kv_bytes'] / row['kv_bytes']:.1f}x smaller), "
              f"{row['tokens_per_s']:.0f} tokens/s; {same} tokens identical to float32 ==")
        right = textwrap.wrap(row["text"].replace("\n", " / "), width)
        print(f"{'float32':<{width}} | {row['setting']}")
        for i in range(max(len(left), len(right))):
            a = left[i] if i < len(left) else ""
            b = right[i] if i < len(right) else ""
            print(f"{a:<{width}} | {b}")
        print()

"""Quality of cache settings on the embedded llama2.c model (stories260K, head_dim 8; numpy).

Its training text is not shipped, so perplexity is measured on text the float32 model samples
itself (temperature 1, seeded): the same teacher-forced metrics as for the other models, on the
model's own distribution. Functional only: head_dim 8 gives the rotation little to spread.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..dense_cache import DenseKVCache
from .causal import decode_exact_chunk, delta_ppl_interval
from .settings import Setting
from ..layers import make_cache
from ..models import llama2c
from .quality import log_softmax

__all__ = ["sample_sequences", "evaluate"]


def _dense(model: llama2c.Llama2c) -> List[DenseKVCache]:
    cfg = model.config
    return [DenseKVCache(cfg.head_dim, cfg.n_kv_heads) for _ in range(cfg.n_layers)]


def sample_sequences(model: llama2c.Llama2c, count: int, length: int, seed: int = 0) -> List[List[int]]:
    """``count`` sequences of ``length`` tokens (BOS first) sampled at temperature 1."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        caches, tokens = _dense(model), [llama2c.BOS]
        logits = model.forward(np.asarray([tokens]), caches)[0, -1]
        while len(tokens) < length:
            p = np.exp(log_softmax(logits[None])[0])
            tokens.append(int(rng.choice(p.size, p=p / p.sum())))
            logits = model.forward(np.asarray([[tokens[-1]]]), caches)[0, -1]
        out.append(tokens)
    return out


def _log_probs(model: llama2c.Llama2c, caches: Sequence[Any], tokens: List[int], chunk: int) -> np.ndarray:
    rows = [model.forward(np.asarray([tokens[i:i + chunk]]), caches)[0]
            for i in range(0, len(tokens), chunk)]
    return log_softmax(np.concatenate(rows)[:-1])  # row i predicts tokens[i + 1]


def evaluate(settings: Sequence[Setting], sequences: int = 4, length: int = 256, generate: int = 128,
             show_progress: bool = True) -> Dict[str, Any]:
    """Same row fields as :func:`turbokv.eval.causal.evaluate` (greedy from BOS, one prompt)."""
    from ._progress import tqdm

    model = llama2c.load()
    cfg = model.config
    texts = sample_sequences(model, sequences, length)
    reference = [_log_probs(model, _dense(model), t, 64) for t in texts]
    targets = [np.asarray(t[1:]) for t in texts]
    nll = -np.mean([lp[np.arange(len(tg)), tg].mean() for lp, tg in zip(reference, targets)])
    base_ids = model.generate(_dense(model), generate)
    baseline = {"setting": "float32 (DenseKVCache)", "ppl": math.exp(nll),
                "kv_bytes": 2 * 4 * cfg.n_kv_heads * cfg.head_dim * length * cfg.n_layers * sequences,
                "bits_per_coordinate": 32.0}
    rows = []
    for setting in tqdm(settings, desc="llama2c settings", disable=not show_progress, leave=False):
        def caches():
            return make_cache(cfg.n_layers, cfg.head_dim, cfg.n_kv_heads,
                              layer_settings=setting.layer_settings(cfg.n_layers), **setting.kwargs)
        kl = agree = total = 0.0
        used = 0
        token_nll, base_nll = [], []
        for text, ref, tg in zip(texts, reference, targets):
            layer_caches = caches()
            lp = _log_probs(model, layer_caches, text, decode_exact_chunk(setting))
            used += sum(c.used_nbytes for c in layer_caches)
            kl += float(np.sum(np.exp(ref) * (ref - lp)))
            agree += float(np.sum(ref.argmax(-1) == lp.argmax(-1)))
            total -= float(lp[np.arange(len(tg)), tg].sum())
            token_nll.append(-lp[np.arange(len(tg)), tg])
            base_nll.append(-ref[np.arange(len(tg)), tg])
        count = sequences * (length - 1)
        ids = model.generate(caches(), generate)
        same = next((i for i, (a, b) in enumerate(zip(base_ids, ids)) if a != b), generate)
        ppl = math.exp(total / count)
        coords = 2 * sequences * length * cfg.n_kv_heads * cfg.head_dim * cfg.n_layers
        rows.append({"setting": setting.label, "group": setting.group, "ppl": ppl,
                     "delta_ppl_pct": 100.0 * (ppl / baseline["ppl"] - 1.0),
                     "delta_ppl_pct_95": list(delta_ppl_interval(np.stack(token_nll), np.stack(base_nll))),
                     "kl_mean": kl / count,
                     "top1_agreement": agree / count, "greedy_identical": [same], "greedy_min": same,
                     "kv_bytes": used, "bits_per_coordinate": 8.0 * used / coords})
    return {"baseline": baseline, "rows": rows, "sequences": sequences, "length": length,
            "generate": generate, "baseline_ids": [base_ids]}

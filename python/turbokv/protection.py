"""Prefill-time key protection: measure what the chosen key bits cost on a layer's own prompt, and
store that layer's keys at 8 bits (or float16) when the codec fails there.

Some layers have keys a few-bit codec cannot carry (Qwen2.5-Coder-1.5B's layer 0 at 4 bits:
perplexity x190). Nothing about the model needs to be known to notice: at the first attention
after the prefill, the layer has the prompt's exact keys and its queries, so it compares the
softmax of the last queries over exact keys with the softmax over the stored keys.

The measure is the attention KL divergence (nats, mean over the sampled queries of one KV head,
the worst head counts) divided by the codec's nominal distortion at the requested bits (Lloyd-Max
MSE per coordinate of N(0, 1)): KL of a softmax grows with the score noise variance, which the
codec's distortion sets, so on an ordinary layer this "excess" is about 1-5 at every bit width
(measured on SmolLM2-135M and Qwen2.5-Coder-1.5B, all layers, 2-4 bits), and a layer whose keys
break the codec is far above it (Qwen2.5's layer 0 without key centring: ~3,000 at 4 bits).

Two bounds, because the two remedies cost differently. Below 8 bits one more key bit is cheap
(+1/(2 x requested + value bits) of the cache), so a layer whose excess exceeds the *refine*
bound (1.5: above a typical layer) gets one bit more, then another, until it is under it: SmolLM2
at 4-bit keys, whose layers are uniformly above typical, goes from +3.7% to +1.8% perplexity
this way, at 4.88 instead of 4.50 stored bits (bench/results/quality_keys.md). At 8 bits the
next step, float16, doubles the keys, so it is taken only for a broken layer: excess above the
*protection* bound (16).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import numpy as np

__all__ = ["DEFAULT_BOUND", "DEFAULT_REFINE_BOUND", "PROBE_QUERIES", "accepts", "nominal_distortion", "attention_kl"]

#: Excess (KL / nominal distortion) above which 8-bit keys are replaced by float16.
DEFAULT_BOUND = 16.0
#: Excess above which keys below 8 bits get one bit more.
DEFAULT_REFINE_BOUND = 1.5
#: Newest prefill queries per head whose attention is compared.
PROBE_QUERIES = 32

# Lloyd-Max MSE per coordinate of N(0, 1) (Max 1960); from 5 bits on, the high-resolution value
# (pi * sqrt(3) / 2) * 4^-b is within 2% of it.
_LLOYD_MAX = {1: 0.3634, 2: 0.1175, 3: 0.03455, 4: 0.009501}


def nominal_distortion(bits: int, mode: str = "mse") -> float:
    """The codec's expected squared error per coordinate of a unit vector, times head_dim.
    ``prod`` keys spend one bit on QJL, whose score variance is pi/2 times the (bits - 1) MSE."""
    if bits <= 0:
        return 2.0 ** -22  # float16 rounding (relative error 2^-11 per coordinate)
    if mode == "prod":
        return math.pi / 2 * (nominal_distortion(bits - 1) if bits > 1 else 1.0)
    return _LLOYD_MAX.get(bits, math.pi * math.sqrt(3) / 2 * 4.0 ** -bits)


def _log_softmax_rows(scores: np.ndarray) -> np.ndarray:
    top = scores.max(axis=-1, keepdims=True)
    shifted = scores - top
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def attention_kl(queries: np.ndarray, exact_keys: np.ndarray, stored_keys: np.ndarray,
                 scale: float, causal: bool = True, window: Optional[int] = None) -> np.ndarray:
    """Mean KL(softmax over exact keys || softmax over stored keys) per KV head, in nats: the
    numpy reference of the C++ ``_core.attention_kl`` that :class:`turbokv.KVCache` runs.

    queries: (batch, q_heads, rows, head_dim), the newest ``rows`` query positions of the
    prefill; keys: (batch, kv_heads, n, head_dim). Causal (n >= rows): query row i sits at
    position n - rows + i (``window``: and sees only the newest ``window`` keys up to it);
    otherwise every query sees every key. Returns (kv_heads,) float64."""
    batch, q_heads, rows, d = queries.shape
    kv_heads, n = exact_keys.shape[1], exact_keys.shape[2]
    group = q_heads // kv_heads
    q = np.ascontiguousarray(queries, dtype=np.float32).reshape(batch, kv_heads, group * rows, d)
    # Every probed query sees tokens [0, n - rows); only the last `rows` columns are causal.
    positions = np.tile(np.arange(n - rows, n), group)[:, None]
    hidden = np.arange(n - rows, n)[None, :] > positions  # (group * rows, rows)
    if not causal:
        hidden = np.zeros((group * rows, 0), bool)
    elif window:  # the window reaches back past the last `rows` columns: mask every column
        hidden = (np.arange(n)[None, :] > positions) | (np.arange(n)[None, :] <= positions - window)
    out = np.zeros(kv_heads)
    for h in range(kv_heads):
        total = 0.0
        for b in range(batch):
            log_p, log_r = (_log_softmax_rows(_masked_scores(q[b, h], keys[b, h], scale, hidden))
                            for keys in (exact_keys, stored_keys))
            p = np.exp(log_p)
            # p = 0 exactly where hidden (and log_p - log_r is nan there): those terms are 0.
            with np.errstate(invalid="ignore"):
                total += float(np.where(p > 0, p * (log_p - log_r), 0.0).sum(dtype=np.float64))
        out[h] = total / (batch * group * rows)
    return out


def _masked_scores(q: np.ndarray, keys: np.ndarray, scale: float, hidden: np.ndarray) -> np.ndarray:
    """q (rows, d) against keys (n, d): scaled float32 scores, -inf where ``hidden`` (which covers
    the last hidden.shape[1] columns: the causal corner, or every column under a window).

    float32 throughout (BLAS products, vectorised exp): the KL of the log-softmax difference
    then carries an absolute error near 1e-6 nats, under 3% of the smallest KL the bound decides
    on (8-bit keys of an ordinary layer: ~4e-5 nats), and the same for exact and stored keys."""
    scores = q @ np.asarray(keys, dtype=np.float32).T
    scores *= np.float32(scale)
    tail = scores[:, scores.shape[1] - hidden.shape[1]:]
    tail[hidden] = -np.inf
    return scores


def escalation(requested_bits: int) -> List[int]:
    """Key bits to try in order: the requested ones, one bit more at a time up to 8, then
    float16 (0)."""
    if requested_bits == 0:
        return [0]
    return list(range(requested_bits, 9)) + [0]


def accepts(bits: int, excess: float, refine_bound: float, bound: float) -> bool:
    """Whether a layer stops at ``bits`` key bits (module docstring: below 8 bits the refine
    bound decides, at 8 bits the protection bound, float16 always)."""
    if bits == 0:
        return True
    return excess <= (refine_bound if bits < 8 else bound)


def record(bits: int, kl: np.ndarray, requested_bits: int, mode: str) -> Dict[str, Any]:
    """One measured candidate: its bits, per-head KL and the worst head's excess. The excess is
    always relative to the *requested* bits' nominal distortion: a layer is acceptable once its KL
    is what the requested bit width costs an ordinary layer (times the bound), whatever bits it
    took to get there."""
    worst = float(kl.max())
    return {"key_bits": bits, "kl": [float(x) for x in kl],
            "excess": worst / nominal_distortion(requested_bits, mode)}

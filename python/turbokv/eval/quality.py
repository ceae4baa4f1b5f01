"""Model-output quality of a cache setting: teacher-forced KL divergence and top-1 agreement."""

from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np

__all__ = ["log_softmax", "compare_logits", "teacher_forced_logits", "matching_prefix"]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> Dict[str, float]:
    """Mean KL(reference || candidate) of the next-token distributions and top-1 agreement.

    reference, candidate: (positions, vocab) logits."""
    lp, lq = log_softmax(reference), log_softmax(candidate)
    kl = np.sum(np.exp(lp) * (lp - lq), axis=-1)
    agree = np.argmax(reference, axis=-1) == np.argmax(candidate, axis=-1)
    return {"kl_mean": float(kl.mean()), "kl_max": float(kl.max()), "top1_agreement": float(agree.mean())}


def teacher_forced_logits(model: Any, caches: Sequence[Any], tokens: Sequence[int]) -> np.ndarray:
    """Runs ``tokens`` through ``model`` with ``caches`` in one prefill; returns the logits at
    every position (len(tokens), vocab): row i predicts tokens[i + 1]."""
    return model.forward(np.asarray([list(tokens)]), caches)[0]


def matching_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens two generations share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n

"""Distortion measurements against the paper's figures (Zandieh et al. 2025, Theorems 1 and 2).

Used by ``python -m turbokv codec-table`` and by the tests, on random unit vectors.
"""

from __future__ import annotations

import math
from typing import Callable, Dict

import numpy as np

__all__ = ["LLOYD_MAX_MSE", "PAPER_PRINTED_MSE", "PAPER_PROD", "LOWER_BOUND", "measure_mse",
           "measure_prod", "codec_table"]

# The target for E||u - u_hat||^2 of unit u, TurboQuant_mse: the Lloyd-Max MSE per coordinate of
# N(0,1), which a rotated coordinate approaches as d grows (paper section 3.1). These are not the
# paper's printed numbers, which round them: PAPER_PRINTED_MSE.
LLOYD_MAX_MSE: Dict[int, float] = {1: 0.3634, 2: 0.1175, 3: 0.03455, 4: 0.009501}
PAPER_PRINTED_MSE: Dict[int, float] = {1: 0.36, 2: 0.117, 3: 0.03, 4: 0.009}  # Theorem 1
# d * E(<q,u> - estimate)^2 for unit q, u, TurboQuant_prod, as printed in the paper. At 4 bits the
# issue targets 0.05: the QJL variance (pi/2) * MSE_3bit = 0.0543 is above the printed 0.047.
PAPER_PROD: Dict[int, float] = {1: 1.57, 2: 0.56, 3: 0.18, 4: 0.05}


def LOWER_BOUND(bits: int) -> float:
    """Information-theoretic lower bound on the MSE of any b-bit quantiser of unit vectors: 4^-b."""
    return 4.0 ** -bits


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def measure_mse(codec_class: Callable, bits: int, head_dim: int = 128, n: int = 20000,
                seed: int = 0) -> float:
    """E||u - decode(encode(u))||^2 over n random unit vectors, mse mode."""
    u = _unit_rows(np.random.default_rng(seed), n, head_dim)
    codec = codec_class(head_dim, bits, mode="mse", seed=seed)
    err = codec.decode(codec.encode(u)).astype(np.float64) - u
    return float(np.mean(np.sum(err * err, axis=1)))


def measure_prod(codec_class: Callable, bits: int, head_dim: int = 128, n: int = 20000,
                 seed: int = 0, chunk: int = 1000) -> Dict[str, float]:
    """Bias, its standard error, and d * E(err^2) of the prod-mode inner-product estimate.

    Each unit vector u_i is paired with its own random unit query q_i; err_i = est_i - <q_i, u_i>.
    """
    rng = np.random.default_rng(seed)
    u, q = _unit_rows(rng, n, head_dim), _unit_rows(rng, n, head_dim)
    codec = codec_class(head_dim, bits, mode="prod", seed=seed)
    enc = codec.encode(u)
    est = np.concatenate([
        np.diagonal(codec.scores(q[i:i + chunk], enc[i:i + chunk])) for i in range(0, n, chunk)
    ]).astype(np.float64)
    err = est - np.sum(q.astype(np.float64) * u, axis=1)
    return {
        "bias": float(err.mean()),
        "stderr": float(err.std(ddof=1) / math.sqrt(n)),
        "d_mse": float(head_dim * np.mean(err * err)),
    }


def codec_table(codec_class: Callable, head_dim: int = 128, n: int = 20000, seed: int = 0,
                show_progress: bool = False):
    """Rows of measured distortion vs its target for mse (1..4 bits) and prod (1..4 bits) modes.

    Raises:
        ValueError: fewer than 2 vectors (the bias needs a standard error), a negative seed, or
            a head_dim the codec does not take.
    """
    from ._progress import tqdm

    if not isinstance(n, int) or n < 2:
        raise ValueError(f"vectors must be an integer >= 2, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    codec_class(head_dim, 4)  # its own check of head_dim, before any work

    bar = tqdm(total=8, desc="codec settings", disable=not show_progress, leave=False)
    rows = []
    for bits in range(1, 5):
        mse = measure_mse(codec_class, bits, head_dim, n, seed)
        rows.append({"mode": "mse", "bits": bits, "metric": "E||u-u_hat||^2", "measured": mse,
                     "target": LLOYD_MAX_MSE[bits], "target_source": "Lloyd-Max N(0,1)",
                     "paper_prints": PAPER_PRINTED_MSE[bits], "ratio": mse / LLOYD_MAX_MSE[bits],
                     "lower_bound": LOWER_BOUND(bits)})
        bar.update()
    for bits in range(1, 5):
        stats = measure_prod(codec_class, bits, head_dim, n, seed)
        rows.append({"mode": "prod", "bits": bits, "metric": "d*E(err^2)",
                     "measured": stats["d_mse"], "target": PAPER_PROD[bits],
                     "target_source": "paper Thm 2" + (" (see note)" if bits == 4 else ""),
                     "paper_prints": 0.047 if bits == 4 else PAPER_PROD[bits],
                     "ratio": stats["d_mse"] / PAPER_PROD[bits], "bias": stats["bias"],
                     "bias_stderr": stats["stderr"]})
        bar.update()
    bar.close()
    return rows

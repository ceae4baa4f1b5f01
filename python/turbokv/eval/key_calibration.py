"""Key calibration (mlx-swift-lm PR #232), measured end to end: an evaluation-only experiment.

The codec rotates each unit key (y = R u) and quantises every coordinate with one Lloyd-Max
codebook sized for N(0, 1/d). Correlated key channels leave the rotated coordinates with unequal
variances, so some coordinates overload the codebook and others waste its levels. Calibration
divides rotated coordinate j by s_j (its RMS over the prefill, relative to 1/sqrt(d)) before
quantising and multiplies the query's rotated coordinate by s_j, which leaves q . k exact.

Here it is applied around an unmodified :class:`turbokv.KVCache` by a linear map of the keys,
k' = M k with M = R^T diag(1/s) R (R: the codec's own rotation, so the codec sees D^-1 R k), and
of the queries, q' = M^-1 q = R^T diag(s) R q (M is symmetric): q' . k' = q . k exactly, and the
codec's centring, norms and protection act on k' unchanged. One s per stream (batch row, KV
head), from the first update (the prefill), like key centring.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import reference
from ..cache import KVCache, layer_seeds
from ._arrays import as_float32

__all__ = ["CalibratedKVCache", "coordinate_scales"]


def coordinate_scales(keys: np.ndarray, rotation: np.ndarray, clip: float = 4.0) -> np.ndarray:
    """s (batch, kv_heads, d): RMS of each rotated coordinate of the centred unit keys
    (keys: (batch, kv_heads, n, d)), in units of 1/sqrt(d), clipped to [1/clip, clip]."""
    x = keys.astype(np.float64) - keys.mean(axis=2, keepdims=True, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    y = (x / np.where(norms > 0, norms, 1.0)) @ rotation.T
    s = np.sqrt(keys.shape[-1] * (y * y).mean(axis=2))
    return np.clip(s, 1.0 / clip, clip)


class CalibratedKVCache(KVCache):
    """A :class:`KVCache` whose keys are stored calibrated (module docstring). Attention and
    fetch are exact transforms of the calibrated store; only the quantisation error changes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._forward: Optional[np.ndarray] = None  # M per stream (batch, kv_heads, d, d)
        self._inverse: Optional[np.ndarray] = None

    def _update(self, keys: Any, values: Any, probe: bool) -> None:
        k = as_float32(keys)
        if self.key_bits == 0 or k.shape[2] == 0:
            return super()._update(keys, values, probe)
        if self._forward is None:
            rotation = reference.rotation_matrix(self.head_dim, layer_seeds(self.seed, self.layer_index)[0])
            s = coordinate_scales(k, rotation)
            self._forward = np.einsum("ji,bhj,jk->bhik", rotation, 1.0 / s, rotation).astype(np.float32)
            self._inverse = np.einsum("ji,bhj,jk->bhik", rotation, s, rotation).astype(np.float32)
        super()._update(np.ascontiguousarray(k @ self._forward), values, probe)

    def attention(self, queries: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        if self._inverse is None:
            return super().attention(queries, *args, **kwargs)
        q = as_float32(queries)
        b, heads, rows, d = q.shape
        group = heads // self.num_kv_heads
        q = q.reshape(b, self.num_kv_heads, group * rows, d) @ self._inverse
        return super().attention(np.ascontiguousarray(q.reshape(b, heads, rows, d)), *args, **kwargs)

    def fetch(self):
        keys, values = super().fetch()
        if self._inverse is not None:
            keys = np.ascontiguousarray(keys @ self._inverse)
        return keys, values

    def clear(self) -> None:
        super().clear()
        self._forward = self._inverse = None

"""The uncompressed baseline: the same cache API over plain numpy arrays."""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["DenseKVCache"]


class DenseKVCache:
    """A full-precision KV cache with :class:`turbokv.KVCache`'s API, in numpy.

    Keys and values are kept in ``dtype`` (default float32) arrays that grow by doubling.
    ``attention`` is plain numpy softmax attention (causal, GQA by broadcasting). It is the
    baseline that generation loops and benchmarks compare turbokv against.

    Example:
        >>> cache = DenseKVCache(head_dim=64, num_kv_heads=2)
        >>> cache.update(k, v)          # (batch, 2, tokens, 64)
        >>> out = cache.attention(q)    # (batch, q_heads, q_len, 64) float32
    """

    def __init__(self, head_dim: int, num_kv_heads: int, dtype: Any = np.float32, **_ignored) -> None:
        self.head_dim, self.num_kv_heads = head_dim, num_kv_heads
        self.dtype = np.dtype(dtype)
        self._k: Optional[np.ndarray] = None
        self._v: Optional[np.ndarray] = None
        self.offset = 0

    def update(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Appends (batch, num_kv_heads, new_tokens, head_dim) keys and values."""
        n = keys.shape[2]
        if self._k is None or self.offset + n > self._k.shape[2]:
            capacity = max(256, 2 * (self.offset + n))
            shape = (keys.shape[0], self.num_kv_heads, capacity, self.head_dim)
            k, v = np.empty(shape, self.dtype), np.empty(shape, self.dtype)
            if self._k is not None:
                k[:, :, : self.offset] = self._k[:, :, : self.offset]
                v[:, :, : self.offset] = self._v[:, :, : self.offset]
            self._k, self._v = k, v
        self._k[:, :, self.offset : self.offset + n] = keys
        self._v[:, :, self.offset : self.offset + n] = values
        self.offset += n

    def fetch(self) -> Tuple[np.ndarray, np.ndarray]:
        return self._k[:, :, : self.offset], self._v[:, :, : self.offset]

    def update_and_fetch(self, keys: np.ndarray, values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        self.update(keys, values)
        return self.fetch()

    def attention(self, queries: np.ndarray, scale: Optional[float] = None) -> np.ndarray:
        """Causal attention in float32 numpy; same conventions as KVCache.attention."""
        k, v = self.fetch()
        batch, q_heads, q_len, d = queries.shape
        group = q_heads // self.num_kv_heads
        q = queries.reshape(batch, self.num_kv_heads, group * q_len, d).astype(np.float32)
        scale = 1.0 / math.sqrt(d) if scale is None else scale
        scores = (q @ k.swapaxes(-1, -2).astype(np.float32)) * np.float32(scale)
        positions = self.offset - q_len + np.arange(q_len)
        visible = np.arange(self.offset)[None, :] <= np.tile(positions, group)[:, None]
        scores = np.where(visible, scores, -np.inf)
        scores -= scores.max(axis=-1, keepdims=True)
        w = np.exp(scores)
        w /= w.sum(axis=-1, keepdims=True)
        return (w @ v.astype(np.float32)).reshape(batch, q_heads, q_len, d)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored tokens."""
        return 0 if self._k is None else 2 * self._k[:, :, : self.offset].nbytes

    used_nbytes = nbytes

    def trim(self, n: int) -> int:
        n = min(n, self.offset)
        self.offset -= n
        return n

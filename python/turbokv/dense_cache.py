"""The uncompressed baseline: the same cache API over plain numpy arrays."""

from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import numpy as np

from ._validation import check_int

__all__ = ["DenseKVCache"]

_FLOAT16_MAX = float(np.finfo(np.float16).max)


class DenseKVCache:
    """A full-precision KV cache with :class:`turbokv.KVCache`'s API, in numpy.

    Keys and values are kept in ``dtype`` (float32 by default, or float16/float64) arrays that
    grow by doubling. ``attention`` is plain numpy softmax attention (causal, GQA by
    broadcasting). It is the baseline that generation loops and benchmarks compare turbokv
    against. ``KVCache``'s compression settings (``key_bits=4``, ...) are accepted and have no
    effect, so that one line swaps the classes; any other keyword raises TypeError. Bad input
    raises as ``KVCache`` does (wrong shape, batch or dtype, NaN/Inf) and leaves the cache as it
    was.

    Example:
        >>> cache = DenseKVCache(head_dim=64, num_kv_heads=2)
        >>> cache.update(k, v)          # (batch, 2, tokens, 64)
        >>> out = cache.attention(q)    # (batch, q_heads, q_len, 64) float32
    """

    def __init__(self, head_dim: int, num_kv_heads: int, dtype: Any = np.float32, **settings: Any) -> None:
        from .layers import check_setting_names  # layers imports the caches

        check_setting_names("DenseKVCache", settings)
        self.head_dim = check_int("head_dim", head_dim, 1, 65536)
        self.num_kv_heads = check_int("num_kv_heads", num_kv_heads, 1, 65536)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float16, np.float32, np.float64):
            raise TypeError(f"dtype must be float16, float32 or float64, got {self.dtype}")
        self._k: Optional[np.ndarray] = None
        self._v: Optional[np.ndarray] = None
        self.offset = 0

    def _tokens(self, x: Any, name: str) -> np.ndarray:
        from .cache import _as_tokens

        x = _as_tokens(x, name, self.num_kv_heads, self.head_dim)
        if not np.isfinite(x).all():
            raise ValueError(f"{name} hold NaN or Inf")
        if self.dtype == np.float16 and x.size and np.abs(x).max() > _FLOAT16_MAX:
            raise ValueError(f"{name} exceed the float16 range of this cache's storage")
        return x

    def update(self, keys: Any, values: Any) -> None:
        """Appends (batch, num_kv_heads, new_tokens, head_dim) keys and values: any input
        ``KVCache.update`` takes. All or nothing: on bad input it raises and the cache is
        unchanged."""
        k, v = self._tokens(keys, "keys"), self._tokens(values, "values")
        if k.shape != v.shape:
            raise ValueError(f"keys {k.shape} and values {v.shape} must have the same shape")
        if k.shape[0] == 0:
            raise ValueError("batch must be at least 1")
        if self._k is not None and k.shape[0] != self._k.shape[0]:
            raise ValueError(f"keys have batch {k.shape[0]} but the cache holds batch {self._k.shape[0]}")
        n = k.shape[2]
        if n == 0:
            return
        if self._k is None or self.offset + n > self._k.shape[2]:
            capacity = max(256, 2 * (self.offset + n))
            shape = (k.shape[0], self.num_kv_heads, capacity, self.head_dim)
            grown_k, grown_v = np.empty(shape, self.dtype), np.empty(shape, self.dtype)
            if self._k is not None:
                grown_k[:, :, : self.offset] = self._k[:, :, : self.offset]
                grown_v[:, :, : self.offset] = self._v[:, :, : self.offset]
            self._k, self._v = grown_k, grown_v
        self._k[:, :, self.offset : self.offset + n] = k
        self._v[:, :, self.offset : self.offset + n] = v
        self.offset += n

    def fetch(self) -> Tuple[np.ndarray, np.ndarray]:
        """The cached keys and values, (batch, num_kv_heads, offset, head_dim) views in ``dtype``.
        Raises ValueError before the first update (the batch is not known yet)."""
        if self._k is None:
            raise ValueError("the cache is empty: update it first")
        return self._k[:, :, : self.offset], self._v[:, :, : self.offset]

    def update_and_fetch(self, keys: Any, values: Any) -> Tuple[np.ndarray, np.ndarray]:
        self.update(keys, values)
        return self.fetch()

    def attention(self, queries: Any, scale: Optional[float] = None) -> np.ndarray:
        """Causal attention in float32 numpy; same conventions as KVCache.attention: queries
        (batch, q_heads, q_len, head_dim), q_heads a multiple of num_kv_heads, the newest q_len
        cached tokens their own positions. Returns float32 (batch, q_heads, q_len, head_dim)."""
        from .cache import _as_query_rows

        q = _as_query_rows(queries, self.head_dim)
        batch, q_heads, q_len, d = q.shape
        if q_heads % self.num_kv_heads:
            raise ValueError(f"q_heads={q_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        k, v = self.fetch()
        if batch != k.shape[0]:
            raise ValueError(f"queries have batch {batch} but the cache holds batch {k.shape[0]}")
        if not 1 <= q_len <= self.offset:
            raise ValueError(f"q_len {q_len} must be in 1..{self.offset} (the cached tokens): update the "
                             "cache with this step's keys and values first")
        if not np.isfinite(q).all():
            raise ValueError("queries hold NaN or Inf: an overflow upstream of attention")
        scale = 1.0 / math.sqrt(d) if scale is None else scale
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {scale}")
        group = q_heads // self.num_kv_heads
        q = q.reshape(batch, self.num_kv_heads, group * q_len, d)
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
        """Drops the newest ``n`` tokens (at most all of them); returns how many it dropped."""
        n = min(check_int("n", n, 0, 2**62), self.offset)
        self.offset -= n
        return n

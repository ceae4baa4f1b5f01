"""Outlier-channel key split, measured end to end: an evaluation-only experiment.

Keys with outlier channels (a few coordinates several times larger than the rest) spend the
codec's bits on those channels after the rotation spreads them. The split keeps the ``c``
loudest channels of each stream's keys exactly (float16, 16 bits each per token) and encodes
the rest with the channels zeroed; at matched total bits the codec then runs with fewer bits.
The channels are chosen per layer, batch row and KV head by their RMS over the first update
(the prefill), after removing the mean (key centring takes care of a shared component), so the
threshold adapts to each layer; ``c`` is fixed so every layer stores the same bits: ``c`` =
``outlier_bits`` x head_dim / 16 channels add ``outlier_bits`` bits per key coordinate.

Attention decodes the stored keys, puts the exact channels back and runs the float64 reference
attention (``turbokv.reference.attention``): the same scores the codes would give plus the exact
channels, without a fused kernel for the split (it is an experiment). Prefill protection still
runs once, on the encoded part, through the base class's fused attention.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import numpy as np

from .. import reference
from ..cache import KVCache
from ._arrays import as_float32

__all__ = ["OutlierSplitKVCache", "loudest_channels"]


def loudest_channels(keys: np.ndarray, count: int) -> np.ndarray:
    """Indices (batch, kv_heads, count) of the ``count`` channels with the largest RMS about
    their mean over the tokens of ``keys`` (batch, kv_heads, n, d), loudest first."""
    x = keys.astype(np.float64) - keys.mean(axis=2, keepdims=True, dtype=np.float64)
    rms = np.sqrt((x * x).mean(axis=2))
    return np.argsort(-rms, axis=-1, kind="stable")[..., :count]


class OutlierSplitKVCache(KVCache):
    """A :class:`KVCache` whose keys' ``outlier_bits`` x head_dim / 16 loudest channels are
    stored exactly (module docstring). Only what the evaluation harness uses is implemented."""

    def __init__(self, *args: Any, outlier_bits: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not (0 <= outlier_bits <= 16):
            raise ValueError(f"outlier_bits must be in [0, 16], got {outlier_bits!r}")
        self.outlier_bits = float(outlier_bits)
        self.outlier_channels = int(round(self.outlier_bits * self.head_dim / 16))
        self._channels: Optional[np.ndarray] = None   # (batch, kv_heads, 1, c)
        self._exact: List[np.ndarray] = []            # float16 (batch, kv_heads, n_i, c) per update
        self._protected = False

    def _update(self, keys: Any, values: Any, probe: bool) -> None:
        k = as_float32(keys)
        if self.key_bits == 0 or k.shape[2] == 0 or self.outlier_channels == 0:
            if self._channels is not None:
                raise NotImplementedError("outlier split: later updates must carry tokens")
            return super()._update(keys, values, probe)
        if self._channels is None:
            self._channels = loudest_channels(k, self.outlier_channels)[:, :, None, :]
        index = np.broadcast_to(self._channels, k.shape[:3] + (self._channels.shape[-1],))
        self._exact.append(np.take_along_axis(k, index, axis=-1).astype(np.float16))
        rest = k.copy()
        np.put_along_axis(rest, index, 0.0, axis=-1)
        super()._update(rest, values, probe)

    @property
    def used_nbytes(self) -> int:
        return super().used_nbytes + sum(part.nbytes for part in self._exact)

    @property
    def nbytes(self) -> int:
        return super().nbytes + sum(part.nbytes for part in self._exact)

    def fetch(self) -> Tuple[np.ndarray, np.ndarray]:
        keys, values = super().fetch()
        if self._channels is not None:
            exact = np.concatenate(self._exact, axis=2).astype(np.float32)
            index = np.broadcast_to(self._channels, exact.shape)
            np.put_along_axis(keys, index, exact, axis=-1)
        return keys, values

    def attention(self, queries: Any, scale: Optional[float] = None, threaded: bool = True,
                  key_mask: Optional[np.ndarray] = None, softcap: Optional[float] = None,
                  sinks: Optional[Any] = None, path: str = "auto", causal: bool = True,
                  window: Optional[int] = None) -> np.ndarray:
        options = dict(scale=scale, softcap=softcap, sinks=sinks, causal=causal, window=window)
        if self._channels is None:
            return super().attention(queries, threaded=threaded, key_mask=key_mask, path=path, **options)
        if key_mask is not None and not np.all(key_mask):
            raise NotImplementedError("outlier split: key_mask is not implemented")
        q = as_float32(queries)
        if not self._protected:  # prefill protection runs inside the base class's attention
            super().attention(q, threaded=threaded, path=path, **options)
            self._protected = True
        keys, values = self.fetch()
        if sinks is not None:
            options["sinks"] = as_float32(sinks)
        out = reference.attention(q.astype(np.float64), keys.astype(np.float64),
                                  values.astype(np.float64), **options)
        return out.astype(np.float32)

    def trim(self, n: int) -> None:
        raise NotImplementedError("outlier split: trim is not implemented")

    def select_batch(self, indices: Any) -> None:
        raise NotImplementedError("outlier split: select_batch is not implemented")

    def clear(self) -> None:
        super().clear()
        self._channels, self._exact, self._protected = None, [], False

"""Compressed KV cache for Python generation loops (one object per attention layer)."""

from __future__ import annotations

import math
import threading
from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import _core, protection
from ._validation import as_float_array, check_int, MODES, NORM_DTYPES

__all__ = ["KVCache", "layer_seeds"]

STATE_VERSION = 2  # 2: the key bits in use and the key offset (centring) are saved; 1 still loads


def layer_seeds(seed: int, layer_index: int) -> Tuple[int, int]:
    """The rotation seeds of a layer's keys and values: distinct for every (seed, layer, side)."""
    base = (seed * 0x9E3779B97F4A7C15 + layer_index * 2) & (2**64 - 1)
    return base, (base + 1) & (2**64 - 1)


def _side(bits: int, mode: str, norm_dtype: str, norm_correction: bool, name: str):
    check_int(f"{name}_bits", bits, 0, 8)
    if mode not in MODES:
        raise ValueError(f"unknown {name}_mode {mode!r}: use 'mse' or 'prod'")
    if mode == "prod" and bits == 0:
        raise ValueError(f"{name}_mode='prod' needs {name}_bits >= 1 (0 means float16)")
    if norm_dtype not in NORM_DTYPES:
        raise ValueError(f"norm_dtype must be 'float32' or 'float16', got {norm_dtype!r}")
    if norm_correction and mode == "prod":
        raise ValueError(f"{name}_norm_correction applies to mode='mse' only")
    return _core.SideConfig(bits, getattr(_core.Mode, mode), getattr(_core.NormDtype, norm_dtype),
                            bool(norm_correction))


def _as_float32(x: Any, name: str, head_dim: int, heads_label: str) -> np.ndarray:
    """A float32 C-contiguous (batch, heads, tokens, head_dim) array (copied only if needed)."""
    x = as_float_array(x, name)
    if x.ndim != 4 or x.shape[3] != head_dim:
        raise ValueError(f"{name} has shape {x.shape}; expected (batch, {heads_label}, tokens, "
                         f"head_dim={head_dim})")
    return np.ascontiguousarray(x, dtype=np.float32)


def _as_query_rows(x: Any, head_dim: int) -> np.ndarray:
    """Queries as a float32 (batch, q_heads, q_len, head_dim) array whose last axis is
    contiguous: a model's transposed view of (batch, q_len, q_heads, head_dim) is read in place
    (the kernels take row strides); anything else is copied once."""
    x = as_float_array(x, "queries")
    if x.ndim != 4 or x.shape[3] != head_dim:
        raise ValueError(f"queries has shape {x.shape}; expected (batch, q_heads, tokens, "
                         f"head_dim={head_dim})")
    if x.dtype == np.float32 and x.strides[3] == 4 and all(st % 4 == 0 for st in x.strides):
        return x
    return np.ascontiguousarray(x, dtype=np.float32)


def _as_tokens(x: Any, name: str, heads: int, head_dim: int) -> np.ndarray:
    x = _as_float32(x, name, head_dim, f"num_kv_heads={heads}")
    if x.shape[1] != heads:
        raise ValueError(f"{name} has shape {x.shape}; expected (batch, num_kv_heads={heads}, "
                         f"new_tokens, head_dim={head_dim})")
    return x


def _check_path(path: Any) -> str:
    if path not in ("auto", "codes", "tiles"):
        raise ValueError(f"path must be 'auto', 'codes' or 'tiles', got {path!r}")
    return path


def _check_scores(scores: Any) -> str:
    if scores not in ("exact", "int8"):
        raise ValueError(f"scores must be 'exact' or 'int8', got {scores!r}")
    return scores


def _check_values(values: Any) -> str:
    if values not in ("exact", "int8"):
        raise ValueError(f"values must be 'exact' or 'int8', got {values!r}")
    return values


class KVCache:
    """One attention layer's key/value cache, stored TurboQuant-compressed.

    Drop-in for the cache object of a Python generation loop: ``update`` appends the step's keys
    and values (encoding them), and ``attention`` computes causal softmax attention directly on
    the compressed codes (no decoded copy of the cache is ever built). Loops that want K/V arrays
    can call ``update_and_fetch`` instead, as with mlx-lm's caches.

    Args:
        head_dim: per-head vector length, 8..1024.
        num_kv_heads: key/value heads (queries may have any multiple of it: GQA).
        key_bits, value_bits: bits per coordinate, 1..8, or 0 to keep that side as float16.
        key_mode, value_mode: ``"mse"`` or ``"prod"`` (one bit spent on an unbiased QJL sketch).
        residual_window: keep the newest R tokens as float16 (KIVI-style). A token is encoded,
            from its float16 value, when it leaves the window. ``trim(n)`` takes the newest tokens
            out of the window; older tokens that the trimmed ones had pushed out stay encoded, so
            the window holds fewer than R tokens until new ones arrive (after R new tokens the
            cache equals one that never saw the trimmed tokens). 0 encodes every token at once.
        seed, layer_index: choose the rotations; every (seed, layer, side) gets its own.
        norm_dtype: ``"float32"`` or ``"float16"`` storage for the per-token norms.
        key_norm_correction, value_norm_correction: store ||x|| / ||x_hat_unit|| (mse mode).
        center_keys: subtract each stream's (batch row, KV head) mean key over the first update
            (the prefill) before encoding keys, and add it back exactly (softmax ignores it; with
            softcap or sinks the kernel adds q . mean). One large component shared by all keys
            (Qwen2.5's key bias) otherwise takes the codec's bits (README, "Keys that never break
            a model"). The mean comes from the first update, so a prompt fed in chunks gets a
            slightly different (equally exact) centring. Float16 keys are never centred.
        protect_keys: at the first ``attention`` after the first update (the prefill), compare
            the softmax of the newest 32 queries over the exact prefill keys with the one over
            the stored keys, as an "excess": the KL divergence over what the codec's nominal
            distortion at ``key_bits`` predicts. Below 8 bits, while the excess exceeds
            ``refine_bound``, re-encode this layer's keys with one bit more; at 8 bits, float16
            if it exceeds ``protection_bound`` (a broken layer). So ``key_bits`` is a floor: the
            stored bits can be higher (``stored_key_bits``; ``summary()`` reports what it
            measured and chose). It needs the queries, so a cache only read through ``fetch``
            is not protected.
        protection_bound: the excess above which 8-bit keys become float16 (default 16).
        refine_bound: the excess above which keys below 8 bits get one bit more (default 1.5,
            about a typical layer's, or ``protection_bound`` if that is lower;
            ``refine_bound=protection_bound`` refines only layers the codec breaks). At most
            ``protection_bound``.
        scores: how ``attention`` sums scores on the codes unless told otherwise: ``"exact"``
            (float32, default) or ``"int8"`` (query and centroids rounded to integers, int8 up to
            4-bit keys and int16 for 5-8-bit ones, summed exactly; see ``attention``).
        values: how ``attention`` sums values on the codes unless told otherwise: ``"exact"``
            (float32, default) or ``"int8"`` (weights rounded to 7-bit bytes per 32 tokens,
            centroids to int8 (+-63), summed exactly; values of at most 4 bits; see ``attention``).
        path: how ``attention`` does each block unless told otherwise: ``"auto"`` (default),
            ``"codes"`` or ``"tiles"`` (see ``attention``). ``"codes"`` makes a prompt's queries
            score the codes as decode steps do (with ``scores="int8"``: in integers).

    Shapes: keys/values ``(batch, num_kv_heads, new_tokens, head_dim)``, queries
    ``(batch, q_heads, q_len, head_dim)``; float32 or float16 in, float32 out.

    Example:
        >>> cache = KVCache(head_dim=64, num_kv_heads=2, key_bits=4, value_bits=3)
        >>> cache.update(k, v)                 # k, v: (1, 2, 10, 64)
        >>> out = cache.attention(q)           # q: (1, 8, 10, 64) -> (1, 8, 10, 64)
    """

    def __init__(self, head_dim: int, num_kv_heads: int, key_bits: int = 4, value_bits: int = 4,
                 key_mode: str = "mse", value_mode: str = "mse", residual_window: int = 0,
                 seed: int = 0, layer_index: int = 0, norm_dtype: str = "float32",
                 key_norm_correction: bool = False, value_norm_correction: bool = False,
                 center_keys: bool = True, protect_keys: bool = True,
                 protection_bound: float = protection.DEFAULT_BOUND,
                 refine_bound: Optional[float] = None, scores: str = "exact",
                 path: str = "auto", values: str = "exact") -> None:
        self.head_dim = check_int("head_dim", head_dim, 8, 1024)
        self.num_kv_heads = check_int("num_kv_heads", num_kv_heads, 1, 1 << 16)
        self.residual_window = check_int("residual_window", residual_window, 0, 1 << 20)
        self.seed = check_int("seed", seed, 0, 2**64 - 1)
        self.layer_index = check_int("layer_index", layer_index, 0, 1 << 20)
        self.key_bits, self.value_bits = key_bits, value_bits
        self.key_mode, self.value_mode = key_mode, value_mode
        self.norm_dtype = norm_dtype
        self.key_norm_correction, self.value_norm_correction = key_norm_correction, value_norm_correction
        key = _side(key_bits, key_mode, norm_dtype, key_norm_correction, "key")
        value = _side(value_bits, value_mode, norm_dtype, value_norm_correction, "value")
        if not isinstance(center_keys, bool) or not isinstance(protect_keys, bool):
            raise TypeError("center_keys and protect_keys must be bool")
        bound = float(protection_bound)
        refine = min(protection.DEFAULT_REFINE_BOUND, bound) if refine_bound is None else float(refine_bound)
        if not (math.isfinite(bound) and bound > 0):
            raise ValueError(f"protection_bound must be finite and > 0, got {protection_bound!r}")
        if not (math.isfinite(refine) and 0 < refine <= bound):
            raise ValueError(f"refine_bound must be finite, > 0 and at most protection_bound "
                             f"({bound}), got {refine_bound!r}")
        self.center_keys, self.protect_keys, self.protection_bound = center_keys, protect_keys, bound
        self.refine_bound = refine
        self.scores = _check_scores(scores)
        self.values = _check_values(values)
        self.path = _check_path(path)
        key_seed, value_seed = layer_seeds(self.seed, self.layer_index)
        self._layer = _core.KVCacheLayer(self.head_dim, self.num_kv_heads, key, value,
                                         self.residual_window, key_seed, value_seed, center_keys)
        # The prefill's exact keys, kept from the first update until the first attention measures
        # them (protect_keys); then dropped. Guarded by _probe_lock.
        self._probe: Optional[np.ndarray] = None
        self._probe_lock = threading.Lock()
        self.protection: Optional[Dict[str, Any]] = None  # what the probe measured and chose
        # How the last attention call did its blocks: "codes", "tiles" or "mixed" (None: no call).
        self.last_attention_path: Optional[str] = None
        #: How the last attention call summed scores: "exact", "int8" or "mixed" (None: no call).
        self.last_attention_scores: Optional[str] = None
        #: How the last attention call summed values: "exact", "int8" or "mixed" (None: no call).
        self.last_attention_values: Optional[str] = None
        #: Parts each (batch, kv head)'s tokens were split into by the last attention call: > 1
        #: when there were fewer of them than 4 per thread (decode at small batch), so every core
        #: works and a slow core leaves its later parts to the others; the parts shrink from the
        #: first to the last (up to 4x), so the threads finish close together. On 16 threads or
        #: more, decode with 4-8 of them per thread splits each in two (the first 4x the second).
        self.last_attention_splits: Optional[int] = None
        #: Threads the last attention call ran on: 1 under ``threaded=False``, and for a decode
        #: call whose cache is too small to pay for waking the pool (under 256 KiB of codes on 2
        #: threads at 4 query heads per KV head, less on more threads: waking a thread costs
        #: tens of microseconds).
        self.last_attention_threads: Optional[int] = None

    # Generation-loop API ----------------------------------------------------------------------

    def _update_args(self, keys: Any, values: Any) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        key_shape, value_shape = getattr(keys, "shape", None), getattr(values, "shape", None)
        if (key_shape is not None and value_shape is not None and len(key_shape) == len(value_shape) == 4
                and tuple(key_shape[:3]) == tuple(value_shape[:3]) and key_shape[3] == self.head_dim
                and value_shape[3] != self.head_dim):
            raise ValueError(
                f"values have head size {value_shape[3]} and keys {key_shape[3]}: a value head size "
                "different from the key head size (MLA-style models) is not supported; pad the "
                "smaller with zeros to one head size (zero key coordinates, with zeros in the "
                "queries, leave the scores unchanged; padded value coordinates come back as zeros "
                "to slice off)")
        k = _as_tokens(keys, "keys", self.num_kv_heads, self.head_dim)
        v = _as_tokens(values, "values", self.num_kv_heads, self.head_dim)
        if k.shape != v.shape:
            raise ValueError(f"keys {k.shape} and values {v.shape} must have the same shape")
        if k.shape[0] == 0:
            raise ValueError("batch must be at least 1")
        return None if k.shape[2] == 0 else (k, v)

    def update(self, keys: Any, values: Any) -> None:
        """Encodes and appends ``keys``/``values`` of shape (batch, num_kv_heads, new_tokens,
        head_dim): numpy float16/float32/float64 arrays or CPU torch float16/bfloat16/float32
        tensors (C-contiguous float32 input is read in place; any other input costs one float32
        copy). All or nothing: on bad input (NaN/Inf, values too large for float16
        storage, wrong shape or batch) it raises and the cache is unchanged. An update of at
        least 2**18 floats per side (a prefill) without a residual window is encoded on
        turbokv's thread pool (as ``attention``; the codes do not depend on it)."""
        self._update(keys, values, probe=True)

    def _update(self, keys: Any, values: Any, probe: bool) -> None:
        args = self._update_args(keys, values)
        if args is None:
            return
        with self._probe_lock:
            first = self._layer.length == 0
            self._layer.update(*args)
            keep = probe and first and self.protect_keys and self.key_bits != 0
            # A copy: the caller may reuse its array. A second update before any attention means
            # the queries of the prefill will never be seen: give up measuring.
            self._probe = np.array(args[0]) if keep else None
            if first:
                self.protection = None

    def update_and_fetch(self, keys: Any, values: Any) -> Tuple[np.ndarray, np.ndarray]:
        """``update``, then return all cached keys and values decoded: two float32 arrays of shape
        (batch, num_kv_heads, offset, head_dim), fresh (not a stored copy). Both happen under one
        lock, so another thread's update cannot slip in between."""
        args = self._update_args(keys, values)
        return self.fetch() if args is None else self._layer.update_and_fetch(*args)

    def fetch(self) -> Tuple[np.ndarray, np.ndarray]:
        """All cached keys and values, decoded to float32 (batch, num_kv_heads, offset, head_dim),
        read under the cache's lock (shape and data from the same state)."""
        return self._layer.fetch()

    def attention(self, queries: Any, scale: Optional[float] = None, threaded: bool = True,
                  key_mask: Optional[np.ndarray] = None, softcap: Optional[float] = None,
                  sinks: Optional[Any] = None, path: Optional[str] = None, causal: bool = True,
                  window: Optional[int] = None, scores: Optional[str] = None,
                  values: Optional[str] = None, positions_first: bool = False) -> np.ndarray:
        """Softmax attention of ``queries`` over the cache, computed on the codes; causal unless
        ``causal=False``.

        queries: (batch, q_heads, q_len, head_dim), q_heads a multiple of num_kv_heads (query head
        h uses kv head h // (q_heads // num_kv_heads), as transformers' repeat_kv); any input
        ``update`` takes. The newest q_len cached tokens are the queries' own positions (so call
        ``update`` first); query i attends to tokens [0, offset - q_len + i]. With
        ``causal=False`` every query attends to every cached token and q_len is free (encoders,
        cross-attention over an encoder's cached K/V). Queries need not be contiguous: a
        transposed view of a model's (batch, q_len, q_heads, head_dim) projection is read in place.
        Returns float32 (batch, q_heads, q_len, head_dim), or with ``positions_first=True``
        (batch, q_len, q_heads, head_dim), the layout a model's output projection reads, written
        in place instead of transposed by a copy. Runs on all usable cores with the GIL
        released (``threaded=False``: the calling thread only, as is a decode step over fewer than
        256 KiB of codes per extra thread at 4 query heads per KV head (up to 1.6x that at fewer), where
        waking the pool costs more than it saves;
        :attr:`last_attention_threads` tells which ran; TURBOKV_NUM_THREADS sets the pool
        size, :func:`turbokv.attention_threads` reports it; a TURBOKV_NUM_THREADS that is not a
        whole number from 1 to 4096 raises ValueError).

        Args:
            scale: score scale, finite and > 0; default 1/sqrt(head_dim).
            key_mask: optional bool (batch, offset); False hides that cached token from every
                query of its batch row (left padding in batched generation). Its length is
                checked against the cache under the cache's lock. A query that sees no token
                (all masked) gets zeros, not NaN.
            softcap: optional > 0: scores become ``softcap * tanh(score * scale / softcap)``
                (Gemma 2's attention logit softcapping).
            sinks: optional (q_heads,) logits, one per query head: an extra softmax column whose
                value is zero (gpt-oss attention sinks).
            window: optional int > 0, sliding-window attention (Mistral, Gemma 2/3 local
                layers): query i sees only tokens (offset - q_len + i - window, offset - q_len + i],
                as transformers' sliding-window masks; blocks older than every query's window are
                not read. Needs ``causal=True``. The cache still keeps every token.
            path: how each 256-token block is done (default: the cache's ``path`` setting,
                itself ``"auto"`` unless set). ``"codes"``: every query is scored on the
                packed codes and values are summed from them (decode: nothing is expanded);
                ``"tiles"``: the block is decoded once to float tiles and matrix products serve
                all queries (prefill); ``"auto"`` (default): tiles once a work item holds enough
                query rows (query heads per KV head x q_len) for them to win: 32 for 1-4-bit keys,
                9 for 5-8-bit keys, 1 for float16 keys (96 at the AVX2 level, whose codes
                path converts float16 once for 4 queries; measured on Zen 3, ``bench/prefill.py
                --crossover``); at the AVX-512 level 48, 24, and 48 for float16 keys with float16
                values, 64 with coded values (Emerald Rapids, sessions 47-48). Both compute the same decoded keys and values and differ only in
                float rounding; ``last_attention_path`` says which ran. (In a model, that rounding
                can move a later layer's input across a quantization boundary: a code then
                differs by one step, as it would between any two float kernels.)
            scores: how the codes path sums scores (default: the cache's ``scores`` setting,
                itself ``"exact"`` unless set). ``"exact"``: float32 products with
                the codebook. ``"int8"``: the rotated query and the centroids rounded to
                integers and summed exactly in int32 (bit-identical at every SIMD level): to int8
                for keys of 1-4 bits (query bytes to +-127, centroids to +-63; ``pshufb``/``maddubs``
                on AVX2, ``vpdpbusd`` with VNNI), about 2.4x faster scoring on AVX2; to int16 for keys of 5-8 bits (an int8 query
                would dominate their error; ``vpdpwssd``), 1.1-1.3x faster K8V4 decode on
                AVX-512 with VBMI and VNNI; on AVX2 5- and 6-bit keys gain (``vpshufb``
                lookups: K5V4 decode 0.78-0.92x the time), 7- and 8-bit ones do not: where
                gathers are fast both routes are bound by them (0.93-1.08x the time), and where
                they are slow (AMD Zen 1-4) float32 scores broadcast each looked-up centroid to up
                to 8 queries, which int16 sums cannot (Zen 3, K8V4 at 32K: int16 0.9-1.1x the
                float32 time at 4 and 7 query heads per KV head, 1.4x at 3). Its error is the two roundings; perplexity on SmolLM2 and Qwen2.5
                stays inside the float32 rows' intervals (``bench/results/quality_int8.md``,
                ``bench/results/quality_int16.md``). It applies on the codes path; float16 keys
                and tiles stay float32. ``last_attention_scores`` says which ran.
            values: how the codes path sums values (default: the cache's ``values`` setting,
                itself ``"exact"`` unless set). ``"exact"``: float32 multiply-adds with the
                codebook. ``"int8"``: per query and group of 32 tokens the softmax weights are
                rounded to 7-bit bytes on the group's largest, the centroids to int8 (+-63), and the
                products summed exactly in int32 (the same integers at every SIMD level). Faster
                than ``"exact"`` with ``vpdpbusd`` (AVX-VNNI; AVX-512 VNNI, with VBMI for 3 bits)
                and on plain AVX2 (``maddubs``) where a row fills whole 16-byte chunks (8-byte
                ones at 4 bits) and head_dim is at least 64, for 1-, 2- and 4-bit values, and
                3-bit ones where head_dim is a multiple of 32 (not at the AVX2 level, whose
                float32 3-bit values look their centroids up by ``vpermps``, faster since
                session 39, except on AMD Zen 1); the portable reference (scalar,
                NEON) gives the same results no faster (``turbokv.int8_values_fast(bits,
                head_dim)`` says which). Its error
                is the two roundings (a weight's at most 1/254 of its group's largest; measured
                on models in ``bench/results/quality_int8.md``). It applies to values of at most 4 bits on the
                codes path; wider or float16 values and tiles stay float32.
                ``last_attention_values`` says which ran.

        A query that sees no token returns zeros. Queries holding NaN or Inf raise ValueError
        (an overflow upstream would otherwise pass unnoticed).
        """
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be bool, got {causal!r}")
        if not isinstance(positions_first, bool):
            raise TypeError(f"positions_first must be bool, got {positions_first!r}")
        path = self.path if path is None else _check_path(path)
        scores = self.scores if scores is None else _check_scores(scores)
        values = self.values if values is None else _check_values(values)
        if window is not None:
            if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window <= 0:
                raise ValueError(f"window must be an int > 0 or None, got {window!r}")
            if not causal:
                raise ValueError("window (sliding-window attention) needs causal=True")
        q = _as_query_rows(queries, self.head_dim)
        if q.shape[1] % self.num_kv_heads:
            raise ValueError(f"q_heads={q.shape[1]} must be a multiple of num_kv_heads={self.num_kv_heads}")
        scale = 1.0 / math.sqrt(self.head_dim) if scale is None else float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be finite and > 0, got {scale}")
        cap = 0.0 if softcap is None else float(softcap)
        if softcap is not None and not (math.isfinite(cap) and cap > 0):
            raise ValueError(f"softcap must be finite and > 0 (or None), got {softcap}")
        valid = None
        if key_mask is not None:
            key_mask = np.asarray(key_mask)
            if key_mask.ndim != 2 or key_mask.shape[0] != q.shape[0]:
                raise ValueError(f"key_mask has shape {key_mask.shape}; expected (batch={q.shape[0]}, "
                                 "cached tokens)")
            valid = np.ascontiguousarray(key_mask, dtype=bool).view(np.uint8)
        sink_logits = None
        if sinks is not None:
            sink_logits = np.ascontiguousarray(as_float_array(sinks, "sinks"), dtype=np.float32)
            if sink_logits.shape != (q.shape[1],):
                raise ValueError(f"sinks has shape {sink_logits.shape}; expected (q_heads={q.shape[1]},)")
            if not np.isfinite(sink_logits).all():
                raise ValueError("sinks hold NaN or Inf")
        if q.size == 0:
            return np.zeros((q.shape[0], q.shape[2], q.shape[1], q.shape[3]) if positions_first
                            else q.shape, np.float32)
        if self._probe is not None:
            self._protect(q, scale, causal, window, threaded)
        out, items, tiled, splits, int8, int8_values, threads = self._layer.attention(
            q, scale, threaded, valid, cap, sink_logits, path, causal, int(window or 0), scores, values,
            positions_first)
        self.last_attention_path = "tiles" if tiled == items else "codes" if tiled == 0 else "mixed"
        self.last_attention_scores = "int8" if int8 == items else "exact" if int8 == 0 else "mixed"
        self.last_attention_values = ("int8" if int8_values == items else "exact" if int8_values == 0
                                      else "mixed")
        self.last_attention_splits = splits
        self.last_attention_threads = threads
        return out

    def _protect(self, q: np.ndarray, scale: float, causal: bool, window: Optional[int],
                 threaded: bool) -> None:
        """Measures the prefill's attention KL at the requested key bits and escalates (one bit
        at a time up to 8, then float16) while it exceeds the bounds (:mod:`turbokv.protection`).
        Runs once, at the first attention, on the pool where that attention is ``threaded``."""
        with self._probe_lock:
            keys = self._probe
            if keys is None:
                return
            rows = min(protection.PROBE_QUERIES, q.shape[2])
            queries = q[:, :, q.shape[2] - rows:]
            too_long = causal and q.shape[2] > keys.shape[2]
            if q.shape[0] != keys.shape[0] or too_long or not np.isfinite(queries).all():
                return  # the attention call itself refuses these queries; measure on the next one
            self._probe = None
            if self._layer.length != keys.shape[2] or self._layer.batch != keys.shape[0]:
                return
            queries = np.ascontiguousarray(queries)
            tried = []
            for bits in protection.escalation(self.key_bits):
                if bits != self._layer.key_bits:
                    self._layer.reencode_keys(bits, keys)
                # C++ (turbokv's kernels and pool, each stream's stored keys decoded there):
                # numpy's BLAS threads would keep spinning after the products and slow the
                # model's next ones (protection.attention_kl is the numpy reference it is tested
                # against).
                kl = self._layer.attention_kl(queries, keys, scale, causal, int(window or 0), threaded)
                tried.append(protection.record(bits, kl, self.key_bits, self.key_mode))
                if protection.accepts(bits, tried[-1]["excess"], self.refine_bound, self.protection_bound):
                    break
            self.protection = {"tokens": int(keys.shape[2]), "queries": rows, "tried": tried,
                               "key_bits": self._layer.key_bits}

    @property
    def simd(self) -> str:
        """The SIMD level of this cache's kernels ("scalar", "avx2", "avx512", "neon"): the best the CPU
        has, or ``TURBOKV_SIMD`` when the cache was made."""
        return self._layer.simd

    @property
    def offset(self) -> int:
        """Number of cached tokens per stream."""
        return self._layer.length

    @property
    def batch(self) -> int:
        """Batch size fixed by the first update (0 before it)."""
        return self._layer.batch

    @property
    def nbytes(self) -> int:
        """Bytes of memory the cache holds: its slabs of 256-token chunks (1, 2, 4, ... chunks each, up
        to the fewest that make 2 MiB): up to twice the chunks in use while a layer's side is under
        ~2 MiB, then up to about one slab (~2 MiB) more per layer and side. Pages of a small slab that
        were never written are not resident."""
        return self._layer.allocated_bytes

    @property
    def used_nbytes(self) -> int:
        """Bytes of the stored tokens alone (codes, norms, float16 tokens), without chunk slack."""
        return self._layer.used_bytes

    def is_trimmable(self) -> bool:
        return True

    def trim(self, n: int) -> int:
        """Drops the newest ``n`` tokens (e.g. rejected speculative tokens); returns n."""
        n = check_int("n", n, 0, self.offset)
        self._layer.trim(n)
        return n

    def select_batch(self, rows: Any) -> None:
        """Keeps batch rows ``rows`` (1-D integer indices, any row any number of times, in any
        order) as the new batch: beam search's reorder, ``num_return_sequences``' repeat,
        contrastive search's selection. The stored codes are copied, never decoded, so a selected
        row continues exactly as the original row would. IndexError for a row outside the batch."""
        index = np.asarray(rows.cpu() if hasattr(rows, "cpu") else rows)
        if index.ndim != 1 or index.size == 0 or not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"rows must be a non-empty 1-D array of integers, got {index.dtype} "
                             f"of shape {index.shape}")
        batch = self.batch
        if index.min() < 0 or index.max() >= batch:
            raise IndexError(f"rows {index.tolist()[:8]} fall outside the batch of {batch}")
        with self._probe_lock:
            self._layer.select_batch(index.astype(np.int64).tolist())
            if self._probe is not None:
                self._probe = np.ascontiguousarray(self._probe[index])

    def clear(self) -> None:
        """Empties the cache (keeps its settings; the next update may use another batch size).
        Key centring and protection start afresh with the next prefill."""
        with self._probe_lock:
            self._layer.clear()
            self._probe, self.protection = None, None

    @property
    def stored_key_bits(self) -> int:
        """The key bits in use: ``key_bits``, or more where protection raised them (0 = float16)."""
        return self._layer.key_bits

    @property
    def key_offset(self) -> Optional[np.ndarray]:
        """(batch, num_kv_heads, head_dim) float32: each stream's mean key over the first update,
        subtracted before encoding (``center_keys``); None when keys are not centred."""
        offset = self._layer.key_offset
        return offset if offset.size else None

    def __reduce__(self) -> Tuple[Any, Tuple[Dict[str, np.ndarray], Dict[str, Any]]]:
        """pickle (multiprocessing, joblib): the codes and settings of :meth:`snapshot`, rebuilt
        by :meth:`from_state`, which checks them; never decoded."""
        meta, state = self.snapshot()
        return KVCache.from_state, (state, meta)

    def __deepcopy__(self, memo: Dict[int, Any]) -> "KVCache":
        """``copy.deepcopy``: an independent copy, as :func:`turbokv.persist.copy_cache` (codes
        copied, never decoded, read under the cache's lock)."""
        from .persist import copy_cache

        return copy_cache(self)

    def summary(self) -> Dict[str, Any]:
        """What this layer stores: requested and stored key bits, value bits, whether keys are
        centred, what prefill protection measured (None if it has not run), and the stored bits
        per coordinate (codes, norms and float16 tokens, keys and values together)."""
        tokens = self.batch * self.num_kv_heads * self.offset
        return {"layer": self.layer_index, "key_bits": self.key_bits,
                "stored_key_bits": self.stored_key_bits, "value_bits": self.value_bits,
                "centred": self.key_offset is not None, "protection": self.protection,
                "bits_per_coordinate": 8.0 * self.used_nbytes / (2 * tokens * self.head_dim)
                if tokens else None}

    # Persistence ------------------------------------------------------------------------------

    @property
    def meta_state(self) -> Dict[str, Any]:
        """The settings needed to rebuild this cache (JSON-serialisable)."""
        return {
            "version": STATE_VERSION, "head_dim": self.head_dim, "num_kv_heads": self.num_kv_heads,
            "key_bits": self.key_bits, "value_bits": self.value_bits, "key_mode": self.key_mode,
            "value_mode": self.value_mode, "residual_window": self.residual_window,
            "seed": self.seed, "layer_index": self.layer_index, "norm_dtype": self.norm_dtype,
            "key_norm_correction": self.key_norm_correction,
            "value_norm_correction": self.value_norm_correction,
            "center_keys": self.center_keys, "protect_keys": self.protect_keys,
            "protection_bound": self.protection_bound, "refine_bound": self.refine_bound,
            "scores": self.scores, "values": self.values, "path": self.path, "batch": self.batch, "offset": self.offset, "stored_key_bits": self.stored_key_bits,
        }

    @property
    def state(self) -> Dict[str, np.ndarray]:
        """The stored arrays, named ``keys.<field>`` / ``values.<field>`` (fields: codes, norms,
        qjl, residual_norms as uint8 bytes; halves and window as float16)."""
        return self.snapshot()[1]

    def snapshot(self) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
        """``(meta_state, state)`` read under one lock, so the two agree even while another thread
        updates the cache (``save_cache`` uses this)."""
        batch, offset, keys, values, key_bits, key_offset = self._layer.export_state()
        meta = dict(self.meta_state, batch=batch, offset=offset, stored_key_bits=key_bits)
        if batch == 0:
            return meta, {}
        state = {f"keys.{k}": a for k, a in keys.items()}
        state.update({f"values.{k}": a for k, a in values.items()})
        if key_offset.size:
            state["keys.offset"] = key_offset
        return meta, state

    _SETTINGS = ("head_dim", "num_kv_heads", "key_bits", "value_bits", "key_mode", "value_mode",
                 "residual_window", "seed", "layer_index", "norm_dtype", "key_norm_correction",
                 "value_norm_correction")
    _SETTINGS_V2 = ("center_keys", "protect_keys", "protection_bound")

    @classmethod
    def from_state(cls, state: Dict[str, np.ndarray], meta_state: Dict[str, Any]) -> "KVCache":
        """Rebuilds a cache from ``state`` and ``meta_state``; raises ValueError if they are
        inconsistent (the arrays are checked against the settings before anything is kept)."""
        version = meta_state.get("version")
        if version not in (1, STATE_VERSION):
            raise ValueError(f"cache state version {version!r} is not supported "
                             f"(this turbokv reads versions 1 and {STATE_VERSION})")
        names = cls._SETTINGS + (cls._SETTINGS_V2 if version == 2 else ())
        missing = [k for k in names + ("batch", "offset") if k not in meta_state]
        if missing:
            raise ValueError(f"cache meta_state lacks {missing}")
        # Version 1 caches predate centring and protection: they hold plain keys.
        settings = {"center_keys": False, "protect_keys": False}
        settings.update({k: meta_state[k] for k in names})
        if version == 2:  # absent in files written before they existed: the defaults
            settings["refine_bound"] = meta_state.get("refine_bound")
            settings["scores"] = meta_state.get("scores", "exact")
            settings["values"] = meta_state.get("values", "exact")
            settings["path"] = meta_state.get("path", "auto")
        cache = cls(**settings)
        batch = check_int("batch", meta_state["batch"], 0, 1 << 31)
        if batch:
            fields = ("codes", "norms", "qjl", "residual_norms", "halves", "window")
            try:
                keys = {f: state[f"keys.{f}"] for f in fields}
                values = {f: state[f"values.{f}"] for f in fields}
            except KeyError as e:
                raise ValueError(f"cache state lacks array {e}") from None
            key_bits = meta_state.get("stored_key_bits", cache.key_bits) if version == 2 else cache.key_bits
            check_int("stored_key_bits", key_bits, 0, 8)
            key_offset = np.ascontiguousarray(state.get("keys.offset", np.zeros(0, np.float32)))
            if key_offset.dtype != np.float32:
                raise ValueError(f"cache state array keys.offset has dtype {key_offset.dtype}, not float32")
            cache._layer.import_state(batch, keys, values, key_bits, key_offset)
        if cache.offset != meta_state["offset"]:
            raise ValueError(f"cache state holds {cache.offset} tokens, meta_state says {meta_state['offset']}")
        return cache

    def __repr__(self) -> str:
        return (f"KVCache(head_dim={self.head_dim}, num_kv_heads={self.num_kv_heads}, "
                f"key_bits={self.key_bits}, value_bits={self.value_bits}, key_mode={self.key_mode!r}, "
                f"value_mode={self.value_mode!r}, residual_window={self.residual_window}, "
                f"offset={self.offset}, nbytes={self.nbytes})")

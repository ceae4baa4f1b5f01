"""TurboQuant codec backed by the C++ core."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._validation import as_rows, as_vectors, check_codec_settings, check_encoded
from .encoded import Encoded

__all__ = ["Codec"]


class Codec:
    """Compresses vectors of length ``head_dim`` to ``bits`` bits per coordinate (TurboQuant).

    Each vector x is stored as its norm and the packed Lloyd-Max codes of its randomly rotated
    unit vector (paper, Algorithm 1). ``mode="prod"`` spends one of the bits on a 1-bit QJL
    sketch of the residual so that inner products are unbiased (paper, Algorithm 2).

    Args:
        head_dim: vector length, 8..1024. Powers of two use a randomized Hadamard rotation
            (O(d log d)); other lengths a dense random orthogonal matrix (O(d^2), no extra bits).
        bits: total bits per coordinate, 1..8.
        mode: ``"mse"`` (minimum reconstruction error) or ``"prod"`` (unbiased inner products).
        seed: chooses the rotation and sketch; encoder and decoder must use the same one.
        norm_dtype: ``"float32"`` (default) or ``"float16"`` storage for norms.
        norm_correction: mse only. Store ``||x|| / ||u_hat||`` so decoded vectors keep the input
            norm exactly (slightly higher MSE; peers found it better for model quality).

    Storage per vector: ``bytes_per_vector`` bytes, i.e. ``bits_per_coordinate`` bits per
    coordinate including norms.

    Example:
        >>> import numpy as np, turbokv
        >>> codec = turbokv.Codec(head_dim=128, bits=4)
        >>> x = np.random.default_rng(0).standard_normal((1000, 128), dtype=np.float32)
        >>> enc = codec.encode(x)
        >>> x_hat = codec.decode(enc)                      # (1000, 128) float32
        >>> s = codec.scores(x[:4], enc)                   # (4, 1000) ~= x[:4] @ x_hat.T
        >>> codec.bits_per_coordinate
        4.25
    """

    def __init__(
        self,
        head_dim: int,
        bits: int,
        mode: str = "mse",
        seed: int = 0,
        norm_dtype: str = "float32",
        norm_correction: bool = False,
    ) -> None:
        settings = check_codec_settings(head_dim, bits, mode, seed, norm_dtype, norm_correction)
        (self.head_dim, self.bits, self.mode, self.seed, self.norm_dtype,
         self.norm_correction) = settings
        self._core = _core.Codec(
            self.head_dim, self.bits, getattr(_core.Mode, self.mode), self.seed,
            getattr(_core.NormDtype, self.norm_dtype), self.norm_correction,
        )

    @property
    def code_bytes(self) -> int:
        """Bytes of packed codebook indices per vector."""
        return self._core.code_bytes

    @property
    def qjl_bytes(self) -> int:
        """Bytes of QJL sketch per vector (0 in mse mode)."""
        return self._core.qjl_bytes

    @property
    def bytes_per_vector(self) -> int:
        """All bytes stored per vector: codes, sketch and norms."""
        return self._core.bytes_per_vector

    @property
    def bits_per_coordinate(self) -> float:
        """Storage cost in bits per coordinate, norms included (e.g. 4.25 at d=128, 4 bits)."""
        return self._core.bits_per_coordinate

    @property
    def simd(self) -> str:
        """The instruction set in use: ``"scalar"``, ``"avx2"``, ``"avx512"`` or ``"neon"``
        (override with the environment variable ``TURBOKV_SIMD``)."""
        return self._core.simd

    def _empty(self, shape) -> Encoded:
        norms = np.empty(shape, dtype=self.norm_dtype)
        codes = np.empty(shape + (self.code_bytes,), dtype=np.uint8)
        if self.mode == "mse":
            return Encoded(codes, norms)
        return Encoded(codes, norms, np.empty(shape + (self.qjl_bytes,), np.uint8),
                       np.empty(shape, dtype=self.norm_dtype))

    def encode(self, x: Any) -> Encoded:
        """Encodes ``x`` of shape ``(..., head_dim)``, float32 or float16, any strides.

        Returns an :class:`Encoded` of shape ``x.shape[:-1]``. Rows are read in place when
        numpy can view ``x`` as (n, head_dim) rows; otherwise one copy is made.

        Raises:
            TypeError: x is not float32/float16.
            ValueError: the last axis is not head_dim, or x holds NaN/Inf (the message names
                the first bad vector), or a norm does not fit float16 storage.
        """
        x = as_vectors(x, self.head_dim)
        shape = x.shape[:-1]
        out = {
            "codes": np.empty(shape + (self.code_bytes,), dtype=np.uint8),
            "norms": np.empty(shape, dtype=self.norm_dtype),
            "qjl": np.empty(shape + (self.qjl_bytes,), dtype=np.uint8),
            "residual_norms": np.empty(shape if self.mode == "prod" else (0,), dtype=self.norm_dtype),
        }
        if x.size:
            self._core.encode(as_rows(x), *out.values())
        if self.mode == "mse":
            return Encoded(out["codes"], out["norms"])
        return Encoded(**out)

    def _core_arrays(self, enc: Encoded):
        check_encoded(enc, self.head_dim, self.mode, self.norm_dtype, self.code_bytes,
                      self.qjl_bytes)
        n = enc.size
        arrays = [np.ascontiguousarray(enc.codes).reshape(n, self.code_bytes),
                  np.ascontiguousarray(enc.norms).reshape(n)]
        if self.mode == "prod":
            arrays += [np.ascontiguousarray(enc.qjl).reshape(n, self.qjl_bytes),
                       np.ascontiguousarray(enc.residual_norms).reshape(n)]
        else:
            empty = np.empty(0, np.uint8)
            arrays += [empty, empty]
        return arrays

    def decode(self, enc: Encoded) -> np.ndarray:
        """Reconstructs vectors: returns float32 of shape ``enc.shape + (head_dim,)``."""
        arrays = self._core_arrays(enc)
        out = np.empty((enc.size, self.head_dim), dtype=np.float32)
        if enc.size:
            self._core.decode(*arrays, out)
        return out.reshape(enc.shape + (self.head_dim,))

    def scores(self, q: Any, enc: Encoded, precision: str = "exact") -> np.ndarray:
        """Inner products of queries with encoded vectors, computed on the codes.

        ``q``: float32/float16 of shape ``(..., head_dim)``; returns float32 of shape
        ``q.shape[:-1] + enc.shape``, equal to ``q @ decode(enc).T`` up to float rounding, but
        without decoding: each query is rotated once and each code costs one table lookup.
        In prod mode this is the unbiased estimator of ``<q, x>`` (paper, Theorem 2).
        ``precision="int8"``: the rotated query and the centroids are rounded to integers (int8
        for codes of 1-4 bits: query bytes to +-127, centroids to +-63; int16 for 5-8 bits) and
        the products summed exactly
        (``KVCache.attention``'s ``scores="int8"``).
        A query holding NaN or Inf scores NaN against every key at either precision, as
        numpy's matmul would (``KVCache.attention`` refuses such queries instead).
        """
        if precision not in ("exact", "int8"):
            raise ValueError(f"precision must be 'exact' or 'int8', got {precision!r}")
        q = as_vectors(q, self.head_dim, name="q")
        arrays = self._core_arrays(enc)
        q_rows = as_rows(q).astype(np.float32, copy=False)
        out = np.empty((q_rows.shape[0], enc.size), dtype=np.float32)
        if out.size:
            self._core.scores(q_rows, *arrays, out, precision)
        return out.reshape(q.shape[:-1] + enc.shape)

    def __repr__(self) -> str:
        return (f"Codec(head_dim={self.head_dim}, bits={self.bits}, mode={self.mode!r}, "
                f"seed={self.seed}, norm_dtype={self.norm_dtype!r}, "
                f"norm_correction={self.norm_correction})")

"""Pure-numpy TurboQuant: the readable oracle that the C++ core is tested against.

One section per stage of the paper (arXiv 2504.19874), in the order a vector meets them:

1. ``splitmix64`` / ``gaussians``: the seeded randomness, bit-for-bit the C++ generator.
2. ``lloyd_max_codebook``: the scalar quantiser for N(0, 1) (paper, section 3.1).
3. ``rotation_matrix``: the random rotation (randomized Hadamard, or dense Haar for other d).
4. ``quantize`` / ``pack`` / ``unpack``: nearest centroid by midpoints, dense bit packing.
5. ``qjl_matrix``: the Gaussian sketch of TurboQuant_prod (paper, section 3.2).
6. ``Codec``: the same API as :class:`turbokv.Codec`, in float64 wherever precision is free.

Everything here favours clarity over speed (rotations are dense matrix products).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from ._validation import as_vectors, check_codec_settings, check_encoded
from .encoded import Encoded

__all__ = [
    "Codec", "splitmix64", "gaussians", "lloyd_max_codebook", "rotation_matrix", "qjl_matrix",
    "quantize", "pack", "unpack", "attention",
]

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
STREAM_HADAMARD_SIGNS = 0x5349474E53  # "SIGNS"
STREAM_DENSE_ROTATION = 0x44454E5345  # "DENSE"
STREAM_QJL = 0x514A4C  # "QJL"


# 1. Randomness ---------------------------------------------------------------------------------

def splitmix64(seed: int, count: int) -> np.ndarray:
    """The first ``count`` outputs of SplitMix64 started at ``seed`` (uint64)."""
    with np.errstate(over="ignore"):
        state = np.uint64(seed & _MASK64) + np.arange(1, count + 1, dtype=np.uint64) * np.uint64(_GOLDEN)
        z = state
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def stream_seed(seed: int, stream: int) -> int:
    """Each random object has its own stream, so changing one never shifts another."""
    return (seed ^ ((stream * _GOLDEN) & _MASK64)) & _MASK64


def gaussians(seed: int, count: int) -> np.ndarray:
    """``count`` standard normals by Box-Muller, in the C++ order (pairs g0, g1)."""
    pairs = (count + 1) // 2
    z = splitmix64(seed, 2 * pairs)
    u1 = ((z[0::2] >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * 2.0**-53
    u2 = (z[1::2] >> np.uint64(11)).astype(np.float64) * 2.0**-53
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2
    out = np.empty(2 * pairs)
    out[0::2] = radius * np.cos(angle)
    out[1::2] = radius * np.sin(angle)
    return out[:count]


# 2. Codebook -----------------------------------------------------------------------------------

def _tail(x):
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def _pdf(x):
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


@lru_cache(maxsize=None)
def lloyd_max_codebook(bits: int) -> np.ndarray:
    """Centroids (float64, ascending) of the 2^bits-level Lloyd-Max quantiser for N(0, 1).

    Solves the optimality conditions (each centroid is the mean of its cell; cells end halfway
    between centroids) on the positive half: 20 Lloyd sweeps, then Newton steps, whose Jacobian
    is tridiagonal because a cell only sees its neighbours.
    """
    if bits == 0:
        return np.zeros(1)
    half = 2 ** (bits - 1)
    # Start from the high-resolution optimum (density ~ pdf^(1/3)): quantiles of N(0, 3).
    from statistics import NormalDist
    c = np.array([math.sqrt(3.0) * NormalDist().inv_cdf(0.5 + 0.5 * (k + 0.5) / half)
                  for k in range(half)])
    for iteration in range(200):
        f, lower_d, diag, upper_d = (np.zeros(half) for _ in range(4))
        lower = 0.0
        for k in range(half):
            last = k + 1 == half
            upper = 0.0 if last else 0.5 * (c[k] + c[k + 1])
            pdf_lo, pdf_hi = _pdf(lower), 0.0 if last else _pdf(upper)
            mass = _tail(lower) - (0.0 if last else _tail(upper))
            centroid = (pdf_lo - pdf_hi) / mass
            d_lo = 0.0 if k == 0 else pdf_lo * (centroid - lower) / mass
            d_hi = 0.0 if last else pdf_hi * (upper - centroid) / mass
            f[k] = c[k] - centroid
            lower_d[k], diag[k], upper_d[k] = -0.5 * d_lo, 1 - 0.5 * d_lo - 0.5 * d_hi, -0.5 * d_hi
            lower = upper
        if iteration < 20:
            c = c - f
            continue
        # Thomas algorithm for the tridiagonal Newton system.
        for k in range(1, half):
            w = lower_d[k] / diag[k - 1]
            diag[k] -= w * upper_d[k - 1]
            f[k] -= w * f[k - 1]
        for k in range(half - 1, -1, -1):
            if k + 1 < half:
                f[k] -= upper_d[k] * f[k + 1]
            f[k] /= diag[k]
        c = c - f
        if np.max(np.abs(f)) < 1e-14:
            break
    return np.concatenate([-c[::-1], c])


def boundaries(centroids: np.ndarray) -> np.ndarray:
    """Midpoints between neighbouring centroids: the nearest-centroid decision thresholds."""
    return 0.5 * (centroids[1:] + centroids[:-1])


# 3. Rotation -----------------------------------------------------------------------------------

def hadamard(d: int) -> np.ndarray:
    """The d x d Walsh-Hadamard matrix (entries +-1), d a power of two."""
    h = np.ones((1, 1))
    while h.shape[0] < d:
        h = np.block([[h, h], [h, -h]])
    return h


@lru_cache(maxsize=64)
def rotation_matrix(d: int, seed: int) -> np.ndarray:
    """The orthogonal d x d matrix R of the codec (float64).

    Power-of-two d: R = H D / sqrt(d), D = diag of signs from the top bit of SplitMix64.
    Otherwise: R = Q from the QR factorisation of a seeded Gaussian matrix (filled row by row),
    with the signs fixed so that diag(R_qr) > 0, which makes Q Haar-distributed.
    """
    if d & (d - 1) == 0:
        bits = splitmix64(stream_seed(seed, STREAM_HADAMARD_SIGNS), d) >> np.uint64(63)
        scale = np.float32(1.0 / math.sqrt(d))  # the C++ code stores +-1/sqrt(d) as float32
        signs = np.where(bits == 1, -scale, scale).astype(np.float64)
        return hadamard(d) * signs[None, :]
    g = gaussians(stream_seed(seed, STREAM_DENSE_ROTATION), d * d).reshape(d, d)
    q, r = np.linalg.qr(g)
    return q * np.sign(np.diag(r))[None, :]


# 4. Quantisation and packing -------------------------------------------------------------------

def quantize(v: np.ndarray, bits: int) -> np.ndarray:
    """Index of the nearest centroid of each N(0,1)-scaled coordinate (ties go up), uint8."""
    bounds = boundaries(lloyd_max_codebook(bits)).astype(np.float32).astype(np.float64)
    return np.searchsorted(bounds, v, side="right").astype(np.uint8)


def pack(idx: np.ndarray, bits: int) -> np.ndarray:
    """Packs the last axis of b-bit indices into a little-endian bit stream (uint8)."""
    if bits == 0:
        return np.zeros(idx.shape[:-1] + (0,), np.uint8)
    stream = (idx[..., :, None] >> np.arange(bits, dtype=np.uint8)) & 1
    stream = stream.reshape(idx.shape[:-1] + (idx.shape[-1] * bits,))
    return np.packbits(stream, axis=-1, bitorder="little")


def unpack(packed: np.ndarray, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack`: the first ``count`` b-bit indices of each row (uint8)."""
    if bits == 0:
        return np.zeros(packed.shape[:-1] + (count,), np.uint8)
    stream = np.unpackbits(packed, axis=-1, count=count * bits, bitorder="little")
    stream = stream.reshape(packed.shape[:-1] + (count, bits))
    return (stream << np.arange(bits, dtype=np.uint8)).sum(axis=-1).astype(np.uint8)


# 5. QJL sketch ---------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def qjl_matrix(d: int, seed: int) -> np.ndarray:
    """The d x d matrix S of i.i.d. N(0,1) entries (row-major from the QJL stream), as float32."""
    return gaussians(stream_seed(seed, STREAM_QJL), d * d).reshape(d, d).astype(np.float32)


# 6. Codec --------------------------------------------------------------------------------------

class Codec:
    """Numpy twin of :class:`turbokv.Codec` (same arguments, same :class:`Encoded` output)."""

    def __init__(self, head_dim: int, bits: int, mode: str = "mse", seed: int = 0,
                 norm_dtype: str = "float32", norm_correction: bool = False) -> None:
        settings = check_codec_settings(head_dim, bits, mode, seed, norm_dtype, norm_correction)
        (self.head_dim, self.bits, self.mode, self.seed, self.norm_dtype,
         self.norm_correction) = settings
        self.mse_bits = bits - 1 if mode == "prod" else bits
        self.centroids = lloyd_max_codebook(self.mse_bits).astype(np.float32).astype(np.float64)
        self.rotation = rotation_matrix(head_dim, seed)
        self.sketch = qjl_matrix(head_dim, seed).astype(np.float64) if mode == "prod" else None
        self.code_bytes = (head_dim * self.mse_bits + 7) // 8
        self.qjl_bytes = (head_dim + 7) // 8 if mode == "prod" else 0
        norm_count = 2 if mode == "prod" else 1
        self.bytes_per_vector = (self.code_bytes + self.qjl_bytes
                                 + norm_count * np.dtype(norm_dtype).itemsize)
        self.bits_per_coordinate = 8.0 * self.bytes_per_vector / head_dim

    def encode(self, x: Any) -> Encoded:
        x = as_vectors(x, self.head_dim).astype(np.float64)
        d = self.head_dim
        if not np.all(np.isfinite(x)):
            raise ValueError("input contains NaN or Inf; replace or drop non-finite values (for "
                             "example with numpy.nan_to_num) before encoding")
        norms = np.linalg.norm(x, axis=-1)
        unit = x / np.where(norms > 0, norms, 1.0)[..., None]
        # Rotated unit vector in codebook units: each coordinate ~ N(0, 1).
        v = unit @ self.rotation.T * math.sqrt(d)
        idx = quantize(v, self.mse_bits)
        c = self.centroids[idx]
        stored = norms
        if self.norm_correction:
            c_norm = np.linalg.norm(c, axis=-1) / math.sqrt(d)  # ||u_hat||
            stored = np.where(c_norm > 0, norms / np.where(c_norm > 0, c_norm, 1.0), norms)
        limit = np.finfo(self.norm_dtype).max
        if np.any(stored > limit):
            raise ValueError(f"a vector norm exceeds the {self.norm_dtype} range of its storage; "
                             "scale the input down" + (" or use norm_dtype='float32'"
                                                       if self.norm_dtype == "float16" else ""))
        codes = pack(idx, self.mse_bits)
        if self.mode == "mse":
            return Encoded(codes, stored.astype(self.norm_dtype))
        residual = v - c  # sqrt(d) (u - u_hat), rotated
        residual_norms = np.linalg.norm(residual, axis=-1) / math.sqrt(d)
        signs = (residual @ self.sketch.T >= 0).astype(np.uint8)
        return Encoded(codes, stored.astype(self.norm_dtype), pack(signs, 1),
                       residual_norms.astype(self.norm_dtype))

    def _rotated_reconstruction(self, enc: Encoded) -> np.ndarray:
        """R x_hat: the decoded vectors before the inverse rotation (float64)."""
        check_encoded(enc, self.head_dim, self.mode, self.norm_dtype, self.code_bytes,
                      self.qjl_bytes)
        d = self.head_dim
        norms = enc.norms.astype(np.float64)[..., None]
        rotated = norms * self.centroids[unpack(enc.codes, d, self.mse_bits)] / math.sqrt(d)
        if self.mode == "prod":
            # + ||x|| sqrt(pi/2)/m ||r|| S^T sign(S r)   (paper, Algorithm 2)
            signs = unpack(enc.qjl, d, 1).astype(np.float64) * 2 - 1
            gamma = enc.residual_norms.astype(np.float64)[..., None]
            rotated = rotated + norms * math.sqrt(math.pi / 2) / d * gamma * (signs @ self.sketch)
        return rotated

    def decode(self, enc: Encoded) -> np.ndarray:
        return (self._rotated_reconstruction(enc) @ self.rotation).astype(np.float32)

    def scores(self, q: Any, enc: Encoded) -> np.ndarray:
        q = as_vectors(q, self.head_dim, name="q").astype(np.float64)
        rotated = self._rotated_reconstruction(enc).reshape(-1, self.head_dim)
        out = (q.reshape(-1, self.head_dim) @ self.rotation.T) @ rotated.T
        return out.reshape(q.shape[:-1] + enc.shape).astype(np.float32)


# 7. Attention ----------------------------------------------------------------------------------

def attention(queries: np.ndarray, keys: np.ndarray, values: np.ndarray,
              scale: float | None = None, softcap: float | None = None,
              sinks: np.ndarray | None = None, causal: bool = True,
              window: int | None = None) -> np.ndarray:
    """Softmax attention in float64, the oracle for :meth:`turbokv.KVCache.attention`.

    queries (B, Hq, L, d); keys and values (B, Hkv, T, d) with Hq a multiple of Hkv: query head
    h reads kv head h // (Hq // Hkv). Query i sits at position T - L + i and sees tokens
    [0, T - L + i] (``causal=False``: every token, any L; ``window``: only tokens
    (T - L + i - window, T - L + i], a sliding window). ``softcap``: scores become softcap * tanh(score / softcap). ``sinks`` (Hq,):
    one extra logit per query head in the softmax, with a zero value vector. Returns float64
    (B, Hq, L, d).
    """
    q = np.asarray(queries, np.float64)
    k = np.asarray(keys, np.float64)
    v = np.asarray(values, np.float64)
    batch, q_heads, q_len, d = q.shape
    group = q_heads // k.shape[1]
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    length = k.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    scores = np.einsum("bhld,bhtd->bhlt", q, k) * scale
    if softcap is not None:
        scores = softcap * np.tanh(scores / softcap)
    positions = length - q_len + np.arange(q_len)
    if causal:
        seen = np.arange(length)[None, :] <= positions[:, None]
        if window:
            seen &= np.arange(length)[None, :] > positions[:, None] - window
        scores = np.where(seen, scores, -np.inf)
    if sinks is not None:  # the sink is one more column, dropped after the softmax
        sink = np.broadcast_to(np.asarray(sinks, np.float64)[None, :, None, None], (batch, q_heads, q_len, 1))
        scores = np.concatenate([scores, sink], axis=-1)
    scores -= scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    return np.einsum("bhlt,bhtd->bhld", weights[..., :length], v)

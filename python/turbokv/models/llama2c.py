"""llama2.c checkpoints and a numpy Llama forward pass that takes any cache with the KVCache API.

The embedded default is ``stories260K`` (MIT, from the llama2.c fork plctlab/rvspoc-s2311-llama2;
see ``data/stories260K.LICENSE``): dim 64, 5 layers, 8 query heads, 4 KV heads (GQA), head_dim 8,
vocab 512, no tokenizer (work with token ids; BOS is 1).

The forward follows llama2.c's run.c: RMSNorm (eps 1e-5), rotary embeddings on adjacent pairs
(theta 10000), grouped-query attention, SwiGLU feed-forward, classifier tied to the embedding.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence

import numpy as np

__all__ = ["Config", "Llama2c", "load", "DEFAULT_CHECKPOINT", "BOS"]

DEFAULT_CHECKPOINT = os.path.join(os.path.dirname(__file__), "data", "stories260K.bin")
BOS = 1


@dataclass(frozen=True)
class Config:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


class Llama2c:
    """A llama2.c model in numpy (float32). ``forward`` runs new tokens through the model,
    appending their keys and values to ``caches`` (one per layer) and attending with
    ``cache.attention`` — so a :class:`turbokv.KVCache` computes attention on its codes, and
    :class:`turbokv.DenseKVCache` is the uncompressed baseline."""

    def __init__(self, config: Config, weights: dict) -> None:
        self.config = config
        self.w = weights
        hd = config.head_dim
        # llama2.c: pair (2i, 2i+1) of each head rotates by pos / 10000^(2i / head_dim).
        self._inv_freq = 1.0 / np.power(10000.0, np.arange(0, hd, 2, dtype=np.float32) / hd)

    def make_dense_caches(self) -> list:
        from ..dense_cache import DenseKVCache

        return [DenseKVCache(self.config.head_dim, self.config.n_kv_heads) for _ in range(self.config.n_layers)]

    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """x (B, H, n, hd): rotate adjacent pairs by position-dependent angles."""
        angles = positions[:, None].astype(np.float32) * self._inv_freq[None, :]  # (n, hd/2)
        cos, sin = np.cos(angles), np.sin(angles)
        even, odd = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = even * cos - odd * sin
        out[..., 1::2] = even * sin + odd * cos
        return out

    @staticmethod
    def _rmsnorm(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        ms = np.mean(x * x, axis=-1, keepdims=True) + np.float32(1e-5)
        return weight * (x / np.sqrt(ms))

    def forward(self, tokens: np.ndarray, caches: Sequence[Any]) -> np.ndarray:
        """tokens: (batch, n) int ids at positions [offset, offset + n) of the caches.
        Returns logits (batch, n, vocab) float32."""
        c, w = self.config, self.w
        tokens = np.asarray(tokens)
        batch, n = tokens.shape
        hd = c.head_dim
        start = caches[0].offset
        positions = np.arange(start, start + n)
        x = w["embedding"][tokens]  # (B, n, dim)
        for layer, cache in enumerate(caches):
            h = self._rmsnorm(x, w["attn_norm"][layer])
            q = (h @ w["wq"][layer].T).reshape(batch, n, c.n_heads, hd).transpose(0, 2, 1, 3)
            k = (h @ w["wk"][layer].T).reshape(batch, n, c.n_kv_heads, hd).transpose(0, 2, 1, 3)
            v = (h @ w["wv"][layer].T).reshape(batch, n, c.n_kv_heads, hd).transpose(0, 2, 1, 3)
            q, k = self._rope(q, positions), self._rope(k, positions)
            cache.update(np.ascontiguousarray(k), np.ascontiguousarray(v))
            attn = cache.attention(np.ascontiguousarray(q))  # (B, Hq, n, hd)
            x = x + attn.transpose(0, 2, 1, 3).reshape(batch, n, c.dim) @ w["wo"][layer].T
            h = self._rmsnorm(x, w["ffn_norm"][layer])
            gate = h @ w["w1"][layer].T
            x = x + ((gate / (1 + np.exp(-gate))) * (h @ w["w3"][layer].T)) @ w["w2"][layer].T
        x = self._rmsnorm(x, w["final_norm"])
        return (x @ w["embedding"].T).astype(np.float32)

    def generate(self, caches: Sequence[Any], steps: int, prompt: Sequence[int] = (BOS,),
                 on_token: Optional[Callable[[int], None]] = None) -> List[int]:
        """Greedy decoding (batch 1): feeds ``prompt`` in one prefill, then ``steps`` tokens one at
        a time. Returns the generated ids (prompt excluded)."""
        logits = self.forward(np.asarray([list(prompt)]), caches)
        out = []
        for _ in range(steps):
            token = int(np.argmax(logits[0, -1]))
            out.append(token)
            if on_token:
                on_token(token)
            logits = self.forward(np.asarray([[token]]), caches)
        return out


def load(path: "str | os.PathLike[str] | None" = None) -> Llama2c:
    """Loads a llama2.c legacy checkpoint (default: the embedded stories260K)."""
    path = DEFAULT_CHECKPOINT if path is None else path
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 28:
        raise ValueError(f"{path}: too short for a llama2.c checkpoint")
    dim, hidden, layers, heads, kv_heads, vocab, seq_len = struct.unpack_from("<7i", data)
    shared = vocab > 0
    config = Config(dim, hidden, layers, heads, kv_heads, abs(vocab), seq_len)
    if min(dim, hidden, layers, heads, kv_heads) <= 0 or dim % heads or heads % kv_heads:
        raise ValueError(f"{path}: implausible llama2.c header {config}")
    hd = config.head_dim
    floats = np.frombuffer(data, dtype="<f4", offset=28)
    shapes = [
        ("embedding", (config.vocab_size, dim)),
        ("attn_norm", (layers, dim)),
        ("wq", (layers, heads * hd, dim)),
        ("wk", (layers, kv_heads * hd, dim)),
        ("wv", (layers, kv_heads * hd, dim)),
        ("wo", (layers, dim, heads * hd)),
        ("ffn_norm", (layers, dim)),
        ("w1", (layers, hidden, dim)),
        ("w2", (layers, dim, hidden)),
        ("w3", (layers, hidden, dim)),
        ("final_norm", (dim,)),
    ]
    weights, offset = {}, 0
    for name, shape in shapes:
        count = int(np.prod(shape))
        if offset + count > floats.size:
            raise ValueError(f"{path}: truncated at {name}")
        weights[name] = floats[offset:offset + count].reshape(shape).astype(np.float32)
        offset += count
    offset += seq_len * hd  # the two unused RoPE tables (freq_cis_real, freq_cis_imag)
    if not shared:
        raise ValueError(f"{path}: checkpoints with an unshared classifier are not supported")
    return Llama2c(config, weights)

"""Hugging Face transformers integration: a drop-in compressed cache and the "turbokv" attention.

    import turbokv.hf  # registers attn_implementation="turbokv"
    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="turbokv")
    out = model.generate(ids, past_key_values=turbokv.hf.TurboQuantCache(key_bits=4, value_bits=4))

With ``attn_implementation="turbokv"`` attention runs on the compressed codes (no decoded K/V is
built after the first step). With any other attention implementation the cache returns decoded
float K/V tensors every step: it still stores only the codes, but each step briefly allocates a
decoded copy of the whole layer, as transformers' own QuantizedCache does.

Tested with transformers 5.18 and 4.57. CPU tensors only (turbokv is a CPU library).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from .cache import KVCache
from .layers import settings_for_layer

__all__ = ["TurboQuantCache", "TurboQuantLayer", "turbokv_attention"]


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    """A float32 numpy view of a CPU tensor (a copy only for other dtypes or layouts)."""
    if x.device.type != "cpu":
        raise NotImplementedError(f"turbokv runs on CPU tensors; got a tensor on {x.device}")
    if not x.is_floating_point():
        raise TypeError(f"expected floating-point key/value/query states, got {x.dtype}")
    x = x.detach()
    if x.dtype not in (torch.float32, torch.float16):
        x = x.float()  # bfloat16 has no numpy dtype
    return x.numpy()


class TurboQuantLayer(CacheLayerMixin):
    """One layer of :class:`TurboQuantCache`: a :class:`turbokv.KVCache` behind transformers' layer API."""

    is_compileable = False
    is_croppable = True
    is_sliding = False

    def __init__(self, layer_index: int = 0, **settings: Any) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.settings = settings
        self.cache: Optional[KVCache] = None
        self.fused = False  # set by turbokv_attention: from then on update returns no decoded K/V

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.cache = KVCache(head_dim=key_states.shape[-1], num_kv_heads=key_states.shape[1],
                             layer_index=self.layer_index, **self.settings)
        self.keys = torch.empty(0, dtype=self.dtype)
        self.values = torch.empty(0, dtype=self.dtype)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.cache.update(_to_numpy(key_states), _to_numpy(value_states))
        if self.fused:
            # Shape-only placeholders on the meta device: any attention other than turbokv's that
            # tried to read them would fail loudly instead of computing with garbage.
            shape = (self.cache.batch, self.cache.num_kv_heads, self.cache.offset, self.cache.head_dim)
            keys = torch.empty(shape, dtype=self.dtype, device="meta")
            values = torch.empty(shape, dtype=self.dtype, device="meta")
        else:
            k, v = self.cache.fetch()
            keys, values = torch.from_numpy(k).to(self.dtype), torch.from_numpy(v).to(self.dtype)
        keys._turbokv_layer = self  # lets turbokv_attention find the compressed store
        return keys, values

    def get_mask_sizes(self, query_length: Any) -> Tuple[int, int]:
        # transformers 5 passes the query length, 4.57 the cache_position tensor.
        if isinstance(query_length, torch.Tensor):
            query_length = query_length.shape[0]
        return self.get_seq_length() + query_length, 0

    def get_seq_length(self) -> int:
        return 0 if self.cache is None else self.cache.offset

    def get_max_length(self) -> int:
        return -1

    def get_max_cache_shape(self) -> int:  # the name transformers 4.57 uses
        return -1

    def reset(self) -> None:
        if self.cache is not None:
            self.cache.clear()

    def crop(self, tokens_to_remove: int) -> None:
        """Negative: remove that many newest tokens; positive (older transformers): keep that many."""
        length = self.get_seq_length()
        remove = -tokens_to_remove if tokens_to_remove < 0 else max(0, length - tokens_to_remove)
        if remove and self.cache is not None:
            self.cache.trim(min(remove, length))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        raise NotImplementedError("TurboQuantCache does not support beam search (reorder_cache) yet")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("TurboQuantCache does not support batch_repeat_interleave "
                                  "(num_return_sequences > 1 or beam search) yet")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError("TurboQuantCache does not support batch_select_indices yet")


class TurboQuantCache(Cache):
    """A transformers ``Cache`` that stores every layer's keys and values TurboQuant-compressed.

    Takes the :class:`turbokv.KVCache` settings (``key_bits``, ``value_bits``, ``key_mode``,
    ``value_mode``, ``residual_window``, ``seed``, ``norm_dtype``, ``key_norm_correction``,
    ``value_norm_correction``) for every layer; layers are created as the model reaches them, each
    with its own rotation seeds. ``layer_settings`` (one dict or None per layer) overrides them
    layer by layer, e.g. ``turbokv.boundary_layer_settings(num_layers, 2)`` keeps the first and
    last two layers at 8 bits.

    Example:
        >>> cache = TurboQuantCache(key_bits=4, value_bits=4)
        >>> out = model.generate(input_ids, past_key_values=cache, max_new_tokens=20)
    """

    def __init__(self, layer_settings: Optional[Sequence[Optional[Dict[str, Any]]]] = None,
                 **settings: Any) -> None:
        # Validate every layer's settings now, not at first use.
        for i in range(len(layer_settings) if layer_settings else 1):
            KVCache(head_dim=8, num_kv_heads=1, **settings_for_layer(i, settings, layer_settings))
        super().__init__(layer_class_to_replicate=self._new_layer)
        self.settings = settings
        self.layer_settings = None if layer_settings is None else list(layer_settings)

    def _new_layer(self) -> TurboQuantLayer:
        index = len(self.layers)
        return TurboQuantLayer(layer_index=index,
                               **settings_for_layer(index, self.settings, self.layer_settings))

    @property
    def nbytes(self) -> int:
        """Bytes held by all layers' compressed stores."""
        return sum(layer.cache.nbytes for layer in self.layers if layer.cache is not None)


def _key_mask(attention_mask: Optional[torch.Tensor], batch: int, q_len: int, length: int
              ) -> Optional[np.ndarray]:
    """Per-(batch, key) validity from transformers' 4-D mask, checked to be causal plus padding."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 4:
        raise NotImplementedError(f"turbokv attention takes 4-D masks, got shape {tuple(attention_mask.shape)}")
    allowed = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
    allowed = allowed[:, 0, :, :length].expand(batch, q_len, length)
    valid = allowed[:, -1, :]  # the newest query sees every non-padded token
    positions = torch.arange(length)
    causal = positions[None, :] <= (length - q_len + torch.arange(q_len))[:, None]
    if not torch.equal(allowed, causal[None] & valid[:, None, :]):
        raise NotImplementedError("turbokv attention supports causal masks with padding only "
                                  "(no sliding windows or packed sequences)")
    return None if bool(valid.all()) else valid.numpy()


def turbokv_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                      value: torch.Tensor, attention_mask: Optional[torch.Tensor],
                      scaling: Optional[float] = None, dropout: float = 0.0, **kwargs: Any
                      ) -> Tuple[torch.Tensor, None]:
    """Attention over a TurboQuantCache's codes, for ``attn_implementation="turbokv"``.

    query (batch, q_heads, q_len, head_dim); returns (batch, q_len, q_heads, head_dim) in the
    query's dtype. Without a TurboQuantCache (e.g. ``use_cache=False``) it falls back to SDPA.
    """
    layer = getattr(key, "_turbokv_layer", None)
    if layer is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    layer.fused = True
    cache = layer.cache
    batch, _, q_len, _ = query.shape
    mask = _key_mask(attention_mask, batch, q_len, cache.offset)
    out = cache.attention(_to_numpy(query), scale=scaling, key_mask=mask)
    return torch.from_numpy(out).to(query.dtype).transpose(1, 2).contiguous(), None


AttentionInterface.register("turbokv", turbokv_attention)
AttentionMaskInterface.register("turbokv", sdpa_mask)

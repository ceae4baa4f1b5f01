"""Quality of cache settings on a pretrained encoder (all-MiniLM-L6-v2): every attention layer's
keys and values go through turbokv (encode, store, decode) before attention.

Per setting it reports the cosine similarity of sentence embeddings to the float32 model's, and
each layer's attention-output relative error ||out - out_f32|| / ||out_f32|| measured on that
layer's own inputs (so it is the error this layer adds, not the error that reaches it). The
embeddings carry the accumulated error of all layers. Residual-window settings are left out: an
encoder stores a whole sentence in one update, so a window of 64+ tokens would keep every token of
these sentences in float16 and measure nothing.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..cache import KVCache
from .settings import Setting
from ..layers import settings_for_layer

__all__ = ["sentences_from", "evaluate"]

_ATTENTION = "turbokv_kv_roundtrip"
_state: Dict[str, Any] = {"setting": None, "errors": None, "bytes": 0, "coords": 0}


def sentences_from(text: str, count: int = 64, min_words: int = 8) -> List[str]:
    """The first ``count`` lines of ``text`` with at least ``min_words`` words."""
    lines = [line.strip() for line in text.splitlines() if len(line.split()) >= min_words]
    if len(lines) < count:
        raise ValueError(f"only {len(lines)} lines of {min_words}+ words; {count} needed")
    return lines[:count]


def _roundtrip_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                         scaling: Optional[float] = None, dropout: float = 0.0, **kwargs: Any):
    """SDPA over keys/values that went through a KVCache of the active setting; records this
    layer's output error against SDPA over the float32 keys/values."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    exact, _ = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=0.0, **kwargs)
    setting: Optional[Setting] = _state["setting"]
    if setting is None:
        return exact, None
    layer = getattr(module, "layer_idx", None)
    layer = 0 if layer is None else int(layer)
    num_layers = _state["num_layers"]
    kwargs_layer = settings_for_layer(layer, setting.kwargs, setting.layer_settings(num_layers))
    cache = KVCache(key.shape[-1], key.shape[1], layer_index=layer, **kwargs_layer)
    cache.update(key.detach().float().contiguous().numpy(), value.detach().float().contiguous().numpy())
    k, v = cache.fetch()
    _state["bytes"] += cache.used_nbytes
    _state["coords"] += 2 * key.numel()
    out, _ = sdpa_attention_forward(module, query, torch.from_numpy(k), torch.from_numpy(v),
                                    attention_mask, scaling=scaling, dropout=0.0, **kwargs)
    valid = _state["valid"]  # (batch, tokens): real tokens only, padding rows excluded
    diff = (out - exact)[valid]
    _state["errors"][layer].append((float(diff.pow(2).sum()), float(exact[valid].pow(2).sum())))
    return out, None


def evaluate(settings: Sequence[Setting], sentences: Sequence[str], show_progress: bool = True
             ) -> Dict[str, Any]:
    """Returns {"rows": [...]} with, per setting: cosine_mean, cosine_min (sentence embeddings vs
    float32), layer_errors (per-layer relative attention-output error), bits_per_coordinate."""
    from ._progress import tqdm
    from transformers import AttentionInterface

    from ..models import minilm

    AttentionInterface.register(_ATTENTION, _roundtrip_attention)
    model, tokenizer = minilm.load(attn_implementation=_ATTENTION)
    for i, layer in enumerate(model.encoder.layer):
        layer.attention.self.layer_idx = i  # the attention function reads it
    num_layers = len(model.encoder.layer)
    _state.update(setting=None, num_layers=num_layers)
    batch = tokenizer(list(sentences), padding=True, truncation=True, max_length=256, return_tensors="pt")
    _state["valid"] = batch["attention_mask"].bool()
    reference = minilm.embed(model, tokenizer, list(sentences))
    rows = []
    settings = [s for s in settings if not s.kwargs.get("residual_window")]
    for setting in tqdm(settings, desc="MiniLM settings", disable=not show_progress, leave=False):
        _state.update(setting=setting, errors=[[] for _ in range(num_layers)], bytes=0, coords=0)
        try:
            emb = minilm.embed(model, tokenizer, list(sentences))
        finally:
            _state["setting"] = None
        cos = (emb * reference).sum(-1).numpy()
        errors = [float(np.sqrt(sum(e for e, _ in layer) / sum(r for _, r in layer)))
                  for layer in _state["errors"]]
        rows.append({"setting": setting.label, "group": setting.group,
                     "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                     "layer_errors": errors, "layer_error_mean": float(np.mean(errors)),
                     "bits_per_coordinate": 8.0 * _state["bytes"] / _state["coords"]})
    return {"rows": rows, "sentences": len(sentences),
            "tokens": int(batch["attention_mask"].sum()), "padded_length": int(batch["input_ids"].shape[1])}

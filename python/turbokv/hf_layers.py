"""Which layers of a model's cache hold K/V (compressed) and which hold states (kept as they are).

Hybrid models (Qwen3.5, Qwen3-Next, Kimi Linear, Nemotron-H, Falcon-H1, OLMo hybrid, ...) put
linear-attention or state-space layers between attention layers. Those layers keep a few
fixed-size conv and recurrent states per sequence, not K/V that grows with the text, so a
TurboQuantCache compresses the attention layers and keeps the others in transformers' own layer
classes, as DynamicCache(config=...) lays them out (transformers 5.x). Imported by turbokv.hf only.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

import transformers
from transformers import cache_utils
from transformers.cache_utils import CacheLayerMixin

# Layer types whose K/V a TurboQuantLayer holds: full attention, and the windowed kinds, whose
# window turbokv attention applies from the mask (the compressed cache keeps every token).
ATTENTION_TYPES = ("full_attention", "sliding_attention", "chunked_attention")


def state_layer_plan(config: Any) -> Optional[List[Optional[Callable[[], Any]]]]:
    """None when every layer of ``config``'s decoder attends (the cache then creates its layers
    as the model reaches them). Otherwise one entry per layer: None for an attention layer (a
    TurboQuantLayer), or a factory of transformers' own layer for a state layer (linear attention,
    conv, or a placeholder for a layer with no cache). NotImplementedError for a layer type turbokv
    cannot hold (one layer with both a state and K/V, indexed or compressed attention), and for
    hybrid models on a transformers without state layers in its Cache (4.x: their own cache classes).
    """
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    get_types = getattr(cache_utils, "get_layer_types_and_kwargs", None)
    mapping = getattr(cache_utils, "DYNAMIC_LAYER_TYPE_MAPPING", None)
    if get_types is None or mapping is None:
        others = sorted(set(getattr(text, "layer_types", None) or ()) - set(ATTENTION_TYPES))
        if others:
            raise NotImplementedError(
                f"this model has layers of type {', '.join(map(repr, others))}: TurboQuantCache holds "
                f"them from transformers 5 on (this is {transformers.__version__}, where such models "
                "bring their own cache class)")
        return None
    types, kwargs = get_types(text)
    if all(t in ATTENTION_TYPES for t in types):
        return None
    # One dict for every layer (5.18), or one per layer (5.25).
    per_layer = [kwargs] * len(types) if isinstance(kwargs, dict) else list(kwargs)
    plan: List[Optional[Callable[[], Any]]] = []
    for index, (layer_type, layer_kwargs) in enumerate(zip(types, per_layer)):
        layer_class = mapping.get(layer_type)
        if layer_type in ATTENTION_TYPES:
            plan.append(None)
        elif layer_class is not None and not issubclass(layer_class, CacheLayerMixin):
            plan.append(lambda layer_class=layer_class, layer_kwargs=layer_kwargs: layer_class(**layer_kwargs))
        else:
            raise NotImplementedError(
                f"layer {index} of this model is of type {layer_type!r}, which TurboQuantCache cannot "
                "hold: it compresses attention layers' K/V and keeps linear-attention, conv and "
                "state-space layers as transformers does; use DynamicCache for this model")
    return plan

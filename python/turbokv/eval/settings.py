"""The cache settings that ``python -m turbokv eval`` compares, and how to build each one.

A setting is a label, the :class:`turbokv.KVCache` keyword arguments for every layer, and an
optional number of boundary layers (first N and last N) kept at 8-bit keys and values. Every
setting has key centring and prefill key protection on (the library's defaults) unless its label
says "plain", "centring only" or "protection only". Bits per
coordinate are measured from the stored bytes (codes, norms, float16 window tokens), not computed
from the label: at head_dim 64 a float32 norm alone costs 0.5 bit per coordinate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..layers import boundary_layer_settings

__all__ = ["Setting", "SETTINGS", "QUICK_SETTINGS", "KEY_SETTINGS", "by_label"]


@dataclass(frozen=True)
class Setting:
    label: str
    kwargs: Dict[str, Any] = field(default_factory=dict)
    boundary_layers: int = 0
    group: str = "bits"

    def layer_settings(self, num_layers: int) -> Optional[List[Optional[Dict[str, Any]]]]:
        """Per-layer overrides for :class:`turbokv.hf.TurboQuantCache` / ``make_cache``."""
        return boundary_layer_settings(num_layers, self.boundary_layers) if self.boundary_layers else None


def _s(label: str, group: str = "bits", boundary: int = 0, **kwargs: Any) -> Setting:
    return Setting(label, kwargs, boundary, group)


SETTINGS: List[Setting] = [
    _s("K16V16 (float16)", key_bits=0, value_bits=0),
    _s("K8V8", key_bits=8, value_bits=8),
    _s("K8V4", key_bits=8, value_bits=4),
    _s("K16V4", key_bits=0, value_bits=4),
    _s("K4V4", key_bits=4, value_bits=4),
    _s("K4V3", key_bits=4, value_bits=3),
    _s("K3V4", key_bits=3, value_bits=4),
    _s("K3V3", key_bits=3, value_bits=3),
    _s("K4V2", key_bits=4, value_bits=2),
    _s("K2V2", key_bits=2, value_bits=2),
    # Asymmetric: bits moved from values to keys (keys decide the softmax, see README).
    _s("K6V3", key_bits=6, value_bits=3),
    _s("K5V3", key_bits=5, value_bits=3),
    _s("K6V2", key_bits=6, value_bits=2),
    _s("K5V2", key_bits=5, value_bits=2),
    _s("K4V4 f16 norms", "norms", key_bits=4, value_bits=4, norm_dtype="float16"),
    _s("K3V3 f16 norms", "norms", key_bits=3, value_bits=3, norm_dtype="float16"),
    _s("K4V2 f16 norms", "norms", key_bits=4, value_bits=2, norm_dtype="float16"),
    _s("K4V4 norm correction", "norms", key_bits=4, value_bits=4, key_norm_correction=True,
       value_norm_correction=True),
    _s("K3V3 norm correction", "norms", key_bits=3, value_bits=3, key_norm_correction=True,
       value_norm_correction=True),
    # QJL: prod keys spend one of their bits on the residual's sign sketch (paper Alg. 2).
    _s("K4V4 prod keys", "qjl", key_bits=4, value_bits=4, key_mode="prod"),
    _s("K3V3 prod keys", "qjl", key_bits=3, value_bits=3, key_mode="prod"),
    _s("K2V2 prod keys", "qjl", key_bits=2, value_bits=2, key_mode="prod"),
    _s("K4V4 window 64", "window", key_bits=4, value_bits=4, residual_window=64),
    _s("K4V4 window 128", "window", key_bits=4, value_bits=4, residual_window=128),
    _s("K3V3 window 128", "window", key_bits=3, value_bits=3, residual_window=128),
    _s("K4V4 boundary 1+1 at K8V8", "boundary", boundary=1, key_bits=4, value_bits=4),
    # What key centring and prefill protection each contribute (the first release had neither).
    _s("K4V4 plain", "keys", key_bits=4, value_bits=4, center_keys=False, protect_keys=False),
    _s("K4V4 centring only", "keys", key_bits=4, value_bits=4, protect_keys=False),
    _s("K4V4 protection only", "keys", key_bits=4, value_bits=4, center_keys=False),
    # Protection without the one-bit refinement: only broken layers get more bits (the default
    # before refine_bound existed).
    _s("K4V4 no refinement", "keys", key_bits=4, value_bits=4, refine_bound=16.0),
    _s("K3V3 plain", "keys", key_bits=3, value_bits=3, center_keys=False, protect_keys=False),
    _s("K8V4 plain", "keys", key_bits=8, value_bits=4, center_keys=False, protect_keys=False),
    _s("K3V3 boundary 1+1 at K8V8", "boundary", boundary=1, key_bits=3, value_bits=3),
    # Int8 scores (query and centroids rounded to int8, exact integer sums): their cost in quality.
    # path="codes": every query is scored on the codes, as a decode step is (the harness feeds
    # 64-token chunks, which would otherwise run on float32 tiles).
    _s("K4V4 int8 scores", "scores", key_bits=4, value_bits=4, scores="int8", path="codes"),
    _s("K3V3 int8 scores", "scores", key_bits=3, value_bits=3, scores="int8", path="codes"),
    _s("K2V2 int8 scores", "scores", key_bits=2, value_bits=2, scores="int8", path="codes"),
    # 5-8-bit keys: the query and centroids rounded to int16 (int16_top), exact integer sums.
    _s("K8V4 int8 scores", "scores", key_bits=8, value_bits=4, scores="int8", path="codes"),
    _s("K8V4 int8 scores and values", "scores", key_bits=8, value_bits=4, scores="int8", values="int8",
       path="codes"),
    # Int8 values (weights rounded to bytes per 32 tokens, centroids to int8, exact integer sums).
    _s("K4V4 int8 values", "scores", key_bits=4, value_bits=4, values="int8", path="codes"),
    _s("K4V4 int8 scores and values", "scores", key_bits=4, value_bits=4, scores="int8", values="int8",
       path="codes"),
    _s("K3V3 int8 values", "scores", key_bits=3, value_bits=3, values="int8", path="codes"),
    _s("K3V3 int8 scores and values", "scores", key_bits=3, value_bits=3, scores="int8", values="int8",
       path="codes"),
]

#: A short list for quick runs and tests.
QUICK_SETTINGS = ["K8V8", "K8V4", "K4V4", "K3V3", "K3V3 prod keys"]
#: Presets and the key levers: the rows README's "Keys that never break a model" table shows.
KEY_SETTINGS = ["K8V4", "K8V4 plain", "K4V4", "K4V4 plain", "K4V4 centring only",
                "K4V4 protection only", "K4V4 no refinement", "K4V3", "K3V3", "K3V3 plain"]


def by_label(labels: Optional[List[str]]) -> List[Setting]:
    """The settings with these labels (all of them for None); ValueError naming unknown ones."""
    if labels is None:
        return list(SETTINGS)
    known = {s.label: s for s in SETTINGS}
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {list(known)}")
    return [known[label] for label in labels]

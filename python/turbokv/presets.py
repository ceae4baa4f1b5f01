"""Named cache settings, with the names users know from vLLM's TurboQuant presets.

Every preset keeps key centring and prefill key protection on: a preset's key bits are a floor,
and a layer whose prefill attention needs more gets more (one bit at a time below 8; ``summary()``
reports the stored bits; nothing is added where no layer needs it). Quality figures: README,
"Keys that never break a model", measured by ``bench/quality.py --key-rows``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = ["PRESETS", "DEFAULT_PRESET", "resolve"]

PRESETS: Dict[str, Dict[str, Any]] = {
    # 8-bit keys (they decide the softmax), 4-bit values: near-lossless, 3.2x smaller than float16
    # at head_dim 128.
    "k8v4": {"key_bits": 8, "value_bits": 4},
    # 4-bit keys and values: 3.6x smaller than float16 at head_dim 128.
    "4bit": {"key_bits": 4, "value_bits": 4},
    "k4v3": {"key_bits": 4, "value_bits": 3},
    "3bit": {"key_bits": 3, "value_bits": 3},
    # Keys and values as float16: no compression (for comparisons).
    "float16": {"key_bits": 0, "value_bits": 0},
}

#: What ``TurboQuantCache()`` and ``make_cache()`` use when no bits are given.
DEFAULT_PRESET = "k8v4"


def resolve(preset: Optional[str], settings: Dict[str, Any]) -> Dict[str, Any]:
    """The preset's settings updated with explicit ``settings`` (explicit wins). ``preset=None``
    applies DEFAULT_PRESET only where ``settings`` gives neither key_bits nor value_bits."""
    if preset is None:
        if "key_bits" in settings or "value_bits" in settings:
            return dict(settings)
        preset = DEFAULT_PRESET
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    return {**PRESETS[preset], **settings}

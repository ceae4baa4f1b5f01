"""One cache per layer, with per-layer precision policies."""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Sequence

from . import presets
from ._validation import check_int
from .cache import KVCache

__all__ = ["make_cache", "boundary_layer_settings", "summarize", "summary_text"]


def boundary_layer_settings(num_layers: int, protect_boundary_layers: int,
                            boundary_settings: Optional[Dict[str, Any]] = None
                            ) -> List[Optional[Dict[str, Any]]]:
    """Per-layer overrides that give the first N and last N layers ``boundary_settings``
    (default: 8-bit keys and values) and leave the others (None) to the common settings.
    Peers found the boundary layers the most sensitive to KV quantisation (DESIGN.md §2).

    Example:
        >>> boundary_layer_settings(4, 1)
        [{'key_bits': 8, 'value_bits': 8}, None, None, {'key_bits': 8, 'value_bits': 8}]
    """
    if protect_boundary_layers < 0:
        raise ValueError("protect_boundary_layers must be >= 0")
    boundary = {"key_bits": 8, "value_bits": 8} if boundary_settings is None else boundary_settings
    return [dict(boundary) if i < protect_boundary_layers or i >= num_layers - protect_boundary_layers
            else None for i in range(num_layers)]


def check_setting_names(owner: str, settings: Optional[Dict[str, Any]]) -> None:
    """Raises TypeError naming ``owner`` and the settings it takes where ``settings`` holds a name
    that :class:`KVCache` does not take (else the error would name ``KVCache.__init__``)."""
    known = [name for name in inspect.signature(KVCache.__init__).parameters
             if name not in ("self", "head_dim", "num_kv_heads", "layer_index")]
    unknown = sorted(set(settings or ()) - set(known))
    if unknown:
        raise TypeError(f"{owner} got unknown setting{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))}; the settings are {', '.join(known)}")


def settings_for_layer(index: int, settings: Dict[str, Any],
                       layer_settings: Optional[Sequence[Optional[Dict[str, Any]]]]) -> Dict[str, Any]:
    """``settings`` updated with ``layer_settings[index]`` (when given and not None)."""
    kwargs = dict(settings)
    if layer_settings is not None and index < len(layer_settings) and layer_settings[index]:
        kwargs.update(layer_settings[index])
    return kwargs


def make_cache(num_layers: int, head_dim: int, num_kv_heads: int, *,
               preset: Optional[str] = None,
               protect_boundary_layers: int = 0,
               boundary_settings: Optional[Dict[str, Any]] = None,
               layer_settings: Optional[Sequence[Optional[Dict[str, Any]]]] = None,
               **settings: Any) -> List[KVCache]:
    """Builds ``num_layers`` :class:`KVCache` objects with distinct rotation seeds.

    Args:
        num_layers, head_dim, num_kv_heads: the model's shape.
        preset: ``"k8v4"``, ``"4bit"``, ``"k4v3"``, ``"3bit"`` or ``"float16"``
            (:mod:`turbokv.presets`); explicit ``settings`` override it. Without a preset and
            without key_bits/value_bits, the default preset ("k8v4") applies.
        protect_boundary_layers: the first N and last N layers use ``boundary_settings``
            (default: 8-bit keys and values) instead of ``settings``.
        boundary_settings: KVCache keyword arguments for the protected layers.
        layer_settings: an explicit list, one dict (or None) per layer, applied last.
        **settings: KVCache keyword arguments for every layer (key_bits, value_bits, ...).

    Example:
        >>> caches = make_cache(32, 128, 8, preset="4bit")
        >>> caches = make_cache(32, 128, 8, key_bits=4, value_bits=3, protect_boundary_layers=2)
    """
    check_int("num_layers", num_layers, 0, 1 << 20)
    settings = presets.resolve(preset, settings)
    check_setting_names("make_cache", settings)
    check_setting_names("make_cache's boundary_settings", boundary_settings)
    if layer_settings is not None and len(layer_settings) != num_layers:
        raise ValueError(f"layer_settings has {len(layer_settings)} entries for {num_layers} layers")
    for i, entry in enumerate(layer_settings or ()):
        check_setting_names(f"make_cache's layer_settings[{i}]", entry)
    boundary = boundary_layer_settings(num_layers, protect_boundary_layers, boundary_settings)
    caches = []
    for i in range(num_layers):
        kwargs = settings_for_layer(i, settings_for_layer(i, settings, boundary), layer_settings)
        kwargs["layer_index"] = i
        caches.append(KVCache(head_dim, num_kv_heads, **kwargs))
    return caches


def summarize(caches: Sequence[Optional[KVCache]]) -> Dict[str, Any]:
    """What a list of layer caches stores: ``{"layers": [KVCache.summary() per layer],
    "bits_per_coordinate": stored bits per cached coordinate over all layers (codes, norms,
    float16 tokens; keys and values), "protected_layers": layers whose keys prefill protection
    raised, "centred_layers": layers with centred keys}``. None entries (layers not reached yet)
    are skipped."""
    for c in caches:
        if c is not None and not isinstance(c, KVCache):
            raise TypeError(f"summarize takes KVCache objects (or None), got {type(c).__name__}")
    layers = [c.summary() for c in caches if c is not None]
    used = sum(c.used_nbytes for c in caches if c is not None)
    coords = sum(2 * c.batch * c.num_kv_heads * c.offset * c.head_dim for c in caches if c is not None)
    return {"layers": layers, "bits_per_coordinate": 8.0 * used / coords if coords else None,
            "protected_layers": [s["layer"] for s in layers if s["stored_key_bits"] != s["key_bits"]],
            "centred_layers": [s["layer"] for s in layers if s["centred"]]}


def summary_text(summary: "Dict[str, Any] | Sequence[Optional[KVCache]]") -> str:
    """A short human-readable table of :func:`summarize`'s result (or of the caches themselves)."""
    if not isinstance(summary, dict):
        summary = summarize(summary)
    lines = ["layer  key bits (stored)  value bits  centred  probe excess  bits/coord"]
    for s in summary["layers"]:
        tried = (s["protection"] or {}).get("tried", [])
        excess = " -> ".join(f"{t['excess']:.3g}" for t in tried) or "not measured"
        bpc = "-" if s["bits_per_coordinate"] is None else f"{s['bits_per_coordinate']:.2f}"
        stored = "f16" if s["stored_key_bits"] == 0 else s["stored_key_bits"]
        lines.append(f"{s['layer']:5d}  {s['key_bits']:>8} ({stored:>3})  {s['value_bits']:>10}  "
                     f"{'yes' if s['centred'] else 'no':>7}  {excess:>12}  {bpc:>10}")
    total = summary["bits_per_coordinate"]
    lines.append(f"stored bits per coordinate: {'-' if total is None else f'{total:.3f}'}; "
                 f"protected layers: {summary['protected_layers'] or 'none'}")
    return "\n".join(lines)

"""One cache per layer, with per-layer precision policies."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from .cache import KVCache

__all__ = ["make_cache", "boundary_layer_settings"]


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


def settings_for_layer(index: int, settings: Dict[str, Any],
                       layer_settings: Optional[Sequence[Optional[Dict[str, Any]]]]) -> Dict[str, Any]:
    """``settings`` updated with ``layer_settings[index]`` (when given and not None)."""
    kwargs = dict(settings)
    if layer_settings is not None and index < len(layer_settings) and layer_settings[index]:
        kwargs.update(layer_settings[index])
    return kwargs


def make_cache(num_layers: int, head_dim: int, num_kv_heads: int, *,
               protect_boundary_layers: int = 0,
               boundary_settings: Optional[Dict[str, Any]] = None,
               layer_settings: Optional[Sequence[Optional[Dict[str, Any]]]] = None,
               **settings: Any) -> List[KVCache]:
    """Builds ``num_layers`` :class:`KVCache` objects with distinct rotation seeds.

    Args:
        num_layers, head_dim, num_kv_heads: the model's shape.
        protect_boundary_layers: the first N and last N layers use ``boundary_settings``
            (default: 8-bit keys and values) instead of ``settings``.
        boundary_settings: KVCache keyword arguments for the protected layers.
        layer_settings: an explicit list, one dict (or None) per layer, applied last.
        **settings: KVCache keyword arguments for every layer (key_bits, value_bits, ...).

    Example:
        >>> caches = make_cache(32, 128, 8, key_bits=4, value_bits=3, protect_boundary_layers=2)
    """
    if layer_settings is not None and len(layer_settings) != num_layers:
        raise ValueError(f"layer_settings has {len(layer_settings)} entries for {num_layers} layers")
    boundary = boundary_layer_settings(num_layers, protect_boundary_layers, boundary_settings)
    caches = []
    for i in range(num_layers):
        kwargs = settings_for_layer(i, settings_for_layer(i, settings, boundary), layer_settings)
        kwargs["layer_index"] = i
        caches.append(KVCache(head_dim, num_kv_heads, **kwargs))
    return caches

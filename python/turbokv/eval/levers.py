"""Key-lever experiments through the transformers cache: within :func:`lever_caches`, a setting's
``lever`` keyword chooses each layer's cache class, so one evaluation run (one float32 baseline)
holds plain and lever rows side by side."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from .key_calibration import CalibratedKVCache
from .outlier_split import OutlierSplitKVCache

__all__ = ["LEVERS", "lever_caches"]

#: ``lever`` values and the cache class each one selects.
LEVERS = {"calibration": CalibratedKVCache, "outlier split": OutlierSplitKVCache}


@contextlib.contextmanager
def lever_caches() -> Iterator[None]:
    """Within the block, ``TurboQuantCache(lever=..., **settings)`` builds its layers from
    ``LEVERS[lever]`` (other keywords, e.g. ``outlier_bits``, go to that class); without
    ``lever``, plain :class:`turbokv.KVCache` layers."""
    from .. import hf

    plain = hf.KVCache

    def make(*args: Any, lever: Any = None, **settings: Any) -> Any:
        if lever is not None and lever not in LEVERS:
            raise ValueError(f"lever must be one of {sorted(LEVERS)}, got {lever!r}")
        return (LEVERS[lever] if lever else plain)(*args, **settings)

    hf.KVCache = make
    try:
        yield
    finally:
        hf.KVCache = plain

"""Saving and loading a list of layer caches: a versioned, checksummed single file.

Layout (all integers little-endian):

    8 bytes   magic b"TURBOKV\\0"
    4 bytes   format version (uint32)
    8 bytes   header length H (uint64)
    H bytes   header: UTF-8 JSON {"layers": [{"meta": meta_state, "arrays": [[name, dtype,
              shape, offset, nbytes], ...]}, ...]}
    ...       array bytes, at the offsets given (relative to the end of the header)
    32 bytes  SHA-256 of everything before it

Loading checks size, magic, version and checksum before it parses anything, so a truncated,
corrupted or foreign file raises ValueError and never builds a half-restored cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cache import KVCache

__all__ = ["save_cache", "load_cache", "load_cache_and_extra", "copy_cache", "FORMAT_VERSION"]

MAGIC = b"TURBOKV\0"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sIQ")
_ALLOWED_DTYPES = {"uint8", "float16", "float32"}


def save_cache(path: "os.PathLike[str] | str", caches: Sequence[KVCache],
               extra: Optional[Dict[str, Any]] = None) -> None:
    """Writes ``caches`` (one KVCache per layer) to ``path`` (atomically: a temporary file is
    renamed into place, so an interrupted save never leaves a broken file behind).

    Every setting (bits, modes, window, seeds, norm storage, the key bits prefill protection
    chose, the key centring offsets) is saved with the codes, so :func:`load_cache` rebuilds
    caches that continue exactly where these stopped. ``extra``: JSON-serialisable data stored in
    the header (``TurboQuantCache.save`` keeps its settings there).

    Example:
        >>> caches = turbokv.make_cache(2, 64, 4)
        >>> for c in caches: c.update(k, v)          # k, v: (1, 4, tokens, 64)
        >>> turbokv.save_cache("prompt.tkv", caches)
        >>> restored = turbokv.load_cache("prompt.tkv")   # list of 2 KVCache
    """
    layers, blobs, offset = [], [], 0
    for cache in caches:
        if not isinstance(cache, KVCache):
            raise TypeError(f"save_cache takes KVCache objects, got {type(cache).__name__}")
        meta, state = cache.snapshot()
        arrays = []
        for name, a in state.items():
            a = np.ascontiguousarray(a)
            arrays.append([name, a.dtype.name, list(a.shape), offset, a.nbytes])
            blobs.append(a.tobytes())
            offset += a.nbytes
        layers.append({"meta": meta, "arrays": arrays})
    header = json.dumps({"layers": layers, "extra": extra or {}}).encode()
    digest = hashlib.sha256()
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        for chunk in [_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)), header, *blobs]:
            digest.update(chunk)
            f.write(chunk)
        f.write(digest.digest())
    os.replace(tmp, path)


def load_cache(path: "os.PathLike[str] | str") -> List[KVCache]:
    """Reads caches written by :func:`save_cache`; returns a list of :class:`KVCache`.

    Raises ValueError for a file that is not a turbokv cache, is truncated or corrupted (SHA-256
    mismatch), or comes from an unsupported format version; nothing is half-restored.
    """
    return load_cache_and_extra(path)[0]


def load_cache_and_extra(path: "os.PathLike[str] | str") -> Tuple[List[KVCache], Dict[str, Any]]:
    """:func:`load_cache`, and the ``extra`` dict that was saved with the caches."""
    with open(path, "rb") as f:
        data = f.read()
    name = os.fspath(path)
    if len(data) < _PREFIX.size + 32:
        raise ValueError(f"{name}: too short to be a turbokv cache file ({len(data)} bytes)")
    magic, version, header_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"{name}: not a turbokv cache file (bad magic)")
    if version != FORMAT_VERSION:
        raise ValueError(f"{name}: format version {version}; this turbokv reads version {FORMAT_VERSION}")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise ValueError(f"{name}: checksum mismatch: the file is truncated or corrupted")
    body_start = _PREFIX.size + header_len
    if body_start > len(data) - 32:
        raise ValueError(f"{name}: header length exceeds the file")
    try:
        header = json.loads(data[_PREFIX.size:body_start].decode())
        layers = header["layers"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{name}: unreadable header ({e})") from None
    body = memoryview(data)[body_start:-32]
    caches = []
    for i, layer in enumerate(layers):
        state = {}
        for entry in layer["arrays"]:
            array_name, dtype, shape, offset, nbytes = entry
            if dtype not in _ALLOWED_DTYPES or offset < 0 or offset + nbytes > len(body):
                raise ValueError(f"{name}: layer {i} array {array_name} is out of bounds or of dtype {dtype}")
            count = int(np.prod(shape, dtype=np.int64))
            if count * np.dtype(dtype).itemsize != nbytes:
                raise ValueError(f"{name}: layer {i} array {array_name} has inconsistent size")
            state[array_name] = np.frombuffer(body, dtype=dtype, count=count, offset=offset).reshape(shape)
        try:
            caches.append(KVCache.from_state(state, layer["meta"]))
        except (TypeError, KeyError) as e:
            raise ValueError(f"{name}: layer {i} has invalid settings ({e})") from None
    extra = header.get("extra", {})
    if not isinstance(extra, dict):
        raise ValueError(f"{name}: unreadable header (extra is not a dict)")
    return caches, extra


def copy_cache(cache: KVCache) -> KVCache:
    """An independent copy of ``cache`` (codes copied, never decoded), read under its lock. The
    snapshot's arrays are already fresh copies and from_state copies them into the new cache."""
    meta, state = cache.snapshot()
    return KVCache.from_state(state, meta)

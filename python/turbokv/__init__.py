"""turbokv: TurboQuant KV-cache compression, a C++17 core with SIMD kernels and numpy bindings.

Main entry points:

- :class:`Codec`: encode vectors to 1..8 bits per coordinate, decode them, and score queries
  directly on the codes.
- :class:`Encoded`: the packed arrays a codec produces.
- :class:`KVCache`: one layer's compressed KV cache with fused attention on the codes;
  :func:`make_cache` builds one per layer, :func:`save_cache` / :func:`load_cache` persist them.
- :class:`DenseKVCache`: the uncompressed numpy baseline with the same API.
- :mod:`turbokv.reference`: the same codec in pure numpy, used as the test oracle.
- :func:`share_openmp_threads`: run turbokv's parallel work on torch's OpenMP threads (in a torch
  loop; ``import turbokv.hf`` does it).
"""

from . import reference
from ._core import attention_threads, default_simd, detect_simd, int8_values_fast, kernel_routes, supported_simd
from .cache import KVCache
from .codec import Codec
from .dense_cache import DenseKVCache
from .encoded import Encoded
from .layers import boundary_layer_settings, make_cache, summarize, summary_text
from .presets import DEFAULT_PRESET, PRESETS
from .persist import load_cache, save_cache
from .threads import share_openmp_threads, thread_backend

__version__ = "0.1.0"
__all__ = [
    "Codec", "Encoded", "KVCache", "DenseKVCache", "make_cache", "boundary_layer_settings", "save_cache", "load_cache",
    "reference", "detect_simd", "default_simd", "supported_simd", "kernel_routes", "attention_threads", "int8_values_fast", "__version__", "summarize", "summary_text",
    "PRESETS", "DEFAULT_PRESET", "share_openmp_threads", "thread_backend",
]

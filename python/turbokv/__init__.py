"""turbokv: TurboQuant KV-cache compression, a C++17 core with SIMD kernels and numpy bindings.

Main entry points:

- :class:`Codec`: encode vectors to 1..8 bits per coordinate, decode them, and score queries
  directly on the codes.
- :class:`Encoded`: the packed arrays a codec produces.
- :mod:`turbokv.reference`: the same codec in pure numpy, used as the test oracle.
"""

from . import reference
from ._core import default_simd, detect_simd
from .codec import Codec
from .encoded import Encoded

__version__ = "0.1.0"
__all__ = ["Codec", "Encoded", "reference", "detect_simd", "default_simd", "__version__"]

"""The container for encoded vectors, shared by the C++ codec and the numpy reference."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

__all__ = ["Encoded"]


def _frozen(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


class Encoded:
    """Packed TurboQuant codes of an array of vectors.

    For input of shape ``(*shape, head_dim)`` the arrays are:

    - ``codes``: uint8, ``(*shape, code_bytes)``: packed b-bit indices (layout in
      ``cpp/include/turbokv/packing.hpp``: a little-endian bit stream, index i at bits [i*b, (i+1)*b)).
    - ``norms``: float32 or float16, ``shape``: the vector norms (divided by the norm of the
      normalised reconstruction when the codec uses norm correction).
    - ``qjl``: uint8, ``(*shape, qjl_bytes)``, prod mode only: the 1-bit QJL sketch of the residual.
    - ``residual_norms``: same dtype as ``norms``, prod mode only: the residual norm of the unit vector.

    The arrays are read-only views. An ``Encoded`` can be rebuilt from them, e.g. after saving:
    ``Encoded(codes, norms, qjl, residual_norms)``; the codec checks they fit its settings when
    they are decoded or scored.

    Example:
        >>> import numpy as np, turbokv
        >>> codec = turbokv.Codec(head_dim=64, bits=4)
        >>> enc = codec.encode(np.random.randn(10, 64).astype(np.float32))
        >>> enc.shape, enc.codes.shape, enc.nbytes
        ((10,), (10, 32), 360)
    """

    __slots__ = ("_codes", "_norms", "_qjl", "_residual_norms")

    def __init__(
        self,
        codes: np.ndarray,
        norms: np.ndarray,
        qjl: Optional[np.ndarray] = None,
        residual_norms: Optional[np.ndarray] = None,
    ) -> None:
        codes = np.asarray(codes)
        norms = np.asarray(norms)
        if codes.dtype != np.uint8:
            raise TypeError(f"codes must be uint8, got {codes.dtype}")
        if norms.dtype not in (np.float32, np.float16):
            raise TypeError(f"norms must be float32 or float16, got {norms.dtype}")
        if codes.ndim < 1 or codes.shape[:-1] != norms.shape:
            raise ValueError(
                f"codes shape {codes.shape} must be norms shape {norms.shape} plus one byte axis"
            )
        if (qjl is None) != (residual_norms is None):
            raise ValueError("qjl and residual_norms come together (prod mode) or not at all")
        if qjl is not None:
            qjl = np.asarray(qjl)
            residual_norms = np.asarray(residual_norms)
            if qjl.dtype != np.uint8 or qjl.ndim < 1 or qjl.shape[:-1] != norms.shape:
                raise ValueError(f"qjl must be uint8 of shape {norms.shape} + (qjl_bytes,)")
            if residual_norms.dtype != norms.dtype or residual_norms.shape != norms.shape:
                raise ValueError(
                    f"residual_norms must be {norms.dtype} of shape {norms.shape}, got "
                    f"{residual_norms.dtype} {residual_norms.shape}"
                )
            qjl, residual_norms = _frozen(qjl), _frozen(residual_norms)
        self._codes = _frozen(codes)
        self._norms = _frozen(norms)
        self._qjl = qjl
        self._residual_norms = residual_norms

    @property
    def codes(self) -> np.ndarray:
        return self._codes

    @property
    def norms(self) -> np.ndarray:
        return self._norms

    @property
    def qjl(self) -> Optional[np.ndarray]:
        return self._qjl

    @property
    def residual_norms(self) -> Optional[np.ndarray]:
        return self._residual_norms

    @property
    def mode(self) -> str:
        """``"prod"`` when a QJL sketch is present, else ``"mse"``."""
        return "mse" if self._qjl is None else "prod"

    @property
    def shape(self) -> Tuple[int, ...]:
        """Shape of the encoded array without its head_dim axis."""
        return self._norms.shape

    @property
    def size(self) -> int:
        """Number of encoded vectors."""
        return int(self._norms.size)

    @property
    def nbytes(self) -> int:
        """Bytes held by the packed arrays."""
        total = self._codes.nbytes + self._norms.nbytes
        if self._qjl is not None:
            total += self._qjl.nbytes + self._residual_norms.nbytes
        return int(total)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d Encoded")
        return self.shape[0]

    def __getitem__(self, key) -> "Encoded":
        """Index or slice the leading axes, as on the original array without its last axis."""
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis or k is None for k in key) or len(key) > len(self.shape):
            raise IndexError("index the leading axes only (no Ellipsis or newaxis)")
        if self._qjl is None:
            return Encoded(self._codes[key], np.asarray(self._norms[key]))
        return Encoded(
            self._codes[key], np.asarray(self._norms[key]), self._qjl[key],
            np.asarray(self._residual_norms[key]),
        )

    def reshape(self, *shape) -> "Encoded":
        """Reshape the leading axes (the byte axes stay last)."""
        if len(shape) == 1 and isinstance(shape[0], tuple):
            shape = shape[0]
        norms = self._norms.reshape(shape)
        codes = self._codes.reshape(norms.shape + self._codes.shape[-1:])
        if self._qjl is None:
            return Encoded(codes, norms)
        return Encoded(
            codes, norms, self._qjl.reshape(norms.shape + self._qjl.shape[-1:]),
            self._residual_norms.reshape(norms.shape),
        )

    def __repr__(self) -> str:
        return (
            f"Encoded(shape={self.shape}, mode={self.mode!r}, code_bytes={self._codes.shape[-1]}, "
            f"norm_dtype={self._norms.dtype}, nbytes={self.nbytes})"
        )

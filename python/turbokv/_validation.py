"""Argument checks shared by the C++-backed codec and the numpy reference, so both fail alike."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

MIN_HEAD_DIM, MAX_HEAD_DIM = 8, 1024
MODES = ("mse", "prod")
NORM_DTYPES = ("float32", "float16")


def check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {value}")
    return int(value)


def check_codec_settings(head_dim, bits, mode, seed, norm_dtype, norm_correction):
    """Validates Codec arguments; returns them normalised."""
    head_dim = check_int("head_dim", head_dim, MIN_HEAD_DIM, MAX_HEAD_DIM)
    bits = check_int("bits", bits, 1, 8)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use 'mse' (b-bit codebook) or 'prod' "
                         "((b-1)-bit codebook + 1-bit QJL sketch, unbiased inner products)")
    seed = check_int("seed", seed, 0, 2**64 - 1)
    norm_dtype = np.dtype(norm_dtype).name if norm_dtype in (np.float32, np.float16) else norm_dtype
    if norm_dtype not in NORM_DTYPES:
        raise ValueError(f"norm_dtype must be 'float32' or 'float16', got {norm_dtype!r}")
    if not isinstance(norm_correction, (bool, np.bool_)):
        raise TypeError(f"norm_correction must be a bool, got {type(norm_correction).__name__}")
    if norm_correction and mode == "prod":
        raise ValueError("norm_correction applies to mode='mse' only: in prod mode the QJL term "
                         "already corrects inner products, and rescaling would bias them")
    return head_dim, bits, mode, seed, norm_dtype, bool(norm_correction)


# What the entry points take. as_float_array copies only float64 arrays and bfloat16 tensors; the
# Codec reads float16 rows in place, while KVCache makes one float32 copy of anything but
# C-contiguous float32.
ACCEPTED_INPUTS = ("numpy float16/float32/float64 arrays, or CPU torch float16/bfloat16/float32 "
                   "tensors")


def as_float_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a float16 or float32 numpy array, without copying where it can.

    numpy float16/float32 and CPU torch float16/float32 tensors are viewed, not copied; numpy
    float64 and torch bfloat16 (which numpy lacks) are copied to float32. A tensor on another
    device raises NotImplementedError (turbokv computes on the CPU); any other dtype raises
    TypeError naming what to pass.
    """
    if not isinstance(x, np.ndarray) and hasattr(x, "detach") and hasattr(x, "device"):  # torch
        if x.device.type != "cpu":
            raise NotImplementedError(
                f"{name} is a tensor on {x.device}: turbokv computes on the CPU and has no GPU "
                f"path yet; move it with {name}.cpu() (or run the model on the CPU)")
        x = x.detach()
        dtype = str(x.dtype)
        if dtype == "torch.bfloat16":
            x = x.float()
        elif dtype not in ("torch.float32", "torch.float16"):
            raise TypeError(f"{name} is a {dtype} tensor; pass {ACCEPTED_INPUTS}")
        x = x.numpy()
    elif not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype == np.float64:
        with np.errstate(over="ignore"):  # beyond float32 becomes Inf, which the callers refuse
            x = x.astype(np.float32)
    elif x.dtype not in (np.float32, np.float16):
        raise TypeError(f"{name} has dtype {x.dtype}; pass {ACCEPTED_INPUTS} "
                        f"(for example {name}.astype(np.float32))")
    return x


def as_vectors(x: Any, head_dim: int, name: str = "x") -> np.ndarray:
    """Returns x as a float32/float16 array of shape (..., head_dim), as :func:`as_float_array`."""
    x = as_float_array(x, name)
    if x.ndim == 0 or x.shape[-1] != head_dim:
        raise ValueError(f"{name} has shape {x.shape}; its last axis must be head_dim={head_dim}")
    return x


def as_rows(x: np.ndarray) -> np.ndarray:
    """(..., d) -> (n, d) with contiguous rows, copying only when numpy cannot make a view."""
    rows = x.reshape(-1, x.shape[-1])
    if rows.strides[1] != rows.itemsize or rows.strides[0] % rows.itemsize:
        rows = np.ascontiguousarray(rows)
    return rows


def check_encoded(enc: Any, head_dim: int, mode: str, norm_dtype: str, code_bytes: int,
                  qjl_bytes: int) -> None:
    """Raises if an Encoded was not made by a codec with these settings."""
    from .encoded import Encoded

    if not isinstance(enc, Encoded):
        raise TypeError(f"expected an Encoded (from Codec.encode), got {type(enc).__name__}")
    if enc.mode != mode:
        raise ValueError(f"these codes are {enc.mode!r} mode but the codec is {mode!r}")
    if enc.codes.shape[-1] != code_bytes:
        raise ValueError(f"codes have {enc.codes.shape[-1]} bytes per vector, this codec "
                         f"(head_dim={head_dim}) expects {code_bytes}: wrong head_dim or bits?")
    if enc.norms.dtype != np.dtype(norm_dtype):
        raise ValueError(f"norms are {enc.norms.dtype}, this codec stores {norm_dtype}")
    if mode == "prod" and enc.qjl.shape[-1] != qjl_bytes:
        raise ValueError(f"qjl has {enc.qjl.shape[-1]} bytes per vector, expected {qjl_bytes}")

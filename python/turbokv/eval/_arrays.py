"""The one conversion the key-lever experiments share."""

from typing import Any

import numpy as np


def as_float32(x: Any) -> np.ndarray:
    """A numpy float32 view of a torch tensor (any float dtype, CPU) or array-like."""
    return np.asarray(x.float().numpy() if hasattr(x, "numpy") else x, dtype=np.float32)

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

"""The paper's distortion figures (DESIGN.md §1), measured on 20,000 random unit vectors, d = 128."""

import pytest

import turbokv
from turbokv.eval.distortion import LLOYD_MAX_MSE, PAPER_PROD, measure_mse, measure_prod


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_mse_distortion_within_3_percent_of_paper(bits):
    mse = measure_mse(turbokv.Codec, bits, head_dim=128, n=20000, seed=0)
    assert abs(mse / LLOYD_MAX_MSE[bits] - 1) < 0.03, mse


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_prod_is_unbiased_with_paper_variance(bits):
    stats = measure_prod(turbokv.Codec, bits, head_dim=128, n=20000, seed=0)
    assert abs(stats["bias"]) < 3 * stats["stderr"], stats
    assert abs(stats["d_mse"] / PAPER_PROD[bits] - 1) < 0.10, stats


def test_reference_reproduces_the_paper_too():
    assert abs(measure_mse(turbokv.reference.Codec, 3, 128, 4000, 1) / LLOYD_MAX_MSE[3] - 1) < 0.05
    stats = measure_prod(turbokv.reference.Codec, 3, 128, 4000, 1)
    assert abs(stats["bias"]) < 3 * stats["stderr"]

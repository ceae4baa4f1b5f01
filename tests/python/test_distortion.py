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


def test_codec_table_cli_runs_and_refuses_bad_arguments(capsys):
    import json

    from turbokv.__main__ import main

    assert main(["codec-table", "--vectors", "300", "--head-dim", "64", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["mode"], r["bits"]) for r in rows] == [(m, b) for m in ("mse", "prod") for b in (1, 2, 3, 4)]
    for args, message in ((["--vectors", "1"], "vectors must be an integer >= 2, got 1"),
                          (["--seed", "-1"], "seed must be an integer >= 0, got -1"),
                          (["--head-dim", "5"], "head_dim must be in 8..1024, got 5")):
        assert main(["codec-table", *args]) == 2
        assert f"codec-table: {message}" in capsys.readouterr().err

"""Every notebook runs top to bottom (nbclient), in a scratch folder so figures land there."""

import pathlib
import shutil

import nbclient  # from the [test] extra, like matplotlib and ipykernel
import nbformat
import pytest
from hf_extra import uses_hf

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", [pytest.param(p, marks=[pytest.mark.hf] if uses_hf(p.read_text()) else [])
                                  for p in NOTEBOOKS], ids=lambda p: p.name)
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("TURBOKV_BENCH_RESULTS", str(path.parents[1] / "bench" / "results"))
    (tmp_path / "figures").mkdir()
    shutil.copy(path, tmp_path)
    nb = nbformat.read(tmp_path / path.name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    assert list((tmp_path / "figures").glob("*.png")), "the notebook saved no figure"

"""Every Python block in README.md runs as written."""

import pathlib
import re

import pytest
from hf_extra import uses_hf

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", [pytest.param(i, marks=[pytest.mark.hf] if uses_hf("".join(BLOCKS[: i + 1])) else [])
                                   for i in range(len(BLOCKS))])
def test_readme_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for block in BLOCKS[: index + 1]:  # later blocks may use names from earlier ones
        exec(compile(block, f"README block {index}", "exec"), namespace)

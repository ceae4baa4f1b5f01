"""Real models for the demo and the quality evaluation: the embedded llama2.c stories260K (numpy
forward), the KJV Llama trained by this project, and two pretrained models read from inside PyPI
packages (SmolLM2-135M, all-MiniLM-L6-v2). Nothing is ever downloaded."""

import contextlib
import importlib.util
import os
from pathlib import Path
from typing import Iterator, Sequence


def file_in_package(package: str, relative: str, install: str) -> Path:
    """``relative`` inside the installed ``package``; ImportError naming ``install`` if absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ImportError(f"this model ships inside the {package} package: {install}")
    file = Path(spec.origin).parent / relative
    if not file.exists():
        raise ImportError(f"{file} is missing; reinstall: {install}")
    return file


def modules_installed(names: Sequence[str]) -> bool:
    """Whether every module in ``names`` can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in names)


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 while loading from a local folder, then the caller's setting again."""
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = saved

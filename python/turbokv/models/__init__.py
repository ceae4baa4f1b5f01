"""Real models for the demo and the quality evaluation: the embedded llama2.c stories260K (numpy
forward), the KJV Llama trained by this project, and two pretrained models read from inside PyPI
packages (SmolLM2-135M, all-MiniLM-L6-v2). Nothing is ever downloaded."""

import contextlib
import os
from typing import Iterator


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

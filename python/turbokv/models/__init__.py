"""Real models for the demo and the quality evaluation: the embedded llama2.c stories260K (numpy
forward), the KJV Llama trained by this project, and two pretrained models read from inside PyPI
packages (SmolLM2-135M, all-MiniLM-L6-v2). Nothing is ever downloaded."""

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Tuple


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


def model_dir() -> Path:
    """Where models assembled or converted on first use are kept: ``$TURBOKV_MODEL_DIR``, default
    ``~/.cache/turbokv``."""
    return Path(os.environ.get("TURBOKV_MODEL_DIR", Path.home() / ".cache" / "turbokv"))


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _conversion_stamp(file: Path) -> dict:
    """What a converted copy must have been made from: this GGUF's bytes and this transformers."""
    import transformers

    return {"format": 1, "gguf": file.name, "gguf_sha256": _sha256(file),
            "transformers": transformers.__version__}


def _keeps_conversion(requested: bool) -> bool:
    """Whether a load that asks to keep a converted copy may (``TURBOKV_KEEP_CONVERTED=0``: no)."""
    return requested and os.environ.get("TURBOKV_KEEP_CONVERTED", "1") != "0"


def _cached_conversion(file: Path) -> Tuple[Optional[Path], dict]:
    """``(folder, stamp)``: the folder holding a float32 safetensors copy of ``file`` converted
    earlier by this transformers version (None if there is none, or it was made from other bytes)."""
    stamp = _conversion_stamp(file)
    folder = model_dir() / "converted" / file.stem
    try:
        if json.loads((folder / "turbokv_source.json").read_text()) == stamp:
            return folder, stamp
    except (OSError, ValueError):
        pass
    return None, stamp


def _save_conversion(model: Any, tokenizer: Any, file: Path, stamp: dict) -> None:
    """Writes the converted model into a temporary folder and renames it into place, so a
    concurrent reader sees a whole copy or none. A failure (read-only or full disk) only warns:
    the model in memory is unaffected."""
    from safetensors.torch import save_model

    final = model_dir() / "converted" / file.stem
    partial = final.with_name(f".{final.name}.partial{os.getpid()}")
    try:
        partial.mkdir(parents=True, exist_ok=True)
        config = model.config.to_dict()
        config.pop("quantization_config", None)  # the weights are stored dequantized
        (partial / "config.json").write_text(json.dumps(config, indent=1, default=str))
        save_model(model, str(partial / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(str(partial))
        (partial / "turbokv_source.json").write_text(json.dumps(stamp))
        if final.exists():  # made from other bytes or another transformers
            shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
    except OSError as error:
        if _cached_conversion(file)[0] is not None:
            return  # a concurrent load renamed its copy into place first
        warnings.warn(f"could not keep a converted copy of {file.name} in {final.parent} ({error}); "
                      "the next load converts the GGUF again", RuntimeWarning, stacklevel=3)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # a concurrent converter won the rename


def load_gguf(file: Path, attn_implementation: str, install: str,
              keep_converted: bool = False) -> Tuple[Any, Any]:
    """``(model, tokenizer)`` from a local GGUF file through transformers' reader: a float32
    causal LM in eval mode (``"turbokv"`` attention registered). ImportError naming ``install``
    if gguf or accelerate is missing.

    keep_converted: keep the dequantized model as float32 safetensors under
    ``model_dir() / "converted"`` and load that on later calls (the same weights, tokenizer and
    config, made from the same GGUF bytes by the same transformers version, which the copy
    records and each load checks). Reading the GGUF takes tens of seconds, mostly in parsing its
    vocabulary; the copy loads in about one. ``TURBOKV_KEEP_CONVERTED=0`` turns it off."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .. import hf  # noqa: F401  (registers the "turbokv" attention)

    if not modules_installed(["gguf", "accelerate"]):
        raise ImportError(f"loading {file.name} needs gguf and accelerate: {install}")
    keep_converted = _keeps_conversion(keep_converted)
    folder, stamp = _cached_conversion(file) if keep_converted else (None, {})
    with offline_hub():
        if folder is not None:
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32,
                                                         attn_implementation=attn_implementation)
        else:
            tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
            model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name,
                                                         dtype=torch.float32,
                                                         attn_implementation=attn_implementation)
            if keep_converted:
                _save_conversion(model, tokenizer, file, stamp)
    model.eval()
    return model, tokenizer

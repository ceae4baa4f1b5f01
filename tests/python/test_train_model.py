"""bench/train_model rebuilds the KJV Llama's shipped corpus files and tokenizer exactly, and its
training script runs (a few CPU steps) and writes a checkpoint the loader accepts."""

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "bench" / "train_model"
SHIPPED = ROOT / "python" / "turbokv" / "models" / "data" / "kjv_llama"


@pytest.mark.hf
def test_prepare_reproduces_the_shipped_tokenizer_and_split(tmp_path):
    out, build = tmp_path / "out", tmp_path / "build"
    subprocess.run([sys.executable, str(SCRIPTS / "prepare.py"), "--out", str(out), "--build", str(build)],
                   check=True)
    assert (out / "tokenizer.json").read_bytes() == (SHIPPED / "tokenizer.json").read_bytes()
    assert (out / "val_text.txt").read_bytes() == (SHIPPED / "val_text.txt").read_bytes()
    corpus = json.loads((build / "corpus.json").read_text())
    assert corpus == json.loads((SHIPPED / "training.json").read_text())["corpus"]

    model_dir = tmp_path / "model"
    subprocess.run([sys.executable, str(SCRIPTS / "train.py"), "--data", str(build), "--out", str(model_dir),
                    "--steps", "3", "--batch", "2", "--seq", "64", "--eval-every", "3",
                    "--val-tokens", "4096"], check=True)  # all held-out tokens take minutes on a CPU
    assert json.loads((model_dir / "config.json").read_text()) == json.loads((SHIPPED / "config.json").read_text())
    record = json.loads((model_dir / "training.json").read_text())
    assert record["parameters"] == 7344384 and len(record["curve"]) == 2
    # The loader takes the new checkpoint (same names and shapes as the shipped one).
    from safetensors.numpy import load_file

    new, shipped = load_file(str(model_dir / "model.safetensors")), load_file(str(SHIPPED / "model.safetensors"))
    assert {k: v.shape for k, v in new.items()} == {k: v.shape for k, v in shipped.items()}

"""Loading the pretrained GGUF models: the float32 copy kept after the first conversion is the
same model (weights, config, tokenizer, logits) as a fresh read of the GGUF."""

import json

import pytest
import torch

from turbokv.models import _cached_conversion, _keeps_conversion, _save_conversion, smollm2


def test_smollm2_kept_conversion_is_the_gguf_model(tmp_path, monkeypatch):
    monkeypatch.setenv("TURBOKV_MODEL_DIR", str(tmp_path))
    monkeypatch.delenv("TURBOKV_KEEP_CONVERTED", raising=False)
    gguf = smollm2.path()
    fresh, fresh_tokenizer = smollm2.load("sdpa")
    assert fresh.config._name_or_path == str(gguf.parent)  # read from the GGUF
    folder, _ = _cached_conversion(gguf)
    assert folder == tmp_path / "converted" / gguf.stem

    kept, kept_tokenizer = smollm2.load("sdpa")
    assert kept.config._name_or_path == str(folder)  # read from the kept copy
    assert not kept.training and kept.dtype == torch.float32
    ours, theirs = fresh.state_dict(), kept.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    differs = {k for k, v in fresh.config.to_dict().items() if kept.config.to_dict().get(k) != v}
    assert differs <= {"_name_or_path", "quantization_config"}, differs
    text = "The quick brown fox, <|im_start|>user\nünïcödé 12345<|im_end|>"
    assert fresh_tokenizer(text).input_ids == kept_tokenizer(text).input_ids
    assert fresh_tokenizer.chat_template == kept_tokenizer.chat_template
    ids = fresh_tokenizer("In the beginning God created", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(fresh(ids).logits, kept(ids).logits)

    # A copy made from other bytes (or another transformers version) is not used.
    stamp_file = folder / "turbokv_source.json"
    stamp = json.loads(stamp_file.read_text())
    stamp_file.write_text(json.dumps({**stamp, "gguf_sha256": "0" * 64}))
    assert _cached_conversion(gguf)[0] is None
    stamp_file.write_text("not json")
    assert _cached_conversion(gguf)[0] is None

    # Nowhere to write: a warning, and nothing raised.
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("TURBOKV_MODEL_DIR", str(blocker))
    with pytest.warns(RuntimeWarning, match="could not keep a converted copy"):
        _save_conversion(kept, kept_tokenizer, gguf, stamp)


def test_keep_converted_can_be_turned_off(monkeypatch):
    monkeypatch.delenv("TURBOKV_KEEP_CONVERTED", raising=False)
    assert _keeps_conversion(True) and not _keeps_conversion(False)
    monkeypatch.setenv("TURBOKV_KEEP_CONVERTED", "0")
    assert not _keeps_conversion(True)

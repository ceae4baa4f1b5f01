"""The numpy generation loop on the embedded llama2.c model (real trained weights, GQA, head_dim 8)."""

import numpy as np
import pytest

import turbokv
from turbokv.models import llama2c
from turbokv.eval.quality import compare_logits, teacher_forced_logits

# From ../shared/models/stories260K/README.md: greedy ids from BOS, produced by llama2.c's run.c.
RUN_C_GREEDY = [461, 461, 401, 401, 401, 461, 378, 455, 473, 456]


@pytest.fixture(scope="module")
def model():
    return llama2c.load()


@pytest.fixture(scope="module")
def baseline(model):
    ids = model.generate(model.make_dense_caches(), 100)
    forced = [llama2c.BOS] + ids[:-1]
    return ids, forced, teacher_forced_logits(model, model.make_dense_caches(), forced)


def caches(model, **kwargs):
    c = model.config
    return [turbokv.KVCache(c.head_dim, c.n_kv_heads, layer_index=i, **kwargs) for i in range(c.n_layers)]


def test_config(model):
    c = model.config
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size) == (64, 5, 8, 4, 8, 512)


def test_numpy_forward_reproduces_llama2c_greedy_ids(model, baseline):
    assert baseline[0][: len(RUN_C_GREEDY)] == RUN_C_GREEDY


def test_stepwise_decoding_equals_teacher_forced_prefill(model, baseline):
    ids, forced, logits = baseline
    cache = model.make_dense_caches()
    steps = [model.forward(np.asarray([[t]]), cache)[0, 0] for t in forced[:20]]
    np.testing.assert_allclose(np.stack(steps), logits[:20], rtol=1e-4, atol=1e-4)


def test_float16_cache_matches_float32(model, baseline):
    _, forced, logits = baseline
    q = compare_logits(logits, teacher_forced_logits(model, caches(model, key_bits=0, value_bits=0), forced))
    assert q["kl_mean"] < 1e-4 and q["top1_agreement"] >= 0.98, q


def test_quality_degrades_monotonically_with_bits(model, baseline):
    _, forced, logits = baseline
    kl = {}
    for bits in (8, 4, 3, 2):
        q = compare_logits(logits, teacher_forced_logits(model, caches(model, key_bits=bits, value_bits=bits), forced))
        kl[bits] = q["kl_mean"]
    assert kl[8] < kl[4] < kl[3] < kl[2], kl
    assert kl[8] < 0.05, kl


def test_batch_of_two_equals_two_single_runs(model):
    prompts = np.asarray([[1, 461, 401, 378], [1, 300, 200, 100]])
    batched = model.forward(prompts, caches(model, key_bits=4, value_bits=4, protect_keys=False))
    for b in range(2):
        single = model.forward(prompts[b:b + 1], caches(model, key_bits=4, value_bits=4, protect_keys=False))
        np.testing.assert_allclose(batched[b], single[0], rtol=1e-5, atol=1e-5)


def test_protection_decides_once_per_layer_for_the_whole_batch(model):
    # A layer stores one key precision for every batch row, measured on the whole batch's prefill:
    # a batched run equals single runs made at the bits the batch chose, layer by layer.
    prompts = np.asarray([[1, 461, 401, 378, 300, 200], [1, 300, 200, 100, 461, 401]])
    protected = caches(model, key_bits=3, value_bits=4)
    batched = model.forward(prompts, protected)
    chosen = [c.stored_key_bits for c in protected]
    assert any(bits != 3 for bits in chosen), chosen  # protection acted, or this proves nothing
    for b in range(2):
        fixed = [turbokv.KVCache(model.config.head_dim, model.config.n_kv_heads, layer_index=i,
                                 key_bits=bits, value_bits=4, protect_keys=False)
                 for i, bits in enumerate(chosen)]
        single = model.forward(prompts[b:b + 1], fixed)
        np.testing.assert_allclose(batched[b], single[0], rtol=1e-5, atol=1e-5)


def test_demo_runs(capsys):
    from turbokv.__main__ import main

    assert main(["demo", "--model", "stories260k", "--tokens", "12"]) == 0
    out = capsys.readouterr().out
    assert "K4V4" in out and "float32 (DenseKVCache)" in out


def test_cli_help_and_bench_json(capsys):
    import json

    from turbokv.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert all(cmd in help_text for cmd in ("demo", "bench", "codec-table", "eval"))
    assert main(["bench", "--contexts", "300", "--repeats", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {"turbokv fused K4V4", "numpy float32 dense"} <= {r["impl"] for r in rows}

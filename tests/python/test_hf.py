"""turbokv.hf: TurboQuantCache and attn_implementation="turbokv" in transformers models.

A tiny random-weight Llama (no download): random weights give near-tied logits, so these tests
compare next-token distributions (KL) and logits, not greedy tokens.
"""

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

import turbokv.hf as thf

# Bound on the mean next-token KL of an 8/8-bit cache against DynamicCache on the tiny model.
KL_BOUND_8BIT = 1e-4  # measured: 3.3e-6 for both paths


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=3,
                      num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                      max_position_embeddings=256)
    default = LlamaForCausalLM(cfg).eval()
    fused = LlamaForCausalLM(cfg).eval()
    fused.load_state_dict(default.state_dict())
    fused.set_attn_implementation("turbokv")
    return default, fused


def kl(p_logits, q_logits):
    p = torch.log_softmax(p_logits.double(), -1)
    q = torch.log_softmax(q_logits.double(), -1)
    return (p.exp() * (p - q)).sum(-1)


def stepwise_logits(model, cache, ids, steps=8):
    """Prefill ids[:, :-steps], then feed the remaining tokens one at a time."""
    out = []
    with torch.no_grad():
        prefix = ids.shape[1] - steps
        out.append(model(ids[:, :prefix], past_key_values=cache, use_cache=True).logits[:, -1])
        for t in range(prefix, ids.shape[1]):
            out.append(model(ids[:, t:t + 1], past_key_values=cache, use_cache=True).logits[:, -1])
    return torch.stack(out, 1)


@pytest.mark.parametrize("which", ["default", "fused"])
def test_8bit_cache_tracks_dynamic_cache(models, which):
    default, fused = models
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(1))
    reference = stepwise_logits(default, DynamicCache(), ids)
    model = default if which == "default" else fused
    got = stepwise_logits(model, thf.TurboQuantCache(key_bits=8, value_bits=8), ids)
    assert kl(reference, got).mean() < KL_BOUND_8BIT
    assert kl(reference, got).mean() > 0  # it is compressed


def test_fused_attention_equals_the_decoded_path(models):
    default, fused = models
    ids = torch.randint(0, 512, (2, 20), generator=torch.Generator().manual_seed(2))
    a = stepwise_logits(default, thf.TurboQuantCache(key_bits=4, value_bits=3), ids, steps=5)
    b = stepwise_logits(fused, thf.TurboQuantCache(key_bits=4, value_bits=3), ids, steps=5)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_left_padding_in_batched_generation(models):
    default, fused = models
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :4] = 0  # row 1 is left-padded
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate computes them
    with torch.no_grad():
        a = default(ids, attention_mask=mask, position_ids=positions,
                    past_key_values=thf.TurboQuantCache(key_bits=8, value_bits=8)).logits
        b = fused(ids, attention_mask=mask, position_ids=positions,
                  past_key_values=thf.TurboQuantCache(key_bits=8, value_bits=8)).logits
        unpadded = fused(ids[1:, 4:], past_key_values=thf.TurboQuantCache(key_bits=8, value_bits=8)).logits
    torch.testing.assert_close(b[:, -1], a[:, -1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b[1, 4:], unpadded[0], rtol=1e-4, atol=1e-4)


SETTINGS = [dict(key_bits=4, value_bits=4), dict(key_bits=3, value_bits=2, key_mode="prod"),
            dict(key_bits=0, value_bits=4, residual_window=4), dict(key_bits=4, value_bits=4, norm_dtype="float16")]


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
@pytest.mark.parametrize("which", ["default", "fused"])
def test_generate_end_to_end(models, settings, which):
    model = models[0] if which == "default" else models[1]
    ids = torch.randint(0, 512, (2, 10), generator=torch.Generator().manual_seed(4))
    cache = thf.TurboQuantCache(**settings)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), past_key_values=cache,
                         max_new_tokens=6, do_sample=False)
    assert out.shape == (2, 16)
    assert cache.get_seq_length() == 15 and cache.nbytes > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models(models, dtype):
    default, _ = models
    model = LlamaForCausalLM(default.config).eval()
    model.load_state_dict(default.state_dict())
    model = model.to(dtype)
    model.set_attn_implementation("turbokv")
    ids = torch.randint(0, 512, (1, 8), generator=torch.Generator().manual_seed(5))
    out = model.generate(ids, past_key_values=thf.TurboQuantCache(), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 11)


def test_crop_and_unsupported_features(models):
    default, fused = models
    ids = torch.randint(0, 512, (1, 10), generator=torch.Generator().manual_seed(6))
    cache = thf.TurboQuantCache(key_bits=4, value_bits=4)
    with torch.no_grad():
        fused(ids, past_key_values=cache)
    cache.crop(-3)
    assert cache.get_seq_length() == 7
    with pytest.raises(NotImplementedError, match="beam"):
        fused.generate(ids, past_key_values=thf.TurboQuantCache(), num_beams=2, max_new_tokens=2)
    with pytest.raises(ValueError, match="key_bits"):
        thf.TurboQuantCache(key_bits=12)

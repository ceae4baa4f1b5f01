"""turbokv.hf: TurboQuantCache and attn_implementation="turbokv" in transformers models.

A tiny random-weight Llama (no download): random weights give near-tied logits, so these tests
compare next-token distributions (KL) and logits, not greedy tokens.
"""

import copy
import pickle

import numpy as np
import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

import turbokv
import turbokv.hf as thf
from turbokv.hf import CACHE_KEYWORD

# Bound on the mean next-token KL of an 8/8-bit cache against DynamicCache on the tiny model.
KL_BOUND_8BIT = 1e-4  # measured: 3.3e-6 for both paths


TINY_LLAMA = dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=3,
                  num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                  max_position_embeddings=256)


def test_cache_keyword_is_the_one_this_transformers_takes():
    # transformers 5.24 renamed forward's past_key_values to cache (the old name warns, and leaves
    # forward in 5.40); every call in these tests passes the cache by CACHE_KEYWORD.
    import inspect
    import transformers
    forward = inspect.signature(LlamaForCausalLM.forward).parameters
    assert CACHE_KEYWORD in forward, (transformers.__version__, list(forward))
    other = {"cache", "past_key_values"} - {CACHE_KEYWORD}
    assert other.isdisjoint(forward), (transformers.__version__, list(forward))


@pytest.fixture(scope="module")
def models():
    """The same weights twice: SDPA attention on the decoded K/V, and fused turbokv attention.
    Each model has its own config object (set_attn_implementation changes the config it is given,
    so a shared one would switch both)."""
    torch.manual_seed(0)
    default = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).eval()
    fused = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA)).eval()
    fused.load_state_dict(default.state_dict())
    fused.set_attn_implementation("turbokv")
    assert default.config is not fused.config
    assert (default.config._attn_implementation, fused.config._attn_implementation) == ("sdpa", "turbokv")
    return default, fused


def cache_for(model, **settings):
    return thf.TurboQuantCache(config=model.config, **settings)


def assert_path(cache, fused):
    """Every layer of the cache was served by the named path, and only by it."""
    assert cache.layers, "the model never used the cache"
    for layer in cache.layers:
        if fused:
            assert layer.fused_calls > 0 and layer.decoded_steps == 0, (layer.fused_calls, layer.decoded_steps)
        else:
            assert layer.fused_calls == 0 and layer.decoded_steps > 0, (layer.fused_calls, layer.decoded_steps)


def kl(p_logits, q_logits):
    p = torch.log_softmax(p_logits.double(), -1)
    q = torch.log_softmax(q_logits.double(), -1)
    return (p.exp() * (p - q)).sum(-1)


def stepwise_logits(model, cache, ids, steps=8):
    """Prefill ids[:, :-steps], then feed the remaining tokens one at a time."""
    out = []
    with torch.no_grad():
        prefix = ids.shape[1] - steps
        out.append(model(ids[:, :prefix], **{CACHE_KEYWORD: cache}, use_cache=True).logits[:, -1])
        for t in range(prefix, ids.shape[1]):
            out.append(model(ids[:, t:t + 1], **{CACHE_KEYWORD: cache}, use_cache=True).logits[:, -1])
    return torch.stack(out, 1)


@pytest.mark.parametrize("which", ["default", "fused"])
def test_8bit_cache_tracks_dynamic_cache(models, which):
    default, fused = models
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(1))
    reference = stepwise_logits(default, DynamicCache(), ids)
    model = default if which == "default" else fused
    cache = cache_for(model, key_bits=8, value_bits=8)
    got = stepwise_logits(model, cache, ids)
    assert_path(cache, fused=which == "fused")
    assert kl(reference, got).mean() < KL_BOUND_8BIT
    assert kl(reference, got).mean() > 0  # it is compressed


def test_fused_attention_equals_the_decoded_path(models):
    default, fused = models
    ids = torch.randint(0, 512, (2, 20), generator=torch.Generator().manual_seed(2))
    decoded, on_codes = cache_for(default, key_bits=4, value_bits=3), cache_for(fused, key_bits=4, value_bits=3)
    a = stepwise_logits(default, decoded, ids, steps=5)
    b = stepwise_logits(fused, on_codes, ids, steps=5)
    assert_path(decoded, fused=False)
    assert_path(on_codes, fused=True)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    # The two paths differ from float attention by far more than from each other: the comparison
    # above is between two compressed paths, not two names for one.
    exact = stepwise_logits(default, DynamicCache(), ids, steps=5)
    assert (exact - a).abs().max() > 100 * (b - a).abs().max()


def test_prefill_runs_on_tiles_and_decode_on_codes(models):
    """The fused path picks its way per call: the prompt's many queries on decoded tiles, each
    decode step's few queries straight on the codes; the tokens match the decoded path."""
    default, fused = models
    ids = torch.randint(0, 512, (2, 30), generator=torch.Generator().manual_seed(5))
    on_codes = cache_for(fused, key_bits=4, value_bits=4)
    with torch.no_grad():
        fused(ids[:, :29], **{CACHE_KEYWORD: on_codes}, use_cache=True)
        assert {layer.cache.last_attention_path for layer in on_codes.layers} == {"tiles"}
        fused(ids[:, 29:], **{CACHE_KEYWORD: on_codes}, use_cache=True)
        assert {layer.cache.last_attention_path for layer in on_codes.layers} == {"codes"}
    a = stepwise_logits(default, cache_for(default, key_bits=4, value_bits=4), ids, steps=3)
    b = stepwise_logits(fused, cache_for(fused, key_bits=4, value_bits=4), ids, steps=3)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_without_config_the_first_layer_decodes_once_then_every_layer_fuses(models):
    """Without config only layer 0's first update decodes (the cache cannot know the attention
    yet); the layers created after turbokv attention read layer 0 are fused from the start, and
    so is a copy of the cache."""
    _, fused = models
    ids = torch.randint(0, 512, (1, 12), generator=torch.Generator().manual_seed(7))
    cache = thf.TurboQuantCache(key_bits=4, value_bits=4)
    stepwise_logits(fused, cache, ids, steps=3)
    assert [layer.decoded_steps for layer in cache.layers] == [1, 0, 0]
    assert all(layer.fused and layer.fused_calls == 4 for layer in cache.layers)
    copied = cache.copy()
    with torch.no_grad():
        fused(ids[:, :1], **{CACHE_KEYWORD: copied}, use_cache=True)
    assert [layer.decoded_steps for layer in copied.layers] == [0, 0, 0]
    assert all(layer.fused_calls == 1 for layer in copied.layers)


def test_left_padding_in_batched_generation(models):
    default, fused = models
    ids = torch.randint(0, 512, (2, 12), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :4] = 0  # row 1 is left-padded
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate computes them
    for centre in (False, True):
        settings = dict(key_bits=8, value_bits=8, center_keys=centre)
        on_codes = cache_for(fused, **settings)
        with torch.no_grad():
            a = default(ids, attention_mask=mask, position_ids=positions,
                        **{CACHE_KEYWORD: cache_for(default, **settings)}).logits
            b = fused(ids, attention_mask=mask, position_ids=positions, **{CACHE_KEYWORD: on_codes}).logits
            unpadded = fused(ids[1:, 4:], **{CACHE_KEYWORD: cache_for(fused, **settings)}).logits
        assert_path(on_codes, fused=True)
        assert {layer.cache.last_attention_path for layer in on_codes.layers} == {"tiles"}
        # Within 2e-3, not rounding: a 1e-7 rounding difference between SDPA and turbokv in layer
        # 0 can move one 8-bit code of layer 1 by a step (measured: 4e-4 in the logits); hiding
        # nothing (the mask ignored) is off by 1.3.
        torch.testing.assert_close(b[:, -1], a[:, -1], rtol=0, atol=2e-3)
        if not centre:  # every token is encoded on its own: padding changes nothing
            torch.testing.assert_close(b[1, 4:], unpadded[0], rtol=0, atol=2e-3)
        else:  # the pad tokens' keys enter the row's mean key: 8-bit noise, no more
            assert (b[1, 4:] - unpadded[0]).abs().max() < 0.02
            assert (b[1, 4:] - unpadded[0]).abs().max() > 0


SETTINGS = [dict(key_bits=4, value_bits=4), dict(key_bits=3, value_bits=2, key_mode="prod"),
            dict(key_bits=0, value_bits=4, residual_window=4), dict(key_bits=4, value_bits=4, norm_dtype="float16")]


def generate(model, cache, ids, new=6):
    return model.generate(ids, attention_mask=torch.ones_like(ids), **{CACHE_KEYWORD: cache},
                          max_new_tokens=new, do_sample=False)


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
@pytest.mark.parametrize("which", ["default", "fused"])
def test_generate_end_to_end(models, settings, which):
    model = models[0] if which == "default" else models[1]
    ids = torch.randint(0, 512, (2, 10), generator=torch.Generator().manual_seed(4))
    cache = cache_for(model, **settings)
    out = generate(model, cache, ids)
    assert_path(cache, fused=which == "fused")
    assert out.shape == (2, 16) and torch.equal(out[:, :10], ids)
    assert cache.get_seq_length() == 15 and cache.nbytes > 0
    # A compressed cache's tokens stay close to float attention's: most of the first new tokens
    # agree (random weights have near-ties, so not all of them need to).
    reference = generate(model, DynamicCache(), ids)
    assert (out[:, 10] == reference[:, 10]).sum() >= 1


def sharp_model(dtype, attention):
    """The tiny Llama with larger random weights (initializer_range 0.1): its logits are spread
    enough that greedy tokens are not decided by rounding. Same weights on every call."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA, initializer_range=0.1)).eval().to(dtype)
    model.set_attn_implementation(attention)
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("which", ["sdpa", "turbokv"])
def test_float16_storage_generates_dynamic_cache_tokens(dtype, which):
    """key_bits=0, value_bits=0 stores K/V as float16: for float32 and float16 models greedy
    generation gives DynamicCache's tokens exactly (the smallest top-2 logit margin on this prompt
    is 0.023, far above the attention's rounding differences)."""
    model = sharp_model(dtype, which)
    ids = torch.randint(0, 512, (2, 10), generator=torch.Generator().manual_seed(4))
    cache = cache_for(model, key_bits=0, value_bits=0)
    out = generate(model, cache, ids, new=12)
    assert_path(cache, fused=which == "turbokv")
    assert torch.equal(out, generate(model, DynamicCache(), ids, new=12))


def test_bfloat16_model_tracks_dynamic_cache():
    """bfloat16 logits tie often (8-bit mantissa), so tokens are not compared: the next-token
    distributions are, step by step, against DynamicCache on the same bfloat16 model."""
    model = sharp_model(torch.bfloat16, "turbokv")
    ids = torch.randint(0, 512, (1, 16), generator=torch.Generator().manual_seed(5))
    cache = cache_for(model, key_bits=0, value_bits=0)
    got = stepwise_logits(model, cache, ids, steps=4)
    assert_path(cache, fused=True)
    assert got.dtype == torch.bfloat16
    assert kl(stepwise_logits(model, DynamicCache(), ids, steps=4), got).mean() < 1e-3


def test_crop_and_unsupported_features(models):
    default, fused = models
    ids = torch.randint(0, 512, (1, 10), generator=torch.Generator().manual_seed(6))
    cache = cache_for(fused, key_bits=4, value_bits=4)
    with torch.no_grad():
        fused(ids, **{CACHE_KEYWORD: cache})
    assert_path(cache, fused=True)
    cache.crop(-3)
    assert cache.get_seq_length() == 7
    with pytest.raises(ValueError, match="key_bits"):
        thf.TurboQuantCache(key_bits=12)


def test_crop_reads_its_argument_as_this_transformers_does(models):
    """crop(0) removes nothing on transformers 5 (crop(tokens_to_remove)) and empties the cache on
    4.x (crop(max_length)); DynamicCache of the installed version is the oracle."""
    _, fused = models
    ids = torch.randint(0, 512, (1, 10), generator=torch.Generator().manual_seed(7))
    for amount in (0, -3, -10):
        cache, dynamic = cache_for(fused, key_bits=4, value_bits=4), DynamicCache()
        with torch.no_grad():
            fused(ids, **{CACHE_KEYWORD: cache})
            fused(ids, **{CACHE_KEYWORD: dynamic})
        cache.crop(amount)
        dynamic.crop(amount)
        assert cache.get_seq_length() == dynamic.get_seq_length(), (amount, thf.CROP_TAKES_A_COUNT)
    assert thf.CROP_TAKES_A_COUNT == (not __import__("transformers").__version__.startswith("4."))


def test_assisted_and_prompt_lookup_generation_keep_the_cache():
    """Speculative decoding (an assistant model, or prompt lookup) verifies several tokens per
    forward and crops the rejected ones: its greedy tokens are plain greedy decoding's, every layer
    keeps the asked settings, and the cache ends holding prompt + new tokens - 1 (the last token
    was never fed back). On the trained KJV Llama (in the package), whose greedy margins are real;
    transformers 5 calls crop(0) after a draft all accepted (or none found), which emptied the
    cache before CROP_TAKES_A_COUNT."""
    from turbokv.models import kjv_llama

    net, tokenizer = kjv_llama.load()
    ids = tokenizer("And God said unto Moses, Go in unto Pharaoh, and", return_tensors="pt").input_ids
    new = 24

    def generate(**kwargs):
        cache = thf.TurboQuantCache(key_bits=4, value_bits=4)
        with torch.inference_mode():
            out = net.generate(ids, **{CACHE_KEYWORD: cache}, max_new_tokens=new,
                               do_sample=False, pad_token_id=0, **kwargs)
        assert cache.get_seq_length() == ids.shape[1] + new - 1, kwargs
        assert all(layer.cache.key_bits == 4 and layer.cache.value_bits == 4 for layer in cache.layers)
        return out[0, ids.shape[1]:].tolist()

    plain = generate()
    assert generate(prompt_lookup_num_tokens=3) == plain
    assert generate(assistant_model=net) == plain


def eager_and_fused(model_class, config_class, **config):
    """One tiny model of a family twice, with the same weights: eager attention (transformers'
    reference, which implements every argument) and turbokv attention."""
    torch.manual_seed(0)
    eager = model_class(config_class(**config)).eval()
    eager.set_attn_implementation("eager")
    fused = model_class(config_class(**config)).eval()
    fused.load_state_dict(eager.state_dict())
    fused.set_attn_implementation("turbokv")
    return eager, fused


def test_gemma2_attention_softcapping_is_honoured():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                  layer_types=["full_attention"] * 2, attn_logit_softcapping=2.0,
                  initializer_range=0.2)
    eager, fused = eager_and_fused(Gemma2ForCausalLM, Gemma2Config, **config)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(8))
    cache = cache_for(fused, key_bits=0, value_bits=0)  # float16 storage: only rounding differs
    got = stepwise_logits(fused, cache, ids, steps=3)
    assert_path(cache, fused=True)
    want = stepwise_logits(eager, DynamicCache(), ids, steps=3)
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)
    # The cap matters at this scale: the same model without it gives other logits.
    uncapped = copy_with(eager, attn_logit_softcapping=None)
    assert (stepwise_logits(uncapped, DynamicCache(), ids, steps=3) - want).abs().max() > 0.05


def copy_with(model, **changes):
    config = model.config.__class__(**{**model.config.to_dict(), **changes})
    other = model.__class__(config).eval()
    other.load_state_dict(model.state_dict())
    other.set_attn_implementation("eager")
    return other


def test_gpt_oss_attention_sinks_are_honoured():
    from transformers import GptOssConfig, GptOssForCausalLM

    config = dict(vocab_size=256, hidden_size=128, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_local_experts=2,
                  num_experts_per_tok=1, layer_types=["full_attention"] * 2)
    eager, fused = eager_and_fused(GptOssForCausalLM, GptOssConfig, **config)
    with torch.no_grad():  # sinks large enough to take real weight from the tokens
        for model in (eager, fused):
            for layer in model.model.layers:
                layer.self_attn.sinks.copy_(torch.tensor([3.0, -1.0, 0.5, 6.0]))
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(9))
    cache = cache_for(fused, key_bits=0, value_bits=0)
    got = stepwise_logits(fused, cache, ids, steps=3)
    assert_path(cache, fused=True)
    want = stepwise_logits(eager, DynamicCache(), ids, steps=3)
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)
    with torch.no_grad():
        for layer in eager.model.layers:
            layer.self_attn.sinks.fill_(-1e4)  # no sink weight at all
    assert (stepwise_logits(eager, DynamicCache(), ids, steps=3) - want).abs().max() > 0.05


SMALL = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
             num_attention_heads=4, num_key_value_heads=2, head_dim=32, initializer_range=0.2)
SLIDING_MODELS = {
    # every layer windowed
    "mistral": ("MistralForCausalLM", "MistralConfig", dict(sliding_window=5)),
    # local and global layers alternating, with logit softcapping
    "gemma2": ("Gemma2ForCausalLM", "Gemma2Config",
               dict(sliding_window=4, attn_logit_softcapping=20.0,
                    layer_types=["sliding_attention", "full_attention", "sliding_attention"])),
    # the hybrid Qwen2 layout: windowed layers from max_window_layers on
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config",
              dict(use_sliding_window=True, sliding_window=6, max_window_layers=1)),
}


@pytest.mark.parametrize("family", sorted(SLIDING_MODELS))
def test_sliding_window_models_match_eager(family):
    """Sliding-window layers on the codes: a float16-storage cache matches transformers' eager
    attention on the same stored K/V (the cache's decoded path) through a 16-token prefill and
    decode steps, with a left-padded batch row, and eager with a float32 DynamicCache up to the
    float16 rounding of K/V; the same model with its windows removed gives other logits."""
    import transformers

    model_name, config_name, extra = SLIDING_MODELS[family]
    model_class, config_class = getattr(transformers, model_name), getattr(transformers, config_name)
    eager, fused = eager_and_fused(model_class, config_class, **SMALL, **extra)
    ids = torch.randint(0, 256, (2, 19), generator=torch.Generator().manual_seed(11))
    mask = torch.ones(2, 19, dtype=torch.long)
    mask[1, :3] = 0  # row 1 is left-padded
    positions = (mask.cumsum(-1) - 1).clamp(min=0)

    def run(model, cache):
        logits = []
        with torch.no_grad():
            for start, stop in ((0, 16), (16, 17), (17, 18), (18, 19)):
                out = model(ids[:, start:stop], attention_mask=mask[:, :stop],
                            position_ids=positions[:, start:stop], **{CACHE_KEYWORD: cache}, use_cache=True)
                logits.append(out.logits)
        return torch.cat(logits, dim=1)[:, 3:]  # the padded positions' logits are meaningless

    cache = cache_for(fused, key_bits=0, value_bits=0)  # float16 storage: only rounding differs
    got = run(fused, cache)
    assert_path(cache, fused=True)
    windows = [layer.sliding_window for layer in cache.layers]
    assert extra["sliding_window"] in windows, windows  # the layers really ran windowed
    if family != "mistral":
        assert None in windows, windows  # and the hybrids' full layers did not
    on_decoded = cache_for(eager, key_bits=0, value_bits=0)
    same_kv = run(eager, on_decoded)
    assert_path(on_decoded, fused=False)
    torch.testing.assert_close(got, same_kv, rtol=0, atol=1e-3)  # an fp16 rounding may flip
    want = run(eager, DynamicCache())
    torch.testing.assert_close(got, want, rtol=0, atol=3e-2)  # float16 K/V, logits up to ~10
    unwindowed = copy_with(eager, sliding_window=4096)  # longer than the text: no window
    assert (run(unwindowed, DynamicCache()) - want).abs().max() > 0.3


def test_arguments_it_does_not_implement_are_refused():
    ids = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(10))
    # Attention dropout while training.
    torch.manual_seed(0)
    training = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA, attention_dropout=0.1)).train()
    training.set_attn_implementation("turbokv")
    with pytest.raises(NotImplementedError, match="dropout"):
        training(ids, **{CACHE_KEYWORD: cache_for(training)})
    # Anything else that would change the result, named.
    layer = thf.TurboQuantLayer()
    q = torch.zeros(1, 2, 1, 8)
    k = torch.zeros(1, 1, 1, 8)
    k._turbokv_layer = layer
    for name, value in [("head_mask", torch.ones(1)), ("cu_seq_lens_q", torch.tensor([0, 1])),
                        ("output_attentions", True), ("is_causal", False)]:
        with pytest.raises(NotImplementedError, match=name):
            thf.turbokv_attention(None, q, k, k, None, **{name: value})


def test_summary_reports_what_each_layer_chose(models):
    default, fused = models
    ids = torch.randint(0, 512, (1, 40), generator=torch.Generator().manual_seed(5))
    on_codes, decoded = cache_for(fused, preset="4bit"), cache_for(default, preset="4bit")
    with torch.no_grad():
        fused(ids, **{CACHE_KEYWORD: on_codes})
        default(ids, **{CACHE_KEYWORD: decoded})
    assert_path(on_codes, fused=True)
    summary = on_codes.summary()
    assert len(summary["layers"]) == fused.config.num_hidden_layers
    for layer in summary["layers"]:
        assert layer["key_bits"] == 4 and layer["centred"]
        assert layer["protection"]["tokens"] == 40  # measured on the prefill, with its queries
    assert 4.0 < summary["bits_per_coordinate"] < 9.0
    assert "stored bits per coordinate" in on_codes.summary_text()
    # Under another attention the cache never sees queries: nothing measured, and it says so.
    assert all(layer["protection"] is None for layer in decoded.summary()["layers"])
    assert "not measured" in decoded.summary_text()
    assert cache_for(fused).layers == [] and thf.TurboQuantCache().settings["key_bits"] == 8


@pytest.mark.parametrize("path", ["fused", "default"])
def test_beam_search_equals_dynamic_cache_with_float16_storage(models, path):
    default, fused = models
    model = fused if path == "fused" else default
    ids = torch.randint(0, 512, (2, 9), generator=torch.Generator().manual_seed(11))
    options = dict(max_new_tokens=8, num_beams=3, num_return_sequences=2, do_sample=False,
                   early_stopping=False, pad_token_id=0)
    with torch.no_grad():
        want = default.generate(ids, **{CACHE_KEYWORD: DynamicCache()}, **options)
        cache = cache_for(model, key_bits=0, value_bits=0)
        got = model.generate(ids, **{CACHE_KEYWORD: cache}, **options)
        assert_path(cache, fused=path == "fused")
        assert torch.equal(got, want)
        low_bits = model.generate(ids, **{CACHE_KEYWORD: cache_for(model, preset="4bit")}, **options)
    assert low_bits.shape == want.shape


def test_batch_gathers_copy_rows_exactly(rng):
    k = rng.standard_normal((3, 2, 300, 32)).astype(np.float32)  # 300: chunks and a window
    cache = turbokv.KVCache(32, 2, key_bits=4, value_bits=3, residual_window=16)
    cache.update(k, k[::-1].copy())
    keys, values = cache.fetch()
    offset = cache.key_offset
    layer = thf.TurboQuantLayer()
    layer.cache, layer.is_initialized = cache, True
    layer.reorder_cache(torch.tensor([2, 0, 0]))
    np.testing.assert_array_equal(cache.fetch()[0], keys[[2, 0, 0]])
    np.testing.assert_array_equal(cache.fetch()[1], values[[2, 0, 0]])
    np.testing.assert_array_equal(cache.key_offset, offset[[2, 0, 0]])
    layer.batch_repeat_interleave(2)
    np.testing.assert_array_equal(cache.fetch()[0], keys[[2, 2, 0, 0, 0, 0]])
    layer.batch_select_indices(torch.tensor([1, 4]))
    np.testing.assert_array_equal(cache.fetch()[0], keys[[2, 0]])
    # The gathered rows continue exactly as the originals would.
    step = rng.standard_normal((2, 2, 1, 32)).astype(np.float32)
    reference_cache = turbokv.KVCache(32, 2, key_bits=4, value_bits=3, residual_window=16)
    reference_cache.update(k[[2, 0]], k[::-1][[2, 0]].copy())
    for c in (cache, reference_cache):
        c.update(step, step)
    q = rng.standard_normal((2, 4, 1, 32)).astype(np.float32)
    np.testing.assert_array_equal(cache.attention(q), reference_cache.attention(q))
    with pytest.raises(IndexError):
        cache.select_batch([2])
    with pytest.raises(ValueError):
        cache.select_batch([])


def test_saved_loaded_and_copied_caches_continue_exactly(models, tmp_path):
    _, fused = models
    prompt = torch.randint(0, 512, (2, 20), generator=torch.Generator().manual_seed(12))
    original = cache_for(fused, preset="4bit")
    with torch.no_grad():
        fused(prompt, **{CACHE_KEYWORD: original})
    original.save(tmp_path / "prompt.tkv")
    loaded = thf.TurboQuantCache.load(tmp_path / "prompt.tkv", config=fused.config)
    copied = original.copy()
    deep = copy.deepcopy(original)  # transformers' documented prompt reuse
    pickled = pickle.loads(pickle.dumps(original))  # multiprocessing
    assert loaded.get_seq_length() == copied.get_seq_length() == deep.get_seq_length() == 20
    assert pickled.get_seq_length() == 20
    assert loaded.summary()["layers"][0]["stored_key_bits"] == original.summary()["layers"][0]["stored_key_bits"]
    more = torch.randint(0, 512, (2, 5), generator=torch.Generator().manual_seed(13))
    outputs = []
    for cache in (copied, loaded, deep, pickled, original):  # the original last: a copy must not share its state
        with torch.no_grad():
            outputs.append(torch.stack([fused(more[:, t:t + 1], **{CACHE_KEYWORD: cache}).logits[:, -1]
                                        for t in range(5)], 1))
        assert_path(cache, fused=True)
        assert cache.get_seq_length() == 25
    for output in outputs[:-1]:
        torch.testing.assert_close(output, outputs[-1], rtol=0, atol=0)
    data = bytearray((tmp_path / "prompt.tkv").read_bytes())
    data[100] ^= 1
    (tmp_path / "bad.tkv").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        thf.TurboQuantCache.load(tmp_path / "bad.tkv")
    turbokv.save_cache(tmp_path / "layers.tkv", [loaded.layers[0].cache])
    with pytest.raises(ValueError, match="not a TurboQuantCache"):
        thf.TurboQuantCache.load(tmp_path / "layers.tkv")
    with pytest.raises(ValueError, match="nothing to save"):
        cache_for(fused).save(tmp_path / "empty.tkv")


@pytest.mark.parametrize("which, key_bits", [("scores", 4), ("values", 4), ("scores", 8)])
def test_int8_in_a_model_runs_on_the_codes_and_stays_close(models, which, key_bits):
    """TurboQuantCache(scores="int8") / (values="int8"): decode steps score 4-bit keys (8-bit ones
    in int16) / sum 4-bit values in integers (asserted per layer), the prompt on tiles stays
    float32, and the logits move far less than the codec moves them."""
    default, fused = models
    ids = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(7))
    exact_cache = cache_for(fused, key_bits=key_bits, value_bits=4)
    int8_cache = cache_for(fused, key_bits=key_bits, value_bits=4, **{which: "int8"})
    exact = stepwise_logits(fused, exact_cache, ids, steps=4)
    int8 = stepwise_logits(fused, int8_cache, ids, steps=4)
    ran = f"last_attention_{which}"
    assert {getattr(layer.cache, ran) for layer in int8_cache.layers} == {"int8"}
    assert {getattr(layer.cache, ran) for layer in exact_cache.layers} == {"exact"}
    reference = stepwise_logits(default, DynamicCache(), ids, steps=4)
    codec_kl = kl(reference, exact)[:, 1:].mean()
    int8_kl = kl(exact, int8)[:, 1:].mean()  # decode steps only: the prefill is the same
    assert 0 < int8_kl < 0.1 * codec_kl, (int8_kl, codec_kl)


def test_many_torch_threads_on_turbokvs_own_pool_without_an_openmp_wait_setting_warn_once():
    """torch's spinning OpenMP threads took turbokv's own pool's cores (TTFT 1.4-1.6x on 16 cores,
    session 48). On torch's OpenMP threads (the default after import turbokv.hf) nothing warns;
    on the own pool (TURBOKV_OPENMP=0) the first turbokv attention of a process with
    SPIN_WARNING_THREADS or more torch threads and no OMP_WAIT_POLICY / GOMP_SPINCOUNT /
    KMP_BLOCKTIME warns once, naming the settings; either setting, or fewer threads, silences it.
    Fresh interpreters: the thread backend holds for a whole process."""
    import os
    import subprocess
    import sys

    code = """
import sys, warnings, torch
from transformers import LlamaConfig, LlamaForCausalLM
import turbokv, turbokv.hf as thf
torch.set_num_threads(int(sys.argv[1]))
model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, head_dim=16)).eval()
model.set_attn_implementation("turbokv")
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    for _ in range(2):
        with torch.no_grad():
            model(torch.arange(12)[None], **{thf.CACHE_KEYWORD: thf.TurboQuantCache(config=model.config)})
spin = [str(w.message) for w in seen if issubclass(w.category, thf.OpenMPSpinWarning)]
print(turbokv.thread_backend(), len(spin), all("GOMP_SPINCOUNT=1000" in m and "OMP_WAIT_POLICY=PASSIVE" in m for m in spin))
"""
    base = {k: v for k, v in os.environ.items() if k not in thf.SPIN_SETTINGS + ("TURBOKV_OPENMP",)}

    def start(threads, **env):
        return subprocess.Popen([sys.executable, "-c", code, str(threads)], env={**base, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(process):
        out, err = process.communicate(timeout=240)
        assert process.returncode == 0, err
        return out.split()

    # The four interpreters side by side: each spends most of its ~10 s importing torch and
    # transformers.
    n = thf.SPIN_WARNING_THREADS
    runs = [start(n, TURBOKV_OPENMP="0"), start(n), start(n, TURBOKV_OPENMP="0", GOMP_SPINCOUNT="1000"),
            start(n - 1, TURBOKV_OPENMP="0")]
    try:
        pool_many, openmp_many, pool_spincount, pool_fewer = (result(p) for p in runs)
    finally:
        for p in runs:
            p.kill()
    assert pool_many == ["pool", "1", "True"]
    assert openmp_many == ["openmp", "0", "True"]
    assert pool_spincount == ["pool", "0", "True"]
    assert pool_fewer == ["pool", "0", "True"]

"""turbokv.hf across model families whose layers are not all plain attention: hybrid models
(linear-attention or state-space layers among attention layers) and models that change the cached
K/V before attending. Tiny random-weight models built from configs (no download); run on every
transformers version CI tests (scripts/test_transformers_versions.sh)."""

import copy
import pickle

import pytest
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache
from transformers import cache_utils

import turbokv.hf as thf
from turbokv.hf import CACHE_KEYWORD

# State layers in transformers' Cache (5.x); before, hybrid models bring their own cache class.
HAS_STATE_LAYERS = hasattr(cache_utils, "LinearAttentionCacheLayerMixin")

SMALL = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, head_dim=16, pad_token_id=0,
             initializer_range=0.1)  # spread logits: greedy tokens not decided by rounding

# Qwen3.5, Qwen3-Next and OLMo hybrid: 3 linear-attention layers, then full attention; Nemotron-H:
# Mamba 2, MoE, attention, MLP layers. The families this transformers has.
HYBRIDS = [family for family in ("qwen3_5_text", "qwen3_next", "nemotron_h", "olmo_hybrid")
           if family in transformers.CONFIG_MAPPING]


def tiny(family, attention):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **SMALL)).eval()
    model.set_attn_implementation(attention)
    return model


def test_a_hybrid_family_is_tested_here():
    assert "qwen3_next" in HYBRIDS, transformers.__version__  # in 4.57 and every 5.x


@pytest.mark.skipif(HAS_STATE_LAYERS, reason="transformers 4.x only: no state layers in its Cache")
def test_hybrid_models_are_refused_by_name_where_transformers_has_no_state_layers():
    model = tiny("qwen3_next", "sdpa")
    with pytest.raises(NotImplementedError, match="'linear_attention'.*from transformers 5 on"):
        thf.TurboQuantCache(config=model.config)


@pytest.mark.skipif(not HAS_STATE_LAYERS, reason="transformers 5.x: state layers in its Cache")
@pytest.mark.parametrize("family", HYBRIDS)
def test_hybrid_models_compress_attention_layers_and_keep_state_layers(family):
    """The cache lays out every layer as DynamicCache(config=...) does, holds K/V only in the
    attention layers, serves them fused from the codes, and with float16 storage greedy generation
    gives DynamicCache's tokens; copies, deep copies and pickles continue bit for bit."""
    fused, reference = tiny(family, "turbokv"), tiny(family, "sdpa")
    ids = torch.randint(1, 256, (2, 10), generator=torch.Generator().manual_seed(3))
    cache = thf.TurboQuantCache(config=fused.config, key_bits=0, value_bits=0)
    dynamic = DynamicCache(config=reference.config)
    kinds = [isinstance(layer, thf.TurboQuantLayer) for layer in cache.layers]
    want = [not isinstance(layer, cache_utils.LinearAttentionCacheLayerMixin) and
            isinstance(layer, cache_utils.CacheLayerMixin) for layer in dynamic.layers]
    assert kinds == want and any(kinds) and not all(kinds), (kinds, dynamic.layers)

    got = fused.generate(ids, **{CACHE_KEYWORD: cache}, max_new_tokens=8, do_sample=False)
    assert torch.equal(got, reference.generate(ids, **{CACHE_KEYWORD: dynamic}, max_new_tokens=8,
                                               do_sample=False))
    attention = [layer for layer in cache.layers if isinstance(layer, thf.TurboQuantLayer)]
    assert all(layer.fused_calls > 0 and layer.decoded_steps == 0 for layer in attention)
    assert cache.get_seq_length() == 17 and cache.nbytes > 0
    assert len(cache.summary()["layers"]) == len(attention)

    step = torch.randint(1, 256, (2, 1), generator=torch.Generator().manual_seed(4))
    copies = [cache.copy(), copy.deepcopy(cache), pickle.loads(pickle.dumps(cache))]
    with torch.no_grad():
        logits = [fused(step, **{CACHE_KEYWORD: c}).logits for c in [cache] + copies]
    assert all(torch.equal(logits[0], other) for other in logits[1:])


@pytest.mark.skipif(not HAS_STATE_LAYERS, reason="transformers 5.x: state layers in its Cache")
def test_a_hybrid_model_without_config_and_saving_one_are_refused_with_the_way_out(tmp_path):
    model = tiny("qwen3_next", "turbokv")
    ids = torch.randint(1, 256, (1, 6), generator=torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match=r"TurboQuantCache\(config=model.config"):
        model(ids, **{CACHE_KEYWORD: thf.TurboQuantCache()})
    cache = thf.TurboQuantCache(config=model.config)
    with torch.no_grad():
        model(ids, **{CACHE_KEYWORD: cache})
    with pytest.raises(NotImplementedError, match="hybrid model"):
        cache.save(tmp_path / "cache.tkv")
    assert not (tmp_path / "cache.tkv").exists()
    # A file saved from a model of attention layers, loaded with the hybrid model's config.
    torch.manual_seed(0)
    llama = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **SMALL)).eval()
    saved = thf.TurboQuantCache(config=llama.config)
    with torch.no_grad():
        llama(ids, **{CACHE_KEYWORD: saved})
    saved.save(tmp_path / "llama.tkv")
    with pytest.raises(ValueError, match="hybrid model's"):
        thf.TurboQuantCache.load(tmp_path / "llama.tkv", config=model.config)
    assert len(thf.TurboQuantCache.load(tmp_path / "llama.tkv", config=llama.config).layers) == 4


# Models that use the K/V the cache returns for more than attention: JetMoE repeats them per
# expert before attending, Doge computes its dynamic mask from the values.
KV_USERS = {
    "jetmoe": (dict(vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, kv_channels=16), "changes the cached keys/values"),
    "doge": (dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2), "computes with the cached keys/values"),
}


@pytest.mark.parametrize("family", sorted(KV_USERS))
def test_a_model_that_uses_the_cached_kv_outside_attention_is_refused_under_turbokv_and_runs_under_sdpa(family):
    """turbokv attention's K/V placeholders hold no values: such a model gets a NotImplementedError
    that says so and names the way out (not a meta-device error from deep inside torch); with sdpa
    the cache returns decoded K/V and the model runs. (transformers 4.57's JetMoE takes no
    attention interface: set_attn_implementation leaves it on sdpa.)"""
    settings, message = KV_USERS[family]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **settings)).eval()
    ids = torch.randint(1, 256, (1, 6), generator=torch.Generator().manual_seed(6))
    model.set_attn_implementation("turbokv")
    if model.config._attn_implementation == "turbokv":
        with pytest.raises(NotImplementedError, match=message):
            model(ids, **{CACHE_KEYWORD: thf.TurboQuantCache(config=model.config)})
    else:
        assert (family, transformers.__version__[:2]) == ("jetmoe", "4."), transformers.__version__
    model.set_attn_implementation("sdpa")
    cache = thf.TurboQuantCache(config=model.config, key_bits=0, value_bits=0)
    with torch.no_grad():
        got = model(ids, **{CACHE_KEYWORD: cache}).logits
        want = model(ids, **{CACHE_KEYWORD: DynamicCache()}).logits
    assert all(layer.decoded_steps > 0 for layer in cache.layers)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-3)  # float16 storage


# Gemma 3n and Gemma 4 (E2B/E4B-style): the last layers attend on the K/V of an earlier layer of
# their kind instead of keeping their own.
KV_SHARING = [family for family in ("gemma3n_text", "gemma4_text") if family in transformers.CONFIG_MAPPING]
# Both families' per-layer input embeddings default to a 262,144-token vocabulary: 17 s to build.
PER_LAYER_INPUT = dict(hidden_size_per_layer_input=16, vocab_size_per_layer_input=256)
GEMMA3N = dict(altup_num_inputs=2, laurel_rank=8, activation_sparsity_pattern=[0.0] * 6)


@pytest.mark.parametrize("family", KV_SHARING)
def test_kv_sharing_layers_attend_on_the_codes_of_the_layer_they_share(family):
    """On transformers 5.18 these layers move the shared K/V to the query's device first, which
    the fused path's meta placeholders refused ("Cannot copy out of meta tensor") before session
    65. Fused attention on float16 storage equals the decoded path on the same stored K/V."""
    kinds = ["sliding_attention"] * 2 + ["full_attention"] + ["sliding_attention"] * 2 + ["full_attention"]
    # initializer_range 0.02: at 0.1 Gemma 4 amplifies float32 rounding so far that SDPA and eager
    # attention on the same K/V differ by 9e-4 in the logits.
    config = AutoConfig.for_model(family, **{**SMALL, "num_hidden_layers": 6, "initializer_range": 0.02},
                                  num_kv_shared_layers=2, layer_types=kinds, **PER_LAYER_INPUT,
                                  **(GEMMA3N if family == "gemma3n_text" else {}))
    torch.manual_seed(0)
    decoded = AutoModelForCausalLM.from_config(copy.deepcopy(config)).eval()
    fused = AutoModelForCausalLM.from_config(copy.deepcopy(config)).eval()
    fused.load_state_dict(decoded.state_dict())
    decoded.set_attn_implementation("sdpa")
    fused.set_attn_implementation("turbokv")
    ids = torch.randint(1, 256, (2, 12), generator=torch.Generator().manual_seed(1))

    def run(model, cache):
        with torch.no_grad():
            return torch.cat([model(ids[:, a:b], **{CACHE_KEYWORD: cache}).logits
                              for a, b in ((0, 9), (9, 10), (10, 11), (11, 12))], dim=1)

    cache = thf.TurboQuantCache(config=fused.config, key_bits=0, value_bits=0)
    got = run(fused, cache)
    on_decoded = thf.TurboQuantCache(config=decoded.config, key_bits=0, value_bits=0)
    want = run(decoded, on_decoded)
    layers = [layer for layer in cache.layers if isinstance(layer, thf.TurboQuantLayer)]
    assert len(layers) == 4  # the shared layers keep nothing of their own
    # The last sliding and full layers also serve the two sharing layers: twice the calls.
    assert [layer.fused_calls for layer in layers] == [4, 4, 8, 8]
    assert all(layer.decoded_steps == 0 for layer in layers)
    decoded_layers = [layer for layer in on_decoded.layers if isinstance(layer, thf.TurboQuantLayer)]
    assert all(layer.fused_calls == 0 and layer.decoded_steps > 0 for layer in decoded_layers)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-3)  # summation order differs only

"""Key centring and prefill key protection (issue: keys that never break a model)."""

from pathlib import Path

import numpy as np
import pytest

import turbokv
from turbokv import protection, reference


def shared_component_keys(rng, batch=1, heads=2, n=96, d=64, size=60.0):
    """Keys that share one large component, as Qwen2.5's key bias makes them."""
    k = rng.standard_normal((batch, heads, n, d)).astype(np.float32)
    k[..., :4] += size * np.arange(1, 5, dtype=np.float32)
    return k


def exact_attention(q, k, v, **options):
    return reference.attention(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), **options)


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("options", [{}, {"softcap": 4.0}, {"sinks": np.array([0.5, -1.0, 2.0, 1.0], np.float32)}])
def test_centring_rescues_keys_with_a_shared_component(rng, options):
    k = shared_component_keys(rng)
    v = rng.standard_normal(k.shape).astype(np.float32)
    q = rng.standard_normal((1, 4, 8, 64)).astype(np.float32)
    want = exact_attention(q, k, v, **options)
    errors = {}
    for centre in (False, True):
        cache = turbokv.KVCache(64, 2, key_bits=4, value_bits=0, center_keys=centre, protect_keys=False)
        cache.update(k, v)
        assert (cache.key_offset is not None) == centre
        errors[centre] = rel(cache.attention(q, **options), want)
    assert errors[False] > 0.5      # the shared component takes the bits: attention is lost
    assert errors[True] < 0.1       # centred: an ordinary 4-bit error
    # fetch adds the offset back: decoded keys approximate the keys given
    cache = turbokv.KVCache(64, 2, key_bits=4, value_bits=0, protect_keys=False)
    cache.update(k, v)
    decoded, _ = cache.fetch()
    assert rel(decoded, k) < 0.01


def test_centring_keeps_batch_rows_independent(rng):
    k = shared_component_keys(rng, batch=2)
    v = rng.standard_normal(k.shape).astype(np.float32)
    q = rng.standard_normal((2, 4, 5, 64)).astype(np.float32)
    both = turbokv.KVCache(64, 2, key_bits=4, value_bits=4)
    both.update(k, v)
    together = both.attention(q)
    for row in range(2):
        single = turbokv.KVCache(64, 2, key_bits=4, value_bits=4)
        single.update(k[row:row + 1], v[row:row + 1])
        np.testing.assert_allclose(together[row:row + 1], single.attention(q[row:row + 1]), rtol=1e-5, atol=1e-6)


def test_float16_keys_are_never_centred(rng):
    k = shared_component_keys(rng)
    cache = turbokv.KVCache(64, 2, key_bits=0, value_bits=0)
    cache.update(k, k)
    assert cache.key_offset is None
    np.testing.assert_array_equal(cache.fetch()[0], k.astype(np.float16).astype(np.float32))


def test_protection_raises_the_keys_a_layer_cannot_carry(rng):
    k = shared_component_keys(rng, n=128)
    v = rng.standard_normal(k.shape).astype(np.float32)
    q = rng.standard_normal((1, 4, 128, 64)).astype(np.float32)
    want = exact_attention(q, k, v)
    off = turbokv.KVCache(64, 2, key_bits=4, value_bits=0, center_keys=False, protect_keys=False)
    on = turbokv.KVCache(64, 2, key_bits=4, value_bits=0, center_keys=False)
    for cache in (off, on):
        cache.update(k, v)
    err_off, err_on = rel(off.attention(q), want), rel(on.attention(q), want)
    assert off.stored_key_bits == 4 and off.protection is None
    assert on.stored_key_bits in (8, 0)
    tried = on.protection["tried"]
    assert tried[0]["key_bits"] == 4 and tried[0]["excess"] > on.protection_bound
    assert tried[-1]["key_bits"] == on.stored_key_bits
    assert on.protection["queries"] == protection.PROBE_QUERIES
    assert err_off > 0.5 and err_on < err_off / 10
    summary = on.summary()
    assert summary["key_bits"] == 4 and summary["stored_key_bits"] == on.stored_key_bits
    assert summary["bits_per_coordinate"] > off.summary()["bits_per_coordinate"]


def test_protection_leaves_ordinary_keys_alone(rng):
    for bits in (2, 3, 4):
        k = rng.standard_normal((1, 2, 200, 64)).astype(np.float32)
        q = rng.standard_normal((1, 4, 200, 64)).astype(np.float32)
        cache = turbokv.KVCache(64, 2, key_bits=bits, value_bits=4)
        cache.update(k, k)
        cache.attention(q)
        assert cache.stored_key_bits == bits
        (only,) = cache.protection["tried"]
        assert 0.05 < only["excess"] < cache.protection_bound  # measured, and ordinary


def test_protection_is_measured_once_and_only_on_the_prefill(rng):
    k = shared_component_keys(rng, n=64)
    q = rng.standard_normal((1, 4, 1, 64)).astype(np.float32)
    # A second update before any attention: the prefill's queries were never seen.
    cache = turbokv.KVCache(64, 2, key_bits=4, value_bits=4, center_keys=False)
    cache.update(k, k)
    cache.update(k[:, :, :1], k[:, :, :1])
    cache.attention(q)
    assert cache.protection is None and cache.stored_key_bits == 4
    # Queries the attention refuses leave the measurement for the next call.
    cache = turbokv.KVCache(64, 2, key_bits=4, value_bits=4, center_keys=False)
    cache.update(k, k)
    with pytest.raises(ValueError):
        cache.attention(np.full((1, 4, 1, 64), np.nan, np.float32))
    assert cache.protection is None
    cache.attention(q)
    assert cache.protection is not None and cache.stored_key_bits != 4
    # clear() returns to the requested bits; the next prefill decides again.
    cache.clear()
    assert cache.stored_key_bits == 4 and cache.protection is None


def test_protected_and_centred_caches_save_and_load(tmp_path, rng):
    k = shared_component_keys(rng, n=64)
    q = rng.standard_normal((1, 4, 64, 64)).astype(np.float32)
    caches = [turbokv.KVCache(64, 2, key_bits=4, value_bits=4, layer_index=i, center_keys=c,
                              refine_bound=r) for i, (c, r) in enumerate(((False, 2.5), (True, None)))]
    for cache in caches:
        cache.update(k, k)
        cache.attention(q)
    assert caches[0].stored_key_bits != 4 and caches[1].key_offset is not None
    turbokv.save_cache(tmp_path / "c.tkv", caches)
    loaded = turbokv.load_cache(tmp_path / "c.tkv")
    step = rng.standard_normal((1, 2, 1, 64)).astype(np.float32)
    for a, b in zip(caches, loaded):
        assert b.stored_key_bits == a.stored_key_bits
        assert (b.refine_bound, b.protection_bound) == (a.refine_bound, a.protection_bound)
        for cache in (a, b):
            cache.update(step, step)
        np.testing.assert_array_equal(a.fetch()[0], b.fetch()[0])
        np.testing.assert_array_equal(a.attention(q[:, :, -1:]), b.attention(q[:, :, -1:]))


def test_version_1_state_still_loads(rng):
    cache = turbokv.KVCache(32, 1, key_bits=4, value_bits=4, center_keys=False, protect_keys=False)
    k = rng.standard_normal((1, 1, 5, 32)).astype(np.float32)
    cache.update(k, k)
    meta, state = cache.snapshot()
    old = {key: value for key, value in meta.items()
           if key not in ("center_keys", "protect_keys", "protection_bound", "stored_key_bits")}
    restored = turbokv.KVCache.from_state(state, dict(old, version=1))
    np.testing.assert_array_equal(restored.fetch()[0], cache.fetch()[0])
    assert not restored.center_keys


def test_state_written_before_refine_bound_loads_with_the_default(rng):
    cache = turbokv.KVCache(32, 1, key_bits=4, value_bits=4, refine_bound=3.0)
    k = rng.standard_normal((1, 1, 5, 32)).astype(np.float32)
    cache.update(k, k)
    meta, state = cache.snapshot()
    del meta["refine_bound"]
    restored = turbokv.KVCache.from_state(state, meta)
    assert restored.refine_bound == protection.DEFAULT_REFINE_BOUND
    np.testing.assert_array_equal(restored.fetch()[0], cache.fetch()[0])


def test_bad_protection_arguments():
    with pytest.raises(ValueError, match="protection_bound"):
        turbokv.KVCache(32, 1, protection_bound=0)
    for bad in (0, -1, float("nan"), 17):
        with pytest.raises(ValueError, match="refine_bound"):
            turbokv.KVCache(32, 1, refine_bound=bad)
    assert turbokv.KVCache(32, 1, protection_bound=1.0).refine_bound == 1.0  # default capped
    with pytest.raises(TypeError, match="bool"):
        turbokv.KVCache(32, 1, center_keys="yes")


def test_presets_and_the_default():
    assert turbokv.make_cache(1, 32, 1)[0].key_bits == 8  # the default preset, k8v4
    cache = turbokv.make_cache(1, 32, 1, preset="3bit")[0]
    assert (cache.key_bits, cache.value_bits) == (3, 3)
    cache = turbokv.make_cache(1, 32, 1, preset="4bit", value_bits=2)[0]  # explicit wins
    assert (cache.key_bits, cache.value_bits) == (4, 2)
    with pytest.raises(ValueError, match="preset"):
        turbokv.make_cache(1, 32, 1, preset="5bit")
    summary = turbokv.summarize(turbokv.make_cache(2, 32, 1, preset="4bit"))
    assert summary["bits_per_coordinate"] is None and len(summary["layers"]) == 2


QWEN = Path(__file__).parent / "data" / "qwen25_qkv.npz"  # bench/capture_qwen_fixture.py


@pytest.mark.parametrize("layer", [0, 27])
def test_qwen25_real_keys(layer):
    """Qwen2.5-Coder-1.5B's own queries, keys and values (96 KJV tokens): layer 0's keys share a
    huge bias component (the model collapses at 4 bits); layer 27 is ordinary."""
    data = np.load(QWEN)
    q, k, v, scale = data[f"q{layer}"], data[f"k{layer}"], data[f"v{layer}"], float(data["scale"])
    want = exact_attention(q, k, v, scale=scale)
    def run(**settings):
        cache = turbokv.KVCache(128, 2, key_bits=4, value_bits=0, layer_index=layer, **settings)
        cache.update(k, v)
        return cache, rel(cache.attention(q, scale=scale), want)
    plain, err_plain = run(center_keys=False, protect_keys=False)
    centred, err_centred = run(protect_keys=False)
    guarded, err_guarded = run(center_keys=False)
    rescue_only, _ = run(center_keys=False, refine_bound=protection.DEFAULT_BOUND)
    default, err_default = run()
    assert err_centred < 0.1 and err_default <= err_centred
    # Centred, neither layer is broken: at most the one-bit refinement (measured 4 -> 5 on layer 0).
    assert default.stored_key_bits in (4, 5)
    for cache in (default, guarded, rescue_only):
        tried = cache.protection["tried"]
        assert [t["key_bits"] for t in tried] == protection.escalation(4)[:len(tried)]
        assert all(t["excess"] > cache.refine_bound for t in tried[:-1] if 0 < t["key_bits"] < 8)
        assert tried[-1]["key_bits"] == cache.stored_key_bits
    if layer == 0:
        assert err_plain > 0.5                   # 4-bit keys as they are: attention is lost
        assert guarded.protection["tried"][0]["excess"] > 100  # protection notices without centring
        assert guarded.stored_key_bits == rescue_only.stored_key_bits == 0  # 8 bits were not enough
        assert err_guarded < 0.1
    else:
        assert err_plain < 0.15 and rescue_only.stored_key_bits == 4
        assert guarded.stored_key_bits == 5 and err_guarded < err_plain  # refined one bit


def _kl_oracle(q, exact, stored, scale, causal, window):
    """Mean KL per KV head from reference.attention's masking rule, in float64, one row at a time."""
    batch, q_heads, rows, _ = q.shape
    kv_heads, n = exact.shape[1], exact.shape[2]
    group = q_heads // kv_heads
    out = np.zeros(kv_heads)
    for b in range(batch):
        for h in range(q_heads):
            for i in range(rows):
                pos = n - rows + i
                seen = np.ones(n, bool)
                if causal:
                    seen = np.arange(n) <= pos
                    if window:
                        seen &= np.arange(n) > pos - window
                logs = []
                for keys in (exact, stored):
                    s = keys[b, h // group].astype(np.float64)[seen] @ q[b, h, i].astype(np.float64) * scale
                    logs.append(s - s.max() - np.log(np.exp(s - s.max()).sum()))
                out[h // group] += float((np.exp(logs[0]) * (logs[0] - logs[1])).sum())
    return out / (batch * group * rows)


@pytest.mark.parametrize("causal, window", [(True, None), (True, 5), (True, 40), (False, None)])
def test_probe_kl_follows_the_attention_pattern(rng, causal, window):
    """The protection probe's KL sees what the attention call sees: causal, windowed or not."""
    k = rng.standard_normal((2, 2, 30, 16)).astype(np.float32)
    stored = k + 0.1 * rng.standard_normal(k.shape).astype(np.float32)
    q = rng.standard_normal((2, 4, 8, 16)).astype(np.float32)
    got = protection.attention_kl(q, k, stored, 0.25, causal, window)
    want = _kl_oracle(q, k, stored, 0.25, causal, window)
    np.testing.assert_allclose(got, want, rtol=1e-3)
    if window and window < 30:  # the window is not ignored (40 covers every token: no effect)
        assert not np.allclose(got, protection.attention_kl(q, k, stored, 0.25, causal), rtol=1e-2)


@pytest.mark.parametrize("causal, window", [(True, None), (True, 5), (False, None)])
def test_the_probe_the_cache_runs_equals_the_numpy_reference(rng, causal, window, monkeypatch):
    """KVCache's probe runs in C++ (no numpy BLAS threads); it computes protection.attention_kl,
    at every SIMD level."""
    from turbokv import _core

    k = rng.standard_normal((2, 3, 300, 32)).astype(np.float32)
    stored = k + 0.05 * rng.standard_normal(k.shape).astype(np.float32)
    q = rng.standard_normal((2, 6, 32, 32)).astype(np.float32)
    want = protection.attention_kl(q, k, stored, 0.2, causal, window)
    for simd in turbokv.supported_simd():
        got = _core.attention_kl(q, k, stored, 0.2, causal, window or 0, simd)
        np.testing.assert_allclose(got, want, rtol=1e-3, err_msg=simd)
    with pytest.raises(ValueError):
        _core.attention_kl(q, k[:, :, :16], stored[:, :, :16], 0.2, True, 0, "scalar")  # rows > keys
    with pytest.raises(TypeError):
        _core.attention_kl(q.astype(np.float64), k, stored, 0.2, True, 0, "scalar")


@pytest.mark.parametrize("key_bits, key_mode", [(4, "mse"), (3, "prod"), (0, "mse")])
def test_the_cache_measures_its_stored_keys_as_fetch_returns_them(rng, key_bits, key_mode, monkeypatch):
    """The layer's probe decodes each stream's keys itself (no values, no whole-layer copy): it
    equals the numpy reference on fetch()'s keys, centred keys (offset added back) and float16
    keys included, at every SIMD level."""
    k = rng.standard_normal((2, 3, 300, 32)).astype(np.float32) + 4.0  # a shared offset to centre
    v = rng.standard_normal(k.shape).astype(np.float32)
    q = rng.standard_normal((2, 6, 32, 32)).astype(np.float32)
    for simd in turbokv.supported_simd():
        monkeypatch.setenv("TURBOKV_SIMD", simd)
        cache = turbokv.KVCache(head_dim=32, num_kv_heads=3, key_bits=key_bits, key_mode=key_mode,
                                protect_keys=False)
        cache.update(k, v)
        assert cache.simd == simd
        assert (cache._layer.key_offset.size > 0) == (key_bits > 0)
        stored = cache.fetch()[0]
        for causal, window in [(True, 0), (True, 7), (False, 0)]:
            want = protection.attention_kl(q, k, stored, 0.2, causal, window or None)
            got = cache._layer.attention_kl(q, k, 0.2, causal, window)
            # atol: float32 scores leave ~1e-8 nats of noise, felt by float16 keys' KL (~5e-7).
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-7, err_msg=f"{simd} {causal} {window}")
        with pytest.raises(ValueError, match="tokens"):
            cache._layer.attention_kl(q, k[:, :, :299].copy(), 0.2, True, 0)  # not the cache's length
        with pytest.raises(ValueError, match="batch"):
            cache._layer.attention_kl(q[:1], k[:1].copy(), 0.2, True, 0)  # not the cache's batch
        with pytest.raises(TypeError):
            cache._layer.attention_kl(q.astype(np.float64), k, 0.2, True, 0)

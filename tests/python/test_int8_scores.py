"""Int8 scores (``Codec.scores(precision="int8")``, ``KVCache.attention(scores="int8")``): a numpy
model of the rounding as oracle, bit-identity across SIMD levels, the path asserted, bad input."""

import math

import numpy as np
import pytest

import turbokv
from turbokv import reference

SIMD_LEVELS = turbokv.supported_simd()


def integer_top(bits: int, d: int) -> int:
    """The largest rounded query magnitude, as the library documents it: 127 (int8) up to 4 bits;
    for 5-8-bit keys the largest t with d * t^2 < 2^31 (int16), so that every exact sum fits int32."""
    if bits <= 4:
        return 127
    t = math.isqrt((2**31 - 1) // d)
    while d * t * t >= 2**31:
        t -= 1
    return min(t, 32767)


def centroid_top(bits: int, d: int) -> int:
    """The largest rounded centroid magnitude: 63 up to 4 bits (so that plain AVX2 can add 64 and
    multiply unsigned bytes without saturating), else the query's int16 top."""
    return 63 if bits <= 4 else integer_top(bits, d)


def integer_round(x: np.ndarray, top: int):
    """Rows of x rounded to integers with one scale per row (max |x| -> top)."""
    big = np.abs(x).max(axis=-1, keepdims=True)
    scale = np.where(big > 0, big / top, 0.0)
    return np.rint(x / np.where(big > 0, scale, 1.0)), scale


def numpy_int8_scores(codec: reference.Codec, q: np.ndarray, enc) -> tuple:
    """Scores from the integer-rounded rotated query and centroids (float64), and one rounding step
    of a query coordinate per score (the tolerance for float32-vs-float64 rounding ties)."""
    d = codec.head_dim
    top = integer_top(codec.mse_bits, d)
    rotated = q.astype(np.float64) @ codec.rotation.T / math.sqrt(d)
    qi, q_scale = integer_round(rotated, top)
    ci, c_scale = integer_round(codec.centroids[None, :], centroid_top(codec.mse_bits, d))
    idx = reference.unpack(enc.codes, d, codec.mse_bits)
    sums = qi @ ci[0][idx].T  # (m, n) exact integers
    norms = enc.norms.astype(np.float64)[None, :]
    step = q_scale * c_scale * np.abs(ci).max() * norms
    return sums * q_scale * c_scale * norms, step


@pytest.mark.parametrize("simd", SIMD_LEVELS)
@pytest.mark.parametrize("d", [16, 64, 80, 96, 128])
@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
def test_int8_scores_equal_the_numpy_model_of_their_rounding(bits, d, simd, rng, monkeypatch):
    monkeypatch.setenv("TURBOKV_SIMD", simd)
    codec = turbokv.Codec(head_dim=d, bits=bits, seed=3)
    assert codec.simd == simd
    oracle = reference.Codec(head_dim=d, bits=bits, seed=3)
    x = rng.standard_normal((300, d)).astype(np.float32)
    q = rng.standard_normal((5, d)).astype(np.float32)
    enc = codec.encode(x)
    got = codec.scores(q, enc, precision="int8")
    expect, step = numpy_int8_scores(oracle, q, enc)
    # A float32/float64 tie may move one query coordinate by one step: at most ~2 such flips.
    assert np.all(np.abs(got - expect) <= 2 * step + 1e-5 * np.abs(expect)), (bits, d, simd)
    exact = codec.scores(q, enc)
    assert not np.array_equal(got, exact)  # the int8 path ran
    # Its error is small next to the codec's own: rms under 15% of the exact-vs-true score error.
    true = q @ x.T
    assert np.sqrt(np.mean((got - exact) ** 2)) < 0.15 * np.sqrt(np.mean((exact - true) ** 2))


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
def test_int8_scores_are_bit_identical_at_every_simd_level(bits, rng, monkeypatch):
    d = 128
    x = rng.standard_normal((513, d)).astype(np.float32)
    q = rng.standard_normal((7, d)).astype(np.float32)
    results = {}
    for level in SIMD_LEVELS:
        monkeypatch.setenv("TURBOKV_SIMD", level)
        codec = turbokv.Codec(head_dim=d, bits=bits)
        results[level] = codec.scores(q, codec.encode(x), precision="int8")
    for level, got in results.items():
        assert np.array_equal(got, results["scalar"]), level


def test_int8_scores_refuse_what_they_do_not_implement(rng):
    x = rng.standard_normal((4, 64)).astype(np.float32)
    q = rng.standard_normal((2, 64)).astype(np.float32)
    codec = turbokv.Codec(head_dim=64, bits=4)
    with pytest.raises(ValueError, match="precision"):
        codec.scores(q, codec.encode(x), precision="int4")
    cache = turbokv.KVCache(64, 1)
    cache.update(x[None, None], x[None, None])
    with pytest.raises(ValueError, match="scores"):
        cache.attention(q[None, :, None], scores="fast")


@pytest.mark.parametrize("simd", SIMD_LEVELS)
@pytest.mark.parametrize("key_bits", [2, 3, 4, 6, 8])
def test_attention_with_int8_scores_stays_near_the_oracle(key_bits, simd, rng, monkeypatch):
    monkeypatch.setenv("TURBOKV_SIMD", simd)
    d = 128
    cache = turbokv.KVCache(d, 2, key_bits=key_bits, value_bits=4, protect_keys=False)
    cache.update(rng.standard_normal((2, 2, 600, d), dtype=np.float32),
                 rng.standard_normal((2, 2, 600, d), dtype=np.float32))
    q = rng.standard_normal((2, 8, 1, d), dtype=np.float32) * 2
    k, v = cache.fetch()
    expect = reference.attention(q, k, v)
    exact = cache.attention(q)
    assert cache.last_attention_scores == "exact"
    got = cache.attention(q, scores="int8")
    assert cache.last_attention_scores == "int8" and cache.last_attention_path == "codes"
    error = np.abs(got - expect).max() / np.abs(expect).max()
    assert 1e-6 < error < 2e-2, error  # differs from exact (the path ran), stays close
    assert np.abs(exact - expect).max() / np.abs(expect).max() < 1e-4


def test_int8_scores_apply_only_where_they_are_implemented(rng):
    d = 64
    k = rng.standard_normal((1, 2, 300, d), dtype=np.float32)
    q1 = rng.standard_normal((1, 4, 1, d), dtype=np.float32)
    wide = turbokv.KVCache(d, 2, key_bits=8, value_bits=8, protect_keys=False)
    wide.update(k, k)
    wide.attention(q1, scores="int8", values="int8")
    assert wide.last_attention_scores == "int8"  # 8-bit keys: int16 sums
    assert wide.last_attention_values == "exact"  # 8-bit values: float32 sums
    narrow = turbokv.KVCache(d, 2, key_bits=4, value_bits=4, protect_keys=False)
    narrow.update(k, k)
    narrow.attention(q1, scores="int8", path="tiles")
    assert narrow.last_attention_scores == "exact"  # tiles: matrix products in float32
    narrow.attention(q1, scores="int8", path="codes")
    assert narrow.last_attention_scores == "int8"


def test_the_cache_setting_is_the_default_and_survives_save_and_load(rng, tmp_path):
    d = 64
    k = rng.standard_normal((1, 2, 300, d), dtype=np.float32)
    q = rng.standard_normal((1, 4, 1, d), dtype=np.float32)
    cache = turbokv.KVCache(d, 2, key_bits=4, value_bits=4, protect_keys=False, scores="int8")
    cache.update(k, k)
    cache.attention(q)
    assert cache.last_attention_scores == "int8"
    cache.attention(q, scores="exact")  # a call can still ask for float32
    assert cache.last_attention_scores == "exact"
    turbokv.save_cache(tmp_path / "c.safetensors", [cache])
    (loaded,) = turbokv.load_cache(tmp_path / "c.safetensors")
    assert loaded.scores == "int8"
    np.testing.assert_array_equal(loaded.attention(q), cache.attention(q))
    with pytest.raises(ValueError, match="scores"):
        turbokv.KVCache(d, 2, scores="float8")

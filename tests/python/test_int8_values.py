"""Int8 values (``KVCache.attention(values="int8")``): close to the numpy oracle and not equal to
float32 values (the path ran), applied only where implemented, bad input refused, the cache
setting kept. The kernels' bit-identity across SIMD levels is tested in C++
(SimdParity.Int8ValuesAreBitIdenticalToScalar): here the softmax weights that feed them are
float32 and may differ in their last bits between levels."""

import numpy as np
import pytest

import turbokv
from turbokv import reference

SIMD_LEVELS = turbokv.supported_simd()


def filled_cache(rng, d=128, value_bits=4, **kwargs):
    cache = turbokv.KVCache(d, 2, key_bits=4, value_bits=value_bits, protect_keys=False, **kwargs)
    cache.update(rng.standard_normal((2, 2, 600, d), dtype=np.float32),
                 rng.standard_normal((2, 2, 600, d), dtype=np.float32))
    return cache


@pytest.mark.parametrize("simd", SIMD_LEVELS)
@pytest.mark.parametrize("value_bits", [1, 2, 3, 4])
def test_attention_with_int8_values_stays_near_the_oracle(value_bits, simd, rng, monkeypatch):
    monkeypatch.setenv("TURBOKV_SIMD", simd)
    cache = filled_cache(rng, value_bits=value_bits)
    assert cache.simd == simd
    q = rng.standard_normal((2, 8, 1, 128), dtype=np.float32) * 2
    k, v = cache.fetch()
    expect = reference.attention(q, k, v)
    exact = cache.attention(q)
    assert cache.last_attention_values == "exact"
    got = cache.attention(q, values="int8")
    assert cache.last_attention_values == "int8" and cache.last_attention_path == "codes"
    error = np.abs(got - expect).max() / np.abs(expect).max()
    assert 1e-6 < error < 2e-2, error  # differs from exact (the path ran), stays close
    assert np.abs(exact - expect).max() / np.abs(expect).max() < 1e-4


def test_int8_values_fast_follows_the_kernels():
    # AVX-VNNI at both x86 levels; plain AVX2 (maddubs, since session 28) where the rows fill
    # whole 16-byte chunks (4 bits: 8-byte ones) and head_dim is at least 64
    # (bench/results/int8_values_zen3_s29.md); at AVX-512 the VNNI kernel (with VBMI) where the
    # rows fit its lanes; never the portable reference (scalar, NEON). 3 bits only where the rows
    # are rewritten as 4-bit rows in registers (head_dim a multiple of 32), never unpacked to index
    # bytes (head_dim 40); never wider values.
    # Since session 39 not 3 bits at the AVX2 level where float32 values take vpermps (all but Zen 1).
    level = turbokv.default_simd()
    permutes = level == "avx2" and not turbokv.kernel_routes()["lane_swap_slow"]
    assert turbokv.int8_values_fast(3, 40) is False
    assert turbokv.int8_values_fast(5, 128) is False
    assert isinstance(turbokv.int8_values_fast(4, 128), bool)
    if level == "avx2" and turbokv.kernel_routes()["avx_vnni"]:
        assert all(turbokv.int8_values_fast(bits, d) for bits in (1, 2, 4) for d in (32, 64, 128))
        assert all(turbokv.int8_values_fast(3, d) is not permutes for d in (32, 64, 128))
    elif level == "avx2":  # plain maddubs: head_dim >= 64, whole 16-byte chunks (4 bits: 8-byte ones)
        fast = {(bits, d) for bits in (1, 2, 3, 4) for d in (32, 64, 80, 96, 128, 192, 256)
                if turbokv.int8_values_fast(bits, d)}
        three = set() if permutes else {(3, 64), (3, 96), (3, 128), (3, 192), (3, 256)}
        assert fast == {(1, 128), (1, 256), (2, 64), (2, 128), (2, 192), (2, 256),
                        (4, 64), (4, 80), (4, 96), (4, 128), (4, 192), (4, 256)} | three
    elif level == "avx512":
        assert turbokv.int8_values_fast(4, 128) == turbokv.int8_values_fast(2, 128)
        assert turbokv.int8_values_fast(3, 128) == turbokv.int8_values_fast(4, 128)
    else:
        assert not any(turbokv.int8_values_fast(bits, 128) for bits in (1, 2, 3, 4))


def test_int8_values_apply_only_where_they_are_implemented(rng):
    d = 64
    k = rng.standard_normal((1, 2, 300, d), dtype=np.float32)
    q1 = rng.standard_normal((1, 4, 1, d), dtype=np.float32)
    wide = turbokv.KVCache(d, 2, key_bits=4, value_bits=8, protect_keys=False)
    wide.update(k, k)
    wide.attention(q1, values="int8")
    assert wide.last_attention_values == "exact"  # 8-bit values: float32 sums
    narrow = turbokv.KVCache(d, 2, key_bits=4, value_bits=4, protect_keys=False)
    narrow.update(k, k)
    narrow.attention(q1, values="int8", path="tiles")
    assert narrow.last_attention_values == "exact"  # tiles: matrix products in float32
    narrow.attention(q1, values="int8", path="codes")
    assert narrow.last_attention_values == "int8"


def test_int8_values_refuse_unknown_precisions(rng):
    x = rng.standard_normal((4, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="values"):
        turbokv.KVCache(64, 1, values="int4")
    cache = turbokv.KVCache(64, 1)
    cache.update(x[None, None], x[None, None])
    with pytest.raises(ValueError, match="values"):
        cache.attention(x[None, :2, None], values="fast")


def test_the_values_setting_is_the_default_and_survives_save_and_load(rng, tmp_path):
    d = 64
    k = rng.standard_normal((1, 2, 300, d), dtype=np.float32)
    q = rng.standard_normal((1, 4, 1, d), dtype=np.float32)
    cache = turbokv.KVCache(d, 2, key_bits=4, value_bits=4, protect_keys=False, values="int8")
    cache.update(k, k)
    cache.attention(q)
    assert cache.last_attention_values == "int8"
    turbokv.save_cache(tmp_path / "c.npz", [cache])
    (loaded,) = turbokv.load_cache(tmp_path / "c.npz")
    assert loaded.values == "int8"
    assert np.array_equal(loaded.attention(q), cache.attention(q))

"""The key-lever experiments (turbokv.eval.key_calibration, turbokv.eval.outlier_split): they
are measured end to end by bench/key_levers.py; these tests check each does what its docstring
says."""

import numpy as np
import pytest

import turbokv
from turbokv import reference
from turbokv.cache import layer_seeds
from turbokv.eval.key_calibration import CalibratedKVCache, coordinate_scales
from turbokv.eval.outlier_split import OutlierSplitKVCache, loudest_channels

D, HEADS = 64, 2


def keys_with_unequal_rotated_variances(rng, n=256, loud=4.0):
    """Keys whose rotated coordinates (the codec's rotation, layer 0, seed 0) have RMS ``loud``
    on the first 8 coordinates and 1 elsewhere."""
    rotation = reference.rotation_matrix(D, layer_seeds(0, 0)[0])
    sigma = np.ones(D)
    sigma[:8] = loud
    y = rng.standard_normal((1, HEADS, n, D)) * sigma
    return (y @ rotation).astype(np.float32), rotation, sigma


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_coordinate_scales_recover_the_rotated_spread(rng):
    keys, rotation, sigma = keys_with_unequal_rotated_variances(rng, n=4096)
    s = coordinate_scales(keys, rotation)
    want = sigma / np.sqrt((sigma ** 2).mean())  # RMS of a unit vector's coordinate, x sqrt(d)
    np.testing.assert_allclose(s[0, 0], want, rtol=0.08)
    np.testing.assert_allclose(s[0, 1], want, rtol=0.08)


def test_coordinate_scales_are_clipped(rng):
    keys, rotation, _ = keys_with_unequal_rotated_variances(rng, loud=100.0)
    s = coordinate_scales(keys, rotation, clip=4.0)
    assert s.max() <= 4.0 and s.min() >= 0.25


def test_calibration_keeps_scores_exact_and_lowers_the_key_error(rng):
    keys, _, _ = keys_with_unequal_rotated_variances(rng)
    values = rng.standard_normal(keys.shape).astype(np.float32)
    queries = rng.standard_normal((1, 2 * HEADS, 16, D)).astype(np.float32)
    want = reference.attention(queries.astype(np.float64), keys.astype(np.float64),
                               values.astype(np.float64), causal=False)
    errors, key_errors = {}, {}
    for cls in (turbokv.KVCache, CalibratedKVCache):
        cache = cls(D, HEADS, key_bits=3, value_bits=0, protect_keys=False)
        cache.update(keys, values)
        errors[cls] = rel(cache.attention(queries, causal=False), want)
        decoded, _ = cache.fetch()  # the calibrated store is mapped back to the keys given
        key_errors[cls] = rel(decoded, keys)
    # 8 loud coordinates overload the N(0, 1/d) codebook; scaling them back evens out the error
    assert errors[CalibratedKVCache] < 0.8 * errors[turbokv.KVCache]
    assert key_errors[CalibratedKVCache] < 0.6 * key_errors[turbokv.KVCache]
    assert key_errors[CalibratedKVCache] < 0.25  # about 3-bit Lloyd-Max's sqrt(0.034)
    # at float16 keys calibration is off and the cache is the plain one
    cache = CalibratedKVCache(D, HEADS, key_bits=0, value_bits=0, protect_keys=False)
    cache.update(keys, values)
    assert rel(cache.attention(queries, causal=False), want) < 1e-3


def keys_with_loud_channels(rng, n=200, loud=(3, 17, 40, 61), size=8.0):
    k = rng.standard_normal((2, HEADS, n, D)).astype(np.float32)
    k[..., list(loud)] *= size
    return k


def test_loudest_channels_finds_the_planted_ones(rng):
    k = keys_with_loud_channels(rng)
    k[..., 5] += 100.0  # a constant offset is not loud: the mean is removed first
    chosen = loudest_channels(k, 4)
    assert chosen.shape == (2, HEADS, 4)
    assert all(sorted(row) == [3, 17, 40, 61] for row in chosen.reshape(-1, 4).tolist())


def test_outlier_split_keeps_the_loud_channels_exact_and_counts_their_bytes(rng):
    keys = keys_with_loud_channels(rng)
    values = rng.standard_normal(keys.shape).astype(np.float32)
    queries = rng.standard_normal((2, 2 * HEADS, 16, D)).astype(np.float32)
    want = reference.attention(queries.astype(np.float64), keys.astype(np.float64),
                               values.astype(np.float64), causal=False)
    split = OutlierSplitKVCache(D, HEADS, key_bits=3, value_bits=0, protect_keys=False)
    assert split.outlier_channels == 4  # 1 bit per coordinate at head_dim 64
    plain = turbokv.KVCache(D, HEADS, key_bits=4, value_bits=0, protect_keys=False)
    for cache in (split, plain):
        cache.update(keys[:, :, :150], values[:, :, :150])
        cache.update(keys[:, :, 150:], values[:, :, 150:])  # later updates reuse the channels
    decoded, _ = split.fetch()
    np.testing.assert_allclose(decoded[..., [3, 17, 40, 61]], keys[..., [3, 17, 40, 61]], rtol=1e-3)
    # 2 x 200 tokens x 2 heads x 4 channels x float16 on top of the 3-bit codes
    codes_only = turbokv.KVCache(D, HEADS, key_bits=3, value_bits=0, protect_keys=False)
    codes_only.update(keys, values)
    assert split.used_nbytes == codes_only.used_nbytes + 2 * 200 * HEADS * 4 * 2
    # at matched key bits (3 + 1 vs 4) the split wins on keys this loud
    errors = {c: rel(c.attention(queries, causal=False), want) for c in (split, plain)}
    assert errors[split] < 0.7 * errors[plain]


def test_outlier_split_refuses_what_it_does_not_implement(rng):
    keys = keys_with_loud_channels(rng)
    cache = OutlierSplitKVCache(D, HEADS, key_bits=4, value_bits=4)
    cache.update(keys, keys)
    with pytest.raises(NotImplementedError):
        cache.attention(rng.standard_normal((2, 4, 1, D)).astype(np.float32),
                        key_mask=np.zeros((2, 200), bool))
    with pytest.raises(NotImplementedError):
        cache.trim(1)


@pytest.mark.hf
def test_lever_caches_choose_the_layer_class_by_setting():
    from turbokv import hf
    from turbokv.eval.levers import lever_caches

    with lever_caches():
        assert type(hf.KVCache(64, 2, lever="calibration")) is CalibratedKVCache
        split = hf.KVCache(64, 2, lever="outlier split", outlier_bits=0.5)
        assert type(split) is OutlierSplitKVCache and split.outlier_channels == 2
        assert type(hf.KVCache(64, 2, key_bits=4)) is turbokv.KVCache
        with pytest.raises(ValueError, match="lever"):
            hf.KVCache(64, 2, lever="magic")
        with pytest.raises(TypeError):
            hf.KVCache(64, 2, outlier_bits=1.0)  # only the split takes it
    assert hf.KVCache is turbokv.KVCache

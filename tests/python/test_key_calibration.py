"""The key-calibration experiment (turbokv.eval.key_calibration): the lever is measured end to
end by bench/key_calibration.py; these tests check it does what its docstring says."""

import numpy as np

import turbokv
from turbokv import reference
from turbokv.cache import layer_seeds
from turbokv.eval.key_calibration import CalibratedKVCache, coordinate_scales

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

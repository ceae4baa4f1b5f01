"""Every public entry point x every kind of bad input: a clear exception (or the documented
handling), and a cache left exactly as it was by a rejected call."""

import numpy as np
import pytest

import turbokv

D, HEADS = 32, 2
rng = np.random.default_rng(7)
GOOD = rng.standard_normal((1, HEADS, 3, D), dtype=np.float32)


def with_value(value, dtype=np.float32):
    x = GOOD.astype(dtype)
    x[0, 1, 2, 5] = value
    return x


# (label, array, expected exception) for the (batch, heads, tokens, head_dim) entry points.
BAD_TOKENS = [
    ("float64 beyond float32", with_value(1e300, np.float64), ValueError),
    ("int32", GOOD.astype(np.int32), TypeError),
    ("bool", GOOD > 0, TypeError),
    ("complex", GOOD.astype(np.complex64), TypeError),
    ("rank 3", GOOD[0], ValueError),
    ("rank 5", GOOD[None], ValueError),
    ("wrong head_dim", GOOD[..., :16].copy(), ValueError),
    ("wrong heads", np.concatenate([GOOD, GOOD], axis=1), ValueError),
    ("NaN", with_value(np.nan), ValueError),
    ("+Inf", with_value(np.inf), ValueError),
    ("-Inf", with_value(-np.inf), ValueError),
    ("beyond float16 storage", with_value(1e30), ValueError),
    ("zero batch", GOOD[:0], ValueError),
    ("not an array", "keys", TypeError),
]


def fresh_cache(**kw):
    cache = turbokv.KVCache(D, HEADS, key_bits=4, value_bits=3, residual_window=2, **kw)
    cache.update(GOOD, GOOD)
    return cache


def snapshot(cache):
    return cache.offset, {k: a.copy() for k, a in cache.state.items()}


def assert_unchanged(cache, before):
    offset, state = before
    assert cache.offset == offset
    after = cache.state
    assert after.keys() == state.keys()
    for k in state:
        np.testing.assert_array_equal(after[k], state[k])


UPDATE_ENTRIES = ["update keys", "update values", "update_and_fetch"]


def update_with(cache, entry, bad):
    """The update entry point named by ``entry``, with ``bad`` where it names."""
    if entry == "update keys":
        cache.update(bad, GOOD)
    elif entry == "update values":
        cache.update(GOOD, bad)
    else:
        cache.update_and_fetch(bad, bad)


@pytest.mark.parametrize("label, bad, error", BAD_TOKENS, ids=[b[0] for b in BAD_TOKENS])
@pytest.mark.parametrize("entry", UPDATE_ENTRIES)
def test_kvcache_updates_reject_bad_tokens(entry, label, bad, error):
    cache = fresh_cache()
    before = snapshot(cache)
    with pytest.raises(error):
        update_with(cache, entry, bad)
    assert_unchanged(cache, before)


def query_with(value):
    q = rng.standard_normal((1, 4, 1, D)).astype(np.float32)
    q[0, 2, 0, 7] = value
    return q


QUERY_CASES = [
    ("int64", np.zeros((1, 4, 1, D), np.int64), TypeError),
    ("NaN", query_with(np.nan), ValueError),
    ("+Inf", query_with(np.inf), ValueError),
    ("-Inf", query_with(-np.inf), ValueError),
    ("rank 3", np.zeros((4, 1, D), np.float32), ValueError),
    ("wrong head_dim", np.zeros((1, 4, 1, 16), np.float32), ValueError),
    ("heads not a multiple", np.zeros((1, 3, 1, D), np.float32), ValueError),
    ("batch mismatch", np.zeros((2, 4, 1, D), np.float32), ValueError),
    ("q_len beyond the cache", np.zeros((1, 4, 4, D), np.float32), ValueError),
    ("bad key_mask shape", "mask", ValueError),
]


@pytest.mark.parametrize("label, q, error", QUERY_CASES, ids=[c[0] for c in QUERY_CASES])
def test_kvcache_attention_rejects_bad_queries(label, q, error):
    cache = fresh_cache()
    before = snapshot(cache)
    with pytest.raises(error):
        if isinstance(q, str):
            cache.attention(np.zeros((1, 4, 1, D), np.float32), key_mask=np.ones((1, 2), bool))
        else:
            cache.attention(q)
    assert_unchanged(cache, before)


def test_kvcache_attention_names_both_batches():
    with pytest.raises(ValueError, match=r"batch 2 \(4 streams of 2 KV heads\) but the cache holds 2 streams "
                                         r"\(batch 1\)"):
        fresh_cache().attention(np.zeros((2, 4, 1, D), np.float32))


GOOD_Q = np.zeros((1, 4, 1, D), np.float32)
OPTION_CASES = [
    ("scale 0", dict(scale=0.0)),
    ("scale negative", dict(scale=-0.1)),
    ("scale NaN", dict(scale=float("nan"))),
    ("scale Inf", dict(scale=float("inf"))),
    ("softcap 0", dict(softcap=0.0)),
    ("softcap negative", dict(softcap=-30.0)),
    ("softcap NaN", dict(softcap=float("nan"))),
    ("sinks wrong length", dict(sinks=np.zeros(3, np.float32))),
    ("sinks NaN", dict(sinks=np.array([0, np.nan, 0, 0], np.float32))),
    ("key_mask one token short", dict(key_mask=np.ones((1, 2), bool))),
    ("key_mask wrong batch", dict(key_mask=np.ones((2, 3), bool))),
    ("path unknown", dict(path="dense")),
]


@pytest.mark.parametrize("label, options", OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_kvcache_attention_rejects_bad_options(label, options):
    cache = fresh_cache()
    with pytest.raises(ValueError):
        cache.attention(GOOD_Q, **options)


def test_kvcache_documented_handling():
    cache = fresh_cache()
    # Non-contiguous and read-only inputs are fine (one copy at most); zero new tokens is a no-op.
    strided = np.concatenate([GOOD, GOOD], axis=3)[..., ::2]
    read_only = GOOD.copy()
    read_only.flags.writeable = False
    cache.update(strided, read_only)
    cache.update(GOOD[:, :, :0], GOOD[:, :, :0])
    assert cache.offset == 6
    with pytest.raises((ValueError, TypeError)):
        cache.trim(-1)
    with pytest.raises(ValueError):
        cache.trim(7)
    assert cache.attention(np.zeros((1, 4, 0, D), np.float32)).shape == (1, 4, 0, D)


SHAPE_AND_DTYPE = [
    ("int64", np.zeros((2, D), np.int64), TypeError),
    ("int8", np.zeros((2, D), np.int8), TypeError),
    ("object", np.array([[None] * D]), TypeError),
    ("0-d", np.float32(1.0), ValueError),
    ("wrong head_dim", np.zeros((2, D + 1), np.float32), ValueError),
]
# Values only encode refuses (scores follows IEEE arithmetic for any query, as numpy's matmul:
# test_codec_scores_of_a_non_finite_query_are_nan).
VALUES = [
    ("NaN", np.full((2, D), np.nan, np.float32), ValueError),
    ("Inf", np.full((2, D), np.inf, np.float32), ValueError),
    ("norm overflows float32", np.full((2, D), 3e38, np.float32), ValueError),
]
CODECS = [turbokv.Codec, turbokv.reference.Codec]


@pytest.mark.parametrize("label, x, error", SHAPE_AND_DTYPE + VALUES,
                         ids=[c[0] for c in SHAPE_AND_DTYPE + VALUES])
@pytest.mark.parametrize("impl", CODECS, ids=["cpp", "numpy"])
def test_codec_encode(impl, label, x, error):
    with pytest.raises(error):
        impl(D, 4).encode(x)


@pytest.mark.parametrize("label, x, error", SHAPE_AND_DTYPE, ids=[c[0] for c in SHAPE_AND_DTYPE])
@pytest.mark.parametrize("impl", CODECS, ids=["cpp", "numpy"])
def test_codec_scores(impl, label, x, error):
    codec = impl(D, 4)
    with pytest.raises(error):
        codec.scores(x, codec.encode(np.ones((3, D), np.float32)))


@pytest.mark.parametrize("bits, precision", [(4, "exact"), (4, "int8"), (3, "int8"), (8, "int8")],
                         ids=["exact", "int8 sums", "int8 sums, 3-bit", "int16 sums"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["NaN", "+Inf", "-Inf"])
def test_codec_scores_of_a_non_finite_query_are_nan(bits, precision, bad):
    """A query holding NaN or Inf scores NaN against every key at either precision, as numpy's
    matmul would; the integer rounding alone would turn NaN coordinates into 0 (zero scores).
    The other queries' scores are what they are without it."""
    codec = turbokv.Codec(D, bits)
    enc = codec.encode(rng.standard_normal((5, D), dtype=np.float32))
    q = rng.standard_normal((3, D), dtype=np.float32)
    clean = codec.scores(q, enc, precision=precision)
    for poisoned in ([7], list(range(D))):  # one coordinate, then the whole row
        bad_q = q.copy()
        bad_q[1, poisoned] = bad
        got = codec.scores(bad_q, enc, precision=precision)
        assert np.isnan(got[1]).all(), got[1]
        np.testing.assert_array_equal(got[[0, 2]], clean[[0, 2]])


def test_huge_sizes_fail_cleanly():
    codec = turbokv.Codec(D, 4)
    # A broadcast view claims 2^31 rows without memory: the outputs cannot be allocated, and that
    # surfaces as MemoryError before any C++ code runs, not as an index overflow.
    huge = np.broadcast_to(np.ones(D, np.float32), (2**31, D))
    with pytest.raises(MemoryError):
        codec.encode(huge)


def test_decode_rejects_foreign_encoded():
    codec = turbokv.Codec(D, 4)
    enc = codec.encode(np.ones((3, D), np.float32))
    for other in (turbokv.Codec(D + 8, 4), turbokv.Codec(D, 3), turbokv.Codec(D, 4, mode="prod"),
                  turbokv.Codec(D, 4, norm_dtype="float16")):
        with pytest.raises(ValueError):
            other.decode(enc)
    with pytest.raises(TypeError):
        codec.decode({"codes": enc.codes})


HF_BAD = [
    ("NaN", lambda t: t.masked_fill(t > 2.5, float("nan")), ValueError),
    ("Inf", lambda t: t.masked_fill(t > 2.5, float("inf")), ValueError),
    ("int64", lambda t: t.long(), TypeError),
    ("rank 3", lambda t: t[0], ValueError),
    ("wrong head_dim", lambda t: t[..., :16], ValueError),
    ("meta device", lambda t: t.to("meta"), NotImplementedError),
]


@pytest.mark.hf
@pytest.mark.parametrize("label, corrupt, error", HF_BAD, ids=[c[0] for c in HF_BAD])
def test_hf_cache_rejects_bad_states(label, corrupt, error):
    import torch  # the [hf] extra, which scripts/setup.sh installs

    import turbokv.hf as thf

    cache = thf.TurboQuantCache(key_bits=4, value_bits=4)
    good = torch.from_numpy(GOOD.copy())
    good[0, 0, 0, 0] = 3.0  # so the NaN/Inf masks hit something
    cache.update(good, good, 0)
    before = cache.layers[0].cache.state
    with pytest.raises(error):
        cache.update(corrupt(good), good, 0)
    assert cache.get_seq_length() == 3
    after = cache.layers[0].cache.state
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


MISNAMED_SETTINGS = [
    ("make_cache", lambda: turbokv.make_cache(2, D, HEADS, bits=4), "make_cache got unknown setting 'bits'"),
    ("make_cache boundary", lambda: turbokv.make_cache(2, D, HEADS, protect_boundary_layers=1,
                                                       boundary_settings={"kbits": 8}),
     "make_cache's boundary_settings got unknown setting 'kbits'"),
    ("make_cache layer", lambda: turbokv.make_cache(2, D, HEADS, layer_settings=[None, {"keybits": 8, "vbits": 8}]),
     r"make_cache's layer_settings\[1\] got unknown settings 'keybits', 'vbits'"),
    pytest.param("TurboQuantCache", lambda: __import__("turbokv.hf").hf.TurboQuantCache(key_bits=4, foo=3),
                 "TurboQuantCache got unknown setting 'foo'", marks=pytest.mark.hf, id="TurboQuantCache"),
    pytest.param("TurboQuantCache layer",
                 lambda: __import__("turbokv.hf").hf.TurboQuantCache(layer_settings=[{"key_bit": 8}]),
                 r"TurboQuantCache's layer_settings\[0\] got unknown setting 'key_bit'", marks=pytest.mark.hf,
                 id="TurboQuantCache layer"),
]


@pytest.mark.parametrize("label, build, message", MISNAMED_SETTINGS,
                         ids=[c[0] if isinstance(c, tuple) else c.id for c in MISNAMED_SETTINGS])
def test_misnamed_settings_name_the_builder_and_the_settings_it_takes(label, build, message):
    """A misspelt setting is named with the function that got it and the list of settings,
    not as KVCache.__init__'s unexpected keyword."""
    with pytest.raises(TypeError, match=message) as caught:
        build()
    assert "key_bits, value_bits" in str(caught.value)


def fresh_dense_cache():
    cache = turbokv.DenseKVCache(D, HEADS)
    cache.update(GOOD, GOOD)
    return cache


def dense_snapshot(cache):
    return cache.offset, [a.copy() for a in cache.fetch()]


# The dense baseline stores float32: 1e30 fits it.
DENSE_BAD_TOKENS = [case for case in BAD_TOKENS if case[0] != "beyond float16 storage"]


@pytest.mark.parametrize("label, bad, error", DENSE_BAD_TOKENS, ids=[b[0] for b in DENSE_BAD_TOKENS])
@pytest.mark.parametrize("entry", UPDATE_ENTRIES)
def test_dense_cache_updates_reject_bad_tokens_as_kvcache_does(entry, label, bad, error):
    cache = fresh_dense_cache()
    offset, before = dense_snapshot(cache)
    with pytest.raises(error):
        update_with(cache, entry, bad)
    assert cache.offset == offset
    for a, b in zip(before, cache.fetch()):
        np.testing.assert_array_equal(a, b)


DENSE_QUERY_CASES = [case for case in QUERY_CASES if not isinstance(case[1], str)]  # no key_mask


@pytest.mark.parametrize("label, q, error", DENSE_QUERY_CASES, ids=[c[0] for c in DENSE_QUERY_CASES])
def test_dense_cache_attention_rejects_bad_queries_as_kvcache_does(label, q, error):
    with pytest.raises(error):
        fresh_dense_cache().attention(q)


def test_dense_cache_refuses_what_it_does_not_take():
    with pytest.raises(TypeError, match="DenseKVCache got unknown setting 'key_bit'"):
        turbokv.DenseKVCache(D, HEADS, key_bit=4)
    turbokv.DenseKVCache(D, HEADS, key_bits=4, value_bits=2)  # KVCache's settings: accepted, no effect
    with pytest.raises(TypeError, match="dtype"):
        turbokv.DenseKVCache(D, HEADS, dtype=np.int8)
    for scale in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            fresh_dense_cache().attention(np.zeros((1, 4, 1, D), np.float32), scale=scale)
    with pytest.raises(ValueError, match="empty"):
        turbokv.DenseKVCache(D, HEADS).attention(np.zeros((1, 4, 1, D), np.float32))
    cache = turbokv.DenseKVCache(D, HEADS, dtype=np.float16)
    with pytest.raises(ValueError, match="float16 range"):
        cache.update(with_value(1e30), GOOD)
    assert cache.offset == 0


def test_layer_helpers_refuse_what_they_do_not_take():
    with pytest.raises(ValueError, match="num_layers must be in 0..1048576, got -1"):
        turbokv.make_cache(-1, D, HEADS)
    with pytest.raises(TypeError, match="summarize takes KVCache objects"):
        turbokv.summarize([fresh_cache(), 3])
    caches = [fresh_cache(), None]
    assert turbokv.summary_text(caches) == turbokv.summary_text(turbokv.summarize(caches))

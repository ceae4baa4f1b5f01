"""Every input kind the entry points document: numpy float16/float32/float64 and CPU torch
float16/bfloat16/float32 give the results of the same values passed as float32; anything else is
a TypeError that says what to pass, and a tensor on another device a NotImplementedError."""

import numpy as np
import pytest
import torch

import turbokv

D, HEADS = 32, 2
rng = np.random.default_rng(11)
# Values that bfloat16 and float16 hold exactly, so every kind carries the same numbers.
BASE = np.round(rng.standard_normal((1, HEADS, 5, D)) * 8) / 8
QUERY = np.round(rng.standard_normal((1, 4, 1, D)) * 8) / 8

KINDS = {
    "numpy float16": lambda a: a.astype(np.float16),
    "numpy float32": lambda a: a.astype(np.float32),
    "numpy float64": lambda a: a.astype(np.float64),
    "torch float16": lambda a: torch.from_numpy(a).to(torch.float16),
    "torch bfloat16": lambda a: torch.from_numpy(a).to(torch.bfloat16),
    "torch float32": lambda a: torch.from_numpy(a).to(torch.float32),
    "numpy float32, strided": lambda a: np.repeat(a.astype(np.float32), 2, axis=-1)[..., ::2],
}


def run_cache(convert):
    cache = turbokv.KVCache(D, HEADS, key_bits=4, value_bits=3)
    cache.update(convert(BASE), convert(BASE))
    k, v = cache.update_and_fetch(convert(BASE[:, :, :1]), convert(BASE[:, :, :1]))
    return cache.attention(convert(QUERY)), k, v


@pytest.mark.parametrize("kind", KINDS)
def test_cache_entry_points_take_every_documented_kind(kind):
    want = run_cache(KINDS["numpy float32"])
    got = run_cache(KINDS[kind])
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("kind", KINDS)
def test_codec_takes_every_documented_kind(kind):
    codec = turbokv.Codec(D, 4)
    x = BASE.reshape(-1, D)
    want = codec.encode(x.astype(np.float32))
    got = codec.encode(KINDS[kind](x))
    np.testing.assert_array_equal(got.codes, want.codes)
    np.testing.assert_array_equal(got.norms, want.norms)
    np.testing.assert_array_equal(codec.scores(KINDS[kind](x[:2]), want),
                                  codec.scores(x[:2].astype(np.float32), want))


BAD_KINDS = {
    "torch int64": (torch.zeros(1, HEADS, 1, D, dtype=torch.int64), TypeError, "float16/bfloat16/float32"),
    "torch float64": (torch.zeros(1, HEADS, 1, D, dtype=torch.float64), TypeError, "tensors"),
    "torch complex64": (torch.zeros(1, HEADS, 1, D, dtype=torch.complex64), TypeError, "float32"),
    "numpy int8": (np.zeros((1, HEADS, 1, D), np.int8), TypeError, "astype"),
    # A tensor that is not on the CPU (meta stands in for CUDA, which this machine lacks).
    "meta device": (torch.zeros(1, HEADS, 1, D, device="meta"), NotImplementedError, r"\.cpu\(\)"),
}


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_every_entry_point_refuses_the_same_way(kind):
    bad, error, message = BAD_KINDS[kind]
    cache = turbokv.KVCache(D, HEADS)
    good = BASE[:, :, :1].astype(np.float32)
    with pytest.raises(error, match=message):
        cache.update(bad, good)
    with pytest.raises(error, match=message):
        cache.update_and_fetch(good, bad)
    cache.update(good, good)
    with pytest.raises(error, match=message):
        cache.attention(torch.cat([bad, bad], dim=1) if bad.__class__ is torch.Tensor
                        else np.concatenate([bad, bad], axis=1))
    with pytest.raises(error, match=message):
        turbokv.Codec(D, 4).encode(bad[0, 0])
    with pytest.raises(error, match=message):
        turbokv.reference.Codec(D, 4).encode(bad[0, 0])
    assert cache.offset == 1

"""C++ against the numpy oracle, and every SIMD level against scalar."""

import numpy as np
import pytest

import turbokv
from turbokv import _core, reference

DIMS = [8, 16, 64, 80, 96, 112, 128, 160, 192, 256]
LEVELS = _core.supported_simd()


def codes_of(codec, enc):
    return reference.unpack(np.asarray(enc.codes), codec.head_dim, codec.bits - (codec.mode == "prod"))


def test_randomness_matches_bit_for_bit():
    # The C++ Hadamard signs are visible through the rotation of basis vectors.
    for d in (16, 128):
        codec = turbokv.Codec(d, 4, seed=77)
        np.testing.assert_allclose(codec._core.rotate(np.eye(d, dtype=np.float32)).T,
                                   reference.rotation_matrix(d, 77), rtol=0, atol=1e-6)
    # The dense rotation goes through a QR on both sides: equal up to float rounding.
    for d in (80, 96):
        codec = turbokv.Codec(d, 4, seed=77)
        np.testing.assert_allclose(codec._core.rotate(np.eye(d, dtype=np.float32)).T,
                                   reference.rotation_matrix(d, 77), rtol=0, atol=1e-6)


@pytest.mark.parametrize("bits", range(1, 9))
def test_codebooks_match(bits):
    centroids, bounds, mse = _core.codebook(bits)
    np.testing.assert_allclose(centroids, reference.lloyd_max_codebook(bits), rtol=1e-7, atol=1e-7)
    np.testing.assert_array_equal(bounds, reference.boundaries(reference.lloyd_max_codebook(bits)).astype(np.float32))


@pytest.mark.parametrize("bits", range(0, 9))
def test_packing_matches(bits, rng):
    for n in (1, 7, 8, 9, 64, 80, 128, 1000):
        idx = rng.integers(0, 2**bits, n).astype(np.uint8)
        packed = reference.pack(idx, bits)
        for level in LEVELS:
            np.testing.assert_array_equal(_core.pack(idx, bits, level), packed)
            np.testing.assert_array_equal(_core.unpack(packed, n, bits, level), idx)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("mode", ["mse", "prod"])
def test_cpp_agrees_with_reference(d, mode, rng):
    x = rng.standard_normal((3000, d)).astype(np.float32) * rng.uniform(0.1, 10, (3000, 1)).astype(np.float32)
    q = rng.standard_normal((4, d)).astype(np.float32)
    for bits in (1, 2, 3, 4, 5, 8) if mode == "mse" else (1, 2, 3, 4, 8):
        fast = turbokv.Codec(d, bits, mode=mode, seed=d)
        slow = reference.Codec(d, bits, mode=mode, seed=d)
        ef, es = fast.encode(x), slow.encode(x)
        agree = (codes_of(fast, ef) == codes_of(slow, es)).mean()
        # Differences only where float32 vs float64 rounding lands on a decision boundary.
        assert agree >= 0.9999, (bits, agree)
        np.testing.assert_allclose(ef.norms, es.norms, rtol=1e-6)
        if mode == "prod":
            assert (ef.qjl == es.qjl).mean() >= 0.999
            np.testing.assert_allclose(ef.residual_norms, es.residual_norms, rtol=1e-4, atol=1e-6)
        # Same codes in, same vectors out: decode and scores of the C++ codes by both.
        decoded = fast.decode(ef)
        scale = np.abs(decoded).max()
        np.testing.assert_allclose(decoded, slow.decode(ef), rtol=1e-5, atol=1e-5 * scale)
        s_fast, s_slow = fast.scores(q, ef), slow.scores(q, ef)
        np.testing.assert_allclose(s_fast, s_slow, rtol=1e-5, atol=1e-5 * np.abs(s_slow).max())


@pytest.mark.parametrize("mode", ["mse", "prod"])
@pytest.mark.parametrize("norm_dtype", ["float32", "float16"])
def test_scores_equal_decode_then_matmul(mode, norm_dtype, rng):
    for d in (64, 96, 128):
        codec = turbokv.Codec(d, 4, mode=mode, norm_dtype=norm_dtype)
        x = rng.standard_normal((500, d)).astype(np.float32)
        q = rng.standard_normal((6, d)).astype(np.float32)
        enc = codec.encode(x)
        expect = q.astype(np.float64) @ codec.decode(enc).astype(np.float64).T
        got = codec.scores(q, enc)
        bound = 1e-5 * (np.abs(q)[:, None, :] * np.abs(codec.decode(enc))[None]).sum(-1)
        assert np.all(np.abs(got - expect) <= bound + 1e-6)


@pytest.mark.parametrize("level", LEVELS[1:])
def test_simd_levels_store_identical_bits(level, monkeypatch, rng):
    x = rng.standard_normal((500, 1)).astype(np.float32)
    for d in DIMS + [1024]:
        x = rng.standard_normal((200, d)).astype(np.float32) * np.logspace(-3, 3, 200, dtype=np.float32)[:, None]
        for mode, bits_range in (("mse", range(1, 9)), ("prod", range(1, 9))):
            for bits in bits_range:
                monkeypatch.setenv("TURBOKV_SIMD", "scalar")
                a = turbokv.Codec(d, bits, mode=mode, seed=3).encode(x)
                monkeypatch.setenv("TURBOKV_SIMD", level)
                b = turbokv.Codec(d, bits, mode=mode, seed=3).encode(x)
                np.testing.assert_array_equal(a.codes, b.codes)
                np.testing.assert_array_equal(a.norms, b.norms)
                if mode == "prod":
                    np.testing.assert_array_equal(a.qjl, b.qjl)
                    np.testing.assert_array_equal(a.residual_norms, b.residual_norms)

"""turbokv.KVCache: fused attention against the float64 oracle, GQA, chunking, trim, persistence."""

import numpy as np
import pytest

import turbokv
from turbokv import reference

SETTINGS = [
    dict(key_bits=4, value_bits=4),
    dict(key_bits=4, value_bits=2),
    dict(key_bits=3, value_bits=3, residual_window=16),
    dict(key_bits=0, value_bits=4),
    dict(key_bits=8, value_bits=0),
    dict(key_bits=4, value_bits=3, key_mode="prod", value_mode="prod"),
    dict(key_bits=5, value_bits=1, norm_dtype="float16", key_norm_correction=True),
]


def tokens(rng, batch, heads, n, d):
    return rng.standard_normal((batch, heads, n, d), dtype=np.float32)


def relative_error(got, expect):
    return np.abs(got - expect).max() / np.abs(expect).max()


@pytest.mark.parametrize("d", [8, 64, 80, 128, 256])
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_fused_attention_equals_decode_then_float64_attention(d, settings, rng):
    cache = turbokv.KVCache(d, 2, **settings)
    cache.update(tokens(rng, 2, 2, 290, d), tokens(rng, 2, 2, 290, d))  # crosses a 256-token chunk
    cache.update(tokens(rng, 2, 2, 3, d), tokens(rng, 2, 2, 3, d))
    q = tokens(rng, 2, 6, 3, d)
    k, v = cache.fetch()
    expect = reference.attention(q, k, v)
    assert relative_error(cache.attention(q), expect) < 1e-4
    assert relative_error(cache.attention(q, threaded=False), expect) < 1e-4
    assert relative_error(cache.attention(q, scale=0.3), reference.attention(q, k, v, scale=0.3)) < 1e-4
    for path in ("codes", "tiles"):  # both ways of doing a block, each asserted to have run
        assert relative_error(cache.attention(q, path=path), expect) < 1e-4
        assert cache.last_attention_path == path


SIMD_LEVELS = turbokv.supported_simd()


@pytest.mark.parametrize("simd", SIMD_LEVELS)
@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_prefill_sized_attention_on_tiles_equals_the_oracle(settings, simd, rng, monkeypatch):
    """A prompt-sized q_len (several work items per stream) takes the tiles path by default, at
    every SIMD level, and equals the float64 oracle and the codes path."""
    monkeypatch.setenv("TURBOKV_SIMD", simd)
    d = 64
    cache = turbokv.KVCache(d, 2, protect_keys=False, **settings)
    assert cache.simd == simd
    cache.update(tokens(rng, 2, 2, 200, d), tokens(rng, 2, 2, 200, d))
    cache.update(tokens(rng, 2, 2, 150, d), tokens(rng, 2, 2, 150, d))  # a chunk of prefill
    q = tokens(rng, 2, 6, 150, d)
    k, v = cache.fetch()
    expect = reference.attention(q, k, v)
    got = cache.attention(q)
    assert cache.last_attention_path == "tiles"
    assert relative_error(got, expect) < 1e-4
    assert relative_error(cache.attention(q, path="codes"), got) < 1e-4
    assert cache.last_attention_path == "codes"


@pytest.mark.parametrize("path", ["codes", "tiles"])
def test_strided_queries_are_read_in_place_and_positions_first_output_is_written_in_place(path, rng):
    """A model's queries (a transposed view of (batch, q_len, q_heads, head_dim)), broadcast and
    reversed views are read through their strides with the results of a contiguous copy, bit for
    bit; positions_first=True writes (batch, q_len, q_heads, head_dim), the transpose of the
    default output, bit for bit. NaN in a strided view is still refused, naming its place."""
    d = 64
    cache = turbokv.KVCache(d, 2, protect_keys=False)
    cache.update(tokens(rng, 2, 2, 300, d), tokens(rng, 2, 2, 300, d))
    model_layout = rng.standard_normal((2, 40, 6, d), dtype=np.float32)
    views = {"transposed": model_layout.transpose(0, 2, 1, 3),
             "broadcast": np.broadcast_to(model_layout[:1, :1, :1].transpose(0, 2, 1, 3), (2, 6, 40, d)),
             "reversed heads": model_layout.transpose(0, 2, 1, 3)[:, ::-1]}
    for name, q in views.items():
        assert not q.flags.c_contiguous, name
        want = cache.attention(np.ascontiguousarray(q), path=path)
        assert np.array_equal(cache.attention(q, path=path), want), name
        assert cache.last_attention_path == path
        out = cache.attention(q, path=path, positions_first=True)
        assert out.shape == (2, 40, 6, d) and out.flags.c_contiguous
        assert np.array_equal(out, want.transpose(0, 2, 1, 3)), name
    bad = model_layout.copy()
    bad[1, 7, 4, 3] = np.nan
    with pytest.raises(ValueError, match="batch 1, head 4, position 7"):
        cache.attention(bad.transpose(0, 2, 1, 3))
    with pytest.raises(TypeError, match="positions_first"):
        cache.attention(views["transposed"], positions_first=1)
    assert cache.attention(views["transposed"][:, :, :0], positions_first=True).shape == (2, 0, 6, d)


@pytest.mark.parametrize("path", ["codes", "tiles"])
@pytest.mark.parametrize("q_len", [1, 40, 90])  # 90 queries over 60 cached tokens: cross-attention
def test_non_causal_attention_sees_every_token(path, q_len, rng):
    d = 32
    cache = turbokv.KVCache(d, 2, key_bits=4, value_bits=4)
    cache.update(tokens(rng, 2, 2, 60, d), tokens(rng, 2, 2, 60, d))
    q = tokens(rng, 2, 4, q_len, d)
    k, v = cache.fetch()
    got = cache.attention(q, causal=False, path=path)
    assert cache.last_attention_path == path
    assert relative_error(got, reference.attention(q, k, v, causal=False)) < 1e-4
    if q_len == 1:  # the newest position sees every token either way
        assert relative_error(got, cache.attention(q)) < 1e-6
    elif q_len <= 60:  # the flag is not ignored: causal attention differs
        assert relative_error(got, cache.attention(q)) > 1e-2
    else:  # more queries than cached tokens is only meaningful without the causal rule
        with pytest.raises(ValueError, match="exceeds"):
            cache.attention(q)
    with pytest.raises(TypeError):
        cache.attention(q, causal="no")


@pytest.mark.parametrize("simd", SIMD_LEVELS)
@pytest.mark.parametrize("path", ["codes", "tiles"])
@pytest.mark.parametrize("window", [1, 7, 256, 300, 1000])
def test_sliding_window_attention_equals_the_oracle(window, path, simd, rng, monkeypatch):
    """window=W: query at position p sees tokens p - W < t <= p only (Mistral, Gemma 2/3 local
    layers). A 300-token prefill chunk and a decode step over 600 tokens, a key mask on top."""
    monkeypatch.setenv("TURBOKV_SIMD", simd)
    d = 32
    cache = turbokv.KVCache(d, 2, key_bits=4, value_bits=3, residual_window=16, protect_keys=False)
    assert cache.simd == simd
    cache.update(tokens(rng, 2, 2, 600, d), tokens(rng, 2, 2, 600, d))
    k, v = cache.fetch()
    mask = np.ones((2, 600), bool)
    mask[1, :50] = False  # left padding of row 1
    for q_len in (300, 1):
        q = tokens(rng, 2, 4, q_len, d)
        got = cache.attention(q, path=path, window=window)
        assert cache.last_attention_path == path
        assert relative_error(got, reference.attention(q, k, v, window=window)) < 1e-4
        if window < 600:  # the window is not ignored
            assert relative_error(got, reference.attention(q, k, v)) > 1e-2
        masked = cache.attention(q, path=path, window=window, key_mask=mask)
        expect = reference.attention(q, k, v, window=window)
        expect[1] = reference.attention(q[1:], k[1:, :, 50:], v[1:, :, 50:], window=window)[0]
        assert relative_error(masked, expect) < 1e-4


def test_sliding_window_arguments_are_checked(rng):
    cache = turbokv.KVCache(32, 2)
    cache.update(tokens(rng, 1, 2, 5, 32), tokens(rng, 1, 2, 5, 32))
    q = tokens(rng, 1, 2, 1, 32)
    for bad in (0, -3, 2.5, True, "4"):
        with pytest.raises(ValueError, match="window"):
            cache.attention(q, window=bad)
    with pytest.raises(ValueError, match="causal"):
        cache.attention(q, window=4, causal=False)


def test_value_head_size_different_from_keys_is_refused_clearly(rng):
    cache = turbokv.KVCache(64, 2)
    with pytest.raises(ValueError, match="value head size different"):
        cache.update(tokens(rng, 1, 2, 3, 64), tokens(rng, 1, 2, 3, 32))
    assert cache.offset == 0


# min_tile_rows (cpp/include/turbokv/attention.hpp), restated by (key bits, value bits): 2-4, 5-8,
# float16 keys with coded values, float16 both. AVX-512's codes path stays the faster one longer
# (crossover_emr2_s47.md, crossover_emr16_s47.md; float16 keys with coded values
# crossover_emr2_s48.md).
MIN_TILE_ROWS = {"avx512": {(4, 4): 48, (8, 4): 24, (0, 4): 64, (0, 0): 48},
                 "avx2": {(4, 4): 32, (8, 4): 9, (0, 4): 96, (0, 0): 96}}


@pytest.mark.parametrize("simd", SIMD_LEVELS)
def test_auto_path_uses_codes_to_decode_and_tiles_from_min_tile_rows(simd, rng, monkeypatch):
    monkeypatch.setenv("TURBOKV_SIMD", simd)
    rows_for = MIN_TILE_ROWS.get(simd, {(4, 4): 32, (8, 4): 9, (0, 4): 1, (0, 0): 1})
    for (key_bits, value_bits), rows in rows_for.items():
        cache = turbokv.KVCache(64, 2, key_bits=key_bits, value_bits=value_bits, protect_keys=False)
        assert cache.simd == simd
        cache.update(tokens(rng, 1, 2, 300, 64), tokens(rng, 1, 2, 300, 64))
        assert cache.last_attention_path is None
        if rows > 1:
            cache.attention(tokens(rng, 1, 8, 1, 64))  # 4 query rows per KV head: decode
            assert cache.last_attention_path == "codes", (simd, key_bits, value_bits)
            cache.attention(tokens(rng, 1, 2 * (rows - 1), 1, 64))  # one row short
            assert cache.last_attention_path == "codes", (simd, key_bits, value_bits)
        cache.attention(tokens(rng, 1, 2 * rows, 1, 64))
        assert cache.last_attention_path == "tiles", (simd, key_bits, value_bits)
        cache.attention(tokens(rng, 1, 8, 64, 64))  # 256 rows: a prompt's range
        assert cache.last_attention_path == "tiles", (simd, key_bits, value_bits)
    with pytest.raises(ValueError, match="path"):
        cache.attention(tokens(rng, 1, 8, 1, 64), path="dense")


def test_decode_with_fewer_streams_than_threads_splits_the_sequence(rng):
    # One KV head at batch 1: the shared pool's threads split the 4096 tokens (16 blocks; several
    # parts per thread, but parts of at least 4 blocks: 4) and the parts are merged; the result
    # equals the single-thread sweep and the oracle. head_dim 128: 475 KB of codes, past the size
    # below which a decode call leaves the pool asleep.
    threads = turbokv.attention_threads()
    cache = turbokv.KVCache(128, 1, key_bits=4, value_bits=3)
    cache.update(tokens(rng, 1, 1, 4096, 128), tokens(rng, 1, 1, 4096, 128))
    q = tokens(rng, 1, 4, 1, 128)
    whole = cache.attention(q, threaded=False)
    assert cache.last_attention_splits == 1 and cache.last_attention_threads == 1
    split = cache.attention(q)
    assert cache.last_attention_splits == (4 if threads > 1 else 1)
    assert cache.last_attention_threads == threads
    np.testing.assert_allclose(split, whole, rtol=0, atol=2e-5)
    k, v = cache.fetch()
    assert relative_error(split, reference.attention(q, k, v)) < 1e-5


def test_causal_prompt_ranges_land_in_their_rows_on_any_thread_count(rng):
    # 9/3 heads: ranges of 85 positions, so a 600-token prompt is 8 ranges per KV head (the last
    # of 5), 24 work items, numbered latest range first for a causal call (item_order). Each
    # range's rows must land where they belong on both paths, whatever thread claims them.
    cache = turbokv.KVCache(64, 3, key_bits=4, value_bits=4)
    k, v = tokens(rng, 1, 3, 600, 64), tokens(rng, 1, 3, 600, 64)
    cache.update(k, v)
    q = tokens(rng, 1, 9, 600, 64)
    kd, vd = cache.fetch()
    expect = reference.attention(q, kd, vd)
    for path in ("tiles", "codes"):
        alone = cache.attention(q, path=path, threaded=False)
        assert cache.last_attention_path == path and cache.last_attention_threads == 1
        pooled = cache.attention(q, path=path)
        assert cache.last_attention_threads == turbokv.attention_threads()
        np.testing.assert_array_equal(pooled, alone)
        assert relative_error(pooled, expect) < 1e-5, path
        # Each query position sees only its past: the first position attends to its own key.
        np.testing.assert_allclose(pooled[:, :, 0], np.repeat(vd[:, :, 0], 3, axis=1), rtol=0, atol=1e-5)


def test_small_decode_calls_run_on_the_calling_thread(rng):
    # 3 KV heads x 512 tokens of head_dim 64 at K4V4: 110,592 bytes of codes (x 7/8 for 3 query
    # heads per KV head: 96,768), under 3/8 of 256 KiB, so on one thread at any thread count
    # (waking the pool costs more than it saves).
    # Prefill keeps the pool; the output does not depend on the thread count.
    threads = turbokv.attention_threads()
    cache = turbokv.KVCache(64, 3, key_bits=4, value_bits=4)
    cache.update(tokens(rng, 1, 3, 512, 64), tokens(rng, 1, 3, 512, 64))
    assert cache.used_nbytes == 3 * 512 * 2 * (32 + 4)
    q = tokens(rng, 1, 9, 1, 64)
    pooled = cache.attention(q)
    assert cache.last_attention_threads == 1
    np.testing.assert_array_equal(pooled, cache.attention(q, threaded=False))
    assert cache.last_attention_threads == 1
    cache.attention(tokens(rng, 1, 9, 2, 64), causal=False)
    assert cache.last_attention_threads == threads


@pytest.mark.parametrize("softcap", [None, 3.0])
@pytest.mark.parametrize("with_sinks", [False, True])
def test_softcap_and_sinks_equal_the_float64_oracle(softcap, with_sinks, rng):
    d = 64
    cache = turbokv.KVCache(d, 2, key_bits=4, value_bits=4)
    cache.update(3 * tokens(rng, 2, 2, 280, d), tokens(rng, 2, 2, 280, d))
    q = tokens(rng, 2, 6, 3, d)
    sinks = np.array([-2.0, 0.0, 1.0, 2.0, 5.0, 30.0], np.float32) if with_sinks else None
    got = cache.attention(q, softcap=softcap, sinks=sinks)
    k, v = cache.fetch()  # after the first attention: protection may have re-encoded the keys
    expect = reference.attention(q, k, v, softcap=softcap, sinks=sinks)
    assert relative_error(got, expect) < 1e-4
    if softcap or with_sinks:  # the option changed the result: it was not ignored
        assert relative_error(got, reference.attention(q, k, v)) > 1e-2
    if with_sinks:  # head 5's sink outweighs every token: its output is ~0
        assert np.abs(got[:, 5]).max() < 1e-6


def test_gqa_maps_query_heads_to_their_kv_head(rng):
    d, kv_heads, group = 64, 4, 3
    cache = turbokv.KVCache(d, kv_heads, key_bits=4, value_bits=8)
    # Every value of kv head h is the constant vector (h + 1): the output reveals the head used.
    values = np.broadcast_to(np.arange(1, kv_heads + 1, dtype=np.float32)[None, :, None, None],
                             (1, kv_heads, 20, d)).copy()
    cache.update(tokens(rng, 1, kv_heads, 20, d), values)
    out = cache.attention(tokens(rng, 1, kv_heads * group, 2, d))
    used = np.rint(out.mean(axis=(2, 3)))[0]
    np.testing.assert_array_equal(used, np.repeat(np.arange(1, kv_heads + 1), group))


@pytest.mark.parametrize("window", [0, 8])
def test_chunked_prefill_equals_one_shot_prefill(window, rng):
    d, n = 64, 50
    k, v, q = tokens(rng, 1, 2, n, d), tokens(rng, 1, 2, n, d), tokens(rng, 1, 4, n, d)
    # Key centring takes its mean from the first update, which differs here by design (see
    # test_key_centring_uses_the_first_update); everything else must not depend on the chunking.
    one = turbokv.KVCache(d, 2, key_bits=4, value_bits=3, residual_window=window, center_keys=False)
    one.update(k, v)
    expect = one.attention(q)
    chunked = turbokv.KVCache(d, 2, key_bits=4, value_bits=3, residual_window=window, center_keys=False)
    parts = []
    for start in range(0, n, 7):
        stop = min(start + 7, n)
        chunked.update(k[:, :, start:stop], v[:, :, start:stop])
        parts.append(chunked.attention(q[:, :, start:stop]))
    if window == 0:
        np.testing.assert_allclose(np.concatenate(parts, axis=2), expect, rtol=1e-5, atol=1e-6)
    else:
        # With a window, each chunk's queries see the window as it was at that chunk (its newest
        # tokens exact), so only the last chunk matches one-shot prefill; the stored state does.
        np.testing.assert_allclose(parts[-1], expect[:, :, -parts[-1].shape[2]:], rtol=1e-5, atol=1e-6)
    for name, a in one.state.items():
        np.testing.assert_array_equal(a, chunked.state[name], err_msg=name)


@pytest.mark.parametrize("window", [0, 4, 64])
def test_trim_then_reappend_equals_never_appending(window, rng):
    # Trimmed tokens that had pushed older ones out of the window leave those compressed; the
    # window refills from new tokens, so the states agree again once `window` tokens are appended.
    d = 32
    base_k, base_v = tokens(rng, 2, 2, 300, d), tokens(rng, 2, 2, 300, d)
    spec_k, spec_v = tokens(rng, 2, 2, 6, d), tokens(rng, 2, 2, 6, d)
    m = max(3, window)
    new_k, new_v = tokens(rng, 2, 2, m, d), tokens(rng, 2, 2, m, d)
    a = turbokv.KVCache(d, 2, key_bits=3, value_bits=2, residual_window=window)
    a.update(base_k, base_v)
    a.update(spec_k, spec_v)
    assert a.trim(6) == 6 and a.offset == 300
    a.update(new_k, new_v)
    b = turbokv.KVCache(d, 2, key_bits=3, value_bits=2, residual_window=window)
    b.update(base_k, base_v)
    b.update(new_k, new_v)
    assert a.offset == b.offset == 300 + m
    for name, arr in b.state.items():
        np.testing.assert_array_equal(a.state[name], arr, err_msg=name)
    q = tokens(rng, 2, 4, 1, d)
    np.testing.assert_array_equal(a.attention(q), b.attention(q))


def test_residual_window_semantics(rng):
    d, window = 16, 5
    cache = turbokv.KVCache(d, 1, key_bits=2, value_bits=2, residual_window=window,
                            center_keys=False)  # the window holds the keys as given
    k = tokens(rng, 1, 1, 12, d)
    for t in range(12):
        cache.update(k[:, :, t:t + 1], k[:, :, t:t + 1])
        state = cache.state
        kept = min(t + 1, window)
        assert state["keys.window"].shape[2] == kept
        assert state["keys.codes"].shape[2] == t + 1 - kept
        # The newest tokens are exact float16 copies.
        np.testing.assert_array_equal(state["keys.window"][0, 0], k[0, 0, t + 1 - kept:t + 1].astype(np.float16))


def test_update_and_fetch_and_sizes(rng):
    cache = turbokv.KVCache(128, 8, key_bits=4, value_bits=2)
    k, v = cache.update_and_fetch(tokens(rng, 1, 8, 10, 128), tokens(rng, 1, 8, 10, 128))
    assert k.shape == v.shape == (1, 8, 10, 128) and k.dtype == np.float32
    # Per token and head: keys 64 B codes + 4 B norm, values 32 B + 4 B.
    assert cache.used_nbytes == 8 * 10 * (68 + 36)
    assert cache.nbytes == 8 * 256 * (68 + 36)  # one 256-token chunk allocated
    full = turbokv.KVCache(128, 8, key_bits=0, value_bits=0)
    k16 = tokens(rng, 1, 8, 10, 128)
    k_out, _ = full.update_and_fetch(k16, k16)
    np.testing.assert_array_equal(k_out, k16.astype(np.float16).astype(np.float32))


def test_rejected_updates_leave_the_cache_unchanged(rng):
    cache = turbokv.KVCache(32, 2, key_bits=4, value_bits=4, residual_window=4)
    cache.update(tokens(rng, 1, 2, 10, 32), tokens(rng, 1, 2, 10, 32))
    before = cache.state
    bad = tokens(rng, 1, 2, 3, 32)
    bad[0, 1, 2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        cache.update(tokens(rng, 1, 2, 3, 32), bad)
    bad[0, 1, 2, 5] = -np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        cache.update(bad, tokens(rng, 1, 2, 3, 32))
    with pytest.raises(ValueError, match="float16"):
        cache.update(np.full((1, 2, 1, 32), 1e6, np.float32), tokens(rng, 1, 2, 1, 32))
    with pytest.raises(ValueError, match="batch"):
        cache.update(tokens(rng, 2, 2, 1, 32), tokens(rng, 2, 2, 1, 32))
    with pytest.raises(ValueError, match="num_kv_heads=2"):
        cache.update(tokens(rng, 1, 3, 1, 32), tokens(rng, 1, 3, 1, 32))
    with pytest.raises(TypeError, match="float16/float32/float64"):
        cache.update(tokens(rng, 1, 2, 1, 32).astype(np.int32), tokens(rng, 1, 2, 1, 32))
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        cache.attention(tokens(rng, 1, 3, 1, 32))
    with pytest.raises(ValueError, match="exceeds"):
        cache.attention(tokens(rng, 1, 2, 11, 32))
    after = cache.state
    assert cache.offset == 10
    for name in before:
        np.testing.assert_array_equal(before[name], after[name])


@pytest.mark.parametrize("settings", [dict(), dict(norm_dtype="float16"), dict(key_bits=0, value_bits=0)])
def test_extreme_values_are_rejected_before_anything_is_stored(settings, rng):
    cache = turbokv.KVCache(16, 1, **settings)
    cache.update(tokens(rng, 1, 1, 2, 16), tokens(rng, 1, 1, 2, 16))
    for bad in (np.inf, np.nan, 3e38, 1e30 if settings else 3e38):
        x = tokens(rng, 1, 1, 1, 16)
        x[0, 0, 0, 3] = bad
        with pytest.raises(ValueError):
            cache.update(tokens(rng, 1, 1, 1, 16), x)
        assert cache.offset == 2
    big = np.full((1, 1, 1, 16), 3e4, np.float32)  # fits float16 values, not float16 norms (1.2e5)
    if settings.get("norm_dtype") == "float16":
        with pytest.raises(ValueError, match="norm"):
            cache.update(big, big)
    else:
        cache.update(big, big)
        assert cache.offset == 3


def test_prod_one_bit_keys_work(rng):
    cache = turbokv.KVCache(64, 2, key_bits=1, key_mode="prod", value_bits=1, value_mode="prod")
    cache.update(tokens(rng, 1, 2, 40, 64), tokens(rng, 1, 2, 40, 64))
    q = tokens(rng, 1, 4, 2, 64)
    k, v = cache.fetch()
    assert relative_error(cache.attention(q), reference.attention(q, k, v)) < 1e-4


def test_bad_settings():
    with pytest.raises(ValueError, match="key_bits"):
        turbokv.KVCache(64, 2, key_bits=9)
    with pytest.raises(ValueError, match="prod"):
        turbokv.KVCache(64, 2, key_bits=0, key_mode="prod")
    with pytest.raises(ValueError, match="head_dim"):
        turbokv.KVCache(4, 2)
    with pytest.raises(ValueError, match="empty cache"):
        turbokv.KVCache(64, 2).attention(np.zeros((1, 2, 1, 64), np.float32))


ALL_SETTINGS = [
    dict(key_bits=4, value_bits=3, residual_window=8, seed=7, layer_index=3),
    dict(key_bits=3, value_bits=2, key_mode="prod", value_mode="prod", norm_dtype="float16"),
    dict(key_bits=0, value_bits=5, value_norm_correction=True),
]


def test_save_load_round_trip_is_bit_exact(tmp_path, rng):
    caches = [turbokv.KVCache(64, 2, **s) for s in ALL_SETTINGS] + [turbokv.KVCache(64, 2)]
    for c in caches[:-1]:  # the last one stays empty
        c.update(tokens(rng, 2, 2, 270, 64), tokens(rng, 2, 2, 270, 64))
    path = tmp_path / "cache.tkv"
    turbokv.save_cache(path, caches)
    loaded = turbokv.load_cache(path)
    q = tokens(rng, 2, 4, 1, 64)
    for a, b in zip(caches, loaded):
        assert a.meta_state == b.meta_state
        for name, arr in a.state.items():
            np.testing.assert_array_equal(arr, b.state[name], err_msg=name)
        if a.offset:
            np.testing.assert_array_equal(a.attention(q), b.attention(q))
    # Loaded caches keep working as caches.
    loaded[0].update(tokens(rng, 2, 2, 1, 64), tokens(rng, 2, 2, 1, 64))
    assert loaded[0].offset == 271


def test_corrupted_or_foreign_files_raise(tmp_path, rng):
    cache = turbokv.KVCache(32, 1)
    cache.update(tokens(rng, 1, 1, 5, 32), tokens(rng, 1, 1, 5, 32))
    path = tmp_path / "c.tkv"
    turbokv.save_cache(path, [cache])
    data = path.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "empty": b"",
        "bit flip": data[:100] + bytes([data[100] ^ 1]) + data[101:],
        "not ours": b"PK\x03\x04" + data[4:],
        "future version": data[:8] + (99).to_bytes(4, "little") + data[12:],
    }
    for label, blob in cases.items():
        bad = tmp_path / f"{label}.tkv"
        bad.write_bytes(blob)
        with pytest.raises(ValueError):
            turbokv.load_cache(bad)


def test_state_rejects_inconsistent_arrays(rng):
    cache = turbokv.KVCache(32, 1, key_bits=4, value_bits=4)
    cache.update(tokens(rng, 1, 1, 5, 32), tokens(rng, 1, 1, 5, 32))
    state, meta = cache.state, cache.meta_state
    broken = dict(state)
    broken["keys.codes"] = state["keys.codes"][:, :, :4]
    with pytest.raises(ValueError):
        turbokv.KVCache.from_state(broken, meta)
    with pytest.raises(ValueError, match="version"):
        turbokv.KVCache.from_state(state, dict(meta, version=3))
    with pytest.raises(ValueError, match="offset"):
        turbokv.KVCache.from_state(dict(state, **{"keys.offset": state["keys.offset"][:, :, :8]}), meta)


def test_make_cache_policies():
    caches = turbokv.make_cache(6, 64, 2, key_bits=3, value_bits=2, protect_boundary_layers=2,
                                layer_settings=[None, None, dict(value_bits=4), None, None, None])
    assert [c.key_bits for c in caches] == [8, 8, 3, 3, 8, 8]
    assert [c.value_bits for c in caches] == [8, 8, 4, 2, 8, 8]
    assert len({turbokv.cache.layer_seeds(c.seed, c.layer_index) for c in caches}) == 6
    with pytest.raises(ValueError, match="layer_settings"):
        turbokv.make_cache(3, 64, 2, layer_settings=[None])


def test_dense_cache_matches_reference(rng):
    cache = turbokv.DenseKVCache(32, 2)
    k, v = tokens(rng, 1, 2, 40, 32), tokens(rng, 1, 2, 40, 32)
    cache.update(k[:, :, :30], v[:, :, :30])
    cache.update(k[:, :, 30:], v[:, :, 30:])
    q = tokens(rng, 1, 4, 3, 32)
    np.testing.assert_allclose(cache.attention(q), reference.attention(q, k, v), rtol=1e-4, atol=1e-5)


def test_key_mask_equals_attention_without_the_padding(rng):
    d = 64
    cache = turbokv.KVCache(d, 2, key_bits=4, value_bits=3)
    k, v = tokens(rng, 2, 2, 300, d), tokens(rng, 2, 2, 300, d)
    cache.update(k, v)
    q = tokens(rng, 2, 4, 3, d)
    mask = np.ones((2, 300), bool)
    mask[1, :37] = False  # row 1 is left-padded by 37 tokens
    out = cache.attention(q, key_mask=mask)
    kd, vd = cache.fetch()
    np.testing.assert_allclose(out[1:], reference.attention(q[1:], kd[1:, :, 37:], vd[1:, :, 37:]),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[:1], reference.attention(q[:1], kd[:1], vd[:1]), rtol=1e-4, atol=1e-5)
    mask[0, :] = False  # nothing visible: zeros, not NaN
    assert np.all(cache.attention(q, key_mask=mask)[0] == 0)
    with pytest.raises(ValueError, match="key_mask"):
        cache.attention(q, key_mask=mask[:, :10])


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_deepcopy_and_pickle_give_an_independent_cache_that_continues_exactly(rng, how):
    import copy
    import pickle

    d = 64
    cache = turbokv.KVCache(d, 2, key_bits=4, value_bits=3, residual_window=4, center_keys=True)
    k, v = tokens(rng, 1, 2, 30, d), tokens(rng, 1, 2, 30, d)
    cache.update(k[:, :, :20], v[:, :, :20])
    twin = copy.deepcopy(cache) if how == "deepcopy" else pickle.loads(pickle.dumps(cache))
    assert twin is not cache and twin.offset == 20 and twin.key_offset is not None
    q = tokens(rng, 1, 4, 1, d)
    for c in (twin, cache):  # the copy first: it must not change the original
        c.update(k[:, :, 20:], v[:, :, 20:])
    np.testing.assert_array_equal(twin.attention(q), cache.attention(q))
    twin.update(k[:, :, :1], v[:, :, :1])
    assert (twin.offset, cache.offset) == (31, 30)
    empty = turbokv.KVCache(d, 2)
    assert pickle.loads(pickle.dumps(empty)).offset == 0

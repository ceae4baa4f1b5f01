"""A cache beyond 2^31 coordinates: nothing in its indexing is 32-bit.

1024 (batch, head) streams x 16,384 tokens x head_dim 128 = 2^31 coordinates per side (about 3.2
GB of codes in all). Every stream's values are one constant vector of its own, so each attention
output reveals whether the fused kernel read the right stream at the right offset. ~30 s, ~5 GB.
"""

import numpy as np

import turbokv

BATCH, HEADS, TOKENS, D = 16, 64, 16384, 128
STEP = 1024


def test_more_than_2_to_the_31_coordinates():
    assert BATCH * HEADS * TOKENS * D >= 2**31
    cache = turbokv.KVCache(D, HEADS, key_bits=4, value_bits=8)
    rng = np.random.default_rng(0)
    key_block = np.broadcast_to(rng.standard_normal((1, 1, STEP, D), dtype=np.float32),
                                (BATCH, HEADS, STEP, D))
    stream_value = np.arange(BATCH * HEADS, dtype=np.float32).reshape(BATCH, HEADS, 1, 1) / 128 + 1
    value_block = np.broadcast_to(stream_value, (BATCH, HEADS, STEP, D))
    for _ in range(TOKENS // STEP):
        cache.update(key_block, value_block)
    assert cache.offset == TOKENS
    assert cache.used_nbytes > 2**31
    q = rng.standard_normal((BATCH, HEADS, 1, D), dtype=np.float32)
    out = cache.attention(q)
    # Softmax weights sum to one, so each output is its stream's constant (8-bit values: ~0.3%).
    np.testing.assert_allclose(out.mean(axis=(2, 3)), stream_value[..., 0, 0], rtol=5e-3)
    cache.trim(TOKENS - 1)
    assert cache.offset == 1

"""A workload over every allocating path of turbokv._core, run under valgrind by
scripts/leakcheck.sh: codecs, caches, attention, state export/import, save/load, errors."""

import os
import tempfile

import numpy as np

import turbokv

rng = np.random.default_rng(0)
for d, mode in ((64, "mse"), (96, "prod")):
    codec = turbokv.Codec(d, 3, mode=mode)
    x = rng.standard_normal((50, d), dtype=np.float32)
    enc = codec.encode(x)
    codec.decode(enc)
    codec.scores(x[:3], enc)
    try:
        codec.encode(np.full((2, d), np.nan, np.float32))
    except ValueError:
        pass

caches = [turbokv.KVCache(32, 2, key_bits=4, value_bits=2, residual_window=4, layer_index=i) for i in range(2)]
for cache in caches:
    for _ in range(3):
        k = rng.standard_normal((1, 2, 100, 32), dtype=np.float32)
        cache.update(k, k)
    cache.attention(rng.standard_normal((1, 4, 2, 32), dtype=np.float32))
    cache.update_and_fetch(k[:, :, :1], k[:, :, :1])
    cache.trim(50)
    try:
        cache.update(np.full((1, 2, 1, 32), np.inf, np.float32), k[:, :, :1])
    except ValueError:
        pass
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "c.tkv")
    turbokv.save_cache(path, caches)
    restored = turbokv.load_cache(path)
    restored[0].attention(rng.standard_normal((1, 2, 1, 32), dtype=np.float32))
    state = dict(restored[0].state)
    state["keys.codes"] = state["keys.codes"][:, :, :3]
    try:
        turbokv.KVCache.from_state(state, restored[0].meta_state)
    except ValueError:
        pass
print("workload done")

"""Decode attention for one new token on the compressed cache vs dense baselines, in one run.

    python bench/attention.py [--contexts 1024 4096 16384 32768 65536] [--json bench/results/attention.json]

Shape: batch 1, 8 KV heads, 32 query heads (GQA 4), head_dim 128, one query token. Rows:
turbokv fused attention (K4V4, K4V2) on the codes; numpy float32 dense attention; torch
scaled_dot_product_attention float32 on CPU (if torch is installed); decode-then-attend (turbokv
decodes the whole cache, then numpy attention). Each row prints its KV bytes, and turbokv rows
print the memory-read floor: their compressed bytes divided by this machine's read bandwidth,
measured in the same run. All implementations use every core (turbokv's thread pool, BLAS and
torch threads). Timing: median of --repeats calls after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time

import numpy as np

import turbokv

KV_HEADS, Q_HEADS, HEAD_DIM = 8, 32, 128


def median_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_bandwidth(repeats=5):
    """Read bandwidth in GB/s over 1 GiB, all cores (numpy reduction on per-thread slices)."""
    from concurrent.futures import ThreadPoolExecutor

    a = np.ones(256 * 2**20, dtype=np.float32)
    threads = os.cpu_count() or 1
    parts = np.array_split(a, threads)
    with ThreadPoolExecutor(threads) as pool:
        seconds = median_time(lambda: list(pool.map(np.max, parts)), repeats)
    return a.nbytes / seconds / 1e9


def numpy_attention(q, k, v):
    """Dense float32 GQA attention for one query token: q (1, 32, 1, d), k/v (1, 8, T, d)."""
    group = Q_HEADS // KV_HEADS
    qg = q.reshape(1, KV_HEADS, group, HEAD_DIM)
    s = (qg @ k.swapaxes(-1, -2)) * np.float32(1 / math.sqrt(HEAD_DIM))
    s -= s.max(axis=-1, keepdims=True)
    w = np.exp(s)
    w /= w.sum(axis=-1, keepdims=True)
    return (w @ v).reshape(1, Q_HEADS, 1, HEAD_DIM)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 16384, 32768, 65536])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = None
        print("torch not installed: skipping the torch SDPA row (pip install torch==2.13.0)")
    bandwidth = read_bandwidth()
    rng = np.random.default_rng(0)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {turbokv.detect_simd()}",
               "read_bandwidth_gbs": bandwidth, "rows": []}
    print(f"Decode attention, batch 1, {Q_HEADS} query / {KV_HEADS} KV heads, head_dim {HEAD_DIM}, "
          f"on {results['machine']}; read bandwidth {bandwidth:.1f} GB/s\n")
    print("| context | implementation | ms | KV MB | vs best dense | vs decode-then-attend | x read floor |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for T in args.contexts:
        k = rng.standard_normal((1, KV_HEADS, T, HEAD_DIM), dtype=np.float32)
        v = rng.standard_normal((1, KV_HEADS, T, HEAD_DIM), dtype=np.float32)
        q = rng.standard_normal((1, Q_HEADS, 1, HEAD_DIM), dtype=np.float32)
        rows = {}
        rows["numpy float32 dense"] = (median_time(lambda: numpy_attention(q, k, v), args.repeats), k.nbytes * 2)
        if torch is not None:
            tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
            # One decode token: the query heads of a KV head can ride as a query sequence of
            # length 4 (no causal mask needed), which avoids SDPA repeating K/V for GQA.
            tq_grouped = tq.reshape(1, KV_HEADS, Q_HEADS // KV_HEADS, HEAD_DIM)
            with torch.inference_mode():
                t = median_time(lambda: F.scaled_dot_product_attention(tq, tk, tv, enable_gqa=True), args.repeats)
                t_grouped = median_time(lambda: F.scaled_dot_product_attention(tq_grouped, tk, tv), args.repeats)
            rows["torch SDPA float32 (enable_gqa)"] = (t, k.nbytes * 2)
            rows["torch SDPA float32 (query heads as q_len)"] = (t_grouped, k.nbytes * 2)
        fused = {}
        for label, kb, vb in (("turbokv fused K4V4", 4, 4), ("turbokv fused K4V2", 4, 2)):
            cache = turbokv.KVCache(HEAD_DIM, KV_HEADS, key_bits=kb, value_bits=vb)
            cache.update(k, v)
            rows[label] = (median_time(lambda: cache.attention(q), args.repeats), cache.used_nbytes)
            fused[label] = cache
        cache = fused["turbokv fused K4V4"]

        def decode_then_attend():
            kd, vd = cache.fetch()
            return numpy_attention(q, kd, vd)

        rows["turbokv decode-then-attend K4V4"] = (median_time(decode_then_attend, max(3, args.repeats // 3)),
                                                   cache.used_nbytes)
        best_dense = min(t for name, (t, _) in rows.items() if "dense" in name or "SDPA" in name)
        decode_t = rows["turbokv decode-then-attend K4V4"][0]
        for name, (t, nbytes) in rows.items():
            floor = nbytes / (bandwidth * 1e9)
            row = {"context": T, "impl": name, "ms": t * 1e3, "kv_bytes": nbytes,
                   "speedup_vs_best_dense": best_dense / t, "speedup_vs_decode_then_attend": decode_t / t,
                   "times_read_floor": t / floor}
            results["rows"].append(row)
            fused_row = name.startswith("turbokv fused")
            print(f"| {T} | {name} | {t * 1e3:.2f} | {nbytes / 1e6:.1f} | {best_dense / t:.2f}x | "
                  f"{(f'{decode_t / t:.1f}x' if fused_row else '')} | {(f'{t / floor:.1f}' if fused_row else '')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

"""Decode-attention benchmark shared by ``python -m turbokv bench`` and ``bench/attention.py``.

One new token, batch 1, 32 query / 8 KV heads (GQA 4), head_dim 128: turbokv fused attention on the
codes against numpy float32 dense attention, torch SDPA (when torch is installed) and
decode-then-attend, each with its KV bytes, plus the memory-read floor of the turbokv rows.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from typing import Callable, Dict, Sequence

import numpy as np

from ..cache import KVCache
from .._core import detect_simd

KV_HEADS, Q_HEADS, HEAD_DIM = 8, 32, 128


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), for naming the machine."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def read_bandwidth(repeats: int = 10) -> float:
    """Read bandwidth in GB/s over 1 GiB, all cores (numpy reductions on per-thread slices).

    The best of ``repeats`` passes: the floor should be the fastest this machine can read, and
    the best pass is also the most repeatable (a median swings with whatever else runs).
    """
    from concurrent.futures import ThreadPoolExecutor

    a = np.ones(256 * 2**20, dtype=np.float32)
    threads = os.cpu_count() or 1
    parts = np.array_split(a, threads)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(np.max, parts))  # warm up: page in, start threads
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.max, parts))
            best = min(best, time.perf_counter() - start)
    return a.nbytes / best / 1e9


def numpy_attention(q, k, v):
    """Dense float32 GQA attention for one query token: q (1, 32, 1, d), k/v (1, 8, T, d)."""
    group = Q_HEADS // KV_HEADS
    qg = q.reshape(1, KV_HEADS, group, HEAD_DIM)
    s = (qg @ k.swapaxes(-1, -2)) * np.float32(1 / math.sqrt(HEAD_DIM))
    s -= s.max(axis=-1, keepdims=True)
    w = np.exp(s)
    w /= w.sum(axis=-1, keepdims=True)
    return (w @ v).reshape(1, Q_HEADS, 1, HEAD_DIM)


def run_attention(contexts: Sequence[int] = (1024, 4096, 16384, 32768, 65536), repeats: int = 15,
                  show_progress: bool = True) -> Dict:
    """Runs the benchmark; returns {"machine", "read_bandwidth_gbs", "rows": [...]}, one row per
    (context, implementation) with ms, kv_bytes and the speedup / floor ratios. ``show_progress``
    draws a progress bar on stderr (tqdm)."""
    from ._progress import tqdm

    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = None
    bandwidth = read_bandwidth()
    rng = np.random.default_rng(0)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {detect_simd()}",
               "read_bandwidth_gbs": bandwidth, "torch": torch is not None, "rows": []}
    for T in tqdm(contexts, desc="contexts", disable=not show_progress, leave=False):
        k = rng.standard_normal((1, KV_HEADS, T, HEAD_DIM), dtype=np.float32)
        v = rng.standard_normal((1, KV_HEADS, T, HEAD_DIM), dtype=np.float32)
        q = rng.standard_normal((1, Q_HEADS, 1, HEAD_DIM), dtype=np.float32)
        rows = {"numpy float32 dense": (median_time(lambda: numpy_attention(q, k, v), repeats), k.nbytes * 2)}
        if torch is not None:
            tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
            # One decode token: the query heads of a KV head can ride as a query sequence of
            # length 4 (no causal mask needed), which avoids SDPA repeating K/V for GQA.
            tq_grouped = tq.reshape(1, KV_HEADS, Q_HEADS // KV_HEADS, HEAD_DIM)
            with torch.inference_mode():
                t = median_time(lambda: F.scaled_dot_product_attention(tq, tk, tv, enable_gqa=True), repeats)
                t_grouped = median_time(lambda: F.scaled_dot_product_attention(tq_grouped, tk, tv), repeats)
            rows["torch SDPA float32 (enable_gqa)"] = (t, k.nbytes * 2)
            rows["torch SDPA float32 (query heads as q_len)"] = (t_grouped, k.nbytes * 2)
        caches = {}
        for label, kb, vb in (("turbokv fused K4V4", 4, 4), ("turbokv fused K4V2", 4, 2)):
            cache = KVCache(HEAD_DIM, KV_HEADS, key_bits=kb, value_bits=vb)
            cache.update(k, v)
            rows[label] = (median_time(lambda: cache.attention(q), repeats), cache.used_nbytes)
            caches[label] = cache
        cache = caches["turbokv fused K4V4"]

        def decode_then_attend():
            kd, vd = cache.fetch()
            return numpy_attention(q, kd, vd)

        rows["turbokv decode-then-attend K4V4"] = (median_time(decode_then_attend, max(3, repeats // 3)),
                                                   cache.used_nbytes)
        best_dense = min(t for name, (t, _) in rows.items() if "dense" in name or "SDPA" in name)
        decode_t = rows["turbokv decode-then-attend K4V4"][0]
        for name, (t, nbytes) in rows.items():
            results["rows"].append({
                "context": T, "impl": name, "ms": t * 1e3, "kv_bytes": nbytes,
                "speedup_vs_best_dense": best_dense / t, "speedup_vs_decode_then_attend": decode_t / t,
                "times_read_floor": t / (nbytes / (bandwidth * 1e9))})
    return results


def attention_table(results: Dict) -> str:
    """The results of :func:`run_attention` as a markdown table."""
    lines = [f"Decode attention, batch 1, {Q_HEADS} query / {KV_HEADS} KV heads, head_dim {HEAD_DIM}, "
             f"on {results['machine']}; read bandwidth {results['read_bandwidth_gbs']:.1f} GB/s", "",
             "| context | implementation | ms | KV MB | vs best dense | vs decode-then-attend | x read floor |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["rows"]:
        fused = r["impl"].startswith("turbokv fused")
        vs_decode = f"{r['speedup_vs_decode_then_attend']:.1f}x" if fused else ""
        floor = f"{r['times_read_floor']:.1f}" if fused else ""
        lines.append(f"| {r['context']} | {r['impl']} | {r['ms']:.2f} | {r['kv_bytes'] / 1e6:.1f} | "
                     f"{r['speedup_vs_best_dense']:.2f}x | {vs_decode} | {floor} |")
    return "\n".join(lines)

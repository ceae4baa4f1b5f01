"""Codec throughput on one core: encode and fused scores, side by side in one run.

    python bench/codec_throughput.py [--head-dim 128] [--bits 2 3 4 8] [--json bench/results/codec_throughput.json]

Prints, for each SIMD level this CPU has, encode throughput (vectors/s and GB/s of float32 input;
`Codec.encode`, whose new output arrays the kernel must first zero page by page, and a second row
into arrays allocated once, which shows what the encoder itself takes)
and fused-scores throughput (float32, and integer rows: Codec.scores(precision="int8"), int16 sums for 5-8 bits), beside this machine's single-core memory-read bandwidth (measured in
the same run) and beside the numpy reference (encode) and decode-then-numpy-matmul (scores), one column per
width. BLAS is pinned to one
thread so every number is one core. Timing: best of --repeats runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS: one core everywhere
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import time

import numpy as np

import turbokv
from turbokv import _core, reference
from turbokv.eval.benchmarks import machine_text

def best_time(fn, repeats: int) -> float:
    fn()  # warm up caches, page in outputs
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def read_bandwidth(repeats: int) -> float:
    """Single-core read bandwidth in GB/s: the best of numpy's vectorised reductions over 512 MiB."""
    a = np.ones(128 * 2**20, dtype=np.float32)
    seconds = min(best_time(lambda: a.max(), repeats), best_time(lambda: np.add.reduce(a), repeats))
    return a.nbytes / seconds / 1e9


def codec_for(level: str, **kwargs) -> turbokv.Codec:
    os.environ["TURBOKV_SIMD"] = level
    try:
        return turbokv.Codec(**kwargs)
    finally:
        del os.environ["TURBOKV_SIMD"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--bits", type=int, nargs="+", default=[4], help="one table column per width")
    parser.add_argument("--vectors", type=int, default=262144, help="encode batch (default 128 MiB of float32 at d=128)")
    parser.add_argument("--keys", type=int, default=65536, help="keys scored per query batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    d, widths = args.head_dim, args.bits
    levels = _core.supported_simd()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.vectors, d), dtype=np.float32)
    results = {"machine": machine_text(),
               "head_dim": d, "bits": widths, "read_bandwidth_gbs": read_bandwidth(args.repeats),
               "encode": [], "scores": []}

    def encode_row(name, bits, fn, n):
        seconds = best_time(fn, args.repeats)
        results["encode"].append({"impl": name, "bits": bits, "vectors_per_s": n / seconds,
                                  "gbs": n * d * 4 / seconds / 1e9})

    small = x[:8192]
    keys = x[: args.keys]
    for bits in widths:
        for level in levels:
            codec = codec_for(level, head_dim=d, bits=bits)
            encode_row(f"turbokv {level}", bits, lambda: codec.encode(x), len(x))
            # The same call into output arrays made once: Codec.encode's fresh ones are zeroed by
            # the kernel at first touch (on the Zen 3 VM 32 MiB of codes took ~5 ms more to write
            # the first time, 13-17% of an 8-bit call; kernel_choices_avx2.md round 64).
            outputs = [np.empty((len(x), codec.code_bytes), np.uint8), np.empty(len(x), codec.norm_dtype),
                       np.empty((len(x), 0), np.uint8), np.empty(0, codec.norm_dtype)]  # mse: no sketch
            encode_row(f"turbokv {level}, into reused arrays", bits, lambda: codec._core.encode(x, *outputs), len(x))
        encode_row("turbokv.reference (numpy)", bits, lambda: reference.Codec(d, bits).encode(small), len(small))
        for m in (1, 8, 32):
            q = rng.standard_normal((m, d), dtype=np.float32)
            for level in levels:
                codec = codec_for(level, head_dim=d, bits=bits)
                enc = codec.encode(keys)
                fused = best_time(lambda: codec.scores(q, enc), args.repeats)
                dense = best_time(lambda: q @ codec.decode(enc).T, args.repeats)
                results["scores"].append({
                    "bits": bits, "queries": m, "impl": f"turbokv {level}", "fused_s": fused,
                    "decode_then_matmul_s": dense, "speedup": dense / fused,
                    "keys_per_s": len(keys) * m / fused, "code_gbs": enc.nbytes / fused / 1e9,
                })
                if level != "scalar":  # integer scores (Codec.scores precision="int8")
                    int8 = best_time(lambda: codec.scores(q, enc, precision="int8"), args.repeats)
                    results["scores"].append({
                        "bits": bits, "queries": m, "impl": f"turbokv {level} int8", "fused_s": int8,
                        "decode_then_matmul_s": dense, "speedup": dense / int8,
                        "keys_per_s": len(keys) * m / int8, "code_gbs": enc.nbytes / int8 / 1e9,
                    })

    print(f"Codec throughput, one core, head_dim={d}, on {results['machine']}")
    print(f"single-core read bandwidth (numpy reductions over 512 MiB): {results['read_bandwidth_gbs']:.1f} GB/s\n")
    impls = list(dict.fromkeys(r["impl"] for r in results["encode"]))
    print("Encode, GB/s of float32 input (vectors/s = GB/s x 1e9 / (4 x head_dim)):\n")
    print("| encode | " + " | ".join(f"{b} bits" for b in widths) + " |")
    print("| --- |" + " --- |" * len(widths))
    for impl in impls:
        cells = {r["bits"]: r["gbs"] for r in results["encode"] if r["impl"] == impl}
        print(f"| {impl} | " + " | ".join(f"{cells[b]:.2f}" for b in widths) + " |")
    print(f"\nFused scores against {args.keys} keys, ms (in brackets: decode-then-numpy-matmul / fused):\n")
    print("| scores | queries | " + " | ".join(f"{b} bits" for b in widths) + " |")
    print("| --- | --- |" + " --- |" * len(widths))
    score_impls = list(dict.fromkeys(r["impl"] for r in results["scores"]))
    for m in (1, 8, 32):
        for impl in score_impls:
            cells = {r["bits"]: r for r in results["scores"] if r["impl"] == impl and r["queries"] == m}
            print(f"| {impl} | {m} | " + " | ".join(
                f"{cells[b]['fused_s'] * 1e3:.2f} ({cells[b]['speedup']:.1f}x)" if b in cells else "" for b in widths) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

"""Decode attention for one new token on the compressed cache vs dense baselines, in one run.

    python bench/attention.py [--contexts 1024 4096 16384 32768 65536] [--settings 4,4 4,2]
        [--batch 1] [--heads 32 8] [--head-dim 128] [--simd avx2 avx512] [--scores exact int8]
        [--values exact int8] [--layers 1] [--torch-isa avx2] [--threads pool|openmp]
        [--json bench/results/attention.json]

Shape: batch --batch (1), 8 KV heads, 32 query heads (GQA 4), head_dim --head-dim (128), one query
token. Rows:
turbokv fused attention (K4V4, K4V2) on the codes; numpy float32 dense attention; torch
scaled_dot_product_attention float32 on CPU (if torch is installed; once with enable_gqa=True and
once with the 4 query heads of a KV head riding as a query sequence); decode-then-attend (turbokv
decodes the whole cache, then numpy attention). Each row prints its KV bytes, and turbokv rows
print the memory-read floor: their compressed bytes divided by this machine's read bandwidth,
measured in the same run. All implementations use every core (turbokv's thread pool, BLAS and
torch threads); --threads openmp runs turbokv's work on torch's OpenMP threads instead, as
`import turbokv.hf` does in a transformers loop. --layers N gives each row N caches (and dense arrays), called in turn as a model's
layers are, so that a last-level cache larger than one layer's bytes cannot hold them between
calls (300 MiB of L3 holds a 32K K4V4 cache, 36 MB). --torch-isa avx2 runs torch's kernels at AVX2,
as they run on an AVX2 machine (with --simd avx2 on an AVX-512 one: both sides at AVX2). Timing: median of --repeats calls after a
warm-up, a context's rows timed in turns (one call of each per round), so they share the
machine's speed drifts. The code is
turbokv.eval.benchmarks.run_attention, also behind `python -m turbokv bench`.
"""

import argparse
import json

from turbokv.eval.benchmarks import attention_table, parse_bits_pair, run_attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 16384, 32768, 65536])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--settings", nargs="+", default=["4,4", "4,2"],
                        help="key_bits,value_bits pairs, one fused row each (the first also gets decode-then-attend)")
    parser.add_argument("--batch", type=int, default=1, help="sequences decoded at once")
    parser.add_argument("--heads", type=int, nargs=2, default=[32, 8], metavar=("Q", "KV"),
                        help="query and KV heads (fewer KV streams than cores: tokens split over cores)")
    parser.add_argument("--head-dim", type=int, default=128,
                        help="coordinates per head (80: Phi-2, 96: Phi-3, 256: Gemma)")
    parser.add_argument("--simd", nargs="+", default=None,
                        help="time the fused rows at these instruction sets (scalar avx2 avx512); default: the best")
    parser.add_argument("--scores", nargs="+", default=["exact"], choices=["exact", "int8"],
                        help="score precision per fused row (int8: integer sums, int16 ones for 5-8-bit keys)")
    parser.add_argument("--values", nargs="+", default=["exact"], choices=["exact", "int8"],
                        help="value precision per fused row, with each score precision (int8: values of at most 4 bits)")
    parser.add_argument("--layers", type=int, default=1,
                        help="caches per row, called in turn (beyond the last-level cache: every call from memory)")
    parser.add_argument("--torch-isa", default=None, choices=["scalar", "avx2", "avx512"],
                        help="instruction set of torch's kernels (ATEN_CPU_CAPABILITY), e.g. avx2 with --simd avx2 "
                             "to time the dense baselines as an AVX2 machine runs them; default: torch's pick")
    parser.add_argument("--threads", default="pool", choices=["pool", "openmp"],
                        help="where turbokv's parallel work runs: its own pool (as in a numpy loop) or torch's "
                             "OpenMP threads (as import turbokv.hf arranges in a transformers loop)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    try:
        settings = [parse_bits_pair(s) for s in args.settings]
    except ValueError as e:
        parser.error(str(e))
    results = run_attention(args.contexts, args.repeats, settings=settings, batch=args.batch,
                            simd_levels=args.simd or (None,), heads=tuple(args.heads),
                            score_modes=args.scores, value_modes=args.values, head_dim=args.head_dim,
                            layers=args.layers, torch_isa=args.torch_isa, threads=args.threads)
    if not results["torch"]:
        print("torch not installed: no torch SDPA rows (pip install torch==2.13.0)")
    print(attention_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

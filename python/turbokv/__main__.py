"""Command line: ``python -m turbokv --help``."""

from __future__ import annotations

import argparse
import json
import sys
import time


def _codec_table(args: argparse.Namespace) -> int:
    import turbokv
    from turbokv.distortion import codec_table

    start = time.perf_counter()
    rows = codec_table(turbokv.Codec, head_dim=args.head_dim, n=args.vectors, seed=args.seed,
                       show_progress=not args.json)
    if args.json:
        json.dump({"head_dim": args.head_dim, "vectors": args.vectors, "rows": rows}, sys.stdout,
                  indent=2)
        print()
        return 0
    print(f"TurboQuant distortion on {args.vectors} random unit vectors, head_dim={args.head_dim} "
          f"(C++ core, {turbokv.Codec(args.head_dim, 4).simd})\n")
    print("| mode | bits | metric | measured | paper | measured/paper | note |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r["mode"] == "mse":
            note = f"lower bound 4^-b = {r['lower_bound']:.4g}"
        else:
            note = f"bias {r['bias']:+.2e} +- {r['bias_stderr']:.1e} (1 s.e.)"
        print(f"| {r['mode']} | {r['bits']} | {r['metric']} | {r['measured']:.4g} | {r['paper']:.4g} "
              f"| {r['ratio']:.3f} | {note} |")
    print(f"\n({time.perf_counter() - start:.1f} s)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from turbokv import demo

    result = demo.run(tokens=args.tokens, show_progress=not args.json)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        demo.print_table(result)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from turbokv.benchmarks import attention_table, run_attention

    results = run_attention(args.contexts, args.repeats, show_progress=not args.json)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
    else:
        print(attention_table(results))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m turbokv",
        description="turbokv: TurboQuant KV-cache compression (C++ core, numpy bindings).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="greedy generation on the embedded llama2.c model, float32 cache vs turbokv settings",
        description="Generates tokens greedily from BOS with the embedded stories260K model "
                    "(numpy forward) using a float32 cache and several turbokv KVCache settings, "
                    "and prints per setting: tokens identical to float32, teacher-forced KL and "
                    "top-1 agreement, KV bytes, compression vs float16, tokens/s.",
    )
    demo.add_argument("--tokens", type=int, default=100, help="tokens to generate (default 100)")
    demo.add_argument("--json", action="store_true", help="print JSON instead of a table")
    demo.set_defaults(run=_demo)
    bench = sub.add_parser(
        "bench",
        help="time decode attention on the compressed cache against dense baselines",
        description="One new token, batch 1, 32 query / 8 KV heads, head_dim 128: turbokv fused "
                    "attention (K4V4, K4V2) vs numpy float32, torch SDPA (if installed) and "
                    "decode-then-attend, with KV bytes and the memory-read floor. The same code as "
                    "bench/attention.py.",
    )
    bench.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 16384],
                       help="context lengths (default 1024 4096 16384)")
    bench.add_argument("--repeats", type=int, default=7, help="timed calls per row (median)")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.set_defaults(run=_bench)
    table = sub.add_parser(
        "codec-table",
        help="measure the codec's distortion and print it beside the paper's figures",
        description="Encodes random unit vectors at 1-4 bits in mse and prod modes and prints "
                    "E||u-u_hat||^2 (mse) and d*E(err^2) of inner products (prod) beside the "
                    "figures of Zandieh et al. (arXiv 2504.19874).",
    )
    table.add_argument("--head-dim", type=int, default=128, help="vector length (default 128)")
    table.add_argument("--vectors", type=int, default=20000, help="random unit vectors (default 20000)")
    table.add_argument("--seed", type=int, default=0, help="seed of the data and the codec")
    table.add_argument("--json", action="store_true", help="print JSON instead of a table")
    table.set_defaults(run=_codec_table)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

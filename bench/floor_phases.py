"""Does fused decode follow the machine's read-bandwidth phases? The read pass behind
bench/attention.py's floor (1 GiB over every core) and one fused decode call, timed in turns for
ROUNDS rounds; prints each round's pass bandwidth, decode time and multiple of that round's floor,
sorted by bandwidth, with a summary per phase (passes above and below the midpoint of the range).

    python3 bench/floor_phases.py --rounds 40 --context 32768 --bits 4 4 --scores int8 --values int8

(TURBOKV_SIMD=avx2 in front times the AVX2 level; the header names the level that ran.)

With --gaps SECONDS..., the pass alone instead, PASSES times per gap with that much idle time
before each: whether the fast phase needs sustained reading. Session 35 (four runs,
bench/results/read_floor_gaps_zen4_s35.md): 0.3 s apart never above 37 GB/s; back to back fast
(median 52-62) in three runs and slow (35-36) in two blocks of others: the phases follow the
host's time more than this process's load.

    python3 bench/floor_phases.py --gaps 0 0.005 0.05 0.3 --passes 60

On the 2-core Zen 4 VM (session 35) the pass read 30-39 GB/s in 78 of 120 rounds and 49-62 in
42, seconds apart, while K4V4 int8 decode at 32K took a median 2.40 ms in the first and 2.67 in
the second: a floor taken at one moment put the same decode at 2.3x or 4.4x
(bench/results/attention_zen4_b1_s35_floor.md).
"""

import argparse
import functools
import json
import statistics
import time

import numpy as np

from turbokv import KVCache
from turbokv.eval.benchmarks import SETTLE_S, ReadPass, interleaved_times, machine_text


def idle_gaps(gaps, passes: int) -> list:
    """For each gap: ``passes`` read passes, each after that many idle seconds; their GB/s."""
    with ReadPass() as read_pass:
        runs = []
        for gap in gaps:
            gbs = []
            for _ in range(passes):
                time.sleep(gap)
                start = time.perf_counter()
                read_pass()
                gbs.append(read_pass.nbytes / (time.perf_counter() - start) / 1e9)
            runs.append({"gap_s": gap, "gbs": gbs})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--context", type=int, default=32768)
    parser.add_argument("--heads", type=int, nargs=2, default=[32, 8], metavar=("Q", "KV"))
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--bits", type=int, nargs=2, default=[4, 4], metavar=("KEY", "VALUE"))
    parser.add_argument("--scores", default="int8", choices=["exact", "int8"])
    parser.add_argument("--values", default="int8", choices=["exact", "int8"])
    parser.add_argument("--gaps", type=float, nargs="+", default=None,
                        help="time the pass alone, after each of these idle gaps (seconds)")
    parser.add_argument("--passes", type=int, default=60, help="passes per gap (with --gaps)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.rounds < 2 or args.context < 1 or args.passes < 1:
        parser.error("rounds must be at least 2, context and passes at least 1")
    if args.gaps is not None:
        if min(args.gaps) < 0:
            parser.error("gaps must not be negative")
        runs = idle_gaps(args.gaps, args.passes)
        print(f"Read pass (1 GiB over every core) after idle gaps, on {machine_text()}\n")
        print("| gap s | passes | median GB/s | range GB/s |\n| --- | --- | --- | --- |")
        for r in runs:
            print(f"| {r['gap_s']:g} | {len(r['gbs'])} | {statistics.median(r['gbs']):.1f} | "
                  f"{min(r['gbs']):.1f}-{max(r['gbs']):.1f} |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": machine_text(), "gaps": runs}, f, indent=2)
        return
    (q_heads, kv_heads), d = args.heads, args.head_dim
    rng = np.random.default_rng(0)
    k = rng.standard_normal((1, kv_heads, args.context, d), dtype=np.float32)
    v = rng.standard_normal((1, kv_heads, args.context, d), dtype=np.float32)
    q = rng.standard_normal((1, q_heads, 1, d), dtype=np.float32)
    cache = KVCache(d, kv_heads, key_bits=args.bits[0], value_bits=args.bits[1])
    cache.update(k, v)
    decode = functools.partial(cache.attention, q, scores=args.scores, values=args.values)
    with ReadPass() as read_pass:
        times = interleaved_times({"pass": (read_pass, args.rounds), "decode": (decode, args.rounds)},
                                  primed=True, settle_s=SETTLE_S)
        rounds = [{"gbs": read_pass.nbytes / p / 1e9, "ms": t * 1e3} for p, t in zip(times["pass"], times["decode"])]
    for r in rounds:
        r["times_floor"] = r["ms"] / 1e3 / (cache.used_nbytes / (r["gbs"] * 1e9))
    rounds.sort(key=lambda r: r["gbs"])
    label = f"K{args.bits[0]}V{args.bits[1]} {args.scores} scores, {args.values} values"
    print(f"Read pass and fused decode in turns, {label}, {args.context} tokens, {q_heads}/{kv_heads} heads, "
          f"head_dim {d}, {cache.simd}, on {machine_text()}\n")
    print("| pass GB/s | decode ms | x this round's floor |\n| --- | --- | --- |")
    for r in rounds:
        print(f"| {r['gbs']:.1f} | {r['ms']:.3f} | {r['times_floor']:.2f} |")
    middle = (rounds[0]["gbs"] + rounds[-1]["gbs"]) / 2
    print()
    for name, part in (("slower", [r for r in rounds if r["gbs"] < middle]),
                       ("faster", [r for r in rounds if r["gbs"] >= middle])):
        if part:
            print(f"{name} passes ({len(part)}): {min(r['gbs'] for r in part):.1f}-{max(r['gbs'] for r in part):.1f} "
                  f"GB/s; decode median {statistics.median(r['ms'] for r in part):.3f} ms, "
                  f"{statistics.median(r['times_floor'] for r in part):.2f}x the floor")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_text(), "setting": label, "context": args.context,
                       "kv_bytes": cache.used_nbytes, "rounds": rounds}, f, indent=2)


if __name__ == "__main__":
    main()

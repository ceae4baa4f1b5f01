"""Which of torch's two instruction-set choices moves the dense baselines: ATen's own kernels
(ATEN_CPU_CAPABILITY) or MKL's products (MKL_ENABLE_INSTRUCTIONS). Emulating an AVX2 machine on an
AVX-512 one needs both capped; this shows what each cap does to the baselines the benchmarks use.

    python bench/torch_levels.py [--rounds 3] [--small] [--out bench/results/torch_levels]

Each cell is its own fresh process (both variables are read once per process), the cells of a
round one after the other and the rounds repeated, so that the machine's drift spreads over all:
  * decode: torch SDPA float32 with the 4 query heads of a KV head as q_len (bench/attention.py's
    best dense row), 32/8 heads, head_dim 128, 32K tokens, 12 layers' K/V called in turn; median
    of 48 calls after 12;
  * chunk: torch SDPA float32, 512 queries against 8K keys, 32 heads, head_dim 128, the causal
    bottom-right mask (bench/prefill.py's chunk, K/V repeated per query head); median of 5 after 1.
--small: 1K tokens and a 64 x 512 chunk (the same calls at sizes a smoke test can afford).
Prints a markdown table of the medians per cell (ms) and writes OUT.json and OUT.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CELLS = {  # name: the variables set for that process
    "torch's own pick": {},
    "ATen at AVX2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "MKL at AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "both at AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}

CHILD = r"""
import json, statistics, sys, time, torch
context, q_len, chunk_context = (1024, 64, 512) if sys.argv[1] == "small" else (32768, 512, 8192)
torch.manual_seed(0)
sdpa = torch.nn.functional.scaled_dot_product_attention
layers = 12
ks = [torch.randn(1, 8, context, 128) for _ in range(layers)]
vs = [torch.randn(1, 8, context, 128) for _ in range(layers)]
q = torch.randn(1, 8, 4, 128)
times = []
for i in range(60):
    start = time.perf_counter()
    sdpa(q, ks[i % layers], vs[i % layers])
    times.append(time.perf_counter() - start)
decode = statistics.median(times[12:])
del ks, vs
q = torch.randn(1, 32, q_len, 128)
k, v = torch.randn(1, 32, chunk_context, 128), torch.randn(1, 32, chunk_context, 128)
mask = torch.ones(q_len, chunk_context, dtype=torch.bool).tril(chunk_context - q_len)
sdpa(q, k, v, attn_mask=mask)
times = []
for _ in range(5):
    start = time.perf_counter()
    sdpa(q, k, v, attn_mask=mask)
    times.append(time.perf_counter() - start)
print(json.dumps({"decode_s": decode, "chunk_s": statistics.median(times),
                  "aten": torch.backends.cpu.get_cpu_capability()}))
"""


def run_cell(variables: dict, small: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")}
    env.update(variables)
    out = subprocess.run([sys.executable, "-c", CHILD, "small" if small else "full"], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="small shapes, for a smoke test")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    runs = {name: [] for name in CELLS}
    for r in range(args.rounds):
        for name, variables in CELLS.items():
            runs[name].append(run_cell(variables, args.small))
            print(f"round {r}: {name}: {runs[name][-1]}", file=sys.stderr, flush=True)
    from turbokv.eval.benchmarks import cpu_name

    decode_shape, chunk_shape = ("1K", "64 x 512") if args.small else ("32K", "512 x 8K")
    lines = [f"torch's dense baselines by instruction-set cap, {cpu_name()}, {os.cpu_count()} cores; "
             f"medians of {args.rounds} fresh processes per cell (`python bench/torch_levels.py "
             f"{' '.join(sys.argv[1:])}`)", "",
             f"| cap | ATen's level | decode {decode_shape}, 32/8 heads (ms) | chunk {chunk_shape} (ms) |",
             "| --- | --- | --- | --- |"]
    for name, cells in runs.items():
        decode = statistics.median(c["decode_s"] for c in cells) * 1e3
        chunk = statistics.median(c["chunk_s"] for c in cells) * 1e3
        lines.append(f"| {name} | {cells[0]['aten']} | {decode:.2f} | {chunk:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out + ".json").write_text(json.dumps({"cells": CELLS, "small": args.small, "runs": runs}, indent=2))
        Path(args.out + ".md").write_text(text)


if __name__ == "__main__":
    main()

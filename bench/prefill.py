"""Prefill speed: many queries at once on the compressed cache vs the best dense attention, and time
to first token on a real model, in one run, as ratios.

    python bench/prefill.py [--simd scalar avx2 avx512] [--torch-isa avx2] [--repeats 5]
                            [--ttft-rounds 3] [--ttft-batches 1 2] [--no-ttft] [--out bench/results/prefill]
    python bench/prefill.py --crossover     # where tiles start to beat codes (min_tile_rows)

Kernel rows (all cores; median of --repeats, every cell of a shape and batch timed in turns with
SDPA, each call after 0.25 s of untimed calls of its own: turbokv.eval.benchmarks.interleaved_times),
per SIMD level the CPU has:
  * chunk: 512 queries against an 8,192-token cache (the newest 512 are theirs, causal), 32 query /
    8 KV heads, head_dim 128, batch 1 and 4: chunked prefill of a long prompt;
  * prompt: a 2,048-token prompt attending to itself, SmolLM2-135M's shape (9 query / 3 KV heads,
    head_dim 64), batch 1 and 4.
turbokv rows run fused attention with path="tiles" (blocks decoded once, matrix products) and
path="codes" (every query scored on the codes), each asserting the path and SIMD level that ran.
The baseline is torch's scaled_dot_product_attention on float32 K/V, the faster of enable_gqa=True
and K/V repeated per query head (the best dense baseline, not the slowest). --torch-isa avx2 runs
torch at AVX2 (ATen's kernels and MKL's products: turbokv.eval.benchmarks.import_torch), as an
AVX2 machine runs it, for runs that emulate one with --simd avx2 (and TURBOKV_SIMD=avx2 for the
TTFT rows); the header gives the rate torch's float32 products ran at either way.

TTFT rows: SmolLM2-135M (from the smollm2 package, nothing downloaded), one forward over a
2,048-token prompt (seeded random token ids: time does not depend on the text), with
transformers' DynamicCache + SDPA vs TurboQuantCache(config=model.config, preset=...) with attn_implementation="turbokv"
(fused, asserted; every layer's prompt on tiles, except a last query range of fewer rows than
min_tile_rows, which takes the codes path), batch --ttft-batches; median of --ttft-rounds, the
order rotated each round.
--random-weights: the same architecture with seeded random weights (where the model files cannot
be had): the same work per forward except prefill protection's escalations, which follow the
weights; each row lists the key bits its layers chose.
TTFT includes everything a user waits for: encoding the prompt's K/V, prefill protection's
probe, the conversions. Writes OUT.json and OUT.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

from turbokv.eval.benchmarks import (SETTLE_S, TORCH_ISAS, cpu_name, import_torch, interleaved_times, median_time,
                                     torch_sgemm_gflops)

KERNEL_SHAPES = {
    "chunk 512 x 8K, 32/8 heads, d=128": dict(q_heads=32, kv_heads=8, d=128, context=8192, q_len=512),
    "prompt 2K, 9/3 heads, d=64": dict(q_heads=9, kv_heads=3, d=64, context=2048, q_len=2048),
}
SMALL_SHAPES = {  # --small: the same code paths at sizes a smoke test can afford
    "chunk 64 x 512, 8/2 heads, d=64": dict(q_heads=8, kv_heads=2, d=64, context=512, q_len=64),
    "prompt 256, 9/3 heads, d=64": dict(q_heads=9, kv_heads=3, d=64, context=256, q_len=256),
}
SETTINGS = {"K4V4": (4, 4), "K8V4": (8, 4)}


def kernel_rows(levels: List[str], batches: List[int], repeats: int, small: bool = False
                ) -> List[Dict[str, Any]]:
    import torch
    import turbokv

    rows = []
    rng = np.random.default_rng(0)
    # Each level is chosen through TURBOKV_SIMD below; the caller's own setting is put back
    # afterwards, so that the TTFT rows run at the level the command line named.
    callers_level = os.environ.get("TURBOKV_SIMD")
    for shape_name, s in (SMALL_SHAPES if small else KERNEL_SHAPES).items():
        for batch in batches:
            k = rng.standard_normal((batch, s["kv_heads"], s["context"], s["d"]), dtype=np.float32)
            v = rng.standard_normal(k.shape, dtype=np.float32)
            q = rng.standard_normal((batch, s["q_heads"], s["q_len"], s["d"]), dtype=np.float32)
            tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
            group = s["q_heads"] // s["kv_heads"]
            mask = torch.ones(s["q_len"], s["context"], dtype=torch.bool).tril(s["context"] - s["q_len"])
            sdpa = torch.nn.functional.scaled_dot_product_attention
            # A square prompt can use is_causal=True (flash kernel, skips masked blocks); a chunk
            # behind a cache needs the bottom-right mask (torch's is_causal is top-left).
            masking = dict(is_causal=True) if s["q_len"] == s["context"] else dict(attn_mask=mask)
            calls: Dict[str, Tuple[Callable[[], object], int]] = {
                "sdpa enable_gqa": (lambda: sdpa(tq, tk, tv, enable_gqa=True, **masking), repeats),
                "sdpa repeated": (lambda: sdpa(tq, tk.repeat_interleave(group, 1),
                                               tv.repeat_interleave(group, 1), **masking), repeats)}
            for level in levels:
                os.environ["TURBOKV_SIMD"] = level
                for setting, (kb, vb) in SETTINGS.items():
                    cache = turbokv.KVCache(s["d"], s["kv_heads"], kb, vb, protect_keys=False)
                    cache.update(k, v)
                    assert cache.simd == level, (cache.simd, level)
                    for path in ("tiles", "codes"):
                        call = functools.partial(cache.attention, q, path=path)
                        call()  # the path this cell names must be the one that runs
                        assert cache.last_attention_path == path, cache.last_attention_path
                        calls[f"{level} {setting} {path}"] = (call, repeats)
            if callers_level is None:
                os.environ.pop("TURBOKV_SIMD", None)
            else:
                os.environ["TURBOKV_SIMD"] = callers_level
            # Every cell timed in turns, primed (interleaved_times), so that the ratios to SDPA do
            # not carry the machine's drift between cells timed minutes apart (session 45).
            times = interleaved_times(calls, primed=True, settle_s=SETTLE_S)
            medians = {name: statistics.median(t) for name, t in times.items()}
            dense = min(medians.pop("sdpa enable_gqa"), medians.pop("sdpa repeated"))
            row = {"shape": shape_name, "batch": batch, "sdpa_float32_s": dense, "turbokv": medians}
            for name, seconds in medians.items():
                print(f"{shape_name} batch {batch} {name}: {seconds * 1e3:.1f} ms "
                      f"({seconds / dense:.2f}x SDPA {dense * 1e3:.1f} ms)", flush=True)
            rows.append(row)
    return rows


CROSSOVER_Q_LENS = (1, 2, 3, 4, 6, 8, 16)
CROSSOVER_BITS = ((8, 8), (8, 4), (4, 4), (3, 3), (2, 2), (0, 0), (0, 4))  # (0, 4): protected keys


def parse_bits(text: str) -> Tuple[int, int]:
    key, value = (int(part) for part in text.split(","))
    return key, value


def crossover(repeats: int, q_lens: Sequence[int] = CROSSOVER_Q_LENS,
              settings: Sequence[Tuple[int, int]] = CROSSOVER_BITS) -> str:
    """time(tiles) / time(codes) by query rows per KV head, 8K cached tokens, batch 1: the
    measurement behind min_tile_rows in cpp/include/turbokv/attention.hpp."""
    import turbokv

    rng = np.random.default_rng(0)
    lines = ["| heads (q/kv), d | key/value bits | " + " | ".join(f"q_len {n}" for n in q_lens) + " |",
             "| --- | --- |" + " --- |" * len(q_lens)]
    for q_heads, kv_heads, d in ((32, 8, 128), (9, 3, 64)):
        k = rng.standard_normal((1, kv_heads, 8192, d), dtype=np.float32)
        for bits in settings:
            cache = turbokv.KVCache(d, kv_heads, *bits, protect_keys=False)
            cache.update(k, k)
            cells = []
            for q_len in q_lens:
                q = rng.standard_normal((1, q_heads, q_len, d), dtype=np.float32)
                codes = median_time(lambda: cache.attention(q, path="codes"), repeats)
                tiles = median_time(lambda: cache.attention(q, path="tiles"), repeats)
                cells.append(f"{q_heads // kv_heads * q_len} rows: {tiles / codes:.2f}")
            lines.append(f"| {q_heads}/{kv_heads}, {d} | K{bits[0]}V{bits[1]} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def smollm2_shaped(attn_implementation: str) -> Any:
    """SmolLM2-135M's architecture (30 layers, 9/3 heads, head_dim 64, RoPE theta 1e5, tied
    embeddings, float32) with seeded random weights, for machines that cannot hold the real
    weights (the device host: nothing can be downloaded there and the 94 MB GGUF exceeds what a
    call carries). A forward costs what the real model's does, except prefill protection's
    escalations: they follow the weights (each row records the key bits it chose per layer)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.set_attn_implementation(attn_implementation)
    return model


def ttft_rows(presets: List[str], batches: List[int], rounds: int, context: int,
              random_weights: bool = False) -> List[Dict[str, Any]]:
    import torch
    from transformers import DynamicCache

    from turbokv.hf import CACHE_KEYWORD, TurboQuantCache

    if random_weights:
        fused, dense = smollm2_shaped("turbokv"), smollm2_shaped("sdpa")
    else:
        from turbokv.models import smollm2

        fused, _ = smollm2.load("turbokv")
        dense, _ = smollm2.load("sdpa")
    model_name = "SmolLM2-135M's shape, random weights" if random_weights else "SmolLM2-135M"
    rows = []
    for batch in batches:
        ids = torch.randint(100, 40000, (batch, context), generator=torch.Generator().manual_seed(batch))
        runs: Dict[str, List[float]] = {"DynamicCache + SDPA": []}
        runs.update({f"TurboQuantCache {p}": [] for p in presets})
        paths_seen: Dict[str, set] = {name: set() for name in runs}
        levels_seen: Dict[str, set] = {name: set() for name in runs}
        key_bits: Dict[str, List[int]] = {}

        def once(name: str) -> float:
            model = dense if name.startswith("Dynamic") else fused
            cache = (DynamicCache() if name.startswith("Dynamic")
                     else TurboQuantCache(config=fused.config, preset=name.split()[-1]))  # as README
            with torch.no_grad():
                start = time.perf_counter()
                model(ids, **{CACHE_KEYWORD: cache}, use_cache=True)
                seconds = time.perf_counter() - start
            if not name.startswith("Dynamic"):
                # "mixed": the prompt's last query range held fewer rows than min_tile_rows and took
                # the codes path (SmolLM2, 4-bit keys: 2,048 = 24 x 85 + 8 positions, 8 x 3 rows).
                paths = {layer.cache.last_attention_path for layer in cache.layers}
                assert paths and paths <= {"tiles", "mixed"}, paths
                paths_seen[name] |= paths
                levels_seen[name] |= {layer.cache.simd for layer in cache.layers}
                assert all(layer.fused for layer in cache.layers)
                key_bits[name] = [layer.cache.stored_key_bits for layer in cache.layers]
            return seconds

        names = list(runs)
        once(names[0])  # warm-up: first-call allocations and thread start-up
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                runs[name].append(once(name))
                print(f"TTFT batch {batch} round {r}: {name} {runs[name][-1]:.2f} s", flush=True)
        base = statistics.median(runs["DynamicCache + SDPA"])
        for name, times in runs.items():
            rows.append({"model": model_name, "prompt_tokens": context, "batch": batch, "cache": name,
                         "ttft_s": statistics.median(times), "all_s": times,
                         "attention_paths": sorted(paths_seen[name]),
                         "simd": sorted(levels_seen[name]),
                         "stored_key_bits": key_bits.get(name),
                         "vs_dense": statistics.median(times) / base})
    return rows


ENV_NAMED = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "TURBOKV_NUM_THREADS", "TURBOKV_SIMD",
             "TURBOKV_OPENMP", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def markdown(result: Dict[str, Any]) -> str:
    env = " ".join(f"{k}={v}" for k, v in result.get("env", {}).items())
    lines = [f"Machine: {result['machine']}, {result['cores']} cores; torch {result['torch']}, "
             f"{result['threads']} threads, kernels at {result['torch_isa']}, its 1024^3 float32 product "
             f"{result['torch_sgemm_gflops']:.0f} GFLOP/s. Command: `{(env + ' ') if env else ''}{result['command']}`."
             + (f" turbokv's parallel work ran on: {result['thread_backend']}." if "thread_backend" in result else ""),
             ""]
    if result["kernel"]:
        lines += ["### Prefill attention (ms, ratio to the best torch SDPA float32)", "",
                  "| shape | batch | SDPA float32 | " + " | ".join(result["kernel"][0]["turbokv"]) + " |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in result["kernel"][0]["turbokv"]) + " |"]
    for row in result["kernel"]:
        cells = [f"{t * 1e3:.0f} ({t / row['sdpa_float32_s']:.2f}x)" for t in row["turbokv"].values()]
        lines.append(f"| {row['shape']} | {row['batch']} | {row['sdpa_float32_s'] * 1e3:.0f} | " + " | ".join(cells) + " |")
    if result.get("ttft"):
        lines += ["", f"### Time to first token, {result['ttft'][0]['model']}, one forward over the prompt", "",
                  "| batch | prompt tokens | cache | TTFT (s, median) | vs DynamicCache + SDPA | stored key bits per layer "
                  "| turbokv SIMD |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for row in result["ttft"]:
            bits = row.get("stored_key_bits")
            spread = ", ".join(f"{b}: {bits.count(b)}" for b in sorted(set(bits))) if bits else ""
            lines.append(f"| {row['batch']} | {row['prompt_tokens']} | {row['cache']} | {row['ttft_s']:.2f} | "
                         f"{row['vs_dense']:.2f}x | {spread} | {', '.join(row.get('simd', []))} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--simd", nargs="+", default=None, help="levels (default: every level the CPU has)")
    parser.add_argument("--torch-isa", default=None, choices=sorted(TORCH_ISAS),
                        help="instruction set of torch's kernels and products (default: torch's own pick)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ttft-batches", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--ttft-rounds", type=int, default=3)
    parser.add_argument("--ttft-context", type=int, default=2048)
    parser.add_argument("--presets", nargs="+", default=["k8v4", "4bit"])
    parser.add_argument("--no-ttft", action="store_true")
    parser.add_argument("--no-kernel", action="store_true", help="only the TTFT rows")
    parser.add_argument("--random-weights", action="store_true",
                        help="TTFT on SmolLM2-135M's architecture with random weights (no model files)")
    parser.add_argument("--crossover", action="store_true", help="only the tiles/codes crossover table")
    parser.add_argument("--crossover-q-lens", type=int, nargs="+", default=list(CROSSOVER_Q_LENS))
    parser.add_argument("--crossover-bits", type=parse_bits, nargs="+", default=list(CROSSOVER_BITS),
                        help="key,value bits pairs (0: float16), e.g. 0,4 0,0")
    parser.add_argument("--small", action="store_true",
                        help="kernel rows at small shapes (a smoke test; not the figures)")
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args()
    torch = import_torch(args.torch_isa)  # before anything else runs torch: it fixes its level then
    import turbokv

    if args.crossover:
        print(f"time(tiles) / time(codes), {cpu_name()}, best SIMD {turbokv.detect_simd()}")
        print(crossover(max(args.repeats, 7), args.crossover_q_lens, args.crossover_bits))
        return
    levels = args.simd or turbokv.supported_simd()
    result: Dict[str, Any] = {
        "machine": f"{cpu_name()} ({platform.machine()}, best SIMD {turbokv.detect_simd()})",
        "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "torch_isa": torch.backends.cpu.get_cpu_capability().lower(), "torch_sgemm_gflops": torch_sgemm_gflops(torch),
        "command": "python bench/prefill.py " + " ".join(os.sys.argv[1:]),
        # Thread settings that change the figures (OpenMP's spin after torch's ops, section
        # "Many cores: torch's OpenMP threads" in README).
        "env": {k: os.environ[k] for k in ENV_NAMED if k in os.environ},
    }
    result["kernel"] = [] if args.no_kernel else kernel_rows(levels, args.batches, args.repeats, args.small)
    if not args.no_ttft:
        result["ttft"] = ttft_rows(args.presets, args.ttft_batches, args.ttft_rounds, args.ttft_context,
                                   args.random_weights)
        # turbokv.hf shares torch's OpenMP threads where it can (turbokv.share_openmp_threads).
        result["thread_backend"] = turbokv.thread_backend()
    text = markdown(result)
    print(text)
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(result, indent=2))
        Path(args.out + ".md").write_text(text)


if __name__ == "__main__":
    main()

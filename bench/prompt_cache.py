"""Prompt caching: time to first token when a long prompt's cache is reused from a file, against
prefilling it, and the file's size against a float16 DynamicCache saved with safetensors.

    python bench/prompt_cache.py [--context 2048] [--question 16] [--rounds 3] [--presets k8v4 4bit]
                                 [--out bench/results/prompt_cache]

SmolLM2-135M (from the smollm2 package, nothing downloaded), batch 1. A "system prompt" of
--context tokens is prefilled once and saved; each request is that prompt plus a --question-token
question (seeded random ids: time does not depend on the text). Rows, each the median of --rounds
(order rotated each round):
  * prefill: one forward over prompt + question, DynamicCache + SDPA (the dense baseline) and
    TurboQuantCache with attn_implementation="turbokv" (fused, asserted);
  * reuse: load the saved prompt cache from disk, then one forward over the question only. Dense:
    the float16 K/V read with safetensors into a DynamicCache; turbokv:
    ``TurboQuantCache.load`` (the versioned, checksummed file);
and the bytes each file holds on disk. The reused cache's next-token logits are checked against
prefilling the same cache kind (they must agree: a reused cache continues exactly). Writes OUT.json
and OUT.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

from turbokv.eval.benchmarks import cpu_name


def save_dense(cache: Any, path: Path) -> None:
    """A DynamicCache's K/V as float16 safetensors, one key and one value tensor per layer."""
    from safetensors.torch import save_file

    tensors = {}
    for i, layer in enumerate(cache.layers):
        tensors[f"{i}.keys"] = layer.keys.to("cpu").half().contiguous()
        tensors[f"{i}.values"] = layer.values.to("cpu").half().contiguous()
    save_file(tensors, str(path))


def load_dense(path: Path, dtype: Any) -> Any:
    from safetensors.torch import load_file
    from transformers import DynamicCache

    tensors = load_file(str(path))
    cache = DynamicCache()
    for i in range(len(tensors) // 2):
        cache.update(tensors[f"{i}.keys"].to(dtype), tensors[f"{i}.values"].to(dtype), i)
    return cache


def main() -> None:
    import torch
    from transformers import DynamicCache

    import turbokv
    from turbokv.hf import CACHE_KEYWORD, TurboQuantCache
    from turbokv.models import smollm2

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context", type=int, default=2048, help="system prompt tokens")
    parser.add_argument("--question", type=int, default=16, help="question tokens per request")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=["k8v4", "4bit"])
    parser.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    args = parser.parse_args()

    fused, _ = smollm2.load("turbokv")
    dense, _ = smollm2.load("sdpa")
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(100, 40000, (1, args.context), generator=generator)
    question = torch.randint(100, 40000, (1, args.question), generator=generator)
    request = torch.cat([prompt, question], dim=1)
    folder = Path(tempfile.mkdtemp(prefix="turbokv-prompt-cache-"))

    def forward(model: Any, ids: Any, cache: Any) -> Any:
        with torch.no_grad():
            return model(ids, **{CACHE_KEYWORD: cache}, use_cache=True).logits[:, -1]

    def fused_cache(preset: str) -> Any:
        return TurboQuantCache(config=fused.config, preset=preset)

    # Save each kind's prompt cache once; the files are what a server would keep.
    files: Dict[str, Path] = {"dense": folder / "prompt.safetensors"}
    cache = DynamicCache()
    forward(dense, prompt, cache)
    save_dense(cache, files["dense"])
    for preset in args.presets:
        cache = fused_cache(preset)
        forward(fused, prompt, cache)
        files[preset] = folder / f"prompt-{preset}.tkv"
        cache.save(files[preset])

    def timed(fn: Callable[[], Any]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def check_fused(cache: Any) -> None:
        assert all(layer.fused and layer.decoded_steps == 0 for layer in cache.layers)

    def dense_reuse() -> Any:
        return forward(dense, question, load_dense(files["dense"], torch.float32))

    runs: Dict[str, Callable[[], Any]] = {
        "DynamicCache + SDPA, prefill": lambda: forward(dense, request, DynamicCache()),
        "DynamicCache + SDPA, reuse (float16 safetensors)": dense_reuse,
    }
    for preset in args.presets:
        def prefill(preset: str = preset) -> Any:
            cache = fused_cache(preset)
            out = forward(fused, request, cache)
            check_fused(cache)
            return out

        def reuse(preset: str = preset) -> Any:
            cache = TurboQuantCache.load(files[preset], config=fused.config)
            out = forward(fused, question, cache)
            check_fused(cache)
            return out

        runs[f"TurboQuantCache {preset}, prefill"] = prefill
        runs[f"TurboQuantCache {preset}, reuse (.tkv)"] = reuse
        # A reused cache continues as the one it was saved from (the same codes, the same queries).
        # The whole-request prefill is not compared: its question tokens were encoded at the
        # prefill, with the protection probe over the whole request.
        saved = fused_cache(preset)
        forward(fused, prompt, saved)
        torch.testing.assert_close(reuse(), forward(fused, question, saved), rtol=0, atol=1e-4)

    names = list(runs)
    runs[names[0]]()  # warm-up
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timed(runs[name]))
            print(f"round {r}: {name} {times[name][-1]:.3f} s", flush=True)
    base = statistics.median(times[names[0]])
    rows = []
    for name in names:
        key = "dense" if name.startswith("Dynamic") else name.split()[1].rstrip(",")
        rows.append({"setting": name, "ttft_s": statistics.median(times[name]), "all_s": times[name],
                     "vs_dense_prefill": statistics.median(times[name]) / base,
                     "file_bytes": files[key].stat().st_size if "reuse" in name else None})
    dense_bytes = files["dense"].stat().st_size
    result = {"machine": f"{cpu_name()} ({platform.machine()}, best SIMD {turbokv.detect_simd()})",
              "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "model": "SmolLM2-135M", "context": args.context, "question": args.question,
              "command": "python bench/prompt_cache.py " + " ".join(os.sys.argv[1:]), "rows": rows}
    lines = [f"Machine: {result['machine']}, {result['cores']} cores; torch {result['torch']}, "
             f"{result['threads']} threads. Command: `{result['command']}`.", "",
             f"SmolLM2-135M, batch 1: a {args.context}-token prompt, then a {args.question}-token question.",
             "", "| request | TTFT (s, median) | vs dense prefill | prompt file on disk |",
             "| --- | --- | --- | --- |"]
    for row in rows:
        size = "" if row["file_bytes"] is None else (
            f"{row['file_bytes'] / 2**20:.1f} MiB ({dense_bytes / row['file_bytes']:.2f}x smaller)"
            if row["file_bytes"] != dense_bytes else f"{row['file_bytes'] / 2**20:.1f} MiB")
        lines.append(f"| {row['setting']} | {row['ttft_s']:.3f} | {row['vs_dense_prefill']:.3f}x | {size} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(result, indent=2))
        Path(args.out + ".md").write_text(text)
    for path in files.values():
        path.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()

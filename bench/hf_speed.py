"""Decode speed and memory of transformers' generate-style decoding with different caches.

    python bench/hf_speed.py [--contexts 2048 8192] [--batches 1 4] [--dtypes float32 bfloat16]
                             [--steps 8] [--rounds 3] [--thp both] [--json F] [--md F]

A Llama-shaped model with random weights (no download): head_dim 128, 16 query / 4 KV heads,
hidden 2048, 4 layers, vocab 8192, in float32 and bfloat16. For each (dtype, context, batch) every
cache is filled with the same random keys and values for `context` tokens (a prefill of random
weights would take minutes on a CPU and tell nothing more), then the model decodes --steps tokens
one at a time through `model(ids, past_key_values=cache)` (`cache=` from transformers 5.24), as
`generate` does.

Caches: DynamicCache and StaticCache (SDPA); transformers' QuantizedCache (quanto, 4 bits) if
optimum-quanto is installed; TurboQuantCache K4V4 returning decoded K/V to SDPA (the "decoded"
path, asserted to have run); TurboQuantCache K4V4 with attn_implementation="turbokv" (fused,
asserted). Each model has its own config object, so switching one's attention leaves the other.

Reported per row: decode tokens/s (median over --rounds, the caches' order rotated every round so
none always runs first), KV bytes the cache holds, and the peak extra resident memory during the
decode steps, measured (Linux: VmHWM after the steps minus VmRSS before, with the high-water mark
reset through /proc/self/clear_refs before the first step; it includes the steps' activations,
the same for every cache). Speedups are against the best dense cache of the same run.

DynamicCache grows with torch.cat, which copies the whole layer every step; how fast that copy is
depends on torch's allocator: --thp both runs everything twice, with and without
THP_MEM_ALLOC_ENABLE=1 (transparent huge pages for torch's CPU allocations), in two processes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

CONFIG = dict(vocab_size=8192, hidden_size=2048, intermediate_size=5632, num_hidden_layers=4,
              num_attention_heads=16, num_key_value_heads=4, head_dim=128, max_position_embeddings=70000)
DENSE = ("DynamicCache (sdpa)", "StaticCache (sdpa)")


def tensor_bytes(t) -> int:
    if hasattr(t, "__tensor_flatten__"):  # quanto's quantized tensors hold several inner tensors
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def cache_bytes(cache) -> int:
    import torch
    import turbokv.hf as thf

    if isinstance(cache, thf.TurboQuantCache):
        return cache.nbytes
    total = 0
    for layer in cache.layers:
        for value in vars(layer).values():
            if isinstance(value, torch.Tensor) and value.device.type != "meta":
                total += tensor_bytes(value)
    return total


def memory_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def make_caches(configs, context, steps):
    """name -> (attention implementation, factory, path check or None)."""
    from transformers import DynamicCache, StaticCache

    import turbokv.hf as thf

    def decoded(cache):
        assert all(l.decoded_steps > 0 and l.fused_calls == 0 for l in cache.layers), "not decoded"

    def fused(cache):
        assert all(l.fused_calls > 0 and l.decoded_steps == 0 for l in cache.layers), "not fused"

    caches = {
        "DynamicCache (sdpa)": ("sdpa", lambda: DynamicCache(), None),
        "StaticCache (sdpa)": ("sdpa", lambda: StaticCache(config=configs["sdpa"],
                                                           max_cache_len=context + steps), None),
    }
    try:
        import optimum.quanto  # noqa: F401
        from transformers import QuantizedCache

        caches["QuantizedCache quanto 4-bit (sdpa)"] = (
            "sdpa", lambda: QuantizedCache(backend="quanto", config=configs["sdpa"], nbits=4), None)
    except ImportError:
        pass
    caches["TurboQuantCache K4V4, decoded K/V (sdpa)"] = (
        "sdpa", lambda: thf.TurboQuantCache(config=configs["sdpa"], key_bits=4, value_bits=4), decoded)
    caches["TurboQuantCache K4V4, fused (turbokv)"] = (
        "turbokv", lambda: thf.TurboQuantCache(config=configs["turbokv"], key_bits=4, value_bits=4), fused)
    return caches


def decode_once(model, make, check, kv, ids, context, steps):
    """Fills a fresh cache, runs one warm-up and steps-1 timed decode steps; returns
    (tokens/s, KV bytes held, peak extra resident bytes over all the steps)."""
    import torch
    import turbokv.hf as thf

    cache = make()
    for layer, (k, v) in enumerate(kv):
        cache.update(k, v, layer, {"cache_position": torch.arange(context)})
    batch = ids.shape[0]
    with torch.inference_mode():
        # Peak memory from before the first step: the allocator keeps what a step freed, so a
        # transient copy shows only where it is first made.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
        rss_before = memory_kb("VmRSS")
        model(ids[:, :1], **{thf.CACHE_KEYWORD: cache}, use_cache=True,
              cache_position=torch.tensor([context]))  # warm-up step
        start = time.perf_counter()
        for step in range(1, steps):
            model(ids[:, step:step + 1], **{thf.CACHE_KEYWORD: cache}, use_cache=True,
                  cache_position=torch.tensor([context + step]))
        seconds = time.perf_counter() - start
        peak_extra = (memory_kb("VmHWM") - rss_before) * 1024
    if check is not None:
        check(cache)
    return batch * (steps - 1) / seconds, cache_bytes(cache), peak_extra


def measure(args) -> dict:
    """Every row for this process's allocator setting."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import turbokv
    import turbokv.hf  # noqa: F401 - registers attn_implementation="turbokv"

    thp = os.environ.get("THP_MEM_ALLOC_ENABLE") == "1"
    rows = []
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        torch.manual_seed(0)
        configs = {impl: LlamaConfig(**CONFIG) for impl in ("sdpa", "turbokv")}  # one config each
        models = {impl: LlamaForCausalLM(configs[impl]).eval().to(dtype) for impl in configs}
        models["turbokv"].load_state_dict(models["sdpa"].state_dict())
        models["turbokv"].set_attn_implementation("turbokv")
        assert configs["sdpa"]._attn_implementation == "sdpa"
        kv_heads, head_dim = CONFIG["num_key_value_heads"], CONFIG["head_dim"]
        for context in args.contexts:
            for batch in args.batches:
                kv = [(torch.randn(batch, kv_heads, context, head_dim).to(dtype),
                       torch.randn(batch, kv_heads, context, head_dim).to(dtype))
                      for _ in range(CONFIG["num_hidden_layers"])]
                ids = torch.randint(0, CONFIG["vocab_size"], (batch, args.steps))
                caches = make_caches(configs, context, args.steps)
                names = list(caches)
                samples = {name: [] for name in names}
                for r in range(args.rounds):
                    for name in names[r % len(names):] + names[:r % len(names)]:  # rotated order
                        impl, make, check = caches[name]
                        samples[name].append(decode_once(models[impl], make, check, kv, ids,
                                                         context, args.steps))
                best_dense = max(statistics.median(s[0] for s in samples[n]) for n in DENSE)
                for name in names:
                    tps = statistics.median(s[0] for s in samples[name])
                    row = {"thp": thp, "dtype": dtype_name, "context": context, "batch": batch,
                           "cache": name, "tokens_per_s": tps,
                           "tokens_per_s_samples": [s[0] for s in samples[name]],
                           "kv_bytes": samples[name][0][1],
                           "peak_extra_bytes": max(s[2] for s in samples[name]),
                           "vs_best_dense": tps / best_dense}
                    rows.append(row)
                    print(format_row(row), flush=True)
    return {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {turbokv.detect_simd()}, "
                       f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
            "rows": rows}


HEADER = ("| THP | dtype | context | batch | cache | tokens/s | KV MB held | peak extra MB while decoding "
          "| vs best dense |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def format_row(r) -> str:
    return (f"| {'on' if r['thp'] else 'off'} | {r['dtype']} | {r['context']} | {r['batch']} | "
            f"{r['cache']} | {r['tokens_per_s']:.1f} | {r['kv_bytes'] / 1e6:.1f} | "
            f"{r['peak_extra_bytes'] / 1e6:.1f} | {r['vs_best_dense']:.2f}x |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                        choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--thp", choices=["both", "on", "off"], default="both",
                        help="THP_MEM_ALLOC_ENABLE for torch's allocator (both: two processes)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--md", default=None)
    args = parser.parse_args()
    if args.steps < 2 or args.rounds < 1:
        parser.error("--steps must be >= 2 and --rounds >= 1")
    if args.thp != "both":
        result = measure(args)
    else:
        print(HEADER, flush=True)
        result = {"rows": []}
        for setting in ("0", "1"):
            with tempfile.TemporaryDirectory() as tmp:
                out = os.path.join(tmp, "part.json")
                argv = [a for a in sys.argv[1:]]
                for flag in ("--json", "--md"):
                    if flag in argv:
                        i = argv.index(flag)
                        del argv[i:i + 2]
                subprocess.run([sys.executable, __file__, *argv, "--thp", "on" if setting == "1" else "off",
                                "--json", out], check=True,
                               env={**os.environ, "THP_MEM_ALLOC_ENABLE": setting}, stdout=sys.stdout)
                part = json.load(open(out))
            result["machine"] = part["machine"]
            result["rows"] += part["rows"]
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            result["system_thp"] = f.read().strip()
    except OSError:
        result["system_thp"] = "unknown"
    result["model"] = CONFIG
    result["steps"], result["rounds"] = args.steps, args.rounds
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if args.md:
        with open(args.md, "w") as f:
            f.write(f"Decode, random Llama-shaped model (head_dim 128, 16/4 heads, 4 layers), "
                    f"{args.steps - 1} timed steps, median of {args.rounds} rounds in rotated order, "
                    f"on {result['machine']}; system THP: {result['system_thp']}.\n\n{HEADER}\n")
            f.write("\n".join(format_row(r) for r in result["rows"]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

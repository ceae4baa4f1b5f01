"""Levers that keep keys at 4 bits, measured end to end: teacher-forced ΔPPL and KL vs float32.

    python bench/key_levers.py [--models smollm2 qwen25] [--out bench/results/key_levers]

- key calibration (post-rotation per-coordinate key scales folded into the query, mlx-swift-lm
  PR #232): turbokv.eval.key_calibration, an exact linear map of keys and queries around the
  unmodified cache;
- outlier-channel split: turbokv.eval.outlier_split, the loudest key channels of each layer and
  head kept exact (float16) and the rest encoded at fewer bits, at matched total bits (1 bit per
  key coordinate buys head_dim/16 channels, so "K3V4 + 1-bit split" stores what K4V4 stores);
- per-head mean removal is key centring, on in every row (bench/quality.py --key-rows has it off).

Same harness as bench/quality.py (KJV held-out text; SmolLM2 4 x 512 tokens, Qwen2.5-Coder
2 x 512), short greedy runs (8 tokens). Key centring and prefill protection (without the one-bit
refinement, so the rows isolate each lever at fixed bits) in every arm.
"""

import argparse
import json
import sys
from pathlib import Path

from turbokv.eval import causal
from turbokv.eval.evaluation import _SIZES, _machine
from turbokv.eval.levers import lever_caches
from turbokv.eval.settings import Setting

# Refinement off (refine_bound = protection_bound) in every arm, so the rows isolate the levers
# and bits; no layer of these models exceeds that bound at 3-5 bits once centred.
_NO_REFINE = {"refine_bound": 16.0}


def _setting(label: str, key_bits: int, **lever: object) -> Setting:
    return Setting(label, {"key_bits": key_bits, "value_bits": 4, **_NO_REFINE, **lever})


# 1 bit per key coordinate of exact channels is head_dim/16 of them: "K3V4 + 1-bit outlier split"
# stores what K4V4 stores, "K4V4 + 1-bit" what K5V4 stores.
SETTINGS = [_setting("K3V4", 3), _setting("K4V4", 4), _setting("K5V4", 5),
            _setting("K3V4 calibrated", 3, lever="calibration"),
            _setting("K4V4 calibrated", 4, lever="calibration"),
            _setting("K3V4 + 1-bit outlier split", 3, lever="outlier split", outlier_bits=1.0),
            _setting("K4V4 + 1-bit outlier split", 4, lever="outlier split", outlier_bits=1.0)]


def run_model(name: str) -> dict:
    from turbokv.models import kjv_llama, qwen25_coder, smollm2

    module = {"smollm2": smollm2, "qwen25": qwen25_coder}[name]
    model, tokenizer = module.load()
    sequences, length, _ = _SIZES.get(name, (4, 512, 128))
    task = causal.make_task(tokenizer, kjv_llama.validation_text(), sequences=sequences,
                            length=length, generate=8)
    with lever_caches():
        result = causal.evaluate(model, task, SETTINGS)
    result["model"] = module.NAME
    return result


def markdown(out: dict) -> str:
    lines = [f"Machine: {out['machine']}. Command: `{out['command']}`.", ""]
    for name, result in out["models"].items():
        lines += [f"**{result['model']}**, {result['sequences']} x {result['length']} tokens, "
                  f"float32 PPL {result['baseline']['ppl']:.3f}:", "",
                  "| setting | bits/coord | ΔPPL % [95%] | KL (nats) | top-1 agreement |",
                  "| --- | --- | --- | --- | --- |"]
        for r in result["rows"]:
            low, high = r["delta_ppl_pct_95"]
            lines.append(f"| {r['setting']} | {r['bits_per_coordinate']:.2f} | {r['delta_ppl_pct']:+.2f} "
                         f"[{low:+.2f}, {high:+.2f}] | {r['kl_mean']:.4f} | {r['top1_agreement']:.3f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["smollm2", "qwen25"], choices=["smollm2", "qwen25"])
    parser.add_argument("--out", type=Path, default=Path("bench/results/key_levers"))
    args = parser.parse_args()
    out = {"machine": _machine(), "command": "python " + " ".join(sys.argv),
           "models": {name: run_model(name) for name in args.models}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=1, default=str))
    args.out.with_suffix(".md").write_text(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()

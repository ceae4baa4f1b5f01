"""Key calibration (post-rotation per-coordinate key scales folded into the query, mlx-swift-lm
PR #232) measured end to end: teacher-forced ΔPPL and KL vs float32 with and without it.

    python bench/key_calibration.py [--models smollm2 qwen25] [--out bench/results/key_calibration]

Same harness as bench/quality.py (KJV held-out text; SmolLM2 4 x 512 tokens, Qwen2.5-Coder
2 x 512), short greedy runs (8 tokens). Calibrated rows run turbokv.eval.key_calibration's
CalibratedKVCache (an exact linear map of keys and queries around the unmodified cache), with
key centring and prefill protection (without the one-bit refinement) in both arms.
"""

import argparse
import json
import sys
from pathlib import Path

from turbokv.eval import causal
from turbokv.eval.evaluation import _SIZES, _machine
from turbokv.eval.key_calibration import calibrated_caches
from turbokv.eval.settings import Setting

# Refinement off (refine_bound = protection_bound) in every arm, so the rows isolate calibration
# and bits; no layer of these models exceeds that bound at 3-5 bits once centred.
_NO_REFINE = {"refine_bound": 16.0}
PLAIN = [Setting("K4V4", {"key_bits": 4, "value_bits": 4, **_NO_REFINE}),
         Setting("K3V4", {"key_bits": 3, "value_bits": 4, **_NO_REFINE}),
         Setting("K5V4", {"key_bits": 5, "value_bits": 4, **_NO_REFINE})]
CALIBRATED = [Setting("K4V4 calibrated", {"key_bits": 4, "value_bits": 4, **_NO_REFINE}),
              Setting("K3V4 calibrated", {"key_bits": 3, "value_bits": 4, **_NO_REFINE})]


def run_model(name: str) -> dict:
    from turbokv.models import kjv_llama, qwen25_coder, smollm2

    module = {"smollm2": smollm2, "qwen25": qwen25_coder}[name]
    model, tokenizer = module.load()
    sequences, length, _ = _SIZES.get(name, (4, 512, 128))
    task = causal.make_task(tokenizer, kjv_llama.validation_text(), sequences=sequences,
                            length=length, generate=8)
    result = causal.evaluate(model, task, PLAIN)
    with calibrated_caches():
        calibrated = causal.evaluate(model, task, CALIBRATED)
    result["rows"] += calibrated["rows"]
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
    parser.add_argument("--out", type=Path, default=Path("bench/results/key_calibration"))
    args = parser.parse_args()
    out = {"machine": _machine(), "command": "python " + " ".join(sys.argv),
           "models": {name: run_model(name) for name in args.models}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=1, default=str))
    args.out.with_suffix(".md").write_text(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()

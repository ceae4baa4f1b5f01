"""Why SmolLM2's keys need more bits, and four fixes measured on its real queries/keys/values.

    python bench/key_outliers.py [--out bench/results/key_outliers]

Captures the rotary-embedded queries, keys and values of every layer of SmolLM2-135M (and of the
KJV Llama, for the channel statistics) on the first 512 tokens of the KJV Llama's held-out text,
then measures the causal attention-output relative error ||out - out_f32|| / ||out_f32|| of
every third layer when only the keys are compressed (values exact), for:

  * plain TurboQuant keys at 4 and 3 bits;
  * per-channel key scaling folded into the query (k / s, q * s with s = sqrt(channel RMS) from
    the first 64 tokens: exact in float, so only the quantization error changes);
  * key centering (subtract the first 64 tokens' channel mean; softmax ignores the q . mean term);
  * the first 4 tokens ("attention sinks") kept exact;
  * an outlier-channel split: the 8 or 16 channels of largest RMS (first 64 tokens) coded with
    their own TurboQuant instance at more bits, the rest with another (two norms per key).

Bits per coordinate count codes and float32 norms. Needs SmolLM2 (scripts/setup.sh installs it).
"""

import argparse
import json
from pathlib import Path

import numpy as np

CALIBRATION = 64


CAPTURED = {}


def record(module, q, k, v, mask, **kwargs):
    """SDPA, after storing the layer's queries, keys and values in CAPTURED."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    CAPTURED[module.layer_idx] = (q.numpy().copy(), k.numpy().copy(), v.numpy().copy())
    return sdpa_attention_forward(module, q, k, v, mask, **kwargs)


def capture(loader, text: str, tokens: int = 512):
    """{layer: (q, k, v)} numpy arrays (1, heads, tokens, head_dim) from one forward pass."""
    import torch
    from transformers import AttentionInterface

    AttentionInterface.register("turbokv_capture", record)
    model, tokenizer = loader(attn_implementation="turbokv_capture")
    CAPTURED.clear()
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :tokens]
    with torch.inference_mode():
        model(ids, use_cache=False)
    return dict(CAPTURED)


def roundtrip(x: np.ndarray, bits: int, seed: int) -> np.ndarray:
    """x (1, heads, tokens, d) through a turbokv key store and back."""
    import turbokv

    cache = turbokv.KVCache(x.shape[3], x.shape[1], key_bits=bits, value_bits=0, seed=seed)
    x = np.ascontiguousarray(x, dtype=np.float32)
    cache.update(x, x)
    return cache.fetch()[0]


def attention_error(q, k, v, k_hat, q_scale=None) -> float:
    from turbokv import reference

    exact = reference.attention(q, k, v)
    out = reference.attention(q if q_scale is None else q * q_scale, k_hat, v)
    return float(np.linalg.norm(out - exact) / np.linalg.norm(exact))


def variants(q, k, v):
    """(label, bits per coordinate, error) for every fix, on one layer."""
    d = k.shape[3]
    group = q.shape[1] // k.shape[1]
    norm = 32 / d
    rms = np.sqrt((k[:, :, :CALIBRATION] ** 2).mean(2, keepdims=True)) + 1e-6
    out = []
    for bits in (4, 3):
        out.append((f"K{bits} plain", bits + norm, attention_error(q, k, v, roundtrip(k, bits, 1))))
        s = np.sqrt(rms)
        s = s / np.exp(np.log(s).mean(-1, keepdims=True))
        scaled = roundtrip(k / s, bits, 1)
        out.append((f"K{bits} channel scaling", bits + norm,
                    attention_error(q, k, v, scaled, np.repeat(s, group, 1))))
        mean = k[:, :, :CALIBRATION].mean(2, keepdims=True)
        out.append((f"K{bits} centering", bits + norm,
                     attention_error(q, k, v, roundtrip(k - mean, bits, 1) + mean)))
        sink = roundtrip(k, bits, 1)
        sink[:, :, :4] = k[:, :, :4]
        out.append((f"K{bits} first 4 tokens exact", bits + norm, attention_error(q, k, v, sink)))
    for n_out, b_out, b_rest in ((8, 8, 3), (16, 8, 3), (16, 6, 3), (8, 8, 4)):
        k_hat = np.empty_like(k)
        for h in range(k.shape[1]):
            order = np.argsort(-rms[0, h, 0])
            outl, rest = np.sort(order[:n_out]), np.sort(order[n_out:])
            k_hat[:, h:h + 1][..., outl] = roundtrip(k[:, h:h + 1][..., outl], b_out, 2)
            k_hat[:, h:h + 1][..., rest] = roundtrip(k[:, h:h + 1][..., rest], b_rest, 3)
        bits = (n_out * b_out + (d - n_out) * b_rest + 64) / d
        out.append((f"split: {n_out} channels at {b_out} bits, rest at {b_rest}", bits,
                    attention_error(q, k, v, k_hat)))
    return out


def channel_spread(captured) -> list:
    """Per layer: the median over heads of (largest channel RMS / median channel RMS) of keys."""
    spread = []
    for layer in sorted(captured):
        k = captured[layer][1][0]
        rms = np.sqrt((k ** 2).mean(1))
        spread.append(float(np.median(rms.max(1) / np.median(rms, 1))))
    return spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "key_outliers")
    parser.add_argument("--tokens", type=int, default=512, help="tokens of held-out text (default 512)")
    args = parser.parse_args()
    from tqdm import tqdm

    from turbokv.models import kjv_llama, smollm2

    text = kjv_llama.validation_text()
    lines = []
    spreads = {}
    for name, module in (("KJV Llama", kjv_llama), ("SmolLM2-135M", smollm2)):
        captured = capture(module.load, text, args.tokens)
        spreads[name] = channel_spread(captured)
    lines.append("Key channel spread (largest / median channel RMS, median over heads), per layer:\n")
    for name, spread in spreads.items():
        lines.append(f"- {name}: {min(spread):.1f}-{max(spread):.1f}x ({', '.join(f'{s:.1f}' for s in spread)})")
    layers = list(range(0, len(captured), 3))
    rows = {}
    for layer in tqdm(layers, desc="SmolLM2 layers", leave=False):
        for label, bits, error in variants(*captured[layer]):
            rows.setdefault(label, (bits, []))[1].append(error)
    lines.append(f"\nSmolLM2-135M, keys only compressed (values exact), layers {layers}: attention-output "
                 "relative error, mean over those layers.\n")
    lines.append("| keys | bits/coord | attention-output error |")
    lines.append("| --- | --- | --- |")
    for label, (bits, errors) in rows.items():
        lines.append(f"| {label} | {bits:.2f} | {np.mean(errors):.4f} |")
    table = "\n".join(lines)
    print(table)
    args.out.with_suffix(".md").write_text(table + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"tokens": args.tokens, "layers": layers, "key_channel_spread": spreads,
         "rows": [{"keys": k, "bits_per_coordinate": b, "error_mean": float(np.mean(e)), "errors": e}
                  for k, (b, e) in rows.items()]}, indent=1) + "\n")


if __name__ == "__main__":
    main()

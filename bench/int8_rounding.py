"""What rounding the centroids to +-63 (int8 scores and values since session 28) costs, against +-127.

    python bench/int8_rounding.py [--json bench/results/int8_rounding.json]

Two measures, 1-4-bit codebooks, head_dim 128:

  * the centroids' own rounding error, weighted by how often each centroid occurs for N(0, 1)
    coordinates (Monte Carlo, 2M draws), as a share of the codec's squared error per coordinate;
  * int8 scores on keys: rms(int8 - float32 scores) / rms(float32 - true scores), and the KL of
    the attention distribution of int8 scores from float32 scores' as a share of the codec's own
    KL (float32 codes against true keys), on random Gaussian keys and on Qwen2.5-Coder-1.5B's keys
    of layers 0 and 27 (tests/python/data/qwen25_qkv.npz; its first KV head and 6 query heads).

The +-63 rows are the library's own `Codec.scores(precision="int8")` (checked against a numpy model
of the rounding); the +-127 rows are that numpy model with the old table.
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np

import turbokv
from turbokv import reference

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "python" / "data" / "qwen25_qkv.npz"


def integer_round(x: np.ndarray, top: int):
    big = np.abs(x).max(axis=-1, keepdims=True)
    scale = np.where(big > 0, big / top, 0.0)
    return np.rint(x / np.where(big > 0, scale, 1.0)), scale


def int8_scores_model(oracle: reference.Codec, q: np.ndarray, enc, centroid_top: int) -> np.ndarray:
    """Scores from the query rounded to +-127 and the centroids to +-centroid_top (float64)."""
    d = oracle.head_dim
    qi, q_scale = integer_round(q.astype(np.float64) @ oracle.rotation.T / math.sqrt(d), 127)
    ci, c_scale = integer_round(oracle.centroids[None, :].astype(np.float64), centroid_top)
    idx = reference.unpack(enc.codes, d, oracle.mse_bits)
    return (qi @ ci[0][idx].T) * q_scale * c_scale * enc.norms.astype(np.float64)[None, :]


def attention_kl(logits_p: np.ndarray, logits_q: np.ndarray) -> float:
    """Mean over rows of KL(softmax(p) || softmax(q))."""
    lp = logits_p - logits_p.max(1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    lq = logits_q - logits_q.max(1, keepdims=True)
    lq -= np.log(np.exp(lq).sum(1, keepdims=True))
    return float(np.mean((np.exp(lp) * (lp - lq)).sum(1)))


def centroid_rounding(bits: int, draws: int = 2_000_000) -> dict:
    c = reference.Codec(head_dim=128, bits=bits, seed=3).centroids.astype(np.float64)
    x = np.random.default_rng(0).standard_normal(draws)
    idx = np.searchsorted((c[1:] + c[:-1]) / 2, x)
    codec_mse = float(np.mean((x - c[idx]) ** 2))
    share = {}
    for top in (127, 63):
        scale = top / np.abs(c).max()
        err = (np.rint(c * scale) - c * scale) / scale
        share[top] = float(np.mean(err[idx] ** 2)) / codec_mse
    return {"bits": bits, "share_127": share[127], "share_63": share[63]}


def score_rows() -> list:
    rng = np.random.default_rng(0)
    data = {"gaussian": (rng.standard_normal((64, 128)).astype(np.float32),
                         rng.standard_normal((4000, 128)).astype(np.float32), 1 / math.sqrt(128))}
    fixture = np.load(FIXTURE)
    for layer in (0, 27):
        data[f"qwen2.5 layer {layer}"] = (fixture[f"q{layer}"][0, :6].reshape(-1, 128),
                                          fixture[f"k{layer}"][0, 0], float(fixture["scale"]))
    rows = []
    for name, (q, k, softmax_scale) in data.items():
        true = q.astype(np.float64) @ k.T.astype(np.float64)
        for bits in (2, 3, 4):
            codec = turbokv.Codec(head_dim=128, bits=bits, seed=3)
            oracle = reference.Codec(head_dim=128, bits=bits, seed=3)
            enc = codec.encode(k)
            exact = codec.scores(q, enc).astype(np.float64)
            library = codec.scores(q, enc, precision="int8").astype(np.float64)
            model63 = int8_scores_model(oracle, q, enc, 63)
            assert np.allclose(library, model63, rtol=1e-4, atol=1e-3 * np.abs(model63).max()), (name, bits)
            old = int8_scores_model(oracle, q, enc, 127)
            codec_rms = np.sqrt(np.mean((exact - true) ** 2))
            codec_kl = attention_kl(true * softmax_scale, exact * softmax_scale)
            row = {"keys": name, "bits": bits}
            for label, scores in (("127", old), ("63", library)):
                row[f"rms_{label}"] = float(np.sqrt(np.mean((scores - exact) ** 2)) / codec_rms)
                row[f"kl_{label}"] = attention_kl(exact * softmax_scale, scores * softmax_scale) / codec_kl
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rounding = [centroid_rounding(bits) for bits in (1, 2, 3, 4)]
    print("centroid rounding error / codec's squared error per coordinate (N(0, 1), weighted)")
    print("| bits | +-127 | +-63 |\n| --- | --- | --- |")
    for r in rounding:
        print(f"| {r['bits']} | {100 * r['share_127']:.3f}% | {100 * r['share_63']:.3f}% |")
    rows = score_rows()
    print("\nint8 scores: rms(int8 - float32) / rms(float32 - true); KL(float32 || int8 attention) / codec KL")
    print("| keys | bits | rms +-127 | rms +-63 | KL share +-127 | KL share +-63 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['keys']} | {r['bits']} | {r['rms_127']:.4f} | {r['rms_63']:.4f} | "
              f"{100 * r['kl_127']:.2f}% | {100 * r['kl_63']:.2f}% |")
    if args.json:
        args.json.write_text(json.dumps({"rounding": rounding, "scores": rows}, indent=1))


if __name__ == "__main__":
    main()

"""Why 5-8-bit keys keep a table lookup: the squared error of an evenly spaced codebook.

    python bench/codebook_spacing.py [--bits 5 6 7 8] [--samples 4000000] [--json out.json]

TurboQuant's Lloyd-Max codebooks are spaced unevenly (denser near zero), so every score of a
5-8-bit key looks its centroid up in a table (a gather, broadcast loads or byte-plane shuffles,
kernel_choices_avx2.md). An evenly spaced codebook c_i = -L + (i + 1/2) 2L / 2^b would make a key's
code bytes an affine function of its coordinates: scores by one int8 or int16 product per
coordinate, no lookup. This prints what that would cost in distortion: for each width, the mean
squared error per coordinate of N(0, 1) samples (the rotated coordinates' limit) under the
Lloyd-Max codebook, under the best evenly spaced one (L searched on a grid of 0.1), and the
paper's bound sqrt(3) pi / 2 * 4^-b (Zandieh et al., Theorem 1).
"""

import argparse
import json
import math

import numpy as np

from turbokv.reference import boundaries, lloyd_max_codebook


def lloyd_max_mse(x: np.ndarray, bits: int) -> float:
    centroids = lloyd_max_codebook(bits)
    return float(np.mean((x - centroids[np.searchsorted(boundaries(centroids), x)]) ** 2))


def best_even_mse(x: np.ndarray, bits: int) -> tuple[float, float]:
    """(mse, L) of the evenly spaced codebook over [-L, L] that fits x best, L on a 0.1 grid."""
    levels = 2 ** bits
    best = (math.inf, 0.0)
    for half_range in np.arange(2.0, 6.0001, 0.1):
        step = 2 * half_range / levels
        index = np.clip(np.floor((x + half_range) / step), 0, levels - 1)
        mse = float(np.mean((x - (-half_range + (index + 0.5) * step)) ** 2))
        best = min(best, (mse, round(float(half_range), 1)))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, nargs="+", default=[5, 6, 7, 8], choices=range(1, 9))
    parser.add_argument("--samples", type=int, default=4_000_000)
    parser.add_argument("--json", help="write the rows here too")
    args = parser.parse_args()
    x = np.random.default_rng(0).standard_normal(args.samples)
    rows = []
    print("| bits | Lloyd-Max MSE | evenly spaced MSE (range ±L) | even / Lloyd-Max | paper's bound | even / bound |")
    print("| --- | --- | --- | --- | --- | --- |")
    for bits in args.bits:
        lloyd = lloyd_max_mse(x, bits)
        even, half_range = best_even_mse(x, bits)
        bound = math.sqrt(3) * math.pi / 2 * 4.0 ** -bits
        rows.append({"bits": bits, "lloyd_max_mse": lloyd, "even_mse": even, "even_half_range": half_range,
                     "paper_bound": bound})
        print(f"| {bits} | {lloyd:.3e} | {even:.3e} (±{half_range}) | {even / lloyd:.2f}x | {bound:.3e} | {even / bound:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"samples": args.samples, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

"""How long `import turbokv` takes, on top of numpy (which any user of it has imported anyway).

    python bench/import_time.py [--runs 7]

Each run is a fresh interpreter with `python -X importtime -c "import numpy; import turbokv"`;
prints the median cumulative microseconds of numpy and of turbokv, and what turbokv imported
beyond the standard library and numpy (it must not import its evaluation, tqdm, torch).
"""

import argparse
import statistics
import subprocess
import sys


def one_run() -> dict:
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", "import numpy; import turbokv"],
                         capture_output=True, text=True, check=True).stderr
    times = {}
    for line in err.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line.split("|"))
        if cumulative.isdigit() and name in ("numpy", "turbokv"):
            times[name] = int(cumulative)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    numpy_ms = statistics.median(r["numpy"] for r in runs) / 1e3
    turbokv_ms = statistics.median(r["turbokv"] for r in runs) / 1e3
    extra = subprocess.run([sys.executable, "-c",
                            "import sys, numpy; before = set(sys.modules); import turbokv; "
                            "print(sorted(m for m in set(sys.modules) - before if not m.startswith('turbokv')))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    print(f"median of {args.runs} fresh interpreters: import numpy {numpy_ms:.0f} ms, "
          f"then import turbokv {turbokv_ms:.0f} ms")
    print(f"modules import turbokv adds besides its own: {extra}")


if __name__ == "__main__":
    main()

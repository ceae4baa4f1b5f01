"""Quality of cache settings on a Hugging Face causal LM: teacher-forced perplexity, KL divergence
and top-1 agreement against the float32 cache, and greedy generations compared token by token.

Every position's next-token distribution is computed from exactly the keys and values a
decoding step would see: settings with a residual window are fed one token at a time (so the
window holds the R newest tokens in float16, as when decoding); settings without one are fed 64
tokens at a time, which is the same computation, since every key is compressed before any query
reads it (tests check the two agree), and 40x faster on a CPU. Key centring and prefill
protection take their statistics from the first call: with 64-token chunks, a 64-token prompt.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .settings import Setting

__all__ = ["CausalTask", "make_task", "evaluate", "chunked_logits", "greedy", "decode_exact_chunk"]


class CausalTask:
    """What to measure on: ``sequences`` (batch, length) token ids for teacher forcing and
    ``prompts`` (batch, prompt_length) for greedy generation of ``generate`` tokens."""

    def __init__(self, sequences: Any, prompts: Any, generate: int) -> None:
        self.sequences, self.prompts, self.generate = sequences, prompts, generate


def make_task(tokenizer: Any, text: str, sequences: int = 4, length: int = 512,
              prompt_tokens: int = 32, generate: int = 128) -> CausalTask:
    """Token windows from ``text``: ``sequences`` consecutive windows of ``length`` tokens for
    perplexity, and the first ``prompt_tokens`` tokens of the first ``sequences`` paragraphs
    (blank-line separated) as greedy prompts."""
    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids[0]
    if ids.numel() < sequences * length:
        raise ValueError(f"the text has {ids.numel()} tokens; {sequences} x {length} needed")
    windows = ids[: sequences * length].view(sequences, length)
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    prompts = []
    for p in paragraphs:
        pid = tokenizer(p, return_tensors="pt").input_ids[0]
        if pid.numel() >= prompt_tokens:
            prompts.append(pid[:prompt_tokens])
        if len(prompts) == sequences:
            break
    if len(prompts) < sequences:
        raise ValueError(f"fewer than {sequences} paragraphs of {prompt_tokens} tokens in the text")
    return CausalTask(windows, torch.stack(prompts), generate)


def chunked_logits(model: Any, cache: Any, ids: Any, chunk: int = 1) -> Iterator[Tuple[int, Any]]:
    """Feeds ``ids`` (batch, length) through ``model`` ``chunk`` tokens at a time with ``cache``;
    yields (start, float32 logits of shape (batch, chunk, vocab)) for positions start.."""
    import torch

    from ..hf import CACHE_KEYWORD

    with torch.inference_mode():
        for start in range(0, ids.shape[1], chunk):
            piece = ids[:, start:start + chunk]
            positions = torch.arange(start, start + piece.shape[1]).unsqueeze(0)
            out = model(input_ids=piece, **{CACHE_KEYWORD: cache}, use_cache=True,
                        cache_position=positions[0], position_ids=positions.expand(piece.shape[0], -1))
            yield start, out.logits.float()


def greedy(model: Any, cache: Any, prompts: Any, steps: int
           ) -> Tuple[np.ndarray, np.ndarray, float]:
    """Greedy decoding: prefill ``prompts`` (batch, P) in one call, then ``steps`` single-token
    steps; returns (generated ids (batch, steps), the top-1 minus top-2 logit margin of every
    choice (batch, steps), seconds spent in the decode steps)."""
    import torch

    from ..hf import CACHE_KEYWORD

    out: List[Any] = []
    margins: List[Any] = []
    with torch.inference_mode():
        length = prompts.shape[1]
        logits = model(input_ids=prompts, **{CACHE_KEYWORD: cache}, use_cache=True).logits[:, -1]
        start = time.perf_counter()
        for step in range(steps):
            top = logits.float().topk(2, dim=-1).values
            margins.append(top[:, 0] - top[:, 1])
            token = logits.argmax(-1, keepdim=True)
            out.append(token)
            if step == steps - 1:
                break
            position = torch.tensor([length + step])
            logits = model(input_ids=token, **{CACHE_KEYWORD: cache}, use_cache=True,
                           cache_position=position,
                           position_ids=position.expand(token.shape[0], 1)).logits[:, -1]
        seconds = time.perf_counter() - start
    return torch.cat(out, dim=1).numpy(), torch.stack(margins, dim=1).numpy(), seconds


def _leading_matches(a: np.ndarray, b: np.ndarray) -> List[int]:
    """Per row, the number of leading tokens a and b share."""
    differ = a != b
    return [int(np.argmax(row)) if row.any() else a.shape[1] for row in differ]


def _stored_bits_per_coordinate(cache: Any, tokens: int, batch: int) -> Tuple[int, float]:
    used, coords = 0, 0
    for layer in cache.layers:
        store = layer.cache
        used += store.used_nbytes
        coords += 2 * batch * store.num_kv_heads * store.head_dim * tokens
    return used, 8.0 * used / coords


def delta_ppl_interval(nll: np.ndarray, base_nll: np.ndarray, segment: int = 64
                       ) -> Tuple[float, float]:
    """95% interval of the perplexity change (in %) from per-token NLLs of the same text.

    Perplexity ratio = exp(mean of the paired NLL differences). Neighbouring tokens' differences are
    correlated (a perturbed context moves several predictions), so the standard error is taken
    over the means of ``segment``-token segments, not over single tokens."""
    diff = (np.asarray(nll, dtype=np.float64) - np.asarray(base_nll, dtype=np.float64)).ravel()
    usable = diff.size // segment * segment
    means = diff[:usable].reshape(-1, segment).mean(axis=1)
    if means.size < 2:
        return float("nan"), float("nan")
    mean = diff.mean()
    half = 1.96 * means.std(ddof=1) / math.sqrt(means.size)
    return 100.0 * math.expm1(mean - half), 100.0 * math.expm1(mean + half)


def decode_exact_chunk(setting: Optional[Setting], chunk: int = 64) -> int:
    """Tokens per forward call that reproduce token-by-token decoding for ``setting``."""
    return 1 if setting is not None and setting.kwargs.get("residual_window", 0) else chunk


def evaluate(model: Any, task: CausalTask, settings: Sequence[Setting], chunk: Optional[int] = None,
             progress: Optional[Callable[[str], None]] = None, show_progress: bool = True
             ) -> Dict[str, Any]:
    """Runs the float32 baseline (transformers' DynamicCache) and every setting (a
    :class:`turbokv.hf.TurboQuantCache`); returns {"baseline": {...}, "rows": [...]}.

    Rows hold: ppl, delta_ppl_pct, kl_mean (KL(float32 || setting), nats, mean over positions),
    top1_agreement, greedy_identical (leading tokens equal to the baseline's, per prompt),
    greedy_min, divergence_margins (the float32 model's top-1 minus top-2 logit at each prompt's
    first differing token: small means the baseline itself was near a tie), kv_bytes, bits_per_coordinate (measured from stored bytes), tokens_per_s (decode
    steps of the greedy run, batch = number of prompts)."""
    import torch
    from ._progress import tqdm
    from transformers import DynamicCache

    from ..hf import TurboQuantCache

    ids = task.sequences
    batch, length = ids.shape
    targets = ids[:, 1:]
    num_layers = model.config.num_hidden_layers

    def run_forced(cache: Any, reference: Optional[List[Any]], step: int
                   ) -> Tuple[Dict[str, float], List[Any]]:
        kl = agree = 0.0
        kept: List[Any] = []
        token_nll: List[Any] = []
        count = batch * (length - 1)
        for start, logits in chunked_logits(model, cache, ids, step):
            stop = min(start + logits.shape[1], length - 1)
            if stop <= start:
                continue
            logp = torch.log_softmax(logits[:, : stop - start], dim=-1)
            token_nll.append(-logp.gather(-1, targets[:, start:stop, None])[..., 0].double())
            if reference is None:
                kept.append(logp)
            else:
                ref = reference[:, start:stop]
                kl += (ref.exp() * (ref - logp)).sum().item()
                agree += (ref.argmax(-1) == logp.argmax(-1)).sum().item()
        nll = torch.cat(token_nll, dim=1).numpy()  # (batch, length - 1)
        return {"nll": float(nll.mean()), "token_nll": nll, "kl_mean": kl / count,
                "top1_agreement": agree / count}, kept

    bar = tqdm(total=len(settings) + 1, desc="settings", disable=not show_progress, leave=False)
    base_cache = DynamicCache()
    base, pieces = run_forced(base_cache, None, chunk or decode_exact_chunk(None))
    reference = torch.cat(pieces, dim=1)  # (batch, length - 1, vocab) float32 log-probabilities
    base_ids, base_margins, base_seconds = greedy(model, DynamicCache(), task.prompts, task.generate)
    head_dim = getattr(model.config, "head_dim", None) or model.config.hidden_size // model.config.num_attention_heads
    kv_heads = model.config.num_key_value_heads
    f32_bytes = 2 * 4 * batch * kv_heads * head_dim * length * num_layers
    baseline = {"setting": "float32 (DynamicCache)", "ppl": math.exp(base["nll"]),
                "kv_bytes": f32_bytes, "bits_per_coordinate": 32.0,
                "tokens_per_s": batch * (task.generate - 1) / base_seconds}
    bar.update()
    rows = []
    for setting in settings:
        bar.set_postfix_str(setting.label)
        if progress:
            progress(setting.label)
        cache = TurboQuantCache(layer_settings=setting.layer_settings(num_layers), **setting.kwargs)
        forced, _ = run_forced(cache, reference, chunk or decode_exact_chunk(setting))
        # The row measures what its label says: with int8 scores asked for, every layer whose keys
        # are stored as codes ran them (int8 sums up to 4 bits, int16 ones for 5-8-bit keys,
        # which refinement may raise a layer to).
        scores_ran = [str(layer.cache.last_attention_scores) for layer in cache.layers]
        if setting.kwargs.get("scores") == "int8":
            expected = ["int8" if 0 < layer.cache.stored_key_bits <= 8 else "exact" for layer in cache.layers]
            if scores_ran != expected:
                raise RuntimeError(f"{setting.label}: layers ran {scores_ran}, expected {expected}")
        if setting.kwargs.get("values") == "int8":  # values are never raised: every layer ran them
            values_ran = [str(layer.cache.last_attention_values) for layer in cache.layers]
            if values_ran != ["int8"] * len(cache.layers):
                raise RuntimeError(f"{setting.label}: layers ran {values_ran} values, expected int8")
        kv_bytes, bits = _stored_bits_per_coordinate(cache, length, batch)
        summary = cache.summary()
        raised = [[s["layer"], s["stored_key_bits"]] for s in summary["layers"]
                  if s["stored_key_bits"] != s["key_bits"]]
        gen_ids, _, seconds = greedy(model, TurboQuantCache(layer_settings=setting.layer_settings(num_layers),
                                                         **setting.kwargs), task.prompts, task.generate)
        same = _leading_matches(base_ids, gen_ids)
        # How close to a tie the float32 model itself was where the setting first chose otherwise.
        margins = [float(base_margins[i, n]) for i, n in enumerate(same) if n < task.generate]
        ppl = math.exp(forced["nll"])
        low, high = delta_ppl_interval(forced["token_nll"], base["token_nll"])
        rows.append({"setting": setting.label, "group": setting.group, "ppl": ppl,
                     "delta_ppl_pct": 100.0 * (ppl / baseline["ppl"] - 1.0),
                     "delta_ppl_pct_95": [low, high],
                     "kl_mean": forced["kl_mean"], "top1_agreement": forced["top1_agreement"],
                     "greedy_identical": same, "greedy_min": min(same),
                     "divergence_margins": margins,
                     "kv_bytes": kv_bytes, "bits_per_coordinate": bits,
                     "raised_key_bits": raised, "scores_ran": scores_ran,
                     "protection_excess": [[s["layer"], [t["excess"] for t in s["protection"]["tried"]]]
                                           for s in summary["layers"] if s["protection"]],
                     "tokens_per_s": batch * (task.generate - 1) / seconds})
        bar.update()
    bar.close()
    return {"baseline": baseline, "rows": rows, "baseline_ids": base_ids.tolist(),
            "sequences": batch, "length": length, "generate": task.generate,
            "prompt_tokens": int(task.prompts.shape[1])}

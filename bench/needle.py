"""Long context: passkey retrieval in synthetic filler, and KL at long context, against the model's
own float32 run.

    python bench/needle.py [--model smollm2] [--contexts 1024 2048 4096] [--presets k8v4 4bit]
                           [--out bench/results/needle_smollm2]

For each context length, a 5-digit passkey sits at each --depths fraction (default 50%) of repeated filler
("The grass is green. The sky is blue. ..."); the prompt ends "What is the pass key? The pass key
is". Each prompt (with the answer appended, for its log-probability) is prefilled in one call;
the answer is cropped from the cache and 8 tokens are generated greedily after the prompt:

  * retrieved: the generated text contains the passkey;
  * answer log-prob: the log-probability of the passkey's tokens, teacher-forced after the prompt
    (the same tokens for every setting, so the column compares settings directly);
  * KL: mean KL(float32 || setting) of the next-token distributions over the prompt's last 256
    positions (the long-context part of the prompt).

float32 is transformers' DynamicCache with SDPA; the settings are TurboQuantCache presets with
fused turbokv attention. Writes OUT.json and OUT.md.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
INTRO = ("There is an important piece of information hidden inside a lot of irrelevant text. "
         "Find it and memorize it. I will quiz you about it.\n")
QUESTION = "\nWhat is the pass key? The pass key is"


def make_prompt(tokenizer, context: int, depth: float, passkey: str):
    """Token ids of a passkey prompt of about ``context`` tokens, and the answer's token ids."""
    needle = f" The pass key is {passkey}. Remember it. {passkey} is the pass key. "
    fixed = len(tokenizer(INTRO + needle + QUESTION).input_ids)
    per_filler = len(tokenizer(FILLER * 20).input_ids) / 20
    repeats = max(1, int((context - fixed) / per_filler))
    before = int(repeats * depth)
    text = INTRO + FILLER * before + needle + FILLER * (repeats - before) + QUESTION
    ids = tokenizer(text, return_tensors="pt").input_ids
    answer = tokenizer(" " + passkey, add_special_tokens=False, return_tensors="pt").input_ids
    return ids, answer


def run_one(model, tokenizer, cache, ids, answer, tail=256):
    """One forward over prompt + answer (teacher-forced answer log-prob, and the next-token
    log-probabilities of the prompt's last ``tail`` positions), then the answer is cropped from
    the cache and 8 tokens are generated greedily after the prompt. Returns (generated text,
    answer log-prob, tail log-probabilities)."""
    from turbokv.hf import CACHE_KEYWORD

    length = ids.shape[1]
    with torch.inference_mode():
        logits = model(input_ids=torch.cat([ids, answer], 1), **{CACHE_KEYWORD: cache},
                       use_cache=True).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        answer_logp = float(logp[length - 1:-1].gather(1, answer[0, :, None]).sum())
        logp_tail = logp[length - tail:length]
        cache.crop(-answer.shape[1])  # remove the answer (transformers 5.25 refuses a positive crop)
        token = logits[length - 1].argmax().view(1, 1)
        generated = []
        for step in range(8):
            generated.append(int(token))
            position = torch.tensor([length + step])
            token = model(input_ids=token, **{CACHE_KEYWORD: cache}, use_cache=True,
                          cache_position=position, position_ids=position.view(1, 1)).logits[0, -1].argmax().view(1, 1)
    return tokenizer.decode(generated), answer_logp, logp_tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["smollm2", "qwen25"], default="smollm2")
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--depths", type=float, nargs="+", default=[0.5])
    parser.add_argument("--presets", nargs="+", default=["k8v4", "4bit"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from transformers import DynamicCache

    from turbokv.eval.evaluation import _machine
    from turbokv.hf import TurboQuantCache
    from turbokv.models import qwen25_coder, smollm2

    loader = {"smollm2": smollm2, "qwen25": qwen25_coder}[args.model]
    model, tokenizer = loader.load()
    out = args.out or Path(__file__).parent / "results" / f"needle_{args.model}"
    rows = []
    started = time.time()
    for context in args.contexts:
        for i, depth in enumerate(args.depths):
            passkey = str(10000 + (context * 7919 + i * 104729) % 90000)
            ids, answer = make_prompt(tokenizer, context, depth, passkey)
            settings = [("float32", DynamicCache)] + [
                (p, lambda p=p: TurboQuantCache(config=model.config, preset=p)) for p in args.presets]
            base_tail = None
            for label, make_cache in settings:
                t0 = time.time()
                cache = make_cache()
                text, answer_logp, tail = run_one(model, tokenizer, cache, ids, answer)
                kl = None
                if base_tail is None:
                    base_tail = tail
                else:
                    kl = float((base_tail.exp() * (base_tail - tail)).sum(-1).mean())
                row = {"context": int(ids.shape[1]), "depth": depth, "passkey": passkey,
                       "setting": label, "retrieved": passkey in text, "generated": text,
                       "answer_logprob": answer_logp,
                       "kl_tail": kl, "seconds": round(time.time() - t0, 1)}
                if label != "float32":
                    row["bits_per_coordinate"] = cache.summary()["bits_per_coordinate"]
                    row["raised_key_bits"] = cache.summary()["protected_layers"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"model": loader.NAME, "machine": _machine(), "platform": platform.platform(),
              "rows": rows, "seconds": round(time.time() - started, 1)}
    lines = [f"### Passkey retrieval, {loader.NAME}\n",
             "| context (tokens) | depth | setting | bits/coord | retrieved | answer log-prob | KL last 256 (nats) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        kl = "-" if r["kl_tail"] is None else f"{r['kl_tail']:.2e}"
        bits = f"{r['bits_per_coordinate']:.2f}" if "bits_per_coordinate" in r else "32"
        lines.append(f"| {r['context']} | {r['depth']:.0%} | {r['setting']} | {bits} | "
                     f"{'yes' if r['retrieved'] else 'no'} | {r['answer_logprob']:.3f} | {kl} |")
    summary = {}
    for r in rows:
        s = summary.setdefault(r["setting"], [0, 0])
        s[0] += r["retrieved"]
        s[1] += 1
    lines.append("")
    lines.append("Retrieved: " + ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in summary.items())
                 + f". Machine: {result['machine']}; {result['seconds']:.0f} s.")
    table = "\n".join(lines)
    print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()

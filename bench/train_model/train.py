"""Train turbokv's KJV Llama on a GPU (step 2 of 2; step 1 is prepare.py).

A causal Llama with the shapes that matter for KV-cache compression: head_dim 64, rotary
position embeddings, grouped-query attention (4 query heads share 2 KV heads), 8 layers, hidden
256, byte-level BPE vocabulary of 4,096, context 512; 7.3 M parameters, stored as float16
safetensors (about 15 MB). AdamW with warmup and cosine decay, bfloat16 autocast; the
validation loss (held-out chapters) is measured every ``--eval-every`` steps and the best
checkpoint is kept, since a 1 M-token corpus is seen many times over.

    python3 bench/train_model/train.py --data build/train_model --out OUTDIR   # on a GPU

Writes OUTDIR/model.safetensors, OUTDIR/config.json (LlamaConfig keyword arguments) and
OUTDIR/training.json (hyper-parameters, loss curve, best validation loss, time, device).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

MODEL = dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=8,
             num_attention_heads=4, num_key_value_heads=2, head_dim=64,
             max_position_embeddings=1024, rope_theta=10000.0, rms_norm_eps=1e-5,
             tie_word_embeddings=True, bos_token_id=0, eos_token_id=0)


def batches(ids: torch.Tensor, batch: int, seq: int, generator: torch.Generator):
    while True:
        starts = torch.randint(0, ids.numel() - seq - 1, (batch,), generator=generator)
        rows = torch.stack([ids[s:s + seq + 1] for s in starts.tolist()])
        yield rows[:, :-1], rows[:, 1:]


@torch.no_grad()
def validation_loss(model, ids: torch.Tensor, seq: int, device: str) -> float:
    model.eval()
    usable = (ids.numel() - 1) // seq * seq
    inputs = ids[:usable].view(-1, seq).to(device)
    targets = ids[1:usable + 1].view(-1, seq).to(device)
    total = 0.0
    for i in range(0, inputs.shape[0], 32):
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16):
            logits = model(inputs[i:i + 32]).logits
        total += torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets[i:i + 32].reshape(-1),
            reduction="sum").item()
    model.train()
    return total / targets.numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-tokens", type=int, default=0,
                        help="validate on the first N held-out tokens only (default 0: all of them)")
    args = parser.parse_args()

    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.seed)
    train_ids = torch.from_numpy(np.load(args.data / "train.npy").astype(np.int64))
    val_ids = torch.from_numpy(np.load(args.data / "val.npy").astype(np.int64))
    if args.val_tokens > 0:
        val_ids = val_ids[:args.val_tokens + 1]
    model = LlamaForCausalLM(LlamaConfig(**MODEL)).to(device)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.lr, betas=(0.9, 0.95), fused=device == "cuda")

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        progress = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    stream = batches(train_ids, args.batch, args.seq, torch.Generator().manual_seed(args.seed))
    curve, best, best_state, started = [], float("inf"), None, time.time()
    for step in range(args.steps + 1):
        if step % args.eval_every == 0 or step == args.steps:
            val = validation_loss(model, val_ids, args.seq, device)
            curve.append({"step": step, "val_loss": round(val, 4), "seconds": round(time.time() - started, 1)})
            print(json.dumps(curve[-1]), flush=True)
            if val < best:
                best, best_state = val, {k: v.detach().to("cpu", torch.float16).clone()
                                         for k, v in model.state_dict().items()}
                best_step = step
        if step == args.steps:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        inputs, targets = (t.to(device, non_blocking=True) for t in next(stream))
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            logits = model(inputs).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                 targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % args.eval_every == 0:
            curve[-1]["train_loss"] = round(loss.item(), 4)

    args.out.mkdir(parents=True, exist_ok=True)
    best_state.pop("lm_head.weight", None)  # tied to model.embed_tokens.weight
    save_file(best_state, str(args.out / "model.safetensors"))
    (args.out / "config.json").write_text(json.dumps(MODEL, indent=1) + "\n")
    corpus = json.loads((args.data / "corpus.json").read_text())
    record = {"corpus": corpus, "hyperparameters": vars(args) | {"data": str(args.data), "out": str(args.out)},
              "parameters": params, "best_step": best_step, "best_val_loss": round(best, 4),
              "best_val_perplexity": round(math.exp(best), 3), "curve": curve,
              "tokens_seen": args.steps * args.batch * args.seq,
              "seconds": round(time.time() - started, 1), "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "torch": torch.__version__}
    (args.out / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "curve"}))


if __name__ == "__main__":
    main()

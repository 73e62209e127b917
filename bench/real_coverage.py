#!/usr/bin/env python3
"""Coverage of the transplanted rows over the training tokens, for bench/real_run.sh.

Segments every training text as `embed-transplant finetune` does for a character-level vocabulary
(whitespace skipped, each character its own token when the vocabulary has it, else [UNK];
truncated at MAX_LEN tokens) and counts how many tokens fall on rows that the transplant copied
(exact / normalized), initialised (composed / random / mean), or are [UNK]; CJK characters
(U+3400-U+9FFF, U+F900-U+FAFF) are counted separately.

Usage: real_coverage.py VOCAB TRAIN_TSV REPORT_JSON [MAX_LEN]
Prints a JSON object on stdout.
"""
import collections
import json
import sys


def is_cjk(tok):
    if len(tok) != 1:
        return False
    o = ord(tok)
    return 0x3400 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF


def main():
    vocab_path, train_path, report_path = sys.argv[1:4]
    max_len = int(sys.argv[4]) if len(sys.argv) > 4 else 128
    with open(vocab_path, encoding="utf-8") as f:
        vocab = f.read().splitlines()
    ids = {t: i for i, t in enumerate(vocab)}
    unk = ids["[UNK]"]
    report = json.load(open(report_path, encoding="utf-8"))
    # The report lists every row that was not an exact copy, by 1-based line.
    method = ["exact"] * len(vocab)
    for r in report["rows"]:
        method[r["line"] - 1] = r["method"]
    copied = {"exact", "normalized"}

    tokens = collections.Counter()
    with open(train_path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n == 0:
                continue
            text = line.rstrip("\n").split("\t", 1)[1]
            k = 0
            for ch in text:
                if k >= max_len:
                    break
                if ch.isspace():
                    continue
                tokens[ids.get(ch, unk)] += 1
                k += 1
    total = sum(tokens.values())
    by = collections.Counter()
    cjk_total = cjk_copied = 0
    for i, n in tokens.items():
        kind = "[UNK]" if i == unk else method[i]
        by[kind] += n
        if is_cjk(vocab[i]):
            cjk_total += n
            cjk_copied += n if method[i] in copied else 0
    cjk_types = [t for t in vocab if is_cjk(t)]
    cjk_types_copied = [t for t in cjk_types if method[ids[t]] in copied]
    top = sorted(tokens.items(), key=lambda kv: -kv[1])[:40]
    out = {
        "train_tokens": total,
        "token_share": {k: round(v / total, 4) for k, v in sorted(by.items())},
        "token_share_copied": round(sum(v for k, v in by.items() if k in copied) / total, 4),
        "cjk_token_share_of_all": round(cjk_total / total, 4),
        "cjk_tokens_on_copied_rows": round(cjk_copied / max(cjk_total, 1), 4),
        "cjk_types_in_vocab": len(cjk_types),
        "cjk_types_copied": len(cjk_types_copied),
        "copied_cjk_chars_by_frequency": "".join(
            sorted(cjk_types_copied, key=lambda t: -tokens[ids[t]])
        ),
        "top40_tokens": " ".join(
            f"{vocab[i]}:{'C' if method[i] in copied else 'I'}" for i, _ in top
        ),
        "top40_token_share": round(sum(n for _, n in top) / total, 4),
        "top40_copied": sum(1 for i, _ in top if method[i] in copied),
    }
    print(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()

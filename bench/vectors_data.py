"""Generates the static-vector benchmark's inputs (bench/vectors.sh): a word2vec text file of
ROWS x DIM vectors with a `count dim` header (words: every common Han character alone, Chinese
words of 2-4 characters, lower-case Latin words; values with 6 decimals, as Tencent AI Lab's file
writes them) and a target vocabulary of TARGET words: three fifths taken from the file (a tenth of
those upper-cased, so they match only after normalisation) and two fifths Chinese words the file
lacks (composed from their characters). Seeded; written to temp names, then renamed.

usage: vectors_data.py OUT_DIR [ROWS] [DIM] [TARGET]
"""

import os
import sys

import numpy as np

out = sys.argv[1]
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 2_000_000
dim = int(sys.argv[3]) if len(sys.argv) > 3 else 200
n_target = int(sys.argv[4]) if len(sys.argv) > 4 else 50_000
vec_path = os.path.join(out, f"vectors-{rows}x{dim}.txt")
vocab_path = os.path.join(out, f"target-{n_target}.txt")
os.makedirs(out, exist_ok=True)
if os.path.exists(vec_path) and os.path.exists(vocab_path):
    sys.exit(0)
rng = np.random.default_rng(0)

# Words: the 3,500 most common Han code points' range stands in for common characters.
chars = [chr(c) for c in range(0x4E00, 0x4E00 + 3500)]
words: list[str] = list(chars)
seen = set(words)
letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
while len(words) < rows:
    n = min(rows - len(words), 500_000)
    kind = rng.random(n)
    lens = rng.integers(2, 5, n)
    han = rng.integers(0, len(chars), (n, 4))
    lat = rng.integers(0, 26, (n, 10))
    llen = rng.integers(3, 11, n)
    for k in range(n):
        if kind[k] < 0.7:
            w = "".join(chars[i] for i in han[k, : lens[k]])
        else:
            w = "".join(letters[lat[k, : llen[k]]])
        if w not in seen:
            seen.add(w)
            words.append(w)

# Values: lines are joined from a pool of pre-formatted groups of 10 values (N(0, 0.2), 6
# decimals), so that writing 2M lines takes seconds; the reader sees ordinary numbers.
group = 10
assert dim % group == 0
pool_vals = rng.normal(0, 0.2, (8192, group))
pool = [" ".join(f"{x:.6f}" for x in g) for g in pool_vals]
tmp = vec_path + ".tmp"
with open(tmp, "w", encoding="utf-8") as f:
    f.write(f"{rows} {dim}\n")
    block = 100_000
    for start in range(0, rows, block):
        idx = rng.integers(0, len(pool), (min(block, rows - start), dim // group))
        lines = [
            words[start + k] + " " + " ".join(pool[i] for i in idx[k])
            for k in range(len(idx))
        ]
        f.write("\n".join(lines))
        f.write("\n")
os.rename(tmp, vec_path)

# Target: 60% from the file (a tenth of the Latin ones upper-cased), 40% Chinese words it lacks.
n_in = n_target * 3 // 5
picked = rng.choice(len(words), n_in, replace=False)
target = []
for k, i in enumerate(picked):
    w = words[i]
    if w.isascii() and k % 10 == 0:
        w = w.upper()
    target.append(w)
have = set(target)
while len(target) < n_target:
    w = "".join(chars[i] for i in rng.integers(0, len(chars), rng.integers(2, 5)))
    if w not in seen and w not in have:
        have.add(w)
        target.append(w)
order = rng.permutation(len(target))
with open(vocab_path + ".tmp", "w", encoding="utf-8") as f:
    f.write("\n".join(target[i] for i in order) + "\n")
os.rename(vocab_path + ".tmp", vocab_path)

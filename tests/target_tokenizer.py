"""Byte-level target tokenizers for tests/cli/target_tokenizer.rs, and the independent check of the
rows built for them. Uses only Python's `tokenizers`, `safetensors` and `numpy`.

    target_tokenizer.py build SOURCE_TOKENIZER_JSON OUT_JSON
        A Qwen-style byte-level BPE tokenizer: SOURCE's, extended by merges with English words (with
        and without a leading space) and Chinese words, each merge chain's intermediate tokens
        included (so some new tokens hold part of a character); the added tokens move after the new
        model tokens (the tokenizers library renumbers added tokens that collide with model ids).

    target_tokenizer.py check SOURCE_DIR TENSOR TARGET_JSON OUT_SAFETENSORS REPORT_JSON
        Every output row equals the mean of the right source pieces, computed here from the bytes a
        target token stands for (GPT-2's byte code inverted; SentencePiece's `▁` a space and
        `<0xE7>` a byte): for a byte-level source, the source token spelled so, else its BPE model's
        pieces of that spelling (`tokenizer.model.tokenize`, which is the token as stored for a
        byte-level target); for any other source, the bytes decoded, partial characters dropped,
        tokenised by the source tokenizer. Prints a JSON
        summary of what it checked. Exits non-zero on the first difference.
"""
import json
import re
import unicodedata
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

ENGLISH = """during between through however without another because against example research
government important including following development information although community probably
everything something children different problems students business countries question
national political interest economic questions president remember together understand
university experience according particular""".split()
CHINESE = "甚么 我们 中国 人工智能 北京大学 电脑 学习 语言 模型 大学 世界 经济 发展 社会 历史 文化 音乐 电影 朋友 医生".split()


def bytes_to_unicode():
    """GPT-2's byte code, written out here rather than taken from the tool or the library."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_CHAR = bytes_to_unicode()
CHAR_BYTE = {c: b for b, c in BYTE_CHAR.items()}


def spell(text):
    return "".join(BYTE_CHAR[b] for b in text.encode("utf-8"))


def build(src, out):
    tj = json.loads(Path(src).read_text(encoding="utf-8"))
    tok = Tokenizer.from_file(src)
    vocab = tj["model"]["vocab"]
    merges = tj["model"]["merges"]
    added = tj["added_tokens"]
    added_names = {a["content"] for a in added}
    n_model = len(vocab)
    new = []
    words = [spell(" " + w) for w in ENGLISH] + [spell(w) for w in ENGLISH[:10]]
    words += [spell(w) for w in CHINESE] + [spell(" " + w) for w in CHINESE[:5]]
    for w in words:
        pieces = [t.value for t in tok.model.tokenize(w)]
        cur = pieces[0]
        for p in pieces[1:]:
            nxt = cur + p
            if nxt not in vocab:
                vocab[nxt] = n_model + len(new)
                new.append(nxt)
                merges.append([cur, p])
            cur = nxt
    # A lone partial character, and a word with a partial character after it.
    for t in [spell("甚")[:2], spell(" 中")[:3], spell("ok") + spell("中")[:2]]:
        if t not in vocab:
            vocab[t] = n_model + len(new)
            new.append(t)
    assert not added_names & set(new)
    first = n_model + len(new)
    for i, a in enumerate(sorted(added, key=lambda a: a["id"])):
        a["id"] = first + i
    Path(out).write_text(json.dumps(tj, ensure_ascii=False, indent=2), encoding="utf-8")
    # The result loads and keeps every id.
    back = Tokenizer.from_file(out)
    assert back.get_vocab_size(with_added_tokens=True) == first + len(added)
    for a in added:
        assert back.token_to_id(a["content"]) == a["id"], a
    print(json.dumps({"new_tokens": len(new), "rows": first + len(added)}))


def sp_bytes(t):
    """A SentencePiece piece's bytes: `<0xE7>` is one byte, `▁` a space."""
    m = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", t)
    if m:
        return bytes([int(m.group(1), 16)])
    return t.replace("\u2581", " ").encode("utf-8")


def source_rows(src_dir, tensor):
    src_dir = Path(src_dir)
    index = src_dir / "model.safetensors.index.json"
    if index.exists():
        f = json.loads(index.read_text())["weight_map"][tensor]
        return load_file(src_dir / f)[tensor]
    return load_file(src_dir / "model.safetensors")[tensor]


def check(src_dir, tensor, target_json, out_st, report_json):
    src_dir = Path(src_dir)
    src_tok = Tokenizer.from_file(str(src_dir / "tokenizer.json"))
    src_tj = json.loads((src_dir / "tokenizer.json").read_text(encoding="utf-8"))
    byte_level = "ByteLevel" in json.dumps(src_tj.get("pre_tokenizer")) + json.dumps(src_tj.get("decoder"))
    special = {a["id"] for a in src_tj["added_tokens"] if a["special"]}
    src = source_rows(src_dir, tensor).astype(np.float64)
    src_vocab = src_tok.get_vocab(with_added_tokens=True)
    tt = json.loads(Path(target_json).read_text(encoding="utf-8"))
    coded = json.dumps(tt.get("pre_tokenizer")) + json.dumps(tt.get("decoder"))
    target_sp = "ByteLevel" not in coded and ("Metaspace" in coded or "ByteFallback" in coded)
    vocab = tt["model"]["vocab"]
    target = {t: i for t, i in vocab.items()} if isinstance(vocab, dict) else {p[0]: i for i, p in enumerate(vocab)}
    plain = {a["content"]: a["id"] for a in tt["added_tokens"]}
    by_id = {i: t for t, i in {**target, **plain}.items()}
    out = load_file(out_st)["weight"].astype(np.float64)
    assert out.shape[0] == len(by_id), (out.shape, len(by_id))
    notes = {n["line"] - 1: n for n in json.loads(Path(report_json).read_text(encoding="utf-8"))["rows"]}
    kinds = {"copied": 0, "composed": 0, "partial": 0, "fill": 0, "texts": 0}
    for i in range(len(by_id)):
        t = by_id[i]
        note = notes.get(i)
        method = note["method"] if note else "exact"
        if t in plain:
            text = t
        else:
            raw = sp_bytes(t) if target_sp else bytes(CHAR_BYTE[c] for c in t)
            text = raw.decode("utf-8", errors="replace").replace("\ufffd", "")
            kinds["partial"] += "\ufffd" in raw.decode("utf-8", errors="replace")
            if note is not None:
                # The report shows the text, a partial character's bytes as `\xE7`.
                shown = re.sub(r"\\x([0-9a-f]{2})", lambda m: "\\x" + m.group(1).upper(),
                               raw.decode("utf-8", errors="backslashreplace"))
                assert note.get("text") == shown, (t, note, shown)
                kinds["texts"] += 1
        if t in plain and t in src_vocab:
            ids = [src_vocab[t]]  # an added token the source has (`<|endoftext|>`)
        elif byte_level and t not in plain:
            # The bytes in the source's byte code (a byte-level target token is that already).
            s = "".join(BYTE_CHAR[b] for b in raw)
            if s in src_vocab:
                ids = [src_vocab[s]]
            else:
                ids = [x.id for x in src_tok.model.tokenize(s)]
        elif method in ("exact", "decoded", "continuation", "normalized"):
            # A copy: the source token it names must be the text (its word-start or `##` mark,
            # case and accents aside).
            piece = note["pieces"][0] if note else text
            def bare(x):
                x = unicodedata.normalize("NFKD", x.removeprefix("##").replace("\u2581", " ").strip().lower())
                return "".join(c for c in x if not unicodedata.category(c).startswith("M"))
            assert bare(piece) == bare(text), (t, text, piece)
            ids = [src_vocab[piece]]
        else:
            ids = src_tok.encode(text, add_special_tokens=False).ids if text.strip() else []
        if len(ids) > 1 or method != "exact":
            ids = [x for x in ids if x not in special and x < src.shape[0]]
        if not ids:
            assert method not in ("exact", "decoded", "composed"), (i, t, method)
            kinds["fill"] += 1
            continue
        want = src[ids].mean(axis=0)
        got = out[i]
        assert np.allclose(got, want, atol=1e-6, rtol=0), (i, t, text, method, note, ids)
        kinds["copied" if len(ids) == 1 else "composed"] += 1
    print(json.dumps(kinds))


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(*sys.argv[2:4])
    else:
        check(*sys.argv[2:7])

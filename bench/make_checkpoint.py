#!/usr/bin/env python3
"""Generate the benchmark inputs for bench/run.sh (idempotent; existing outputs are reused).

Under WORK_DIR it writes:

  st/model.safetensors     ~407 MB, a bert-base-chinese-shaped state dict (random f32, seeded)
  st/config.json, st/vocab.txt
  bin/pytorch_model.bin    the same state dict via torch.save (zip format)
  bin/config.json, bin/vocab.txt
  vocab50k.txt             50,000-line target vocabulary
  offsets.json             byte offset/length of the word-embedding data in each weights file
                           (used by the read+write baseline)

The safetensors file is written tensor by tensor (only one tensor in memory at a time); the
.bin is written from a read-only memory map of that file, so both hold identical numbers.
Every file is written under a temporary name and renamed into place, so an interrupted run
never leaves a half-written file that a later run would reuse.

Usage: make_checkpoint.py WORK_DIR
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

SEED = 20240611
VOCAB_SIZE = 21128
HIDDEN = 768
INTERMEDIATE = 3072
LAYERS = 12
MAX_POS = 512
STD = 0.02
TARGET_LINES = 50_000
EMB_NAME = "bert.embeddings.word_embeddings.weight"

BERT_VOCAB = Path("/work/shared/data/bert-base-chinese-vocab.txt")

CONFIG = {
    "architectures": ["BertForMaskedLM"],
    "model_type": "bert",
    "hidden_size": HIDDEN,
    "intermediate_size": INTERMEDIATE,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": 12,
    "max_position_embeddings": MAX_POS,
    "type_vocab_size": 2,
    "vocab_size": VOCAB_SIZE,
    "initializer_range": STD,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "torch_dtype": "float32",
}


def tensor_specs() -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes in bert-base order (embeddings first, then the encoder layers)."""
    specs: list[tuple[str, tuple[int, ...]]] = [
        (EMB_NAME, (VOCAB_SIZE, HIDDEN)),
        ("bert.embeddings.position_embeddings.weight", (MAX_POS, HIDDEN)),
        ("bert.embeddings.token_type_embeddings.weight", (2, HIDDEN)),
        ("bert.embeddings.LayerNorm.weight", (HIDDEN,)),
        ("bert.embeddings.LayerNorm.bias", (HIDDEN,)),
    ]
    for i in range(LAYERS):
        p = f"bert.encoder.layer.{i}."
        for proj in ("query", "key", "value"):
            specs.append((p + f"attention.self.{proj}.weight", (HIDDEN, HIDDEN)))
            specs.append((p + f"attention.self.{proj}.bias", (HIDDEN,)))
        specs += [
            (p + "attention.output.dense.weight", (HIDDEN, HIDDEN)),
            (p + "attention.output.dense.bias", (HIDDEN,)),
            (p + "attention.output.LayerNorm.weight", (HIDDEN,)),
            (p + "attention.output.LayerNorm.bias", (HIDDEN,)),
            (p + "intermediate.dense.weight", (INTERMEDIATE, HIDDEN)),
            (p + "intermediate.dense.bias", (INTERMEDIATE,)),
            (p + "output.dense.weight", (HIDDEN, INTERMEDIATE)),
            (p + "output.dense.bias", (HIDDEN,)),
            (p + "output.LayerNorm.weight", (HIDDEN,)),
            (p + "output.LayerNorm.bias", (HIDDEN,)),
        ]
    return specs


def tmp_of(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def write_text_atomic(path: Path, text: str) -> None:
    tmp = tmp_of(path)
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)


def log(msg: str) -> None:
    print(f"[make_checkpoint] {msg}", file=sys.stderr, flush=True)


def write_safetensors(path: Path) -> None:
    """Stream a safetensors file: header first, then each tensor generated and written in turn."""
    specs = tensor_specs()
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in specs:
        nbytes = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)  # pad so the data starts 8-byte aligned

    rng = np.random.default_rng(SEED)
    tmp = tmp_of(path)
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for name, shape in specs:
            if name.endswith("LayerNorm.weight"):
                arr = np.ones(shape, dtype="<f4")
            elif name.endswith(".bias") or name.endswith("LayerNorm.bias"):
                arr = np.zeros(shape, dtype="<f4")
            else:
                arr = rng.standard_normal(shape, dtype=np.float32)
                arr *= np.float32(STD)
                arr = arr.astype("<f4", copy=False)
            f.write(arr.tobytes(order="C"))
            del arr
    os.replace(tmp, path)


def safetensors_offsets(path: Path) -> dict:
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
    begin, end = header[EMB_NAME]["data_offsets"]
    return {"offset": 8 + hlen + begin, "length": end - begin}


def write_torch_bin(st_path: Path, path: Path) -> None:
    """torch.save (zip format) of the same state dict, read through a memory map (no copies)."""
    import warnings

    import torch

    with open(st_path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
    mm = np.memmap(st_path, dtype=np.uint8, mode="r")
    base = 8 + hlen
    state: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.from_numpy warns that the memmap is read-only
        for name, spec in header.items():
            if name == "__metadata__":
                continue
            b, e = spec["data_offsets"]
            arr = mm[base + b : base + e].view("<f4").reshape(spec["shape"])
            state[name] = torch.from_numpy(arr)
    tmp = tmp_of(path)
    torch.save(state, tmp)  # zip format is the default since torch 1.6
    del state, mm
    os.replace(tmp, path)


def torch_bin_offsets(path: Path) -> dict:
    """Locate the word-embedding storage record (stored uncompressed) inside the zip."""
    import pickletools

    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl_name = next(n for n in names if n.endswith("/data.pkl"))
        prefix = pkl_name[: -len("data.pkl")]
        # Find the storage key that follows the embedding's name in the pickle: the pickle
        # stores (name, rebuild(storage('data/KEY'...))) pairs in insertion order, and the
        # first storage key opened after EMB_NAME is its own.
        key = None
        seen_name = False
        for op, arg, _pos in pickletools.genops(z.read(pkl_name)):
            if op.name in ("BINUNICODE", "SHORT_BINUNICODE", "UNICODE") and arg == EMB_NAME:
                seen_name = True
            elif seen_name and op.name in ("BINUNICODE", "SHORT_BINUNICODE", "UNICODE") and arg.isdigit():
                key = arg
                break
        if key is None:
            raise SystemExit("could not find the embedding's storage record in the .bin")
        info = z.getinfo(prefix + "data/" + key)
        if info.compress_type != zipfile.ZIP_STORED:
            raise SystemExit("embedding record is compressed; cannot compute a byte offset")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        name_len, extra_len = struct.unpack("<HH", local[26:30])
    return {"offset": info.header_offset + 30 + name_len + extra_len, "length": info.file_size}


def is_cjk_char(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF  # CJK Unified Ideographs
        or 0x3400 <= cp <= 0x4DBF  # Extension A
        or 0x20000 <= cp <= 0x2FA1F  # Extensions B-F, compatibility supplement
        or 0xF900 <= cp <= 0xFAFF  # Compatibility Ideographs
    )


def write_target_vocab(path: Path) -> None:
    import jieba  # only to locate dict.txt

    bert_lines = BERT_VOCAB.read_text(encoding="utf-8").split("\n")  # '\n' only: U+2028 tokens
    out: list[str] = []
    seen: set[str] = set()
    for tok in bert_lines:
        if len(tok) == 1 and is_cjk_char(tok) and tok not in seen:
            seen.add(tok)
            out.append(tok)
    n_chars = len(out)

    dict_path = Path(jieba.__file__).with_name("dict.txt")
    words: list[tuple[int, int, str]] = []
    with open(dict_path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            parts = line.rstrip("\n").split(" ")
            if len(parts) < 2 or not parts[0]:
                continue
            words.append((-int(parts[1]), i, parts[0]))  # frequency desc, then file order
    words.sort()
    for _neg, _i, w in words:
        if len(out) >= TARGET_LINES:
            break
        if w not in seen and "\u2028" not in w and "\u2029" not in w and "\r" not in w:
            seen.add(w)
            out.append(w)
    if len(out) != TARGET_LINES:
        raise SystemExit(f"only {len(out)} target tokens available, wanted {TARGET_LINES}")
    write_text_atomic(path, "\n".join(out) + "\n")
    log(f"target vocab: {n_chars} single CJK chars from the bert vocab + {len(out) - n_chars} jieba words")


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    work = Path(sys.argv[1])
    st_dir, bin_dir = work / "st", work / "bin"
    st_dir.mkdir(parents=True, exist_ok=True)
    bin_dir.mkdir(parents=True, exist_ok=True)

    for d in (st_dir, bin_dir):
        if not (d / "config.json").exists():
            write_text_atomic(d / "config.json", json.dumps(CONFIG, indent=2) + "\n")
        if not (d / "vocab.txt").exists():
            shutil.copyfile(BERT_VOCAB, tmp_of(d / "vocab.txt"))  # byte for byte
            os.replace(tmp_of(d / "vocab.txt"), d / "vocab.txt")

    st_path = st_dir / "model.safetensors"
    if not st_path.exists():
        log(f"writing {st_path}")
        write_safetensors(st_path)
    bin_path = bin_dir / "pytorch_model.bin"
    if not bin_path.exists():
        log(f"writing {bin_path}")
        write_torch_bin(st_path, bin_path)

    vocab_path = work / "vocab50k.txt"
    if not vocab_path.exists():
        log(f"writing {vocab_path}")
        write_target_vocab(vocab_path)

    offsets_path = work / "offsets.json"
    if not offsets_path.exists():
        offsets = {"safetensors": safetensors_offsets(st_path), "bin": torch_bin_offsets(bin_path)}
        # Sanity check: both locations hold the same bytes.
        with open(st_path, "rb") as a, open(bin_path, "rb") as b:
            a.seek(offsets["safetensors"]["offset"])
            b.seek(offsets["bin"]["offset"])
            n = 1 << 20
            if a.read(n) != b.read(n) or offsets["safetensors"]["length"] != offsets["bin"]["length"]:
                raise SystemExit("embedding bytes differ between the .safetensors and the .bin")
        write_text_atomic(offsets_path, json.dumps(offsets, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/ (git-ignored).

Run from anywhere with the project's venv (torch, safetensors, numpy):
    /root/.cache/embed-transplant/venv/bin/python fuzz/make_seeds.py
Seeds: small valid files of each kind, and pieces of the real fixtures.
"""

import collections
import json
import pathlib
import struct

import numpy as np
import torch
from safetensors.numpy import save as st_save
from safetensors.numpy import load_file as st_load_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "fixtures"
CORPUS = ROOT / "fuzz" / "corpus"


def out(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def vocab_seeds():
    out("vocab", "target-vocab.txt", (FIX / "target-vocab.txt").read_bytes())
    out("vocab", "bert-chinese-head.txt", (FIX / "tiny-bert-chinese" / "vocab.txt").read_bytes()[:4096])
    out("vocab", "bom-crlf.txt", b"\xef\xbb\xbfa\r\nb b\r\n\xe4\xb8\xad\r\n")
    out("vocab", "u2028.txt", "x\u2028y\nz\n##ing\n[UNK]\n".encode())
    out("vocab", "dups.txt", b"a\nb\na\na\nb\nc\n")


def raw_safetensors(header, data=b""):
    js = json.dumps(header, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 8)
    return struct.pack("<Q", len(js)) + js + data


def safetensors_seeds():
    t = "safetensors_header"
    full = (FIX / "tiny-bert-chinese" / "model.safetensors").read_bytes()
    out(t, "bert-chinese-first-64k.safetensors", full[:65536])
    # The fixture's small tensors plus the first rows of its embedding: a valid file of a few KB.
    tensors = st_load_file(str(FIX / "tiny-bert-chinese" / "model.safetensors"))
    small = {k: v for k, v in tensors.items() if v.size <= 256}
    small["bert.embeddings.word_embeddings.weight"] = tensors["bert.embeddings.word_embeddings.weight"][:6]
    out(t, "bert-chinese-small.safetensors", st_save(small, metadata={"format": "pt"}))
    shard = (FIX / "tiny-llama-sharded" / "model-00001-of-00002.safetensors").read_bytes()
    out(t, "llama-shard.safetensors", shard)
    for dt, np_dt in [("F32", np.float32), ("F16", np.float16), ("F64", np.float64)]:
        out(t, f"2x3-{dt}.safetensors", st_save({"w": np.arange(6, dtype=np_dt).reshape(2, 3)}))
    out(t, "2x3-BF16.safetensors", raw_safetensors(
        {"w": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]}}, bytes(range(12))))
    out(t, "empty-rows.safetensors", raw_safetensors(
        {"w": {"dtype": "F32", "shape": [0, 4], "data_offsets": [0, 0]}}))
    out(t, "i64-and-3d.safetensors", st_save({
        "ids": np.arange(4, dtype=np.int64).reshape(2, 2),
        "cube": np.zeros((2, 2, 2), dtype=np.float32),
        "embed_tokens.weight": np.ones((3, 2), dtype=np.float32),
    }))


def pickle_seeds():
    t = "pickle"
    out(t, "bert-chinese-legacy-first-20k.bin",
        (FIX / "tiny-bert-chinese-legacy" / "pytorch_model.bin").read_bytes()[:20480])
    tmp = CORPUS / ".tmp.bin"

    def save(name, obj, legacy=False):
        torch.save(obj, tmp, _use_new_zipfile_serialization=not legacy)
        out(t, name, tmp.read_bytes())
        tmp.unlink()

    save("small.bin", {"w": torch.zeros(3, 2)})
    save("small-legacy.bin", {"w": torch.zeros(3, 2)}, legacy=True)
    mixed = collections.OrderedDict()
    mixed["emb.weight"] = torch.arange(12, dtype=torch.float16).reshape(4, 3)
    mixed["b"] = torch.zeros(2, dtype=torch.bfloat16)
    mixed["i"] = torch.zeros(2, dtype=torch.int64)
    mixed["t"] = torch.arange(6.0).reshape(2, 3).t()  # not contiguous
    mixed["v"] = torch.arange(10.0)[2:8].reshape(2, 3)  # offset into its storage
    mixed["tied"] = mixed["v"]  # shared storage
    save("mixed.bin", mixed)
    save("mixed-legacy.bin", mixed, legacy=True)
    save("wrapped-f64.bin", {"state_dict": {"w": torch.ones(2, 2, dtype=torch.float64)}})
    save("parameter.bin", {"w": torch.nn.Parameter(torch.ones(2, 2))})
    save("parameter-legacy.bin", {"w": torch.nn.Parameter(torch.ones(2, 2))}, legacy=True)
    # Storages of 1-, 2- and 8-byte elements, in the legacy layout whose storage table we parse.
    ints = {
        "u8": torch.zeros(3, 2, dtype=torch.uint8),
        "b": torch.zeros(2, dtype=torch.bool),
        "i64": torch.arange(4).reshape(2, 2),
        "i16": torch.zeros(2, 2, dtype=torch.int16),
    }
    save("ints-legacy.bin", ints, legacy=True)
    save("ints.bin", ints)
    save("u8-legacy.bin", {"w": torch.zeros(3, 2, dtype=torch.uint8)}, legacy=True)


if __name__ == "__main__":
    vocab_seeds()
    safetensors_seeds()
    pickle_seeds()
    for d in sorted(CORPUS.iterdir()):
        print(d.name, len(list(d.iterdir())), "seeds")

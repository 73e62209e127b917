"""Loads embed-transplant outputs in PyTorch the two documented ways and checks shape, dtype and
copied rows against the source checkpoint. Called by tests/cli/formats.rs: check_torch.py OUTDIR MODELDIR VOCAB."""
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

out_dir, model_dir, vocab_path = map(Path, sys.argv[1:4])
src = load_file(model_dir / "model.safetensors")["bert.embeddings.word_embeddings.weight"]
# split on "\n" only: the bert-base-chinese vocabulary holds U+2028 tokens.
src_ids = {t: i for i, t in enumerate(model_dir.joinpath("vocab.txt").read_text("utf-8").split("\n"))}
target = vocab_path.read_text("utf-8").rstrip("\n").split("\n")

for name, dtype in [("f32", torch.float32), ("bf16", torch.bfloat16), ("f16", torch.float16)]:
    path = out_dir / f"{name}.safetensors"
    weight = load_file(path)["weight"]
    emb = torch.nn.Embedding.from_pretrained(weight)
    assert emb.weight.shape == (len(target), src.shape[1]), emb.weight.shape
    assert emb.weight.dtype == dtype, emb.weight.dtype
    module = torch.nn.Embedding(len(target), src.shape[1], dtype=dtype)
    module.load_state_dict(load_file(path))
    assert torch.equal(module.weight.data, weight)
    copied = 0
    for i, tok in enumerate(target):
        if tok in src_ids:
            assert torch.equal(weight[i], src[src_ids[tok]].to(dtype)), (name, i, tok)
            copied += 1
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "pt" and int(meta["copied"]) == copied, meta
    assert copied > 500, copied
    print(f"{name}: {tuple(weight.shape)} {weight.dtype}, {copied} rows copied exactly")

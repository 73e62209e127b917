#!/usr/bin/env python3
"""Generate a Qwen2-0.5B-shaped checkpoint for bench/model.sh (idempotent):

  WORK_DIR/qwen2/model-0000k-of-00003.safetensors + model.safetensors.index.json
      bf16, vocab 151,936 x hidden 896, 24 layers, intermediate 4864, 14 heads / 2 KV heads,
      an untied lm_head (so both the embedding and the head are rebuilt): ~1.26 GB in 3 shards
  WORK_DIR/qwen2/config.json, tokenizer.json
      a byte-level BPE tokenizer.json with 151,643 model tokens (the 256 byte symbols, then
      synthetic ones) + 3 special tokens = 151,646, as Qwen2's; no merges (the benchmark measures
      the copy, not tokenization quality)
  WORK_DIR/words20k.txt  20,000 Chinese words (jieba's dictionary, most frequent first)

Tensors are written one at a time (random bf16 bits from a seeded generator).
Usage: make_qwen2.py WORK_DIR
"""
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np

V, H, L, I, HEADS, KV = 151_936, 896, 24, 4864, 14, 2
HEAD_DIM = H // HEADS
N_TOKENS = 151_643


def specs():
    out = [("model.embed_tokens.weight", (V, H)), ("lm_head.weight", (V, H)), ("model.norm.weight", (H,))]
    for i in range(L):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (H, H)), (p + "self_attn.q_proj.bias", (H,)),
            (p + "self_attn.k_proj.weight", (KV * HEAD_DIM, H)), (p + "self_attn.k_proj.bias", (KV * HEAD_DIM,)),
            (p + "self_attn.v_proj.weight", (KV * HEAD_DIM, H)), (p + "self_attn.v_proj.bias", (KV * HEAD_DIM,)),
            (p + "self_attn.o_proj.weight", (H, H)),
            (p + "mlp.gate_proj.weight", (I, H)), (p + "mlp.up_proj.weight", (I, H)),
            (p + "mlp.down_proj.weight", (H, I)),
            (p + "input_layernorm.weight", (H,)), (p + "post_attention_layernorm.weight", (H,)),
        ]
    return out


def bf16(rng, shape):
    x = (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)).view(np.uint32)
    return (x >> 16).astype("<u2")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def main():
    work = Path(sys.argv[1])
    d = work / "qwen2"
    d.mkdir(parents=True, exist_ok=True)
    sp = specs()
    groups = [sp[:1], sp[1:3], sp[3:]]  # embedding | head + norm | the layers
    rng = np.random.default_rng(7)
    weight_map = {}
    total = 0
    for k, g in enumerate(groups):
        name = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        for t, s in g:
            weight_map[t] = name
            total += int(np.prod(s)) * 2
        path = d / name
        if path.exists():
            continue
        header = {"__metadata__": {"format": "pt"}}
        off = 0
        for t, s in g:
            n = int(np.prod(s)) * 2
            header[t] = {"dtype": "BF16", "shape": list(s), "data_offsets": [off, off + n]}
            off += n
        hj = json.dumps(header, separators=(",", ":")).encode()
        hj += b" " * (-len(hj) % 8)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(hj)))
            f.write(hj)
            for t, s in g:
                f.write(bf16(rng, s).tobytes())
        os.replace(tmp, path)
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    (d / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": V, "hidden_size": H,
        "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": HEADS,
        "num_key_value_heads": KV, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "bos_token_id": N_TOKENS, "eos_token_id": N_TOKENS, "initializer_range": 0.02}, indent=2))
    if not (d / "tokenizer.json").exists():
        alphabet = bytes_to_unicode()
        vocab = {c: i for i, c in enumerate(alphabet)}
        i = len(vocab)
        while len(vocab) < N_TOKENS:
            vocab[f"Ġsyn{i}"] = len(vocab)
            i += 1
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        tj = {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": N_TOKENS + k, "content": s, "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False, "special": True}
                             for k, s in enumerate(specials)],
            "normalizer": {"type": "NFC"},
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                              "use_regex": True},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                               "use_regex": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                        "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": vocab, "merges": []},
        }
        (d / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False))
    words = work / "words20k.txt"
    if not words.exists():
        import jieba  # noqa: F401  (its bundled dict.txt)
        dict_txt = Path(jieba.__file__).parent / "dict.txt"
        rows = []
        for line in dict_txt.read_text("utf-8").splitlines():
            w, freq = line.split(" ")[:2]
            if len(w) > 1 and all("\u4e00" <= c <= "\u9fff" for c in w):
                rows.append((-int(freq), w))
        rows.sort()
        words.write_text("\n".join(w for _, w in rows[:20_000]) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

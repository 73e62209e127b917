"""Loads a model directory written by `embed-transplant --emit-model` with transformers and checks
it against its source. Called by tests/cli/model_out.rs:

    check_model.py SOURCE_DIR OUT_DIR SPEC_JSON

SPEC_JSON: {"mode": "replace"|"extend", "text": str (made of copied tokens), "new_words": [str or
[surface, token]], "alone": bool (a new word alone is exactly one token; SentencePiece puts a `▁`
piece before a word-internal piece), "roundtrip": bool (decode(encode(s)) == s around new words),
"pad_to": int|null, "causal": bool, "seq2seq": bool}. A [surface, token] pair is a word-initial
SentencePiece piece (`▁word`): it must be the token for the surface after a space.
Exits non-zero with a message on the first failure.
"""
import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer

src_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
spec = json.loads(sys.argv[3])
torch.manual_seed(0)


def model_class(d):
    arch = AutoConfig.from_pretrained(d).architectures[0]
    return getattr(transformers, arch)


def load(d):
    model, info = model_class(d).from_pretrained(d, output_loading_info=True)
    return model.eval(), {k: sorted(map(str, v)) for k, v in info.items() if k != "error_msgs"}


src_model, src_info = load(src_dir)
out_model, out_info = load(out_dir)
# The emitted model loads exactly as cleanly as its source (the source's own report is the bar).
for k in ("missing_keys", "unexpected_keys", "mismatched_keys"):
    assert out_info.get(k, []) == src_info.get(k, []), (k, out_info.get(k), src_info.get(k))
    if spec.get("seq2seq"):
        assert not out_info.get(k), (k, out_info[k])
src_tok = AutoTokenizer.from_pretrained(src_dir)
out_tok = AutoTokenizer.from_pretrained(out_dir)
cfg = json.loads((out_dir / "config.json").read_text())
emb = out_model.get_input_embeddings().weight
assert cfg["vocab_size"] == emb.shape[0], (cfg["vocab_size"], emb.shape)
head = out_model.get_output_embeddings()
if head is not None:
    assert head.weight.shape[0] == emb.shape[0], head.weight.shape
src_vocab = src_tok.get_vocab()
out_vocab = out_tok.get_vocab()
assert max(out_vocab.values()) < cfg["vocab_size"], "a token maps past the matrix"

# Special-token ids of config.json name the same tokens as in the source.
src_cfg = json.loads((src_dir / "config.json").read_text())
inv_src = {i: t for t, i in src_vocab.items()}
inv_out = {i: t for t, i in out_vocab.items()}
for k in ("pad_token_id", "bos_token_id", "eos_token_id", "unk_token_id", "cls_token_id",
          "sep_token_id", "mask_token_id", "decoder_start_token_id", "forced_bos_token_id",
          "forced_eos_token_id"):
    if isinstance(src_cfg.get(k), int):
        assert inv_out[cfg[k]] == inv_src[src_cfg[k]], (k, cfg[k], src_cfg[k])

text = spec["text"]
enc_out = out_tok(text, return_tensors="pt")
enc_src = src_tok(text, return_tensors="pt")
toks_out = out_tok.convert_ids_to_tokens(enc_out["input_ids"][0])
toks_src = src_tok.convert_ids_to_tokens(enc_src["input_ids"][0])
assert toks_out == toks_src, ("the text must tokenize the same", toks_out, toks_src)
if spec["mode"] == "extend":
    for t, i in src_vocab.items():
        # transformers strips each vocab.txt line, so the source read from vocab.txt alone names
        # the U+2028 tokens of bert-base-chinese '' and '##'; the emitted tokenizer.json keeps them.
        same = out_vocab.get(t) == i or (inv_out.get(i, "").strip() == t and t != inv_out.get(i))
        assert same, ("old id changed", t, i, out_vocab.get(t))
    assert torch.equal(enc_out["input_ids"], enc_src["input_ids"])

def decoder_inputs(enc, config):
    """Teacher forcing: the decoder start token, then the text's ids shifted right."""
    ids = enc["input_ids"]
    start = torch.full((ids.shape[0], 1), config.decoder_start_token_id, dtype=ids.dtype)
    return torch.cat([start, ids[:, :-1]], dim=1)


if spec.get("seq2seq"):
    enc_out["decoder_input_ids"] = decoder_inputs(enc_out, out_model.config)
    enc_src["decoder_input_ids"] = decoder_inputs(enc_src, src_model.config)
with torch.no_grad():
    o = out_model(**enc_out, output_hidden_states=True)
    s = src_model(**enc_src, output_hidden_states=True)
if spec.get("seq2seq"):
    pairs = list(zip(o.encoder_hidden_states, s.encoder_hidden_states)) + list(
        zip(o.decoder_hidden_states, s.decoder_hidden_states))
else:
    pairs = list(zip(o.hidden_states, s.hidden_states))
assert pairs
for a, b in pairs:
    assert torch.equal(a, b), "hidden states differ"
# Logits: every column of a token both vocabularies hold, remapped, bit for bit.
shared = sorted(t for t in out_vocab if t in src_vocab and out_vocab[t] < o.logits.shape[-1])
cols_out = torch.tensor([out_vocab[t] for t in shared])
cols_src = torch.tensor([src_vocab[t] for t in shared])
# The output projection is one matmul over all columns: BLAS picks its kernel by the column
# count, so a smaller or larger vocabulary may round differently in the last bit. Bit for bit
# is checked first; otherwise the difference must stay at float rounding (1e-6 absolute).
lo, ls = o.logits[..., cols_out], s.logits[..., cols_src]
diff = (lo - ls).abs().max().item()
assert diff <= 1e-6, f"logits differ by {diff}"
print(f"ok: {len(shared)} shared columns {'bit-identical' if diff == 0 else f'within {diff:.1e}'}, "
      f"hidden states bit-identical, tokens {toks_out}")

def check_word(ctx, token):
    ids = out_tok(ctx, add_special_tokens=False)["input_ids"]
    got = out_tok.convert_ids_to_tokens(ids)
    assert token in got, (ctx, token, got)
    assert out_vocab[token] >= len(src_vocab) or spec["mode"] != "extend", ("not a new id", token)
    if spec.get("roundtrip"):
        back = out_tok.decode(ids)
        assert back == ctx, ("decode(encode(text)) != text", ctx, back)
    return got


for w in spec.get("new_words", []):
    if isinstance(w, list):
        surface, token = w
        check_word(f"{text} {surface}", token)
        continue
    got = check_word(w, w)
    if spec.get("alone", True):
        assert got == [w], (w, got)
    else:
        assert got in ([w], ["\u2581", w]), (w, got)
    # Inside running text with no spaces (Chinese), and after a space.
    for ctx in (f"{text}{w}{text}", f"{text} {w}"):
        check_word(ctx, w)

if spec.get("pad_to"):
    n = spec["pad_to"]
    assert cfg["vocab_size"] % n == 0, cfg["vocab_size"]
    used = max(out_vocab.values()) + 1
    pad_rows = emb[used:]
    assert pad_rows.shape[0] > 0 and bool((pad_rows.abs().sum(dim=1) > 0).all()), "padding rows not initialised"

if spec.get("causal"):
    ids = out_tok(text, return_tensors="pt")["input_ids"]
    gen = out_model.generate(ids, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] == ids.shape[1] + 5, gen.shape
if spec.get("seq2seq"):
    ids = out_tok(text, return_tensors="pt")["input_ids"]
    gen = out_model.generate(ids, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    start = out_model.generation_config.decoder_start_token_id
    assert start == cfg["decoder_start_token_id"], (start, cfg["decoder_start_token_id"])
    assert gen[0, 0].item() == start and gen.shape[1] >= 6, gen

# Per-token biases (BERT's cls.predictions.bias, BART's final_logits_bias): copied entries are
# the source's; a new word's entry is the mean of the entries of the pieces the source tokenizer
# splits it into.
for name in spec.get("biases", []):
    ob = out_model.state_dict()[name].reshape(-1)
    sb = src_model.state_dict()[name].reshape(-1)
    shared_bias = sorted(t for t in out_vocab if t in src_vocab)
    assert torch.equal(ob[[out_vocab[t] for t in shared_bias]], sb[[src_vocab[t] for t in shared_bias]]), name
    for w in spec.get("bias_words", []):
        pieces = src_tok(w, add_special_tokens=False)["input_ids"]
        want = sb[pieces].mean()
        got = ob[out_vocab[w]]
        assert abs(got - want) <= 1e-6, (name, w, pieces, got.item(), want.item())
print("ok")

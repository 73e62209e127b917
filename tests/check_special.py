"""Loads a model directory whose tokenizer `--emit-model` replaced by a target tokenizer.json and
checks the special tokens it adopted. Called by tests/cli/target_tokenizer.rs:

    check_special.py SOURCE_DIR OUT_DIR TARGET_TOKENIZER_JSON SPEC_JSON

SPEC_JSON: {"roles": {role: token or null}, "text": str, "causal": bool, "auto": bool (load the
tokenizer with AutoTokenizer; else with PreTrainedTokenizerFast)}. Checks: the model loads
exactly as cleanly as its source (same missing/unexpected keys); the tokenizer encodes `text` as
the target tokenizer does; each role in `roles` is the tokenizer's special token of that role and
config.json's `{role}_token_id` is its id (null where the role is null); every config.json and
generation_config.json id names the tokenizer's token of the same role; a forward pass (and for a
causal model, generation) runs. Exits non-zero with a message on the first failure.
"""
import json
import sys
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer
from transformers import AutoConfig, AutoTokenizer

src_dir, out_dir, target = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
spec = json.loads(sys.argv[4])
ROLES = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"]


def load(d):
    cls = getattr(transformers, AutoConfig.from_pretrained(d).architectures[0])
    model, info = cls.from_pretrained(d, output_loading_info=True)
    return model.eval(), {k: sorted(map(str, v)) for k, v in info.items() if k != "error_msgs"}


_, src_info = load(src_dir)
model, out_info = load(out_dir)
for k in ("missing_keys", "unexpected_keys", "mismatched_keys"):
    assert out_info.get(k, []) == src_info.get(k, []), (k, out_info.get(k), src_info.get(k))

# transformers 5's AutoTokenizer builds its own tokenizer for some model types whatever the files
# say (Qwen2Tokenizer for every qwen2 model, a byte-level BPE rebuilt from the vocabulary): a
# tokenizer of another family is loaded with the generic fast tokenizer, which reads the files.
tok = (AutoTokenizer if spec.get("auto", True) else transformers.PreTrainedTokenizerFast).from_pretrained(out_dir)
want = Tokenizer.from_file(target)
text = spec["text"]
assert tok(text, add_special_tokens=False)["input_ids"] == want.encode(text, add_special_tokens=False).ids, \
    "the tokenizer must be the target's"
cfg = json.loads((out_dir / "config.json").read_text())
emb = model.get_input_embeddings().weight
assert cfg["vocab_size"] == emb.shape[0] == len(tok), (cfg["vocab_size"], emb.shape, len(tok))

for role, token in spec["roles"].items():
    got = getattr(tok, f"{role}_token")
    assert got == token, (role, got, token)
    key = f"{role}_token_id"
    if key in cfg:
        want_id = None if token is None else tok.convert_tokens_to_ids(token)
        assert cfg[key] == want_id, (key, cfg[key], want_id)
files = [("config.json", cfg)]
gen = out_dir / "generation_config.json"
if gen.exists():
    files.append(("generation_config.json", json.loads(gen.read_text())))
for name, c in files:
    for role in ROLES:
        i = c.get(f"{role}_token_id")
        if i is None:
            continue
        for x in i if isinstance(i, list) else [i]:
            assert tok.convert_ids_to_tokens(x) == getattr(tok, f"{role}_token"), (name, role, x)

ids = tok(text, return_tensors="pt")["input_ids"]
with torch.no_grad():
    model(input_ids=ids)
if spec.get("causal"):
    g = model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=cfg.get("pad_token_id"))
    assert g.shape[1] == ids.shape[1] + 3 or cfg.get("eos_token_id") is not None, g.shape
print("ok", {r: getattr(tok, f"{r}_token") for r in ROLES})

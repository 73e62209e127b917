//! `--emit-model DIR`: the files, shapes, bit-exact rows and config ids checked here; loading with
//! transformers (tests/check_model.py) in the `_in_transformers` twins, which need Python and are
//! ignored unless `--include-ignored`.

use crate::common::*;

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// All tensors of a model directory (one file or shards).
fn weights(dir: &Path) -> HashMap<String, (String, Vec<usize>, Vec<u8>)> {
    let mut out = HashMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            out.extend(read_st(&p).tensors);
        }
    }
    out
}

/// Loads an `--emit-model` directory in transformers (tests/check_model.py) under `Python::Check`.
pub fn check_in_python(python: Python, source: &Path, out: &Path, spec: serde_json::Value) {
    if let Python::Skip = python {
        return;
    }
    let python = crate::common::python("torch, transformers, safetensors");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_model.py");
    let o = std::process::Command::new(&python)
        .arg(script)
        .arg(source)
        .arg(out)
        .arg(spec.to_string())
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn rows(t: &(String, Vec<usize>, Vec<u8>)) -> Vec<&[u8]> {
    let width = t.2.len() / t.1[0];
    t.2.chunks_exact(width).collect()
}

#[test]
fn bert_model_directory_replaces_the_vocabulary() {
    bert_model_directory_replaces_the_vocabulary_run(Python::Skip);
}

/// `bert_model_directory_replaces_the_vocabulary`, its directory also loaded in transformers (tests/check_model.py).
#[test]
#[ignore = "needs python: torch, transformers (tests/check_model.py)"]
fn bert_model_directory_replaces_the_vocabulary_in_transformers() {
    bert_model_directory_replaces_the_vocabulary_run(Python::Check);
}

fn bert_model_directory_replaces_the_vocabulary_run(python: Python) {
    let sb = Sandbox::new();
    sb.transplant(bert_dir())
        .args(["--emit-model", "out", "-q"])
        .assert()
        .success();
    // --emit-model without -o writes no matrix.
    assert_eq!(sb.files(), vec!["out"]);
    let dir = sb.path("out");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "config.json",
            "model.safetensors",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "transplant.json",
            "vocab.txt"
        ]
    );
    let target = lines(&target_vocab());
    assert_eq!(lines(&dir.join("vocab.txt")), target);
    let cfg = json(&dir.join("config.json"));
    assert_eq!(cfg["vocab_size"], 2000);
    assert_eq!(cfg["pad_token_id"], 0, "[PAD] is line 1 of the target");
    let out = weights(&dir);
    let src = read_st(&bert_dir().join("model.safetensors")).tensors;
    // Every tensor but the embedding (and the bias) is the source's, bit for bit.
    for (name, t) in &src {
        if name == "bert.embeddings.word_embeddings.weight" || name == "cls.predictions.bias" {
            continue;
        }
        assert_eq!(&out[name], t, "{name}");
    }
    assert_eq!(out.len(), src.len());
    let emb = &out["bert.embeddings.word_embeddings.weight"];
    assert_eq!(emb.1, vec![2000, 32]);
    let src_ids: HashMap<String, usize> = lines(&bert_dir().join("vocab.txt"))
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i))
        .collect();
    let (se, sb_) = (
        rows(&src["bert.embeddings.word_embeddings.weight"]),
        &src["cls.predictions.bias"].2,
    );
    let (oe, ob) = (rows(emb), &out["cls.predictions.bias"].2);
    assert_eq!(out["cls.predictions.bias"].1, vec![2000]);
    let mut copied = 0;
    for (i, t) in target.iter().enumerate() {
        if let Some(&id) = src_ids.get(t) {
            assert_eq!(oe[i], se[id], "row {i} {t}");
            assert_eq!(
                ob[i * 4..i * 4 + 4],
                sb_[id * 4..id * 4 + 4],
                "bias {i} {t}"
            );
            copied += 1;
        }
    }
    assert_eq!(copied, 607);
    // 人工智能 (composed of 人 工 智 能) is an added token so the tokenizer produces it whole.
    let tj = json(&dir.join("tokenizer.json"));
    let row = target.iter().position(|t| t == "人工智能").unwrap();
    assert!(tj["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["content"] == "人工智能" && a["id"] == row && a["special"] == false));
    assert_eq!(
        tj["post_processor"]["special_tokens"]["[CLS]"]["ids"][0],
        target.iter().position(|t| t == "[CLS]").unwrap()
    );
    let prov = json(&dir.join("transplant.json"));
    assert_eq!(prov["rows"], "2000");
    assert_eq!(prov["emit_model"]["mode"], "replace");
    check_in_python(
        python,
        &bert_dir(),
        &dir,
        serde_json::json!({"mode": "replace", "text": "中 国 人 的 大 学", "new_words": ["人工智能", "中国"]}),
    );
}

#[test]
fn emitting_is_deterministic_and_o_still_writes_the_matrix() {
    let sb = Sandbox::new();
    for d in ["a", "b"] {
        sb.transplant(bert_dir())
            .args(["--emit-model", d, "-o", &format!("{d}.safetensors"), "-q"])
            .assert()
            .success();
    }
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "config.json",
        "vocab.txt",
    ] {
        assert_eq!(
            std::fs::read(sb.path("a").join(f)).unwrap(),
            std::fs::read(sb.path("b").join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        std::fs::read(sb.path("a.safetensors")).unwrap(),
        std::fs::read(sb.path("b.safetensors")).unwrap()
    );
    // The matrix and the model's embedding are the same rows.
    let m = read_st(&sb.path("a.safetensors"))
        .tensors
        .remove("weight")
        .unwrap();
    let e = &weights(&sb.path("a"))["bert.embeddings.word_embeddings.weight"];
    assert_eq!(m.2, e.2);
}

#[test]
fn legacy_bin_with_padding_rows() {
    legacy_bin_with_padding_rows_run(Python::Skip);
}

/// `legacy_bin_with_padding_rows`, its directory also loaded in transformers (tests/check_model.py).
#[test]
#[ignore = "needs python: torch, transformers (tests/check_model.py)"]
fn legacy_bin_with_padding_rows_in_transformers() {
    legacy_bin_with_padding_rows_run(Python::Check);
}

fn legacy_bin_with_padding_rows_run(python: Python) {
    let sb = Sandbox::new();
    let src = fixture("tiny-bert-chinese-legacy");
    sb.transplant(&src)
        .args(["--emit-model", "out", "-q", "--pad-to-multiple-of", "64"])
        .assert()
        .success();
    let dir = sb.path("out");
    let cfg = json(&dir.join("config.json"));
    assert_eq!(cfg["vocab_size"], 2048);
    let out = weights(&dir);
    let emb = &out["bert.embeddings.word_embeddings.weight"];
    assert_eq!(emb.1, vec![2048, 32]);
    // Padding rows are initialised (random by default), not zeros, and no token maps to them.
    for r in &rows(emb)[2000..] {
        assert!(f32s(r).iter().any(|v| *v != 0.0));
    }
    assert_eq!(lines(&dir.join("vocab.txt")).len(), 2000);
    // The tied decoder weight and bias of the .bin are left out, as save_pretrained does.
    assert!(!out.contains_key("cls.predictions.decoder.weight"));
    assert!(!out.contains_key("cls.predictions.decoder.bias"));
    assert_eq!(out["cls.predictions.bias"].1, vec![2048]);
    check_in_python(
        python,
        &src,
        &dir,
        serde_json::json!({"mode": "replace", "text": "中 国 人 的 大 学", "new_words": ["人工智能"], "pad_to": 64}),
    );
}

#[test]
fn sharded_qwen2_with_an_untied_head_is_extended() {
    sharded_qwen2_with_an_untied_head_is_extended_run(Python::Skip);
}

/// `sharded_qwen2_with_an_untied_head_is_extended`, its directory also loaded in transformers (tests/check_model.py).
#[test]
#[ignore = "needs python: torch, transformers (tests/check_model.py)"]
fn sharded_qwen2_with_an_untied_head_is_extended_in_transformers() {
    sharded_qwen2_with_an_untied_head_is_extended_run(Python::Check);
}

fn sharded_qwen2_with_an_untied_head_is_extended_run(python: Python) {
    let sb = Sandbox::new();
    let src = fixture("tiny-qwen2");
    sb.transplant(&src)
        .args(["--emit-model", "out", "-q", "--extend"])
        .assert()
        .success();
    let dir = sb.path("out");
    // A sharded source gives shards and an index.
    let index = json(&dir.join("model.safetensors.index.json"));
    assert!(index["weight_map"]["lm_head.weight"].is_string());
    let out = weights(&dir);
    let mut src_w = HashMap::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            src_w.extend(read_st(&p).tensors);
        }
    }
    let tj = json(&dir.join("tokenizer.json"));
    let added = tj["added_tokens"].as_array().unwrap();
    let new: Vec<&serde_json::Value> = added.iter().filter(|a| a["special"] == false).collect();
    let cfg = json(&dir.join("config.json"));
    let n = cfg["vocab_size"].as_u64().unwrap() as usize;
    assert_eq!(
        n,
        503 + new.len(),
        "new tokens start at the tokenizer's size"
    );
    assert_eq!(new[0]["id"], 503);
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        let (o, s) = (&out[name], &src_w[name]);
        assert_eq!(o.1, vec![n, 16]);
        // Every source token's row, bit for bit.
        assert_eq!(rows(o)[..503], rows(s)[..503], "{name}");
    }
    // The head was rebuilt from its own rows, not from the embedding's.
    let row = |t: &str| {
        new.iter().find(|a| a["content"] == t).unwrap()["id"]
            .as_u64()
            .unwrap() as usize
    };
    let r = row("中国");
    assert_ne!(
        rows(&out["lm_head.weight"])[r],
        rows(&out["model.embed_tokens.weight"])[r]
    );
    for (name, t) in &src_w {
        if name != "model.embed_tokens.weight" && name != "lm_head.weight" {
            assert_eq!(&out[name], t, "{name}");
        }
    }
    assert_eq!(cfg["eos_token_id"], 500);
    check_in_python(
        python,
        &src,
        &dir,
        serde_json::json!({"mode": "extend", "text": "This is a test.", "new_words": ["人工智能", "中国"], "causal": true}),
    );
}

#[test]
fn tied_causal_lm_is_extended_and_sharded_on_request() {
    tied_causal_lm_is_extended_and_sharded_on_request_run(Python::Skip);
}

/// `tied_causal_lm_is_extended_and_sharded_on_request`, its directory also loaded in transformers (tests/check_model.py).
#[test]
#[ignore = "needs python: torch, transformers (tests/check_model.py)"]
fn tied_causal_lm_is_extended_and_sharded_on_request_in_transformers() {
    tied_causal_lm_is_extended_and_sharded_on_request_run(Python::Check);
}

fn tied_causal_lm_is_extended_and_sharded_on_request_run(python: Python) {
    let sb = Sandbox::new();
    let src = fixture("tiny-qwen2-tied");
    sb.transplant(&src)
        .args([
            "--emit-model",
            "out",
            "-q",
            "--extend",
            "--max-shard-size",
            "30KB",
        ])
        .assert()
        .success();
    let dir = sb.path("out");
    assert!(dir.join("model.safetensors.index.json").is_file());
    let shards = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("model-0000")
        })
        .count();
    assert!(shards > 1, "{shards} shard(s)");
    let out = weights(&dir);
    assert!(
        !out.contains_key("lm_head.weight"),
        "a tied head is not written"
    );
    check_in_python(
        python,
        &src,
        &dir,
        serde_json::json!({"mode": "extend", "text": "This is a test.", "new_words": ["人工智能"], "causal": true}),
    );
}

#[test]
fn xlmr_unigram_vocabulary_is_replaced() {
    xlmr_unigram_vocabulary_is_replaced_run(Python::Skip);
}

/// `xlmr_unigram_vocabulary_is_replaced`, its directory also loaded in transformers (tests/check_model.py).
#[test]
#[ignore = "needs python: torch, transformers (tests/check_model.py)"]
fn xlmr_unigram_vocabulary_is_replaced_in_transformers() {
    xlmr_unigram_vocabulary_is_replaced_run(Python::Check);
}

fn xlmr_unigram_vocabulary_is_replaced_run(python: Python) {
    let sb = Sandbox::new();
    std::fs::write(
        sb.path("v.txt"),
        "<s>\n<pad>\n</s>\n<unk>\n\u{2581}\n大学\n的人\n人工\n智能\n我\n爱\n\u{2581}我\n中国\n人工智能\n<mask>\n",
    )
    .unwrap();
    let src = fixture("tiny-xlmr");
    sb.cmd()
        .arg("-m")
        .arg(&src)
        .args(["-v", "v.txt", "--emit-model", "out", "-q"])
        .assert()
        .success();
    let dir = sb.path("out");
    let tj = json(&dir.join("tokenizer.json"));
    let vocab = tj["model"]["vocab"].as_array().unwrap();
    assert_eq!(vocab.len(), 15);
    assert_eq!(tj["model"]["unk_id"], 3);
    // Copied pieces keep their score; 人工智能 gets the best of its pieces' (人工, 智能).
    let src_tj = json(&src.join("tokenizer.json"));
    let score = |v: &[serde_json::Value], p: &str| {
        v.iter().find(|e| e[0] == p).unwrap()[1].as_f64().unwrap()
    };
    let sv = src_tj["model"]["vocab"].as_array().unwrap();
    assert_eq!(score(vocab, "大学"), score(sv, "大学"));
    assert_eq!(
        score(vocab, "人工智能"),
        score(sv, "人工").max(score(sv, "智能"))
    );
    assert_eq!(json(&dir.join("config.json"))["vocab_size"], 15);
    check_in_python(
        python,
        &src,
        &dir,
        serde_json::json!({"mode": "replace", "text": "大学 的人", "new_words": ["人工智能"], "alone": false}),
    );
}

#[test]
fn keep_special_appends_what_the_target_lacks() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("v.txt"), "中\n国\n").unwrap();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(bert_dir())
        .args(["-v", "v.txt", "--emit-model", "out"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(
        err.contains("special token \"[PAD]\" (config.json pad_token_id) is not in the target vocabulary v.txt; add it, or pass --keep-special"),
        "{err}"
    );
    assert_eq!(sb.files(), vec!["v.txt"], "a failure leaves nothing");
    sb.cmd()
        .arg("-m")
        .arg(bert_dir())
        .args(["-v", "v.txt", "--emit-model", "out", "-q", "--keep-special"])
        .assert()
        .success();
    // In the order the source names them: config.json pad_token_id, then tokenizer_config.json.
    let v = lines(&sb.path("out/vocab.txt"));
    assert_eq!(
        v,
        ["中", "国", "[PAD]", "[UNK]", "[SEP]", "[CLS]", "[MASK]"]
    );
    assert_eq!(json(&sb.path("out/config.json"))["pad_token_id"], 2);
    let out = weights(&sb.path("out"));
    let src = read_st(&bert_dir().join("model.safetensors")).tensors;
    // [PAD] is source row 0, [MASK] 103.
    let (o, s) = (
        rows(&out["bert.embeddings.word_embeddings.weight"]),
        rows(&src["bert.embeddings.word_embeddings.weight"]),
    );
    assert_eq!(o[2], s[0]);
    assert_eq!(o[6], s[103]);
}

#[test]
fn byte_level_bpe_needs_extend() {
    let sb = Sandbox::new();
    let a = sb
        .transplant(fixture("tiny-qwen2"))
        .args(["--emit-model", "out"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(
        err.contains("tokenizer.json: a BPE tokenizer cannot take a plain token list (a list has no merges); pass --extend"),
        "{err}"
    );
    assert!(sb.files().is_empty(), "{:?}", sb.files());
}

#[test]
fn existing_directory_needs_force() {
    let sb = Sandbox::new();
    std::fs::create_dir(sb.path("out")).unwrap();
    std::fs::write(sb.path("out/old.txt"), "x").unwrap();
    let a = sb
        .transplant(bert_dir())
        .args(["--emit-model", "out"])
        .assert()
        .code(1);
    assert!(
        stderr_of(&a).contains("out: exists; pass --force to replace it"),
        "{}",
        stderr_of(&a)
    );
    assert!(sb.path("out/old.txt").exists());
    // --force replaces only what we wrote: old.txt is not ours (tests/cli/safety.rs has more).
    let a = sb
        .transplant(bert_dir())
        .args(["--emit-model", "out", "--force", "-q"])
        .assert()
        .code(1);
    assert!(
        stderr_of(&a).contains("out/old.txt: --emit-model out --force would delete this"),
        "{}",
        stderr_of(&a)
    );
    assert_eq!(std::fs::read(sb.path("out/old.txt")).unwrap(), b"x");
    std::fs::remove_file(sb.path("out/old.txt")).unwrap();
    for _ in 0..2 {
        // Empty, then an earlier output of ours: replaced.
        sb.transplant(bert_dir())
            .args(["--emit-model", "out", "--force", "-q"])
            .assert()
            .success();
        assert!(sb.path("out/model.safetensors").exists());
        assert_eq!(sb.files(), vec!["out"], "no temp directory is left");
    }
}

#[test]
fn emit_flags_are_checked() {
    let sb = Sandbox::new();
    let a = sb
        .transplant(bert_dir())
        .args(["--extend"])
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("--emit-model"), "{}", stderr_of(&a));
    let a = sb
        .transplant(bert_dir())
        .args(["--emit-model", "out", "--max-shard-size", "lots"])
        .assert()
        .code(2);
    assert!(
        stderr_of(&a).contains("--max-shard-size lots: not a size"),
        "{}",
        stderr_of(&a)
    );
    let a = sb
        .transplant(bert_dir())
        .args(["--emit-model", "out", "--dtype", "f16"])
        .assert()
        .code(2);
    assert!(
        stderr_of(&a).contains("--dtype with --emit-model"),
        "{}",
        stderr_of(&a)
    );
    let a = sb
        .transplant(bert_dir())
        .arg("--emit-model")
        .arg(bert_dir())
        .arg("--force")
        .assert()
        .code(1);
    assert!(
        stderr_of(&a).contains("holding an input of this run"),
        "{}",
        stderr_of(&a)
    );
    assert!(sb.files().is_empty());
}

#[test]
fn byte_level_bpe_is_replaced_by_a_target_tokenizer_json() {
    byte_level_bpe_is_replaced_by_a_target_tokenizer_json_run(Python::Skip);
}

/// `byte_level_bpe_is_replaced_by_a_target_tokenizer_json`, its directory also loaded in transformers (tests/check_model.py).
#[test]
#[ignore = "needs python: torch, transformers (tests/check_model.py)"]
fn byte_level_bpe_is_replaced_by_a_target_tokenizer_json_in_transformers() {
    byte_level_bpe_is_replaced_by_a_target_tokenizer_json_run(Python::Check);
}

fn byte_level_bpe_is_replaced_by_a_target_tokenizer_json_run(python: Python) {
    let sb = Sandbox::new();
    let src = fixture("tiny-qwen2");
    // The same tokens under other ids: the model vocabulary in reverse order (merges name tokens
    // by string, so they stay valid); the added tokens keep theirs.
    let mut tj = json(&src.join("tokenizer.json"));
    let vocab = tj["model"]["vocab"].as_object_mut().unwrap();
    let n = vocab.len() as u64;
    for v in vocab.values_mut() {
        *v = serde_json::json!(n - 1 - v.as_u64().unwrap());
    }
    std::fs::write(sb.path("target.json"), serde_json::to_vec(&tj).unwrap()).unwrap();
    sb.cmd()
        .arg("-m")
        .arg(&src)
        .args(["-v", "target.json", "--emit-model", "out", "-q"])
        .assert()
        .success();
    let dir = sb.path("out");
    assert_eq!(
        json(&dir.join("tokenizer.json")),
        tj,
        "the target tokenizer is written unchanged"
    );
    let cfg = json(&dir.join("config.json"));
    assert_eq!(cfg["vocab_size"], 503);
    let out = weights(&dir);
    let src_w = weights(&src);
    let (o, s) = (
        rows(&out["model.embed_tokens.weight"]),
        rows(&src_w["model.embed_tokens.weight"]),
    );
    assert_eq!(o[0], s[499]);
    assert_eq!(o[499], s[0]);
    assert_eq!(o[501], s[501]);
    let (o, s) = (rows(&out["lm_head.weight"]), rows(&src_w["lm_head.weight"]));
    assert_eq!(o[3], s[496]);
    check_in_python(
        python,
        &src,
        &dir,
        serde_json::json!({"mode": "replace", "text": "This is a test.", "causal": true}),
    );
}

/// The weights load in a PyTorch 2.0-era safetensors (0.3.x). `.ci/run` makes a small venv with
/// safetensors 0.3.3 and numpy and sets `EMBED_TRANSPLANT_OLD_SAFETENSORS_PYTHON`.
#[test]
#[ignore = "needs python: safetensors 0.3.3 at $EMBED_TRANSPLANT_OLD_SAFETENSORS_PYTHON"]
fn old_safetensors_reads_the_weights() {
    let python = std::env::var("EMBED_TRANSPLANT_OLD_SAFETENSORS_PYTHON").expect(
        "EMBED_TRANSPLANT_OLD_SAFETENSORS_PYTHON must name a python with safetensors 0.3.3 \
         (.ci/run makes one)",
    );
    let sb = Sandbox::new();
    sb.transplant(bert_dir())
        .args(["--emit-model", "bert", "-q"])
        .assert()
        .success();
    sb.transplant(fixture("tiny-qwen2"))
        .args([
            "--emit-model",
            "qwen",
            "-q",
            "--extend",
            "--max-shard-size",
            "40KB",
        ])
        .assert()
        .success();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_old_safetensors.py");
    for d in ["bert", "qwen"] {
        let o = std::process::Command::new(&python)
            .arg(&script)
            .arg(sb.path(d))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// Without `tie_word_embeddings` in config.json, a head is tied exactly when its bytes equal the
/// embedding's (family defaults differ).
#[test]
fn tying_follows_the_bytes_when_the_config_is_silent() {
    let sb = Sandbox::new();
    for (name, model) in [
        ("qwen", fixture("tiny-qwen2")),
        ("legacy", fixture("tiny-bert-chinese-legacy")),
    ] {
        let copy = sb.path(&format!("{name}-src"));
        std::fs::create_dir(&copy).unwrap();
        for e in std::fs::read_dir(&model).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, copy.join(p.file_name().unwrap())).unwrap();
        }
        let mut cfg = json(&copy.join("config.json"));
        cfg.as_object_mut().unwrap().remove("tie_word_embeddings");
        std::fs::write(copy.join("config.json"), cfg.to_string()).unwrap();
        sb.transplant(&copy)
            .args(["--emit-model", name, "-q"])
            .args(if name == "qwen" {
                &["--extend"][..]
            } else {
                &[][..]
            })
            .assert()
            .success();
    }
    // Qwen2's lm_head differs from its embedding: rebuilt; the .bin's BERT decoder is the
    // embedding's storage: left out.
    assert!(weights(&sb.path("qwen")).contains_key("lm_head.weight"));
    assert!(!weights(&sb.path("legacy")).contains_key("cls.predictions.decoder.weight"));
}

/// `--extend` on WordPiece sources (tokenizer.json, and the legacy .bin with vocab.txt only):
/// every old id, row and bias entry is the source's; new words are appended in file order, listed
/// in vocab.txt, and one token each, also inside unspaced Chinese text.
#[test]
fn bert_wordpiece_sources_are_extended() {
    bert_wordpiece_sources_are_extended_run(Python::Skip);
}

/// `bert_wordpiece_sources_are_extended`, its directory also loaded in transformers (tests/check_model.py).
#[test]
#[ignore = "needs python: torch, transformers (tests/check_model.py)"]
fn bert_wordpiece_sources_are_extended_in_transformers() {
    bert_wordpiece_sources_are_extended_run(Python::Check);
}

fn bert_wordpiece_sources_are_extended_run(python: Python) {
    let sb = Sandbox::new();
    for (name, src) in [
        ("st", bert_dir()),
        ("legacy", fixture("tiny-bert-chinese-legacy")),
    ] {
        sb.transplant(&src)
            .args(["--emit-model", name, "-q", "--extend"])
            .assert()
            .success();
        let dir = sb.path(name);
        let src_vocab = lines(&src.join("vocab.txt"));
        let target = lines(&target_vocab());
        let new: Vec<&String> = target.iter().filter(|t| !src_vocab.contains(t)).collect();
        assert!(new.len() > 1000, "{}", new.len());
        // vocab.txt: the source's lines, then the new words in target order.
        let v = lines(&dir.join("vocab.txt"));
        assert_eq!(v[..21128], src_vocab[..], "{name}");
        assert_eq!(v[21128..].iter().collect::<Vec<_>>(), new, "{name}");
        let cfg = json(&dir.join("config.json"));
        assert_eq!(cfg["vocab_size"], 21128 + new.len());
        assert_eq!(cfg["pad_token_id"], 0);
        let tj = json(&dir.join("tokenizer.json"));
        let row = 21128 + new.iter().position(|t| *t == "人工智能").unwrap();
        assert!(tj["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["content"] == "人工智能" && a["id"] == row && a["special"] == false));
        assert_eq!(tj["model"]["vocab"]["人工智能"], row);
        assert_eq!(
            tj["post_processor"]["special_tokens"]["[CLS]"]["ids"][0],
            101
        );
        let out = weights(&dir);
        let src_w = read_st(&bert_dir().join("model.safetensors")).tensors;
        let emb = "bert.embeddings.word_embeddings.weight";
        assert_eq!(rows(&out[emb])[..21128], rows(&src_w[emb])[..], "{name}");
        let bias = &out["cls.predictions.bias"];
        assert_eq!(bias.1, vec![21128 + new.len()]);
        assert_eq!(bias.2[..21128 * 4], src_w["cls.predictions.bias"].2[..]);
        let prov = json(&dir.join("transplant.json"));
        assert_eq!(
            prov["emit_model"]["extension"],
            "word_piece_and_added_tokens"
        );
        check_in_python(
            python,
            &src,
            &dir,
            serde_json::json!({"mode": "extend", "text": "中 国 人 的 大 学", "new_words": ["人工智能", "中国", "大学"]}),
        );
    }
}

/// `--extend` on a SentencePiece Unigram source (XLM-R): new words become Unigram pieces after
/// the old ones, so the Metaspace pre-tokeniser treats them like every piece: one token inside
/// unspaced text, a `▁word` piece after a space, and decoding gives the text back.
#[test]
fn xlmr_unigram_source_is_extended_with_pieces() {
    xlmr_unigram_source_is_extended_with_pieces_run(Python::Skip);
}

/// `xlmr_unigram_source_is_extended_with_pieces`, its directory also loaded in transformers (tests/check_model.py).
#[test]
#[ignore = "needs python: torch, transformers (tests/check_model.py)"]
fn xlmr_unigram_source_is_extended_with_pieces_in_transformers() {
    xlmr_unigram_source_is_extended_with_pieces_run(Python::Check);
}

fn xlmr_unigram_source_is_extended_with_pieces_run(python: Python) {
    let sb = Sandbox::new();
    // 我们 and ▁我们 are source pieces (not new); ▁新词 is spelled as a word-initial piece.
    std::fs::write(
        sb.path("v.txt"),
        "人工智能\n我们\n我爱\n\u{2581}我们\n大学生\n\u{2581}新词\n",
    )
    .unwrap();
    let src = fixture("tiny-xlmr");
    sb.cmd()
        .arg("-m")
        .arg(&src)
        .args(["-v", "v.txt", "--emit-model", "out", "-q", "--extend"])
        .assert()
        .success();
    let dir = sb.path("out");
    let tj = json(&dir.join("tokenizer.json"));
    let src_tj = json(&src.join("tokenizer.json"));
    let (vocab, sv) = (
        tj["model"]["vocab"].as_array().unwrap(),
        src_tj["model"]["vocab"].as_array().unwrap(),
    );
    assert_eq!(vocab[..sv.len()], sv[..], "old pieces and scores unchanged");
    let new: Vec<&str> = vocab[sv.len()..]
        .iter()
        .map(|e| e[0].as_str().unwrap())
        .collect();
    assert_eq!(new, ["人工智能", "我爱", "大学生", "\u{2581}新词"]);
    // Every new piece scores the best ordinary source score (',' at -3.46 here).
    let best = sv
        .iter()
        .map(|e| e[1].as_f64().unwrap())
        .filter(|s| *s < 0.0)
        .fold(f64::MIN, f64::max);
    assert!(vocab[sv.len()..]
        .iter()
        .all(|e| e[1].as_f64() == Some(best)));
    assert_eq!(
        tj["added_tokens"], src_tj["added_tokens"],
        "no added tokens: the new words are pieces"
    );
    let cfg = json(&dir.join("config.json"));
    assert_eq!(cfg["vocab_size"], sv.len() + 4);
    let out = weights(&dir);
    let src_w = weights(&src);
    let name = "roberta.embeddings.word_embeddings.weight";
    assert_eq!(rows(&out[name])[..sv.len()], rows(&src_w[name])[..]);
    assert_eq!(
        out["lm_head.bias"].2[..sv.len() * 4],
        src_w["lm_head.bias"].2[..]
    );
    assert_eq!(
        json(&dir.join("transplant.json"))["emit_model"]["extension"],
        "unigram_pieces"
    );
    check_in_python(
        python,
        &src,
        &dir,
        serde_json::json!({"mode": "extend", "text": "大学 的人", "alone": false, "roundtrip": true,
            "new_words": ["人工智能", "我爱", "大学生", ["新词", "\u{2581}新词"]]}),
    );
}

/// A tokenizer.json with the same tokens under other ids: the model vocabulary in reverse order
/// (merges name tokens by string, so they stay valid); added tokens and a RobertaProcessing
/// post-processor follow their tokens.
fn reversed_tokenizer(src: &Path) -> serde_json::Value {
    let mut tj = json(&src.join("tokenizer.json"));
    let vocab = tj["model"]["vocab"].as_object_mut().unwrap();
    let n = vocab.len() as u64;
    for v in vocab.values_mut() {
        *v = serde_json::json!(n - 1 - v.as_u64().unwrap());
    }
    let vocab = vocab.clone();
    for a in tj["added_tokens"].as_array_mut().unwrap() {
        if let Some(id) = vocab.get(a["content"].as_str().unwrap()) {
            a["id"] = id.clone();
        }
    }
    for k in ["sep", "cls"] {
        if let Some(pair) = tj["post_processor"].get_mut(k) {
            pair[1] = vocab[pair[0].as_str().unwrap()].clone();
        }
    }
    tj
}

const ENGLISH_WORDS: &str = "hello\nworld\nembedding\ntransplant\n人工智能\n";

/// BART (byte-level BPE, tied head, `final_logits_bias`, `decoder_start_token_id` = `</s>`):
/// `--extend` keeps every old id, row and bias entry; new bias entries are the mean of the
/// word's pieces' entries (checked in Python); the seq2seq model loads, gives the source's
/// encoder and decoder states and logits on old-token text, and generate() starts from the
/// decoder start token.
#[test]
fn bart_is_extended_with_its_final_logits_bias() {
    bart_is_extended_with_its_final_logits_bias_run(Python::Skip);
}

/// `bart_is_extended_with_its_final_logits_bias`, its directory also loaded in transformers (tests/check_model.py).
#[test]
#[ignore = "needs python: torch, transformers (tests/check_model.py)"]
fn bart_is_extended_with_its_final_logits_bias_in_transformers() {
    bart_is_extended_with_its_final_logits_bias_run(Python::Check);
}

fn bart_is_extended_with_its_final_logits_bias_run(python: Python) {
    let sb = Sandbox::new();
    std::fs::write(sb.path("v.txt"), ENGLISH_WORDS).unwrap();
    let src = fixture("tiny-bart");
    sb.cmd()
        .arg("-m")
        .arg(&src)
        .args(["-v", "v.txt", "--emit-model", "out", "-q", "--extend"])
        .assert()
        .success();
    let dir = sb.path("out");
    let cfg = json(&dir.join("config.json"));
    assert_eq!(cfg["vocab_size"], 406);
    for (k, v) in [
        ("decoder_start_token_id", 2),
        ("eos_token_id", 2),
        ("pad_token_id", 1),
    ] {
        assert_eq!(cfg[k], v, "{k}");
    }
    let out = weights(&dir);
    let src_w = weights(&src);
    let bias = &out["final_logits_bias"];
    assert_eq!(bias.1, vec![1, 406]);
    assert_eq!(bias.2[..401 * 4], src_w["final_logits_bias"].2[..]);
    assert_eq!(
        rows(&out["model.shared.weight"])[..401],
        rows(&src_w["model.shared.weight"])[..]
    );
    assert_eq!(out.len(), src_w.len(), "tied: no lm_head written");
    let routing = &json(&dir.join("transplant.json"))["emit_model"]["routing"];
    assert_eq!(routing["biases"], serde_json::json!(["final_logits_bias"]));
    check_in_python(
        python,
        &src,
        &dir,
        serde_json::json!({"mode": "extend", "text": "The cat sat on the mat.", "roundtrip": true,
            "new_words": ["embedding", "transplant", "人工智能"], "seq2seq": true,
            "biases": ["final_logits_bias"], "bias_words": ["embedding", "transplant", "人工智能"]}),
    );
}

/// BART replaced through a target tokenizer.json that moves every token: every special id of
/// config.json and generation_config.json (decoder_start, bos, eos, pad, forced_eos) is
/// re-pointed, and `final_logits_bias` follows its tokens.
#[test]
fn bart_is_replaced_by_a_target_tokenizer_json() {
    bart_is_replaced_by_a_target_tokenizer_json_run(Python::Skip);
}

/// `bart_is_replaced_by_a_target_tokenizer_json`, its directory also loaded in transformers (tests/check_model.py).
#[test]
#[ignore = "needs python: torch, transformers (tests/check_model.py)"]
fn bart_is_replaced_by_a_target_tokenizer_json_in_transformers() {
    bart_is_replaced_by_a_target_tokenizer_json_run(Python::Check);
}

fn bart_is_replaced_by_a_target_tokenizer_json_run(python: Python) {
    let sb = Sandbox::new();
    let src = fixture("tiny-bart");
    let tj = reversed_tokenizer(&src);
    std::fs::write(sb.path("target.json"), serde_json::to_vec(&tj).unwrap()).unwrap();
    sb.cmd()
        .arg("-m")
        .arg(&src)
        .args(["-v", "target.json", "--emit-model", "out", "-q"])
        .assert()
        .success();
    let dir = sb.path("out");
    assert_eq!(json(&dir.join("tokenizer.json")), tj);
    // <s> <pad> </s> <unk> were 0..3 of 400 model tokens (<mask>, 400, is an added token only):
    // now 399..396.
    for f in ["config.json", "generation_config.json"] {
        let c = json(&dir.join(f));
        for (k, v) in [
            ("decoder_start_token_id", 397),
            ("bos_token_id", 399),
            ("eos_token_id", 397),
            ("pad_token_id", 398),
            ("forced_eos_token_id", 397),
        ] {
            if f == "config.json" || c.get(k).is_some() {
                assert_eq!(c[k], v, "{f} {k}");
            }
        }
    }
    let out = weights(&dir);
    let src_w = weights(&src);
    let (o, s) = (&out["final_logits_bias"].2, &src_w["final_logits_bias"].2);
    assert_eq!(
        o[397 * 4..398 * 4],
        s[2 * 4..3 * 4],
        "</s>'s bias moved with it"
    );
    check_in_python(
        python,
        &src,
        &dir,
        serde_json::json!({"mode": "replace", "text": "The cat sat on the mat.", "seq2seq": true,
            "biases": ["final_logits_bias"]}),
    );
}

/// T5 v1.1 (SentencePiece Unigram, untied lm_head, `encoder.`/`decoder.embed_tokens.weight`
/// stored beside `shared.weight`, decoder_start = pad): extended, and replaced by a token list
/// that moves `<pad>` (so decoder_start_token_id is re-pointed) with --keep-special for the
/// extra ids it lacks.
#[test]
fn t5_is_extended_and_replaced() {
    t5_is_extended_and_replaced_run(Python::Skip);
}

/// `t5_is_extended_and_replaced`, its directory also loaded in transformers (tests/check_model.py).
#[test]
#[ignore = "needs python: torch, transformers (tests/check_model.py)"]
fn t5_is_extended_and_replaced_in_transformers() {
    t5_is_extended_and_replaced_run(Python::Check);
}

fn t5_is_extended_and_replaced_run(python: Python) {
    let sb = Sandbox::new();
    let src = fixture("tiny-t5");
    std::fs::write(sb.path("v.txt"), ENGLISH_WORDS).unwrap();
    sb.cmd()
        .arg("-m")
        .arg(&src)
        .args(["-v", "v.txt", "--emit-model", "ext", "-q", "--extend"])
        .assert()
        .success();
    let dir = sb.path("ext");
    let out = weights(&dir);
    let src_w = weights(&src);
    assert_eq!(out.len(), src_w.len());
    // 303 tokens, 308 rows: the new words take the padding rows first.
    assert_eq!(json(&dir.join("config.json"))["vocab_size"], 308);
    for name in ["shared.weight", "lm_head.weight"] {
        assert_eq!(out[name].1, vec![308, 16]);
        assert_eq!(rows(&out[name])[..303], rows(&src_w[name])[..303], "{name}");
    }
    assert_ne!(
        rows(&out["lm_head.weight"])[303],
        rows(&out["shared.weight"])[303],
        "the untied head is rebuilt from its own rows"
    );
    for copy in ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight"] {
        assert_eq!(out[copy], out["shared.weight"], "{copy}");
    }
    let routing = &json(&dir.join("transplant.json"))["emit_model"]["routing"];
    assert_eq!(routing["head"], "lm_head.weight");
    check_in_python(
        python,
        &src,
        &dir,
        serde_json::json!({"mode": "extend", "text": "The cat sat on the mat.", "alone": false,
            "roundtrip": true, "new_words": ["embedding", "transplant", "人工智能"], "seq2seq": true}),
    );

    std::fs::write(
        sb.path("r.txt"),
        "</s>\n<unk>\n\u{2581}The\n\u{2581}c\nat\n\u{2581}s\n\u{2581}on\n\u{2581}the\n\u{2581}ma\nt.\n<pad>\n<extra_id_1>\n\u{2581}\nembedding\n",
    )
    .unwrap();
    sb.cmd()
        .arg("-m")
        .arg(&src)
        .args(["-v", "r.txt", "--emit-model", "rep", "-q", "--keep-special"])
        .assert()
        .success();
    let dir = sb.path("rep");
    let cfg = json(&dir.join("config.json"));
    assert_eq!(cfg["decoder_start_token_id"], 10, "<pad> is line 11");
    assert_eq!(cfg["pad_token_id"], 10);
    assert_eq!(cfg["eos_token_id"], 0);
    assert_eq!(
        json(&dir.join("generation_config.json"))["decoder_start_token_id"],
        10
    );
    let v = json(&dir.join("tokenizer.json"));
    let pieces: Vec<&str> = v["model"]["vocab"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[0].as_str().unwrap())
        .collect();
    assert_eq!(
        pieces[14..],
        ["<extra_id_0>", "<extra_id_2>"],
        "kept specials appended"
    );
    check_in_python(
        python,
        &src,
        &dir,
        serde_json::json!({"mode": "replace", "text": "The cat sat on the mat.", "alone": false,
            "new_words": ["embedding"], "seq2seq": true}),
    );
}

/// GPT-2 (byte-level BPE, tied head, no pad token): `--extend`, replacement by a target
/// tokenizer.json, and the refusal of a plain list.
#[test]
fn gpt2_is_extended_and_replaced_by_a_tokenizer_json() {
    gpt2_is_extended_and_replaced_by_a_tokenizer_json_run(Python::Skip);
}

/// `gpt2_is_extended_and_replaced_by_a_tokenizer_json`, its directory also loaded in transformers (tests/check_model.py).
#[test]
#[ignore = "needs python: torch, transformers (tests/check_model.py)"]
fn gpt2_is_extended_and_replaced_by_a_tokenizer_json_in_transformers() {
    gpt2_is_extended_and_replaced_by_a_tokenizer_json_run(Python::Check);
}

fn gpt2_is_extended_and_replaced_by_a_tokenizer_json_run(python: Python) {
    let sb = Sandbox::new();
    let src = fixture("tiny-gpt2");
    std::fs::write(sb.path("v.txt"), ENGLISH_WORDS).unwrap();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(&src)
        .args(["-v", "v.txt", "--emit-model", "plain"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(
        err.contains("tokenizer.json: a BPE tokenizer cannot take a plain token list (a list has no merges); pass --extend"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(sb.files(), vec!["v.txt"]);

    sb.cmd()
        .arg("-m")
        .arg(&src)
        .args(["-v", "v.txt", "--emit-model", "ext", "-q", "--extend"])
        .assert()
        .success();
    let dir = sb.path("ext");
    let cfg = json(&dir.join("config.json"));
    assert_eq!(cfg["vocab_size"], 406);
    assert!(cfg.get("pad_token_id").is_none_or(|v| v.is_null()));
    assert_eq!(cfg["eos_token_id"], 400);
    let out = weights(&dir);
    let src_w = weights(&src);
    assert_eq!(
        rows(&out["transformer.wte.weight"])[..401],
        rows(&src_w["transformer.wte.weight"])[..]
    );
    assert!(!out.contains_key("lm_head.weight"));
    let added = json(&dir.join("tokenizer.json"))["added_tokens"].clone();
    assert!(added
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["content"] == "人工智能" && a["id"] == 405 && a["special"] == false));
    check_in_python(
        python,
        &src,
        &dir,
        serde_json::json!({"mode": "extend", "text": "The cat sat on the mat.", "roundtrip": true,
            "new_words": ["embedding", "transplant", "人工智能"], "causal": true}),
    );

    let tj = reversed_tokenizer(&src);
    std::fs::write(sb.path("target.json"), serde_json::to_vec(&tj).unwrap()).unwrap();
    sb.cmd()
        .arg("-m")
        .arg(&src)
        .args(["-v", "target.json", "--emit-model", "rep", "-q"])
        .assert()
        .success();
    let dir = sb.path("rep");
    assert_eq!(json(&dir.join("tokenizer.json")), tj);
    let out = weights(&dir);
    assert_eq!(
        rows(&out["transformer.wte.weight"])[0],
        rows(&src_w["transformer.wte.weight"])[399]
    );
    check_in_python(
        python,
        &src,
        &dir,
        serde_json::json!({"mode": "replace", "text": "The cat sat on the mat.", "causal": true}),
    );
}

/// A tiny BERT-named model directory made here (8 tokens, dim 4), for refusals.
fn tiny_model(dir: &Path, extra_tensor: bool) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("vocab.txt"),
        "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nb\nc\n",
    )
    .unwrap();
    let data: Vec<u8> = (0..32u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let mut tensors = vec![(
        "bert.embeddings.word_embeddings.weight".to_string(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![8, 4], &data).unwrap(),
    )];
    // Not equal to the embedding (a copy of it would be rebuilt with it).
    let other: Vec<u8> = data.iter().rev().copied().collect();
    if extra_tensor {
        tensors.push((
            "bert.extra.table".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![8, 4], &other)
                .unwrap(),
        ));
    }
    safetensors::serialize_to_file(tensors, None, &dir.join("model.safetensors")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": 8, "pad_token_id": 0}"#,
    )
    .unwrap();
}

/// Every refusal of `--emit-model` is exit 1, one line naming what is wrong, and no DIR.
#[test]
fn emit_model_refusals_are_one_line_and_leave_nothing() {
    type Edit = fn(&Path);
    let cases: Vec<(&str, bool, Edit, &[&str], &str)> = vec![
        (
            "no-config",
            false,
            |d| std::fs::remove_file(d.join("config.json")).unwrap(),
            &[],
            "--emit-model needs the model's config.json, and",
        ),
        (
            "bad-id",
            false,
            |d| {
                std::fs::write(
                    d.join("config.json"),
                    r#"{"model_type": "bert", "vocab_size": 8, "bos_token_id": 99}"#,
                )
                .unwrap()
            },
            &[],
            "config.json: bos_token_id 99 names no token of the source vocabulary",
        ),
        (
            "no-cls",
            false,
            |d| {
                std::fs::write(
                    d.join("vocab.txt"),
                    "[PAD]\n[UNK]\n[XLS]\n[SEP]\n[MASK]\na\nb\nc\n",
                )
                .unwrap()
            },
            &[],
            "vocab.txt: a vocab.txt without [CLS] and [SEP]: not a BERT vocabulary; --emit-model needs a tokenizer.json for it",
        ),
        (
            "extra-tensor",
            true,
            |_| {},
            &[],
            "1 tensor(s) have one row per source token but are not an embedding, output head or per-token bias this tool knows how to rebuild: `bert.extra.table` [8, 4]; refused rather than copied at the old size",
        ),
        (
            "word-level",
            false,
            |d| {
                let tj = serde_json::json!({"version": "1.0", "added_tokens": [],
                    "model": {"type": "WordLevel", "unk_token": "[UNK]", "vocab": {"[PAD]": 0, "[UNK]": 1,
                    "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "a": 5, "b": 6, "c": 7}}});
                std::fs::write(d.join("tokenizer.json"), tj.to_string()).unwrap();
            },
            &[],
            "tokenizer.json: tokenizer model type WordLevel is not supported for --emit-model without --extend",
        ),
    ];
    for (name, extra, edit, args, want) in cases {
        let sb = Sandbox::new();
        let src = sb.path("src");
        tiny_model(&src, extra);
        edit(&src);
        std::fs::write(
            sb.path("v.txt"),
            "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nb\nab\n",
        )
        .unwrap();
        let a = sb
            .cmd()
            .args(["-m", "src", "-v", "v.txt", "--emit-model", "out"])
            .args(args)
            .assert()
            .code(1);
        let err = stderr_of(&a);
        assert!(err.contains(want), "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err}");
        assert_eq!(
            sb.files(),
            vec!["src", "v.txt"],
            "{name}: a refusal leaves nothing"
        );
    }
}

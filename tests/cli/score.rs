//! `score` (issue 11): held-out quality of every init method, and `--init compose-fit`.

use crate::common::*;

const DIM: usize = 16;

/// A WordPiece model (vocab.txt, no tokenizer.json) of 12 letters, their `##` forms and every
/// 3-letter word of strictly increasing letters (220). Held out, a word splits into its three
/// letters (no word is a prefix of another). Each word's row is `distort` applied to the mean of
/// its letters' rows; `##x` has x's row.
fn synthetic_model(dir: &Path, distort: impl Fn(&[f32]) -> Vec<f32>) {
    synthetic_model_of(dir, 12, distort)
}

/// [`synthetic_model`] with `n` letters (C(n, 3) words).
fn synthetic_model_of(dir: &Path, n: usize, distort: impl Fn(&[f32]) -> Vec<f32>) {
    std::fs::create_dir_all(dir).unwrap();
    let letters: Vec<char> = "abcdefghijklmnopqrstuvwxyz".chars().take(n).collect();
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut rng = Lcg(7);
    let mut rows: Vec<Vec<f32>> = (0..5)
        .map(|_| (0..DIM).map(|_| rng.next()).collect())
        .collect();
    let letter_rows: Vec<Vec<f32>> = letters
        .iter()
        .map(|_| (0..DIM).map(|_| rng.next()).collect())
        .collect();
    for (c, r) in letters.iter().zip(&letter_rows) {
        vocab.push(c.to_string());
        rows.push(r.clone());
    }
    for (c, r) in letters.iter().zip(&letter_rows) {
        vocab.push(format!("##{c}"));
        rows.push(r.clone());
    }
    for i in 0..n {
        for j in i + 1..n {
            for k in j + 1..n {
                vocab.push([letters[i], letters[j], letters[k]].iter().collect());
                let mean: Vec<f32> = (0..DIM)
                    .map(|c| (letter_rows[i][c] + letter_rows[j][c] + letter_rows[k][c]) / 3.0)
                    .collect();
                rows.push(distort(&mean));
            }
        }
    }
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"model_type":"bert","hidden_size":{DIM},"initializer_range":0.02}}"#),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"do_lower_case":true}"#,
    )
    .unwrap();
    let data: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![rows.len(), DIM], &data)
            .unwrap();
    safetensors::serialize_to_file(
        [("embeddings.word_embeddings.weight", view)],
        None,
        &dir.join("model.safetensors"),
    )
    .unwrap();
}

/// A fixed linear distortion: y = A x + b with A = I + G (G seeded, entries in [-0.8, 0.8)).
fn distortion() -> impl Fn(&[f32]) -> Vec<f32> {
    let mut rng = Lcg(99);
    let a: Vec<f32> = (0..DIM * DIM)
        .map(|k| if k % (DIM + 1) == 0 { 1.0 } else { 0.0 } + 0.8 * rng.next())
        .collect();
    let b: Vec<f32> = (0..DIM).map(|_| 0.5 * rng.next()).collect();
    move |x: &[f32]| {
        (0..DIM)
            .map(|j| (0..DIM).map(|i| a[j * DIM + i] * x[i]).sum::<f32>() + b[j])
            .collect()
    }
}

fn score_json(sb: &Sandbox, model: &str, extra: &[&str]) -> serde_json::Value {
    let a = sb
        .cmd()
        .args(["score", "-m", model, "--sample", "40", "--json"])
        .args(extra)
        .assert()
        .success();
    serde_json::from_str(&stdout_of(&a)).unwrap()
}

#[test]
fn composition_scores_one_when_words_are_the_mean_of_their_letters() {
    let sb = Sandbox::new();
    synthetic_model(&sb.path("m"), |x| x.to_vec());
    let v = score_json(&sb, "m", &[]);
    assert_eq!(v["scored"], 40);
    let c = method(&v, "compose");
    assert!(c["mean_cosine"].as_f64().unwrap() > 0.99999, "{c}");
    assert_eq!(c["top1"], 1.0);
    assert_eq!(c["median_rank"], 1.0);
    assert!((c["norm_ratio"].as_f64().unwrap() - 1.0).abs() < 1e-4);
    // Nothing to learn: the fit keeps composition as it is.
    let f = method(&v, "compose-fit");
    assert!(f["mean_cosine"].as_f64().unwrap() > 0.999, "{f}");
    for other in ["mean", "random", "zeros"] {
        let o = method(&v, other);
        assert!(o["mean_cosine"].as_f64().unwrap() < 0.9, "{o}");
        assert!(o["top1"].as_f64().unwrap() < 0.5, "{o}");
    }
    // Same seed, same numbers; another seed, another sample.
    let again = score_json(&sb, "m", &[]);
    assert_eq!(v["scores"], again["scores"]);
}

#[test]
fn the_fitted_map_beats_the_mean_under_a_linear_distortion() {
    let sb = Sandbox::new();
    synthetic_model(&sb.path("m"), distortion());
    let v = score_json(&sb, "m", &[]);
    let plain = method(&v, "compose");
    let fitted = method(&v, "compose-fit");
    let (p, f) = (
        plain["mean_cosine"].as_f64().unwrap(),
        fitted["mean_cosine"].as_f64().unwrap(),
    );
    assert!(p < 0.95, "{plain}");
    assert!(f > 0.99, "{fitted}");
    assert!(fitted["top1"].as_f64().unwrap() > plain["top1"].as_f64().unwrap());
    assert_eq!(v["compose_fit"]["identity"], false);
    // The held-out tokens were never fitted on: fit set + held out <= candidates.
    let fit_size = v["compose_fit"]["fit_size"].as_u64().unwrap();
    assert!(fit_size + v["held_out"].as_u64().unwrap() <= v["candidates"].as_u64().unwrap());
}

#[test]
fn score_prints_a_table_and_prefers_target_tokens() {
    let sb = Sandbox::new();
    synthetic_model(&sb.path("m"), |x| x.to_vec());
    std::fs::write(sb.path("v.txt"), "abc\nabd\nxyz\n").unwrap();
    let a = sb
        .cmd()
        .args(["score", "-m", "m", "--sample", "5", "-v", "v.txt"])
        .assert()
        .success();
    let err = stderr_of(&a);
    assert!(err.contains("5 held-out tokens scored"), "{err}");
    assert!(err.contains("2 in the target vocabulary"), "{err}");
    for m in ["compose ", "compose-fit", "mean", "random", "zeros"] {
        assert!(err.contains(m), "{err}");
    }
    assert!(stdout_of(&a).is_empty());
    // -q, as the other commands take it in scripts: no table, and --json still prints.
    let q = sb
        .cmd()
        .args(["score", "-m", "m", "--sample", "5", "-q", "--json"])
        .assert()
        .success();
    assert!(!stderr_of(&q).contains("held-out tokens scored"));
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&q)).unwrap();
    assert_eq!(v["scored"], 5);
}

#[test]
fn score_runs_on_every_fixture_family() {
    let sb = Sandbox::new();
    // Every fixture model: WordPiece (safetensors and legacy .bin), Unigram (XLM-R, T5),
    // byte-level BPE (Qwen2, GPT-2, BART), LLaMA.
    let mut models: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.json").is_file())
        .collect();
    models.sort();
    assert!(models.len() >= 10, "{models:?}");
    for m in &models {
        let v = score_json(&sb, m.to_str().unwrap(), &[]);
        assert!(v["scored"].as_u64().unwrap() > 0, "{}: {v}", m.display());
        assert_eq!(method(&v, "zeros")["top10"], 0.0);
    }
}

#[test]
fn score_errors() {
    let sb = Sandbox::new();
    synthetic_model(&sb.path("m"), |x| x.to_vec());
    let a = sb
        .cmd()
        .args(["score", "-m", "m", "--sample", "0"])
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("--sample must be at least 1"));
    // Letters only: nothing splits into pieces.
    std::fs::create_dir_all(sb.path("letters")).unwrap();
    std::fs::write(sb.path("letters/vocab.txt"), "[UNK]\na\nb\n").unwrap();
    write_tiny_st(
        &sb.path("letters/model.safetensors"),
        "embeddings.word_embeddings.weight",
        [3, 4],
    );
    let a = sb.cmd().args(["score", "-m", "letters"]).assert().code(1);
    let err = stderr_of(&a);
    assert!(
        err.contains("letters: no source token splits into 2 or more pieces"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn transplant_compose_fit_applies_the_map_and_reports_its_score() {
    let sb = Sandbox::new();
    let distort = distortion();
    synthetic_model(&sb.path("m"), distortion());
    // `lkj` is no source token: composed from l, ##k, ##j; its "true" row follows the same law.
    std::fs::write(sb.path("v.txt"), "abc\nlkj\n").unwrap();
    let run = |init: &str, out: &str| {
        sb.cmd()
            .args(["-m", "m", "-v", "v.txt", "-o", out, "--init", init, "-q"])
            .args(["--report", &format!("{out}.json")])
            .assert()
            .success();
        let st = read_st(&sb.path(out));
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(sb.path(&format!("{out}.json"))).unwrap(),
        )
        .unwrap();
        (st, report)
    };
    let (st, report) = run("compose-fit", "fit.safetensors");
    let (plain_st, plain_report) = run("compose", "plain.safetensors");
    let (_, rows, _) = source_rows(&sb.path("m"), "embeddings.word_embeddings.weight");
    let letter = |c: usize| rows[(5 + c) * DIM..(6 + c) * DIM].to_vec();
    let (l, k, j) = (letter(11), letter(10), letter(9));
    let mean: Vec<f32> = (0..DIM).map(|i| (l[i] + k[i] + j[i]) / 3.0).collect();
    let truth = distort(&mean);
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (n(a) * n(b))
    };
    let fitted = out_row(&st, 1);
    let plain = out_row(&plain_st, 1);
    assert!(cos(&fitted, &truth) > 0.99, "{}", cos(&fitted, &truth));
    assert!(cos(&plain, &truth) < cos(&fitted, &truth) - 0.02);
    // Copied rows stay bit for bit.
    assert_eq!(out_row(&st, 0), out_row(&plain_st, 0));
    assert_eq!(st.meta["init"], "compose-fit");
    assert_eq!(st.meta["compose_fit_identity"], "false");
    assert!(st.meta["compose_fit_size"].parse::<usize>().unwrap() >= 100);
    assert!(st.meta.contains_key("compose_fit_lambda"));
    assert!(!plain_st.meta.contains_key("compose_fit_lambda"));
    // Each report scores its own method on held-out tokens.
    assert_eq!(report["score"]["score"]["method"], "compose-fit");
    assert_eq!(plain_report["score"]["score"]["method"], "compose");
    assert!(
        report["score"]["score"]["mean_cosine"].as_f64().unwrap()
            > plain_report["score"]["score"]["mean_cosine"]
                .as_f64()
                .unwrap()
    );
    assert_eq!(report["summary"]["compose_fit"]["identity"], false);
    // Deterministic.
    run("compose-fit", "again.safetensors");
    assert_eq!(
        std::fs::read(sb.path("fit.safetensors")).unwrap(),
        std::fs::read(sb.path("again.safetensors")).unwrap()
    );
}

/// A static-vector text file (with a `count dim` header) whose vectors are the synthetic model's
/// own rows for its words, plus `zzz` placed exactly on `abd`.
fn static_file(sb: &Sandbox) -> (HashMap<String, usize>, Vec<f32>) {
    let (ids, rows, dim) = source_rows(&sb.path("m"), "embeddings.word_embeddings.weight");
    let mut words: Vec<(&String, &usize)> = ids.iter().filter(|(w, _)| w.len() == 3).collect();
    words.sort_by_key(|(_, &i)| i);
    let line = |w: &str, i: usize| {
        let v: Vec<String> = rows[i * dim..(i + 1) * dim]
            .iter()
            .map(|x| format!("{x:e}"))
            .collect();
        format!("{w} {}\n", v.join(" "))
    };
    let mut text = format!("{} {dim}\n", words.len() + 1);
    for (w, &i) in &words {
        text.push_str(&line(w, i));
    }
    text.push_str(&line("zzz", ids["abd"]));
    std::fs::write(sb.path("static.vec"), text).unwrap();
    (ids, rows)
}

#[test]
fn aux_vectors_guide_rows_and_name_their_anchors() {
    let sb = Sandbox::new();
    synthetic_model(&sb.path("m"), |x| x.to_vec());
    let (ids, rows) = static_file(&sb);
    std::fs::write(sb.path("v.txt"), "abc\nzzz\nlkj\n").unwrap();
    sb.cmd()
        .args(["-m", "m", "-v", "v.txt", "-o", "out.safetensors", "-q"])
        .args(["--aux-vectors", "static.vec", "--report", "r.json"])
        .assert()
        .success();
    let st = read_st(&sb.path("out.safetensors"));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.path("r.json")).unwrap()).unwrap();
    assert_eq!(r["summary"]["counts"]["guided"], 1);
    assert_eq!(r["summary"]["counts"]["composed"], 1);
    let zzz = &r["rows"][0];
    assert_eq!(zzz["token"], "zzz");
    assert_eq!(zzz["method"], "guided");
    let first = zzz["pieces"][0].as_str().unwrap();
    assert!(first.starts_with("abd:0.4"), "{zzz}");
    assert_eq!(zzz["pieces"].as_array().unwrap().len(), 10);
    let abd = &rows[ids["abd"] * DIM..(ids["abd"] + 1) * DIM];
    let got = out_row(&st, 1);
    let cos = got.iter().zip(abd).map(|(a, b)| a * b).sum::<f32>()
        / (got.iter().map(|a| a * a).sum::<f32>().sqrt()
            * abd.iter().map(|a| a * a).sum::<f32>().sqrt());
    assert!(cos > 0.9, "{cos}");
    assert!(st.meta["aux_vectors"].ends_with("static.vec"));
    // score: the guide method, held-out tokens never their own anchors.
    let v = score_json(&sb, "m", &["--aux-vectors", "static.vec"]);
    let g = method(&v, "guide");
    assert_eq!(v["guide"]["guided"], 40);
    assert!(g["median_rank"].as_f64().unwrap() > 1.0, "{g}");
    assert!(g["mean_cosine"].as_f64().unwrap() > 0.3, "{g}");
}

#[test]
fn broken_aux_vectors_are_one_line_errors_and_leave_nothing() {
    let sb = Sandbox::new();
    synthetic_model(&sb.path("m"), |x| x.to_vec());
    std::fs::write(sb.path("v.txt"), "zzz\n").unwrap();
    for (bytes, msg) in [
        (
            &b"abc 1 2 3\nabd 1 2\n"[..],
            "bad.vec line 2: 2 values, expected 3",
        ),
        (
            &b"abc 1 2 3\nzzz 1 nan 3\n"[..],
            "bad.vec line 2: `nan` is not a finite number",
        ),
        (
            &b"5 3\nabc 1 2 3\n"[..],
            "bad.vec: the header (line 1) says 5 vectors but the file has 1",
        ),
    ] {
        std::fs::write(sb.path("bad.vec"), bytes).unwrap();
        let a = sb
            .cmd()
            .args(["-m", "m", "-v", "v.txt", "-o", "out.safetensors"])
            .args(["--aux-vectors", "bad.vec"])
            .assert()
            .code(1);
        let err = stderr_of(&a);
        assert!(err.contains(msg), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!sb.path("out.safetensors").exists());
    }
}

/// Static vectors written by numpy (`np.save` in C and Fortran order, `np.savetxt` text) and by
/// hand (word2vec text with full-precision values) guide the same rows to the same bytes.
#[test]
#[ignore = "needs python: numpy"]
fn numpy_written_vectors_read_the_same_in_every_format() {
    let python = python("numpy");
    let sb = Sandbox::new();
    synthetic_model(&sb.path("m"), |x| x.to_vec());
    static_file(&sb);
    // The same vectors through numpy, in three layouts.
    let script = r#"
import sys, numpy as np
words, rows = [], []
for i, line in enumerate(open("static.vec", encoding="utf-8")):
    if i == 0:
        continue
    w, *v = line.split()
    words.append(w)
    rows.append([np.float32(x) for x in v])
m = np.array(rows, dtype=np.float32)
np.save("c.npy", m)
np.save("f.npy", np.asfortranarray(m))
open("c.txt", "w").write("\n".join(words) + "\n")
open("f.txt", "w").write("\n".join(words) + "\n")
with open("plain.txt", "w") as f:
    for w, r in zip(words, m):
        f.write(w + " " + " ".join(repr(float(x)) for x in r) + "\n")
"#;
    let out = std::process::Command::new(&python)
        .current_dir(sb.dir.path())
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(sb.path("v.txt"), "zzz\n").unwrap();
    let mut outputs = Vec::new();
    for file in ["static.vec", "c.npy", "f.npy", "plain.txt"] {
        let o = format!("{file}.safetensors");
        sb.cmd()
            .args([
                "-m",
                "m",
                "-v",
                "v.txt",
                "-o",
                &o,
                "-q",
                "--aux-vectors",
                file,
            ])
            .args(["--report", &format!("{file}.json")])
            .assert()
            .success();
        let st = read_st(&sb.path(&o));
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(sb.path(&format!("{file}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(r["rows"][0]["method"], "guided", "{file}");
        outputs.push((file, out_row(&st, 0), r["rows"][0]["pieces"].clone()));
    }
    for (file, row, pieces) in &outputs[1..] {
        assert_eq!(row, &outputs[0].1, "{file}");
        assert_eq!(pieces, &outputs[0].2, "{file}");
    }
}

/// The rows `score` evaluates are the rows a transplant writes: for every method, score's rows
/// of its held-out tokens (`--save-rows`) are byte-identical to what `embed-transplant` writes
/// for those tokens as the target vocabulary, from the model with every held-out token removed
/// (its vocab.txt lines and embedding rows deleted, so ids are renumbered: only the rows agree).
#[test]
fn score_rows_are_transplant_rows() {
    let sb = Sandbox::new();
    // 364 words, each row a fixed distortion of its letters' mean: the fitted map wins here, so
    // compose-fit and auto apply one.
    synthetic_model_of(&sb.path("m"), 14, distortion());
    let vocab = lines(&sb.path("m/vocab.txt"));
    let mut rng = Lcg(5);
    let words: Vec<&String> = vocab.iter().filter(|w| w.len() == 3).collect();
    let mut vec_file = format!("{} 6\n", words.len());
    for w in &words {
        let v: Vec<String> = (0..6).map(|_| rng.next().to_string()).collect();
        vec_file += &format!("{w} {}\n", v.join(" "));
    }
    std::fs::write(sb.path("static.vec"), vec_file).unwrap();
    let a = sb
        .cmd()
        .args([
            "score", "-m", "m", "--sample", "40", "--seed", "3", "--json",
        ])
        .args(["--aux-vectors", "static.vec", "--guide-k", "4"])
        .args(["--save-rows", "rows.safetensors"])
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert_eq!(report["auto"]["used"], "compose-fit", "{report}");
    let rows = read_st(&sb.path("rows.safetensors"));
    let held: Vec<usize> = serde_json::from_str(&rows.meta["held_out"]).unwrap();
    let tokens: Vec<String> = serde_json::from_str(&rows.meta["tokens"]).unwrap();
    assert_eq!(tokens.len(), 40);

    // The reduced model: the source without its held-out tokens.
    std::fs::create_dir(sb.path("r")).unwrap();
    for f in ["config.json", "tokenizer_config.json"] {
        std::fs::copy(sb.path("m").join(f), sb.path("r").join(f)).unwrap();
    }
    let keep: Vec<usize> = (0..vocab.len()).filter(|i| !held.contains(i)).collect();
    let kept: Vec<&str> = keep.iter().map(|&i| vocab[i].as_str()).collect();
    std::fs::write(sb.path("r/vocab.txt"), kept.join("\n") + "\n").unwrap();
    let src = read_st(&sb.path("m/model.safetensors"));
    let (_, _, data) = &src.tensors["embeddings.word_embeddings.weight"];
    let w = DIM * 4;
    let reduced: Vec<u8> = keep
        .iter()
        .flat_map(|&i| data[i * w..(i + 1) * w].to_vec())
        .collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![keep.len(), DIM],
        &reduced,
    )
    .unwrap();
    safetensors::serialize_to_file(
        [("embeddings.word_embeddings.weight", view)],
        None,
        &sb.path("r/model.safetensors"),
    )
    .unwrap();
    std::fs::write(sb.path("held.txt"), tokens.join("\n") + "\n").unwrap();

    let guide = ["--init", "compose", "--aux-vectors", "static.vec"];
    let cases: [(&str, Vec<&str>); 9] = [
        ("auto", vec![]),
        ("compose", vec!["--init", "compose"]),
        ("compose-length", vec!["--init", "compose-length"]),
        ("compose-fit", vec!["--init", "compose-fit"]),
        ("mean", vec!["--init", "mean"]),
        ("random", vec!["--init", "random"]),
        ("zeros", vec!["--init", "zeros"]),
        ("guide", [&guide[..], &["--guide", "softmax"]].concat()),
        (
            "guide-omp",
            [&guide[..], &["--guide", "omp", "--guide-k", "4"]].concat(),
        ),
    ];
    let names: Vec<&str> = report["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(names, cases.iter().map(|c| c.0).collect::<Vec<_>>());
    for (method, args) in &cases {
        let out = format!("{method}.safetensors");
        sb.cmd()
            .args(["-m", "r", "-v", "held.txt", "--seed", "3", "-o", &out, "-q"])
            .args(args)
            .assert()
            .success();
        let st = read_st(&sb.path(&out));
        let written = &st.tensors["weight"].2;
        let scored = &rows.tensors[*method].2;
        assert_eq!(written.len(), scored.len(), "{method}");
        let differ =
            (0..tokens.len()).find(|&i| written[i * w..(i + 1) * w] != scored[i * w..(i + 1) * w]);
        assert_eq!(
            differ,
            None,
            "{method}: first row that differs (token {:?})",
            differ.map(|i| &tokens[i])
        );
    }
}

/// `--save-rows` is an output like any other: never an input of the run, and an existing file is
/// replaced only with `--force`.
#[test]
fn save_rows_never_overwrites_an_input_nor_an_existing_file() {
    let sb = Sandbox::new();
    synthetic_model(&sb.path("m"), |m| m.to_vec());
    let weights = sb.path("m/model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    let a = sb
        .cmd()
        .args(["score", "-m", "m", "--sample", "10", "-q"])
        .args(["--save-rows", "m/model.safetensors", "--force"])
        .assert()
        .code(1);
    assert!(
        stderr_of(&a).contains("model.safetensors"),
        "{}",
        stderr_of(&a)
    );
    assert_eq!(std::fs::read(&weights).unwrap(), before);
    std::fs::write(sb.path("rows.safetensors"), b"mine").unwrap();
    sb.cmd()
        .args(["score", "-m", "m", "--sample", "10", "-q"])
        .args(["--save-rows", "rows.safetensors"])
        .assert()
        .code(1);
    assert_eq!(std::fs::read(sb.path("rows.safetensors")).unwrap(), b"mine");
    sb.cmd()
        .args(["score", "-m", "m", "--sample", "10", "-q"])
        .args(["--save-rows", "rows.safetensors", "--force"])
        .assert()
        .success();
    let rows = read_st(&sb.path("rows.safetensors"));
    assert_eq!(rows.tensors["truth"].1, vec![10, DIM]);
    assert_eq!(rows.tensors["compose"].1, vec![10, DIM]);
}

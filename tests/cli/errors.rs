//! Bad input of every kind: one-line errors, exit code 1, nothing left behind.

use crate::common::*;

#[test]
fn vocab_errors_name_the_line() {
    assert_eq!(
        vocab_error(b"a\n\nb\n"),
        "error: v.txt line 2: empty line (every line must hold a token)\n"
    );
    assert!(vocab_error(b"a\nb\nc\xff\n").starts_with("error: v.txt line 3: invalid UTF-8"));
    assert!(vocab_error(b"a\nb\0\n").starts_with("error: v.txt line 2: contains a NUL byte"));
    assert_eq!(vocab_error(b""), "error: v.txt: the vocabulary is empty\n");
    assert!(vocab_error(b"\n\n\n").starts_with("error: v.txt line 1: empty line"));
    let mut long = b"a\n".to_vec();
    long.extend(std::iter::repeat_n(b'x', 1 << 20));
    assert!(vocab_error(&long).starts_with("error: v.txt line 2: line is longer than 1024 bytes"));
}

#[test]
fn missing_files_and_bad_model_paths() {
    let sb = Sandbox::new();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(bert_dir())
        .args(["-v", "nope.txt"])
        .assert()
        .code(1);
    assert!(
        stderr_of(&a).starts_with("error: nope.txt: No such file"),
        "{}",
        stderr_of(&a)
    );
    let a = sb
        .cmd()
        .args(["-m", "./no/such/dir", "-v"])
        .arg(target_vocab())
        .assert()
        .code(1);
    assert!(stderr_of(&a).contains("./no/such/dir: no such file or directory, and not a hub id"));
    let empty = sb.path("empty-model");
    std::fs::create_dir(&empty).unwrap();
    let a = sb.transplant(&empty).assert().code(1);
    assert!(
        stderr_of(&a).contains("no weights found"),
        "{}",
        stderr_of(&a)
    );
    assert_eq!(sb.files(), vec!["empty-model"]);
}

#[test]
fn output_path_problems() {
    let sb = Sandbox::new();
    let run = |out: &Path| sb.transplant(bert_dir()).arg("-o").arg(out).assert();
    std::fs::write(sb.path("exists.safetensors"), b"keep me").unwrap();
    let a = run(&sb.path("exists.safetensors")).code(1);
    assert!(stderr_of(&a).contains("exists; pass --force to replace it"));
    assert_eq!(
        std::fs::read(sb.path("exists.safetensors")).unwrap(),
        b"keep me"
    );
    let a = run(&sb.path("missing-dir/out.safetensors")).code(1);
    assert!(
        stderr_of(&a).contains("the output directory does not exist"),
        "{}",
        stderr_of(&a)
    );
    std::fs::create_dir(sb.path("adir")).unwrap();
    let a = run(&sb.path("adir")).code(1);
    assert!(stderr_of(&a).contains("--output names a directory"));
    sb.transplant(bert_dir())
        .args(["-o", "exists.safetensors", "--force", "-q"])
        .assert()
        .success();
    assert_ne!(
        std::fs::read(sb.path("exists.safetensors")).unwrap(),
        b"keep me"
    );
}

#[test]
fn embedding_with_fewer_rows_than_the_vocab() {
    let sb = Sandbox::new();
    let dir = sb.path("small");
    std::fs::create_dir(&dir).unwrap();
    write_tiny_st(
        &dir.join("model.safetensors"),
        "embeddings.word_embeddings.weight",
        [3, 4],
    );
    std::fs::write(dir.join("vocab.txt"), "a\nb\nc\nd\n").unwrap();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(&dir)
        .args(["-v", "-", "-o", "x.safetensors"])
        .write_stdin("a\n")
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(
        err.contains("tensor `embeddings.word_embeddings.weight`")
            && err.contains("has 3 rows, fewer than the 4 tokens"),
        "{err}"
    );
    // More rows than the vocabulary (padding) is fine.
    write_tiny_st(
        &dir.join("model.safetensors"),
        "embeddings.word_embeddings.weight",
        [8, 4],
    );
    sb.cmd()
        .arg("-m")
        .arg(&dir)
        .args(["-v", "-", "-o", "x.safetensors", "-q"])
        .write_stdin("a\nzz\n")
        .assert()
        .success();
}

#[test]
fn nan_rows_warn_or_fail_with_strict() {
    let sb = Sandbox::new();
    let dir = sb.path("nan");
    std::fs::create_dir(&dir).unwrap();
    let mut vals = [0.5f32; 3 * 2];
    vals[3] = f32::NAN;
    let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3, 2], &data).unwrap();
    safetensors::serialize_to_file([("wte.weight", view)], None, &dir.join("model.safetensors"))
        .unwrap();
    std::fs::write(dir.join("vocab.txt"), "a\nb\nc\n").unwrap();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(&dir)
        .args(["-v", "-", "-o", "x.safetensors", "--json"])
        .write_stdin("a\nb\n")
        .assert()
        .success();
    assert!(stderr_of(&a).contains("1 row(s) hold NaN or infinity (first: row 1)"));
    let json: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert_eq!(json["nonfinite_source_rows"], 1);
    let a = sb
        .cmd()
        .arg("-m")
        .arg(&dir)
        .args(["-v", "-", "-o", "y.safetensors", "--strict"])
        .write_stdin("a\n")
        .assert()
        .code(1);
    assert!(stderr_of(&a).contains("NaN"));
    assert!(!sb.path("y.safetensors").exists());
}

#[test]
fn broken_checkpoints_are_one_line_errors() {
    let sb = Sandbox::new();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.safetensors", vec![], "the file is empty"),
        (
            "trunc.safetensors",
            {
                let mut b = std::fs::read(bert_dir().join("model.safetensors")).unwrap();
                b.truncate(b.len() / 2);
                b
            },
            "truncated",
        ),
        (
            "huge.safetensors",
            {
                let mut b = (1u64 << 63).to_le_bytes().to_vec();
                b.extend_from_slice(b"{}");
                b
            },
            "header length exceeds the file",
        ),
        (
            "notjson.safetensors",
            {
                let mut b = 8u64.to_le_bytes().to_vec();
                b.extend_from_slice(b"not json");
                b
            },
            "header is not valid",
        ),
        (
            "notzip.bin",
            b"hello world, not a checkpoint".to_vec(),
            "not a PyTorch checkpoint",
        ),
    ];
    for (name, bytes, want) in cases {
        std::fs::write(sb.path(name), &bytes).unwrap();
        let a = sb
            .transplant(name)
            .args(["--source-vocab"])
            .arg(bert_dir().join("vocab.txt"))
            .args(["-o", "out.safetensors"])
            .assert()
            .code(1);
        let err = stderr_of(&a);
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!sb.path("out.safetensors").exists());
    }
}

#[test]
fn usage_errors_exit_2() {
    let sb = Sandbox::new();
    sb.cmd().args(["-m", "x"]).assert().code(2);
    sb.cmd().args(["-v", "x"]).assert().code(2);
    sb.cmd()
        .args(["-m", "x", "-v", "y", "--init", "bogus"])
        .assert()
        .code(2);
    let a = sb
        .cmd()
        .args(["-m", "x", "-v", "y", "-o", "r.json", "--report", "r.json"])
        .assert()
        .code(2);
    assert!(stderr_of(&a).contains("same file"));
    let help = sb.cmd().arg("--help").assert().success();
    assert!(stdout_of(&help).contains("Exit codes"));
}

#[test]
fn hostile_pickles_are_refused_never_run() {
    let sb = Sandbox::new();
    let marker = sb.path("pwned");
    // pickle protocol 2: os.system("touch <marker>") as a REDUCE, then STOP.
    let cmd = format!("touch {}", marker.display());
    let mut pkl = b"\x80\x02cos\nsystem\nq\x00X".to_vec();
    pkl.extend_from_slice(&(cmd.len() as u32).to_le_bytes());
    pkl.extend_from_slice(cmd.as_bytes());
    pkl.extend_from_slice(b"\x85R.");
    type Entries<'a> = Vec<(&'a str, &'a [u8])>;
    let cases: Vec<(&str, Entries, &str)> = vec![
        (
            "system.bin",
            vec![("archive/data.pkl", &pkl[..])],
            "refers to `os.system`",
        ),
        (
            "nopkl.bin",
            vec![("archive/other", b"x")],
            "without data.pkl",
        ),
        (
            "badop.bin",
            vec![("archive/data.pkl", b"\x80\x02\xff.")],
            "unreadable pickle",
        ),
        (
            "notdict.bin",
            vec![("archive/data.pkl", b"\x80\x02K\x01.")],
            "does not hold a state dict",
        ),
    ];
    for (name, entries, want) in cases {
        write_zip_bin(&sb.path(name), &entries);
        let a = sb
            .transplant(name)
            .args(["--source-vocab"])
            .arg(bert_dir().join("vocab.txt"))
            .args(["-o", "out.safetensors"])
            .assert()
            .code(1);
        let err = stderr_of(&a);
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(!marker.exists());
    assert!(!sb.path("out.safetensors").exists());
}

#[test]
fn sharded_index_naming_a_missing_shard() {
    let sb = Sandbox::new();
    let dir = sb.path("sharded");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    std::fs::copy(
        fixtures().join("tiny-llama-sharded/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let a = sb
        .transplant(&dir)
        .args(["-o", "x.safetensors"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(
        err.contains("model-00001-of-00002.safetensors, which does not exist"),
        "{err}"
    );
}

#[test]
fn malformed_safetensors_headers() {
    let sb = Sandbox::new();
    let cases = [
        (
            "overlap.safetensors",
            r#"{"a.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"wte.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]}}"#,
            24,
            "overlap or leave gaps",
        ),
        (
            "outofrange.safetensors",
            r#"{"wte.weight":{"dtype":"F32","shape":[32,32],"data_offsets":[0,4096]}}"#,
            16,
            "truncated",
        ),
        (
            "dtype.safetensors",
            r#"{"wte.weight":{"dtype":"Q4","shape":[2,2],"data_offsets":[0,16]}}"#,
            16,
            "header is not valid",
        ),
        (
            "shape.safetensors",
            r#"{"wte.weight":{"dtype":"F32","shape":[3,2],"data_offsets":[0,16]}}"#,
            16,
            "shape disagrees with its byte length",
        ),
        (
            "int.safetensors",
            r#"{"wte.weight":{"dtype":"I64","shape":[2,2],"data_offsets":[0,32]}}"#,
            32,
            "is not a float type",
        ),
    ];
    std::fs::write(sb.path("vocab.txt"), "a\nb\n").unwrap();
    for (name, header, len, want) in cases {
        raw_st(&sb.path(name), header, &vec![0u8; len]);
        let a = sb
            .cmd()
            .args([
                "-m",
                name,
                "--source-vocab",
                "vocab.txt",
                "-v",
                "vocab.txt",
                "-o",
                "out.safetensors",
            ])
            .assert()
            .code(1);
        let err = stderr_of(&a);
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!sb.path("out.safetensors").exists());
    }
}

#[test]
fn unwritable_output_directory_even_for_root() {
    // /proc is not writable for anyone, root included: the temp file cannot be created there.
    let sb = Sandbox::new();
    let a = sb
        .transplant(bert_dir())
        .args(["-o", "/proc/embeddings.safetensors"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(err.starts_with("error: /proc"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn closed_stdout_is_not_an_error() {
    let sb = Sandbox::new();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("embed-transplant"))
        .current_dir(sb.dir.path())
        .env("HF_HOME", sb.hf_home())
        .args(["inspect", "--json", "-m"])
        .arg(bert_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close our end of the pipe before the child writes its JSON.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A vocabulary of a million lines (four times the largest real one, Gemma's 262,144) streams
/// through: one row per line, the two source tokens copied, every other row zero. (It was ten
/// million lines, 84-98 s of a debug build for the same checks; the row cap, 2^24, is tested in
/// src/vocab.rs without making the lines.)
#[test]
fn million_line_vocabulary() {
    const LINES: u32 = 1_000_000;
    let sb = Sandbox::new();
    let dir = sb.path("m");
    std::fs::create_dir(&dir).unwrap();
    // A 2-row, 1-dim model keeps the output small (1M x 1 f32 = 4 MB).
    raw_st(
        &dir.join("model.safetensors"),
        r#"{"wte.weight":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]}}"#,
        &[0, 0, 128, 63, 0, 0, 0, 64],
    );
    std::fs::write(dir.join("vocab.txt"), "w0\nw1\n").unwrap();
    let mut v = String::with_capacity(10 << 20);
    for i in 0..LINES {
        v.push('w');
        v.push_str(&i.to_string());
        v.push('\n');
    }
    std::fs::write(sb.path("big.txt"), v).unwrap();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(&dir)
        .args([
            "-v",
            "big.txt",
            "-o",
            "out.safetensors",
            "--init",
            "zeros",
            "--json",
            "-q",
        ])
        .assert()
        .success();
    let j: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert_eq!(j["rows"], LINES);
    assert_eq!(j["copied"], 2);
    let out = std::fs::read(sb.path("out.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&out).unwrap();
    let w = st.tensor("weight").unwrap();
    assert_eq!(w.shape(), &[LINES as usize, 1]);
    let rows = f32s(w.data());
    assert_eq!(&rows[..2], &[1.0, 2.0]);
    if let Some(i) = rows[2..].iter().position(|&x| x != 0.0) {
        panic!("row {} (w{}) is {}, not zero", i + 2, i + 2, rows[i + 2]);
    }
}

/// Every input a fuzzer once failed on (tests/fuzz_regressions/<target>/) is now read without a
/// panic, a hang or an outsized allocation: a clean error, or a result.
#[test]
fn fuzz_regressions_stay_fixed() {
    use embed_transplant::api::checkpoint::{self, FetchFile, PthFile, Weights};
    struct NoFetch;
    impl FetchFile for NoFetch {
        fn fetch(&self, name: &str) -> embed_transplant::Result<PathBuf> {
            Err(embed_transplant::Error::Hub(format!("no {name}")))
        }
        fn local(&self, _: &str) -> Option<PathBuf> {
            None
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let expected: HashMap<String, String> = std::fs::read_to_string(root.join("expected.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once('\t').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for target in std::fs::read_dir(&root).unwrap() {
        let target = target.unwrap().path();
        if !target.is_dir() {
            continue;
        }
        let kind = target.file_name().unwrap().to_str().unwrap().to_string();
        for input in std::fs::read_dir(&target).unwrap() {
            let input = input.unwrap().path();
            let key = format!("{kind}/{}", input.file_name().unwrap().to_string_lossy());
            let want = expected
                .get(&key)
                .unwrap_or_else(|| panic!("{key}: no line in expected.tsv"));
            let bytes = std::fs::read(&input).unwrap();
            n += 1;
            // The first error the reader gives, with the path it names.
            let (err, path): (Option<String>, PathBuf) = match kind.as_str() {
                "vocab" => (
                    embed_transplant::api::vocab::parse_target(&bytes, "fuzz")
                        .err()
                        .map(|e| e.to_string()),
                    PathBuf::from("fuzz"),
                ),
                "safetensors_header" => {
                    let p = dir.path().join("x.safetensors");
                    std::fs::write(&p, &bytes).unwrap();
                    let w = Weights::Safetensors(p.clone());
                    let err = match checkpoint::list_tensors(&w, &NoFetch) {
                        Err(e) => Some(e.to_string()),
                        Ok(list) => list
                            .iter()
                            .filter(|t| t.shape.as_ref().is_some_and(|s| s.len() == 2))
                            .find_map(|t| checkpoint::load_embedding(&w, &t.name, &NoFetch).err())
                            .map(|e| e.to_string()),
                    };
                    (err, p)
                }
                "pickle" => {
                    let p = dir.path().join("x.bin");
                    std::fs::write(&p, &bytes).unwrap();
                    let err = match PthFile::open(&p) {
                        Err(e) => Some(e.to_string()),
                        Ok(f) => f
                            .entries
                            .iter()
                            .find_map(|e| f.read(e).err())
                            .map(|e| e.to_string()),
                    };
                    (err, p)
                }
                other => panic!("unknown fuzz target directory {other}"),
            };
            let err = err.unwrap_or_else(|| panic!("{key}: accepted, expected an error"));
            assert_eq!(err, format!("{}: {want}", path.display()), "{key}");
        }
    }
    assert!(n > 0);
}

//! End-to-end tests of the `embed-transplant` binary: each test runs it in its own temp dir with a
//! cleaned environment (own HF_HOME, no token, no proxy), against the fixtures and a fake hub on
//! 127.0.0.1. Nothing here reaches the internet.

#[path = "common/fake_hub.rs"]
mod fake_hub;

use assert_cmd::Command;
use fake_hub::{FakeHub, Fault, RepoSpec, PROXY_ENV_VARS};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn bert_dir() -> PathBuf {
    fixtures().join("tiny-bert-chinese")
}

fn target_vocab() -> PathBuf {
    fixtures().join("target-vocab.txt")
}

/// A sandbox: temp working dir and HF_HOME, cleaned environment.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn hf_home(&self) -> PathBuf {
        self.path("hf-home")
    }

    fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("embed-transplant").unwrap();
        c.current_dir(self.dir.path());
        for v in [
            "HF_TOKEN",
            "HF_ENDPOINT",
            "HF_HUB_OFFLINE",
            "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE",
            "HF_TOKEN_PATH",
            "XDG_CACHE_HOME",
        ]
        .into_iter()
        .chain(PROXY_ENV_VARS)
        {
            c.env_remove(v);
        }
        c.env("HF_HOME", self.hf_home());
        c
    }

    /// A transplant of `model` onto the bundled target vocabulary; add the rest.
    fn transplant(&self, model: &Path) -> Command {
        let mut c = self.cmd();
        c.arg("-m").arg(model).arg("-v").arg(target_vocab());
        c
    }

    /// The files in the working dir (to check that failures leave nothing behind).
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "hf-home")
            .collect();
        v.sort();
        v
    }
}

/// A safetensors file read back: tensors as (dtype, shape, bytes) and the metadata.
struct St {
    tensors: HashMap<String, (String, Vec<usize>, Vec<u8>)>,
    meta: HashMap<String, String>,
}

fn read_st(path: &Path) -> St {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                (
                    format!("{:?}", t.dtype()),
                    t.shape().to_vec(),
                    t.data().to_vec(),
                ),
            )
        })
        .collect();
    St {
        tensors,
        meta: meta.metadata().clone().unwrap_or_default(),
    }
}

fn lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.strip_suffix('\n')
        .unwrap_or(&text)
        .split('\n')
        .map(String::from)
        .collect()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Checks that every target token the source vocab has got the source row, bit for bit.
fn assert_copied_rows(out: &Path, source_st: &Path, tensor: &str, vocab_txt: &Path) -> usize {
    let out = read_st(out);
    let src = read_st(source_st);
    let (_, oshape, odata) = &out.tensors["weight"];
    let (_, sshape, sdata) = &src.tensors[tensor];
    assert_eq!(oshape[1], sshape[1]);
    let dim = sshape[1] * 4;
    let ids: HashMap<String, usize> = lines(vocab_txt)
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i))
        .collect();
    let target = lines(&target_vocab());
    assert_eq!(oshape[0], target.len());
    let mut copied = 0;
    for (i, t) in target.iter().enumerate() {
        if let Some(&id) = ids.get(t) {
            assert_eq!(
                &odata[i * dim..(i + 1) * dim],
                &sdata[id * dim..(id + 1) * dim],
                "row {i} {t}"
            );
            copied += 1;
        }
    }
    copied
}

fn stderr_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

fn stdout_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

// ---------------------------------------------------------------- local models

#[test]
fn main_job_on_local_dir_copies_rows_exactly() {
    let sb = Sandbox::new();
    let a = sb
        .cmd()
        .args(["--model"])
        .arg(bert_dir())
        .arg("--vocab")
        .arg(target_vocab())
        .args(["-o", "emb.safetensors", "--init", "random", "--json"])
        .assert()
        .success();
    let out = sb.path("emb.safetensors");
    let copied = assert_copied_rows(
        &out,
        &bert_dir().join("model.safetensors"),
        "bert.embeddings.word_embeddings.weight",
        &bert_dir().join("vocab.txt"),
    );
    assert!(copied > 500, "{copied}");
    let st = read_st(&out);
    assert_eq!(st.meta["format"], "pt");
    assert_eq!(st.meta["copied"], copied.to_string());
    assert_eq!(
        st.meta["source_tensor"],
        "bert.embeddings.word_embeddings.weight"
    );
    assert_eq!(st.meta["seed"], "42");
    assert_eq!(st.meta["rows"], lines(&target_vocab()).len().to_string());
    let json: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert_eq!(json["copied"], copied);
    assert_eq!(json["sigma"].as_f64().unwrap() as f32, 0.02);
    assert!(stderr_of(&a).contains("wrote emb.safetensors"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o644, 0o644, "{mode:o}");
    }
}

#[test]
fn default_output_name_and_transplant_subcommand() {
    let sb = Sandbox::new();
    sb.cmd()
        .arg("transplant")
        .arg("-m")
        .arg(bert_dir())
        .arg("-v")
        .arg(target_vocab())
        .arg("-q")
        .assert()
        .success()
        .stderr("");
    assert!(sb.path("embeddings.safetensors").is_file());
}

/// Runs a transplant and returns the output tensor's bytes.
fn weight_of(
    sb: &Sandbox,
    model: &Path,
    extra: &[&str],
    out: &str,
) -> (String, Vec<usize>, Vec<u8>) {
    sb.transplant(model)
        .args(["-o", out, "-q"])
        .args(if extra.contains(&"--init") {
            &[][..]
        } else {
            &["--init", "random"][..]
        })
        .args(extra)
        .assert()
        .success();
    read_st(&sb.path(out)).tensors.remove("weight").unwrap()
}

#[test]
fn safetensors_zip_bin_and_legacy_bin_give_the_same_matrix() {
    let sb = Sandbox::new();
    let a = weight_of(&sb, &bert_dir(), &[], "a.safetensors");
    let b = weight_of(
        &sb,
        &bert_dir().join("pytorch_model.bin"),
        &[],
        "b.safetensors",
    );
    let c = weight_of(
        &sb,
        &fixtures().join("tiny-bert-chinese-legacy"),
        &[],
        "c.safetensors",
    );
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let sb = Sandbox::new();
    let run = |out: &str, seed: &str| {
        sb.transplant(&bert_dir())
            .args(["-o", out, "-q", "--init", "random", "--seed", seed])
            .assert()
            .success();
        std::fs::read(sb.path(out)).unwrap()
    };
    assert_eq!(run("a.safetensors", "1"), run("b.safetensors", "1"));
    assert_ne!(run("c.safetensors", "1"), run("d.safetensors", "2"));
}

#[test]
fn sharded_bf16_checkpoint_and_dtype_conversion() {
    let sb = Sandbox::new();
    let dir = fixtures().join("tiny-llama-sharded");
    let (dtype, shape, _) = weight_of(&sb, &dir, &[], "a.safetensors");
    assert_eq!(dtype, "BF16");
    assert_eq!(shape[1], 16);
    let (dtype, _, data) = weight_of(&sb, &dir, &["--dtype", "f32"], "b.safetensors");
    assert_eq!(dtype, "F32");
    assert!(f32s(&data).iter().all(|v| v.is_finite()));
    let (dtype, _, _) = weight_of(&sb, &bert_dir(), &["--dtype", "f16"], "c.safetensors");
    assert_eq!(dtype, "F16");
    let (dtype, _, _) = weight_of(&sb, &bert_dir(), &["--dtype", "bf16"], "d.safetensors");
    assert_eq!(dtype, "BF16");
}

#[test]
fn init_methods_zeros_and_mean() {
    let sb = Sandbox::new();
    let target = lines(&target_vocab());
    let oov = target.iter().position(|t| t == "人工智能").unwrap();
    let (_, shape, z) = weight_of(&sb, &bert_dir(), &["--init", "zeros"], "z.safetensors");
    let dim = shape[1] * 4;
    assert!(z[oov * dim..(oov + 1) * dim].iter().all(|&b| b == 0));
    let (_, _, m) = weight_of(&sb, &bert_dir(), &["--init", "mean"], "m.safetensors");
    let row = f32s(&m[oov * dim..(oov + 1) * dim]);
    // The mean of the source's rows, computed here independently.
    let src = read_st(&bert_dir().join("model.safetensors"));
    let (_, sshape, sdata) = &src.tensors["bert.embeddings.word_embeddings.weight"];
    let vals = f32s(sdata);
    for (c, got) in row.iter().enumerate() {
        let want: f64 = (0..sshape[0])
            .map(|r| vals[r * sshape[1] + c] as f64)
            .sum::<f64>()
            / sshape[0] as f64;
        assert!(
            (*got as f64 - want).abs() < 1e-6,
            "col {c}: {got} vs {want}"
        );
    }
}

#[test]
fn vocab_from_stdin_and_report_file() {
    let sb = Sandbox::new();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(bert_dir())
        .args([
            "-v",
            "-",
            "-o",
            "out.safetensors",
            "--report",
            "report.json",
            "--init",
            "zeros",
        ])
        .write_stdin("中\n国\n人工智能\n😀\r\n")
        .assert()
        .success();
    assert!(stderr_of(&a).contains("4 rows"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.path("report.json")).unwrap()).unwrap();
    assert_eq!(report["summary"]["rows"], 4);
    let rows = report["rows"].as_array().unwrap();
    let tokens: Vec<&str> = rows.iter().map(|r| r["token"].as_str().unwrap()).collect();
    assert!(tokens.contains(&"😀"), "{tokens:?}");
    assert!(!tokens.contains(&"中"));
    let counts = report["summary"]["counts"].as_object().unwrap();
    assert_eq!(counts.values().map(|v| v.as_u64().unwrap()).sum::<u64>(), 4);
}

#[test]
fn duplicate_lines_warn_with_count() {
    let sb = Sandbox::new();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(bert_dir())
        .args(["-v", "-", "-o", "out.safetensors"])
        .write_stdin("中\n国\n中\n中\n")
        .assert()
        .success();
    assert!(
        stderr_of(&a).contains("2 duplicate token line(s)"),
        "{}",
        stderr_of(&a)
    );
    assert_eq!(
        read_st(&sb.path("out.safetensors")).tensors["weight"].1[0],
        4
    );
}

// ---------------------------------------------------------------- the hub

fn hub_with_bert(hidden: &[&str]) -> FakeHub {
    let mut spec = RepoSpec::new("some-org/tiny-bert-chinese", bert_dir());
    for h in hidden {
        spec = spec.hide(h);
    }
    FakeHub::start(vec![spec])
}

#[test]
fn hub_download_then_offline_from_cache() {
    let sb = Sandbox::new();
    let hub = hub_with_bert(&[]);
    let a = sb
        .cmd()
        .env("HF_ENDPOINT", hub.endpoint())
        .args([
            "-m",
            "some-org/tiny-bert-chinese",
            "-o",
            "a.safetensors",
            "--json",
            "--init",
            "random",
        ])
        .arg("-v")
        .arg(target_vocab())
        .assert()
        .success();
    let reqs = hub.requests();
    let fetched: Vec<&str> = reqs.iter().filter_map(|r| r.rsplit('/').next()).collect();
    assert!(fetched.contains(&"model.safetensors"), "{reqs:?}");
    assert!(fetched.contains(&"config.json"), "{reqs:?}");
    assert!(
        !fetched.iter().any(|f| f.contains("pytorch_model")),
        "fetched more than needed: {reqs:?}"
    );
    let commit = hub.commit_of("some-org/tiny-bert-chinese");
    let json: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert_eq!(json["source"]["commit"], commit.as_str());
    let st = read_st(&sb.path("a.safetensors"));
    assert_eq!(st.meta["source_model"], "some-org/tiny-bert-chinese");
    assert_eq!(st.meta["source_revision"], "main");
    assert_eq!(st.meta["source_commit"], commit);
    // The cache has Python's layout.
    let repo = sb
        .hf_home()
        .join("hub")
        .join("models--some-org--tiny-bert-chinese");
    assert!(repo.join("refs/main").is_file());
    assert!(repo
        .join("snapshots")
        .join(&commit)
        .join("model.safetensors")
        .exists());
    drop(hub);

    // Offline: the hub is gone, the cache serves.
    sb.cmd()
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .args([
            "-m",
            "some-org/tiny-bert-chinese",
            "-o",
            "b.safetensors",
            "-q",
            "--init",
            "random",
        ])
        .arg("-v")
        .arg(target_vocab())
        .assert()
        .success();
    assert_eq!(
        std::fs::read(sb.path("a.safetensors")).unwrap(),
        std::fs::read(sb.path("b.safetensors")).unwrap()
    );
}

#[test]
fn offline_flag_with_empty_cache_says_so() {
    let sb = Sandbox::new();
    let a = sb
        .cmd()
        .args([
            "-m",
            "some-org/tiny-bert-chinese",
            "--offline",
            "-o",
            "x.safetensors",
        ])
        .arg("-v")
        .arg(target_vocab())
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(
        err.contains("offline") && err.contains("not in the cache"),
        "{err}"
    );
    assert!(
        err.contains("HF_HUB_CACHE") && err.contains("HF_HOME"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(sb.files().is_empty(), "{:?}", sb.files());
}

#[test]
fn hub_404_for_safetensors_falls_back_to_pytorch_bin() {
    let sb = Sandbox::new();
    let hub = hub_with_bert(&["model.safetensors"]);
    let a = sb
        .cmd()
        .env("HF_ENDPOINT", hub.endpoint())
        .args([
            "-m",
            "some-org/tiny-bert-chinese",
            "-o",
            "a.safetensors",
            "--json",
        ])
        .arg("-v")
        .arg(target_vocab())
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert_eq!(json["weights_format"], "pytorch");
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.ends_with("pytorch_model.bin")));
}

#[test]
fn hub_sharded_fetches_only_the_embedding_shard() {
    let sb = Sandbox::new();
    let hub = FakeHub::start(vec![RepoSpec::new(
        "org/tiny-llama",
        fixtures().join("tiny-llama-sharded"),
    )]);
    sb.cmd()
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["-m", "org/tiny-llama", "-o", "a.safetensors", "-q"])
        .arg("-v")
        .arg(target_vocab())
        .assert()
        .success();
    let reqs = hub.requests();
    assert!(
        reqs.iter()
            .any(|r| r.ends_with("model-00001-of-00002.safetensors")),
        "{reqs:?}"
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r.ends_with("model-00002-of-00002.safetensors")),
        "{reqs:?}"
    );
}

#[test]
fn legacy_hub_id_redirect_and_commit_revision() {
    let sb = Sandbox::new();
    let hub = FakeHub::start(vec![RepoSpec::new(
        "google-bert/bert-base-chinese",
        bert_dir(),
    )])
    .with_redirect("bert-base-chinese", "google-bert/bert-base-chinese");
    sb.cmd()
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["-m", "bert-base-chinese", "-o", "a.safetensors", "-q"])
        .arg("-v")
        .arg(target_vocab())
        .assert()
        .success();
    let commit = hub.commit_of("google-bert/bert-base-chinese");
    let sb2 = Sandbox::new();
    sb2.cmd()
        .env("HF_ENDPOINT", hub.endpoint())
        .args([
            "-m",
            "google-bert/bert-base-chinese",
            "--revision",
            &commit,
            "-o",
            "b.safetensors",
            "-q",
        ])
        .arg("-v")
        .arg(target_vocab())
        .assert()
        .success();
    assert_eq!(
        read_st(&sb2.path("b.safetensors")).meta["source_commit"],
        commit
    );
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.contains(&format!("/resolve/{commit}/"))));
}

#[test]
fn connection_refused_is_one_clear_line() {
    let sb = Sandbox::new();
    // Bind then drop: the port is free and nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let a = sb
        .cmd()
        .env("HF_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .args(["-m", "org/model", "-o", "x.safetensors"])
        .arg("-v")
        .arg(target_vocab())
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(err.starts_with("error: cannot reach the hub"), "{err}");
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(sb.files().is_empty());
}

#[test]
fn hub_500_and_dropped_download_are_errors() {
    let sb = Sandbox::new();
    let hub = hub_with_bert(&[]);
    hub.set_fault(Fault::Status500);
    let a = sb
        .cmd()
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["-m", "some-org/tiny-bert-chinese", "-o", "x.safetensors"])
        .arg("-v")
        .arg(target_vocab())
        .assert()
        .code(1);
    assert!(
        stderr_of(&a).contains("hub answered 500"),
        "{}",
        stderr_of(&a)
    );
    hub.set_fault(Fault::DropMidBody);
    let a = sb
        .cmd()
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["-m", "some-org/tiny-bert-chinese", "-o", "x.safetensors"])
        .arg("-v")
        .arg(target_vocab())
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(err.contains("some-org/tiny-bert-chinese@main"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(sb.files().is_empty());
}

#[test]
fn unknown_hub_model_is_an_error() {
    let sb = Sandbox::new();
    let hub = hub_with_bert(&[]);
    let a = sb
        .cmd()
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["-m", "nobody/nothing", "-o", "x.safetensors"])
        .arg("-v")
        .arg(target_vocab())
        .assert()
        .code(1);
    assert!(
        stderr_of(&a).contains("nobody/nothing@main: the hub at"),
        "{}",
        stderr_of(&a)
    );
}

#[test]
fn token_is_sent_but_never_printed() {
    let sb = Sandbox::new();
    let hub = hub_with_bert(&[]);
    let secret = "hf_SECRETsecretSECRET123";
    let a = sb
        .cmd()
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_TOKEN", secret)
        .args([
            "-m",
            "some-org/tiny-bert-chinese",
            "-o",
            "a.safetensors",
            "--json",
            "--report",
            "r.json",
        ])
        .arg("-v")
        .arg(target_vocab())
        .assert()
        .success();
    let sent = hub.recorded();
    assert!(sent
        .iter()
        .all(|r| r.header("authorization") == Some(&format!("Bearer {secret}")[..])));
    assert!(!stdout_of(&a).contains(secret) && !stderr_of(&a).contains(secret));
    assert!(!std::fs::read_to_string(sb.path("r.json"))
        .unwrap()
        .contains(secret));
    let help = sb
        .cmd()
        .env("HF_TOKEN", secret)
        .arg("--help")
        .assert()
        .success();
    assert!(!stdout_of(&help).contains(secret));
}

// ---------------------------------------------------------------- bad input

/// Runs with the given vocab bytes and returns stderr; asserts exit 1 and no output file.
fn vocab_error(bytes: &[u8]) -> String {
    let sb = Sandbox::new();
    std::fs::write(sb.path("v.txt"), bytes).unwrap();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(bert_dir())
        .args(["-v", "v.txt", "-o", "out.safetensors"])
        .assert()
        .code(1);
    assert_eq!(sb.files(), vec!["v.txt"]);
    let err = stderr_of(&a);
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

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
    assert!(vocab_error(&long).starts_with("error: v.txt line 2: line is 1048576 bytes long"));
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
    let run = |out: &Path| sb.transplant(&bert_dir()).arg("-o").arg(out).assert();
    std::fs::write(sb.path("exists.safetensors"), b"keep me").unwrap();
    let a = run(&sb.path("exists.safetensors")).code(1);
    assert!(stderr_of(&a).contains("the output file exists; pass --force"));
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
    assert!(stderr_of(&a).contains("the output path is a directory"));
    sb.transplant(&bert_dir())
        .args(["-o", "exists.safetensors", "--force", "-q"])
        .assert()
        .success();
    assert_ne!(
        std::fs::read(sb.path("exists.safetensors")).unwrap(),
        b"keep me"
    );
}

#[cfg(unix)]
#[test]
fn read_only_output_directory() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let ro = sb.path("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores directory permissions; the check is only meaningful for other users.
    if std::fs::write(ro.join("probe"), b"").is_ok() {
        std::fs::remove_file(ro.join("probe")).unwrap();
        return;
    }
    let a = sb
        .transplant(&bert_dir())
        .arg("-o")
        .arg(ro.join("out.safetensors"))
        .assert()
        .code(1);
    assert!(stderr_of(&a).contains("ro"), "{}", stderr_of(&a));
}

#[test]
fn tensor_override_and_candidate_lists() {
    let sb = Sandbox::new();
    let a = sb
        .transplant(&bert_dir())
        .args(["--tensor", "nope", "-o", "x.safetensors"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(err.contains("no tensor named `nope`"), "{err}");
    assert!(
        err.contains("bert.embeddings.word_embeddings.weight [21128, 32]"),
        "{err}"
    );
    // A 2-D tensor that is not the embedding but has enough rows is accepted when forced.
    let a = sb
        .transplant(&bert_dir().join("pytorch_model.bin"))
        .args([
            "--tensor",
            "cls.predictions.decoder.weight",
            "-o",
            "y.safetensors",
            "--json",
            "-q",
        ])
        .assert()
        .success();
    let json: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert_eq!(json["tensor_rule"], "--tensor");
}

/// Writes a one-tensor safetensors file with the given shape (f32 zeros).
fn write_tiny_st(path: &Path, name: &str, shape: [usize; 2]) {
    let data = vec![0u8; shape[0] * shape[1] * 4];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &data)
        .unwrap();
    safetensors::serialize_to_file([(name, view)], None, path).unwrap();
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
    assert!(stderr_of(&a)
        .contains("warning: tensor `wte.weight`: 1 row(s) hold NaN or infinity (first: row 1)"));
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
            .cmd()
            .args(["-m", name, "--source-vocab"])
            .arg(bert_dir().join("vocab.txt"))
            .arg("-v")
            .arg(target_vocab())
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

// ---------------------------------------------------------------- PyTorch interop

/// Loads the output in PyTorch with both documented idioms. Skips only where torch is absent on a
/// developer's machine; CI (CI=true or EMBED_TRANSPLANT_REQUIRE_TORCH=1) makes it mandatory.
#[test]
fn pytorch_loads_the_output() {
    let python = std::env::var("EMBED_TRANSPLANT_PYTHON").unwrap_or_else(|_| "python3".into());
    let required = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("EMBED_TRANSPLANT_REQUIRE_TORCH").is_ok_and(|v| v == "1");
    let has_torch = std::process::Command::new(&python)
        .args(["-c", "import torch, safetensors.torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_torch {
        assert!(
            !required,
            "torch and safetensors are required here but `{python}` cannot import them"
        );
        eprintln!("skipping: {python} has no torch/safetensors");
        return;
    }
    let sb = Sandbox::new();
    for (name, extra) in [
        ("f32.safetensors", "f32"),
        ("bf16.safetensors", "bf16"),
        ("f16.safetensors", "f16"),
    ] {
        sb.transplant(&bert_dir())
            .args(["-o", name, "-q", "--dtype", extra])
            .assert()
            .success();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_torch.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(sb.dir.path())
        .arg(bert_dir())
        .arg(target_vocab())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------- composition and matching (issue 3)

/// Runs with the given target tokens on stdin and returns (summary JSON, report JSON, output).
fn run_tokens(
    model: &Path,
    tokens: &str,
    extra: &[&str],
) -> (serde_json::Value, serde_json::Value, St) {
    let sb = Sandbox::new();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(model)
        .args([
            "-v",
            "-",
            "-o",
            "out.safetensors",
            "--json",
            "--report",
            "report.json",
            "-q",
        ])
        .args(extra)
        .write_stdin(tokens)
        .assert()
        .success();
    let summary = serde_json::from_str(&stdout_of(&a)).unwrap();
    let report =
        serde_json::from_str(&std::fs::read_to_string(sb.path("report.json")).unwrap()).unwrap();
    (summary, report, read_st(&sb.path("out.safetensors")))
}

/// Source rows by token, as f32.
fn source_rows(dir: &Path, tensor: &str) -> (HashMap<String, usize>, Vec<f32>, usize) {
    let st = read_st(&dir.join("model.safetensors"));
    let (_, shape, data) = &st.tensors[tensor];
    let ids = lines(&dir.join("vocab.txt"))
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i))
        .collect();
    (ids, f32s(data), shape[1])
}

fn out_row(st: &St, i: usize) -> Vec<f32> {
    let (_, shape, data) = &st.tensors["weight"];
    let dim = shape[1];
    f32s(&data[i * dim * 4..(i + 1) * dim * 4])
}

fn assert_mean_of(
    st: &St,
    row: usize,
    pieces: &[&str],
    ids: &HashMap<String, usize>,
    src: &[f32],
    dim: usize,
) {
    let got = out_row(st, row);
    for (c, g) in got.iter().enumerate() {
        let want = pieces
            .iter()
            .map(|p| src[ids[*p] * dim + c] as f64)
            .sum::<f64>()
            / pieces.len() as f64;
        assert!(
            (*g as f64 - want).abs() < 1e-6,
            "row {row} col {c}: {g} vs {want}"
        );
    }
}

#[test]
fn compose_is_the_default_and_builds_words_from_characters() {
    let (summary, report, st) = run_tokens(&bert_dir(), "中国\n人工智能\n中\n😀\n", &[]);
    assert_eq!(summary["init"], "compose");
    let (ids, src, dim) = source_rows(&bert_dir(), "bert.embeddings.word_embeddings.weight");
    assert_mean_of(&st, 0, &["中", "国"], &ids, &src, dim);
    assert_mean_of(&st, 1, &["人", "工", "智", "能"], &ids, &src, dim);
    assert_eq!(
        out_row(&st, 2),
        src[ids["中"] * dim..(ids["中"] + 1) * dim].to_vec()
    );
    let rows = report["rows"].as_array().unwrap();
    let zhongguo = rows.iter().find(|r| r["token"] == "中国").unwrap();
    assert_eq!(zhongguo["method"], "composed");
    assert_eq!(zhongguo["pieces"], serde_json::json!(["中", "国"]));
    // The emoji is [UNK] in bert-base-chinese: no usable piece, so it falls back and is counted.
    let emoji = rows.iter().find(|r| r["token"] == "😀").unwrap();
    assert_eq!(emoji["method"], "random");
    assert_eq!(
        summary["counts"],
        serde_json::json!({"composed": 2, "exact": 1, "random": 1})
    );
    assert_eq!(st.meta["counts"], r#"{"composed":2,"exact":1,"random":1}"#);
}

#[test]
fn compose_english_word_from_wordpieces() {
    let dir = fixtures().join("tiny-bert-uncased");
    let (summary, report, st) = run_tokens(&dir, "unaffable\n", &[]);
    assert_eq!(summary["counts"]["composed"], 1);
    assert_eq!(
        report["rows"][0]["pieces"],
        serde_json::json!(["una", "##ffa", "##ble"])
    );
    let (ids, src, dim) = source_rows(&dir, "embeddings.word_embeddings.weight");
    assert_mean_of(&st, 0, &["una", "##ffa", "##ble"], &ids, &src, dim);
}

#[test]
fn normalised_and_continuation_matches() {
    let dir = fixtures().join("tiny-bert-uncased");
    let (summary, report, st) = run_tokens(
        &dir,
        "ＡＢＣ\nHello\nCafé\nffa\n##hello\n",
        &["--init", "zeros"],
    );
    let methods: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        vec![
            "normalized",
            "normalized",
            "normalized",
            "continuation",
            "continuation"
        ]
    );
    let pieces: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pieces"][0].as_str().unwrap())
        .collect();
    assert_eq!(pieces, vec!["abc", "hello", "cafe", "##ffa", "hello"]);
    assert_eq!(summary["copied"], 5);
    let (ids, src, dim) = source_rows(&dir, "embeddings.word_embeddings.weight");
    assert_eq!(
        out_row(&st, 0),
        src[ids["abc"] * dim..(ids["abc"] + 1) * dim].to_vec()
    );
    // A cased source does not lower-case: `ABC` is not `abc` in bert-base-chinese.
    let (summary, _, _) = run_tokens(&bert_dir(), "ABC\n", &["--init", "zeros"]);
    assert_eq!(summary["counts"], serde_json::json!({"zeros": 1}));
}

#[test]
fn byte_level_source_matches_human_tokens() {
    let dir = fixtures().join("tiny-llama-sharded");
    let (summary, report, st) =
        run_tokens(&dir, &std::fs::read_to_string(target_vocab()).unwrap(), &[]);
    assert_eq!(summary["source_tokenizer"], "byte_level");
    let decoded: Vec<&serde_json::Value> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "decoded")
        .collect();
    assert!(decoded.len() > 10, "{}", decoded.len());
    // The matched source token is stored byte-mapped, not as the human string, and its row is copied.
    let tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
            .unwrap();
    let shard = read_st(&dir.join("model-00001-of-00002.safetensors"));
    let (_, shape, data) = &shard.tensors["model.embed_tokens.weight"];
    let w = shape[1] * 2;
    let (_, _, out) = &st.tensors["weight"];
    for r in decoded {
        let human = r["token"].as_str().unwrap();
        let stored = r["pieces"][0].as_str().unwrap();
        assert_ne!(human, stored);
        let id = tok["model"]["vocab"][stored].as_u64().unwrap() as usize;
        let line = r["line"].as_u64().unwrap() as usize - 1;
        assert_eq!(
            &out[line * w..(line + 1) * w],
            &data[id * w..(id + 1) * w],
            "{human}"
        );
    }
}

#[test]
fn counts_add_up_and_compose_is_deterministic() {
    let sb = Sandbox::new();
    let run = |out: &str| {
        let a = sb
            .transplant(&bert_dir())
            .args(["-o", out, "--json", "-q"])
            .assert()
            .success();
        let json: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
        (json, std::fs::read(sb.path(out)).unwrap())
    };
    let (json, a) = run("a.safetensors");
    let (_, b) = run("b.safetensors");
    assert_eq!(a, b);
    let total: u64 = json["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, json["rows"].as_u64().unwrap());
    assert_eq!(
        json["copied"].as_u64().unwrap() + json["initialised"].as_u64().unwrap(),
        total
    );
}

#[test]
fn calibrate_norm_scales_initialised_rows() {
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let tokens = "中\n国\n人\n😀\n中国\n";
    let (summary, _, st) = run_tokens(&bert_dir(), tokens, &["--calibrate-norm"]);
    let target = summary["median_norm_copied"].as_f64().unwrap() as f32;
    for i in [3, 4] {
        let n = norm(&out_row(&st, i));
        assert!(
            (n - target).abs() < 1e-4 * target,
            "row {i}: {n} vs {target}"
        );
    }
    let (plain, _, st2) = run_tokens(&bert_dir(), tokens, &[]);
    assert_eq!(plain["calibrate_norm"], false);
    assert!((norm(&out_row(&st2, 4)) - target).abs() > 1e-3 * target);
    assert_eq!(out_row(&st, 0), out_row(&st2, 0));
    assert_eq!(st.meta["calibrate_norm"], "true");
}

// ---------------------------------------------------------------- inspect, shell, hostile input (issue 5)

#[test]
fn inspect_lists_tensors_vocab_config_and_dry_run() {
    let sb = Sandbox::new();
    let a = sb
        .cmd()
        .args(["inspect", "--json", "-m"])
        .arg(bert_dir())
        .arg("-v")
        .arg(target_vocab())
        .assert()
        .success();
    let j: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert_eq!(j["embedding"], "bert.embeddings.word_embeddings.weight");
    let t = j["tensors"].as_array().unwrap();
    assert!(t.iter().any(
        |t| t["name"] == "bert.embeddings.position_embeddings.weight"
            && t["shape"] == serde_json::json!([64, 32])
    ));
    assert_eq!(j["source_vocab"]["size"], 21128);
    assert_eq!(j["source_vocab"]["tokenizer"], "word_piece");
    assert_eq!(j["config"]["initializer_range"], 0.02);
    assert_eq!(j["dry_run"]["rows"], 2000);
    // The dry run agrees with a real transplant.
    let b = sb
        .transplant(&bert_dir())
        .args(["--json", "-q"])
        .assert()
        .success();
    let real: serde_json::Value = serde_json::from_str(&stdout_of(&b)).unwrap();
    assert_eq!(j["dry_run"]["counts"], real["counts"]);
    assert_eq!(sb.files(), vec!["embeddings.safetensors"]);
    let text = sb
        .cmd()
        .args(["inspect", "-m"])
        .arg(fixtures().join("tiny-llama-sharded"))
        .assert()
        .success();
    let out = stdout_of(&text);
    assert!(
        out.contains("* model.embed_tokens.weight")
            && out.contains("model-00001-of-00002.safetensors"),
        "{out}"
    );
}

#[test]
fn completions_and_man_page() {
    let sb = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let a = sb.cmd().args(["completions", shell]).assert().success();
        assert!(stdout_of(&a).contains("calibrate-norm"), "{shell}");
    }
    let a = sb.cmd().arg("man").assert().success();
    assert!(stdout_of(&a).contains(".TH embed-transplant"));
    sb.cmd()
        .args(["completions", "nosuchshell"])
        .assert()
        .code(2);
}

/// Writes a zip `.bin` with the given data.pkl bytes (stored, as torch writes it).
fn write_zip_bin(path: &Path, entries: &[(&str, &[u8])]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    for (name, data) in entries {
        z.start_file(
            *name,
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        std::io::Write::write_all(&mut z, data).unwrap();
    }
    z.finish().unwrap();
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
            .cmd()
            .args(["-m", name, "--source-vocab"])
            .arg(bert_dir().join("vocab.txt"))
            .arg("-v")
            .arg(target_vocab())
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

// ---------------------------------------------------------------- finetune and evaluate (issue 4)

/// A small synthetic sentiment set whose label is decided by which tokens occur: each sentence has
/// neutral characters plus two from its class's set. Deterministic (a tiny LCG).
fn synthetic(dir: &Path) {
    let pos = ["好", "棒", "赞", "喜", "爱", "美", "乐", "优"];
    let neg = ["差", "坏", "烂", "恨", "丑", "苦", "劣", "糟"];
    let neutral = ["的", "了", "是", "我", "你", "他", "这", "那", "有", "在"];
    let mut vocab: Vec<&str> = vec!["[PAD]", "[UNK]"];
    vocab.extend(pos);
    vocab.extend(neg);
    vocab.extend(neutral);
    vocab.push("好的"); // a word the source lacks: composed from 好 and 的
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    let mut state: u64 = 12345;
    let mut next = |n: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % n
    };
    for (name, n) in [("train.tsv", 240), ("dev.tsv", 60), ("test.tsv", 60)] {
        let mut out = String::from("label\ttext\n");
        for i in 0..n {
            let (label, set) = if i % 2 == 0 {
                ("pos", &pos)
            } else {
                ("neg", &neg)
            };
            let mut s = String::new();
            for _ in 0..4 {
                s.push_str(neutral[next(neutral.len())]);
            }
            s.push_str(set[next(set.len())]);
            s.push_str(set[next(set.len())]);
            if i % 4 == 0 {
                s.push_str("好的"); // the composed word, so that a non-copied row is trained
            }
            s.push('?'); // not in the vocabulary: [UNK]
            out.push_str(&format!("{label}\t{s}\n"));
        }
        std::fs::write(dir.join(name), out).unwrap();
    }
}

/// Transplants the synthetic vocabulary from the tiny BERT and returns the sandbox.
fn finetune_sandbox() -> Sandbox {
    let sb = Sandbox::new();
    synthetic(sb.dir.path());
    sb.cmd()
        .arg("-m")
        .arg(bert_dir())
        .args(["-v", "vocab.txt", "-o", "emb.safetensors", "-q"])
        .assert()
        .success();
    sb
}

fn finetune(sb: &Sandbox, out: &str, extra: &[&str]) -> serde_json::Value {
    let a = sb
        .cmd()
        .args([
            "finetune",
            "--embeddings",
            "emb.safetensors",
            "-v",
            "vocab.txt",
            "--train",
            "train.tsv",
        ])
        .args([
            "--valid", "dev.tsv", "--test", "test.tsv", "-o", out, "--json", "--lr", "0.05",
        ])
        .args(extra)
        .assert()
        .success();
    serde_json::from_str(&stdout_of(&a)).unwrap()
}

#[test]
fn finetune_learns_keeps_best_epoch_and_is_deterministic() {
    let sb = finetune_sandbox();
    let r = finetune(
        &sb,
        "ft.safetensors",
        &["--head", "head.safetensors", "--epochs", "8"],
    );
    let epochs = r["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 8);
    let first = epochs[0]["train_loss"].as_f64().unwrap();
    let last = epochs[7]["train_loss"].as_f64().unwrap();
    assert!(last < first * 0.5, "loss {first} -> {last}");
    let test_acc = r["test_accuracy"].as_f64().unwrap();
    assert!(test_acc > 0.9, "test accuracy {test_acc}");
    let best = r["best_epoch"].as_u64().unwrap() as usize;
    let best_valid = epochs[best - 1]["valid_accuracy"].as_f64().unwrap();
    assert!(epochs
        .iter()
        .all(|e| e["valid_accuracy"].as_f64().unwrap() <= best_valid));
    let st = read_st(&sb.path("ft.safetensors"));
    assert_eq!(st.meta["finetuned"], "true");
    assert_eq!(st.meta["finetune_best_epoch"], best.to_string());
    assert_eq!(
        st.meta["source_tensor"], "bert.embeddings.word_embeddings.weight",
        "transplant metadata is kept"
    );
    assert_eq!(st.tensors["weight"].1, vec![29, 32]);
    let head = read_st(&sb.path("head.safetensors"));
    assert_eq!(head.tensors["weight"].1, vec![2, 32]);
    assert_eq!(head.tensors["bias"].1, vec![2]);
    assert_eq!(head.meta["labels"], r#"["neg","pos"]"#);
    // Same seed, same bytes.
    finetune(&sb, "ft2.safetensors", &["--epochs", "8"]);
    assert_eq!(
        std::fs::read(sb.path("ft.safetensors")).unwrap(),
        std::fs::read(sb.path("ft2.safetensors")).unwrap()
    );
    // evaluate agrees with finetune's test accuracy.
    let a = sb
        .cmd()
        .args([
            "evaluate",
            "--embeddings",
            "ft.safetensors",
            "--head",
            "head.safetensors",
            "-v",
            "vocab.txt",
        ])
        .args(["--data", "test.tsv", "--json"])
        .assert()
        .success();
    let ev: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert!((ev["accuracy"].as_f64().unwrap() - test_acc).abs() < 1e-9);
    assert_eq!(ev["classes"].as_array().unwrap().len(), 2);
    assert_eq!(ev["classes"][0]["support"], 30);
    let text = sb
        .cmd()
        .args([
            "evaluate",
            "--embeddings",
            "ft.safetensors",
            "--head",
            "head.safetensors",
            "-v",
            "vocab.txt",
            "--data",
            "test.tsv",
        ])
        .assert()
        .success();
    assert!(stdout_of(&text).contains("precision"));
}

#[test]
fn finetune_freezing() {
    let sb = finetune_sandbox();
    let src = read_st(&sb.path("emb.safetensors"));
    let (_, _, before) = &src.tensors["weight"];
    let copied = embed_transplant::report::parse_ranges(&src.meta["copied_rows"]).unwrap();
    assert!(!copied.is_empty());
    finetune(
        &sb,
        "frozen.safetensors",
        &["--epochs", "2", "--freeze-embeddings"],
    );
    assert_eq!(
        &read_st(&sb.path("frozen.safetensors")).tensors["weight"].2,
        before
    );
    finetune(
        &sb,
        "fc.safetensors",
        &["--epochs", "2", "--freeze-copied", "--optimizer", "sgd"],
    );
    let after = &read_st(&sb.path("fc.safetensors")).tensors["weight"].2;
    let w = 32 * 4;
    for r in 0..29 {
        let same = before[r * w..(r + 1) * w] == after[r * w..(r + 1) * w];
        if copied.contains(&r) {
            assert!(same, "copied row {r} changed");
        }
    }
    // The composed row 好的 (the last) is trained.
    assert_ne!(before[28 * w..29 * w], after[28 * w..29 * w]);
}

#[test]
fn finetune_bad_input() {
    let sb = finetune_sandbox();
    let fail = |extra: &[&str]| {
        let a = sb
            .cmd()
            .args([
                "finetune",
                "--embeddings",
                "emb.safetensors",
                "-v",
                "vocab.txt",
                "-o",
                "x.safetensors",
            ])
            .args(extra)
            .assert()
            .code(1);
        assert!(!sb.path("x.safetensors").exists());
        stderr_of(&a)
    };
    std::fs::write(sb.path("bad.tsv"), "pos\t好\nneg 坏\n").unwrap();
    assert!(fail(&["--train", "bad.tsv"]).contains("bad.tsv line 2: expected `label<TAB>text`"));
    std::fs::write(sb.path("one.tsv"), "pos\t好\npos\t棒\n").unwrap();
    assert!(fail(&["--train", "one.tsv"]).contains("needs at least 2 classes"));
    std::fs::write(sb.path("other.tsv"), "pos\t好\nmeh\t的\n").unwrap();
    assert!(fail(&["--train", "train.tsv", "--valid", "other.tsv"])
        .contains("other.tsv line 2: label `meh` does not occur"));
    std::fs::write(sb.path("short.txt"), "[PAD]\n[UNK]\n").unwrap();
    let a = sb
        .cmd()
        .args([
            "finetune",
            "--embeddings",
            "emb.safetensors",
            "-v",
            "short.txt",
            "--train",
            "train.tsv",
        ])
        .assert()
        .code(1);
    assert!(stderr_of(&a).contains("has 29 rows but short.txt has 2 lines"));
    sb.cmd()
        .args([
            "finetune",
            "--embeddings",
            "emb.safetensors",
            "-v",
            "vocab.txt",
            "--train",
            "train.tsv",
        ])
        .args(["--freeze-embeddings", "--freeze-copied"])
        .assert()
        .code(2);
    sb.cmd()
        .args([
            "finetune",
            "--embeddings",
            "emb.safetensors",
            "-v",
            "vocab.txt",
            "--train",
            "train.tsv",
            "--epochs",
            "0",
        ])
        .assert()
        .code(2);
}

/// A safetensors file from a raw JSON header and data bytes.
fn raw_st(path: &Path, header: &str, data: &[u8]) {
    let mut h = header.as_bytes().to_vec();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut b = (h.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(&h);
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
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
        .transplant(&bert_dir())
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
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("embed-transplant"))
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

#[test]
fn ten_million_line_vocabulary() {
    let sb = Sandbox::new();
    let dir = sb.path("m");
    std::fs::create_dir(&dir).unwrap();
    // A 2-row, 1-dim model keeps the output small (10M x 1 f32 = 40 MB).
    raw_st(
        &dir.join("model.safetensors"),
        r#"{"wte.weight":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]}}"#,
        &[0, 0, 128, 63, 0, 0, 0, 64],
    );
    std::fs::write(dir.join("vocab.txt"), "w0\nw1\n").unwrap();
    let mut v = String::with_capacity(100 << 20);
    for i in 0..10_000_000u32 {
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
    assert_eq!(j["rows"], 10_000_000);
    assert_eq!(j["copied"], 2);
    let out = std::fs::read(sb.path("out.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&out).unwrap();
    let w = st.tensor("weight").unwrap();
    assert_eq!(w.shape(), &[10_000_000, 1]);
    assert_eq!(&w.data()[4..8], &2f32.to_le_bytes());
}

#[cfg(unix)]
#[test]
fn ctrl_c_leaves_no_output_and_no_temp_file() {
    let sb = finetune_sandbox();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("embed-transplant"))
        .current_dir(sb.dir.path())
        .env("HF_HOME", sb.hf_home())
        .args([
            "finetune",
            "--embeddings",
            "emb.safetensors",
            "-v",
            "vocab.txt",
            "--train",
            "train.tsv",
        ])
        .args(["--epochs", "100000", "-o", "ft.safetensors", "-q"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "error: interrupted\n");
    let mut files = sb.files();
    files.sort();
    assert_eq!(
        files,
        vec![
            "dev.tsv",
            "emb.safetensors",
            "test.tsv",
            "train.tsv",
            "vocab.txt"
        ]
    );
}

#[test]
fn finetune_flags_change_what_they_say() {
    let sb = finetune_sandbox();
    let base = finetune(&sb, "a.safetensors", &["--epochs", "1"]);
    assert_eq!(base["batches_per_epoch"], 8); // 240 / 32, rounded up
    assert!(base["unknown_token_rate"].as_f64().unwrap() > 0.0); // the '?' of every sentence
    let b = finetune(
        &sb,
        "b.safetensors",
        &["--epochs", "1", "--batch-size", "100"],
    );
    assert_eq!(b["batches_per_epoch"], 3);
    // Without an unknown token in the vocabulary, unknown characters are dropped.
    let c = finetune(
        &sb,
        "c.safetensors",
        &["--epochs", "1", "--unk-token", "<none>"],
    );
    assert_eq!(c["unknown_token_rate"], 0.0);
    assert!(c["mean_tokens"].as_f64().unwrap() < base["mean_tokens"].as_f64().unwrap());
    let d = finetune(&sb, "d.safetensors", &["--epochs", "1", "--max-len", "3"]);
    assert!(d["mean_tokens"].as_f64().unwrap() <= 3.0);
    finetune(&sb, "e.safetensors", &["--epochs", "1", "--seed", "7"]);
    assert_ne!(
        std::fs::read(sb.path("a.safetensors")).unwrap(),
        std::fs::read(sb.path("e.safetensors")).unwrap()
    );
    let sgd = finetune(
        &sb,
        "f.safetensors",
        &["--epochs", "1", "--optimizer", "sgd"],
    );
    assert_eq!(
        read_st(&sb.path("f.safetensors")).meta["finetune_optimizer"],
        "sgd"
    );
    assert_ne!(
        sgd["epochs"][0]["train_loss"],
        base["epochs"][0]["train_loss"]
    );
}

#[test]
fn f64_and_f16_sources_are_read() {
    let sb = Sandbox::new();
    for (name, dtype, bytes) in [
        (
            "f64",
            "F64",
            [1.5f64, -2.0, 0.25, 4.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
        (
            "f16",
            "F16",
            [1.5f32, -2.0, 0.25, 4.0]
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        ),
    ] {
        let dir = sb.path(name);
        std::fs::create_dir(&dir).unwrap();
        let header = format!(
            r#"{{"wte.weight":{{"dtype":"{dtype}","shape":[2,2],"data_offsets":[0,{}]}}}}"#,
            bytes.len()
        );
        raw_st(&dir.join("model.safetensors"), &header, &bytes);
        std::fs::write(dir.join("vocab.txt"), "a\nb\n").unwrap();
        let out = format!("{name}.safetensors");
        sb.cmd()
            .arg("-m")
            .arg(&dir)
            .args(["-v", "-", "-o", &out, "-q"])
            .write_stdin("b\na\n")
            .assert()
            .success();
        let st = read_st(&sb.path(&out));
        let (got_dtype, shape, data) = &st.tensors["weight"];
        assert_eq!((got_dtype.as_str(), shape.clone()), (dtype, vec![2, 2]));
        // Rows swapped, bit for bit.
        let half = bytes.len() / 2;
        assert_eq!(&data[..half], &bytes[half..]);
        assert_eq!(&data[half..], &bytes[..half]);
        let f32_out = format!("{name}-f32.safetensors");
        sb.cmd()
            .arg("-m")
            .arg(&dir)
            .args(["-v", "-", "-o", &f32_out, "-q", "--dtype", "f32"])
            .write_stdin("a\n")
            .assert()
            .success();
        assert_eq!(
            f32s(&read_st(&sb.path(&f32_out)).tensors["weight"].2),
            vec![1.5, -2.0]
        );
    }
}

#[test]
fn inspect_on_the_hub_reads_headers_not_weights() {
    let sb = Sandbox::new();
    let hub = FakeHub::start(vec![
        RepoSpec::new("some-org/tiny-bert-chinese", bert_dir()),
        RepoSpec::new("org/tiny-llama", fixtures().join("tiny-llama-sharded")),
    ]);
    let a = sb
        .cmd()
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["inspect", "--json", "-m", "some-org/tiny-bert-chinese"])
        .assert()
        .success();
    let j: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert_eq!(j["embedding"], "bert.embeddings.word_embeddings.weight");
    let emb = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == j["embedding"])
        .unwrap()
        .clone();
    assert_eq!(emb["shape"], serde_json::json!([21128, 32]));
    assert_eq!(
        j["source"]["commit"],
        hub.commit_of("some-org/tiny-bert-chinese").as_str()
    );
    // Only the header was asked for: two small ranges, and the weights are not in the cache.
    let ranges: Vec<String> = hub
        .recorded()
        .iter()
        .filter(|r| r.line().ends_with("model.safetensors"))
        .map(|r| r.header("range").unwrap_or("").to_string())
        .collect();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert_eq!(ranges[0], "bytes=0-7");
    let snap = sb
        .hf_home()
        .join("hub/models--some-org--tiny-bert-chinese/snapshots");
    let cached: Vec<String> =
        std::fs::read_dir(snap.read_dir().unwrap().next().unwrap().unwrap().path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    assert!(
        !cached.contains(&"model.safetensors".to_string()),
        "{cached:?}"
    );

    // Sharded: both shards listed with shapes, neither downloaded.
    let a = sb
        .cmd()
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["inspect", "--json", "-m", "org/tiny-llama"])
        .assert()
        .success();
    let j: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    let lm = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "lm_head.weight")
        .unwrap()
        .clone();
    assert_eq!(lm["shape"], serde_json::json!([505, 16]));
    assert_eq!(lm["file"], "model-00002-of-00002.safetensors");
    let full: Vec<String> = hub
        .recorded()
        .iter()
        .filter(|r| {
            r.line().contains("-of-00002") && r.header("range").is_none_or(|h| h.ends_with('-'))
        })
        .map(|r| r.line())
        .collect();
    assert!(full.is_empty(), "downloaded shards: {full:?}");
}

/// Every input a fuzzer once failed on (tests/fuzz_regressions/<target>/) is now read without a
/// panic, a hang or an outsized allocation: a clean error, or a result.
#[test]
fn fuzz_regressions_stay_fixed() {
    use embed_transplant::checkpoint::{self, pickle::PthFile, FetchFile, Weights};
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
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for target in std::fs::read_dir(&root).unwrap() {
        let target = target.unwrap().path();
        for input in std::fs::read_dir(&target).unwrap() {
            let input = input.unwrap().path();
            let bytes = std::fs::read(&input).unwrap();
            n += 1;
            match target.file_name().unwrap().to_str().unwrap() {
                "vocab" => {
                    let _ = embed_transplant::vocab::parse_target(&bytes, "fuzz");
                }
                "safetensors_header" => {
                    let p = dir.path().join("x.safetensors");
                    std::fs::write(&p, &bytes).unwrap();
                    let w = Weights::Safetensors(p);
                    if let Ok(list) = checkpoint::list_tensors(&w, &NoFetch) {
                        for t in list
                            .iter()
                            .filter(|t| t.shape.as_ref().is_some_and(|s| s.len() == 2))
                        {
                            let _ = checkpoint::load_embedding(&w, &t.name, &NoFetch);
                        }
                    }
                }
                "pickle" => {
                    let p = dir.path().join("x.bin");
                    std::fs::write(&p, &bytes).unwrap();
                    if let Ok(f) = PthFile::open(&p) {
                        for e in &f.entries {
                            let _ = f.read(e);
                        }
                    }
                }
                other => panic!("unknown fuzz target directory {other}"),
            }
        }
    }
    assert!(n > 0);
}

//! Helpers shared by every CLI test: the sandbox (own temp dir, own HF_HOME, cleaned environment),
//! fixture paths, and readers for what the binary writes.

pub use crate::fake_hub::{FakeHub, Fault, RepoSpec, PROXY_ENV_VARS};
pub use assert_cmd::Command;
pub use std::collections::HashMap;
pub use std::path::{Path, PathBuf};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn bert_dir() -> PathBuf {
    fixtures().join("tiny-bert-chinese")
}

pub fn target_vocab() -> PathBuf {
    fixtures().join("target-vocab.txt")
}

/// A sandbox: temp working dir and HF_HOME, cleaned environment.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn hf_home(&self) -> PathBuf {
        self.path("hf-home")
    }

    pub fn cmd(&self) -> Command {
        let mut c = assert_cmd::cargo::cargo_bin_cmd!("embed-transplant");
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

    /// `finetune` of the finetune sandbox's embeddings and vocabulary; add the rest.
    pub fn finetune_cmd(&self) -> Command {
        let mut c = self.cmd();
        c.args([
            "finetune",
            "--embeddings",
            "emb.safetensors",
            "-v",
            "vocab.txt",
        ]);
        c
    }

    /// A transplant of `model` onto the bundled target vocabulary; add the rest.
    pub fn transplant(&self, model: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = self.cmd();
        c.arg("-m").arg(model).arg("-v").arg(target_vocab());
        c
    }

    /// The files in the working dir (to check that failures leave nothing behind).
    pub fn files(&self) -> Vec<String> {
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
pub struct St {
    pub tensors: HashMap<String, (String, Vec<usize>, Vec<u8>)>,
    pub meta: HashMap<String, String>,
}

pub fn read_st(path: &Path) -> St {
    read_st_bytes(&std::fs::read(path).unwrap())
}

pub fn read_st_bytes(bytes: &[u8]) -> St {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
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

pub fn lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.strip_suffix('\n')
        .unwrap_or(&text)
        .split('\n')
        .map(String::from)
        .collect()
}

pub fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Checks that every target token the source vocab has got the source row, bit for bit.
pub fn assert_copied_rows(out: &Path, source_st: &Path, tensor: &str, vocab_txt: &Path) -> usize {
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

pub fn stderr_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

pub fn stdout_of(a: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

/// Runs a transplant and returns the output tensor's bytes.
pub fn weight_of(
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

// ---------------------------------------------------------------- the hub

pub fn hub_with_bert(hidden: &[&str]) -> FakeHub {
    let mut spec = RepoSpec::new("some-org/tiny-bert-chinese", bert_dir());
    for h in hidden {
        spec = spec.hide(h);
    }
    FakeHub::start(vec![spec])
}

// ---------------------------------------------------------------- bad input

/// Runs with the given vocab bytes and returns stderr; asserts exit 1 and no output file.
pub fn vocab_error(bytes: &[u8]) -> String {
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

/// Writes a one-tensor safetensors file with the given shape (f32 zeros).
pub fn write_tiny_st(path: &Path, name: &str, shape: [usize; 2]) {
    let data = vec![0u8; shape[0] * shape[1] * 4];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &data)
        .unwrap();
    safetensors::serialize_to_file([(name, view)], None, path).unwrap();
}

// ---------------------------------------------------------------- composition and matching (issue 3)

/// Runs with the given target tokens on stdin and returns (summary JSON, report JSON, output).
pub fn run_tokens_reported(
    model: &Path,
    tokens: &str,
    extra: &[&str],
) -> (serde_json::Value, serde_json::Value, St) {
    let (summary, report, st) = run_tokens_with(model, tokens, extra, true);
    (summary, report.unwrap_or_default(), st)
}

/// [`run_tokens_reported`] without `--report` (whose held-out score takes seconds in a debug
/// build): (summary JSON, output).
pub fn run_tokens(model: &Path, tokens: &str, extra: &[&str]) -> (serde_json::Value, St) {
    let (summary, _, st) = run_tokens_with(model, tokens, extra, false);
    (summary, st)
}

fn run_tokens_with(
    model: &Path,
    tokens: &str,
    extra: &[&str],
    report: bool,
) -> (serde_json::Value, Option<serde_json::Value>, St) {
    let sb = Sandbox::new();
    let mut cmd = sb.cmd();
    cmd.arg("-m")
        .arg(model)
        .args(["-v", "-", "-o", "out.safetensors", "--json", "-q"]);
    if report {
        cmd.args(["--report", "report.json"]);
    }
    let a = cmd.args(extra).write_stdin(tokens).assert().success();
    let summary = serde_json::from_str(&stdout_of(&a)).unwrap();
    let report = report.then(|| {
        serde_json::from_str(&std::fs::read_to_string(sb.path("report.json")).unwrap()).unwrap()
    });
    (summary, report, read_st(&sb.path("out.safetensors")))
}

/// Source rows by token, as f32.
pub fn source_rows(dir: &Path, tensor: &str) -> (HashMap<String, usize>, Vec<f32>, usize) {
    let st = read_st(&dir.join("model.safetensors"));
    let (_, shape, data) = &st.tensors[tensor];
    let ids = lines(&dir.join("vocab.txt"))
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i))
        .collect();
    (ids, f32s(data), shape[1])
}

pub fn out_row(st: &St, i: usize) -> Vec<f32> {
    let (_, shape, data) = &st.tensors["weight"];
    let dim = shape[1];
    f32s(&data[i * dim * 4..(i + 1) * dim * 4])
}

pub fn assert_mean_of(
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

/// Writes a zip `.bin` with the given data.pkl bytes (stored, as torch writes it).
pub fn write_zip_bin(path: &Path, entries: &[(&str, &[u8])]) {
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

// ---------------------------------------------------------------- finetune and evaluate (issue 4)

/// A small synthetic sentiment set whose label is decided by which tokens occur: each sentence has
/// neutral characters plus two from its class's set. Deterministic (a tiny LCG).
pub fn synthetic(dir: &Path) {
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
pub fn finetune_sandbox() -> Sandbox {
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

pub fn finetune(sb: &Sandbox, out: &str, extra: &[&str]) -> serde_json::Value {
    let a = sb
        .finetune_cmd()
        .args(["--train", "train.tsv"])
        .args([
            "--valid", "dev.tsv", "--test", "test.tsv", "-o", out, "--json", "--lr", "0.05",
        ])
        .args(extra)
        .assert()
        .success();
    serde_json::from_str(&stdout_of(&a)).unwrap()
}

/// A safetensors file from a raw JSON header and data bytes.
pub fn raw_st(path: &Path, header: &str, data: &[u8]) {
    let mut h = header.as_bytes().to_vec();
    while h.len() % 8 != 0 {
        h.push(b' ');
    }
    let mut b = (h.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(&h);
    b.extend_from_slice(data);
    std::fs::write(path, b).unwrap();
}

/// Every entry under `dir` (relative path -> bytes; a symlink as `-> target`, a directory as
/// `/`): to show that a run left a tree exactly as it was.
pub fn tree_bytes(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, format!("-> {}", t.display()).into_bytes());
            } else if meta.is_dir() {
                out.insert(rel, b"/".to_vec());
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A deterministic stream of values in [-1, 1) (an LCG).
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// The interpreter of the Python tests: `$EMBED_TRANSPLANT_PYTHON`, else `python3`, checked to
/// `import {modules}`. The tests that call this are `#[ignore = "needs python: ..."]`, so that a
/// plain `cargo test` lists them as ignored; run (`-- --include-ignored`, as CI does) they fail
/// here, naming what is missing, when the interpreter lacks a module.
pub fn python(modules: &str) -> String {
    let python = std::env::var("EMBED_TRANSPLANT_PYTHON").unwrap_or_else(|_| "python3".into());
    let o = std::process::Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{python}` ($EMBED_TRANSPLANT_PYTHON): {e}"));
    assert!(
        o.status.success(),
        "`{python}` cannot `import {modules}` (set $EMBED_TRANSPLANT_PYTHON to a venv that has \
         them; .ci/run makes one): {}",
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .last()
            .unwrap_or("")
    );
    python
}

/// Whether a test that checks its output in Rust also checks it in Python. Such a test runs twice:
/// as itself with `Skip`, and as `<name>_in_transformers` with `Check`, ignored unless
/// `--include-ignored`.
#[derive(Clone, Copy)]
pub enum Python {
    Skip,
    Check,
}

/// A spawned command whose stderr is read line by line on a thread, so that a signal test can wait
/// for the line saying the process is in the state it needs, instead of sleeping and hoping.
pub struct Watched {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// The stderr lines read so far.
    pub seen: Vec<String>,
}

impl Watched {
    pub fn spawn(cmd: &mut std::process::Command) -> Self {
        let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufRead::lines(std::io::BufReader::new(err)) {
                if l.map(|l| tx.send(l)).is_err() {
                    break;
                }
            }
        });
        Watched {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Returns once a stderr line satisfies `ready`; fails the test, naming `what` and showing what
    /// stderr said, when stderr ends first or after 60 s.
    pub fn wait_for(&mut self, what: &str, ready: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = ready(&l);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(e) => panic!("waited for {what} on stderr ({e}); it said {:?}", self.seen),
            }
        }
    }

    /// Sends `sig` (a name such as INT) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig}");
    }

    /// Waits for the process; returns its status and the stderr lines not yet seen.
    pub fn finish(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.child.wait().unwrap();
        (status, self.lines.iter().collect())
    }
}

/// A finetune of the sandbox's data that would run 100,000 epochs (with `extra` flags), once its
/// first epoch's line is out: training, and the signal handler, are running. Not -q, for that line.
#[cfg(unix)]
pub fn endless_finetune(sb: &Sandbox, extra: &[&str]) -> Watched {
    let mut run = Watched::spawn(
        std::process::Command::new(assert_cmd::cargo::cargo_bin!("embed-transplant"))
            .current_dir(sb.dir.path())
            .env("HF_HOME", sb.hf_home())
            .args([
                "finetune",
                "--embeddings",
                "emb.safetensors",
                "-v",
                "vocab.txt",
            ])
            .args([
                "--train",
                "train.tsv",
                "--epochs",
                "100000",
                "-o",
                "ft.safetensors",
            ])
            .args(extra),
    );
    run.wait_for("the first epoch's line", |l| {
        l.starts_with("epoch 1/100000:")
    });
    run
}

/// One method's row of a `score --json` report.
pub fn method<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["scores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["method"] == name)
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

//! Hostile input, round 2 (issue 8): signals mid-write, outputs that must not be clobbered, token
//! leaks, metadata bombs, unbounded streams, silent NaN and overflow. Each test failed on 203a58e.

use crate::common::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A model directory with one f32 (or f64) tensor `wte.weight` of the given rows, a vocab.txt of
/// `tokens`, and optionally a config.json.
fn tiny_model(dir: &Path, rows: &[Vec<f64>], tokens: &[&str], f64s: bool, config: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    let cols = rows[0].len();
    let (dtype, data): (safetensors::Dtype, Vec<u8>) = if f64s {
        (
            safetensors::Dtype::F64,
            rows.iter()
                .flatten()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        )
    } else {
        (
            safetensors::Dtype::F32,
            rows.iter()
                .flatten()
                .flat_map(|v| (*v as f32).to_le_bytes())
                .collect(),
        )
    };
    let view = safetensors::tensor::TensorView::new(dtype, vec![rows.len(), cols], &data).unwrap();
    safetensors::serialize_to_file([("wte.weight", view)], None, &dir.join("model.safetensors"))
        .unwrap();
    std::fs::write(dir.join("vocab.txt"), tokens.join("\n") + "\n").unwrap();
    if let Some(c) = config {
        std::fs::write(dir.join("config.json"), c).unwrap();
    }
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".embed-transplant-"))
        .collect()
}

/// Sends `sig` to a child held in the write pause: it must exit at once (well before the 30 s
/// pause would have ended: the signal does not wait for the writer) with `code` and one line.
fn interrupt(mut child: std::process::Child, sig: &str, code: i32) {
    let sent = Instant::now();
    signal(child.id(), sig);
    let status = child.wait().unwrap();
    assert!(sent.elapsed() < Duration::from_secs(10), "{sig}: too slow");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(code), "{sig}: {err}");
    assert_eq!(err, format!("error: interrupted by SIG{sig}\n"));
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Bugs 1 and 2: a signal while the matrix is being written (the writer is held between blocks
/// by the test hook) ends the process at once with 128 + signal, and removes the temp file.
#[cfg(unix)]
#[test]
fn signals_mid_write_remove_the_temp_file_and_exit_128_plus_n() {
    for (sig, code) in [("INT", 130), ("TERM", 143), ("HUP", 129)] {
        let sb = Sandbox::new();
        let child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("embed-transplant"))
            .current_dir(sb.dir.path())
            .env("HF_HOME", sb.hf_home())
            .env("EMBED_TRANSPLANT_TEST_WRITE_PAUSE_MS", "30000")
            .arg("-m")
            .arg(bert_dir())
            .arg("-v")
            .arg(target_vocab())
            .args(["-o", "out.safetensors", "-q"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the temp file holds bytes: the writer buffers 1 MB and flushes only before
        // each pause, so the first bytes on disk mean it is inside the first pause.
        let start = Instant::now();
        while !temp_files(sb.dir.path())
            .iter()
            .any(|t| std::fs::metadata(sb.path(t)).is_ok_and(|m| m.len() > 0))
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{sig}: the writer never reached its pause (no bytes in a temp file after 60 s)"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        interrupt(child, sig, code);
        assert_eq!(sb.files(), Vec::<String>::new(), "{sig}: files left");
    }
}

/// Bug 2 for training: TERM and HUP end `finetune` like INT, leaving nothing.
#[cfg(unix)]
#[test]
fn signals_during_finetune_leave_nothing() {
    for (sig, code) in [("TERM", 143), ("HUP", 129)] {
        let sb = finetune_sandbox();
        let before = sb.files();
        // Not -q: the first epoch's line says that training (and the signal handler) is running.
        let run = endless_finetune(&sb, &["--head", "head.safetensors"]);
        run.signal(sig);
        let (status, rest) = run.finish();
        assert_eq!(status.code(), Some(code), "{sig}: {rest:?}");
        assert_eq!(
            rest.last().map(String::as_str),
            Some(format!("error: interrupted by SIG{sig}").as_str())
        );
        assert_eq!(sb.files(), before, "{sig}");
    }
}

/// Bug 3: `--report` follows the output's rules, checked before any work starts.
#[cfg(unix)]
#[test]
fn report_path_is_never_clobbered_or_written_through() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("old.json"), b"{\"keep\": true}").unwrap();
    let vocab_copy = sb.path("vocab.txt");
    std::fs::copy(target_vocab(), &vocab_copy).unwrap();
    let model = sb.path("model");
    std::fs::create_dir(&model).unwrap();
    for e in std::fs::read_dir(bert_dir()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), model.join(e.file_name())).unwrap();
    }
    let fifo = sb.path("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let cases: Vec<(PathBuf, bool, &str)> = vec![
        (
            sb.path("old.json"),
            false,
            "exists; pass --force to replace it",
        ),
        (
            vocab_copy.clone(),
            true,
            "--report names an input of this run",
        ),
        (
            model.join("model.safetensors"),
            true,
            "--report names an input of this run",
        ),
        (
            model.join("config.json"),
            true,
            "--report names an input of this run",
        ),
        (fifo.clone(), true, "--report names a special file"),
        (
            PathBuf::from("/dev/null"),
            true,
            "--report names a special file",
        ),
        (sb.path("adir"), true, "--report names a directory"),
    ];
    std::fs::create_dir(sb.path("adir")).unwrap();
    for (report, force, msg) in cases {
        let mut c = sb.cmd();
        c.arg("-m")
            .arg(&model)
            .arg("-v")
            .arg(&vocab_copy)
            .args(["-o", "out.safetensors"])
            .arg("--report")
            .arg(&report);
        if force {
            c.arg("--force");
        }
        let a = c.timeout(Duration::from_secs(60)).assert().code(1);
        let err = stderr_of(&a);
        assert!(err.contains(msg), "{report:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!sb.path("out.safetensors").exists(), "{report:?}");
    }
    assert_eq!(
        std::fs::read(sb.path("old.json")).unwrap(),
        b"{\"keep\": true}"
    );
    assert_eq!(
        std::fs::read(&vocab_copy).unwrap(),
        std::fs::read(target_vocab()).unwrap()
    );
    // -o naming the source checkpoint is refused even with --force.
    let a = sb
        .cmd()
        .arg("-m")
        .arg(&model)
        .arg("-v")
        .arg(&vocab_copy)
        .arg("-o")
        .arg(model.join("model.safetensors"))
        .arg("--force")
        .assert()
        .code(1);
    assert!(stderr_of(&a).contains("--output names an input of this run"));
    assert_eq!(
        std::fs::read(model.join("model.safetensors")).unwrap(),
        std::fs::read(bert_dir().join("model.safetensors")).unwrap()
    );
    // With --force and a plain path, the report is written (atomically, beside the output).
    sb.cmd()
        .arg("-m")
        .arg(&model)
        .arg("-v")
        .arg(&vocab_copy)
        .args([
            "-o",
            "out.safetensors",
            "--report",
            "old.json",
            "--force",
            "-q",
        ])
        .assert()
        .success();
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sb.path("old.json")).unwrap()).unwrap();
    assert_eq!(r["summary"]["rows"], 2000);
}

/// The binary with a cleaned environment, as a plain std Command (for redirecting stdout).
fn std_cmd(sb: &Sandbox) -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin!("embed-transplant"));
    c.current_dir(sb.dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HF_HOME", sb.hf_home());
    c
}

/// Bug 4: exit 1 means no new file, even when the failure is the last thing (stdout full).
#[cfg(target_os = "linux")]
#[test]
fn a_failed_json_write_leaves_no_output() {
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let sb = Sandbox::new();
    let out = std_cmd(&sb)
        .arg("-m")
        .arg(bert_dir())
        .arg("-v")
        .arg(target_vocab())
        // Two staged files (--plot as the second: --report's held-out score would add seconds
        // to a debug run and is not what this checks).
        .args(["-o", "out.safetensors", "--json", "--plot", "p.svg"])
        .stdout(full())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("No space left"),
        "{err}"
    );
    assert_eq!(sb.files(), Vec::<String>::new());

    let sb = finetune_sandbox();
    let before = sb.files();
    let out = std_cmd(&sb)
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
            "1",
            "-o",
            "ft.safetensors",
        ])
        .args(["--head", "head.safetensors", "--json", "-q"])
        .stdout(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(sb.files(), before);
}

/// Bug 5: a token with a control character is a usage error that never shows it; a trailing
/// newline is trimmed (as huggingface_hub does); an endpoint's password never shows.
#[test]
fn tokens_and_endpoint_passwords_never_print() {
    let sb = Sandbox::new();
    for (how, token) in [("env", "hf_x\nX: y"), ("flag", "hf_x\u{7}bell")] {
        let mut c = sb.cmd();
        c.args(["-m", "org/model", "-o", "o.safetensors"])
            .arg("-v")
            .arg(target_vocab())
            .env("HF_ENDPOINT", "http://127.0.0.1:9");
        if how == "env" {
            c.env("HF_TOKEN", token);
        } else {
            c.args(["--token", token]);
        }
        let a = c.assert().code(2);
        let err = stderr_of(&a);
        assert!(err.contains("contains a control character"), "{err}");
        assert!(!err.contains("hf_x"), "{err}");
    }
    // A trailing newline is trimmed and the token works.
    let hub = hub_with_bert(&[]);
    sb.transplant("some-org/tiny-bert-chinese")
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_TOKEN", "hf_secret\n")
        .args(["-o", "a.safetensors", "-q"])
        .assert()
        .success();
    let auth: Vec<String> = hub
        .recorded()
        .iter()
        .filter_map(|r| r.header("authorization").map(String::from))
        .collect();
    assert!(!auth.is_empty());
    assert!(auth.iter().all(|a| a == "Bearer hf_secret"), "{auth:?}");
    // userinfo in the endpoint is never printed.
    let a = sb
        .transplant("org/model")
        .env("HF_ENDPOINT", "http://user:pa55word@127.0.0.1:9")
        .env("HF_TOKEN", "hf_tok")
        .args(["-o", "b.safetensors"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(
        !err.contains("pa55word") && !err.contains("hf_tok"),
        "{err}"
    );
    assert!(err.contains("127.0.0.1:9"), "{err}");
}

/// Rewrites a safetensors file's metadata key.
fn set_meta(path: &Path, key: &str, value: &str) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut m = meta.metadata().clone().unwrap_or_default();
    m.insert(key.to_string(), value.to_string());
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = st.tensors();
    let out = safetensors::serialize(tensors, Some(m)).unwrap();
    std::fs::write(path, out).unwrap();
}

/// Bug 6: `copied_rows` is parsed against the row count; bombs and rows past the end are
/// one-line errors naming the file and the key.
#[test]
fn copied_rows_metadata_is_hostile_input() {
    let sb = finetune_sandbox();
    for bad in [
        "0-18446744073709551615",
        "0-3000000000",
        "29",
        "0-2,x",
        "5-1",
    ] {
        set_meta(&sb.path("emb.safetensors"), "copied_rows", bad);
        let a = sb
            .finetune_cmd()
            .args([
                "--train",
                "train.tsv",
                "--epochs",
                "1",
                "-o",
                "ft.safetensors",
            ])
            .arg("--freeze-copied")
            .assert()
            .code(1);
        let err = stderr_of(&a);
        assert!(
            err.starts_with("error: emb.safetensors: metadata `copied_rows`: "),
            "{bad}: {err}"
        );
        assert_eq!(err.lines().count(), 1);
        assert!(!sb.path("ft.safetensors").exists());
    }
}

/// Bug 7: limits hold while streaming: /dev/zero and a long TSV line fail at once.
#[cfg(unix)]
#[test]
fn endless_and_huge_lines_fail_fast() {
    let sb = Sandbox::new();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(bert_dir())
        .args(["-o", "x.safetensors"])
        .args(["-v", "/dev/zero"])
        .timeout(Duration::from_secs(60))
        .assert()
        .code(1);
    assert_eq!(
        stderr_of(&a),
        "error: /dev/zero line 1: contains a NUL byte\n"
    );
    let sb = finetune_sandbox();
    let mut big = String::from("pos\t");
    big.push_str(&"好".repeat(700_000));
    std::fs::write(sb.path("big.tsv"), format!("label\ttext\n{big}\n")).unwrap();
    let a = sb
        .finetune_cmd()
        .args(["--train", "big.tsv", "-o", "ft.safetensors"])
        .assert()
        .code(1);
    assert!(
        stderr_of(&a).contains("big.tsv line 2: line is longer than 1048576 bytes"),
        "{}",
        stderr_of(&a)
    );
}

/// Bug 8: divergence stops training with an error naming epoch and step; NaN inputs are errors
/// (warnings with --allow-nonfinite); evaluate refuses a NaN head.
#[test]
fn training_never_diverges_silently() {
    let sb = finetune_sandbox();
    let before = sb.files();
    let a = sb
        .finetune_cmd()
        .args([
            "--train",
            "train.tsv",
            "--epochs",
            "3",
            "-o",
            "ft.safetensors",
        ])
        .args(["--head", "head.safetensors", "--lr", "1e30"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(err.contains("training diverged"), "{err}");
    assert!(
        err.contains("at epoch 1, step ") || err.contains("after epoch 1"),
        "{err}"
    );
    assert_eq!(sb.files(), before);

    // A good head for the evaluate check below.
    sb.finetune_cmd()
        .args([
            "--train",
            "train.tsv",
            "--epochs",
            "1",
            "-o",
            "ft.safetensors",
        ])
        .args(["--head", "head.safetensors", "-q"])
        .assert()
        .success();

    // One NaN in the embeddings.
    let bytes = std::fs::read(sb.path("emb.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut nan = bytes.clone();
    nan[8 + n + 4 * 32 * 3..8 + n + 4 * 32 * 3 + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(sb.path("nan.safetensors"), &nan).unwrap();
    let a = sb
        .cmd()
        .args([
            "finetune",
            "--embeddings",
            "nan.safetensors",
            "-v",
            "vocab.txt",
        ])
        .args([
            "--train",
            "train.tsv",
            "--epochs",
            "1",
            "-o",
            "nan-ft.safetensors",
        ])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(
        err.contains(
            "tensor `weight` in nan.safetensors: 1 row(s) hold NaN or infinity (first: row 3)"
        ),
        "{err}"
    );
    let a = sb
        .cmd()
        .args([
            "evaluate",
            "--embeddings",
            "nan.safetensors",
            "-v",
            "vocab.txt",
        ])
        .args(["--head", "head.safetensors", "--data", "test.tsv"])
        .assert()
        .code(1);
    assert!(stderr_of(&a).contains("--allow-nonfinite"));
    // With --allow-nonfinite the NaN goes in, and training stops at the first NaN loss.
    let a = sb
        .cmd()
        .args([
            "finetune",
            "--embeddings",
            "nan.safetensors",
            "-v",
            "vocab.txt",
        ])
        .args([
            "--train",
            "train.tsv",
            "--epochs",
            "1",
            "-o",
            "nan-ft.safetensors",
        ])
        .arg("--allow-nonfinite")
        .assert();
    let out = a.get_output();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: tensor `weight`"), "{err}");
    if !out.status.success() {
        assert!(err.contains("training diverged"), "{err}");
        assert!(!sb.path("nan-ft.safetensors").exists());
    }

    // A NaN head.
    let hb = std::fs::read(sb.path("head.safetensors")).unwrap();
    let n = u64::from_le_bytes(hb[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&hb[8..8 + n]).into_owned();
    let mut bad = hb.clone();
    let at = if header.find("\"weight\"") > header.find("\"bias\"") {
        8 + n + 2 * 4
    } else {
        8 + n
    };
    bad[at..at + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    std::fs::write(sb.path("badhead.safetensors"), bad).unwrap();
    let a = sb
        .cmd()
        .args([
            "evaluate",
            "--embeddings",
            "emb.safetensors",
            "-v",
            "vocab.txt",
        ])
        .args(["--head", "badhead.safetensors", "--data", "test.tsv"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(err.contains("badhead.safetensors"), "{err}");
    assert!(err.contains("NaN or infinity"), "{err}");
}

/// Bug 9: an implausible initializer_range is a warning naming config.json; the source std is
/// used and said so.
#[test]
fn implausible_initializer_range_falls_back_to_the_std() {
    for bad in ["1e39", "1e-50", "0", "-0.5", "1e30"] {
        let sb = Sandbox::new();
        let dir = sb.path("m");
        let rows: Vec<Vec<f64>> = (0..4)
            .map(|r| (0..8).map(|c| ((r * 8 + c) as f64 * 0.37).sin()).collect())
            .collect();
        tiny_model(
            &dir,
            &rows,
            &["a", "b", "c", "d"],
            false,
            Some(&format!("{{\"initializer_range\": {bad}}}")),
        );
        let a = sb
            .cmd()
            .arg("-m")
            .arg(&dir)
            .args([
                "-v",
                "-",
                "-o",
                "o.safetensors",
                "--json",
                "--init",
                "random",
            ])
            .write_stdin("a\nzz\n")
            .assert()
            .success();
        let err = stderr_of(&a);
        assert!(
            err.contains("config.json: initializer_range") && err.contains("not a plausible"),
            "{bad}: {err}"
        );
        let j: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
        let sigma = j["sigma"].as_f64().unwrap();
        assert!(sigma > 0.3 && sigma < 1.0, "{bad}: sigma {sigma}");
        assert!(j["sigma_from"].as_str().unwrap().contains("ignored"));
        let st = read_st(&sb.path("o.safetensors"));
        let row = f32s(&st.tensors["weight"].2[8 * 4..]);
        assert!(row.iter().all(|v| v.is_finite()) && row.iter().any(|v| *v != 0.0));
    }
}

/// Bug 10: conversions that overflow are counted (a warning), an error under --strict; an f64
/// source beyond f32 is not "NaN or infinity in the source".
#[test]
fn overflow_on_conversion_is_reported() {
    let sb = Sandbox::new();
    let dir = sb.path("big");
    tiny_model(
        &dir,
        &[vec![1e5, 1.0], vec![0.5, 0.25]],
        &["a", "b"],
        false,
        None,
    );
    let a = sb
        .cmd()
        .arg("-m")
        .arg(&dir)
        .args(["-v", "-", "-o", "h.safetensors", "--dtype", "f16", "--json"])
        .write_stdin("a\nb\n")
        .assert()
        .success();
    assert!(
        stderr_of(&a).contains("1 row(s) overflow to infinity as f16"),
        "{}",
        stderr_of(&a)
    );
    let j: serde_json::Value = serde_json::from_str(&stdout_of(&a)).unwrap();
    assert_eq!(j["overflow_rows"], 1);
    let a = sb
        .cmd()
        .arg("-m")
        .arg(&dir)
        .args([
            "-v",
            "-",
            "-o",
            "s.safetensors",
            "--dtype",
            "f16",
            "--strict",
        ])
        .write_stdin("a\nb\n")
        .assert()
        .code(1);
    assert!(stderr_of(&a).contains("overflow to infinity as f16"));
    assert!(!sb.path("s.safetensors").exists());

    let dir = sb.path("f64");
    tiny_model(
        &dir,
        &[vec![1e300, 1.0], vec![0.5, 0.25]],
        &["a", "b"],
        true,
        None,
    );
    // Copied as f64: bit for bit, nothing to say.
    let a = sb
        .cmd()
        .arg("-m")
        .arg(&dir)
        .args(["-v", "-", "-o", "d.safetensors", "--strict"])
        .write_stdin("a\nb\n")
        .assert()
        .success();
    assert!(!stderr_of(&a).contains("NaN"), "{}", stderr_of(&a));
    let a = sb
        .cmd()
        .arg("-m")
        .arg(&dir)
        .args(["-v", "-", "-o", "f.safetensors", "--dtype", "f32"])
        .write_stdin("a\nb\n")
        .assert()
        .success();
    let err = stderr_of(&a);
    assert!(
        err.contains("1 row(s) overflow to infinity as f32"),
        "{err}"
    );
    assert!(!err.contains("NaN or infinity"), "{err}");
}

/// Doubtful behaviour, settled: `-` as an output is refused (never a file named `-`); a dangling
/// symlink or existing file says "exists; pass --force".
#[cfg(unix)]
#[test]
fn dash_outputs_and_dangling_links() {
    let sb = Sandbox::new();
    for flag in ["-o", "--report"] {
        let mut c = sb.transplant(bert_dir());
        if flag == "--report" {
            c.args(["-o", "x.safetensors"]);
        }
        let a = c.args([flag, "-"]).assert().code(2);
        assert!(
            stderr_of(&a).contains("standard output is not supported"),
            "{}",
            stderr_of(&a)
        );
        assert_eq!(sb.files(), Vec::<String>::new());
    }
    std::os::unix::fs::symlink(sb.path("nowhere"), sb.path("link.safetensors")).unwrap();
    let a = sb
        .transplant(bert_dir())
        .args(["-o", "link.safetensors"])
        .assert()
        .code(1);
    assert_eq!(
        stderr_of(&a),
        format!(
            "error: {}: exists; pass --force to replace it\n",
            "link.safetensors"
        )
    );
}

/// Doubtful behaviour, settled: the dry run refuses what the transplant refuses; `[N, 0]` is
/// refused.
#[test]
fn inspect_dry_run_runs_the_transplant_checks() {
    let sb = Sandbox::new();
    let cases: [(&str, &str, Vec<usize>, &str); 4] = [
        ("zero-rows", "F32", vec![0, 4], "is empty"),
        ("zero-cols", "F32", vec![3, 0], "is empty"),
        ("ints", "I64", vec![3, 2], "not a float type"),
        ("few-rows", "F32", vec![2, 2], "fewer than the 3 tokens"),
    ];
    for (name, dtype, shape, msg) in cases {
        let dir = sb.path(name);
        std::fs::create_dir(&dir).unwrap();
        let elem = if dtype == "I64" { 8 } else { 4 };
        let len = shape.iter().product::<usize>() * elem;
        raw_st(
            &dir.join("model.safetensors"),
            &format!(
                "{{\"wte.weight\":{{\"dtype\":\"{dtype}\",\"shape\":{shape:?},\"data_offsets\":[0,{len}]}}}}"
            ),
            &vec![0u8; len],
        );
        std::fs::write(dir.join("vocab.txt"), "a\nb\nc\n").unwrap();
        for cmd in ["inspect", "transplant"] {
            let mut c = sb.cmd();
            c.arg(cmd).arg("-m").arg(&dir).args(["-v", "-"]);
            if cmd == "transplant" {
                c.args(["-o", "x.safetensors"]);
            }
            let a = c.write_stdin("a\nq\n").assert().code(1);
            let err = stderr_of(&a);
            assert!(err.contains(msg), "{name} {cmd}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        assert!(!sb.path("x.safetensors").exists());
    }
}

/// Doubtful behaviour, settled: a vocabulary other than the one the embeddings were made for is
/// refused by finetune and evaluate (same length, shuffled), unless --ignore-vocab-mismatch.
#[test]
fn a_shuffled_vocabulary_is_refused() {
    let sb = finetune_sandbox();
    let mut lines = lines(&sb.path("vocab.txt"));
    lines.swap(2, 3);
    std::fs::write(sb.path("shuffled.txt"), lines.join("\n") + "\n").unwrap();
    let a = sb
        .cmd()
        .args([
            "finetune",
            "--embeddings",
            "emb.safetensors",
            "-v",
            "shuffled.txt",
        ])
        .args([
            "--train",
            "train.tsv",
            "--epochs",
            "1",
            "-o",
            "ft.safetensors",
        ])
        .assert()
        .code(1);
    assert!(
        stderr_of(&a).contains("was built for another vocabulary than shuffled.txt"),
        "{}",
        stderr_of(&a)
    );
    sb.cmd()
        .args([
            "finetune",
            "--embeddings",
            "emb.safetensors",
            "-v",
            "shuffled.txt",
        ])
        .args([
            "--train",
            "train.tsv",
            "--epochs",
            "1",
            "-o",
            "ft.safetensors",
            "-q",
        ])
        .args(["--ignore-vocab-mismatch", "--head", "h.safetensors"])
        .assert()
        .success();
    let a = sb
        .cmd()
        .args([
            "evaluate",
            "--embeddings",
            "emb.safetensors",
            "-v",
            "shuffled.txt",
        ])
        .args(["--head", "h.safetensors", "--data", "test.tsv"])
        .assert()
        .code(1);
    assert!(stderr_of(&a).contains("--ignore-vocab-mismatch"));
}

/// Doubtful behaviour, settled: suspicious lines are warned about with their numbers; training
/// lines with no token are counted.
#[test]
fn suspicious_lines_are_warned_about() {
    let sb = Sandbox::new();
    let a = sb
        .cmd()
        .arg("-m")
        .arg(bert_dir())
        .args(["-v", "-", "-o", "x.safetensors", "-q"])
        .write_stdin("中\n  \n国\na\tb\nc\rd\n")
        .assert()
        .success();
    let err = stderr_of(&a);
    assert!(
        err.contains("<stdin>: 1 line(s) hold only whitespace (line 2)"),
        "{err}"
    );
    assert!(
        err.contains("<stdin>: 2 line(s) hold an inner carriage return or tab (line 4, 5)"),
        "{err}"
    );
    let sb = finetune_sandbox();
    std::fs::write(
        sb.path("odd.tsv"),
        "label\ttext\npos\t好\nneg\t差\npos\t@@@\nneg\t   \n",
    )
    .unwrap();
    let a = sb
        .finetune_cmd()
        .args([
            "--train",
            "odd.tsv",
            "--epochs",
            "1",
            "-o",
            "ft.safetensors",
            "-q",
        ])
        .args(["--unk-token", "none"])
        .assert()
        .success();
    assert!(
        stderr_of(&a).contains("odd.tsv: 2 training line(s) yield no token"),
        "{}",
        stderr_of(&a)
    );
}

/// Doubtful behaviour, settled: a source vocab.txt repeating a token warns, and the last line's
/// id is used (as transformers' BertTokenizer does).
#[test]
fn a_repeated_source_token_uses_the_last_id() {
    let sb = Sandbox::new();
    let dir = sb.path("m");
    let rows: Vec<Vec<f64>> = (0..4).map(|r| vec![r as f64, r as f64 + 0.5]).collect();
    tiny_model(&dir, &rows, &["[UNK]", "x", "y", "x"], false, None);
    let a = sb
        .cmd()
        .arg("-m")
        .arg(&dir)
        .args(["-v", "-", "-o", "o.safetensors"])
        .write_stdin("x\n")
        .assert()
        .success();
    assert!(
        stderr_of(&a).contains("1 token(s) occur on more than one line"),
        "{}",
        stderr_of(&a)
    );
    let st = read_st(&sb.path("o.safetensors"));
    assert_eq!(f32s(&st.tensors["weight"].2), vec![3.0, 3.5]);
}

/// Doubtful behaviour, settled: a cache that cannot be read is reported as such, not as a miss.
#[test]
fn an_unreadable_cache_is_not_a_cache_miss() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("not-a-dir"), b"x").unwrap();
    let a = sb
        .transplant("org/model")
        .env("HF_HUB_CACHE", sb.path("not-a-dir"))
        .env("HF_HUB_OFFLINE", "1")
        .args(["-o", "o.safetensors"])
        .assert()
        .code(1);
    let err = stderr_of(&a);
    assert!(err.contains("the hub cache cannot be read"), "{err}");
    assert!(!err.contains("not in the cache"), "{err}");
}

/// The same for `--emit-model DIR`: a signal while the directory's weights are being written
/// (held after each tensor by the test hook) exits 128 + n and leaves no DIR and no temp
/// directory; an existing DIR that `--force` would have replaced is left as it was.
#[cfg(unix)]
#[test]
fn signals_mid_emit_model_remove_the_temp_dir_and_exit_128_plus_n() {
    for (sig, code) in [("INT", 130), ("TERM", 143), ("HUP", 129)] {
        for existing in [false, true] {
            let sb = Sandbox::new();
            if existing {
                // An earlier output of ours (--force replaces nothing else).
                sb.transplant(bert_dir())
                    .args(["--emit-model", "out", "-q", "--seed", "7"])
                    .assert()
                    .success();
            }
            let before = existing.then(|| tree_bytes(&sb.path("out")));
            let child =
                std::process::Command::new(assert_cmd::cargo::cargo_bin!("embed-transplant"))
                    .current_dir(sb.dir.path())
                    .env("HF_HOME", sb.hf_home())
                    .env("EMBED_TRANSPLANT_TEST_WRITE_PAUSE_MS", "30000")
                    .arg("-m")
                    .arg(bert_dir())
                    .arg("-v")
                    .arg(target_vocab())
                    .args(["--emit-model", "out", "--force", "-q"])
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
            // Wait until the temp directory's weights file holds bytes: the weights writer
            // buffers 1 MB and flushes only before each pause, so the first bytes on disk mean
            // it is inside the pause after its first tensor.
            let start = Instant::now();
            loop {
                let t = temp_files(sb.dir.path());
                if t.len() == 1
                    && std::fs::metadata(sb.path(&t[0]).join("model.safetensors"))
                        .is_ok_and(|m| m.len() > 0)
                {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "{sig}: the weights writer never reached its pause (after 60 s)"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            interrupt(child, sig, code);
            if let Some(before) = before {
                assert_eq!(sb.files(), vec!["out"], "{sig}: files left");
                assert_eq!(
                    tree_bytes(&sb.path("out")),
                    before,
                    "{sig}: the existing DIR changed"
                );
            } else {
                assert_eq!(sb.files(), Vec::<String>::new(), "{sig}: files left");
            }
        }
    }
}

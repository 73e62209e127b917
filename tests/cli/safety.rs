//! Never lose a user's data (issue 19, items 1-3): inputs are never replaced or removed by any
//! spelling (hub cache entries, shards, parents of inputs), `--force` deletes only what we wrote,
//! and a run killed at any moment leaves each target old or new, whole. Each test failed before.

use crate::common::*;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

/// The binary with a cleaned environment, as a plain std Command (for spawning and killing).
fn std_cmd(sb: &Sandbox) -> StdCommand {
    let mut c = StdCommand::new(assert_cmd::cargo::cargo_bin!("embed-transplant"));
    c.current_dir(sb.dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HF_HOME", sb.hf_home());
    c
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            copy_dir(&p, &to.join(p.file_name().unwrap()));
        } else {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// Names in `dir` that are temp files or directories of ours.
fn temps_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".embed-transplant-"))
        .collect()
}

/// Asserts exit code `code`, one line on stderr holding every one of `needles`; returns it.
fn refused(a: assert_cmd::assert::Assert, code: i32, needles: &[&str]) -> String {
    let a = a.code(code);
    let err = stderr_of(&a);
    assert_eq!(err.lines().count(), 1, "{err}");
    for n in needles {
        assert!(err.contains(n), "wanted {n:?} in: {err}");
    }
    err
}

fn signal(pid: u32, sig: &str) {
    let ok = StdCommand::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Item 1: a DIR to replace that holds an input at any depth (not only as its parent) is refused,
/// by any spelling, even with --force; the inputs stay byte for byte.
#[test]
fn emit_model_never_replaces_a_directory_holding_an_input() {
    let sb = Sandbox::new();
    copy_dir(&bert_dir(), &sb.path("proj/models/bert"));
    std::fs::create_dir_all(sb.path("proj/data")).unwrap();
    std::fs::copy(target_vocab(), sb.path("proj/data/v.txt")).unwrap();
    std::fs::create_dir_all(sb.path("proj/aux")).unwrap();
    std::fs::copy(bert_dir().join("vocab.txt"), sb.path("proj/aux/vocab.txt")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(sb.path("proj"), sb.path("link")).unwrap();
    let before = tree_bytes(&sb.path("proj"));
    let mut dirs = vec![
        "proj",
        "./proj/../proj",
        "proj/models",
        "proj/models/bert",
        "proj/data",
        "proj/aux",
    ];
    if cfg!(unix) {
        dirs.push("link/models");
    }
    for dir in dirs {
        let a = sb
            .cmd()
            .args(["-m", "proj/models/bert", "-v", "proj/data/v.txt"])
            .args(["--source-vocab", "proj/aux/vocab.txt", "-q", "--force"])
            .args(["--emit-model", dir])
            .assert();
        refused(
            a,
            1,
            &[
                "--emit-model names a directory holding an input of this run",
                "refused, even with --force",
            ],
        );
        assert_eq!(tree_bytes(&sb.path("proj")), before, "{dir}");
        assert!(temps_in(sb.dir.path()).is_empty(), "{dir}");
    }
    // `--emit-model .` from inside the project that holds the vocabulary.
    let a = sb
        .cmd()
        .current_dir(sb.path("proj"))
        .args(["-m", "models/bert", "-v", "data/v.txt"])
        .args(["--emit-model", ".", "--force", "-q"])
        .assert();
    refused(a, 1, &["holding an input of this run"]);
    assert_eq!(tree_bytes(&sb.path("proj")), before);
}

/// Item 1 for the hub: the cache entry of a hub model (`models--org--name`, its `blobs/`, any
/// parent of it) is never replaced, and no output lands inside it, not even through a snapshot
/// symlink onto a shard.
#[test]
fn a_hub_cache_entry_is_an_input_whole() {
    let sb = Sandbox::new();
    let hub = FakeHub::start(vec![RepoSpec::new(
        "org/llama",
        fixtures().join("tiny-llama-sharded"),
    )]);
    // Every shard in the cache.
    sb.transplant("org/llama")
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["--emit-model", "first", "--extend", "-q"])
        .assert()
        .success();
    let entry = sb.hf_home().join("hub/models--org--llama");
    let snap = entry.join("snapshots").join(hub.commit_of("org/llama"));
    assert!(
        std::fs::symlink_metadata(snap.join("model-00002-of-00002.safetensors"))
            .unwrap()
            .is_symlink()
    );
    let before = tree_bytes(&sb.hf_home());
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let holding = "--emit-model names a directory holding an input of this run";
    let inside_dir = "--emit-model names a directory inside";
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--emit-model".into(), s(&entry)], holding),
        (
            vec!["--emit-model".into(), s(&entry.join("snapshots"))],
            inside_dir,
        ),
        (
            vec!["--emit-model".into(), s(&sb.hf_home().join("hub"))],
            holding,
        ),
        (vec!["--emit-model".into(), s(&sb.hf_home())], holding),
        (
            vec!["--emit-model".into(), s(&entry.join("blobs"))],
            inside_dir,
        ),
        (
            vec!["--emit-model".into(), s(&entry.join("refs"))],
            inside_dir,
        ),
        (
            vec![
                "-o".into(),
                s(&snap.join("model-00002-of-00002.safetensors")),
            ],
            "--output names",
        ),
        (
            vec!["-o".into(), s(&entry.join("blobs/new.safetensors"))],
            "--output names a path inside",
        ),
        (
            vec![
                "-o".into(),
                "m.safetensors".into(),
                "--report".into(),
                s(&snap.join("config.json")),
            ],
            "--report names",
        ),
    ];
    for (args, msg) in cases {
        let a = sb
            .transplant("org/llama")
            .env("HF_ENDPOINT", hub.endpoint())
            .args(&args)
            .args(["--force", "-q"])
            .assert();
        refused(a, 1, &[msg, "refused, even with --force"]);
        assert_eq!(tree_bytes(&sb.hf_home()), before, "{args:?}");
        assert!(!sb.path("m.safetensors").exists());
    }
    // A snapshot given as a local model directory: its cache entry is whole as well.
    let a = sb
        .transplant(&snap)
        .arg("-o")
        .arg(entry.join("blobs/new.safetensors"))
        .args(["--force", "-q"])
        .assert();
    refused(
        a,
        1,
        &["--output names a path inside", "refused, even with --force"],
    );
    let a = sb
        .transplant(&snap)
        .arg("--emit-model")
        .arg(entry.join("blobs"))
        .args(["--force", "-q"])
        .assert();
    refused(a, 1, &["holding an input of this run"]);
    assert_eq!(tree_bytes(&sb.hf_home()), before);
}

/// Item 1: every shard a sharded index names is an input, also when `-m` names the index.
#[test]
fn a_local_shard_is_never_an_output() {
    let sb = Sandbox::new();
    copy_dir(&fixtures().join("tiny-llama-sharded"), &sb.path("llama"));
    let before = tree_bytes(&sb.path("llama"));
    for model in ["llama/model.safetensors.index.json", "llama"] {
        for shard in [
            "llama/model-00001-of-00002.safetensors",
            "llama/model-00002-of-00002.safetensors",
            "./llama/../llama/model-00002-of-00002.safetensors",
        ] {
            let a = sb
                .transplant(model)
                .args(["-o", shard, "--force", "-q"])
                .assert();
            refused(
                a,
                1,
                &["--output names an input of this run", "even with --force"],
            );
            assert_eq!(tree_bytes(&sb.path("llama")), before, "{model} {shard}");
        }
    }
}

/// Item 1: two outputs that are one file by any spelling, or a file output inside the DIR that
/// is replaced whole, are refused before any work (exit 2: conflicting flags).
#[test]
fn outputs_that_overlap_are_refused() {
    let sb = Sandbox::new();
    for (o, report) in [("g", "./g"), ("g", "sub/../g"), ("./sub/x", "sub/x")] {
        std::fs::create_dir_all(sb.path("sub")).unwrap();
        let a = sb
            .transplant(bert_dir())
            .args(["-o", o, "--report", report, "--force", "-q"])
            .assert();
        refused(a, 2, &["--report and --output name the same file"]);
        assert_eq!(sb.files(), ["sub"], "{o} {report}");
    }
    // Through a symlink and a hard link to an existing output.
    std::fs::write(sb.path("g"), b"keep").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("g", sb.path("soft")).unwrap();
    std::fs::hard_link(sb.path("g"), sb.path("hard")).unwrap();
    for other in ["soft", "hard"] {
        if other == "soft" && !cfg!(unix) {
            continue;
        }
        let a = sb
            .transplant(bert_dir())
            .args(["-o", "g", "--plot", other, "--force", "-q"])
            .assert();
        refused(a, 2, &["--plot and --output name the same file"]);
        assert_eq!(std::fs::read(sb.path("g")).unwrap(), b"keep");
    }
    // finetune's -o and --head.
    let ft = finetune_sandbox();
    let before = tree_bytes(ft.dir.path());
    let a = ft
        .finetune_cmd()
        .args([
            "--train",
            "train.tsv",
            "-o",
            "f",
            "--head",
            "./f",
            "--force",
        ])
        .assert();
    refused(a, 2, &["--head and --output name the same file"]);
    assert_eq!(tree_bytes(ft.dir.path()), before);

    // A file output inside the directory --emit-model replaces.
    sb.transplant(bert_dir())
        .args(["--emit-model", "out", "-q"])
        .assert()
        .success();
    let out_before = tree_bytes(&sb.path("out"));
    for (flag, path) in [
        ("-o", "out/m.safetensors"),
        ("--report", "./out/r.json"),
        ("-o", "out/config.json"),
    ] {
        let mut c = sb.transplant(bert_dir());
        if flag != "-o" {
            c.args(["-o", "m.safetensors"]);
        }
        let a = c
            .args([flag, path, "--emit-model", "out", "--force", "-q"])
            .assert();
        refused(a, 2, &[path, "is inside --emit-model out"]);
        assert_eq!(tree_bytes(&sb.path("out")), out_before, "{path}");
        assert!(!sb.path("m.safetensors").exists());
    }
}

/// Item 2: `--force` replaces an existing DIR only when it is empty or an earlier output of ours;
/// otherwise it names a file that would be lost and leaves everything as it was.
#[test]
fn force_replaces_only_an_empty_or_own_directory() {
    let sb = Sandbox::new();
    // `--emit-model . --force` in a project folder.
    std::fs::create_dir_all(sb.path("proj/src")).unwrap();
    std::fs::write(sb.path("proj/README.md"), b"# mine\n").unwrap();
    std::fs::write(sb.path("proj/Cargo.toml"), b"[package]\n").unwrap();
    std::fs::write(sb.path("proj/src/main.rs"), b"fn main() {}\n").unwrap();
    let proj = tree_bytes(&sb.path("proj"));
    let a = sb
        .transplant(bert_dir())
        .current_dir(sb.path("proj"))
        .args(["--emit-model", ".", "--force", "-q"])
        .assert();
    refused(
        a,
        1,
        &["./Cargo.toml: --emit-model . --force would delete this, which embed-transplant did not write"],
    );
    assert_eq!(tree_bytes(&sb.path("proj")), proj);

    // A transplant.json that is not ours does not make a directory ours.
    std::fs::create_dir(sb.path("other")).unwrap();
    std::fs::write(sb.path("other/transplant.json"), br#"{"tool": "x"}"#).unwrap();
    let a = sb
        .transplant(bert_dir())
        .args(["--emit-model", "other", "--force", "-q"])
        .assert();
    refused(
        a,
        1,
        &["other/transplant.json: --emit-model other --force would delete this"],
    );

    // An empty directory, then an earlier output of ours, are replaced.
    std::fs::create_dir(sb.path("out")).unwrap();
    for seed in ["1", "2"] {
        sb.transplant(bert_dir())
            .args(["--emit-model", "out", "--force", "-q", "--seed", seed])
            .assert()
            .success();
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sb.path("out/transplant.json")).unwrap()).unwrap();
    let mut listed: Vec<String> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut present: Vec<String> = tree_bytes(&sb.path("out")).into_keys().collect();
    present.sort();
    assert_eq!(listed, present, "transplant.json lists what was written");
    assert_eq!(doc["seed"], "2");
    // ... but not once the user put a file of their own in it.
    std::fs::write(sb.path("out/NOTES.md"), b"my notes").unwrap();
    let out = tree_bytes(&sb.path("out"));
    let a = sb
        .transplant(bert_dir())
        .args(["--emit-model", "out", "--force", "-q"])
        .assert();
    refused(
        a,
        1,
        &["out/NOTES.md: --emit-model out --force would delete this"],
    );
    assert_eq!(tree_bytes(&sb.path("out")), out);

    // `-o FILE --force`: a directory is never replaced; a regular file the user named is.
    let a = sb
        .transplant(bert_dir())
        .args(["-o", "proj", "--force", "-q"])
        .assert();
    refused(a, 1, &["proj: --output names a directory"]);
    assert_eq!(tree_bytes(&sb.path("proj")), proj);
}

/// Item 3: a file-size limit (`ulimit -f`, SIGXFSZ) is an ordinary one-line error: exit 1, the
/// earlier outputs kept as they were, no temp file or directory left.
#[cfg(unix)]
#[test]
fn a_file_size_limit_is_a_one_line_error_with_cleanup() {
    let sb = Sandbox::new();
    sb.transplant(bert_dir())
        .args([
            "-o",
            "m.safetensors",
            "--emit-model",
            "out",
            "-q",
            "--seed",
            "1",
        ])
        .assert()
        .success();
    let before = tree_bytes(sb.dir.path());
    for args in [&["-o", "m.safetensors"][..], &["--emit-model", "out"][..]] {
        let out = StdCommand::new("sh")
            .current_dir(sb.dir.path())
            .env("HF_HOME", sb.hf_home())
            // 64 blocks (32 or 64 KB): less than the matrix or the model's weights.
            .args(["-c", "ulimit -f 64; exec \"$0\" \"$@\""])
            .arg(assert_cmd::cargo::cargo_bin!("embed-transplant"))
            .arg("-m")
            .arg(bert_dir())
            .arg("-v")
            .arg(target_vocab())
            .args(args)
            .args(["--force", "-q", "--seed", "2"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: ") && err.contains("File too large"),
            "{err}"
        );
        assert_eq!(tree_bytes(sb.dir.path()), before, "{args:?}");
    }
}

/// Item 3: a signal while the tokenizer's side files are written leaves nothing. The write hook
/// holds each side file's writer for 300 ms, and the remove hook holds the signal thread for
/// 1.5 s between emptying the temp directory and removing it: a writer that could still create
/// a file (the bug) puts one in then, and the directory stays.
#[cfg(unix)]
#[test]
fn a_signal_while_side_files_are_written_leaves_nothing() {
    for (sig, code) in [("TERM", 143), ("INT", 130)] {
        let sb = Sandbox::new();
        let child = std_cmd(&sb)
            .env("EMBED_TRANSPLANT_TEST_WRITE_PAUSE_MS", "300")
            .env("EMBED_TRANSPLANT_TEST_REMOVE_PAUSE_MS", "1500")
            .arg("-m")
            .arg(bert_dir())
            .arg("-v")
            .arg(target_vocab())
            .args(["--emit-model", "out", "-q"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // config.json is the first side file: the others follow it 300 ms apart.
        let start = Instant::now();
        loop {
            let t = temps_in(sb.dir.path());
            if t.len() == 1 && sb.path(&t[0]).join("config.json").exists() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "no side file");
            std::thread::sleep(Duration::from_millis(5));
        }
        signal(child.id(), sig);
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{sig}: {err}");
        assert_eq!(err, format!("error: interrupted by SIG{sig}\n"));
        assert_eq!(sb.files(), Vec::<String>::new(), "{sig}: left behind");
    }
}

/// A small deterministic generator (xorshift64*), so that the kill moments are the same each run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Item 3, the way storage engines test it: SIGKILL at 50 seeded moments spread over a run that
/// replaces both a file (`-o`) and a directory (`--emit-model`, both --force). After each kill each
/// target is byte for byte its old content or the complete new one (a reference run's); the next
/// run removes what killed runs left (temp names carry the owner's pid) and succeeds. The write
/// and commit hooks stretch the writes and the commit (held 60 ms after the DIR swap and after the
/// file renames) so that kills land there too, not only in the reading and matching.
#[cfg(unix)]
#[test]
fn sigkill_at_any_moment_leaves_each_target_old_or_new() {
    // The same relative paths everywhere, so that old, new and killed runs differ only by seed.
    let run = |sb: &Sandbox, seed: &str| {
        let mut c = std_cmd(sb);
        c.env("EMBED_TRANSPLANT_TEST_WRITE_PAUSE_MS", "2")
            .env("EMBED_TRANSPLANT_TEST_COMMIT_PAUSE_MS", "60")
            .arg("-m")
            .arg(bert_dir())
            .arg("-v")
            .arg(target_vocab())
            .args(["-o", "m.safetensors", "--emit-model", "out", "--force"])
            .args(["-q", "--init", "random", "--seed", seed])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let snapshot = |sb: &Sandbox| {
        (
            std::fs::read(sb.path("m.safetensors")).ok(),
            std::fs::symlink_metadata(sb.path("out"))
                .is_ok()
                .then(|| tree_bytes(&sb.path("out"))),
        )
    };
    let old_sb = Sandbox::new();
    assert!(run(&old_sb, "1").status().unwrap().success());
    let old = snapshot(&old_sb);
    let new_sb = Sandbox::new();
    assert!(run(&new_sb, "2").status().unwrap().success());
    let new = snapshot(&new_sb);
    assert_ne!(old.0, new.0);
    assert_ne!(old.1, new.1);

    let sb = Sandbox::new();
    let restore = || {
        let _ = std::fs::remove_dir_all(sb.path("out"));
        copy_dir(&old_sb.path("out"), &sb.path("out"));
        std::fs::copy(old_sb.path("m.safetensors"), sb.path("m.safetensors")).unwrap();
    };
    // A normal run's duration, the span the kill moments are drawn from.
    restore();
    let t = Instant::now();
    assert!(run(&sb, "2").status().unwrap().success());
    let span = t.elapsed().as_millis() as u64;
    assert_eq!(snapshot(&sb), new);

    let mut rng = Rng(0x5eed_1919);
    let (mut kills, mut caught_mid_write, mut tries, mut replaced) = (0, 0, 0, 0);
    while kills < 50 {
        tries += 1;
        assert!(
            tries < 200,
            "only {kills} of {tries} runs were still running when killed"
        );
        restore();
        let mut child = run(&sb, "2").spawn().unwrap();
        // Up to a quarter past the normal duration: the last moments (the renames) are hit too.
        std::thread::sleep(Duration::from_millis(rng.below(span + span / 4)));
        signal(child.id(), "KILL");
        let status = child.wait().unwrap();
        let killed = std::os::unix::process::ExitStatusExt::signal(&status) == Some(9);
        kills += usize::from(killed);
        if !temps_in(sb.dir.path()).is_empty() {
            caught_mid_write += 1;
        }
        let now = snapshot(&sb);
        assert!(
            now.0 == old.0 || now.0 == new.0,
            "kill {kills}: -o file is partial"
        );
        assert!(
            now.1 == old.1 || now.1 == new.1,
            "kill {kills}: DIR is partial"
        );
        replaced += usize::from(killed && now.1 == new.1);
        if killed && kills % 10 == 0 {
            // The next run on the same targets cleans up and succeeds.
            assert!(
                run(&sb, "2").status().unwrap().success(),
                "rerun after kill {kills}"
            );
            assert_eq!(snapshot(&sb), new);
            assert_eq!(sb.files(), ["m.safetensors", "out"], "after kill {kills}");
        }
    }
    eprintln!(
        "{kills} kills in {tries} runs over {span} ms: {caught_mid_write} left a temp, {replaced} after DIR was replaced"
    );
    // The moments were spread over the run: some kills caught a temp file or directory.
    assert!(
        caught_mid_write >= 5,
        "{caught_mid_write} of {kills} kills caught a write"
    );
}

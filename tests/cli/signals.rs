//! Signals: an interrupted run leaves nothing behind.

use crate::common::*;

#[cfg(unix)]
#[test]
fn ctrl_c_leaves_no_output_and_no_temp_file() {
    let sb = finetune_sandbox();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("embed-transplant"))
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
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: interrupted by SIGINT\n"
    );
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

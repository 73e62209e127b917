//! Signals: an interrupted run leaves nothing behind.

use crate::common::*;

#[cfg(unix)]
#[test]
fn ctrl_c_leaves_no_output_and_no_temp_file() {
    let sb = finetune_sandbox();
    // Not -q: the first epoch's line says that training (and the signal handler) is running.
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
                "--train",
                "train.tsv",
            ])
            .args(["--epochs", "100000", "-o", "ft.safetensors"]),
    );
    run.wait_for("the first epoch's line", |l| {
        l.starts_with("epoch 1/100000:")
    });
    run.signal("INT");
    let (status, rest) = run.finish();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    // After the epochs' lines, one line.
    let (last, before) = rest.split_last().expect("no line after the signal");
    assert_eq!(last, "error: interrupted by SIGINT");
    assert!(before.iter().all(|l| l.starts_with("epoch ")), "{rest:?}");
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

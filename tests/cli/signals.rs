//! Signals: an interrupted run leaves nothing behind.

use crate::common::*;

#[cfg(unix)]
#[test]
fn ctrl_c_leaves_no_output_and_no_temp_file() {
    let sb = finetune_sandbox();
    // Not -q: the first epoch's line says that training (and the signal handler) is running.
    let run = endless_finetune(&sb, &[]);
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

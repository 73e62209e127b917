//! `finetune` and `evaluate` on a synthetic task.

use crate::common::*;

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
    let copied = embed_transplant::api::parse_ranges(&src.meta["copied_rows"], 29).unwrap();
    assert!(copied.iter().any(|c| *c));
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
        if copied[r] {
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
            .finetune_cmd()
            .args(["-o", "x.safetensors"])
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
    sb.finetune_cmd()
        .args(["--train", "train.tsv"])
        .args(["--freeze-embeddings", "--freeze-copied"])
        .assert()
        .code(2);
    sb.finetune_cmd()
        .args(["--train", "train.tsv", "--epochs", "0"])
        .assert()
        .code(2);
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
fn finetune_optimizers_and_learning_rate_groups() {
    let sb = finetune_sandbox();
    let deferred = finetune(&sb, "deferred.safetensors", &["--epochs", "2"]);
    assert_eq!(deferred["optimizer"], "deferred-adam", "the default");
    let st = read_st(&sb.path("deferred.safetensors"));
    assert_eq!(st.meta["finetune_optimizer"], "deferred-adam");
    let lazy = finetune(
        &sb,
        "lazy.safetensors",
        &["--epochs", "2", "--optimizer", "lazy-adam"],
    );
    assert_eq!(lazy["optimizer"], "lazy-adam");
    assert_eq!(
        read_st(&sb.path("lazy.safetensors")).meta["finetune_optimizer"],
        "lazy-adam"
    );
    assert_eq!(st.meta["finetune_embedding_lr"], "0.05", "defaults to --lr");
    finetune(
        &sb,
        "dense.safetensors",
        &["--epochs", "2", "--optimizer", "adam"],
    );
    assert_eq!(
        read_st(&sb.path("dense.safetensors")).meta["finetune_optimizer"],
        "adam"
    );
    assert_ne!(
        st.tensors["weight"].2,
        read_st(&sb.path("dense.safetensors")).tensors["weight"].2
    );
    // A lower embedding rate moves the rows less.
    let before = read_st(&sb.path("emb.safetensors")).tensors["weight"]
        .2
        .clone();
    finetune(
        &sb,
        "slow.safetensors",
        &["--epochs", "2", "--embedding-lr", "0.001"],
    );
    let slow = read_st(&sb.path("slow.safetensors"));
    assert_eq!(slow.meta["finetune_embedding_lr"], "0.001");
    let moved = |after: &[u8]| -> f64 {
        before
            .chunks(4)
            .zip(after.chunks(4))
            .map(|(a, b)| {
                let (a, b) = (
                    f32::from_le_bytes(a.try_into().unwrap()),
                    f32::from_le_bytes(b.try_into().unwrap()),
                );
                (a - b).abs() as f64
            })
            .sum()
    };
    let (m_slow, m_fast) = (
        moved(&slow.tensors["weight"].2),
        moved(&st.tensors["weight"].2),
    );
    assert!(
        m_slow > 0.0 && m_slow < m_fast / 5.0,
        "{m_slow} vs {m_fast}"
    );
    // The head alone for the first epoch, then everything.
    let r = finetune(
        &sb,
        "wait.safetensors",
        &["--epochs", "2", "--freeze-embeddings-epochs", "1"],
    );
    let trained: Vec<bool> = r["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["embedding_trained"].as_bool().unwrap())
        .collect();
    assert_eq!(trained, vec![false, true]);
    assert_eq!(
        read_st(&sb.path("wait.safetensors")).meta["finetune_freeze_embeddings_epochs"],
        "1"
    );
}

#[test]
fn finetune_learning_rate_flag_errors() {
    let sb = finetune_sandbox();
    let usage = |extra: &[&str]| {
        let a = sb
            .finetune_cmd()
            .args(["--train", "train.tsv", "-o", "x.safetensors"])
            .args(extra)
            .assert()
            .code(2);
        assert!(!sb.path("x.safetensors").exists());
        stderr_of(&a)
    };
    let e = usage(&["--epochs", "3", "--freeze-embeddings-epochs", "3"]);
    assert!(
        e.contains("--freeze-embeddings-epochs 3 leaves no epoch of --epochs 3"),
        "{e}"
    );
    let e = usage(&["--embedding-lr", "0"]);
    assert!(
        e.contains("--embedding-lr must be a positive number"),
        "{e}"
    );
    usage(&["--freeze-embeddings", "--freeze-embeddings-epochs", "1"]);
}

#[test]
fn finetune_divergence_is_an_error_and_writes_nothing() {
    let sb = finetune_sandbox();
    let a = sb
        .finetune_cmd()
        .args([
            "--train",
            "train.tsv",
            "-o",
            "x.safetensors",
            "--lr",
            "1e30",
            "--optimizer",
            "sgd",
        ])
        .assert()
        .code(1);
    let e = stderr_of(&a);
    assert!(
        e.contains("training diverged (lower --lr?); nothing was written"),
        "{e}"
    );
    assert!(!sb.path("x.safetensors").exists());
}

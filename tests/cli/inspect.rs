//! `inspect`, completions and the man page.

use crate::common::*;

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
        .transplant(bert_dir())
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

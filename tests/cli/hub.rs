//! The hub: downloads from a fake hub on 127.0.0.1, the shared cache, offline mode, tokens, failures.

use crate::common::*;

#[test]
fn hub_download_then_offline_from_cache() {
    let sb = Sandbox::new();
    let hub = hub_with_bert(&[]);
    let a = sb
        .transplant("some-org/tiny-bert-chinese")
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["-o", "a.safetensors", "--json", "--init", "random"])
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
    sb.transplant("some-org/tiny-bert-chinese")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .args(["-o", "b.safetensors", "-q", "--init", "random"])
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
        .transplant("some-org/tiny-bert-chinese")
        .args(["--offline", "-o", "x.safetensors"])
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
        .transplant("some-org/tiny-bert-chinese")
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["-o", "a.safetensors", "--json"])
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
    sb.transplant("org/tiny-llama")
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["-o", "a.safetensors", "-q"])
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
    sb.transplant("bert-base-chinese")
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["-o", "a.safetensors", "-q"])
        .assert()
        .success();
    let commit = hub.commit_of("google-bert/bert-base-chinese");
    let sb2 = Sandbox::new();
    sb2.transplant("google-bert/bert-base-chinese")
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["--revision", &commit, "-o", "b.safetensors", "-q"])
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
        .transplant("org/model")
        .env("HF_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .args(["-o", "x.safetensors"])
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
        .transplant("some-org/tiny-bert-chinese")
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["-o", "x.safetensors"])
        .assert()
        .code(1);
    assert!(
        stderr_of(&a).contains("hub answered 500"),
        "{}",
        stderr_of(&a)
    );
    hub.set_fault(Fault::DropMidBody);
    let a = sb
        .transplant("some-org/tiny-bert-chinese")
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["-o", "x.safetensors"])
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
        .transplant("nobody/nothing")
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["-o", "x.safetensors"])
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
        .transplant("some-org/tiny-bert-chinese")
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_TOKEN", secret)
        .args(["-o", "a.safetensors", "--json", "--report", "r.json"])
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

/// 401 and 403 (private or gated repos) say what to do, and never print the token.
#[test]
fn gated_and_private_repos_say_set_hf_token() {
    let sb = Sandbox::new();
    let hub = hub_with_bert(&[]);
    for code in [401, 403] {
        hub.set_fault(Fault::Status(code));
        let a = sb
            .transplant("some-org/tiny-bert-chinese")
            .env("HF_ENDPOINT", hub.endpoint())
            .env("HF_TOKEN", "hf_not_allowed")
            .args(["-o", "x.safetensors"])
            .assert()
            .code(1);
        let err = stderr_of(&a);
        assert!(
            err.contains(&format!(
                "hub refused some-org/tiny-bert-chinese@main config.json ({code})"
            )),
            "{err}"
        );
        assert!(
            err.contains("set HF_TOKEN to a token that can read it"),
            "{err}"
        );
        assert!(!err.contains("hf_not_allowed"), "{err}");
        assert!(sb.files().is_empty());
    }
}

/// Weights served the way the real hub serves LFS files (302 to an absolute CDN URL) download,
/// and give the same matrix as the local model.
#[test]
fn lfs_redirected_weights_download() {
    let sb = Sandbox::new();
    let hub = hub_with_bert(&[]).with_lfs_redirect(".safetensors");
    sb.transplant("some-org/tiny-bert-chinese")
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["-o", "hub.safetensors", "-q"])
        .assert()
        .success();
    assert!(
        hub.requests().iter().any(|r| r.contains("/_lfs/")),
        "{:?}",
        hub.requests()
    );
    sb.transplant(bert_dir())
        .args(["-o", "local.safetensors", "-q"])
        .assert()
        .success();
    assert_eq!(
        read_st(&sb.path("hub.safetensors")).tensors["weight"],
        read_st(&sb.path("local.safetensors")).tensors["weight"]
    );
}

/// A download dropped once mid-body is retried, and the run succeeds with the right bytes.
#[test]
fn a_download_dropped_once_is_retried() {
    let sb = Sandbox::new();
    let hub = hub_with_bert(&[]);
    hub.set_fault_times(Fault::DropMidBody, 1);
    sb.transplant("some-org/tiny-bert-chinese")
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["-o", "hub.safetensors", "-q"])
        .assert()
        .success();
    sb.transplant(bert_dir())
        .args(["-o", "local.safetensors", "-q"])
        .assert()
        .success();
    assert_eq!(
        read_st(&sb.path("hub.safetensors")).tensors["weight"],
        read_st(&sb.path("local.safetensors")).tensors["weight"]
    );
}

/// `inspect`'s remote header read works against a server that ignores `Range` (it answers the
/// whole file with 200): the reader skips to the bytes it asked for.
#[test]
fn inspect_survives_a_server_that_ignores_range() {
    let sb = Sandbox::new();
    let hub = hub_with_bert(&[]);
    let inspect = || {
        let a = sb
            .cmd()
            .env("HF_ENDPOINT", hub.endpoint())
            .args(["inspect", "--json", "-m", "some-org/tiny-bert-chinese"])
            .assert()
            .success();
        serde_json::from_str::<serde_json::Value>(&stdout_of(&a)).unwrap()
    };
    // First run caches config and tokenizer; the second only reads the weights' header.
    let normal = inspect();
    hub.clear_requests();
    hub.set_fault(Fault::IgnoreRange);
    let ignored = inspect();
    assert_eq!(normal["tensors"], ignored["tensors"]);
    assert_eq!(
        ignored["embedding"],
        "bert.embeddings.word_embeddings.weight"
    );
    let answered: Vec<String> = hub
        .recorded()
        .iter()
        .filter(|r| r.line().ends_with("model.safetensors"))
        .map(|r| r.header("range").unwrap_or("").to_string())
        .collect();
    assert_eq!(answered.len(), 2, "{answered:?}");
}

/// `--emit-model` from the hub: a sharded model's every shard, its index, config, generation
/// config and tokenizer files are fetched, nothing else; then the same from the cache with
/// HF_HUB_OFFLINE=1 gives the same directory, which loads in transformers.
#[test]
fn hub_sharded_model_emits_a_whole_model_then_offline() {
    hub_sharded_model_emits_a_whole_model_then_offline_run(Python::Skip);
}

/// `hub_sharded_model_emits_a_whole_model_then_offline`, its directory also loaded in transformers (tests/check_model.py).
#[test]
#[ignore = "needs python: torch, transformers (tests/check_model.py)"]
fn hub_sharded_model_emits_a_whole_model_then_offline_in_transformers() {
    hub_sharded_model_emits_a_whole_model_then_offline_run(Python::Check);
}

fn hub_sharded_model_emits_a_whole_model_then_offline_run(python: Python) {
    let sb = Sandbox::new();
    let src = fixtures().join("tiny-qwen2");
    let hub = FakeHub::start(vec![RepoSpec::new("org/tiny-qwen2", &src)]);
    sb.transplant("org/tiny-qwen2")
        .env("HF_ENDPOINT", hub.endpoint())
        .args(["--emit-model", "a", "-q", "--extend"])
        .assert()
        .success();
    let reqs = hub.requests();
    let mut fetched: Vec<&str> = reqs.iter().filter_map(|r| r.rsplit('/').next()).collect();
    fetched.sort();
    fetched.dedup();
    let mut want: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // model.safetensors is asked for first and answered 404 (the sharded index is next).
    want.push("model.safetensors".into());
    want.sort();
    assert_eq!(fetched, want, "{reqs:?}");
    drop(hub);

    sb.transplant("org/tiny-qwen2")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .args(["--emit-model", "b", "-q", "--extend"])
        .assert()
        .success();
    for f in std::fs::read_dir(sb.path("a")).unwrap() {
        let name = f.unwrap().file_name();
        let (a, b) = (sb.path("a").join(&name), sb.path("b").join(&name));
        if name == "transplant.json" {
            continue;
        }
        assert_eq!(
            std::fs::read(a).unwrap(),
            std::fs::read(b).unwrap(),
            "{name:?}"
        );
    }
    crate::model_out::check_in_python(
        python,
        &src,
        &sb.path("b"),
        serde_json::json!({"mode": "extend", "text": "This is a test.", "new_words": ["人工智能"], "causal": true}),
    );
}

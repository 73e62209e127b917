//! Parsed flags -> validated settings. Every cross-flag check and environment lookup lives here.

use crate::cli::{DTypeArg, HubArgs, InitArg, TransplantArgs};
use crate::error::{Error, Result};
use crate::hub::HubSettings;
use std::path::{Path, PathBuf};

/// Everything the transplant command needs, checked.
#[derive(Debug, Clone)]
pub struct TransplantConfig {
    pub model: String,
    pub vocab: PathBuf,
    pub output: PathBuf,
    pub tensor: Option<String>,
    pub source_vocab: Option<PathBuf>,
    pub init: Option<InitArg>,
    pub calibrate_norm: bool,
    pub seed: u64,
    pub dtype: DTypeArg,
    pub hub: HubSettings,
    pub force: bool,
    pub json: bool,
    pub report: Option<PathBuf>,
    pub quiet: bool,
    pub strict: bool,
}

/// Builds the config from parsed arguments and the environment.
pub fn transplant_config(
    args: TransplantArgs,
    stderr_is_terminal: bool,
) -> Result<TransplantConfig> {
    let model = args
        .model
        .ok_or_else(|| Error::Usage("--model is required".into()))?;
    let vocab = args
        .vocab
        .ok_or_else(|| Error::Usage("--vocab is required".into()))?;
    if model.trim().is_empty() {
        return Err(Error::Usage("--model is empty".into()));
    }
    if args.report.as_deref() == Some(args.output.as_path()) {
        return Err(Error::Usage(
            "--report and --output name the same file".into(),
        ));
    }
    let hub = hub_settings(args.hub, stderr_is_terminal && !args.quiet && !args.json);
    Ok(TransplantConfig {
        model,
        vocab,
        output: args.output,
        tensor: args.tensor,
        source_vocab: args.source_vocab,
        init: args.init,
        calibrate_norm: args.calibrate_norm,
        seed: args.seed,
        dtype: args.dtype,
        hub,
        force: args.force,
        json: args.json,
        report: args.report,
        quiet: args.quiet,
        strict: args.strict,
    })
}

/// Hub settings from flags (which read HF_ENDPOINT, HF_HUB_CACHE, HF_TOKEN, HF_HUB_OFFLINE) and the
/// rest of the environment (HUGGINGFACE_HUB_CACHE, HF_HOME, HF_TOKEN_PATH).
pub fn hub_settings(args: HubArgs, progress: bool) -> HubSettings {
    HubSettings {
        endpoint: args.endpoint.filter(|e| !e.is_empty()),
        cache_dir: args
            .cache_dir
            .or_else(|| env_path("HUGGINGFACE_HUB_CACHE"))
            .unwrap_or_else(|| hf_home().join("hub")),
        token: args
            .token
            .map(|s| s.0)
            .filter(|t| !t.trim().is_empty())
            .or_else(token_from_file),
        offline: args.offline,
        revision: args.revision,
        progress,
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// HF_HOME, else ~/.cache/huggingface, as Python's huggingface_hub decides it.
pub fn hf_home() -> PathBuf {
    env_path("HF_HOME").unwrap_or_else(|| {
        let base = env_path("XDG_CACHE_HOME")
            .or_else(|| env_path("HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        base.join("huggingface")
    })
}

/// The token `huggingface-cli login` stored (HF_TOKEN_PATH, else $HF_HOME/token).
fn token_from_file() -> Option<String> {
    let path = env_path("HF_TOKEN_PATH").unwrap_or_else(|| hf_home().join("token"));
    read_token(&path)
}

fn read_token(path: &Path) -> Option<String> {
    let t = std::fs::read_to_string(path).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

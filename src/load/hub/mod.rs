//! Resolving `--model` into the files to read: a hub id (through hf-hub and the cache it shares
//! with Python's huggingface_hub), a local model directory, or a single weights file. Only what is
//! needed is fetched: config, source vocabulary, and the weights (one shard at most comes later,
//! on demand).
//!
//! [`resolve`] owns local paths and hub ids, [`cache`] the hf-hub client and its cache, [`range`]
//! the raw HTTP range reads that `inspect` uses to read remote headers.

mod cache;
mod range;
mod resolve;

use crate::error::{Error, Result};
use crate::load::checkpoint::{FetchFile, Weights};
use std::path::{Path, PathBuf};

pub use resolve::is_hub_id;

/// A secret (the hub token): never shown by `Debug` or `Display`, only handed to the HTTP
/// client. Parsing never fails, so that clap never echoes it in an error; [`Secret::check`] does
/// the validation, with a message that does not contain it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A token must be one printable line: control characters (a newline from `echo` into a
    /// file, say) would end up in an HTTP header.
    pub fn check(&self, origin: &str) -> Result<()> {
        if self.0.chars().any(char::is_control) {
            return Err(Error::Usage(format!(
                "the hub token from {origin} contains a control character (a newline?); it is not shown here: fix the token"
            )));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// How to reach the hub and its cache.
#[derive(Clone)]
pub struct HubSettings {
    /// The hub address, as given (may hold userinfo: shown only through [`HubSettings::endpoint_shown`]).
    pub endpoint: Option<String>,
    /// The hub cache (the directory holding `models--org--name`).
    pub cache_dir: PathBuf,
    pub token: Option<Secret>,
    pub offline: bool,
    pub revision: String,
    pub progress: bool,
}

impl std::fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &self.endpoint_shown())
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token)
            .field("offline", &self.offline)
            .field("revision", &self.revision)
            .finish()
    }
}

impl HubSettings {
    pub fn endpoint(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| "https://huggingface.co".to_string())
            .trim_end_matches('/')
            .to_string()
    }

    /// The cache folder of hub model `model` (`models--org--name`, as huggingface_hub names it).
    pub fn cache_entry(&self, model: &str) -> PathBuf {
        self.cache_dir
            .join(format!("models--{}", model.replace('/', "--")))
    }

    /// The endpoint without userinfo, for messages.
    pub fn endpoint_shown(&self) -> String {
        strip_userinfo(&self.endpoint())
    }

    /// `msg` with the token and the endpoint's userinfo replaced: for any text that came from
    /// the HTTP stack.
    pub fn scrub(&self, msg: &str) -> String {
        let mut out = msg.replace(&self.endpoint(), &self.endpoint_shown());
        if let Some(t) = self.token.as_ref().filter(|t| !t.0.is_empty()) {
            out = out.replace(t.expose(), "<redacted>");
        }
        if let Some(info) = userinfo(&self.endpoint()) {
            out = out.replace(info, "<redacted>");
        }
        out
    }
}

fn userinfo(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    authority.rsplit_once('@').map(|(info, _)| info)
}

fn strip_userinfo(url: &str) -> String {
    match userinfo(url) {
        Some(info) => url.replacen(&format!("{info}@"), "", 1),
        None => url.to_string(),
    }
}

/// Where the model came from, for the summary and the output's metadata.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Provenance {
    /// `hub` or `local`.
    pub kind: &'static str,
    /// The hub id, or the path as given.
    pub model: String,
    pub revision: Option<String>,
    /// The commit the files came from (hub only).
    pub commit: Option<String>,
}

/// The files of a model, resolved.
pub struct ModelFiles {
    pub provenance: Provenance,
    pub config: Option<PathBuf>,
    pub tokenizer_json: Option<PathBuf>,
    pub vocab_txt: Option<PathBuf>,
    pub tokenizer_config: Option<PathBuf>,
    pub weights: Weights,
    pub fetcher: Box<dyn FetchFile>,
}

impl ModelFiles {
    /// Every file of the model this run reads or may read (for refusing an output path that
    /// names one): config, tokenizer files, the weights and every shard of a sharded index; for a
    /// hub model also its cache entry (`models--org--name`), whole.
    pub fn inputs(&self) -> crate::write::Inputs {
        let mut v = crate::write::Inputs::new();
        v.files(
            [
                self.config.as_deref(),
                self.tokenizer_json.as_deref(),
                self.vocab_txt.as_deref(),
                self.tokenizer_config.as_deref(),
                Some(self.weights.path()),
            ]
            .into_iter()
            .flatten()
            .map(Path::to_path_buf),
        );
        if let Weights::ShardedSafetensors(index) | Weights::ShardedPytorch(index) = &self.weights {
            // A shard not on disk yet is in the cache entry below; an unreadable index fails
            // later, where it is read.
            for s in crate::load::checkpoint::shard_names(index).unwrap_or_default() {
                v.files(self.fetcher.local(&s));
            }
        }
        // A hub model, or a local path into a hub cache: .../models--org--name/snapshots/<commit>/<file>.
        let entry = self
            .weights
            .path()
            .ancestors()
            .find(|a| a.file_name().is_some_and(|n| n == "snapshots"))
            .and_then(Path::parent)
            .filter(|e| {
                e.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("models--"))
            });
        if let Some(e) = entry {
            v.tree(e);
        }
        v
    }
}

/// Weight files in the order we prefer them, with how each is read.
const WEIGHT_FILES: &[&str] = &[
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
];

/// Resolves `--model`: an existing path is local; otherwise it must look like a hub id.
pub fn resolve(model: &str, hub: &HubSettings) -> Result<ModelFiles> {
    resolve_with(model, hub, false)
}

/// Like [`resolve`], but a hub safetensors file that is not cached is not downloaded: its header
/// is read with two range requests instead (for `inspect`).
pub fn resolve_headers_only(model: &str, hub: &HubSettings) -> Result<ModelFiles> {
    resolve_with(model, hub, true)
}

fn resolve_with(model: &str, hub: &HubSettings, headers_only: bool) -> Result<ModelFiles> {
    let path = Path::new(model);
    if path.is_dir() {
        return resolve::resolve_dir(model, path);
    }
    if path.is_file() {
        return resolve::resolve_file(model, path);
    }
    if !is_hub_id(model) {
        return Err(Error::Invalid(format!(
            "--model {model}: no such file or directory, and not a hub id (org/name)"
        )));
    }
    cache::resolve_hub(model, hub, headers_only)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_and_token_are_scrubbed() {
        let hub = HubSettings {
            endpoint: Some("http://user:pa55@127.0.0.1:9/".into()),
            cache_dir: PathBuf::new(),
            token: Some(Secret::new("hf_abc")),
            offline: false,
            revision: "main".into(),
            progress: false,
        };
        assert_eq!(hub.endpoint_shown(), "http://127.0.0.1:9");
        let msg = hub.scrub("GET http://user:pa55@127.0.0.1:9/x failed: Bearer hf_abc; user:pa55");
        assert!(!msg.contains("pa55") && !msg.contains("hf_abc"), "{msg}");
        assert!(format!("{:?}", hub).contains("<redacted>"));
        assert!(!format!("{:?}", hub.token).contains("hf_abc"));
        let e = Secret::new("hf_x\nX: y").check("HF_TOKEN").unwrap_err();
        assert!(!e.to_string().contains("hf_x"), "{e}");
    }
}

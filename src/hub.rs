//! Resolving `--model`: a hub id (through hf-hub and the cache it shares with Python's
//! huggingface_hub), a local model directory, or a single weights file, into the files to read.
//! Only what is needed is fetched: config, source vocabulary, and the weights (one shard at most
//! comes later, on demand).

use crate::checkpoint::{FetchFile, Weights};
use crate::error::{Error, Result};
use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Repo, RepoType};
use std::io::Read;
use std::path::{Path, PathBuf};

/// How to reach the hub and its cache.
#[derive(Clone)]
pub struct HubSettings {
    pub endpoint: Option<String>,
    /// The hub cache (the directory holding `models--org--name`).
    pub cache_dir: PathBuf,
    pub token: Option<String>,
    pub offline: bool,
    pub revision: String,
    pub progress: bool,
}

impl std::fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .field("revision", &self.revision)
            .finish()
    }
}

/// Where the model came from, for the summary and the output's metadata.
#[derive(Debug, Clone, serde::Serialize)]
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
        return resolve_dir(model, path);
    }
    if path.is_file() {
        return resolve_file(model, path);
    }
    if !is_hub_id(model) {
        return Err(Error::Invalid(format!(
            "--model {model}: no such file or directory, and not a hub id (org/name)"
        )));
    }
    resolve_hub(model, hub, headers_only)
}

/// `name` or `org/name`, as the hub allows them.
pub fn is_hub_id(s: &str) -> bool {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !p.starts_with(['-', '.'])
    };
    let mut parts = s.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), None, None) => part_ok(a),
        (Some(a), Some(b), None) => part_ok(a) && part_ok(b),
        _ => false,
    }
}

struct LocalDir(PathBuf);

impl FetchFile for LocalDir {
    fn fetch(&self, name: &str) -> Result<PathBuf> {
        let p = self.0.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(Error::io(
                &p,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ))
        }
    }
    fn local(&self, name: &str) -> Option<PathBuf> {
        Some(self.0.join(name)).filter(|p| p.is_file())
    }
}

fn existing(dir: &Path, name: &str) -> Option<PathBuf> {
    Some(dir.join(name)).filter(|p| p.is_file())
}

fn resolve_dir(model: &str, dir: &Path) -> Result<ModelFiles> {
    let weights = WEIGHT_FILES
        .iter()
        .find_map(|f| existing(dir, f))
        .map(|p| Weights::from_file(&p))
        .or_else(|| single_weights_file(dir).map(|p| Weights::from_file(&p)))
        .ok_or_else(|| {
            Error::file(
                dir,
                format!("no weights found (looked for {})", WEIGHT_FILES.join(", ")),
            )
        })?;
    Ok(local_files(model, dir, weights))
}

/// A directory holding exactly one `*.safetensors` or `*.bin` file: that one.
fn single_weights_file(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e == "safetensors" || e == "bin" || e == "pt" || e == "pth")
        })
        .collect();
    if found.len() == 1 {
        found.pop()
    } else {
        None
    }
}

fn resolve_file(model: &str, file: &Path) -> Result<ModelFiles> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok(local_files(model, dir, Weights::from_file(file)))
}

fn local_files(model: &str, dir: &Path, weights: Weights) -> ModelFiles {
    ModelFiles {
        provenance: Provenance {
            kind: "local",
            model: model.to_string(),
            revision: None,
            commit: None,
        },
        config: existing(dir, "config.json"),
        tokenizer_json: existing(dir, "tokenizer.json"),
        vocab_txt: existing(dir, "vocab.txt"),
        tokenizer_config: existing(dir, "tokenizer_config.json"),
        weights,
        fetcher: Box::new(LocalDir(dir.to_path_buf())),
    }
}

/// Fetches files of one hub repo: from the cache only when offline, else cache first, then the hub.
struct HubRepo {
    id: String,
    revision: String,
    cache_dir: PathBuf,
    api: Option<ApiRepo>,
    endpoint: String,
    token: Option<String>,
    /// Read headers of files not cached remotely instead of downloading them (inspect).
    headers_only: bool,
}

/// safetensors refuses headers over 100 MB; so do we, before asking for them.
const MAX_HEADER: u64 = 100_000_000;

impl HubRepo {
    fn cached(&self, name: &str) -> Option<PathBuf> {
        let repo = Repo::with_revision(self.id.clone(), RepoType::Model, self.revision.clone());
        if let Some(p) = hf_hub::Cache::new(self.cache_dir.clone())
            .repo(repo.clone())
            .get(name)
        {
            return Some(p);
        }
        // A commit revision: Python never writes refs/<sha>, so look at the snapshot itself.
        if self.revision.len() == 40 && self.revision.chars().all(|c| c.is_ascii_hexdigit()) {
            let p = self
                .cache_dir
                .join(repo.folder_name())
                .join("snapshots")
                .join(&self.revision)
                .join(name);
            if p.is_file() {
                return Some(p);
            }
        }
        None
    }

    /// Ok(None) when the repo has no such file (404), or offline and it is not cached.
    fn try_fetch(&self, name: &str) -> Result<Option<PathBuf>> {
        if let Some(p) = self.cached(name) {
            return Ok(Some(p));
        }
        let Some(api) = &self.api else {
            return Ok(None);
        };
        match api.get(name) {
            Ok(p) => Ok(Some(p)),
            Err(e) => match status_of(&e) {
                Some(404) => Ok(None),
                _ => Err(self.describe(name, e)),
            },
        }
    }

    fn describe(&self, name: &str, e: ApiError) -> Error {
        let what = format!("{}@{} {name}", self.id, self.revision);
        let msg = match status_of(&e) {
            Some(401) | Some(403) => format!(
                "hub refused {what} ({}): the repo is private or gated, or does not exist; set HF_TOKEN to a token that can read it",
                status_of(&e).unwrap_or_default()
            ),
            Some(code) => format!("hub answered {code} for {what} at {}", self.endpoint),
            None => match &e {
                ApiError::RequestError(inner) if matches!(**inner, ureq::Error::Transport(_)) => format!(
                    "cannot reach the hub at {} for {what}: {}; to use the local cache only, set HF_HUB_OFFLINE=1 or pass --offline",
                    self.endpoint,
                    one_line(&inner.to_string())
                ),
                other => format!("downloading {what} from {}: {}", self.endpoint, one_line(&other.to_string())),
            },
        };
        Error::Hub(msg)
    }

    /// Bytes `start..=end` of a hub file through a range request (redirects followed, the token
    /// sent to the hub only); None on 404.
    fn range(&self, api: &ApiRepo, name: &str, start: u64, end: u64) -> Result<Option<Vec<u8>>> {
        let url = api.url(name);
        let agent = ureq::AgentBuilder::new().try_proxy_from_env(true).build();
        let mut req = agent
            .get(&url)
            .set("Range", &format!("bytes={start}-{end}"))
            .set(
                "User-Agent",
                concat!("embed-transplant/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(t) = &self.token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        match req.call() {
            Ok(resp) => {
                // A server that ignores Range answers 200 with the whole file: skip to `start`.
                let skip = if resp.status() == 206 { 0 } else { start };
                let mut body = resp.into_reader();
                let mut buf = Vec::new();
                std::io::copy(
                    &mut std::io::Read::take(&mut body, skip),
                    &mut std::io::sink(),
                )
                .and_then(|_| std::io::Read::take(body, end - start + 1).read_to_end(&mut buf))
                .map_err(|e| Error::Hub(format!("reading {url}: {e}")))?;
                Ok(Some(buf))
            }
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(ureq::Error::Status(code, _)) => Err(Error::Hub(format!(
                "hub answered {code} for {}@{} {name} at {}",
                self.id, self.revision, self.endpoint
            ))),
            Err(e) => Err(Error::Hub(format!(
                "cannot reach the hub at {} for {}@{} {name}: {}",
                self.endpoint,
                self.id,
                self.revision,
                one_line(&e.to_string())
            ))),
        }
    }

    fn commit_of(&self, file: &Path) -> Option<String> {
        // .../snapshots/<commit>/<file>
        let snap = file.parent()?;
        if snap.parent()?.file_name()? == "snapshots" {
            Some(snap.file_name()?.to_string_lossy().into_owned())
        } else {
            None
        }
    }
}

impl FetchFile for HubRepo {
    fn fetch(&self, name: &str) -> Result<PathBuf> {
        self.try_fetch(name)?.ok_or_else(|| {
            if self.api.is_none() {
                Error::Hub(format!(
                    "offline, and {name} of {}@{} is not in the cache at {}",
                    self.id,
                    self.revision,
                    self.cache_dir.display()
                ))
            } else {
                Error::Hub(format!("{}@{} has no file {name}", self.id, self.revision))
            }
        })
    }
    fn local(&self, name: &str) -> Option<PathBuf> {
        self.cached(name)
    }

    fn remote_header(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(api) = self.api.as_ref().filter(|_| self.headers_only) else {
            return Ok(None);
        };
        let Some(len) = self.range(api, name, 0, 7)? else {
            return Ok(None);
        };
        let n = match <[u8; 8]>::try_from(len.as_slice()) {
            Ok(b) => u64::from_le_bytes(b),
            Err(_) => {
                return Err(Error::Hub(format!(
                    "{}@{} {name}: shorter than a safetensors header",
                    self.id, self.revision
                )))
            }
        };
        if n > MAX_HEADER {
            return Err(Error::Hub(format!(
                "{}@{} {name}: safetensors header length {n} is not plausible",
                self.id, self.revision
            )));
        }
        let json = self.range(api, name, 8, 8 + n - 1)?.unwrap_or_default();
        let mut header = len;
        header.extend_from_slice(&json);
        Ok(Some(header))
    }
}

fn status_of(e: &ApiError) -> Option<u16> {
    match e {
        ApiError::RequestError(inner) => match &**inner {
            ureq::Error::Status(code, _) => Some(*code),
            _ => None,
        },
        ApiError::TooManyRetries(inner) => status_of(inner),
        _ => None,
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn resolve_hub(model: &str, hub: &HubSettings, headers_only: bool) -> Result<ModelFiles> {
    let endpoint = hub
        .endpoint
        .clone()
        .unwrap_or_else(|| "https://huggingface.co".to_string());
    let api = if hub.offline {
        None
    } else {
        let api = ApiBuilder::new()
            .with_endpoint(endpoint.trim_end_matches('/').to_string())
            .with_cache_dir(hub.cache_dir.clone())
            .with_token(hub.token.clone())
            .with_progress(hub.progress)
            .with_retries(2)
            .with_user_agent("embed-transplant", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| Error::Hub(format!("setting up the hub client: {e}")))?;
        Some(api.repo(Repo::with_revision(
            model.to_string(),
            RepoType::Model,
            hub.revision.clone(),
        )))
    };
    let repo = HubRepo {
        id: model.to_string(),
        revision: hub.revision.clone(),
        cache_dir: hub.cache_dir.clone(),
        api,
        endpoint,
        token: hub.token.clone(),
        headers_only,
    };
    let config = repo.try_fetch("config.json")?;
    let tokenizer_json = repo.try_fetch("tokenizer.json")?;
    let vocab_txt = match tokenizer_json {
        Some(_) => None,
        None => repo.try_fetch("vocab.txt")?,
    };
    let tokenizer_config = repo.try_fetch("tokenizer_config.json")?;
    let mut weights = None;
    for f in WEIGHT_FILES {
        if headers_only && f.ends_with(".safetensors") && repo.cached(f).is_none() {
            if let Some(header) = repo.remote_header(f)? {
                weights = Some(Weights::RemoteSafetensors {
                    name: f.to_string(),
                    header,
                });
                break;
            }
            if repo.api.is_some() {
                continue;
            }
        }
        if let Some(p) = repo.try_fetch(f)? {
            weights = Some(Weights::from_file(&p));
            break;
        }
    }
    let weights = weights.ok_or_else(|| {
        if hub.offline {
            Error::Hub(format!(
                "offline (HF_HUB_OFFLINE or --offline), and {model}@{} is not in the cache at {}: run once online to download it, or point HF_HOME / HF_HUB_CACHE at the cache that has it",
                hub.revision,
                hub.cache_dir.display()
            ))
        } else if config.is_none() && tokenizer_json.is_none() && vocab_txt.is_none() {
            Error::Hub(format!(
                "{model}@{}: the hub at {} has no such model (404)",
                hub.revision, repo.endpoint
            ))
        } else {
            Error::Hub(format!(
                "{model}@{} has no weights file (looked for {})",
                hub.revision,
                WEIGHT_FILES.join(", ")
            ))
        }
    })?;
    let commit = [
        Some(weights.path()),
        config.as_deref(),
        tokenizer_json.as_deref(),
    ]
    .into_iter()
    .flatten()
    .find_map(|p| repo.commit_of(p));
    Ok(ModelFiles {
        provenance: Provenance {
            kind: "hub",
            model: model.to_string(),
            revision: Some(hub.revision.clone()),
            commit,
        },
        config,
        tokenizer_json,
        vocab_txt,
        tokenizer_config,
        weights,
        fetcher: Box::new(repo),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids() {
        for ok in [
            "bert-base-chinese",
            "hfl/chinese-roberta-wwm-ext",
            "org/name.v2",
            "a_b/c-d",
        ] {
            assert!(is_hub_id(ok), "{ok}");
        }
        for bad in [
            "", "a/b/c", "../x", "/abs", "a//b", "a b", "org/..", ".hidden",
        ] {
            assert!(!is_hub_id(bad), "{bad}");
        }
    }
}

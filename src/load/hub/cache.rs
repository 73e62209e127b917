//! The hf-hub client and the cache it shares with Python's huggingface_hub: cache first, then
//! the hub; offline means the cache only.

use super::range::RangeClient;
use super::{HubSettings, ModelFiles, Provenance, WEIGHT_FILES};
use crate::error::{Error, Result};
use crate::load::checkpoint::{FetchFile, Weights};
use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::{Repo, RepoType};
use std::path::{Path, PathBuf};

/// Fetches files of one hub repo: from the cache only when offline, else cache first, then the hub.
struct HubRepo {
    id: String,
    revision: String,
    cache_dir: PathBuf,
    api: Option<ApiRepo>,
    /// Settings, for messages (endpoint without userinfo, scrubbing).
    hub: HubSettings,
    range: Option<RangeClient>,
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
            Some(code) => format!("hub answered {code} for {what} at {}", self.hub.endpoint_shown()),
            None => match &e {
                ApiError::RequestError(inner) if matches!(**inner, ureq::Error::Transport(_)) => format!(
                    "cannot reach the hub at {} for {what}: {}; to use the local cache only, set HF_HUB_OFFLINE=1 or pass --offline",
                    self.hub.endpoint_shown(),
                    one_line(&self.hub.scrub(&inner.to_string()))
                ),
                other => format!("downloading {what} from {}: {}", self.hub.endpoint_shown(), one_line(&self.hub.scrub(&other.to_string()))),
            },
        };
        Error::Hub(msg)
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
    fn fetch_optional(&self, name: &str) -> Result<Option<PathBuf>> {
        self.try_fetch(name)
    }

    fn remote_header(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let (Some(api), Some(range)) =
            (self.api.as_ref().filter(|_| self.headers_only), &self.range)
        else {
            return Ok(None);
        };
        let url = api.url(name);
        let what = format!("{}@{} {name}", self.id, self.revision);
        let Some(len) = range.get(&url, &what, 0, 8)? else {
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
        let json = match n {
            0 => Vec::new(),
            n => range.get(&url, &what, 8, n)?.unwrap_or_default(),
        };
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

pub(super) fn resolve_hub(
    model: &str,
    hub: &HubSettings,
    headers_only: bool,
) -> Result<ModelFiles> {
    check_cache_readable(model, hub)?;
    let endpoint = hub.endpoint();
    let api = if hub.offline {
        None
    } else {
        let api = ApiBuilder::new()
            .with_endpoint(endpoint.clone())
            .with_cache_dir(hub.cache_dir.clone())
            .with_token(hub.token.as_ref().map(|t| t.expose().to_string()))
            .with_progress(hub.progress)
            .with_retries(2)
            .with_user_agent("embed-transplant", env!("CARGO_PKG_VERSION"))
            .build()
            .map_err(|e| Error::Hub(hub.scrub(&format!("setting up the hub client: {e}"))))?;
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
        hub: hub.clone(),
        range: (!hub.offline && headers_only).then(|| RangeClient::new(hub)),
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
                hub.revision, hub.endpoint_shown()
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

/// A cache we cannot read is reported as such, not as "not in the cache": hf-hub's lookups turn
/// every I/O error into a miss.
fn check_cache_readable(model: &str, hub: &HubSettings) -> Result<()> {
    let repo_dir = hub.cache_entry(model);
    for dir in [&hub.cache_dir, &repo_dir] {
        match std::fs::read_dir(dir) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => {
                return Err(Error::file(
                    dir,
                    format!("the hub cache cannot be read: {e}"),
                ))
            }
        }
    }
    Ok(())
}

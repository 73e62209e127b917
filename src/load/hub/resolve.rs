//! Local models: a model directory or a single weights file, and the shape of a hub id.

use super::{ModelFiles, Provenance, WEIGHT_FILES};
use crate::error::{Error, Result};
use crate::load::checkpoint::{FetchFile, Weights};
use std::path::{Path, PathBuf};

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

pub(super) fn existing(dir: &Path, name: &str) -> Option<PathBuf> {
    Some(dir.join(name)).filter(|p| p.is_file())
}

pub(super) fn resolve_dir(model: &str, dir: &Path) -> Result<ModelFiles> {
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

pub(super) fn resolve_file(model: &str, file: &Path) -> Result<ModelFiles> {
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

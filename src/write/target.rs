//! The output rules, checked before any work starts: no output is, holds or lies inside an input
//! of the run ([`Inputs`], by any spelling: links followed, hard links by inode); a file output
//! replaces an existing file only with `--force`, and a directory, FIFO or device never; `--force`
//! replaces a directory output only when it is empty or an earlier output of ours ([`foreign`]).
//!
//! (Over 400 lines only with its tests, a sixth of it: file and directory targets share one set of
//! spelling and tree checks.)

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The output paths a run will write, checked before any work starts, and the input files they
/// must never replace.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    pub force: bool,
    /// The flag that named it, for messages (`--output`, `--report`, `--head`).
    pub flag: &'static str,
}

impl Target {
    pub fn new(path: &Path, force: bool, flag: &'static str) -> Self {
        Target {
            path: path.to_path_buf(),
            force,
            flag,
        }
    }

    /// Refuses early what the final rename would refuse, and what must never be replaced: a
    /// directory, a FIFO or device (never written through, even with --force), an existing file
    /// without --force, any of `inputs` by any spelling and any path inside an input tree, even
    /// with --force. `-` is refused with a hint.
    ///
    /// With --force an existing regular file is replaced whoever wrote it: the user named that
    /// one file, and nothing else is lost (a symlink is replaced itself; what it points to stays).
    pub fn check(&self, inputs: &Inputs) -> Result<()> {
        let path = &self.path;
        if path.as_os_str() == "-" {
            return Err(Error::Usage(format!(
                "{} -: writing to standard output is not supported; name a file (use /dev/stdout only through a file path you control)",
                self.flag
            )));
        }
        let exists = match std::fs::symlink_metadata(path) {
            Ok(meta) => {
                // Follow a link to see what a rename would replace; a dangling link is replaceable.
                let target_meta = std::fs::metadata(path).ok();
                let kind = target_meta.as_ref().map(|m| m.file_type());
                if kind.is_some_and(|k| k.is_dir()) {
                    return Err(Error::file(
                        path,
                        format!("{} names a directory", self.flag),
                    ));
                }
                if kind.is_some_and(|k| !k.is_file()) || (!meta.is_file() && !meta.is_symlink()) {
                    return Err(Error::file(
                        path,
                        format!("{} names a special file (FIFO, device or socket): refused, even with --force", self.flag),
                    ));
                }
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(path, e)),
        };
        if let Some(input) = inputs.existing_files().find(|i| same_path(i, path)) {
            return Err(Error::file(
                path,
                format!(
                    "{} names an input of this run ({}): refused, even with --force",
                    self.flag,
                    input.display()
                ),
            ));
        }
        inputs.refuse_inside_tree(path, self.flag, "a path")?;
        replaceable(path, exists, self.force)
    }
}

/// What a run reads: files, and trees (directories to keep whole: a hub cache entry). No output
/// may be an input file by any spelling (links followed, hard links by inode), no output may lie
/// inside a tree, and no directory an output replaces may hold an input or lie inside a tree.
///
/// Everything that reads a file adds it here before the outputs are checked: the flags' paths
/// before any work ([`crate::config`]), the model's files once resolved.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    files: Vec<PathBuf>,
    trees: Vec<PathBuf>,
}

impl Inputs {
    pub fn new() -> Self {
        Self::default()
    }

    /// A file this run reads.
    pub fn file(&mut self, p: impl Into<PathBuf>) {
        self.files.push(p.into());
    }

    /// Files this run reads.
    pub fn files(&mut self, ps: impl IntoIterator<Item = PathBuf>) {
        self.files.extend(ps);
    }

    /// A directory whose whole tree must stay as it is (a hub cache entry).
    pub fn tree(&mut self, p: impl Into<PathBuf>) {
        self.trees.push(p.into());
    }

    /// The files that exist (a candidate that is not there, such as a token file never made,
    /// is nothing to protect). Trees count whether or not they exist yet: a download fills them.
    fn existing_files(&self) -> impl Iterator<Item = &PathBuf> {
        self.files
            .iter()
            .filter(|p| std::fs::symlink_metadata(p).is_ok())
    }

    /// The inputs of `other` too.
    pub fn extend(&mut self, other: Inputs) {
        self.files.extend(other.files);
        self.trees.extend(other.trees);
    }

    /// An output (`what`: "a path", "a directory") inside a tree this run reads is refused.
    fn refuse_inside_tree(&self, path: &Path, flag: &str, what: &str) -> Result<()> {
        match self.trees.iter().find(|t| inside(path, t)) {
            Some(tree) => Err(Error::file(
                path,
                format!(
                    "{flag} names {what} inside {}, which this run reads: refused, even with --force",
                    tree.display()
                ),
            )),
            None => Ok(()),
        }
    }
}

/// Every place `p` stands for on disk: the entry itself (its directory's links resolved), and
/// what it points to when it exists (links resolved). Empty when neither can be found.
fn spellings(p: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let entry = match p.file_name() {
        Some(name) => parent_dir(p).canonicalize().ok().map(|d| d.join(name)),
        // `.`, `..`, `/`: only the resolved form names it.
        None => None,
    };
    v.extend(entry);
    if let Ok(c) = p.canonicalize() {
        if !v.contains(&c) {
            v.push(c);
        }
    }
    v
}

/// `a` and `b` are the same file or directory entry by any spelling.
pub fn same_path(a: &Path, b: &Path) -> bool {
    if same_file(a, b) {
        return true;
    }
    let sb = spellings(b);
    spellings(a).iter().any(|x| sb.contains(x))
}

/// `p` (by any spelling) is `dir` or lies below it (by any spelling).
fn inside(p: &Path, dir: &Path) -> bool {
    let d = spellings(dir);
    spellings(p)
        .iter()
        .any(|x| d.iter().any(|y| x.starts_with(y)))
}

/// True when `a` and `b` are the same file on disk (links and hub-cache symlinks resolved).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// The end of every output check: an existing path needs --force, and its directory must exist.
fn replaceable(path: &Path, exists: bool, force: bool) -> Result<()> {
    if exists && !force {
        return Err(exists_error(path));
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(Error::file(dir, "the output directory does not exist"));
    }
    Ok(())
}

pub(super) fn exists_error(path: &Path) -> Error {
    Error::file(path, "exists; pass --force to replace it")
}

pub(super) fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// An output directory (`--emit-model DIR`): written whole as a temp directory beside it, then
/// renamed into place.
#[derive(Debug, Clone)]
pub struct DirTarget {
    pub path: PathBuf,
    pub force: bool,
    pub flag: &'static str,
}

impl DirTarget {
    /// Refuses early: an existing DIR without --force, a DIR that is a file, a DIR that is or
    /// holds one of `inputs` or lies inside an input tree (even with --force), an existing DIR
    /// that is neither empty nor an earlier output of ours (even with --force: see [`foreign`]),
    /// a parent that does not exist.
    pub fn check(&self, inputs: &Inputs) -> Result<()> {
        let path = &self.path;
        let exists = match std::fs::metadata(path) {
            Ok(meta) => {
                if !meta.is_dir() {
                    return Err(Error::file(
                        path,
                        format!("{} names a file, not a directory", self.flag),
                    ));
                }
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(path, e)),
        };
        if let Some(input) = inputs
            .existing_files()
            .chain(&inputs.trees)
            .find(|i| inside(i, path))
        {
            return Err(Error::file(
                path,
                format!(
                    "{} names a directory holding an input of this run ({}): refused, even with --force",
                    self.flag,
                    input.display()
                ),
            ));
        }
        inputs.refuse_inside_tree(path, self.flag, "a directory")?;
        replaceable(path, exists, self.force)?;
        if exists {
            self.check_ours()?;
        }
        Ok(())
    }

    /// An existing DIR may be replaced only when that loses nothing we did not write.
    pub(super) fn check_ours(&self) -> Result<()> {
        match foreign(&self.path) {
            Ok(None) => Ok(()),
            Ok(Some(lost)) => Err(Error::file(
                &lost,
                format!(
                    "{} {} --force would delete this, which embed-transplant did not write: refused (--force replaces only an empty directory or an earlier --emit-model output)",
                    self.flag,
                    self.path.display()
                ),
            )),
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }

    /// True when DIR holds `p` (by any spelling): a file output there would go with DIR.
    pub fn holds(&self, p: &Path) -> bool {
        inside(p, &self.path)
    }
}

/// Names an `--emit-model` directory holds, for outputs written before transplant.json listed
/// its files.
const EMITTED_NAMES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "model.safetensors",
    "model.safetensors.index.json",
    "transplant.json",
];

/// A transplant.json larger than this is not ours (ours is a few KB).
const OWN_MARK_LIMIT: u64 = 16 << 20;

/// The entry of `dir` (first in name order) that replacing it would lose and that we did not
/// write; None when `dir` is empty or an earlier `--emit-model` output: its transplant.json is
/// ours (`tool` is `embed-transplant <version>`, with an `emit_model` section) and lists every
/// entry as a plain file (`files`; older outputs: their weight files and our fixed names).
fn foreign(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    let listed = own_listing(&dir.join("transplant.json")).unwrap_or_default();
    Ok(names.into_iter().map(|n| dir.join(n)).find(|p| {
        let plain = std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file());
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        !(plain && listed.iter().any(|l| l == name))
    }))
}

/// The files an `--emit-model` output's transplant.json says we wrote; None when it is not ours.
fn own_listing(p: &Path) -> Option<Vec<String>> {
    use std::io::Read;
    let mut text = Vec::new();
    std::fs::File::open(p)
        .ok()?
        .take(OWN_MARK_LIMIT + 1)
        .read_to_end(&mut text)
        .ok()?;
    if text.len() as u64 > OWN_MARK_LIMIT {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let tool = doc.get("tool")?.as_str()?;
    let emit = doc.get("emit_model")?.as_object()?;
    if !tool.starts_with("embed-transplant ") {
        return None;
    }
    let strings = |v: Option<&serde_json::Value>| -> Vec<String> {
        v.and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    let mut names = match doc.get("files") {
        Some(f) => strings(Some(f)),
        None => {
            let mut n: Vec<String> = EMITTED_NAMES.iter().map(|s| s.to_string()).collect();
            n.extend(strings(emit.get("weight_files")));
            n
        }
    };
    names.push("transplant.json".into());
    Some(names)
}

/// An earlier `--emit-model` output in `dir`: `files`, and a transplant.json of ours listing them.
#[cfg(test)]
pub(super) fn emitted(dir: &Path, files: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    for f in files {
        std::fs::write(dir.join(f), b"x").unwrap();
    }
    let doc = serde_json::json!({
        "tool": "embed-transplant 0.1.0",
        "emit_model": {"weight_files": ["model.safetensors"]},
        "files": files,
    });
    std::fs::write(dir.join("transplant.json"), doc.to_string()).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_and_special_files_are_never_targets() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("vocab.txt");
        std::fs::write(&input, b"a\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        for p in [&input, &link] {
            let mut inputs = Inputs::new();
            inputs.file(&input);
            let err = Target::new(p, true, "--report").check(&inputs).unwrap_err();
            assert!(
                err.to_string().contains("names an input of this run"),
                "{err}"
            );
        }
        let err = Target::new(Path::new("/dev/null"), true, "--report")
            .check(&Inputs::new())
            .unwrap_err();
        assert!(err.to_string().contains("special file"), "{err}");
        let err = Target::new(Path::new("-"), true, "--output")
            .check(&Inputs::new())
            .unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
    }

    #[test]
    fn only_empty_or_own_directories_are_replaceable() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("d");
        std::fs::create_dir(&d).unwrap();
        assert_eq!(foreign(&d).unwrap(), None, "empty");
        emitted(&d, &["config.json", "model.safetensors"]);
        assert_eq!(foreign(&d).unwrap(), None, "ours");
        std::fs::write(d.join("notes.md"), b"mine").unwrap();
        assert_eq!(foreign(&d).unwrap(), Some(d.join("notes.md")));
        std::fs::remove_file(d.join("notes.md")).unwrap();
        std::fs::create_dir(d.join("config.json.d")).unwrap();
        assert_eq!(foreign(&d).unwrap(), Some(d.join("config.json.d")));
        std::fs::remove_dir(d.join("config.json.d")).unwrap();
        // Not our transplant.json: everything would be lost; the first name is shown.
        std::fs::write(d.join("transplant.json"), br#"{"tool": "other"}"#).unwrap();
        assert_eq!(foreign(&d).unwrap(), Some(d.join("config.json")));
        // An output from before `files` was recorded: our fixed names and its weight files.
        std::fs::write(
            d.join("transplant.json"),
            br#"{"tool": "embed-transplant 0.1.0", "emit_model": {"weight_files": ["model-00001-of-00002.safetensors"]}}"#,
        )
        .unwrap();
        std::fs::write(d.join("model-00001-of-00002.safetensors"), b"x").unwrap();
        assert_eq!(foreign(&d).unwrap(), None);
        std::fs::write(d.join("model-00002-of-00002.safetensors"), b"x").unwrap();
        assert_eq!(
            foreign(&d).unwrap(),
            Some(d.join("model-00002-of-00002.safetensors"))
        );
    }
}

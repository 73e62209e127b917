//! Writing the output .safetensors: one tensor `weight`, a sorted `__metadata__` (so the same
//! inputs give the same bytes), into a temp file beside the target that is renamed into place.
//!
//! The output rules live here too: no output is, holds or lies inside an input ([`Inputs`]),
//! `--force` replaces a directory only when it is empty or ours ([`foreign`]), and a target holds
//! its old content or the complete new one at every instant (temp names that carry their owner,
//! swept by the next run; a directory swapped in one step).
//!
//! (Over 400 lines: the output rules, the header and the batch belong together; a third is tests.)

pub mod cancel;

use crate::dtype::DType;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One tensor to write: name, element type, shape, little-endian bytes.
pub struct TensorOut<'a> {
    pub name: &'a str,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: &'a [u8],
}

/// The header bytes: u64 LE length, then JSON padded with spaces to a multiple of 8. Keys are
/// sorted (serde_json's map is a BTreeMap without the preserve_order feature); data follows in the
/// order given.
pub fn header_for(tensors: &[TensorOut<'_>], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let mut root = serde_json::Map::new();
    if !metadata.is_empty() {
        root.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).unwrap_or_default(),
        );
    }
    let mut offset = 0;
    for t in tensors {
        // The byte length follows from shape and dtype; `data` may be empty when the bytes are
        // written later through a map.
        let len = t.shape.iter().product::<usize>() * t.dtype.size();
        root.insert(
            t.name.into(),
            serde_json::json!({
                "dtype": t.dtype.safetensors_name(),
                "shape": t.shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
    }
    let mut json = serde_json::to_vec(&root).unwrap_or_default();
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out
}

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
pub fn same_file(a: &Path, b: &Path) -> bool {
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

fn exists_error(path: &Path) -> Error {
    Error::file(path, "exists; pass --force to replace it")
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// One finished temp file waiting to be renamed into place.
struct Staged {
    tmp: tempfile::TempPath,
    target: Target,
    registered: cancel::Registered,
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
    fn check_ours(&self) -> Result<()> {
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
pub fn foreign(dir: &Path) -> std::io::Result<Option<PathBuf>> {
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

/// One finished temp directory waiting to be renamed into place.
struct StagedDir {
    tmp: tempfile::TempDir,
    target: DirTarget,
    registered: cancel::Registered,
}

/// The files of one run: each is written whole to a temp file beside its target, and
/// [`Batch::commit`] renames them all into place together. Dropping a batch that was not committed
/// removes its temp files, so a run that fails leaves no new file.
#[derive(Default)]
pub struct Batch {
    staged: Vec<Staged>,
    dirs: Vec<StagedDir>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes one file: `body` streams its bytes (space for `reserve_len` bytes is reserved first,
    /// so a full disk shows at once); the temp file is synced before it counts as written.
    pub fn file(
        &mut self,
        target: &Target,
        reserve_len: Option<u64>,
        body: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        target.check(&Inputs::new())?;
        let dir = parent_dir(&target.path);
        sweep_stale(dir);
        let (tmp, registered) = cancel::register_new(|| {
            let t = tempfile::Builder::new()
                .prefix(&temp_prefix())
                .suffix(".tmp")
                .tempfile_in(dir)?;
            let p = t.path().to_path_buf();
            Ok((t, p))
        })
        .map_err(|e| Error::io(dir, e))?;
        let result = (|| {
            if let Some(len) = reserve_len {
                reserve(tmp.as_file(), len)?;
            }
            let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
            body(&mut w)?;
            w.flush()?;
            drop(w);
            tmp.as_file().sync_all()
        })();
        if let Err(e) = result {
            return Err(Error::io(&target.path, e));
        }
        set_readable(tmp.path());
        self.staged.push(Staged {
            tmp: tmp.into_temp_path(),
            target: target.clone(),
            registered,
        });
        Ok(())
    }

    /// A JSON document as a file.
    pub fn json<T: serde::Serialize>(&mut self, target: &Target, value: &T) -> Result<()> {
        self.file(target, None, |w| {
            serde_json::to_writer_pretty(&mut *w, value)?;
            w.write_all(b"\n")
        })
    }

    /// Several tensors as one safetensors file.
    pub fn tensors(
        &mut self,
        target: &Target,
        tensors: &[TensorOut<'_>],
        metadata: &BTreeMap<String, String>,
    ) -> Result<()> {
        for t in tensors {
            let want = t.shape.iter().product::<usize>() * t.dtype.size();
            if t.data.len() != want {
                return Err(Error::Invalid(format!(
                    "tensor `{}`: {} bytes for shape {:?} {:?}",
                    t.name,
                    t.data.len(),
                    t.shape,
                    t.dtype
                )));
            }
        }
        self.file(target, None, |w| {
            w.write_all(&header_for(tensors, metadata))?;
            for t in tensors {
                w.write_all(t.data)?;
            }
            Ok(())
        })
    }

    /// One tensor `weight` of `shape` whose bytes `fill` streams into the writer it is given
    /// (block by block: the matrix need not exist in memory whole). A short or long stream is an
    /// error, not a bad file.
    pub fn matrix(
        &mut self,
        target: &Target,
        dtype: DType,
        shape: [usize; 2],
        metadata: &BTreeMap<String, String>,
        fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let nbytes = shape[0]
            .checked_mul(shape[1])
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| Error::Invalid(format!("a matrix of {shape:?} is too large")))?;
        let empty: [u8; 0] = [];
        let head = header_for(
            &[TensorOut {
                name: "weight",
                dtype,
                shape: shape.to_vec(),
                data: &empty,
            }],
            metadata,
        );
        let total = (head.len() + nbytes) as u64;
        self.file(target, Some(total), |w| {
            w.write_all(&head)?;
            let mut counted = Counted {
                inner: w,
                n: 0,
                pause: test_pause(),
            };
            fill(&mut counted)?;
            if counted.n != nbytes as u64 {
                return Err(std::io::Error::other(format!(
                    "wrote {} bytes of tensor data, expected {nbytes}",
                    counted.n
                )));
            }
            Ok(())
        })
    }

    /// Writes one directory: `body` fills a fresh temp directory beside the target (its files
    /// should be synced by `body`); the directory is renamed into place at commit.
    pub fn directory(
        &mut self,
        target: &DirTarget,
        body: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        target.check(&Inputs::new())?;
        let parent = parent_dir(&target.path);
        sweep_stale(parent);
        let (tmp, registered) = cancel::register_new(|| {
            let t = tempfile::Builder::new()
                .prefix(&temp_prefix())
                .suffix(".tmp")
                .tempdir_in(parent)?;
            let p = t.path().to_path_buf();
            Ok((t, p))
        })
        .map_err(|e| Error::io(parent, e))?;
        body(tmp.path())?;
        // Its entries reach the disk before it can replace DIR.
        sync_dir(tmp.path());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755));
        }
        self.dirs.push(StagedDir {
            tmp,
            target: target.clone(),
            registered,
        });
        Ok(())
    }

    /// Renames every written file into place, all under the cancellation lock. If a rename fails,
    /// the files this batch already put in place are removed again and a directory it replaced
    /// is put back (files it replaced with --force are gone: that is what --force asked for).
    pub fn commit(self) -> Result<()> {
        let mut regs = Vec::new();
        let mut staged = Vec::new();
        for s in self.staged {
            regs.push(s.registered);
            staged.push((s.tmp, s.target));
        }
        let mut dirs = Vec::new();
        for d in self.dirs {
            regs.push(d.registered);
            dirs.push((d.tmp, d.target));
        }
        let res = cancel::commit(|temps| {
            let mut done: Vec<PathBuf> = Vec::new();
            // Each directory put in place, with the one it replaced (kept aside until the end).
            let mut done_dirs: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
            let undo = |done: &[PathBuf], done_dirs: &[(PathBuf, Option<PathBuf>)]| {
                for d in done {
                    let _ = std::fs::remove_file(d);
                }
                for (d, old) in done_dirs {
                    match old {
                        Some(old) if exchange(old, d).is_ok() => {
                            let _ = std::fs::remove_dir_all(old);
                        }
                        Some(old) => {
                            let _ = std::fs::remove_dir_all(d);
                            let _ = std::fs::rename(old, d);
                        }
                        None => {
                            let _ = std::fs::remove_dir_all(d);
                        }
                    }
                }
            };
            for (tmp, target) in dirs {
                let tmp_path = tmp.path().to_path_buf();
                let res = commit_dir(tmp, &target);
                temps.retain(|p| *p != tmp_path);
                match res {
                    Ok(old) => done_dirs.push((target.path.clone(), old)),
                    Err(e) => {
                        undo(&done, &done_dirs);
                        return Err(e);
                    }
                }
            }
            test_hold("EMBED_TRANSPLANT_TEST_COMMIT_PAUSE_MS");
            for (tmp, target) in staged {
                let tmp_path = tmp.to_path_buf();
                let res = if target.force {
                    tmp.persist(&target.path).map_err(|e| e.error)
                } else {
                    tmp.persist_noclobber(&target.path).map_err(|e| e.error)
                };
                temps.retain(|p| *p != tmp_path);
                if let Err(e) = res {
                    undo(&done, &done_dirs);
                    let e = if e.kind() == std::io::ErrorKind::AlreadyExists {
                        exists_error(&target.path)
                    } else {
                        Error::io(&target.path, e)
                    };
                    return Err(e);
                }
                done.push(target.path.clone());
            }
            // The renames themselves reach the disk; then the replaced directories go.
            for p in done.iter().chain(done_dirs.iter().map(|(d, _)| d)) {
                sync_dir(parent_dir(p));
            }
            test_hold("EMBED_TRANSPLANT_TEST_COMMIT_PAUSE_MS");
            for old in done_dirs.iter().filter_map(|(_, old)| old.as_ref()) {
                let _ = std::fs::remove_dir_all(old);
            }
            Ok(())
        });
        drop(regs);
        res
    }
}

/// Puts a finished temp directory in place. An existing directory (only with --force, and only
/// when it is still empty or ours) is swapped with the new one in one step (`renameat2`
/// RENAME_EXCHANGE): at every instant DIR is the old directory or the new one, whole. Returns
/// where the old one now is (under a temp name of ours), for the caller to remove once the whole
/// batch is in place; if the process dies first, the next run's [`sweep_stale`] removes it.
/// Where the kernel or filesystem cannot exchange, the old directory is renamed aside first (DIR
/// is briefly absent then).
fn commit_dir(tmp: tempfile::TempDir, target: &DirTarget) -> Result<Option<PathBuf>> {
    let path = &target.path;
    let tmp_path = tmp.keep();
    let fail = |e: Error| {
        let _ = std::fs::remove_dir_all(&tmp_path);
        e
    };
    if std::fs::symlink_metadata(path).is_err() {
        return match std::fs::rename(&tmp_path, path) {
            Ok(()) => Ok(None),
            Err(e) => Err(fail(Error::io(path, e))),
        };
    }
    if !target.force {
        return Err(fail(exists_error(path)));
    }
    // Checked again here: the directory may have changed since the run began.
    target.check_ours().map_err(fail)?;
    match exchange(&tmp_path, path) {
        Ok(()) => return Ok(Some(tmp_path)),
        Err(e) if !exchange_unsupported(&e) => return Err(fail(Error::io(path, e))),
        Err(_) => {}
    }
    let old = tempfile::Builder::new()
        .prefix(&temp_prefix())
        .suffix(".old")
        .tempdir_in(parent_dir(path))
        .map_err(|e| fail(Error::io(parent_dir(path), e)))?
        .keep();
    std::fs::remove_dir(&old).map_err(|e| fail(Error::io(&old, e)))?;
    std::fs::rename(path, &old).map_err(|e| fail(Error::io(path, e)))?;
    // DIR is absent here: the crash test's kills land here too when this path is taken.
    test_hold("EMBED_TRANSPLANT_TEST_COMMIT_PAUSE_MS");
    if let Err(e) = std::fs::rename(&tmp_path, path) {
        let _ = std::fs::rename(&old, path);
        return Err(fail(Error::io(path, e)));
    }
    Ok(Some(old))
}

/// Swaps two directory entries atomically.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: a plain syscall on two NUL-terminated paths that outlive it.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// The kernel or filesystem has no atomic exchange (old kernels, some network filesystems).
fn exchange_unsupported(e: &std::io::Error) -> bool {
    #[cfg(target_os = "linux")]
    if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
        return true;
    }
    e.kind() == std::io::ErrorKind::Unsupported
}

/// Flushes a directory's entries (a rename into it) to the disk; best effort.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Temp names: `.embed-transplant-<pid>-<start>-<host>-<random>.tmp` (`.old` for a directory
/// moved aside). `<start>` is when the process started (Linux: clock ticks after boot, from
/// /proc; 0 elsewhere), so that a later process that happens to get the same pid is not taken
/// for the owner; `<host>` tags the machine and pid namespace ([`host_tag`]), so that a run on
/// another machine or in another container sharing the directory, whose pids mean nothing here,
/// is never taken for dead.
const TEMP_PREFIX: &str = ".embed-transplant-";

fn temp_prefix() -> String {
    format!(
        "{TEMP_PREFIX}{}-{}-{}-",
        std::process::id(),
        start_time(std::process::id()).unwrap_or(0),
        host_tag()
    )
}

/// The owner (pid, start, host) a temp name of ours carries; None for any other name.
fn temp_owner(name: &str) -> Option<(u32, u64, &str)> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    let rest = rest
        .strip_suffix(".tmp")
        .or_else(|| rest.strip_suffix(".old"))?;
    let mut parts = rest.splitn(4, '-');
    let pid = parts.next()?;
    let start = parts.next()?;
    let host = parts.next()?;
    let random = parts.next()?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let hex = host.len() == 8 && host.bytes().all(|b| b.is_ascii_hexdigit());
    if !(digits(pid)
        && digits(start)
        && hex
        && !random.is_empty()
        && random.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return None;
    }
    Some((pid.parse().ok()?, start.parse().ok()?, host))
}

/// 8 hex digits naming where pids mean what they mean here: a hash of the kernel's boot id and
/// this process's pid namespace (Linux), else of the host name.
fn host_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let mut id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        if let Ok(ns) = std::fs::read_link("/proc/self/ns/pid") {
            id.push_str(&ns.to_string_lossy());
        }
        if id.is_empty() {
            id = host_name();
        }
        // FNV-1a: stable across builds and platforms (std's hasher is not).
        let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{:08x}", (h ^ (h >> 32)) as u32)
    })
}

fn host_name() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
            let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    }
    String::new()
}

/// When process `pid` started (field 22 of /proc/<pid>/stat); None when there is no such
/// process or no /proc.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that made a temp name still runs: the same pid with the same start time;
/// where the start time cannot be read (no /proc, or another user's process hidden by
/// `hidepid`), any process with that pid counts, to be safe.
fn owner_alive(pid: u32, start: u64) -> bool {
    if let Some(s) = start_time(pid) {
        return s == start;
    }
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = (pid, start);
        true
    }
}

/// Removes what killed runs left in `dir`: entries named by our temp pattern whose owner no
/// longer runs. Nothing else is touched, and links are removed, never followed.
fn sweep_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some((pid, start, host)) = name.to_str().and_then(temp_owner) else {
            continue;
        };
        if host != host_tag() || owner_alive(pid, start) {
            continue;
        }
        let p = e.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir_all(&p);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&p);
            }
            Err(_) => {}
        }
    }
}

/// Counts bytes written.
struct Counted<'a> {
    inner: &'a mut dyn Write,
    n: u64,
    pause: Option<std::time::Duration>,
}

/// A test hook: `EMBED_TRANSPLANT_TEST_WRITE_PAUSE_MS=N` makes the matrix writer wait N ms after
/// each block (and the `--emit-model` weights writer after each tensor, its other files after
/// each file), so that signal tests can land mid-write deterministically.
pub(crate) fn test_pause() -> Option<std::time::Duration> {
    pause_of("EMBED_TRANSPLANT_TEST_WRITE_PAUSE_MS")
}

fn pause_of(var: &str) -> Option<std::time::Duration> {
    std::env::var(var)
        .ok()?
        .parse()
        .ok()
        .map(std::time::Duration::from_millis)
}

/// A test hook: `EMBED_TRANSPLANT_TEST_COMMIT_PAUSE_MS=N` waits N ms after the directories are
/// in place and again after the files, so that the crash test's kills land inside a commit too.
fn test_hold(var: &str) {
    if let Some(p) = pause_of(var) {
        std::thread::sleep(p);
    }
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(buf)?;
        self.n += buf.len() as u64;
        if let Some(p) = self.pause {
            self.inner.flush()?;
            std::thread::sleep(p);
        }
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Sets the file's length, with its blocks allocated where the filesystem can. `fallocate(2)`,
/// not glibc's `posix_fallocate`, which on filesystems without it writes zeros through the whole
/// length (doubling the write); there we fall back to a sparse length on purpose.
fn reserve(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        let len = libc::off_t::try_from(len)
            .map_err(|_| std::io::Error::other("output larger than the filesystem allows"))?;
        // SAFETY: a plain syscall on a file descriptor we own.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => {}
            _ => return Err(err),
        }
    }
    file.set_len(len)
}

// tempfile creates files 0600; an output file should be as readable as any other the user makes.
#[cfg(unix)]
fn set_readable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644));
}

#[cfg(not(unix))]
fn set_readable(_: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_sorted_padded_and_readable_by_safetensors() {
        let mut meta = BTreeMap::new();
        meta.insert("z".to_string(), "1".to_string());
        meta.insert("a".to_string(), "2".to_string());
        let data: Vec<u8> = [1f32, 2., 3., 4., 5., 6.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = TensorOut {
            name: "weight",
            dtype: DType::F32,
            shape: vec![2, 3],
            data: &data,
        };
        let mut file = header_for(&[t], &meta);
        assert_eq!((file.len() - 8) % 8, 0);
        file.extend_from_slice(&data);
        let st = safetensors::SafeTensors::deserialize(&file).unwrap();
        let t = st.tensor("weight").unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.data(), &data[..]);
        let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        let json = std::str::from_utf8(&file[8..8 + n]).unwrap();
        assert!(json.find("\"a\"").unwrap() < json.find("\"z\"").unwrap());
    }

    fn write_one(path: &Path, force: bool, data: &[u8]) -> Result<()> {
        let mut b = Batch::new();
        b.file(&Target::new(path, force, "--output"), None, |w| {
            w.write_all(data)
        })?;
        b.commit()
    }

    #[test]
    fn failing_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.safetensors");
        let mut b = Batch::new();
        let err = b
            .file(&Target::new(&out, false, "--output"), None, |w| {
                w.write_all(b"partial")?;
                Err(std::io::Error::other("disk full"))
            })
            .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_batch_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let mut batch = Batch::new();
        batch
            .file(&Target::new(&a, false, "--output"), None, |w| {
                w.write_all(b"a")
            })
            .unwrap();
        assert!(!a.exists(), "nothing appears before the commit");
        let err = batch.file(&Target::new(&b, false, "--report"), None, |_| {
            Err(std::io::Error::other("no space"))
        });
        assert!(err.is_err());
        drop(batch);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut batch = Batch::new();
        for p in [&a, &b] {
            batch
                .file(&Target::new(p, false, "--output"), None, |w| {
                    w.write_all(b"x")
                })
                .unwrap();
        }
        batch.commit().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"x");
        assert_eq!(std::fs::read(&b).unwrap(), b"x");
    }

    #[test]
    fn streamed_matrix_matches_the_in_memory_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = BTreeMap::new();
        meta.insert("k".to_string(), "v".to_string());
        let data: Vec<u8> = (0..24u8).collect();
        let a = dir.path().join("a.safetensors");
        let b = dir.path().join("b.safetensors");
        let mut batch = Batch::new();
        let t = TensorOut {
            name: "weight",
            dtype: DType::F32,
            shape: vec![2, 3],
            data: &data,
        };
        batch
            .tensors(&Target::new(&a, false, "--output"), &[t], &meta)
            .unwrap();
        batch
            .matrix(
                &Target::new(&b, false, "--output"),
                DType::F32,
                [2, 3],
                &meta,
                |w| w.write_all(&data),
            )
            .unwrap();
        batch.commit().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let short = dir.path().join("c.safetensors");
        let mut batch = Batch::new();
        let err = batch.matrix(
            &Target::new(&short, false, "--output"),
            DType::F32,
            [2, 3],
            &meta,
            |w| w.write_all(&data[..20]),
        );
        assert!(err.unwrap_err().to_string().contains("expected 24"));
        drop(batch);
        assert!(!short.exists());
    }

    #[test]
    fn existing_output_is_kept_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.safetensors");
        std::fs::write(&out, b"old").unwrap();
        let err = write_one(&out, false, b"new").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("exists; pass --force to replace it"),
            "{err}"
        );
        assert_eq!(std::fs::read(&out).unwrap(), b"old");
        write_one(&out, true, b"new").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
    }

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
    fn temp_names_carry_their_owner_and_only_dead_owners_are_swept() {
        let me = std::process::id();
        let start = start_time(me).unwrap_or(0);
        let ours = temp_prefix();
        let host = host_tag();
        assert_eq!(
            temp_owner(&format!("{ours}a1B2c3.tmp")),
            Some((me, start, host))
        );
        for not_ours in [
            ".embed-transplant-a1B2c3.tmp",
            ".embed-transplant-12-x-0badcafe-abc.tmp",
            ".embed-transplant-12-34-0badcafe-abc.json",
            ".embed-transplant-12-34-0badcafe-.tmp",
            ".embed-transplant-12-34-0badcafe-a/b.tmp",
            ".embed-transplant-12-34-abc.tmp",
            ".embed-transplant-12-34-badcafe-abc.tmp",
            "embed-transplant-12-34-0badcafe-abc.tmp",
        ] {
            assert_eq!(temp_owner(not_ours), None, "{not_ours}");
        }
        let dir = tempfile::tempdir().unwrap();
        // A pid that runs no more; and this pid with another start time: the pid reused.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale_file = format!("{TEMP_PREFIX}{dead}-5-{host}-abcdef.tmp");
        let reused = format!("{TEMP_PREFIX}{me}-{}-{host}-abcdef.tmp", start + 1);
        let stale_dir = format!("{TEMP_PREFIX}{dead}-5-{host}-ghijkl.old");
        let live = format!("{ours}mnopqr.tmp");
        let other = ".embed-transplant-legacy.tmp";
        // Another machine's or container's: its pid says nothing here.
        let elsewhere = format!(
            "{TEMP_PREFIX}{dead}-5-{}-stuvwx.tmp",
            if host == "00000000" {
                "00000001"
            } else {
                "00000000"
            }
        );
        for f in [&stale_file, &reused, &live, other, &elsewhere] {
            std::fs::write(dir.path().join(f), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join(&stale_dir)).unwrap();
        std::fs::write(dir.path().join(&stale_dir).join("model.safetensors"), b"x").unwrap();
        sweep_stale(dir.path());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = vec![live, other.to_string(), elsewhere];
        if start == 0 {
            // Without /proc the start time is unknown: the same pid counts as alive.
            want.push(reused);
        }
        want.sort();
        assert_eq!(left, want);
    }

    fn emitted(dir: &Path, files: &[&str]) {
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

    #[test]
    fn a_replaced_directory_is_swapped_whole_and_the_old_one_removed() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("d");
        emitted(&d, &["config.json"]);
        let target = DirTarget {
            path: d.clone(),
            force: true,
            flag: "--emit-model",
        };
        let mut batch = Batch::new();
        batch
            .directory(&target, |tmp| {
                std::fs::write(tmp.join("new.json"), b"new").map_err(|e| Error::io(tmp, e))
            })
            .unwrap();
        batch.commit().unwrap();
        let names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["new.json"]);
        let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp or old directory is left");
    }

    #[test]
    fn a_failed_commit_puts_a_replaced_directory_back() {
        let root = tempfile::tempdir().unwrap();
        let d = root.path().join("d");
        emitted(&d, &["config.json"]);
        let before: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let f = root.path().join("f");
        let mut batch = Batch::new();
        let target = DirTarget {
            path: d.clone(),
            force: true,
            flag: "--emit-model",
        };
        batch
            .directory(&target, |tmp| {
                std::fs::write(tmp.join("new.json"), b"new").map_err(|e| Error::io(tmp, e))
            })
            .unwrap();
        batch
            .file(&Target::new(&f, false, "--output"), None, |w| {
                w.write_all(b"x")
            })
            .unwrap();
        // Someone makes the file meanwhile: its rename (without --force) fails at commit.
        std::fs::write(&f, b"theirs").unwrap();
        let err = batch.commit().unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        let after: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(after, before, "the old directory is back");
        assert_eq!(std::fs::read(&f).unwrap(), b"theirs");
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            2,
            "no temp left"
        );
    }

    /// The one step that keeps DIR whole while it is replaced; a filesystem without it makes the
    /// crash guarantee weaker (docs/usage.md), so this test says so where it runs.
    #[cfg(target_os = "linux")]
    #[test]
    fn exchange_swaps_two_directories() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("x"), b"a").unwrap();
        std::fs::write(b.join("x"), b"b").unwrap();
        exchange(&a, &b).unwrap();
        assert_eq!(std::fs::read(a.join("x")).unwrap(), b"b");
        assert_eq!(std::fs::read(b.join("x")).unwrap(), b"a");
    }
}

//! Writing the output .safetensors: one tensor `weight`, a sorted `__metadata__` (so the same
//! inputs give the same bytes), into a temp file beside the target that is renamed into place.
//!
//! (Over 400 lines: the output rules, the header and the batch belong together; a third is tests.)

use crate::cancel;
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
    /// without --force, and any of `inputs`, even with --force. `-` is refused with a hint.
    pub fn check(&self, inputs: &[PathBuf]) -> Result<()> {
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
                if let Some(input) = inputs.iter().find(|i| same_file(i, path)) {
                    return Err(Error::file(
                        path,
                        format!(
                            "{} names an input of this run ({}): refused, even with --force",
                            self.flag,
                            input.display()
                        ),
                    ));
                }
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(path, e)),
        };
        replaceable(path, exists, self.force)
    }
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
    /// Refuses early: an existing DIR without --force, a DIR that is a file, a DIR holding one of
    /// `inputs` (even with --force), a parent that does not exist.
    pub fn check(&self, inputs: &[PathBuf]) -> Result<()> {
        let path = &self.path;
        let exists = match std::fs::metadata(path) {
            Ok(meta) => {
                if !meta.is_dir() {
                    return Err(Error::file(
                        path,
                        format!("{} names a file, not a directory", self.flag),
                    ));
                }
                if let Some(input) = inputs
                    .iter()
                    .find(|i| same_file(i, path) || same_file(parent_dir(i), path))
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
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::io(path, e)),
        };
        replaceable(path, exists, self.force)
    }
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
        target.check(&[])?;
        let dir = parent_dir(&target.path);
        let (tmp, registered) = cancel::register_new(|| {
            let t = tempfile::Builder::new()
                .prefix(".embed-transplant-")
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
        target.check(&[])?;
        let parent = parent_dir(&target.path);
        let (tmp, registered) = cancel::register_new(|| {
            let t = tempfile::Builder::new()
                .prefix(".embed-transplant-")
                .suffix(".tmp")
                .tempdir_in(parent)?;
            let p = t.path().to_path_buf();
            Ok((t, p))
        })
        .map_err(|e| Error::io(parent, e))?;
        body(tmp.path())?;
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
    /// the files this batch already put in place are removed again (files they replaced with
    /// --force are gone: that is what --force asked for).
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
            let mut done_dirs: Vec<PathBuf> = Vec::new();
            let undo = |done: &[PathBuf], done_dirs: &[PathBuf]| {
                for d in done {
                    let _ = std::fs::remove_file(d);
                }
                for d in done_dirs {
                    let _ = std::fs::remove_dir_all(d);
                }
            };
            for (tmp, target) in dirs {
                let tmp_path = tmp.path().to_path_buf();
                let res = commit_dir(tmp, &target);
                temps.retain(|p| *p != tmp_path);
                if let Err(e) = res {
                    undo(&done, &done_dirs);
                    return Err(e);
                }
                done_dirs.push(target.path.clone());
            }
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
            Ok(())
        });
        drop(regs);
        res
    }
}

/// Puts a finished temp directory in place. An existing directory (only with --force) is moved
/// aside first and removed once the new one is in place.
fn commit_dir(tmp: tempfile::TempDir, target: &DirTarget) -> Result<()> {
    let path = &target.path;
    let mut aside: Option<PathBuf> = None;
    if std::fs::symlink_metadata(path).is_ok() {
        if !target.force {
            return Err(exists_error(path));
        }
        let old = tempfile::Builder::new()
            .prefix(".embed-transplant-old-")
            .tempdir_in(parent_dir(path))
            .map_err(|e| Error::io(parent_dir(path), e))?
            .keep();
        std::fs::remove_dir(&old).map_err(|e| Error::io(&old, e))?;
        std::fs::rename(path, &old).map_err(|e| Error::io(path, e))?;
        aside = Some(old);
    }
    let tmp_path = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp_path, path) {
        let _ = std::fs::remove_dir_all(&tmp_path);
        if let Some(old) = &aside {
            let _ = std::fs::rename(old, path);
        }
        return Err(Error::io(path, e));
    }
    if let Some(old) = aside {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(())
}

/// Counts bytes written.
struct Counted<'a> {
    inner: &'a mut dyn Write,
    n: u64,
    pause: Option<std::time::Duration>,
}

/// A test hook: `EMBED_TRANSPLANT_TEST_WRITE_PAUSE_MS=N` makes the matrix writer wait N ms after
/// each block (and the `--emit-model` weights writer after each tensor), so that signal tests can
/// land mid-write deterministically.
pub(crate) fn test_pause() -> Option<std::time::Duration> {
    std::env::var("EMBED_TRANSPLANT_TEST_WRITE_PAUSE_MS")
        .ok()?
        .parse()
        .ok()
        .map(std::time::Duration::from_millis)
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
            let err = Target::new(p, true, "--report")
                .check(std::slice::from_ref(&input))
                .unwrap_err();
            assert!(
                err.to_string().contains("names an input of this run"),
                "{err}"
            );
        }
        let err = Target::new(Path::new("/dev/null"), true, "--report")
            .check(&[])
            .unwrap_err();
        assert!(err.to_string().contains("special file"), "{err}");
        let err = Target::new(Path::new("-"), true, "--output")
            .check(&[])
            .unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
    }
}

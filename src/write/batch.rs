//! The files of one run, staged and committed together: each is written whole to a temp file (or
//! directory) beside its target, synced, and [`Batch::commit`] renames them all into place under
//! the cancellation lock; a directory is swapped in one step, and a failed commit undoes the
//! renames it made. A target holds its old content or the complete new one at every instant.
//!
//! (Over 400 lines because staging, the commit with its undo, and the directory exchange are one
//! protocol, read best in one place; 30% is tests.)

use super::cancel;
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::safetensors::{header_for, TensorOut};
use super::target::{exists_error, parent_dir, DirTarget, Inputs, Target};
use super::temp::{sweep_stale, temp_prefix};

/// One finished temp file waiting to be renamed into place.
struct StagedFile {
    tmp: tempfile::TempPath,
    target: Target,
    registered: cancel::Registered,
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
    staged: Vec<StagedFile>,
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
        self.staged.push(StagedFile {
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
    use crate::write::target::emitted;

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

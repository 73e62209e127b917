//! Writing the output .safetensors: one tensor `weight`, a sorted `__metadata__` (so the same
//! inputs give the same bytes), into a temp file beside the target that is renamed into place.

use crate::checkpoint::DType;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the Ctrl-C handler; the writer checks it between chunks and abandons the temp file.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// True while a temp file of ours exists: a Ctrl-C then asks the writer to clean up instead of
/// ending the process at once.
pub static WRITING: AtomicBool = AtomicBool::new(false);

/// Err(Interrupted) once Ctrl-C was pressed: long steps call this between stages.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

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

/// Writes several tensors to one safetensors file, whole or not at all.
pub fn write_tensors(
    path: &Path,
    tensors: &[TensorOut<'_>],
    metadata: &BTreeMap<String, String>,
    force: bool,
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
    write_with(path, force, |w| {
        w.write_all(&header_for(tensors, metadata))?;
        for t in tensors {
            for chunk in t.data.chunks(8 << 20) {
                if INTERRUPTED.load(Ordering::SeqCst) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::Interrupted,
                        "interrupted",
                    ));
                }
                w.write_all(chunk)?;
            }
        }
        Ok(())
    })
}

/// Writes `data` as tensor `weight` to `path`. The file appears whole or not at all: a failure or
/// Ctrl-C part-way removes the temp file. An existing `path` is replaced only with `force`.
pub fn write_safetensors(
    path: &Path,
    dtype: DType,
    shape: [usize; 2],
    data: &[u8],
    metadata: &BTreeMap<String, String>,
    force: bool,
) -> Result<()> {
    let t = TensorOut {
        name: "weight",
        dtype,
        shape: shape.to_vec(),
        data,
    };
    write_tensors(path, &[t], metadata, force)
}

/// Writes one tensor `weight` of `shape` whose bytes `fill` streams into the writer it is given
/// (block by block: the matrix need not exist in memory whole). The file's space is reserved
/// first, so a full disk shows at once. A short or long stream is an error, not a bad file.
pub fn write_matrix_with(
    path: &Path,
    dtype: DType,
    shape: [usize; 2],
    metadata: &BTreeMap<String, String>,
    force: bool,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let nbytes = shape[0] * shape[1] * dtype.size();
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
    write_with_reserve(path, force, Some(total), |w| {
        w.write_all(&head)?;
        let mut counted = Counted { inner: w, n: 0 };
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

/// Counts bytes and honours Ctrl-C between writes.
struct Counted<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "interrupted",
            ));
        }
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Sets the file's length, with its blocks allocated where the filesystem can.
fn reserve(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: a plain syscall on a file descriptor we own.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
        match rc {
            0 => return Ok(()),
            // Filesystems without fallocate: fall back to a sparse length.
            libc::EOPNOTSUPP | libc::EINVAL => {}
            e => return Err(std::io::Error::from_raw_os_error(e)),
        }
    }
    file.set_len(len)
}

/// Refuses early what the final rename would refuse, before any work is done.
pub fn check_target(path: &Path, force: bool) -> Result<()> {
    if path.is_dir() {
        return Err(Error::file(path, "the output path is a directory"));
    }
    if path.exists() && !force {
        return Err(Error::file(
            path,
            "the output file exists; pass --force to replace it",
        ));
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(Error::file(dir, "the output directory does not exist"));
    }
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Runs `body` against a temp file beside `path`, then renames it into place.
pub fn write_with(
    path: &Path,
    force: bool,
    body: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    write_with_reserve(path, force, None, body)
}

/// [`write_with`], with the file's final length reserved on disk first (when known).
pub fn write_with_reserve(
    path: &Path,
    force: bool,
    reserve_len: Option<u64>,
    body: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    check_target(path, force)?;
    let dir = parent_dir(path);
    WRITING.store(true, Ordering::SeqCst);
    let res = write_tmp(path, dir, force, body, reserve_len);
    WRITING.store(false, Ordering::SeqCst);
    res
}

fn write_tmp(
    path: &Path,
    dir: &Path,
    force: bool,
    body: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    reserve_len: Option<u64>,
) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix(".embed-transplant-")
        .suffix(".tmp")
        .tempfile_in(dir)
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
        // `tmp` is removed when dropped.
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err(Error::Interrupted);
        }
        return Err(Error::io(path, e));
    }
    set_readable(tmp.path());
    let persisted = if force {
        tmp.persist(path).map_err(|e| e.error)
    } else {
        tmp.persist_noclobber(path).map_err(|e| e.error)
    };
    persisted.map_err(|e| Error::io(path, e))?;
    Ok(())
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

    /// INTERRUPTED is process-wide: tests that depend on it run one at a time.
    static FLAG: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn ctrl_c_during_write_leaves_no_file() {
        let _g = FLAG.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.safetensors");
        INTERRUPTED.store(true, Ordering::SeqCst);
        let err = write_safetensors(&out, DType::F32, [1, 1], &[0; 4], &BTreeMap::new(), false);
        INTERRUPTED.store(false, Ordering::SeqCst);
        assert!(matches!(err, Err(Error::Interrupted)), "{err:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn failing_writer_leaves_nothing() {
        let _g = FLAG.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.safetensors");
        let err = write_with(&out, false, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn streamed_writer_matches_the_in_memory_writer() {
        let dir = tempfile::tempdir().unwrap();
        let mut meta = BTreeMap::new();
        meta.insert("k".to_string(), "v".to_string());
        let data: Vec<u8> = (0..24u8).collect();
        let a = dir.path().join("a.safetensors");
        let b = dir.path().join("b.safetensors");
        write_safetensors(&a, DType::F32, [2, 3], &data, &meta, false).unwrap();
        write_matrix_with(&b, DType::F32, [2, 3], &meta, false, |w| w.write_all(&data)).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let short = dir.path().join("c.safetensors");
        let err = write_matrix_with(&short, DType::F32, [2, 3], &meta, false, |w| {
            w.write_all(&data[..20])
        });
        assert!(err.unwrap_err().to_string().contains("expected 24"));
        assert!(!short.exists());
    }

    #[test]
    fn existing_output_is_kept_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.safetensors");
        std::fs::write(&out, b"old").unwrap();
        let err = write_with(&out, false, |w| w.write_all(b"new")).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(std::fs::read(&out).unwrap(), b"old");
        write_with(&out, true, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
    }
}

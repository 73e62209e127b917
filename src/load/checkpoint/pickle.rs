//! PyTorch `.bin` checkpoints: the zip format (torch >= 1.6) and the legacy pre-1.6 stream, both
//! through candle's pickle reader, which builds plain objects and never executes pickle code.
//! Only the embedding's storage bytes are read.
//!
//! (Over 400 lines: one format, zip and legacy `.bin`, whose readers share the tensor-record
//! decoding; the budget check is split out into `pickle_guard`.)

use crate::dtype::DType;
use crate::error::{Error, Result};
use candle_core::pickle::{Object, Stack};

// Panics inside candle's pickle reader are caught (see `guarded`); under panic = "abort" they
// would end the process instead.
#[cfg(panic = "abort")]
compile_error!("embed-transplant's pickle reader needs panic = \"unwind\"");
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// One tensor of a `.bin` checkpoint, as its pickle describes it.
#[derive(Debug, Clone)]
pub struct PthEntry {
    pub name: String,
    /// None when the storage type is one we cannot convert (ints, bools).
    pub dtype: Option<DType>,
    pub dtype_name: String,
    pub shape: Vec<usize>,
    pub contiguous: bool,
    /// Offset of the tensor's first element inside its storage, in bytes.
    pub start_bytes: usize,
    /// The storage: the zip entry name, or the legacy storage key.
    pub storage: String,
}

/// The two on-disk layouts of `torch.save`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PthLayout {
    Zip,
    Legacy,
}

/// A parsed `.bin`: its tensors and where their storages live.
#[derive(Debug)]
pub struct PthFile {
    pub path: PathBuf,
    pub layout: PthLayout,
    pub entries: Vec<PthEntry>,
    /// Legacy only: storage key -> (byte offset of its data in the file, byte length).
    legacy_storages: Vec<(String, u64, u64)>,
}

// The most that we read of a pickle before calling it hostile: real data.pkl files of the largest
// checkpoints are a few MB.
const MAX_PICKLE_BYTES: u64 = 256 << 20;

impl PthFile {
    /// Parses the pickled structure only (no tensor data is read).
    pub fn open(path: &Path) -> Result<Self> {
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut file, &mut magic).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Err(Error::file(path, "the file is empty"));
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io(path, e))?;
        if magic == *b"PK\x03\x04" {
            open_zip(path, file)
        } else if magic[0] == 0x80 {
            open_legacy(path, file)
        } else {
            Err(Error::file(
                path,
                "not a PyTorch checkpoint (neither a zip archive nor a legacy torch.save stream)",
            ))
        }
    }

    /// Reads one tensor's bytes (little-endian, row-major).
    pub fn read(&self, entry: &PthEntry) -> Result<Vec<u8>> {
        let dtype = entry.dtype.ok_or_else(|| {
            Error::tensor(
                &self.path,
                &entry.name,
                format!("storage type {} is not a float type", entry.dtype_name),
            )
        })?;
        self.read_raw(entry, dtype.size())
    }

    /// Reads one tensor's bytes whatever its element type (integer buffers too), `elem` bytes
    /// per element.
    pub fn read_raw(&self, entry: &PthEntry, elem: usize) -> Result<Vec<u8>> {
        if !entry.contiguous {
            return Err(Error::tensor(
                &self.path,
                &entry.name,
                "the tensor is not contiguous in its storage (a transposed or sliced view); save it with .contiguous()",
            ));
        }
        let want = entry
            .shape
            .iter()
            .try_fold(elem, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::tensor(&self.path, &entry.name, "shape overflows"))?;
        let bad = |msg: String| Error::tensor(&self.path, &entry.name, msg);
        let mut out = Vec::new();
        match self.layout {
            PthLayout::Zip => {
                let file = std::fs::File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
                let mut zip = zip::ZipArchive::new(BufReader::new(file))
                    .map_err(|e| Error::file(&self.path, format!("bad zip archive: {e}")))?;
                let mut reader = zip
                    .by_name(&entry.storage)
                    .map_err(|e| bad(format!("storage {}: {e}", entry.storage)))?;
                // The entry's size is what its header claims: never more than the file holds.
                let file_len = std::fs::metadata(&self.path)
                    .map_err(|e| Error::io(&self.path, e))?
                    .len();
                let have = reader.size().min(file_len);
                check_span(entry.start_bytes, want, have).map_err(bad)?;
                std::io::copy(
                    &mut reader.by_ref().take(entry.start_bytes as u64),
                    &mut std::io::sink(),
                )
                .map_err(|e| Error::io(&self.path, e))?;
                out.try_reserve_exact(want)
                    .map_err(|_| bad(format!("cannot allocate {want} bytes")))?;
                reader
                    .take(want as u64)
                    .read_to_end(&mut out)
                    .map_err(|e| Error::io(&self.path, e))?;
            }
            PthLayout::Legacy => {
                let (_, offset, len) = self
                    .legacy_storages
                    .iter()
                    .find(|(k, _, _)| *k == entry.storage)
                    .ok_or_else(|| bad(format!("storage {} is not in the file", entry.storage)))?;
                check_span(entry.start_bytes, want, *len).map_err(bad)?;
                let mut file =
                    std::fs::File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
                file.seek(SeekFrom::Start(offset + entry.start_bytes as u64))
                    .map_err(|e| Error::io(&self.path, e))?;
                out.try_reserve_exact(want)
                    .map_err(|_| bad(format!("cannot allocate {want} bytes")))?;
                file.take(want as u64)
                    .read_to_end(&mut out)
                    .map_err(|e| Error::io(&self.path, e))?;
            }
        }
        if out.len() != want {
            return Err(bad(format!(
                "the file ends after {} of {want} bytes",
                out.len()
            )));
        }
        Ok(out)
    }
}

fn check_span(start: usize, want: usize, have: u64) -> std::result::Result<(), String> {
    match start.checked_add(want) {
        Some(end) if end as u64 <= have => Ok(()),
        _ => Err(format!(
            "bytes {start}..{} lie outside its storage ({have} bytes)",
            start.saturating_add(want)
        )),
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn open_zip(path: &Path, file: std::fs::File) -> Result<PthFile> {
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| Error::file(path, format!("bad zip archive: {e}")))?;
    let pkl = zip
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| n.ends_with("data.pkl"))
        .map(|n| n.into_owned())
        .ok_or_else(|| Error::file(path, "zip archive without data.pkl: not a torch.save file"))?;
    let dir = pkl.strip_suffix(".pkl").unwrap_or(&pkl).to_string();
    let reader = zip
        .by_name(&pkl)
        .map_err(|e| Error::file(path, format!("{pkl}: {e}")))?;
    let mut bytes = Vec::new();
    reader
        .take(MAX_PICKLE_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::file(path, format!("{pkl}: {e}")))?;
    let (obj, _) = read_pickle(path, &bytes)?;
    let entries = state_dict_entries(path, obj, &dir)?;
    Ok(PthFile {
        path: path.to_path_buf(),
        layout: PthLayout::Zip,
        entries,
        legacy_storages: Vec::new(),
    })
}

// torch.save's legacy stream starts with the pickled magic number 0x1950a86a20f9469cfc6c
// (protocol 2, LONG1 of 10 bytes). We match the bytes rather than unpickle them: the number does
// not fit in an i64.
const LEGACY_MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];

fn open_legacy(path: &Path, file: std::fs::File) -> Result<PthFile> {
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    drop(file);
    // The pickles are read from a map of the file: only their pages are touched.
    let map = super::map_file(path)?;
    if !map.starts_with(&LEGACY_MAGIC) {
        return Err(Error::file(
            path,
            "not a PyTorch checkpoint (a pickle, but without torch.save's magic number)",
        ));
    }
    // Protocol version, system info, the state dict, then the storage keys in file order.
    let mut at = LEGACY_MAGIC.len();
    let mut next = || -> Result<Object> {
        let (obj, len) = read_pickle(path, &map[at..])?;
        at += len;
        Ok(obj)
    };
    let _protocol = next()?;
    let _sys_info = next()?;
    let state = next()?;
    let keys = next()?;
    let entries = state_dict_entries(path, state, "")?;
    let keys: Vec<String> = match keys {
        Object::List(v) => v
            .into_iter()
            .map(|k| k.unicode().map_err(|_| ()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::file(path, "legacy checkpoint: storage keys are not strings"))?,
        _ => {
            return Err(Error::file(
                path,
                "legacy checkpoint: no list of storage keys",
            ))
        }
    };
    // Each storage: an i64 element count, then the raw elements. The element size comes from the
    // storage type that the state dict names for that key. The counts are read from the map.
    let elem_of: std::collections::HashMap<&str, u64> = entries
        .iter()
        .map(|e| (e.storage.as_str(), storage_elem_size(&e.dtype_name)))
        .collect();
    let mut pos = at as u64;
    let mut storages = Vec::with_capacity(keys.len());
    for key in &keys {
        let elem = *elem_of.get(key.as_str()).ok_or_else(|| {
            Error::file(
                path,
                format!("legacy checkpoint: storage {key} has no tensor"),
            )
        })?;
        let count = map
            .get(pos as usize..pos as usize + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .ok_or_else(|| {
                Error::file(
                    path,
                    format!("legacy checkpoint: truncated before storage {key}"),
                )
            })?;
        let numel = u64::from_le_bytes(count);
        let len = numel
            .checked_mul(elem)
            .filter(|&l| l <= file_len.saturating_sub(pos.saturating_add(8)))
            .ok_or_else(|| {
                Error::file(
                    path,
                    format!("legacy checkpoint: storage {key} claims {numel} elements, more than the file holds"),
                )
            })?;
        storages.push((key.clone(), pos + 8, len));
        pos += 8 + len;
    }
    Ok(PthFile {
        path: path.to_path_buf(),
        layout: PthLayout::Legacy,
        entries,
        legacy_storages: storages,
    })
}

pub(crate) fn storage_elem_size(class: &str) -> u64 {
    match class {
        "DoubleStorage" | "LongStorage" => 8,
        "FloatStorage" | "IntStorage" => 4,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        _ => 1,
    }
}

/// Runs candle's pickle machine over the pickle at the start of `bytes`, after the budget check
/// (see `pickle_guard`); returns the object and the pickle's length. Candle's reader also assumes
/// well-formed input in places (it indexes tuples directly), so a panic inside it becomes an error.
fn read_pickle(path: &Path, bytes: &[u8]) -> Result<(Object, usize)> {
    let len = super::pickle_guard::check(bytes)
        .map_err(|e| Error::file(path, format!("unreadable pickle: {e}")))?;
    let res = guarded(|| {
        let mut r = std::io::Cursor::new(&bytes[..len]);
        let mut stack = Stack::empty();
        stack.read_loop(&mut r)?;
        stack.finalize()
    });
    match res {
        Some(Ok(obj)) => {
            check_globals(&obj).map_err(|g| {
                Error::file(
                    path,
                    format!("the pickle refers to `{g}`, which a checkpoint never needs: refused (nothing was executed)"),
                )
            })?;
            Ok((obj, len))
        }
        // candle appends a backtrace to its messages when RUST_BACKTRACE is set: keep the first line.
        Some(Err(e)) => Err(Error::file(
            path,
            format!(
                "unreadable pickle: {}",
                e.to_string().lines().next().unwrap_or_default()
            ),
        )),
        None => Err(Error::file(path, "unreadable pickle: malformed structure")),
    }
}

/// Runs `f`, turning a panic into `None` without printing the panic message (see [`crate::panics`]).
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    crate::panics::quiet(f)
}

/// The globals a state dict may name. Anything else (os.system, builtins.eval, a model class) has no
/// business in a weights file and is refused.
fn allowed_global(module: &str, name: &str) -> bool {
    match module {
        "torch._utils" => name.starts_with("_rebuild_"),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "collections" => name == "OrderedDict",
        "torch" => {
            name.ends_with("Storage")
                || matches!(
                    name,
                    "Size" | "device" | "float32" | "float16" | "bfloat16" | "float64" | "int64"
                )
        }
        "torch.nn.parameter" => name == "Parameter",
        _ => false,
    }
}

fn check_globals(obj: &Object) -> std::result::Result<(), String> {
    let mut todo = vec![obj];
    while let Some(o) = todo.pop() {
        match o {
            Object::Class {
                module_name,
                class_name,
            } if !allowed_global(module_name, class_name) => {
                return Err(format!("{module_name}.{class_name}"));
            }
            Object::Tuple(v) | Object::List(v) => todo.extend(v.iter()),
            Object::Dict(kv) => {
                for (k, v) in kv {
                    todo.push(k);
                    todo.push(v);
                }
            }
            Object::Reduce { callable, args } | Object::Build { callable, args } => {
                todo.push(callable);
                todo.push(args);
            }
            Object::PersistentLoad(b) => todo.push(b),
            _ => {}
        }
    }
    Ok(())
}

/// Finds the state dict inside the unpickled object (plain, or wrapped under `state_dict` /
/// `model` as training scripts save it) and describes each tensor in it.
fn state_dict_entries(path: &Path, obj: Object, dir: &str) -> Result<Vec<PthEntry>> {
    let mut obj = obj;
    for _ in 0..3 {
        let Object::Dict(kv) = &obj else { break };
        let has_tensor = kv.iter().any(|(_, v)| matches!(v, Object::Reduce { .. }));
        if has_tensor {
            break;
        }
        let inner = kv.iter().find_map(|(k, v)| match (k, v) {
            (Object::Unicode(k), Object::Dict(_)) if k == "state_dict" || k == "model" => {
                Some(v.clone())
            }
            _ => None,
        });
        match inner {
            Some(inner) => obj = inner,
            None => break,
        }
    }
    let Object::Dict(kv) = obj else {
        return Err(Error::file(path, "the pickle does not hold a state dict"));
    };
    let mut entries = Vec::new();
    for (name, value) in kv {
        let Object::Unicode(name_str) = &name else {
            continue;
        };
        let name_str = name_str.clone();
        // The storage class name, before candle's conversion drops it.
        let class = storage_class(&value);
        let info = guarded(|| value.into_tensor_info(name, Path::new(dir)));
        let info = match info {
            Some(Ok(Some(info))) => info,
            Some(Ok(None)) => continue,
            Some(Err(e)) if class.is_some() => {
                // A tensor whose storage type candle does not convert (bool, int): list it, unusable.
                let _ = e;
                entries.push(PthEntry {
                    name: name_str,
                    dtype: None,
                    dtype_name: class.unwrap_or_default(),
                    shape: Vec::new(),
                    contiguous: false,
                    start_bytes: 0,
                    storage: String::new(),
                });
                continue;
            }
            _ => {
                return Err(Error::file(
                    path,
                    format!("tensor `{name_str}`: malformed tensor record in the pickle"),
                ))
            }
        };
        let dtype = match info.dtype {
            candle_core::DType::F32 => Some(DType::F32),
            candle_core::DType::F16 => Some(DType::F16),
            candle_core::DType::BF16 => Some(DType::BF16),
            candle_core::DType::F64 => Some(DType::F64),
            _ => None,
        };
        let storage = if dir.is_empty() {
            info.path.trim_start_matches('/').to_string()
        } else {
            info.path.clone()
        };
        entries.push(PthEntry {
            name: name_str,
            dtype,
            dtype_name: class.unwrap_or_else(|| format!("{:?}", info.dtype)),
            shape: info.layout.dims().to_vec(),
            contiguous: info.layout.is_contiguous(),
            start_bytes: info.layout.start_offset(),
            storage,
        });
    }
    Ok(entries)
}

/// `FloatStorage` etc. from a `_rebuild_tensor_v2(persistent_load(('storage', cls, key, ...)), ...)`.
fn storage_class(value: &Object) -> Option<String> {
    let Object::Reduce { callable, args } = value else {
        return None;
    };
    let args = match (&**callable, &**args) {
        (Object::Class { class_name, .. }, Object::Tuple(a))
            if class_name == "_rebuild_parameter" =>
        {
            match a.first() {
                Some(Object::Reduce { args, .. }) => args,
                _ => return None,
            }
        }
        _ => args,
    };
    let Object::Tuple(a) = &**args else {
        return None;
    };
    let Some(Object::PersistentLoad(p)) = a.first() else {
        return None;
    };
    let Object::Tuple(p) = &**p else { return None };
    match p.get(1) {
        Some(Object::Class { class_name, .. }) => Some(class_name.clone()),
        _ => None,
    }
}

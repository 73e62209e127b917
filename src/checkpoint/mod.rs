//! Finding and reading the word-embedding tensor of a checkpoint, and nothing else of it:
//! safetensors by mmap (single or sharded), PyTorch `.bin` through the pickle reader.

pub mod names;
pub mod pickle;
mod pickle_guard;

use crate::error::{Error, Result};
use names::Candidate;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The float types an embedding may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F64 => 8,
        }
    }

    /// The name safetensors headers use.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::F64 => "F64",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
        }
    }

    fn from_safetensors(d: safetensors::Dtype) -> Option<Self> {
        match d {
            safetensors::Dtype::F32 => Some(DType::F32),
            safetensors::Dtype::F16 => Some(DType::F16),
            safetensors::Dtype::BF16 => Some(DType::BF16),
            safetensors::Dtype::F64 => Some(DType::F64),
            _ => None,
        }
    }

    /// Decodes little-endian elements into f32 (f64 is narrowed).
    pub fn decode(self, bytes: &[u8], out: &mut [f32]) {
        match self {
            DType::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            DType::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            DType::BF16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            DType::F64 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    *o = f64::from_le_bytes(a) as f32;
                }
            }
        }
    }

    /// Encodes f32 values as little-endian elements of this type.
    pub fn encode(self, values: &[f32], out: &mut [u8]) {
        match self {
            DType::F32 => {
                for (v, o) in values.iter().zip(out.chunks_exact_mut(4)) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            DType::F16 => {
                for (v, o) in values.iter().zip(out.chunks_exact_mut(2)) {
                    o.copy_from_slice(&half::f16::from_f32(*v).to_le_bytes());
                }
            }
            DType::BF16 => {
                for (v, o) in values.iter().zip(out.chunks_exact_mut(2)) {
                    o.copy_from_slice(&half::bf16::from_f32(*v).to_le_bytes());
                }
            }
            DType::F64 => {
                for (v, o) in values.iter().zip(out.chunks_exact_mut(8)) {
                    o.copy_from_slice(&(*v as f64).to_le_bytes());
                }
            }
        }
    }
}

/// Where a checkpoint's weights are.
#[derive(Debug, Clone)]
pub enum Weights {
    Safetensors(PathBuf),
    /// `model.safetensors.index.json`; shards are fetched on demand.
    ShardedSafetensors(PathBuf),
    Pytorch(PathBuf),
    /// `pytorch_model.bin.index.json`.
    ShardedPytorch(PathBuf),
    /// A hub safetensors file not downloaded: its header, read with range requests (inspect).
    RemoteSafetensors {
        name: String,
        header: Vec<u8>,
    },
}

impl Weights {
    /// Chooses the reader for a single file the user named, by its name.
    pub fn from_file(path: &Path) -> Self {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".safetensors.index.json") {
            Weights::ShardedSafetensors(path.to_path_buf())
        } else if name.ends_with(".index.json") {
            Weights::ShardedPytorch(path.to_path_buf())
        } else if name.ends_with(".safetensors") {
            Weights::Safetensors(path.to_path_buf())
        } else {
            Weights::Pytorch(path.to_path_buf())
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Weights::Safetensors(p)
            | Weights::ShardedSafetensors(p)
            | Weights::Pytorch(p)
            | Weights::ShardedPytorch(p) => p,
            Weights::RemoteSafetensors { name, .. } => Path::new(name.as_str()),
        }
    }

    pub fn format(&self) -> &'static str {
        match self {
            Weights::Safetensors(_) => "safetensors",
            Weights::ShardedSafetensors(_) => "sharded safetensors",
            Weights::Pytorch(_) => "pytorch",
            Weights::ShardedPytorch(_) => "sharded pytorch",
            Weights::RemoteSafetensors { .. } => "safetensors (header read remotely)",
        }
    }
}

/// Gets a file that sits beside the weights (a shard): from the model directory or the hub.
pub trait FetchFile {
    fn fetch(&self, name: &str) -> Result<PathBuf>;
    /// The file if it is already on disk, without downloading.
    fn local(&self, name: &str) -> Option<PathBuf>;
    /// The header (length prefix and JSON) of a safetensors file that is not on disk, read
    /// without downloading the file; None where that is not possible.
    fn remote_header(&self, _name: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
}

/// One tensor as listed by `inspect` and by the chooser.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: String,
    /// None for tensors in shards that are not on disk.
    pub shape: Option<Vec<usize>>,
    pub file: String,
}

/// The word embedding, read: raw little-endian rows of `dtype`.
pub struct Embedding {
    pub name: String,
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub file: PathBuf,
    data: Data,
}

enum Data {
    Mapped {
        map: memmap2::Mmap,
        start: usize,
        len: usize,
    },
    Owned(Vec<u8>),
}

impl Embedding {
    /// All values as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.dtype.decode(self.bytes(), &mut out);
        out
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            Data::Mapped { map, start, len } => &map[*start..*start + *len],
            Data::Owned(v) => v,
        }
    }
}

/// Lists the tensors of the checkpoint, reading headers only.
pub fn list_tensors(weights: &Weights, fetch: &dyn FetchFile) -> Result<Vec<TensorEntry>> {
    match weights {
        Weights::Safetensors(p) => list_safetensors(p),
        Weights::Pytorch(p) => list_pytorch(p),
        Weights::RemoteSafetensors { name, header } => entries_from_header(Path::new(name), header),
        Weights::ShardedSafetensors(index) | Weights::ShardedPytorch(index) => {
            let map = read_index(index)?;
            let mut out = Vec::new();
            // Shards already on disk give full entries; the others only names.
            let mut by_file: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (t, f) in &map {
                by_file.entry(f.as_str()).or_default().push(t.as_str());
            }
            for (file, tensors) in by_file {
                match fetch.local(file) {
                    Some(local) => {
                        let listed = if matches!(weights, Weights::ShardedSafetensors(_)) {
                            list_safetensors(&local)?
                        } else {
                            list_pytorch(&local)?
                        };
                        out.extend(listed.into_iter().map(|mut e| {
                            e.file = file.to_string();
                            e
                        }));
                    }
                    None => match fetch.remote_header(file)? {
                        Some(h) if matches!(weights, Weights::ShardedSafetensors(_)) => {
                            out.extend(entries_from_header(Path::new(file), &h)?)
                        }
                        _ => out.extend(tensors.into_iter().map(|t| TensorEntry {
                            name: t.to_string(),
                            dtype: "?".into(),
                            shape: None,
                            file: file.to_string(),
                        })),
                    },
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        }
    }
}

/// Which tensor is the word embedding, and why.
pub fn choose_embedding(
    weights: &Weights,
    tensors: &[TensorEntry],
    forced: Option<&str>,
) -> Result<names::Choice> {
    let cands: Vec<Candidate> = tensors
        .iter()
        .map(|t| Candidate {
            name: t.name.clone(),
            shape: t.shape.clone(),
        })
        .collect();
    names::choose(&cands, forced).map_err(|msg| Error::file(weights.path(), msg))
}

/// Reads the one tensor `name` (a shard is fetched if needed).
pub fn load_embedding(weights: &Weights, name: &str, fetch: &dyn FetchFile) -> Result<Embedding> {
    match weights {
        Weights::Safetensors(p) => load_safetensors(p, name),
        Weights::Pytorch(p) => load_pytorch(p, name),
        Weights::RemoteSafetensors { name: file, .. } => {
            load_safetensors(&fetch.fetch(file)?, name)
        }
        Weights::ShardedSafetensors(index) | Weights::ShardedPytorch(index) => {
            let map = read_index(index)?;
            let shard = map.get(name).ok_or_else(|| {
                Error::file(index, format!("the weight map has no tensor `{name}`"))
            })?;
            let local = fetch.fetch(shard).map_err(|e| match e {
                Error::Io { err, .. } if err.kind() == std::io::ErrorKind::NotFound => Error::file(
                    index,
                    format!("the weight map puts `{name}` in {shard}, which does not exist"),
                ),
                e => e,
            })?;
            if matches!(weights, Weights::ShardedSafetensors(_)) {
                load_safetensors(&local, name)
            } else {
                load_pytorch(&local, name)
            }
        }
    }
}

/// `weight_map` of a sharded checkpoint's index: tensor -> shard file.
fn read_index(index: &Path) -> Result<BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let parsed: Index = serde_json::from_str(&text)
        .map_err(|e| Error::file(index, format!("not a shard index: {e}")))?;
    for f in parsed.weight_map.values() {
        // Shards live beside the index; a path that climbs out is not a shard name.
        if f.contains("..") || f.starts_with('/') || f.contains('\\') {
            return Err(Error::file(
                index,
                format!("shard name `{f}` is not a plain file name"),
            ));
        }
    }
    Ok(parsed.weight_map)
}

pub(crate) fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Err(Error::file(path, "the file is empty"));
    }
    // SAFETY: the map is read-only and private to this process. A checkpoint that another process
    // truncates while we read it could fault; that is the accepted cost of not copying 400 MB files,
    // the same trade candle and safetensors make.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// The `__metadata__` of a safetensors file (empty when it has none).
pub fn safetensors_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let map = map_file(path)?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| st_error(path, e))?;
    Ok(meta
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect())
}

fn st_error(path: &Path, e: safetensors::SafeTensorError) -> Error {
    use safetensors::SafeTensorError as E;
    let msg = match e {
        E::HeaderTooSmall => "not a safetensors file: shorter than its 8-byte header length".into(),
        E::HeaderTooLarge | E::InvalidHeaderLength => {
            "not a safetensors file: the header length exceeds the file (truncated?)".into()
        }
        E::MetadataIncompleteBuffer => {
            "safetensors file is truncated or has trailing bytes: the tensors' offsets do not end at the file's end".into()
        }
        E::InvalidOffset(t) => format!("tensor `{t}` has offsets that overlap or leave gaps"),
        E::TensorInvalidInfo => "a tensor's shape disagrees with its byte length".into(),
        E::InvalidHeaderDeserialization(e) => format!("safetensors header is not valid: {e}"),
        e => format!("not a valid safetensors file: {e}"),
    };
    Error::file(path, msg)
}

fn list_safetensors(path: &Path) -> Result<Vec<TensorEntry>> {
    let map = map_file(path)?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| st_error(path, e))?;
    Ok(entries_of(path, &meta))
}

/// Entries from a header alone (length prefix + JSON), as read remotely.
fn entries_from_header(path: &Path, header: &[u8]) -> Result<Vec<TensorEntry>> {
    let json = header.get(8..).unwrap_or_default();
    let meta: safetensors::tensor::Metadata = serde_json::from_slice(json)
        .map_err(|e| Error::file(path, format!("safetensors header is not valid: {e}")))?;
    Ok(entries_of(path, &meta))
}

fn entries_of(path: &Path, meta: &safetensors::tensor::Metadata) -> Vec<TensorEntry> {
    let file = file_name(path);
    let mut out: Vec<TensorEntry> = meta
        .tensors()
        .into_iter()
        .map(|(name, info)| TensorEntry {
            name,
            dtype: format!("{:?}", info.dtype).to_lowercase(),
            shape: Some(info.shape.clone()),
            file: file.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Reads one 2-D float tensor of a safetensors file (memory-mapped).
pub fn load_safetensors(path: &Path, name: &str) -> Result<Embedding> {
    let map = map_file(path)?;
    let (n, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| st_error(path, e))?;
    let info = meta
        .info(name)
        .ok_or_else(|| Error::tensor(path, name, "not in this file"))?;
    let dtype = DType::from_safetensors(info.dtype).ok_or_else(|| {
        Error::tensor(
            path,
            name,
            format!(
                "dtype {:?} is not a float type this tool reads (f32, f16, bf16, f64)",
                info.dtype
            ),
        )
    })?;
    let (rows, cols) = matrix_shape(path, name, &info.shape)?;
    let start = 8 + n + info.data_offsets.0;
    let len = info.data_offsets.1 - info.data_offsets.0;
    Ok(Embedding {
        name: name.to_string(),
        dtype,
        rows,
        cols,
        file: path.to_path_buf(),
        data: Data::Mapped { map, start, len },
    })
}

fn list_pytorch(path: &Path) -> Result<Vec<TensorEntry>> {
    let pth = pickle::PthFile::open(path)?;
    let file = file_name(path);
    let mut out: Vec<TensorEntry> = pth
        .entries
        .iter()
        .map(|e| TensorEntry {
            name: e.name.clone(),
            dtype: e
                .dtype
                .map(|d| d.name().to_string())
                .unwrap_or_else(|| e.dtype_name.clone()),
            shape: Some(e.shape.clone()),
            file: file.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn load_pytorch(path: &Path, name: &str) -> Result<Embedding> {
    let pth = pickle::PthFile::open(path)?;
    let entry = pth
        .entries
        .iter()
        .find(|e| e.name == name)
        .ok_or_else(|| Error::tensor(path, name, "not in this file"))?;
    let (rows, cols) = matrix_shape(path, name, &entry.shape)?;
    let data = pth.read(entry)?;
    let dtype = entry
        .dtype
        .ok_or_else(|| Error::tensor(path, name, "not a float tensor"))?;
    Ok(Embedding {
        name: name.to_string(),
        dtype,
        rows,
        cols,
        file: path.to_path_buf(),
        data: Data::Owned(data),
    })
}

/// (rows, dim) of a 2-D shape; anything else is an error naming the tensor.
fn matrix_shape(path: &Path, name: &str, shape: &[usize]) -> Result<(usize, usize)> {
    match shape {
        [r, c] => Ok((*r, *c)),
        _ => Err(Error::tensor(
            path,
            name,
            format!("shape {shape:?} is not [rows, dim]"),
        )),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

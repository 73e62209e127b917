//! Finding and reading the word-embedding tensor of a checkpoint, and nothing else of it:
//! safetensors by mmap (single or sharded), PyTorch `.bin` through the pickle reader.
//!
//! (Over 400 lines: the reader front for every weights format and the safetensors reader itself
//! (single file or sharded, mapped), which share the `Weights`, `Embedding` and map types; the
//! pickle reader lives in `pickle`, the choice of tensor in `names`.)

pub mod names;
pub mod pickle;
mod pickle_guard;
pub mod store;

use crate::dtype::DType;
use crate::error::{Error, Result};
use names::TensorCandidate;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// A file the model may or may not have (generation_config.json): downloaded if the hub has
    /// it, None if it has not (or, offline, if the cache has not).
    fn fetch_optional(&self, name: &str) -> Result<Option<PathBuf>> {
        Ok(self.local(name))
    }
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
        map: std::sync::Arc<memmap2::Mmap>,
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

    /// Drops this tensor's pages from the process's resident memory (they stay in the page
    /// cache and come back from the file if read again). For a mapped tensor that was read in
    /// full, so that the next large tensor does not add to the peak.
    pub fn release(&self) {
        if let Data::Mapped { map, start, len } = &self.data {
            release_range(map, *start, *len);
        }
    }

    /// All values as f32, like `to_f32`, giving back the mapped pages already decoded as it goes:
    /// peak memory is the f32 copy plus one block, not the copy plus the whole mapped tensor.
    pub fn into_f32(self) -> Vec<f32> {
        self.into_f32_blocks(1 << 22)
    }

    fn into_f32_blocks(self, block: usize) -> Vec<f32> {
        let size = self.dtype.size();
        let mut out = vec![0f32; self.rows * self.cols];
        let bytes = self.bytes();
        for (k, chunk) in out.chunks_mut(block).enumerate() {
            let lo = k * block * size;
            let hi = lo + chunk.len() * size;
            self.dtype.decode(&bytes[lo..hi], chunk);
            if let Data::Mapped { map, start, .. } = &self.data {
                release_range(map, start + lo, hi - lo);
            }
        }
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
    let cands: Vec<TensorCandidate> = tensors
        .iter()
        .map(|t| TensorCandidate {
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

/// Every shard an index names, fetched, in name order.
fn map_index_shards(index: &Path, fetch: &dyn FetchFile) -> Result<Vec<PathBuf>> {
    let map = read_index(index)?;
    let mut shards: Vec<&String> = map.values().collect();
    shards.sort();
    shards.dedup();
    shards
        .into_iter()
        .map(|s| {
            fetch.fetch(s).map_err(|e| match e {
                Error::Io { err, .. } if err.kind() == std::io::ErrorKind::NotFound => Error::file(
                    index,
                    format!("the weight map names {s}, which does not exist"),
                ),
                e => e,
            })
        })
        .collect()
}

/// The shard files a sharded checkpoint's index names, in name order, once each.
pub fn shard_names(index: &Path) -> Result<Vec<String>> {
    let mut shards: Vec<String> = read_index(index)?.into_values().collect();
    shards.sort();
    shards.dedup();
    Ok(shards)
}

/// `weight_map` of a sharded checkpoint's index: tensor -> shard file.
fn read_index(index: &Path) -> Result<BTreeMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = crate::bounded::read_text(index, crate::bounded::MAX_JSON_BYTES, "a shard index")?;
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
    // SAFETY: `Mmap::map` is a read-only MAP_SHARED mapping, so it is only as stable as the file.
    // Hub cache files are written as `.part`, renamed into blobs/ and never modified afterwards,
    // so they cannot change under us. A local file that another process rewrites while we run is
    // the user's race: changed bytes show up in our reads (the output is then as wrong as the
    // input became), and a truncation makes reads past the new end fault with SIGBUS. That is
    // the accepted cost of not copying multi-GB checkpoints; candle and safetensors make the same
    // trade.
    unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// Advises the kernel that a range of a read-only file mapping is not needed for now.
pub(crate) fn release_range(map: &memmap2::Mmap, start: usize, len: usize) {
    #[cfg(unix)]
    {
        const PAGE: usize = 4096;
        let from = start - start % PAGE;
        let end = (start + len).min(map.len());
        if end <= from {
            return;
        }
        // SAFETY: MADV_DONTNEED on a read-only, file-backed MAP_SHARED mapping only drops this
        // process's page-table entries: the next access faults the same bytes back in from the
        // file (or the page cache). No Rust reference sees different contents; the range is
        // within the map (rounded down to a page boundary, which madvise requires).
        let _ = unsafe {
            map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, end - from)
        };
    }
    #[cfg(not(unix))]
    let _ = (map, start, len);
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

/// A safetensors file mapped once: its metadata and any of its tensors, without reading it again.
pub struct SafetensorsFile {
    path: PathBuf,
    map: std::sync::Arc<memmap2::Mmap>,
    header_len: usize,
    meta: safetensors::tensor::Metadata,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let map = map_file(path)?;
        let (n, meta) =
            safetensors::SafeTensors::read_metadata(&map).map_err(|e| st_error(path, e))?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            map: std::sync::Arc::new(map),
            header_len: n,
            meta,
        })
    }

    /// The `__metadata__` (empty when there is none).
    pub fn metadata(&self) -> BTreeMap<String, String> {
        self.meta
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect()
    }

    fn info(&self, name: &str) -> Result<(&safetensors::tensor::TensorInfo, DType)> {
        let info = self
            .meta
            .info(name)
            .ok_or_else(|| Error::tensor(&self.path, name, "not in this file"))?;
        let dtype = DType::from_safetensors(info.dtype).ok_or_else(|| {
            Error::tensor(
                &self.path,
                name,
                format!(
                    "dtype {:?} is not a float type this tool reads (f32, f16, bf16, f64)",
                    info.dtype
                ),
            )
        })?;
        Ok((info, dtype))
    }

    /// Where a tensor's bytes lie in the file: (start, length).
    pub fn span(&self, name: &str) -> Result<(u64, u64)> {
        let info = self
            .meta
            .info(name)
            .ok_or_else(|| Error::tensor(&self.path, name, "not in this file"))?;
        let start = 8 + self.header_len + info.data_offsets.0;
        let len = info.data_offsets.1 - info.data_offsets.0;
        if start + len > self.map.len() {
            return Err(Error::tensor(&self.path, name, "offsets exceed the file"));
        }
        Ok((start as u64, len as u64))
    }

    /// Drops a tensor's pages from resident memory (see [`Embedding::release`]).
    pub fn release(&self, name: &str) {
        if let Ok((start, len)) = self.span(name) {
            release_range(&self.map, start as usize, len as usize);
        }
    }

    /// Any tensor's bytes, as a view of the map.
    pub fn raw(&self, name: &str) -> Result<&[u8]> {
        let info = self
            .meta
            .info(name)
            .ok_or_else(|| Error::tensor(&self.path, name, "not in this file"))?;
        let start = 8 + self.header_len + info.data_offsets.0;
        self.map
            .get(start..start + (info.data_offsets.1 - info.data_offsets.0))
            .ok_or_else(|| Error::tensor(&self.path, name, "offsets exceed the file"))
    }

    /// One 2-D float tensor, as a view of the map.
    pub fn matrix(&self, name: &str) -> Result<Embedding> {
        let (info, dtype) = self.info(name)?;
        let (rows, cols) = matrix_shape(&self.path, name, &info.shape)?;
        Ok(Embedding {
            name: name.to_string(),
            dtype,
            rows,
            cols,
            file: self.path.clone(),
            data: Data::Mapped {
                map: self.map.clone(),
                start: 8 + self.header_len + info.data_offsets.0,
                len: info.data_offsets.1 - info.data_offsets.0,
            },
        })
    }

    /// One 1-D float tensor of `n` elements, as f32.
    pub fn vector_f32(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        let (info, dtype) = self.info(name)?;
        if info.shape != [n] {
            return Err(Error::tensor(
                &self.path,
                name,
                format!("expected shape [{n}], found {:?}", info.shape),
            ));
        }
        let start = 8 + self.header_len + info.data_offsets.0;
        let bytes = &self.map[start..start + (info.data_offsets.1 - info.data_offsets.0)];
        let mut out = vec![0f32; n];
        dtype.decode(bytes, &mut out);
        Ok(out)
    }
}

/// Reads one 2-D float tensor of a safetensors file (memory-mapped).
pub fn load_safetensors(path: &Path, name: &str) -> Result<Embedding> {
    SafetensorsFile::open(path)?.matrix(name)
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

/// (rows, dim) of a 2-D shape with at least one row and one column; anything else is an error
/// naming the tensor.
pub fn matrix_shape(path: &Path, name: &str, shape: &[usize]) -> Result<(usize, usize)> {
    match shape {
        [0, _] | [_, 0] => Err(Error::tensor(
            path,
            name,
            format!("shape {shape:?} is empty: an embedding needs rows and columns"),
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Block-wise decoding (pages released behind it) gives what the one-pass decode gives.
    #[test]
    fn into_f32_matches_to_f32() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.safetensors");
        let vals: Vec<f32> = (0..35).map(|i| i as f32 * 0.37 - 5.0).collect();
        let header = r#"{"weight":{"dtype":"F32","shape":[7,5],"data_offsets":[0,140]}}"#;
        let mut h = header.as_bytes().to_vec();
        while h.len() % 8 != 0 {
            h.push(b' ');
        }
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(&h);
        b.extend(vals.iter().flat_map(|v| v.to_le_bytes()));
        std::fs::write(&p, b).unwrap();
        let m = SafetensorsFile::open(&p).unwrap().matrix("weight").unwrap();
        assert_eq!(m.to_f32(), vals);
        assert_eq!(m.into_f32_blocks(3), vals);
    }
}

//! Every tensor of a checkpoint, listed and read one at a time (for writing a whole model):
//! safetensors through their maps (zero copy), `.bin` through the pickle reader's storage offsets.

use super::pickle::{storage_elem_size, PthFile};
use super::{map_index_shards, FetchFile, SafetensorsFile, Weights};
use crate::error::{Error, Result};
use std::borrow::Cow;
use std::path::Path;

/// One tensor of the checkpoint: its safetensors dtype name (`F32`, `I64`, ...), shape and where
/// it lives.
#[derive(Debug, Clone)]
pub struct StoredTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub nbytes: usize,
    file: usize,
    entry: usize,
}

enum StoreFile {
    St(SafetensorsFile, Vec<String>),
    Pth(PthFile),
}

/// All the checkpoint's files, opened (headers and pickles parsed, nothing else read).
pub struct TensorStore {
    files: Vec<StoreFile>,
    /// Sorted by name.
    pub tensors: Vec<StoredTensor>,
    /// The source was split over several files.
    pub sharded: bool,
}

impl TensorStore {
    /// Opens every file of the checkpoint (every shard is fetched).
    pub fn open(weights: &Weights, fetch: &dyn FetchFile) -> Result<Self> {
        let (paths, sharded, st) = match weights {
            Weights::Safetensors(p) => (vec![p.clone()], false, true),
            Weights::Pytorch(p) => (vec![p.clone()], false, false),
            Weights::RemoteSafetensors { name, .. } => (vec![fetch.fetch(name)?], false, true),
            Weights::ShardedSafetensors(index) | Weights::ShardedPytorch(index) => (
                map_index_shards(index, fetch)?,
                true,
                matches!(weights, Weights::ShardedSafetensors(_)),
            ),
        };
        let mut files = Vec::new();
        let mut tensors = Vec::new();
        for (fi, path) in paths.iter().enumerate() {
            if st {
                let f = SafetensorsFile::open(path)?;
                let mut names: Vec<String> = f.meta.tensors().into_keys().collect();
                names.sort();
                for (ei, n) in names.iter().enumerate() {
                    let info = f
                        .meta
                        .info(n)
                        .ok_or_else(|| Error::tensor(path, n, "not in this file"))?;
                    tensors.push(StoredTensor {
                        name: n.clone(),
                        dtype: format!("{:?}", info.dtype),
                        shape: info.shape.clone(),
                        nbytes: info.data_offsets.1 - info.data_offsets.0,
                        file: fi,
                        entry: ei,
                    });
                }
                files.push(StoreFile::St(f, names));
            } else {
                let f = PthFile::open(path)?;
                for (ei, e) in f.entries.iter().enumerate() {
                    let dtype = pth_dtype(&e.dtype_name).ok_or_else(|| {
                        Error::tensor(
                            path,
                            &e.name,
                            format!(
                                "storage type {} cannot be written as safetensors",
                                e.dtype_name
                            ),
                        )
                    })?;
                    let n: usize = e.shape.iter().product();
                    tensors.push(StoredTensor {
                        name: e.name.clone(),
                        dtype: dtype.to_string(),
                        shape: e.shape.clone(),
                        nbytes: n * storage_elem_size(&e.dtype_name) as usize,
                        file: fi,
                        entry: ei,
                    });
                }
                files.push(StoreFile::Pth(f));
            }
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = tensors.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(Error::file(
                weights.path(),
                format!("tensor `{}` occurs in more than one file", w[0].name),
            ));
        }
        Ok(TensorStore {
            files,
            tensors,
            sharded,
        })
    }

    pub fn get(&self, name: &str) -> Option<&StoredTensor> {
        self.tensors
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.tensors[i])
    }

    /// The tensor's bytes: a view of the map for safetensors, read from the file for `.bin`.
    pub fn bytes(&self, t: &StoredTensor) -> Result<Cow<'_, [u8]>> {
        match &self.files[t.file] {
            StoreFile::St(f, names) => Ok(Cow::Borrowed(f.raw(&names[t.entry])?)),
            StoreFile::Pth(f) => {
                let e = &f.entries[t.entry];
                Ok(Cow::Owned(
                    f.read_raw(e, storage_elem_size(&e.dtype_name) as usize)?,
                ))
            }
        }
    }

    /// Streams a tensor's bytes into `w` unchanged. Safetensors are copied from the file rather
    /// than through the map, so that copying a whole model leaves its pages in the page cache and
    /// out of this process's resident memory; with a file behind `w` (a `BufWriter<&File>`),
    /// `std::io::copy` hands the range to the kernel (copy_file_range), with no copy through
    /// user space.
    pub fn copy_to<W: std::io::Write>(&self, t: &StoredTensor, w: &mut W) -> Result<()> {
        match &self.files[t.file] {
            StoreFile::St(f, names) => {
                use std::io::{Read, Seek, SeekFrom};
                let (start, len) = f.span(&names[t.entry])?;
                let io = |e| Error::io(&f.path, e);
                let mut file = std::fs::File::open(&f.path).map_err(io)?;
                file.seek(SeekFrom::Start(start)).map_err(io)?;
                let n = std::io::copy(&mut (&file).take(len), w).map_err(io)?;
                if n != len {
                    return Err(Error::tensor(
                        &f.path,
                        &names[t.entry],
                        format!("the file ended after {n} of the tensor's {len} bytes"),
                    ));
                }
                Ok(())
            }
            _ => {
                let b = self.bytes(t)?;
                w.write_all(&b).map_err(|e| Error::io(self.file_of(t), e))
            }
        }
    }

    /// Whether two tensors hold the same bytes (same dtype and shape checked by the caller).
    /// Mapped pages touched by the comparison are given back afterwards, so that checking a
    /// vocabulary-sized head against the embedding leaves neither resident.
    pub fn same_bytes(&self, a: &StoredTensor, b: &StoredTensor) -> Result<bool> {
        if a.nbytes != b.nbytes {
            return Ok(false);
        }
        let same = self.bytes(a)? == self.bytes(b)?;
        self.release(a);
        self.release(b);
        Ok(same)
    }

    /// Drops a mapped tensor's pages from resident memory once it has been used.
    pub fn release(&self, t: &StoredTensor) {
        if let StoreFile::St(f, names) = &self.files[t.file] {
            f.release(&names[t.entry]);
        }
    }

    /// The file a tensor came from, for messages.
    pub fn file_of(&self, t: &StoredTensor) -> &Path {
        match &self.files[t.file] {
            StoreFile::St(f, _) => &f.path,
            StoreFile::Pth(f) => &f.path,
        }
    }
}

/// The safetensors dtype name of a torch storage class.
fn pth_dtype(class: &str) -> Option<&'static str> {
    Some(match class {
        "FloatStorage" => "F32",
        "DoubleStorage" => "F64",
        "HalfStorage" => "F16",
        "BFloat16Storage" => "BF16",
        "LongStorage" => "I64",
        "IntStorage" => "I32",
        "ShortStorage" => "I16",
        "CharStorage" => "I8",
        "ByteStorage" => "U8",
        "BoolStorage" => "BOOL",
        _ => return None,
    })
}

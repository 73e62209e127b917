//! The weights of the emitted model: which source tensors depend on the vocabulary (embedding,
//! untied head, per-token biases) and how each output tensor is made; written as one
//! safetensors file or as shards with an index, every other tensor streamed bit for bit.
//!
//! (Over 400 lines because the routing, the file plan and the streamed writer share one plan per
//! output tensor, [`OutTensor`] and [`Make`].)

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::init::build::{self, BuildOptions, Fill, RowSource};
use crate::linalg::Matrix;
use crate::load::checkpoint::store::{StoredTensor, TensorStore};
use crate::report::Routing;
use crate::write::Entry;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// How one output tensor is made.
#[derive(Debug, Clone)]
pub enum Make {
    /// The source tensor's bytes, unchanged.
    Copy,
    /// A [rows, dim] matrix by the row plan from this source matrix (embedding or head);
    /// `seed_offset` keeps the head's random rows distinct from the embedding's.
    Rows { seed_offset: u64 },
    /// A per-token bias by the row plan (fill: the mean of the source vocabulary's entries).
    Bias,
}

/// One output tensor.
#[derive(Debug, Clone)]
pub struct OutTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub source: StoredTensor,
    pub make: Make,
}

impl OutTensor {
    pub fn nbytes(&self) -> usize {
        self.shape.iter().product::<usize>() * elem_size(&self.dtype)
    }
}

fn elem_size(dtype: &str) -> usize {
    match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        _ => 1,
    }
}

fn float_dtype(dtype: &str) -> Option<DType> {
    Some(match dtype {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        _ => return None,
    })
}

const HEAD_NAMES: &[&str] = &[
    "lm_head.weight",
    "cls.predictions.decoder.weight",
    "embed_out.weight",
    "output.weight",
];

/// Decides how every output tensor is made. `tied`: config.json's `tie_word_embeddings`; when
/// the config does not say (family defaults differ: BERT ties, LLaMA does not), a head tensor is
/// taken as tied exactly when its bytes equal the embedding's.
pub fn route(
    store: &TensorStore,
    emb: &str,
    tied: Option<bool>,
    source_rows: usize,
    out_rows: usize,
) -> Result<(Vec<OutTensor>, Routing)> {
    let mut routing = Routing {
        embedding: emb.to_string(),
        ..Default::default()
    };
    let emb_t = store
        .get(emb)
        .ok_or_else(|| Error::Invalid(format!("tensor `{emb}` is not in the checkpoint")))?;
    let dim = emb_t.shape.get(1).copied().unwrap_or(0);
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for t in &store.tensors {
        let file = store.file_of(t);
        let vocab_shaped = t.shape.first() == Some(&source_rows);
        let is_head = t.name != emb
            && HEAD_NAMES
                .iter()
                .any(|h| t.name == *h || t.name.ends_with(&format!(".{h}")))
            && t.shape == [source_rows, dim];
        let is_bias =
            t.name.ends_with("bias") && (t.shape == [source_rows] || t.shape == [1, source_rows]);
        let (make, shape) = if t.name == emb {
            (Make::Rows { seed_offset: 0 }, vec![out_rows, dim])
        } else if is_head {
            let tied = match tied {
                Some(t) => t,
                None => t.dtype == emb_t.dtype && store.same_bytes(t, emb_t)?,
            };
            if tied {
                routing.tied_dropped.push(t.name.clone());
                continue;
            }
            routing.head = Some(t.name.clone());
            (Make::Rows { seed_offset: 1 }, vec![out_rows, dim])
        } else if is_bias {
            // BERT's decoder bias is the same parameter as cls.predictions.bias; save_pretrained
            // leaves it out, and so do we.
            if t.name.ends_with("decoder.bias")
                && store.get(&t.name.replace("decoder.bias", "bias")).is_some()
            {
                routing.tied_dropped.push(t.name.clone());
                continue;
            }
            if float_dtype(&t.dtype).is_none() {
                return Err(Error::tensor(
                    file,
                    &t.name,
                    "a per-token bias that is not a float tensor",
                ));
            }
            routing.biases.push(t.name.clone());
            let shape = if t.shape.len() == 2 {
                vec![1, out_rows]
            } else {
                vec![out_rows]
            };
            (Make::Bias, shape)
        } else if t.shape == [source_rows, dim]
            && t.dtype == emb_t.dtype
            && store.same_bytes(t, emb_t)?
        {
            // Built by the same plan and seed as the embedding: the same bytes again.
            routing.copies_of_embedding.push(t.name.clone());
            (Make::Rows { seed_offset: 0 }, vec![out_rows, dim])
        } else if vocab_shaped
            || t.shape.get(1) == Some(&source_rows) && t.shape.len() == 2 && t.shape[0] == 1
        {
            unknown.push(format!("`{}` {:?}", t.name, t.shape));
            continue;
        } else {
            (Make::Copy, t.shape.clone())
        };
        if !matches!(make, Make::Copy) && float_dtype(&t.dtype).is_none() {
            return Err(Error::tensor(
                file,
                &t.name,
                format!("dtype {} is not a float type", t.dtype),
            ));
        }
        out.push(OutTensor {
            name: t.name.clone(),
            dtype: t.dtype.clone(),
            shape,
            source: t.clone(),
            make,
        });
    }
    if !unknown.is_empty() {
        return Err(Error::Invalid(format!(
            "{} tensor(s) have one row per source token but are not an embedding, output head or per-token bias this tool knows how to rebuild: {}; refused rather than copied at the old size",
            unknown.len(),
            unknown.join(", ")
        )));
    }
    Ok((out, routing))
}

/// Groups tensors into output files: one `model.safetensors`, or shards of at most `max` bytes
/// (a tensor larger than that gets a shard of its own) when `shard` or the total exceeds `max`.
pub fn plan_files(tensors: &[OutTensor], shard: bool, max: u64) -> Vec<(String, Vec<usize>)> {
    let total: u64 = tensors.iter().map(|t| t.nbytes() as u64).sum();
    if !shard && total <= max {
        return vec![("model.safetensors".into(), (0..tensors.len()).collect())];
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut size = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        let n = t.nbytes() as u64;
        match groups.last_mut() {
            Some(g) if size + n <= max => {
                g.push(i);
                size += n;
            }
            _ => {
                groups.push(vec![i]);
                size = n;
            }
        }
    }
    if groups.len() == 1 && !shard {
        return vec![("model.safetensors".into(), groups.remove(0))];
    }
    let k = groups.len();
    groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| (format!("model-{:05}-of-{k:05}.safetensors", i + 1), g))
        .collect()
}

/// The header of one output file: sorted keys, `format: pt`, padded to 8 bytes.
fn header(tensors: &[&OutTensor]) -> Vec<u8> {
    let entries: Vec<Entry<'_>> = tensors
        .iter()
        .map(|t| Entry {
            name: &t.name,
            dtype: &t.dtype,
            shape: &t.shape,
            len: t.nbytes(),
        })
        .collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    crate::write::header(&entries, &meta)
}

/// Everything the vocabulary-dependent tensors are built from.
pub struct Builder<'a> {
    pub store: &'a TensorStore,
    pub rows: &'a [RowSource],
    pub opts: BuildOptions,
}

impl Builder<'_> {
    /// Writes one output file into `dir`. The kernel is asked to start writing back every
    /// [`WRITEBACK`] bytes, so that the disk works while later tensors are built and the final
    /// fsync has little left to do.
    pub fn write_file(&self, dir: &Path, name: &str, tensors: &[&OutTensor]) -> Result<()> {
        let path = dir.join(name);
        let file = crate::write::cancel::create_file(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &file);
        let io = |e| Error::io(&path, e);
        w.write_all(&header(tensors)).map_err(io)?;
        let mut since = 0usize;
        let pause = crate::write::test_pause();
        for t in tensors {
            self.write_tensor(&mut w, t)?;
            if let Some(p) = pause {
                w.flush().map_err(io)?;
                std::thread::sleep(p);
            }
            since += t.nbytes();
            if since >= WRITEBACK {
                w.flush().map_err(io)?;
                start_writeback(&file);
                since = 0;
            }
        }
        w.flush().map_err(io)?;
        drop(w);
        file.sync_all().map_err(io)
    }

    fn write_tensor(
        &self,
        w: &mut std::io::BufWriter<&std::fs::File>,
        t: &OutTensor,
    ) -> Result<()> {
        let src = &t.source;
        let file = self.store.file_of(src);
        if matches!(t.make, Make::Copy) {
            return self.store.copy_to(src, w);
        }
        let bytes = self.store.bytes(src)?;
        if bytes.len() != src.nbytes {
            return Err(Error::tensor(
                file,
                &src.name,
                format!("{} bytes for shape {:?}", bytes.len(), src.shape),
            ));
        }
        let io = |e| Error::io(file, e);
        match t.make {
            Make::Copy => w.write_all(&bytes).map_err(io),
            Make::Rows { seed_offset } => {
                let dtype = float_dtype(&src.dtype)
                    .ok_or_else(|| Error::tensor(file, &src.name, "not a float tensor"))?;
                let m = Matrix {
                    dtype,
                    rows: src.shape[0],
                    cols: src.shape[1],
                    data: &bytes,
                };
                // The fitted composition map was fitted in the embedding's space: an untied head's
                // composed rows are plain means of its own rows.
                let opts = BuildOptions {
                    seed: self.opts.seed.wrapping_add(seed_offset),
                    compose_map: if seed_offset == 0 {
                        self.opts.compose_map.clone()
                    } else {
                        None
                    },
                    row_stats: false,
                    ..self.opts.clone()
                };
                let mut n = 0usize;
                build::build_blocks(self.rows, m, &opts, |b| {
                    n += b.len();
                    w.write_all(b)?;
                    if n % WRITEBACK < b.len() {
                        w.flush()?;
                        start_writeback(w.get_ref());
                    }
                    Ok(())
                })
                .map_err(io)?;
                drop(bytes);
                self.store.release(src);
                if n != t.nbytes() {
                    return Err(Error::tensor(
                        file,
                        &src.name,
                        format!("built {n} bytes, expected {}", t.nbytes()),
                    ));
                }
                Ok(())
            }
            Make::Bias => {
                let dtype = float_dtype(&src.dtype)
                    .ok_or_else(|| Error::tensor(file, &src.name, "not a float tensor"))?;
                let n_src = src.shape.iter().product::<usize>();
                let mut b = vec![0f32; n_src];
                dtype.decode(&bytes, &mut b);
                let vocab = self.opts.vocab_rows.min(n_src).max(1);
                let mean = b[..vocab].iter().map(|&v| v as f64).sum::<f64>() / vocab as f64;
                let fill = match self.opts.fill {
                    Fill::Zeros => 0.0,
                    _ => mean as f32,
                };
                let vals: Vec<f32> = self
                    .rows
                    .iter()
                    .map(|r| match r {
                        RowSource::Copy(i) => b.get(*i as usize).copied().unwrap_or(fill),
                        RowSource::Composed(ids) | RowSource::Fitted(ids) => {
                            let s: f32 = ids.iter().filter_map(|&i| b.get(i as usize)).sum();
                            s / ids.len().max(1) as f32
                        }
                        RowSource::Weighted(parts) => {
                            let (s, w) = parts.iter().fold((0f32, 0f32), |(s, w), &(i, k)| match b
                                .get(i as usize)
                            {
                                Some(v) => (s + k * v, w + k),
                                None => (s, w),
                            });
                            if w > 0.0 {
                                s / w
                            } else {
                                fill
                            }
                        }
                        RowSource::Fill => fill,
                    })
                    .collect();
                let mut out = vec![0u8; vals.len() * dtype.size()];
                dtype.encode(&vals, &mut out);
                // Copied entries keep their exact bits even where encode would round.
                let e = dtype.size();
                for (k, r) in self.rows.iter().enumerate() {
                    if let RowSource::Copy(i) = r {
                        let i = *i as usize;
                        if let Some(src_bytes) = bytes.get(i * e..(i + 1) * e) {
                            out[k * e..(k + 1) * e].copy_from_slice(src_bytes);
                        }
                    }
                }
                w.write_all(&out).map_err(io)
            }
        }
    }
}

/// Bytes written between two requests to start writeback.
const WRITEBACK: usize = 64 << 20;

/// Asks the kernel to start writing the file's dirty pages back without waiting for them
/// (a hint: errors are left to the fsync that ends the file).
fn start_writeback(file: &std::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: a valid open descriptor; the call reads no memory of ours.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// `model.safetensors.index.json`'s content.
pub fn index_json(tensors: &[OutTensor], files: &[(String, Vec<usize>)]) -> serde_json::Value {
    let mut map = BTreeMap::new();
    let mut total = 0u64;
    for (name, idx) in files {
        for &i in idx {
            map.insert(tensors[i].name.clone(), name.clone());
            total += tensors[i].nbytes() as u64;
        }
    }
    serde_json::json!({"metadata": {"total_size": total}, "weight_map": map})
}

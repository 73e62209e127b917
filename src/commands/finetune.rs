//! `embed-transplant finetune`: train the transplanted embedding with a linear classifier on
//! labelled text, keep the best epoch, write the embedding (and the head).

use crate::checkpoint::{self, DType};
use crate::cli::{FinetuneArgs, OptimizerArg};
use crate::error::{Error, Result};
use crate::output::Output;
use crate::report;
use crate::train::{
    self, data, EpochMetrics, Example, Model, OptimizerKind, Segmenter, TrainOptions,
};
use crate::vocab;
use crate::writer::{self, TensorOut};
use candle_core::{Device, Tensor};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Serialize)]
pub struct FinetuneReport {
    pub output: String,
    pub head: Option<String>,
    pub labels: Vec<String>,
    pub train_examples: usize,
    pub valid_examples: Option<usize>,
    pub test_examples: Option<usize>,
    pub epochs: Vec<EpochMetrics>,
    /// The epoch whose weights were kept (best validation accuracy, else the last).
    pub best_epoch: usize,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    pub frozen_rows: usize,
    /// Share of tokens in the training texts that are the unknown token.
    pub unknown_token_rate: f64,
    /// Mean number of tokens per training example after --max-len.
    pub mean_tokens: f64,
    pub batches_per_epoch: usize,
    pub seconds: f64,
}

fn candle(e: candle_core::Error) -> Error {
    train::candle_error("training", e)
}

/// Reads a TSV and maps labels (known labels only, unless `labels` is being built).
fn load_set(
    path: &Path,
    seg: &Segmenter,
    labels: &[String],
    max_len: usize,
) -> Result<Vec<Example>> {
    data::read_tsv(path)?
        .into_iter()
        .map(|(line, label, text)| {
            let label = labels
                .iter()
                .position(|l| *l == label)
                .ok_or_else(|| Error::Line {
                    path: path.display().to_string(),
                    line,
                    msg: format!("label `{label}` does not occur in the training data"),
                })?;
            Ok(Example {
                label,
                ids: seg.segment(&text, max_len),
            })
        })
        .collect()
}

pub fn run(args: &FinetuneArgs, out: &Output, tty: bool) -> Result<FinetuneReport> {
    let start = std::time::Instant::now();
    if args.epochs == 0 || args.batch_size == 0 || args.max_len == 0 {
        return Err(Error::Usage(
            "--epochs, --batch-size and --max-len must be at least 1".into(),
        ));
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return Err(Error::Usage("--lr must be a positive number".into()));
    }
    writer::check_target(&args.output, args.force)?;
    if let Some(h) = &args.head {
        if h == &args.output {
            return Err(Error::Usage(
                "--head and --output name the same file".into(),
            ));
        }
        writer::check_target(h, args.force)?;
    }
    let (target, emb) = train::embedding_for_vocab(&args.embeddings, &args.vocab)?;
    let in_meta = checkpoint::safetensors_metadata(&args.embeddings)?;
    let frozen_rows = if args.freeze_copied {
        let rows = in_meta
            .get("copied_rows")
            .and_then(|s| report::parse_ranges(s))
            .ok_or_else(|| {
                Error::file(
                    &args.embeddings,
                    "--freeze-copied needs the transplant's `copied_rows` metadata, which this file lacks",
                )
            })?;
        Some(rows)
    } else {
        None
    };

    let seg = Segmenter::new(&target.tokens, &args.unk_token);
    let raw = data::read_tsv(&args.train)?;
    let mut labels: Vec<String> = raw.iter().map(|(_, l, _)| l.clone()).collect();
    labels.sort();
    labels.dedup();
    if labels.len() < 2 {
        return Err(Error::file(
            &args.train,
            format!("needs at least 2 classes, found {}", labels.len()),
        ));
    }
    let train_set = load_set(&args.train, &seg, &labels, args.max_len)?;
    let valid_set = match &args.valid {
        Some(p) => Some(load_set(p, &seg, &labels, args.max_len)?),
        None => None,
    };
    let test_set = match &args.test {
        Some(p) => Some(load_set(p, &seg, &labels, args.max_len)?),
        None => None,
    };
    let total: usize = train_set.iter().map(|e| e.ids.len()).sum();
    let unknown = seg
        .unk()
        .map(|u| {
            train_set
                .iter()
                .flat_map(|e| &e.ids)
                .filter(|&&i| i == u)
                .count()
        })
        .unwrap_or(0);
    let unknown_token_rate = unknown as f64 / total.max(1) as f64;

    let e = Tensor::from_vec(emb.to_f32(), (emb.rows, emb.cols), &Device::Cpu).map_err(candle)?;
    let model = Model::new(e, labels.len(), args.seed).map_err(candle)?;
    let opts = TrainOptions {
        epochs: args.epochs,
        lr: args.lr,
        batch_size: args.batch_size,
        optimizer: match args.optimizer {
            OptimizerArg::Adam => OptimizerKind::Adam,
            OptimizerArg::Sgd => OptimizerKind::Sgd,
        },
        seed: args.seed,
        freeze_embeddings: args.freeze_embeddings,
        frozen_rows: frozen_rows.clone(),
    };
    let bar = (tty && !args.quiet).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} batches",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let epochs = args.epochs;
    let mut on_batch = |epoch: usize, done: usize, total: usize| {
        if let Some(b) = &bar {
            b.set_prefix(format!("{epoch}/{epochs}"));
            b.set_length(total as u64);
            b.set_position(done as u64);
        }
    };
    let mut on_epoch = |m: &EpochMetrics| {
        if let Some(b) = &bar {
            b.set_position(0);
        }
        let valid = match (m.valid_loss, m.valid_accuracy) {
            (Some(l), Some(a)) => format!(" | valid loss {l:.4} acc {:.2}%", 100.0 * a),
            _ => String::new(),
        };
        let line = format!(
            "epoch {}/{}: train loss {:.4} acc {:.2}%{valid} ({:.2}s)",
            m.epoch,
            args.epochs,
            m.train_loss,
            100.0 * m.train_accuracy,
            m.seconds
        );
        match &bar {
            Some(b) => b.println(line),
            None => out.info(&line),
        }
    };
    let (history, best_epoch) = train::train(
        &model,
        &train_set,
        valid_set.as_deref(),
        &opts,
        &mut on_batch,
        &mut on_epoch,
    )
    .map_err(candle)?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    writer::check_interrupted()?;
    let (test_loss, test_accuracy) = match &test_set {
        Some(t) => {
            let (l, a, _) = train::evaluate(&model, t, args.batch_size).map_err(candle)?;
            (Some(l), Some(a))
        }
        None => (None, None),
    };

    let to_bytes = |t: &Tensor| -> Result<Vec<u8>> {
        let v = t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(candle)?;
        Ok(v.iter().flat_map(|x| x.to_le_bytes()).collect())
    };
    let e_bytes = to_bytes(model.emb.as_tensor())?;
    let mut meta = in_meta.clone();
    let mut put = |k: &str, v: String| {
        meta.insert(k.to_string(), v);
    };
    put("format", "pt".into());
    put("dtype", "f32".into());
    put("finetuned", "true".into());
    put("finetune_train", args.train.display().to_string());
    put("finetune_train_sha256", file_sha256(&args.train)?);
    put(
        "finetune_labels",
        serde_json::to_string(&labels).unwrap_or_default(),
    );
    put("finetune_epochs", args.epochs.to_string());
    put("finetune_best_epoch", best_epoch.to_string());
    put("finetune_lr", args.lr.to_string());
    put("finetune_batch_size", args.batch_size.to_string());
    put(
        "finetune_optimizer",
        format!("{:?}", opts.optimizer).to_lowercase(),
    );
    put("finetune_seed", args.seed.to_string());
    put(
        "finetune_frozen",
        if args.freeze_embeddings {
            "embeddings".into()
        } else if args.freeze_copied {
            "copied_rows".into()
        } else {
            "none".into()
        },
    );
    if let Some(a) = history.get(best_epoch - 1).and_then(|m| m.valid_accuracy) {
        put("finetune_valid_accuracy", a.to_string());
    }
    if let Some(a) = test_accuracy {
        put("finetune_test_accuracy", a.to_string());
    }
    put(
        "tool",
        format!("embed-transplant {}", env!("CARGO_PKG_VERSION")),
    );
    writer::write_tensors(
        &args.output,
        &[TensorOut {
            name: "weight",
            dtype: DType::F32,
            shape: vec![emb.rows, emb.cols],
            data: &e_bytes,
        }],
        &meta,
        args.force,
    )?;
    if let Some(h) = &args.head {
        let w = to_bytes(model.w.as_tensor())?;
        let b = to_bytes(model.b.as_tensor())?;
        let mut hm = BTreeMap::new();
        hm.insert("format".to_string(), "pt".to_string());
        hm.insert(
            "labels".to_string(),
            serde_json::to_string(&labels).unwrap_or_default(),
        );
        hm.insert("embeddings".to_string(), args.output.display().to_string());
        writer::write_tensors(
            h,
            &[
                TensorOut {
                    name: "weight",
                    dtype: DType::F32,
                    shape: vec![labels.len(), emb.cols],
                    data: &w,
                },
                TensorOut {
                    name: "bias",
                    dtype: DType::F32,
                    shape: vec![labels.len()],
                    data: &b,
                },
            ],
            &hm,
            args.force,
        )?;
    }
    Ok(FinetuneReport {
        output: args.output.display().to_string(),
        head: args.head.as_ref().map(|h| h.display().to_string()),
        labels,
        train_examples: train_set.len(),
        valid_examples: valid_set.as_ref().map(Vec::len),
        test_examples: test_set.as_ref().map(Vec::len),
        epochs: history,
        best_epoch,
        test_loss,
        test_accuracy,
        frozen_rows: frozen_rows.map(|r| r.len()).unwrap_or(0),
        unknown_token_rate,
        mean_tokens: total as f64 / train_set.len().max(1) as f64,
        batches_per_epoch: train_set.len().div_ceil(args.batch_size),
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn file_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(vocab::hex(&Sha256::digest(&bytes)))
}

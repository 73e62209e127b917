//! `embed-transplant finetune`: train the transplanted embedding with a linear classifier on
//! labelled text, keep the best epoch, stage the embedding (and the head).

use super::Staged;
use crate::config::FinetuneConfig;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::labelled;
use crate::output::Output;
use crate::plot;
use crate::report;
use crate::train::{self, EpochMetrics, Model, Segmenter, TrainOptions};
use crate::vocab;
use crate::writer::{Batch, TensorOut};
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

pub fn run(cfg: &FinetuneConfig, out: &Output) -> Result<Staged<FinetuneReport>> {
    let start = std::time::Instant::now();
    let inp = super::labelled_input(
        &cfg.embeddings,
        &cfg.vocab,
        cfg.ignore_vocab_mismatch,
        cfg.allow_nonfinite,
        out,
    )?;
    let (target, emb, in_meta) = (inp.target, inp.emb, inp.meta);
    let frozen_rows = if cfg.freeze_copied {
        let text = in_meta.get("copied_rows").ok_or_else(|| {
            Error::file(
                &cfg.embeddings,
                "--freeze-copied needs the transplant's `copied_rows` metadata, which this file lacks",
            )
        })?;
        let mask = report::parse_ranges(text, emb.rows).map_err(|msg| {
            Error::file(&cfg.embeddings, format!("metadata `copied_rows`: {msg}"))
        })?;
        Some(mask)
    } else {
        None
    };

    let seg = Segmenter::new(&target.tokens, &cfg.unk_token);
    let raw = labelled::read_tsv(&cfg.train)?;
    let labels = labelled::labels_of(&raw);
    if labels.len() < 2 {
        return Err(Error::file(
            &cfg.train,
            format!("needs at least 2 classes, found {}", labels.len()),
        ));
    }
    let not_in_train = "does not occur in the training data";
    let train_set = labelled::examples(&cfg.train, &raw, &labels, &seg, cfg.max_len, not_in_train)?;
    drop(raw);
    let load = |p: &Path| -> Result<Vec<train::Example>> {
        labelled::examples(
            p,
            &labelled::read_tsv(p)?,
            &labels,
            &seg,
            cfg.max_len,
            not_in_train,
        )
    };
    let valid_set = cfg.valid.as_deref().map(load).transpose()?;
    let test_set = cfg.test.as_deref().map(load).transpose()?;
    let empty = train_set.iter().filter(|e| e.ids.is_empty()).count();
    if empty > 0 {
        out.warn(&format!(
            "{}: {empty} training line(s) yield no token of {} (they pool to zeros)",
            cfg.train.display(),
            target.origin
        ));
    }
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
    let model = Model::new(e, labels.len(), cfg.seed).map_err(candle)?;
    let frozen_count = frozen_rows
        .as_ref()
        .map(|m| m.iter().filter(|f| **f).count())
        .unwrap_or(0);
    let opts = TrainOptions {
        epochs: cfg.epochs,
        lr: cfg.lr,
        batch_size: cfg.batch_size,
        optimizer: cfg.optimizer,
        seed: cfg.seed,
        freeze_embeddings: cfg.freeze_embeddings,
        frozen_rows,
    };
    let bar = cfg
        .progress
        .then(|| out.progress_bar("epoch {prefix} [{bar:30}] {pos}/{len} batches"));
    let epochs = cfg.epochs;
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
            cfg.epochs,
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
    let (test_loss, test_accuracy) = match &test_set {
        Some(t) => {
            let (l, a, _) = train::evaluate(&model, t, cfg.batch_size).map_err(candle)?;
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
    put("finetune_train", cfg.train.display().to_string());
    put("finetune_train_sha256", file_sha256(&cfg.train)?);
    put(
        "finetune_labels",
        serde_json::to_string(&labels).unwrap_or_default(),
    );
    put("finetune_epochs", cfg.epochs.to_string());
    put("finetune_best_epoch", best_epoch.to_string());
    put("finetune_lr", cfg.lr.to_string());
    put("finetune_batch_size", cfg.batch_size.to_string());
    put(
        "finetune_optimizer",
        format!("{:?}", opts.optimizer).to_lowercase(),
    );
    put("finetune_seed", cfg.seed.to_string());
    put(
        "finetune_frozen",
        if cfg.freeze_embeddings {
            "embeddings".into()
        } else if cfg.freeze_copied {
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
    let mut batch = Batch::new();
    batch.tensors(
        &cfg.output,
        &[TensorOut {
            name: "weight",
            dtype: DType::F32,
            shape: vec![emb.rows, emb.cols],
            data: &e_bytes,
        }],
        &meta,
    )?;
    if let Some(h) = &cfg.head {
        let w = to_bytes(model.w.as_tensor())?;
        let b = to_bytes(model.b.as_tensor())?;
        let mut hm = BTreeMap::new();
        hm.insert("format".to_string(), "pt".to_string());
        hm.insert(
            "labels".to_string(),
            serde_json::to_string(&labels).unwrap_or_default(),
        );
        hm.insert(
            "embeddings".to_string(),
            cfg.output.path.display().to_string(),
        );
        batch.tensors(
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
        )?;
    }
    if let Some(plot_target) = &cfg.plot {
        let picture = plot::curves_svg(&curve_plot(cfg, &history, best_epoch))
            .map_err(|msg| Error::file(&plot_target.path, msg))?;
        batch.file(plot_target, None, |w| {
            std::io::Write::write_all(w, picture.as_bytes())
        })?;
    }
    let report = FinetuneReport {
        output: cfg.output.path.display().to_string(),
        head: cfg.head.as_ref().map(|h| h.path.display().to_string()),
        labels,
        train_examples: train_set.len(),
        valid_examples: valid_set.as_ref().map(Vec::len),
        test_examples: test_set.as_ref().map(Vec::len),
        epochs: history,
        best_epoch,
        test_loss,
        test_accuracy,
        frozen_rows: frozen_count,
        unknown_token_rate,
        mean_tokens: total as f64 / train_set.len().max(1) as f64,
        batches_per_epoch: train_set.len().div_ceil(cfg.batch_size),
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok(Staged { report, batch })
}

/// The `--plot` data: the metrics of every epoch and the one kept.
fn curve_plot(cfg: &FinetuneConfig, history: &[EpochMetrics], kept: usize) -> plot::CurvePlot {
    plot::CurvePlot {
        output: cfg.output.path.display().to_string(),
        train: cfg.train.display().to_string(),
        valid: cfg.valid.as_ref().map(|v| v.display().to_string()),
        epochs: history
            .iter()
            .map(|m| plot::EpochPoint {
                epoch: m.epoch,
                train_loss: m.train_loss,
                train_accuracy: m.train_accuracy,
                valid_loss: m.valid_loss,
                valid_accuracy: m.valid_accuracy,
            })
            .collect(),
        kept_epoch: kept,
    }
}

fn file_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(vocab::hex(&Sha256::digest(&bytes)))
}

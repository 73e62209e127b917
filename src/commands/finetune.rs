//! `embed-transplant finetune`: train the transplanted embedding with a linear classifier on
//! labelled text, keep the best epoch, stage the embedding (and the head).

use super::Staged;
use crate::config::FinetuneConfig;
use crate::console::Console;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::load::labelled;
use crate::load::vocab;
use crate::report;
use crate::report::plot;
use crate::report::FinetuneReport;
use crate::train::{self, Dataset, EpochMetrics, Model, Segmenter, TrainOptions};
use crate::write::{Batch, TensorOut};
use std::collections::BTreeMap;
use std::path::Path;

pub fn run(cfg: &FinetuneConfig, out: &Console) -> Result<Staged<FinetuneReport>> {
    let start = std::time::Instant::now();
    let inp = super::labelled_input(
        &cfg.embeddings,
        &cfg.vocab,
        cfg.ignore_vocab_mismatch,
        cfg.allow_nonfinite,
        out,
    )?;
    let (target, emb, in_meta) = (inp.target, inp.emb, inp.meta);
    let (rows, dim) = (emb.rows, emb.cols);
    let frozen_rows = if cfg.freeze_copied {
        let text = in_meta.get("copied_rows").ok_or_else(|| {
            Error::file(
                &cfg.embeddings,
                "--freeze-copied needs the transplant's `copied_rows` metadata, which this file lacks",
            )
        })?;
        let mask = report::rows::parse_ranges(text, rows).map_err(|msg| {
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
    labelled::check_classes(&cfg.train, labels.len(), raw.len(), cfg.max_classes)?;
    let not_in_train = "does not occur in the training data";
    let train_set = labelled::examples(&cfg.train, &raw, &labels, &seg, cfg.max_len, not_in_train)?;
    drop(raw);
    let load = |p: &Path| -> Result<Dataset> {
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
    let empty = (0..train_set.len())
        .filter(|&i| train_set.ids(i).is_empty())
        .count();
    if empty > 0 {
        out.warn(&format!(
            "{}: {empty} training line(s) yield no token of {} (they pool to zeros)",
            cfg.train.display(),
            target.origin
        ));
    }
    let total = train_set.all_ids().len();
    let unknown = seg
        .unk()
        .map(|u| train_set.all_ids().iter().filter(|&&i| i == u).count())
        .unwrap_or(0);
    let unknown_token_rate = unknown as f64 / total.max(1) as f64;
    let train_len = train_set.len();

    // The parameters in f32; the mapped input's pages are given back as they are decoded.
    let e = emb.into_f32();
    let mut model = Model::new(e, rows, dim, labels.len(), cfg.seed);
    let frozen_count = frozen_rows
        .as_ref()
        .map(|m| m.iter().filter(|f| **f).count())
        .unwrap_or(0);
    let opts = TrainOptions {
        epochs: cfg.epochs,
        lr: cfg.lr,
        embedding_lr: cfg.embedding_lr,
        batch_size: cfg.batch_size,
        optimizer: cfg.optimizer,
        seed: cfg.seed,
        freeze_embeddings: cfg.freeze_embeddings,
        freeze_embeddings_epochs: cfg.freeze_embeddings_epochs,
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
        &mut model,
        &train_set,
        valid_set.as_ref(),
        &opts,
        &mut on_batch,
        &mut on_epoch,
    )?;
    drop(train_set);
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let (test_loss, test_accuracy) = match &test_set {
        Some(t) => {
            let (l, a, _) = train::loss_and_accuracy(&model, t);
            (Some(l), Some(a))
        }
        None => (None, None),
    };

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
    put("finetune_embedding_lr", cfg.embedding_lr.to_string());
    put(
        "finetune_freeze_embeddings_epochs",
        cfg.freeze_embeddings_epochs.to_string(),
    );
    put("finetune_batch_size", cfg.batch_size.to_string());
    put("finetune_optimizer", opts.optimizer.name().to_string());
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
    // Streamed from the parameters in blocks: no second copy of E as bytes.
    let emb_data = &model.emb;
    batch.matrix(&cfg.output, DType::F32, [rows, dim], &meta, |w| {
        let mut buf = Vec::with_capacity(4096 * dim * 4);
        for block in emb_data.chunks(4096 * dim) {
            buf.clear();
            buf.extend(block.iter().flat_map(|x| x.to_le_bytes()));
            w.write_all(&buf)?;
        }
        Ok(())
    })?;
    if let Some(h) = &cfg.head {
        let to_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let w = to_bytes(&model.w);
        let b = to_bytes(&model.b);
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
                    shape: vec![labels.len(), dim],
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
        train_examples: train_len,
        valid_examples: valid_set.as_ref().map(Dataset::len),
        test_examples: test_set.as_ref().map(Dataset::len),
        epochs: history,
        best_epoch,
        test_loss,
        test_accuracy,
        frozen_rows: frozen_count,
        optimizer: cfg.optimizer.name(),
        embedding_lr: cfg.embedding_lr,
        unknown_token_rate,
        mean_tokens: total as f64 / train_len.max(1) as f64,
        batches_per_epoch: train_len.div_ceil(cfg.batch_size),
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
    // Streamed: the file is hashed, never held.
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(vocab::hex(&h.finalize()))
}

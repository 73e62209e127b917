//! `embed-transplant evaluate`: accuracy and per-class precision/recall of a saved embedding + head.

use crate::config::EvaluateConfig;
use crate::console::Console;
use crate::error::{Error, Result};
use crate::load::checkpoint;
use crate::load::labelled;
use crate::report::{ClassMetrics, EvaluateReport};
use crate::train::{self, Model, Segmenter};

pub fn run(cfg: &EvaluateConfig, out: &Console) -> Result<EvaluateReport> {
    let inp = super::labelled_input(
        &cfg.embeddings,
        &cfg.vocab,
        cfg.ignore_vocab_mismatch,
        cfg.allow_nonfinite,
        out,
    )?;
    let (target, emb) = (inp.target, inp.emb);
    let head = checkpoint::SafetensorsFile::open(&cfg.head)?;
    let meta = head.metadata();
    let labels: Vec<String> = meta
        .get("labels")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| {
            Error::file(
                &cfg.head,
                "no readable `labels` metadata (a JSON list of strings): not a head written by finetune --head",
            )
        })?;
    if labels.len() < 2 || labels_of_sorted(&labels) != labels.len() {
        return Err(Error::file(
            &cfg.head,
            format!(
                "metadata `labels` must name at least 2 distinct classes, found {}",
                labels.len()
            ),
        ));
    }
    let w = head.matrix("weight")?;
    if w.rows != labels.len() || w.cols != emb.cols {
        return Err(Error::tensor(
            &cfg.head,
            "weight",
            format!(
                "shape [{}, {}] does not fit {} labels and dim {}",
                w.rows,
                w.cols,
                labels.len(),
                emb.cols
            ),
        ));
    }
    super::check_finite(&w, cfg.allow_nonfinite, out)?;
    let bias = head.vector_f32("bias", labels.len())?;
    if bias.iter().any(|b| !b.is_finite()) && !cfg.allow_nonfinite {
        return Err(Error::tensor(
            &cfg.head,
            "bias",
            "holds NaN or infinity; pass --allow-nonfinite to use it anyway",
        ));
    }
    let model = Model {
        rows: emb.rows,
        dim: emb.cols,
        classes: labels.len(),
        emb: emb.to_f32(),
        w: w.to_f32(),
        b: bias,
    };
    let seg = Segmenter::new(&target.tokens, &cfg.unk_token);
    let examples = labelled::examples(
        &cfg.data,
        &labelled::read_tsv(&cfg.data)?,
        &labels,
        &seg,
        cfg.max_len,
        "is not one of the head's labels",
    )?;
    let (loss, accuracy, preds) = train::loss_and_accuracy(&model, &examples);
    let classes = labels
        .iter()
        .enumerate()
        .map(|(c, label)| {
            let tp = preds
                .iter()
                .zip(examples.labels())
                .filter(|(p, l)| **p == c && **l == c)
                .count();
            let predicted = preds.iter().filter(|p| **p == c).count();
            let support = examples.labels().iter().filter(|l| **l == c).count();
            let precision = if predicted == 0 {
                0.0
            } else {
                tp as f64 / predicted as f64
            };
            let recall = if support == 0 {
                0.0
            } else {
                tp as f64 / support as f64
            };
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            ClassMetrics {
                label: label.clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    Ok(EvaluateReport {
        data: cfg.data.display().to_string(),
        examples: examples.len(),
        loss,
        accuracy,
        classes,
    })
}

/// How many distinct labels there are.
fn labels_of_sorted(labels: &[String]) -> usize {
    let mut v: Vec<&String> = labels.iter().collect();
    v.sort();
    v.dedup();
    v.len()
}

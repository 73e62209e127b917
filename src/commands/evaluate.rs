//! `embed-transplant evaluate`: accuracy and per-class precision/recall of a saved embedding + head.

use crate::checkpoint;
use crate::cli::EvaluateArgs;
use crate::error::{Error, Result};
use crate::train::{self, data, Example, Model, Segmenter};
use candle_core::{Device, Tensor, Var};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct ClassMetrics {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Serialize)]
pub struct Evaluation {
    pub data: String,
    pub examples: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub classes: Vec<ClassMetrics>,
}

fn candle(e: candle_core::Error) -> Error {
    train::candle_error("evaluating", e)
}

pub fn run(args: &EvaluateArgs) -> Result<Evaluation> {
    let (target, emb) = train::embedding_for_vocab(&args.embeddings, &args.vocab)?;
    let w = checkpoint::load_safetensors(&args.head, "weight")?;
    let meta = checkpoint::safetensors_metadata(&args.head)?;
    let labels: Vec<String> = meta
        .get("labels")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| {
            Error::file(
                &args.head,
                "no `labels` metadata: not a head written by finetune --head",
            )
        })?;
    if w.rows != labels.len() || w.cols != emb.cols {
        return Err(Error::tensor(
            &args.head,
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
    let bias = read_bias(&args.head, labels.len())?;
    let dev = Device::Cpu;
    let model = Model {
        emb: Var::from_tensor(
            &Tensor::from_vec(emb.to_f32(), (emb.rows, emb.cols), &dev).map_err(candle)?,
        )
        .map_err(candle)?,
        w: Var::from_tensor(&Tensor::from_vec(w.to_f32(), (w.rows, w.cols), &dev).map_err(candle)?)
            .map_err(candle)?,
        b: Var::from_tensor(&Tensor::from_vec(bias, labels.len(), &dev).map_err(candle)?)
            .map_err(candle)?,
    };
    let seg = Segmenter::new(&target.tokens, &args.unk_token);
    let examples: Vec<Example> = data::read_tsv(&args.data)?
        .into_iter()
        .map(|(line, label, text)| {
            let label = labels
                .iter()
                .position(|l| *l == label)
                .ok_or_else(|| Error::Line {
                    path: args.data.display().to_string(),
                    line,
                    msg: format!("label `{label}` is not one of the head's labels {labels:?}"),
                })?;
            Ok(Example {
                label,
                ids: seg.segment(&text, args.max_len),
            })
        })
        .collect::<Result<_>>()?;
    let (loss, accuracy, preds) =
        train::evaluate(&model, &examples, args.batch_size).map_err(candle)?;
    let classes = labels
        .iter()
        .enumerate()
        .map(|(c, label)| {
            let tp = preds
                .iter()
                .zip(&examples)
                .filter(|(p, e)| **p == c && e.label == c)
                .count();
            let predicted = preds.iter().filter(|p| **p == c).count();
            let support = examples.iter().filter(|e| e.label == c).count();
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
    Ok(Evaluation {
        data: args.data.display().to_string(),
        examples: examples.len(),
        loss,
        accuracy,
        classes,
    })
}

/// The head's 1-D `bias`.
fn read_bias(path: &std::path::Path, n: usize) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
    let t = st
        .tensor("bias")
        .map_err(|_| Error::tensor(path, "bias", "missing"))?;
    if t.dtype() != safetensors::Dtype::F32 || t.shape() != [n] {
        return Err(Error::tensor(
            path,
            "bias",
            format!("expected F32 [{n}], found {:?} {:?}", t.dtype(), t.shape()),
        ));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The human table.
pub fn render(e: &Evaluation) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} examples, accuracy {:.2}%, loss {:.4}",
        e.data,
        e.examples,
        100.0 * e.accuracy,
        e.loss
    );
    let _ = writeln!(
        s,
        "{:<20} {:>9} {:>9} {:>9} {:>8}",
        "label", "precision", "recall", "f1", "support"
    );
    for c in &e.classes {
        let _ = writeln!(
            s,
            "{:<20} {:>9.4} {:>9.4} {:>9.4} {:>8}",
            c.label, c.precision, c.recall, c.f1, c.support
        );
    }
    s
}

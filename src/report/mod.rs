//! What a run did, as plain data: printed by `output`, written by `--report`, and folded into the
//! output file's metadata.

pub mod plot;

use crate::load::hub::Provenance;
use crate::load::vocab::{SourceVocab, TargetVocab};
use crate::matching::{Method, Plan};
use serde::Serialize;
use std::collections::BTreeMap;

/// The summary of one transplant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TransplantReport {
    pub output: String,
    pub source: Provenance,
    pub weights: String,
    pub weights_format: String,
    pub tensor: String,
    /// Why this tensor was taken.
    pub tensor_rule: String,
    pub source_shape: [usize; 2],
    pub source_dtype: String,
    pub source_vocab: String,
    pub source_vocab_size: usize,
    pub target_vocab: String,
    pub target_vocab_sha256: String,
    pub rows: usize,
    pub dim: usize,
    pub dtype: String,
    /// Rows copied from the source (exact or normalised matches).
    pub copied: usize,
    /// Rows built otherwise (composed, random, zeros, mean).
    pub initialised: usize,
    /// copied / rows, in percent.
    pub coverage_percent: f64,
    /// Rows per method; they add up to `rows`.
    pub counts: BTreeMap<String, usize>,
    /// compose, random, zeros or mean.
    pub init: String,
    /// What rows with nothing to copy or compose got.
    pub fill: String,
    /// How the source tokenizer spells tokens (word_piece, byte_level, sentence_piece, other).
    pub source_tokenizer: crate::matching::Style,
    pub seed: u64,
    /// The standard deviation random rows were drawn with, and where it came from.
    pub sigma: Option<f32>,
    pub sigma_from: Option<String>,
    pub calibrate_norm: bool,
    pub median_norm_copied: Option<f32>,
    pub median_norm_initialised: Option<f32>,
    pub duplicate_lines: usize,
    /// Source rows holding NaN or infinity.
    pub nonfinite_source_rows: usize,
    /// Output rows whose finite values overflowed to infinity in the output type.
    pub overflow_rows: usize,
    /// Target tokens the source tokenizer failed to encode (they got the fill).
    pub tokenizer_errors: usize,
    /// `--aux-vectors`: the static-vector file that guided rows (method `guided`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_vectors: Option<String>,
    /// `--donor`: the donor model that guided rows (method `guided`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub donor: Option<crate::load::hub::Provenance>,
    /// With --donor or --aux-vectors: the rule, its anchors and the rows it guided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guide: Option<GuideReport>,
    /// `--model` was a static word-vector file: what was read from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub static_vectors: Option<StaticSource>,
    /// `--init compose-fit`: the fitted map.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compose_fit: Option<crate::init::fit::FitSummary>,
    /// `--init auto`: what it chose for this run, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto: Option<crate::init::auto::Choice>,
    pub seconds: f64,
    /// Seconds per stage.
    pub timings: BTreeMap<String, f64>,
    /// `--emit-model`: what the model directory holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<crate::emit::ModelReport>,
}

/// How a guide built rows.
#[derive(Debug, Clone, Serialize)]
pub struct GuideReport {
    /// `softmax` or `omp`.
    pub rule: String,
    /// OMP's anchors per token as applied (capped at the auxiliary dimension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// The rule in words (as in the output's metadata).
    pub description: String,
    /// Dimension of the auxiliary space (the donor's hidden size, or the vectors').
    pub dim: usize,
    /// Source tokens it shares with the source model.
    pub anchors: usize,
    /// Rows built by the guide.
    pub guided: usize,
}

/// A static word-vector file read as the source (`--model vectors.txt`).
#[derive(Debug, Clone, Serialize)]
pub struct StaticSource {
    /// `word2vec text`, `word2vec binary` or `npy`.
    pub format: String,
    /// Vectors in the file.
    pub vectors: usize,
    /// Vectors kept: those some target token, normalised form or character needed.
    pub kept: usize,
    /// `.npy`: the word list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words_file: Option<String>,
}

/// One row that was not an exact copy, for `--report`.
#[derive(Debug, Clone, Serialize)]
pub struct RowNote {
    /// 1-based line of the target vocabulary.
    pub line: usize,
    pub token: String,
    /// The text a coded target token stands for (a tokenizer.json's byte-level `Ġduring` is
    /// " during"; bytes of a partial character are written `\xE7`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub method: String,
    /// The source tokens the row was built from (the match, or the pieces).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<String>,
}

/// The `--report` file.
#[derive(Debug, Serialize)]
pub struct ReportFile<'a> {
    pub summary: &'a TransplantReport,
    /// The held-out score of the init method used (see `embed-transplant score`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<&'a crate::init::heldout::ReportScore>,
    pub rows: &'a [RowNote],
}

/// Compresses sorted row indices into `a-b,c,d-e`.
pub fn ranges(indices: impl IntoIterator<Item = usize>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    for i in indices {
        run = match run {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some((a, b)) => {
                out.push(if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                });
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some((a, b)) = run {
        out.push(if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        });
    }
    out.join(",")
}

/// Parses `ranges` output back, against a matrix of `rows` rows: a mask with true for every row
/// named. Memory is bounded by `rows` whatever the text says; a malformed range, or one past the
/// end, is an error saying which.
pub fn parse_ranges(s: &str, rows: usize) -> Result<Vec<bool>, String> {
    let mut mask = vec![false; rows];
    let index = |t: &str| -> Result<usize, String> {
        let i: usize = t
            .trim()
            .parse()
            .map_err(|_| format!("`{t}` is not a row number"))?;
        if i >= rows {
            return Err(format!("row {i} is past the end ({rows} rows)"));
        }
        Ok(i)
    };
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (index(a)?, index(b)?),
            None => {
                let i = index(part)?;
                (i, i)
            }
        };
        if b < a {
            return Err(format!("range `{part}` runs backwards"));
        }
        mask[a..=b].fill(true);
    }
    Ok(mask)
}

/// Each source id's token (`?` for an id no token has).
pub fn source_names(source: &SourceVocab) -> Vec<&str> {
    let mut names: Vec<&str> = vec!["?"; source.size];
    for (t, &id) in &source.ids {
        if let Some(n) = names.get_mut(id as usize) {
            *n = t;
        }
    }
    names
}

/// The `--report` notes: every row that is not an exact copy, with how it was made and the source
/// tokens it was built from (`names`: each source id's token).
pub fn notes(target: &TargetVocab, plan: &Plan, names: &[&str], fill: &str) -> Vec<RowNote> {
    let tokens = &target.tokens;
    plan.rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method != Method::Exact)
        .map(|(i, r)| RowNote {
            line: i + 1,
            token: tokens[i].clone(),
            text: target
                .bytes_of(i)
                .map(|b| crate::load::vocab::escaped_text(&b)),
            method: r.method.name(fill),
            pieces: match &r.source {
                // Guided rows: each anchor with its weight.
                crate::init::build::RowSource::Weighted(parts) => parts
                    .iter()
                    .map(|&(id, w)| {
                        format!("{}:{w:.3}", names.get(id as usize).copied().unwrap_or("?"))
                    })
                    .collect(),
                _ => r
                    .pieces()
                    .iter()
                    .map(|&id| names.get(id as usize).copied().unwrap_or("?").to_string())
                    .collect(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip() {
        let v = vec![0, 1, 2, 5, 7, 8];
        assert_eq!(ranges(v.clone()), "0-2,5,7-8");
        let mask = parse_ranges("0-2,5,7-8", 9).unwrap();
        let back: Vec<usize> = (0..9).filter(|&i| mask[i]).collect();
        assert_eq!(back, v);
        assert_eq!(ranges(Vec::new()), "");
        assert!(parse_ranges("3-1", 9).unwrap_err().contains("backwards"));
        assert!(parse_ranges("0-9", 9).unwrap_err().contains("past the end"));
        assert!(parse_ranges("0-18446744073709551615", 9).is_err());
        assert!(parse_ranges("0-99999999999999999999", 9).is_err());
        assert!(parse_ranges("x", 9)
            .unwrap_err()
            .contains("not a row number"));
    }
}

//! Every report, as plain data: what a run did, serialised for `--json`, `--report` and
//! transplant.json, folded into the output file's metadata, and turned into human text by
//! [`render`] alone ([`crate::console`] prints it). Reports hold data, not logic; they import only
//! the plain types they carry.
//!
//! (Over 400 lines because every report type lives here, by design: plain structs, no logic.)

pub mod plot;
pub mod render;
pub mod rows;

use crate::load::checkpoint::TensorEntry;
use crate::load::hub::Provenance;
use crate::load::model_config::ModelConfig;
use crate::load::vocab::SourceKind;
use crate::matching::Style;
use crate::train::EpochMetrics;
use serde::Serialize;
use serde_json::Value;
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
    pub compose_fit: Option<FitSummary>,
    /// `--init auto`: what it chose for this run, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoChoice>,
    pub seconds: f64,
    /// Seconds per stage.
    pub timings: BTreeMap<String, f64>,
    /// `--emit-model`: what the model directory holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelReport>,
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
    pub score: Option<&'a ReportScore>,
    pub rows: &'a [RowNote],
}

/// One method's score on the held-out tokens.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MethodScore {
    pub method: String,
    /// Held-out tokens scored.
    pub tokens: usize,
    /// Mean cosine of the predicted row to the true row.
    pub mean_cosine: f64,
    /// Share of tokens whose true row is the prediction's nearest source row (by cosine).
    pub top1: f64,
    /// ... among its 10 nearest.
    pub top10: f64,
    /// Median rank of the true row among all source rows (1 = nearest).
    pub median_rank: f64,
    /// Median of |predicted| / |true|.
    pub norm_ratio: f64,
}

/// The held-out score of the method a transplant used, for its `--report`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReportScore {
    /// Held-out source tokens scored, and how many of them occur in the target vocabulary.
    pub scored: usize,
    pub in_target: Option<usize>,
    pub seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<MethodScore>,
    /// Why there is no score, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The fitted map's facts, for reports and metadata.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FitSummary {
    /// Plain mean composition won the validation split: the map is the identity.
    pub identity: bool,
    pub alpha: f64,
    pub lambda: f64,
    pub fit_size: usize,
    /// Mean cosine on the fit's own held-out fifth: the map, and plain mean of pieces.
    pub validation_cosine: f64,
    pub validation_cosine_plain: f64,
    /// The L2 norm fitted rows are scaled to: the median norm of the source's vocabulary rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaled_to: Option<f32>,
}

/// One kind of composed token, and what its validation said.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AutoKind {
    /// Unicode script of the token's text (`Han`, `Latin`, ...; `Common` for digits and
    /// punctuation only).
    pub script: String,
    /// Pieces under the source tokenizer: `2`, `3` or `4+`.
    pub pieces: String,
    /// Target rows of this kind.
    pub rows: usize,
    /// Held-out source tokens of this kind the map was fitted on, and validated on.
    pub fit: usize,
    pub validation: usize,
    /// Mean cosine to the true row on the validation tokens: with the map, and the plain mean.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine_fitted: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cosine_plain: Option<f64>,
    /// Whether this kind's rows got the map.
    pub fitted: bool,
}

/// What `auto` chose for this run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AutoChoice {
    /// `compose-fit` when some rows got the map, else `compose`.
    pub used: String,
    /// Why, in one sentence.
    pub reason: String,
    /// Composed target rows of 2 or more pieces, and how many of them got the map.
    pub composed: usize,
    pub fitted: usize,
    pub kinds: Vec<AutoKind>,
}

/// What was written, for the summary and transplant.json.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelReport {
    pub dir: String,
    pub mode: &'static str,
    pub rows: usize,
    /// Rows that a token maps to.
    pub token_rows: usize,
    /// --extend: target tokens appended.
    pub new_tokens: usize,
    /// --keep-special: special tokens appended.
    pub kept_special: Vec<String>,
    pub padding_rows: usize,
    pub tokenizer: crate::emit::tokenizer::Family,
    /// --extend: how the new tokens went into the tokenizer.
    pub extension: Option<crate::emit::tokenizer::Extension>,
    /// No separate output head was written (tied to the embedding, or none).
    pub tied: bool,
    pub routing: Routing,
    pub weight_files: Vec<String>,
    pub config_ids: BTreeMap<String, Value>,
    /// A target tokenizer.json replaced the source's: how the special-token roles were adopted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub special_tokens: Option<Adopted>,
}

/// Special tokens when a target tokenizer replaces the source's (without --keep-special): each
/// role whose source token the target lacks points at the target's token of that role.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Adopted {
    /// Role (`eos`, `pad`, ...) -> [source token, target token].
    pub moved: BTreeMap<String, [String; 2]>,
    /// Roles the source has and the target has no token for (their config ids become null).
    pub lacking: Vec<String>,
    /// The target's token per role (its tokenizer_config.json, else its special added tokens).
    pub target_roles: BTreeMap<String, String>,
    /// Source special tokens with no role that the new tokenizer does not have.
    pub dropped: Vec<String>,
}

/// What routing found, for the report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Routing {
    pub embedding: String,
    /// The untied output head rebuilt from its own rows, if any.
    pub head: Option<String>,
    /// Tensors left out because transformers ties them (a tied head, BERT's decoder bias).
    pub tied_dropped: Vec<String>,
    pub biases: Vec<String>,
    /// Other tensors equal to the embedding (T5's `encoder.embed_tokens.weight` beside
    /// `shared.weight` in older checkpoints): written as the same new rows.
    pub copies_of_embedding: Vec<String>,
}

/// What `score` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScoreReport {
    pub model: String,
    pub tensor: String,
    pub source_shape: [usize; 2],
    /// Source tokens that could be held out (whole words that encode back to themselves).
    pub candidates: usize,
    /// Tokens held out from every fit (a sample is taken from those that split into 2+ pieces).
    pub held_out: usize,
    /// Held-out tokens scored, and how many of them occur in the target vocabulary.
    pub scored: usize,
    pub in_target: Option<usize>,
    pub seed: u64,
    pub sigma: f32,
    pub scores: Vec<MethodScore>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compose_fit: Option<FitSummary>,
    /// What the `auto` method chose on the held-out tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto: Option<crate::report::AutoChoice>,
    /// With --aux-vectors or --donor: the file or donor, its anchors (source tokens it has a
    /// vector for) and the scored tokens it had a vector for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guide: Option<GuideSummary>,
    pub seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GuideSummary {
    /// The static-vector file, or the donor model (`donor` true).
    pub file: String,
    pub donor: bool,
    /// Vectors in the file; for a donor, the distinct texts its tokens stand for.
    pub vectors_in_file: usize,
    /// Dimension of the auxiliary space.
    pub dim: usize,
    pub anchors: usize,
    pub guided: usize,
    /// The softmax rule's anchors and temperature.
    pub top_k: usize,
    pub temperature: f32,
    /// The OMP rule's k, as applied (capped at `dim`).
    pub omp_k: usize,
}

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
    pub optimizer: &'static str,
    pub embedding_lr: f64,
    /// Share of tokens in the training texts that are the unknown token.
    pub unknown_token_rate: f64,
    /// Mean number of tokens per training example after --max-len.
    pub mean_tokens: f64,
    pub batches_per_epoch: usize,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct ClassMetrics {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Serialize)]
pub struct EvaluateReport {
    pub data: String,
    pub examples: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub classes: Vec<ClassMetrics>,
}

#[derive(Debug, Serialize)]
pub struct InspectReport {
    pub source: Provenance,
    pub weights: String,
    pub weights_format: String,
    pub tensors: Vec<TensorEntry>,
    /// The tensor a transplant would use, or why none.
    pub embedding: Option<String>,
    pub embedding_rule: Option<String>,
    pub embedding_error: Option<String>,
    pub source_vocab: VocabFacts,
    pub config: ModelConfig,
    /// With --vocab: rows per method a transplant with the default init would produce.
    pub dry_run: Option<DryRun>,
}

#[derive(Debug, Serialize)]
pub struct VocabFacts {
    pub path: String,
    pub kind: SourceKind,
    pub size: usize,
    pub tokenizer: Style,
    pub lowercase: bool,
    pub special_tokens: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct DryRun {
    pub target_vocab: String,
    pub rows: usize,
    pub copied: usize,
    pub counts: BTreeMap<String, usize>,
}

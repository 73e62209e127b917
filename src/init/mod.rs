//! The init engine: how a row the source vocabulary lacks is made ([`Method`]), the σ of random
//! rows ([`sigma`]), and the steps that turn a matched plan into what the builder
//! ([`crate::init::build::build_blocks`]) writes: length weights, the fitted map and the rows it
//! applies to, the guide's rows, the build options. `transplant` runs it on the source model;
//! `score` and `--report` run the same steps on the source with their held-out tokens removed
//! ([`Source`] with `held_out`), so the rows they score are the rows a transplant from that
//! reduced source writes (pinned by `score_rows_are_transplant_rows` in tests/cli/score.rs).
//!
//! (Over 400 lines: the engine's steps, shared by every caller, are one page to read in order.)

pub mod auto;
pub mod build;
pub mod donor;
pub mod fit;
pub mod guide;
pub mod heldout;

use crate::dtype::DType;
use crate::error::Result;
use crate::init::build::{BuildOptions, Fill, RowSource};
use crate::linalg::Matrix;
use crate::load::vectors::Vectors;
use crate::load::vocab::{SourceVocab, TargetVocab};
use crate::matching::holdout::{self, Candidate, Decomposed};
use crate::matching::{self, Plan, SourceTokenizer, Style};
use crate::report::{FitSummary, GuideReport};
use fit::LinearMap;
use guide::Anchors;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;
use std::sync::Arc;

/// How a row the source vocabulary lacks is made: the one list that `--init`, `score`'s methods
/// and the report's held-out score name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Compose, with the fitted map on the kinds of token where the source's own held-out tokens
    /// of that kind say it beats the plain mean ([`auto`]). The default.
    Auto,
    /// The mean of the token's pieces; tokens with no usable piece get the random fill.
    Compose,
    /// Compose, then the fitted map ([`crate::init::fit`]) on every composed row.
    ComposeFit,
    /// Compose with each piece weighted by its length ([`SourceTokenizer::length_weights`]).
    ComposeLength,
    /// N(0, σ), seeded per row.
    Random,
    Zeros,
    /// The mean of the source vocabulary's rows.
    Mean,
    /// An auxiliary space (static vectors or a donor) by this rule ([`crate::init::guide`]); plain
    /// composition where the space has no vector.
    Guide(guide::Rule),
}

impl Method {
    /// The methods `score` compares without a guide, in its table's order.
    pub const SCORED: [Method; 7] = [
        Method::Auto,
        Method::Compose,
        Method::ComposeLength,
        Method::ComposeFit,
        Method::Mean,
        Method::Random,
        Method::Zeros,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Auto => "auto",
            Method::Compose => "compose",
            Method::ComposeFit => "compose-fit",
            Method::ComposeLength => "compose-length",
            Method::Random => "random",
            Method::Zeros => "zeros",
            Method::Mean => "mean",
            Method::Guide(guide::Rule::Softmax) => "guide",
            Method::Guide(guide::Rule::Omp { .. }) => "guide-omp",
        }
    }

    /// Whether tokens are composed from their pieces (the fills are not).
    pub fn composes(self) -> bool {
        !matches!(self, Method::Random | Method::Zeros | Method::Mean)
    }

    /// What rows with nothing to copy, compose or guide get: one of the three fills.
    pub fn fill(self) -> Method {
        match self {
            Method::Zeros | Method::Mean => self,
            _ => Method::Random,
        }
    }

    /// The method for the rows a guide leaves (the init for a guide's fallback).
    fn base(self) -> Method {
        match self {
            Method::Guide(_) => Method::Compose,
            m => m,
        }
    }
}

/// The source the rows are built from. `held_out`: source tokens treated as unknown (`score`):
/// they are out of `vocab` and `tokenizer` already, and their rows are left out of the mean
/// fill and the std.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub matrix: Matrix<'a>,
    pub vocab: &'a SourceVocab,
    pub tokenizer: &'a SourceTokenizer,
    pub initializer_range: Option<f64>,
    pub held_out: &'a HashSet<u32>,
    /// What several steps derive from the source, computed once ([`Derived`]).
    pub derived: &'a Derived,
}

/// What is derived from a source and used by several steps (the fit, auto, the guide's anchors,
/// `--report`'s and `score`'s held-out tokens, σ): computed on first use, once per source. The
/// candidates take seconds on a 250k-token vocabulary.
#[derive(Default)]
pub struct Derived {
    candidates: std::sync::OnceLock<Vec<Candidate>>,
    std: std::sync::OnceLock<f32>,
    median_norm: std::sync::OnceLock<Option<f32>>,
}

impl Source<'_> {
    /// The source tokens that can be held out ([`holdout::candidates`]), in id order.
    pub fn candidates(&self) -> &[Candidate] {
        self.derived
            .candidates
            .get_or_init(|| holdout::candidates(self.tokenizer, self.vocab.size))
    }

    /// The std of the vocabulary rows, held-out rows left out.
    fn std(&self) -> f32 {
        *self
            .derived
            .std
            .get_or_init(|| crate::linalg::std_of(self.matrix, self.vocab.size, self.held_out))
    }

    /// The median L2 norm of the vocabulary rows, held-out rows left out: what fitted rows are
    /// scaled to.
    pub fn median_norm(&self) -> Option<f32> {
        *self
            .derived
            .median_norm
            .get_or_init(|| crate::linalg::median_norm(self.matrix, self.vocab.size, self.held_out))
    }
}

/// initializer_range values outside this band are not a standard deviation anyone meant.
const PLAUSIBLE_SIGMA: std::ops::RangeInclusive<f64> = 1e-8..=10.0;

/// The σ of random rows and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sigma {
    pub value: f32,
    pub from: String,
    /// config.json's initializer_range, when it was there but not plausible (so not used).
    pub implausible: Option<f64>,
}

/// The σ of random rows from a checkpoint: see [`sigma_rule`].
pub fn sigma(source: &Source<'_>) -> Sigma {
    sigma_rule(source.initializer_range, "source matrix", || source.std())
}

/// The one σ rule: config.json's initializer_range when plausible, else the std of the source's
/// rows (`rows` names them; held-out rows left out). A static-vector source has no config.
pub fn sigma_rule(initializer_range: Option<f64>, rows: &str, std: impl FnOnce() -> f32) -> Sigma {
    match initializer_range {
        Some(r) if PLAUSIBLE_SIGMA.contains(&r) => Sigma {
            value: r as f32,
            from: "config.json initializer_range".into(),
            implausible: None,
        },
        Some(r) => Sigma {
            value: std(),
            from: format!("std of the {rows} (config.json initializer_range {r} ignored)"),
            implausible: Some(r),
        },
        None => Sigma {
            value: std(),
            from: format!("std of the {rows}"),
            implausible: None,
        },
    }
}

/// The builder's fill for `method` (σ only for the random fill).
pub fn fill(method: Method, sigma: Option<&Sigma>) -> Fill {
    match method.fill() {
        Method::Zeros => Fill::Zeros,
        Method::Mean => Fill::Mean,
        _ => Fill::Random {
            sigma: sigma.map_or(0.0, |s| s.value),
        },
    }
}

/// Matches the target against the source and makes the rows `method` composes: the pieces'
/// mean, or with `compose-length` their length-weighted sum.
pub fn plan(source: &Source<'_>, target: &TargetVocab, method: Method) -> Plan {
    let mut plan = matching::plan_target(
        target,
        source.vocab,
        Some(source.tokenizer),
        method.composes(),
    );
    if method == Method::ComposeLength {
        for row in plan.rows.iter_mut() {
            if let RowSource::Composed(ids) = &row.source {
                let w = source.tokenizer.length_weights(ids);
                row.source = RowSource::Weighted(ids.iter().copied().zip(w).collect());
            }
        }
    }
    plan
}

/// What fitting decided: the map (None when no row uses one) and, for the report, auto's
/// per-run choice.
#[derive(Default)]
pub struct Fitting {
    pub map: Option<Arc<LinearMap>>,
    pub auto: Option<crate::report::AutoChoice>,
}

impl Fitting {
    /// The map's facts, for the report and the metadata.
    pub fn summary(&self) -> Option<FitSummary> {
        self.map.as_deref().map(fit_summary)
    }
}

/// `compose-fit` and `auto`: fits the map on the source's own multi-piece tokens and marks the
/// composed rows it applies to ([`RowSource::Fitted`]); `texts` are the target tokens as text.
/// Other methods leave the plan as it is.
pub fn fit(
    source: &Source<'_>,
    plan: &mut Plan,
    texts: &[String],
    method: Method,
    seed: u64,
) -> Result<Fitting> {
    match method {
        Method::ComposeFit => {
            let cands = ordered_candidates(source.candidates().to_vec(), seed, None);
            let refs: Vec<&Candidate> = cands.iter().collect();
            let mut map = fit_map(source, &refs, seed)?;
            map.target_norm = source.median_norm();
            for row in plan.rows.iter_mut() {
                if let RowSource::Composed(ids) = &mut row.source {
                    row.source = RowSource::Fitted(std::mem::take(ids));
                }
            }
            Ok(Fitting {
                map: Some(Arc::new(map)),
                auto: None,
            })
        }
        Method::Auto => auto::choose(source, plan, texts, seed),
        _ => Ok(Fitting::default()),
    }
}

/// The builder's options for `method` on `source`.
pub fn options(
    source: &Source<'_>,
    method: Method,
    sigma: Option<&Sigma>,
    fitting: &Fitting,
    (out, seed, calibrate_norm): (DType, u64, bool),
) -> BuildOptions {
    BuildOptions {
        out,
        fill: fill(method.base(), sigma),
        seed,
        calibrate_norm,
        vocab_rows: source.vocab.size,
        held_out: (!source.held_out.is_empty()).then(|| Arc::new(source.held_out.clone())),
        compose_map: fitting.map.clone(),
        row_stats: true,
    }
}

/// Tokens the compose-fit map is fitted on, at most (a random subset beyond): enough for a
/// dim x dim map up to 1024 dims, and seconds, not minutes, on 250k-token vocabularies.
pub const FIT_MAX: usize = 50_000;
/// The fit tokens are decomposed in this many groups, each with the tokenizer rebuilt without
/// that group only: the pieces stay as long as an unknown word's would be.
const FIT_FOLDS: usize = 4;

/// The fit pairs of `fit` candidates (at most [`FIT_MAX`], in the given order): each decomposed
/// with the tokenizer rebuilt without its group.
pub fn fit_pairs(source: &Source<'_>, fit: &[&Candidate]) -> Result<Vec<Decomposed>> {
    let fit = &fit[..fit.len().min(FIT_MAX)];
    let fold = fit.len().div_ceil(FIT_FOLDS).max(1);
    let mut pairs: Vec<Decomposed> = Vec::new();
    for group in fit.chunks(fold) {
        let held: HashSet<u32> = group.iter().map(|c| c.id).collect();
        pairs.extend(holdout::decompose(
            source.tokenizer,
            group,
            &held,
            source.vocab.size,
        )?);
    }
    Ok(pairs)
}

/// The pairs' piece means (x) and true rows (y), n x dim each.
pub fn pair_rows(src: Matrix<'_>, pairs: &[Decomposed]) -> (Vec<f32>, Vec<f32>) {
    let d = src.cols;
    let mut x = vec![0f32; pairs.len() * d];
    let mut y = vec![0f32; pairs.len() * d];
    let mut tmp = vec![0f32; d];
    for ((p, xo), yo) in pairs
        .iter()
        .zip(x.chunks_exact_mut(d.max(1)))
        .zip(y.chunks_exact_mut(d.max(1)))
    {
        for &id in &p.pieces {
            src.row_f32(id as usize, &mut tmp);
            xo.iter_mut().zip(&tmp).for_each(|(a, t)| *a += t);
        }
        let n = p.pieces.len().max(1) as f32;
        xo.iter_mut().for_each(|a| *a /= n);
        src.row_f32(p.id as usize, yo);
    }
    (x, y)
}

/// Fits the compose-fit map on `fit` candidates (see [`fit_pairs`]).
pub fn fit_map(source: &Source<'_>, fit: &[&Candidate], seed: u64) -> Result<LinearMap> {
    let pairs = fit_pairs(source, fit)?;
    let (x, y) = pair_rows(source.matrix, &pairs);
    fit::fit(&x, &y, source.matrix.cols, seed)
}

/// Candidates in a seeded order, those in `prefer` first.
pub fn ordered_candidates(
    mut cands: Vec<Candidate>,
    seed: u64,
    prefer: Option<&HashSet<String>>,
) -> Vec<Candidate> {
    cands.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    if let Some(p) = prefer {
        // Stable: the seeded order holds within each group.
        cands.sort_by_key(|c| !p.contains(&c.text) && !p.contains(c.text.trim()));
    }
    cands
}

/// Anchors: candidates (whole source words) the static file has a vector for.
pub fn anchors(cands: &[Candidate], vectors: &Vectors) -> Anchors {
    let mut a = Anchors::new(vectors.dim);
    for c in cands {
        if let Some(v) = vectors.lookup(&c.text) {
            a.push(c.id, &c.text, v);
        }
    }
    a
}

/// `--aux-vectors`: every row that is not a copy and whose text (`texts`, the target tokens as
/// text) the static file knows is built from its anchors' source rows by the rule.
pub fn guide_by_vectors(
    source: &Source<'_>,
    plan: &mut Plan,
    texts: &[String],
    vectors: &Vectors,
    rule: guide::Rule,
) -> Result<GuideReport> {
    let anchors = anchors(source.candidates(), vectors);
    let with: Vec<usize> = (0..texts.len())
        .filter(|&i| !plan.rows[i].source.is_copy())
        .filter(|&i| vectors.lookup(&texts[i]).is_some())
        .collect();
    let queries: Vec<f32> = with
        .iter()
        .flat_map(|&i| vectors.lookup(&texts[i]).unwrap_or(&[]).to_vec())
        .collect();
    let rule = rule.capped(anchors.dim);
    let weights = anchors.weights(&queries, &HashSet::new(), rule)?;
    let guided = set_guided(plan, &with, weights, &anchors);
    Ok(guide_report(rule, &anchors, guided))
}

/// Target tokens guided per round (bounds the memory of their donor rows).
const DONOR_ROUND: usize = 4096;

/// `--donor`: every row that is not a copy and whose token the donor knows (by its text) is
/// built from the source rows of anchors (source tokens the donor knows) by the rule. None when
/// the donor shares no token with the source.
pub fn guide_by_donor(
    source: &Source<'_>,
    plan: &mut Plan,
    tokens: &[String],
    donor: &crate::init::donor::Donor<'_>,
    rule: guide::Rule,
) -> Result<Option<GuideReport>> {
    let style: Style = source.tokenizer.style;
    let shared = donor.shared(source.vocab, style, source.vocab.size);
    if shared.is_empty() {
        return Ok(None);
    }
    let anchors = donor.anchors(source.vocab, &shared);
    let rule = rule.capped(donor.dim());
    let open: Vec<(usize, u32)> = (0..tokens.len())
        .filter(|&i| !plan.rows[i].source.is_copy())
        .filter_map(|i| donor.find_token(&tokens[i]).map(|d| (i, d)))
        .collect();
    let mut guided = 0;
    for round in open.chunks(DONOR_ROUND) {
        let queries: Vec<f32> = round.iter().flat_map(|&(_, d)| donor.row(d)).collect();
        let weights = anchors.weights(&queries, &HashSet::new(), rule)?;
        let at: Vec<usize> = round.iter().map(|&(i, _)| i).collect();
        guided += set_guided(plan, &at, weights, &anchors);
    }
    Ok(Some(guide_report(rule, &anchors, guided)))
}

/// Rows `at` become the combinations `weights` of anchors' source rows; how many did.
fn set_guided(
    plan: &mut Plan,
    at: &[usize],
    weights: Vec<Vec<(usize, f32)>>,
    anchors: &Anchors,
) -> usize {
    let mut guided = 0;
    for (&i, w) in at.iter().zip(weights) {
        if w.is_empty() {
            continue;
        }
        plan.rows[i] = matching::Row {
            source: RowSource::Weighted(w.iter().map(|&(k, wt)| (anchors.ids[k], wt)).collect()),
            method: matching::Origin::Guided,
        };
        guided += 1;
    }
    guided
}

fn guide_report(rule: guide::Rule, anchors: &Anchors, guided: usize) -> GuideReport {
    GuideReport {
        rule: rule.name().to_string(),
        k: match rule {
            guide::Rule::Omp { k } => Some(k),
            guide::Rule::Softmax => None,
        },
        description: rule.describe(),
        dim: anchors.dim,
        anchors: anchors.len(),
        guided,
    }
}

/// The fitted map's facts, for reports and metadata.
pub fn fit_summary(m: &LinearMap) -> FitSummary {
    FitSummary {
        identity: m.identity,
        alpha: m.alpha,
        lambda: m.lambda,
        fit_size: m.fit_size,
        validation_cosine: m.heldout_cosine,
        validation_cosine_plain: m.heldout_cosine_plain,
        scaled_to: m.target_norm,
    }
}

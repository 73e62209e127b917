//! Held-out scoring, shared by `score` and the transplant's `--report`: a seeded sample of source
//! tokens is treated as unknown (the source loses them: tokenizer, vocabulary, and their rows'
//! share of the mean fill and the std, [`crate::matching::holdout`]), the init engine
//! ([`super`]) builds their rows from that reduced source exactly as a transplant would, and
//! each row is compared with its true row ([`score`]): the cosine, where the true row ranks among
//! all source rows by cosine to the prediction (top-1, top-10, median rank), and the norm ratio.
//!
//! (Over 400 lines: the reduced source, the evaluation and the metric belong together.)

use super::{Method, Source};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::init::build::{self, RowSource};
use crate::linalg::{cosine, matmul_t, norm, Matrix};
use crate::load::vectors::Vectors;
use crate::load::vocab::{SourceVocab, TargetVocab};
use crate::matching::holdout::{self, Candidate};
use crate::matching::SourceTokenizer;
use crate::report::{FitSummary, MethodScore};
use rayon::prelude::*;
use std::collections::HashSet;

/// Source rows compared per matrix product (bounds memory: 8192 x samples similarities).
const BLOCK: usize = 8192;

fn normalized(v: &mut [f32]) {
    let n = norm(v);
    if n > 0.0 && n.is_finite() {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Scores predictions (`truth.len()` rows of `src.cols`, row-major) of the source rows `truth`,
/// ranking each true row among source rows 0..vocab_rows. A zero prediction has no direction:
/// cosine 0, ranked last.
pub fn score(
    method: &str,
    src: Matrix<'_>,
    vocab_rows: usize,
    truth: &[u32],
    preds: &[f32],
) -> Result<MethodScore> {
    let d = src.cols;
    let n = truth.len();
    let rows = vocab_rows.min(src.rows);
    let mut p = preds.to_vec();
    let mut cos = vec![0f32; n];
    let mut ratio = vec![0f64; n];
    let mut zero = vec![false; n];
    let mut t = vec![0f32; d];
    for i in 0..n {
        let pr = &mut p[i * d..(i + 1) * d];
        src.row_f32(truth[i] as usize, &mut t);
        let (np, nt) = (norm(pr), norm(&t));
        zero[i] = np == 0.0 || !np.is_finite();
        ratio[i] = if nt > 0.0 { (np / nt) as f64 } else { 0.0 };
        cos[i] = cosine(pr, &t);
        normalized(pr);
    }
    // Rank = 1 + the number of other source rows closer to the prediction than the true row.
    let mut above = vec![0usize; n];
    let mut block = vec![0f32; BLOCK.min(rows.max(1)) * d];
    for start in (0..rows).step_by(BLOCK) {
        let end = (start + BLOCK).min(rows);
        let b = &mut block[..(end - start) * d];
        b.par_chunks_mut(d.max(1)).enumerate().for_each(|(k, r)| {
            src.row_f32(start + k, r);
            normalized(r);
        });
        let sims = matmul_t(&p, b, d)?;
        above.par_iter_mut().enumerate().for_each(|(i, count)| {
            let row = &sims[i * (end - start)..(i + 1) * (end - start)];
            *count += row
                .iter()
                .enumerate()
                .filter(|&(k, s)| start + k != truth[i] as usize && *s > cos[i])
                .count();
        });
    }
    let ranks: Vec<f64> = (0..n)
        .map(|i| {
            if zero[i] {
                rows as f64
            } else {
                (above[i] + 1) as f64
            }
        })
        .collect();
    let share = |k: f64| {
        if n == 0 {
            0.0
        } else {
            ranks.iter().filter(|&&r| r <= k).count() as f64 / n as f64
        }
    };
    Ok(MethodScore {
        method: method.to_string(),
        tokens: n,
        mean_cosine: if n == 0 {
            0.0
        } else {
            cos.iter().map(|&c| c as f64).sum::<f64>() / n as f64
        },
        top1: share(1.0),
        top10: share(10.0),
        median_rank: median(ranks),
        norm_ratio: median(ratio),
    })
}

/// The held-out evaluation, shared by `score` and the transplant's `--report`.
pub struct Evaluation {
    pub candidates: usize,
    pub held_out: usize,
    pub scored: usize,
    pub in_target: Option<usize>,
    pub scores: Vec<MethodScore>,
    pub fit: Option<FitSummary>,
    pub auto: Option<crate::report::AutoChoice>,
    /// Methods left out, and why.
    pub notes: Vec<String>,
    /// Scored tokens the guide built (the rest were composed), and its anchors.
    pub guided: Option<usize>,
    pub anchors: usize,
    /// With `keep_rows`: what `--save-rows` writes.
    pub rows: Option<HeldOutRows>,
}

/// The rows a held-out evaluation built, method by method, and the held-out tokens.
pub struct HeldOutRows {
    /// Every held-out source id (the reduced source lacks them all), sorted.
    pub held_out: Vec<u32>,
    /// The scored tokens: source ids and texts, in row order.
    pub ids: Vec<u32>,
    pub texts: Vec<String>,
    /// Each method's rows (scored x dim, f32), in the order scored.
    pub methods: Vec<(String, Vec<f32>)>,
}

/// An auxiliary space as a guide.
#[derive(Clone, Copy)]
pub enum GuideSpace<'a> {
    Vectors(&'a Vectors),
    Donor(&'a crate::init::donor::Donor<'a>),
}

/// Settings of one evaluation.
pub struct EvalOptions<'a> {
    pub guide: Option<GuideSpace<'a>>,
    pub sample: usize,
    pub seed: u64,
    pub methods: &'a [Method],
    /// Target tokens: held-out tokens among them are preferred.
    pub prefer: Option<&'a HashSet<String>>,
    /// Keep each method's rows ([`Evaluation::rows`]).
    pub keep_rows: bool,
}

/// Held-out tokens treated as unknown: the source without them.
struct Reduced {
    tokenizer: SourceTokenizer,
    vocab: SourceVocab,
    held: HashSet<u32>,
    derived: super::Derived,
}

impl Reduced {
    fn new(full: &Source<'_>, held: HashSet<u32>) -> Result<Reduced> {
        let tokenizer = holdout::without(full.tokenizer, &held)?;
        let mut vocab = full.vocab.clone();
        vocab.ids.retain(|_, id| !held.contains(id));
        Ok(Reduced {
            tokenizer,
            vocab,
            held,
            derived: super::Derived::default(),
        })
    }

    fn source<'a>(&'a self, full: &Source<'a>) -> Source<'a> {
        Source {
            matrix: full.matrix,
            vocab: &self.vocab,
            tokenizer: &self.tokenizer,
            initializer_range: full.initializer_range,
            held_out: &self.held,
            derived: &self.derived,
        }
    }
}

/// Builds the rows `method` makes for the target `texts` from `source`, as a transplant would:
/// the plan, the fit, the guide, the builder (f32). None when the method cannot run here (too
/// little to fit on), with the reason in `notes`.
fn build(
    source: &Source<'_>,
    texts: &[String],
    method: Method,
    space: Option<GuideSpace<'_>>,
    seed: u64,
    ev: &mut Evaluation,
) -> Result<Option<Vec<f32>>> {
    let target = TargetVocab::from_words(texts.to_vec(), "held-out tokens");
    let mut plan = super::plan(source, &target, method);
    let fitting = match super::fit(source, &mut plan, texts, method, seed) {
        Ok(f) => f,
        // Too little to fit on (a tiny vocabulary): the method is left out, said why.
        Err(Error::NoEvidence(msg)) => {
            ev.notes.push(msg);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if let Method::Guide(rule) = method {
        let report = match space {
            Some(GuideSpace::Vectors(v)) => {
                Some(super::guide_by_vectors(source, &mut plan, texts, v, rule)?)
            }
            Some(GuideSpace::Donor(d)) => super::guide_by_donor(source, &mut plan, texts, d, rule)?,
            None => None,
        };
        if let Some(r) = report {
            ev.guided = Some(r.guided);
            ev.anchors = r.anchors;
        }
    }
    let sigma = super::sigma(source);
    let opts = super::options(
        source,
        method,
        Some(&sigma),
        &fitting,
        (DType::F32, seed, false),
    );
    if method == Method::ComposeFit {
        ev.fit = fitting.summary();
    }
    if fitting.auto.is_some() {
        ev.auto = fitting.auto.clone();
    }
    let mut rows: Vec<f32> = Vec::with_capacity(texts.len() * source.matrix.cols);
    let mut tmp = Vec::new();
    build::build_blocks(&plan.rows, source.matrix, &opts, |block| {
        tmp.resize(block.len() / 4, 0f32);
        DType::F32.decode(block, &mut tmp);
        rows.extend_from_slice(&tmp);
        Ok(())
    })
    .map_err(|e| Error::Invalid(format!("building held-out rows: {e}")))?;
    Ok(Some(rows))
}

/// Holds out a sample, rebuilds it with each method from the source without it, and scores the
/// results against the true rows.
pub fn run(full: &Source<'_>, cands: Vec<Candidate>, opts: &EvalOptions<'_>) -> Result<Evaluation> {
    let cands = super::ordered_candidates(cands, opts.seed, opts.prefer);
    let refs: Vec<&Candidate> = cands.iter().collect();
    let vocab_rows = full.vocab.size;
    // Hold out twice the sample (most candidates split), more if too few split; with a fitted
    // method, at most half of the candidates, so that the rest can be fitted on.
    let fits = opts
        .methods
        .iter()
        .any(|m| matches!(m, Method::ComposeFit | Method::Auto));
    let limit = if fits { refs.len() / 2 } else { refs.len() };
    let mut k = (opts.sample * 2).min(limit);
    let (k, held) = loop {
        let set: HashSet<u32> = refs[..k].iter().map(|c| c.id).collect();
        let dec = holdout::decompose(full.tokenizer, &refs[..k], &set, vocab_rows)?;
        if dec.len() >= opts.sample || k == limit {
            break (k, dec);
        }
        k = (k * 2).min(limit);
    };
    let reduced = Reduced::new(full, refs[..k].iter().map(|c| c.id).collect())?;
    let source = reduced.source(full);
    // Scored: the held-out tokens a transplant from the reduced source composes from 2 or more
    // pieces (not those it would copy from another token, e.g. `x` from `##x`).
    let texts: Vec<String> = held.iter().map(|h| h.text.clone()).collect();
    let base = super::plan(
        &source,
        &TargetVocab::from_words(texts.clone(), "held-out tokens"),
        Method::Compose,
    );
    let mut held: Vec<_> = held
        .into_iter()
        .zip(&base.rows)
        .filter(|(_, r)| matches!(&r.source, RowSource::Composed(p) if p.len() >= 2))
        .map(|(h, _)| h)
        .collect();
    held.truncate(opts.sample);
    if held.is_empty() {
        return Err(Error::NoEvidence(
            "no source token splits into 2 or more pieces when held out: nothing to score".into(),
        ));
    }
    let texts: Vec<String> = held.iter().map(|h| h.text.clone()).collect();
    let truth: Vec<u32> = held.iter().map(|h| h.id).collect();
    let mut ev = Evaluation {
        candidates: cands.len(),
        held_out: k,
        scored: held.len(),
        in_target: opts.prefer.map(|p| {
            held.iter()
                .filter(|h| p.contains(&h.text) || p.contains(h.text.trim()))
                .count()
        }),
        scores: Vec::new(),
        fit: None,
        auto: None,
        notes: Vec::new(),
        guided: None,
        anchors: 0,
        rows: None,
    };
    let mut kept: Vec<(String, Vec<f32>)> = Vec::new();
    for &m in opts.methods {
        if matches!(m, Method::Guide(_)) && opts.guide.is_none() {
            continue;
        }
        let Some(preds) = build(&source, &texts, m, opts.guide, opts.seed, &mut ev)? else {
            continue;
        };
        ev.scores
            .push(score(m.name(), full.matrix, vocab_rows, &truth, &preds)?);
        if opts.keep_rows {
            kept.push((m.name().to_string(), preds));
        }
    }
    if opts.keep_rows {
        let mut t = vec![0f32; truth.len() * full.matrix.cols];
        for (id, r) in truth
            .iter()
            .zip(t.chunks_exact_mut(full.matrix.cols.max(1)))
        {
            full.matrix.row_f32(*id as usize, r);
        }
        kept.push(("truth".into(), t));
        let mut held_out: Vec<u32> = reduced.held.iter().copied().collect();
        held_out.sort_unstable();
        ev.rows = Some(HeldOutRows {
            held_out,
            ids: truth,
            texts,
            methods: kept,
        });
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn perfect_predictions_rank_first_and_noise_ranks_lower() {
        // Four orthogonal-ish rows in 3-D.
        let rows = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.7, 0.7, 0.0];
        let b = bytes(&rows);
        let m = Matrix {
            dtype: DType::F32,
            rows: 4,
            cols: 3,
            data: &b,
        };
        let s = score("exact", m, 4, &[0, 3], &[2.0, 0.0, 0.0, 0.7, 0.7, 0.0]).unwrap();
        assert!((s.mean_cosine - 1.0).abs() < 1e-6);
        assert_eq!((s.top1, s.top10, s.median_rank), (1.0, 1.0, 1.0));
        assert!((s.norm_ratio - 1.5).abs() < 1e-6);
        // Predicting row 1 for token 0: rank of row 0 is 3 (rows 1 and 3 are closer).
        let s = score("off", m, 4, &[0], &[0.0, 1.0, 0.0]).unwrap();
        assert_eq!((s.top1, s.median_rank), (0.0, 3.0));
        let s = score("zeros", m, 4, &[0], &[0.0, 0.0, 0.0]).unwrap();
        assert_eq!((s.mean_cosine, s.median_rank), (0.0, 4.0));
    }
}

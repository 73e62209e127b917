//! `embed-transplant score`: the held-out quality of every init method. A seeded sample of source
//! tokens is treated as unknown (the tokenizer rebuilt without them, see
//! [`crate::matching::holdout`]), each is re-initialised by every method from its pieces, and the
//! result is compared with its true row ([`crate::quality`]). Also the fit data of
//! `--init compose-fit`, for the transplant.

use crate::align::{self, Matrix};
use crate::checkpoint;
use crate::compose_fit::{self, FitSummary, LinearMap};
use crate::config::ScoreConfig;
use crate::error::{Error, Result};
use crate::guide::{self, Anchors};
use crate::hub;
use crate::matching::holdout::{self, Candidate, Decomposed};
use crate::matching::SourceTokenizer;
use crate::output::Output;
use crate::quality::{self, MethodScore};
use crate::vectors::{self, Vectors};
use crate::vocab;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::HashSet;

/// Tokens the compose-fit map is fitted on, at most (a random subset beyond): enough for a
/// dim x dim map up to 1024 dims, and seconds, not minutes, on 250k-token vocabularies.
pub const FIT_MAX: usize = 50_000;
/// The fit tokens are decomposed in this many groups, each with the tokenizer rebuilt without
/// that group only: the pieces stay as long as an unknown word's would be.
const FIT_FOLDS: usize = 4;

/// The methods `score` compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Compose,
    ComposeFit,
    Mean,
    Random,
    Zeros,
    /// An auxiliary space (static vectors or a donor) as a guide, softmax rule
    /// ([`crate::guide`]); composition where the token has no auxiliary vector.
    Guide,
    /// The same guide with the OMP rule.
    GuideOmp,
    /// Compose with pieces weighted by length
    /// ([`crate::matching::SourceTokenizer::length_weights`]).
    ComposeLength,
}

impl Method {
    pub const ALL: [Method; 6] = [
        Method::Compose,
        Method::ComposeLength,
        Method::ComposeFit,
        Method::Mean,
        Method::Random,
        Method::Zeros,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Compose => "compose",
            Method::ComposeFit => "compose-fit",
            Method::Mean => "mean",
            Method::Random => "random",
            Method::Zeros => "zeros",
            Method::Guide => "guide",
            Method::GuideOmp => "guide-omp",
            Method::ComposeLength => "compose-length",
        }
    }

    /// The method that scores a transplant's `--init`.
    pub fn of_init(init: align::Init) -> Method {
        match init {
            align::Init::Compose => Method::Compose,
            align::Init::ComposeFit => Method::ComposeFit,
            align::Init::ComposeLength => Method::ComposeLength,
            align::Init::Fill(align::FillKind::Mean) => Method::Mean,
            align::Init::Fill(align::FillKind::Random) => Method::Random,
            align::Init::Fill(align::FillKind::Zeros) => Method::Zeros,
        }
    }
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

/// Anchors: held-out candidates (whole words) the static file has a vector for.
pub fn anchors(cands: &[Candidate], vectors: &Vectors) -> Anchors {
    let mut a = Anchors::new(vectors.dim);
    for c in cands {
        if let Some(v) = vectors.lookup(&c.text) {
            a.push(c.id, &c.text, v);
        }
    }
    a
}

/// The held-out evaluation, shared by `score` and the transplant's `--report`.
pub struct Evaluation {
    pub candidates: usize,
    pub held_out: usize,
    pub scored: usize,
    pub in_target: Option<usize>,
    pub scores: Vec<MethodScore>,
    pub fit: Option<FitSummary>,
    /// Methods left out, and why.
    pub notes: Vec<String>,
    /// Scored tokens the guide had a static vector for (the rest were composed).
    pub guided: Option<usize>,
}

/// An auxiliary space as a guide: the anchors, the auxiliary vector of a held-out token (None
/// when the space has none), and OMP's k.
pub struct Guide<'a> {
    pub anchors: &'a Anchors,
    pub query: &'a (dyn Fn(&Decomposed) -> Option<Vec<f32>> + Sync),
    pub omp_k: usize,
}

/// Settings of one evaluation.
pub struct EvalOptions<'a> {
    pub guide: Option<Guide<'a>>,
    pub sample: usize,
    pub seed: u64,
    pub sigma: f32,
    pub methods: &'a [Method],
    /// Target tokens: held-out tokens among them are preferred.
    pub prefer: Option<&'a HashSet<String>>,
}

pub fn run(cfg: &ScoreConfig, out: &Output) -> Result<ScoreReport> {
    let start = std::time::Instant::now();
    let target = match &cfg.vocab {
        Some(p) => Some(vocab::read_target(p)?),
        None => None,
    };
    let prefer: Option<HashSet<String>> = target.map(|t| t.tokens.into_iter().collect());
    let files = hub::resolve(&cfg.model, &cfg.hub)?;
    let side = super::source_side(&files, cfg.source_vocab.as_deref(), &cfg.model, out)?;
    let tensors = checkpoint::list_tensors(&files.weights, files.fetcher.as_ref())?;
    let choice = checkpoint::choose_embedding(&files.weights, &tensors, cfg.tensor.as_deref())?;
    let emb = checkpoint::load_embedding(&files.weights, &choice.name, files.fetcher.as_ref())?;
    super::check_rows(&emb.file, &emb.name, emb.rows, &side.vocab)?;
    let src = Matrix {
        dtype: emb.dtype,
        rows: emb.rows,
        cols: emb.cols,
        data: emb.bytes(),
    };
    let sigma = sigma(side.config.initializer_range, src, side.vocab.size);
    let cands = holdout::candidates(&side.tokenizer, side.vocab.size);
    let vectors = match &cfg.aux_vectors {
        Some(p) => {
            let wanted = vectors::Wanted::new(cands.iter().flat_map(|c| Vectors::forms(&c.text)));
            Some(vectors::read(p, &|w: &str| wanted.contains(w))?)
        }
        None => None,
    };
    let donor_files = match &cfg.donor {
        Some(d) => Some(super::donor::resolve(d, &cfg.hub)?),
        None => None,
    };
    let loaded = match (&cfg.donor, &donor_files) {
        (Some(d), Some(f)) => Some(super::donor::load(d, f, out)?),
        _ => None,
    };
    let donor = loaded.as_ref().map(|l| l.donor());
    let mut cands = cands;
    // With a donor: its row of every source token it knows; only those tokens are scored.
    let shared: std::collections::HashMap<u32, u32> = match &donor {
        Some(d) => {
            let shared = d.shared(&side.vocab, side.tokenizer.style, side.vocab.size);
            if shared.is_empty() {
                return Err(super::donor::no_shared(
                    cfg.donor.as_deref().unwrap_or(""),
                    &cfg.model,
                ));
            }
            shared.into_iter().collect()
        }
        None => Default::default(),
    };
    let anchors = match (&vectors, &donor) {
        (Some(v), _) => Some(anchors(&cands, v)),
        (None, Some(d)) => {
            let mut pairs: Vec<(u32, u32)> = shared.iter().map(|(s, d)| (*s, *d)).collect();
            pairs.sort_unstable();
            cands.retain(|c| shared.contains_key(&c.id));
            Some(d.anchors(&side.vocab, &pairs))
        }
        _ => None,
    };
    let query = |h: &Decomposed| -> Option<Vec<f32>> {
        match (&vectors, &donor) {
            (Some(v), _) => v.lookup(&h.text).map(<[f32]>::to_vec),
            (None, Some(d)) => shared.get(&h.id).map(|&id| d.row(id)),
            _ => None,
        }
    };
    let aux_dim = anchors.as_ref().map_or(0, |a| a.dim);
    let omp_k = match (guide::Rule::Omp { k: cfg.guide_k }).capped(aux_dim) {
        guide::Rule::Omp { k } => k,
        guide::Rule::Softmax => cfg.guide_k,
    };
    let mut methods = Method::ALL.to_vec();
    if anchors.is_some() {
        methods.extend([Method::Guide, Method::GuideOmp]);
    }
    let ev = evaluate(
        &side.tokenizer,
        src,
        side.vocab.size,
        cands,
        &EvalOptions {
            guide: anchors.as_ref().map(|a| Guide {
                anchors: a,
                query: &query,
                omp_k,
            }),
            sample: cfg.sample,
            seed: cfg.seed,
            sigma,
            methods: &methods,
            prefer: prefer.as_ref(),
        },
    )
    .map_err(|e| match e {
        Error::Invalid(m) => Error::Invalid(format!("{}: {m}", cfg.model)),
        e => e,
    })?;
    for n in &ev.notes {
        out.warn(&format!("{}: {n}", cfg.model));
    }
    if ev.scored < cfg.sample {
        out.warn(&format!(
            "{}: only {} source token(s) split into 2+ pieces when held out (--sample {})",
            cfg.model, ev.scored, cfg.sample
        ));
    }
    Ok(ScoreReport {
        model: files.provenance.model.clone(),
        tensor: emb.name.clone(),
        source_shape: [emb.rows, emb.cols],
        candidates: ev.candidates,
        held_out: ev.held_out,
        scored: ev.scored,
        in_target: ev.in_target,
        seed: cfg.seed,
        sigma,
        scores: ev.scores,
        compose_fit: ev.fit,
        guide: anchors.as_ref().map(|a| GuideSummary {
            file: match (&vectors, &cfg.donor) {
                (Some(v), _) => v.path.display().to_string(),
                (None, d) => d.clone().unwrap_or_default(),
            },
            donor: donor.is_some(),
            vectors_in_file: match (&vectors, &donor) {
                (Some(v), _) => v.total,
                (None, d) => d.as_ref().map_or(0, |d| d.len()),
            },
            dim: a.dim,
            anchors: a.len(),
            guided: ev.guided.unwrap_or(0),
            top_k: guide::TOP_K,
            temperature: guide::TEMPERATURE,
            omp_k,
        }),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The σ of random rows: config.json's initializer_range when plausible, else the source std.
pub fn sigma(initializer_range: Option<f64>, src: Matrix<'_>, vocab_rows: usize) -> f32 {
    match initializer_range {
        Some(r) if (1e-8..=10.0).contains(&r) => r as f32,
        _ => align::std_of(src, vocab_rows),
    }
}

/// Mean of each token's piece rows, n x dim.
fn piece_means(src: Matrix<'_>, items: &[Decomposed]) -> Vec<f32> {
    let d = src.cols;
    let mut out = vec![0f32; items.len() * d];
    let mut tmp = vec![0f32; d];
    for (it, o) in items.iter().zip(out.chunks_exact_mut(d.max(1))) {
        for &p in &it.pieces {
            src.row_f32(p as usize, &mut tmp);
            o.iter_mut().zip(&tmp).for_each(|(a, t)| *a += t);
        }
        let n = it.pieces.len().max(1) as f32;
        o.iter_mut().for_each(|a| *a /= n);
    }
    out
}

/// Fits the compose-fit map on `fit` candidates (at most [`FIT_MAX`], in the given order), each
/// decomposed with the tokenizer rebuilt without its group and without `exclude`.
pub fn fit_map(
    tok: &SourceTokenizer,
    src: Matrix<'_>,
    vocab_rows: usize,
    fit: &[&Candidate],
    exclude: &HashSet<u32>,
    seed: u64,
) -> Result<LinearMap> {
    let fit = &fit[..fit.len().min(FIT_MAX)];
    let fold = fit.len().div_ceil(FIT_FOLDS).max(1);
    let mut pairs: Vec<Decomposed> = Vec::new();
    for group in fit.chunks(fold) {
        let mut held = exclude.clone();
        held.extend(group.iter().map(|c| c.id));
        pairs.extend(holdout::decompose(tok, group, &held, vocab_rows)?);
    }
    let x = piece_means(src, &pairs);
    let d = src.cols;
    let mut y = vec![0f32; pairs.len() * d];
    for (p, r) in pairs.iter().zip(y.chunks_exact_mut(d.max(1))) {
        src.row_f32(p.id as usize, r);
    }
    compose_fit::fit(&x, &y, d, seed)
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

/// Holds out a sample, re-initialises it with each method, and scores the results.
pub fn evaluate(
    tok: &SourceTokenizer,
    src: Matrix<'_>,
    vocab_rows: usize,
    cands: Vec<Candidate>,
    opts: &EvalOptions<'_>,
) -> Result<Evaluation> {
    let cands = ordered_candidates(cands, opts.seed, opts.prefer);
    let refs: Vec<&Candidate> = cands.iter().collect();
    // Hold out twice the sample (most candidates split), more if too few split; with
    // compose-fit, at most half of the candidates, so that the rest can be fitted on.
    let limit = if opts.methods.contains(&Method::ComposeFit) {
        refs.len() / 2
    } else {
        refs.len()
    };
    let mut k = (opts.sample * 2).min(limit);
    let (k, mut held) = loop {
        let set: HashSet<u32> = refs[..k].iter().map(|c| c.id).collect();
        let dec = holdout::decompose(tok, &refs[..k], &set, vocab_rows)?;
        if dec.len() >= opts.sample || k == limit {
            break (k, dec);
        }
        k = (k * 2).min(limit);
    };
    held.truncate(opts.sample);
    if held.is_empty() {
        return Err(Error::Invalid(
            "no source token splits into 2 or more pieces when held out: nothing to score".into(),
        ));
    }
    let held_set: HashSet<u32> = refs[..k].iter().map(|c| c.id).collect();
    let truth: Vec<u32> = held.iter().map(|h| h.id).collect();
    let d = src.cols;
    let means = piece_means(src, &held);
    let mut fit = None;
    let mut guided = None;
    let mut notes = Vec::new();
    let mut scores = Vec::new();
    for &m in opts.methods {
        let preds: Vec<f32> = match m {
            Method::Compose => means.clone(),
            Method::ComposeFit => {
                match fit_map(tok, src, vocab_rows, &refs[k..], &held_set, opts.seed) {
                    Ok(map) => {
                        fit = Some(map.summary());
                        map.apply_all(&means)?
                    }
                    // Too little to fit on (a tiny vocabulary): the method is left out, said why.
                    Err(Error::Invalid(msg)) => {
                        notes.push(msg);
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            Method::Mean => {
                let mu = align::mean_row(src, vocab_rows);
                mu.repeat(held.len())
            }
            Method::Random => {
                let normal = Normal::new(0.0f32, opts.sigma.max(0.0)).ok();
                (0..held.len())
                    .flat_map(|i| {
                        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
                        rng.set_stream(i as u64);
                        (0..d)
                            .map(|_| normal.map_or(0.0, |n| n.sample(&mut rng)))
                            .collect::<Vec<f32>>()
                    })
                    .collect()
            }
            Method::Zeros => vec![0.0; held.len() * d],
            Method::ComposeLength => {
                let mut out = vec![0f32; held.len() * d];
                let mut tmp = vec![0f32; d];
                for (h, o) in held.iter().zip(out.chunks_exact_mut(d.max(1))) {
                    for (&p, w) in h.pieces.iter().zip(tok.length_weights(&h.pieces)) {
                        src.row_f32(p as usize, &mut tmp);
                        o.iter_mut().zip(&tmp).for_each(|(a, t)| *a += w * t);
                    }
                }
                out
            }
            Method::Guide | Method::GuideOmp => {
                let Some(g) = &opts.guide else { continue };
                let rule = match m {
                    Method::GuideOmp => guide::Rule::Omp { k: g.omp_k },
                    _ => guide::Rule::Softmax,
                };
                let mut preds = means.clone();
                let mut with: Vec<usize> = Vec::new();
                let mut queries: Vec<f32> = Vec::new();
                for (i, h) in held.iter().enumerate() {
                    if let Some(q) = (g.query)(h) {
                        with.push(i);
                        queries.extend(q);
                    }
                }
                // Held-out tokens are never anchors.
                let weights = g.anchors.weights(&queries, &held_set, rule)?;
                let mut tmp = vec![0f32; d];
                for (&i, w) in with.iter().zip(&weights) {
                    if w.is_empty() {
                        continue;
                    }
                    let p = &mut preds[i * d..(i + 1) * d];
                    p.fill(0.0);
                    for &(k, wt) in w {
                        src.row_f32(g.anchors.ids[k] as usize, &mut tmp);
                        p.iter_mut().zip(&tmp).for_each(|(a, t)| *a += wt * t);
                    }
                }
                guided = Some(with.len());
                preds
            }
        };
        scores.push(quality::score(m.name(), src, vocab_rows, &truth, &preds)?);
    }
    Ok(Evaluation {
        candidates: cands.len(),
        held_out: k,
        scored: held.len(),
        in_target: opts.prefer.map(|p| {
            held.iter()
                .filter(|h| p.contains(&h.text) || p.contains(h.text.trim()))
                .count()
        }),
        scores,
        fit,
        notes,
        guided,
    })
}

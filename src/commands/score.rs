//! `embed-transplant score`: the held-out quality of every init method. A seeded sample of source
//! tokens is treated as unknown: the source loses them (tokenizer, vocabulary, and their rows'
//! share of the mean and the std, [`crate::matching::holdout`]), the init engine
//! ([`crate::init`]) builds their rows from that reduced source exactly as a transplant would,
//! and the result is compared with their true rows ([`crate::init::heldout`]).

use super::Staged;
use crate::config::ScoreConfig;
use crate::console::Output;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::init::build::{self, RowSource};
use crate::init::guide;
use crate::init::heldout;
use crate::init::{self, Method, Source};
use crate::linalg::Matrix;
use crate::load::checkpoint;
use crate::load::hub;
use crate::load::vectors::{self, Vectors};
use crate::load::vocab::{self, SourceVocab, TargetVocab};
use crate::matching::holdout::{self, Candidate};
use crate::matching::SourceTokenizer;
use crate::report::{FitSummary, GuideSummary, MethodScore, ScoreReport};
use crate::write::Batch;
use std::collections::HashSet;

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

pub fn run(cfg: &ScoreConfig, out: &Output) -> Result<Staged<ScoreReport>> {
    let start = std::time::Instant::now();
    let target = match &cfg.vocab {
        Some(p) => Some(vocab::read_target(p)?),
        None => None,
    };
    let prefer: Option<HashSet<String>> = target.map(|t| t.tokens.into_iter().collect());
    let files = hub::resolve(&cfg.model, &cfg.hub)?;
    let donor_files = match &cfg.donor {
        Some(d) => Some(super::donor::resolve(d, &cfg.hub)?),
        None => None,
    };
    if let Some(t) = &cfg.save_rows {
        let mut inputs = cfg.local_inputs();
        inputs.extend(files.inputs());
        if let Some(f) = &donor_files {
            inputs.extend(f.inputs());
        }
        t.check(&inputs)?;
    }
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
    let mut cands = holdout::candidates(&side.tokenizer, side.vocab.size);
    let vectors = match &cfg.aux_vectors {
        Some(p) => {
            let wanted = vectors::Wanted::new(cands.iter().flat_map(|c| Vectors::forms(&c.text)));
            Some(vectors::read(p, &|w: &str| wanted.contains(w))?)
        }
        None => None,
    };
    let loaded = match (&cfg.donor, &donor_files) {
        (Some(d), Some(f)) => Some(super::donor::load(d, f, out)?),
        _ => None,
    };
    let donor = loaded.as_ref().map(|l| l.donor());
    // With a donor: only source tokens it knows are held out and scored.
    if let Some(d) = &donor {
        let shared: HashSet<u32> = d
            .shared(&side.vocab, side.tokenizer.style, side.vocab.size)
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        if shared.is_empty() {
            return Err(super::donor::no_shared(
                cfg.donor.as_deref().unwrap_or(""),
                &cfg.model,
            ));
        }
        cands.retain(|c| shared.contains(&c.id));
    }
    let space = match (&vectors, &donor) {
        (Some(v), _) => Some(GuideSpace::Vectors(v)),
        (None, Some(d)) => Some(GuideSpace::Donor(d)),
        _ => None,
    };
    let aux_dim = match space {
        Some(GuideSpace::Vectors(v)) => v.dim,
        Some(GuideSpace::Donor(d)) => d.dim(),
        None => 0,
    };
    let omp_k = match (guide::Rule::Omp { k: cfg.guide_k }).capped(aux_dim) {
        guide::Rule::Omp { k } => k,
        guide::Rule::Softmax => cfg.guide_k,
    };
    let mut methods = Method::SCORED.to_vec();
    if space.is_some() {
        methods.extend([
            Method::Guide(guide::Rule::Softmax),
            Method::Guide(guide::Rule::Omp { k: cfg.guide_k }),
        ]);
    }
    let source = Source {
        matrix: src,
        vocab: &side.vocab,
        tokenizer: &side.tokenizer,
        initializer_range: side.config.initializer_range,
        held_out: &HashSet::new(),
    };
    let ev = evaluate(
        &source,
        cands,
        &EvalOptions {
            guide: space,
            sample: cfg.sample,
            seed: cfg.seed,
            methods: &methods,
            prefer: prefer.as_ref(),
            keep_rows: cfg.save_rows.is_some(),
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
    let sigma = init::sigma(&source).value;
    let mut batch = Batch::new();
    if let (Some(t), Some(rows)) = (&cfg.save_rows, &ev.rows) {
        let bytes = rows_file(rows, src.cols, cfg.seed)
            .map_err(|e| Error::file(&t.path, format!("serialising the rows: {e}")))?;
        batch.file(t, Some(bytes.len() as u64), |w| w.write_all(&bytes))?;
    }
    let report = ScoreReport {
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
        auto: ev.auto,
        guide: space.map(|g| GuideSummary {
            file: match (&vectors, &cfg.donor) {
                (Some(v), _) => v.path.display().to_string(),
                (None, d) => d.clone().unwrap_or_default(),
            },
            donor: donor.is_some(),
            vectors_in_file: match g {
                GuideSpace::Vectors(v) => v.total,
                GuideSpace::Donor(d) => d.len(),
            },
            dim: aux_dim,
            anchors: ev.anchors,
            guided: ev.guided.unwrap_or(0),
            top_k: guide::TOP_K,
            temperature: guide::TEMPERATURE,
            omp_k,
        }),
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok(Staged { report, batch })
}

/// `--save-rows`: a safetensors file of each method's rows (named by the method), the true rows
/// (`truth`), and in its metadata the scored tokens (`ids`, `tokens`) and every held-out id
/// (`held_out`), as JSON lists.
fn rows_file(rows: &HeldOutRows, dim: usize, seed: u64) -> std::result::Result<Vec<u8>, String> {
    use safetensors::tensor::{Dtype, TensorView};
    let n = rows.ids.len();
    let bytes: Vec<(String, Vec<u8>)> = rows
        .methods
        .iter()
        .map(|(name, v)| (name.clone(), bytemuck::cast_slice(v).to_vec()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(name, b)| {
            TensorView::new(Dtype::F32, vec![n, dim], b)
                .map(|t| (name.clone(), t))
                .map_err(|e| e.to_string())
        })
        .collect::<std::result::Result<_, _>>()?;
    let meta: std::collections::HashMap<String, String> = [
        ("format".to_string(), "pt".to_string()),
        ("ids".into(), serde_json::json!(rows.ids).to_string()),
        ("tokens".into(), serde_json::json!(rows.texts).to_string()),
        (
            "held_out".into(),
            serde_json::json!(rows.held_out).to_string(),
        ),
        ("seed".into(), seed.to_string()),
    ]
    .into_iter()
    .collect();
    safetensors::serialize(views, Some(meta)).map_err(|e| e.to_string())
}

/// Held-out tokens treated as unknown: the source without them.
struct Reduced {
    tokenizer: SourceTokenizer,
    vocab: SourceVocab,
    held: HashSet<u32>,
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
        })
    }

    fn source<'a>(&'a self, full: &Source<'a>) -> Source<'a> {
        Source {
            matrix: full.matrix,
            vocab: &self.vocab,
            tokenizer: &self.tokenizer,
            initializer_range: full.initializer_range,
            held_out: &self.held,
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
    let mut plan = init::plan(source, &target, method);
    let fitting = match init::fit(source, &mut plan, texts, method, seed) {
        Ok(f) => f,
        // Too little to fit on (a tiny vocabulary): the method is left out, said why.
        Err(Error::Invalid(msg)) => {
            ev.notes.push(msg);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if let Method::Guide(rule) = method {
        let report = match space {
            Some(GuideSpace::Vectors(v)) => {
                Some(init::guide_by_vectors(source, &mut plan, texts, v, rule)?)
            }
            Some(GuideSpace::Donor(d)) => init::guide_by_donor(source, &mut plan, texts, d, rule)?,
            None => None,
        };
        if let Some(r) = report {
            ev.guided = Some(r.guided);
            ev.anchors = r.anchors;
        }
    }
    let sigma = init::sigma(source);
    let opts = init::options(
        source,
        method,
        Some(&sigma),
        &fitting,
        (DType::F32, seed, false),
    );
    if fitting.summary.is_some() && method == Method::ComposeFit {
        ev.fit = fitting.summary.clone();
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
pub fn evaluate(
    full: &Source<'_>,
    cands: Vec<Candidate>,
    opts: &EvalOptions<'_>,
) -> Result<Evaluation> {
    let cands = init::ordered_candidates(cands, opts.seed, opts.prefer);
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
    let base = init::plan(
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
        return Err(Error::Invalid(
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
        ev.scores.push(heldout::score(
            m.name(),
            full.matrix,
            vocab_rows,
            &truth,
            &preds,
        )?);
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

//! `embed-transplant score`: resolves the model (and guide), runs the held-out evaluation of
//! every init method ([`crate::init::heldout`]) and stages `--save-rows`.

use super::Staged;
use crate::config::ScoreConfig;
use crate::console::Console;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::init::guide;
use crate::init::heldout;
use crate::init::{self, Method, Source};
use crate::linalg::Matrix;
use crate::load::checkpoint;
use crate::load::hub;
use crate::load::vectors::{self, Vectors};
use crate::load::vocab;
use crate::matching::holdout;
use crate::report::{GuideSummary, ScoreReport};
use crate::write::{Batch, Target, TensorOut};
use std::collections::{BTreeMap, HashSet};

pub fn run(cfg: &ScoreConfig, out: &Console) -> Result<Staged<ScoreReport>> {
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
        (Some(v), _) => Some(heldout::GuideSpace::Vectors(v)),
        (None, Some(d)) => Some(heldout::GuideSpace::Donor(d)),
        _ => None,
    };
    let aux_dim = match space {
        Some(heldout::GuideSpace::Vectors(v)) => v.dim,
        Some(heldout::GuideSpace::Donor(d)) => d.dim(),
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
        derived: &init::Derived::default(),
    };
    let ev = heldout::run(
        &source,
        cands,
        &heldout::EvalOptions {
            guide: space,
            sample: cfg.sample,
            seed: cfg.seed,
            methods: &methods,
            prefer: prefer.as_ref(),
            keep_rows: cfg.save_rows.is_some(),
        },
    )
    .map_err(|e| match e {
        Error::Invalid(m) | Error::NoEvidence(m) => Error::Invalid(format!("{}: {m}", cfg.model)),
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
        stage_rows(&mut batch, t, rows, src.cols, cfg.seed)?;
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
                heldout::GuideSpace::Vectors(v) => v.total,
                heldout::GuideSpace::Donor(d) => d.len(),
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
/// (`held_out`), as JSON lists. Written by the batch's own tensor writer, straight from the rows.
fn stage_rows(
    batch: &mut Batch,
    target: &Target,
    rows: &heldout::HeldOutRows,
    dim: usize,
    seed: u64,
) -> Result<()> {
    let tensors: Vec<TensorOut<'_>> = rows
        .methods
        .iter()
        .map(|(name, v)| TensorOut {
            name,
            dtype: DType::F32,
            shape: vec![rows.ids.len(), dim],
            data: bytemuck::cast_slice(v),
        })
        .collect();
    let meta = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        ("ids".into(), serde_json::json!(rows.ids).to_string()),
        ("tokens".into(), serde_json::json!(rows.texts).to_string()),
        (
            "held_out".into(),
            serde_json::json!(rows.held_out).to_string(),
        ),
        ("seed".into(), seed.to_string()),
    ]);
    batch.tensors(target, &tensors, &meta)
}

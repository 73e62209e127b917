//! `embed-transplant` (the main job): resolve the model, read its embedding, build the new matrix
//! for the target vocabulary, stage the output (and report) files for the caller to commit.

use super::stage;
use super::Staged;
use crate::config::TransplantConfig;
use crate::console::Console;
use crate::error::{Error, Result};
use crate::init::build::{self};
use crate::init::heldout;
use crate::init::{self, Method, Source};
use crate::linalg::Matrix;
use crate::load::checkpoint;
use crate::load::hub;
use crate::load::vectors::{self, Vectors};
use crate::load::vocab::{self};
use crate::matching::Plan;
use crate::report::ReportScore;
use crate::report::{self, TransplantReport};
use crate::write::Batch;
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// Held-out tokens scored for `--report`.
const REPORT_SAMPLE: usize = 2000;

pub fn run(cfg: &TransplantConfig, out: &Console) -> Result<Staged<TransplantReport>> {
    let start = Instant::now();
    let mut timings: BTreeMap<String, f64> = BTreeMap::new();
    let mut lap = Instant::now();
    let mut mark = |name: &str| {
        timings.insert(name.to_string(), lap.elapsed().as_secs_f64());
        lap = Instant::now();
    };
    // A tokenizer.json target: its ids are the rows; with --emit-model it becomes the model's
    // tokenizer (the way to replace a byte-level BPE vocabulary).
    let (target, target_tokenizer) = if vocab::is_tokenizer_json(&cfg.vocab) {
        if cfg.emit.as_ref().is_some_and(|e| e.extend) {
            return Err(Error::Invalid(format!(
                "{}: --extend appends the words of a word list, and this is a tokenizer.json; drop --extend to give the model this tokenizer",
                cfg.vocab.display()
            )));
        }
        let (t, tj) = vocab::read_target_tokenizer(&cfg.vocab)?;
        (t, cfg.emit.is_some().then_some(tj))
    } else {
        (vocab::read_target(&cfg.vocab)?, None)
    };
    // Its roles (bos, eos, pad, ...) come from the tokenizer_config.json beside it, if any.
    let target_tokenizer_config = match (&target_tokenizer, cfg.vocab.parent()) {
        (Some(_), Some(dir)) => {
            let p = dir.join("tokenizer_config.json");
            match p.is_file() {
                true => Some(crate::bounded::read_json_object(&p)?),
                false => None,
            }
        }
        _ => None,
    };
    super::warn_target(out, &target);
    mark("read_target_vocab");
    let files = hub::resolve(&cfg.model, &cfg.hub)?;
    let donor_files = match &cfg.donor {
        Some(d) => Some(super::donor::resolve(d, &cfg.hub)?),
        None => None,
    };
    // Now that the model's (and donor's) files are known: no output may name one of them.
    let mut inputs = cfg.local_inputs();
    inputs.extend(files.inputs());
    if let Some(f) = &donor_files {
        inputs.extend(f.inputs());
    }
    if cfg.write_matrix {
        cfg.output.check(&inputs)?;
    }
    if let Some(e) = &cfg.emit {
        e.dir.check(&inputs)?;
    }
    for t in [&cfg.report, &cfg.plot].into_iter().flatten() {
        t.check(&inputs)?;
    }
    mark("resolve_model");
    let side = super::source_side(&files, cfg.source_vocab.as_deref(), &cfg.model, out)?;
    let (source, model_cfg, tokenizer) = (side.vocab, side.config, side.tokenizer);

    let tensors = checkpoint::list_tensors(&files.weights, files.fetcher.as_ref())?;
    let choice = checkpoint::choose_embedding(&files.weights, &tensors, cfg.tensor.as_deref())?;
    mark("load_source_vocab");
    // A shard may still be downloaded here, with hf-hub's own bar: no spinner over it.
    let single_file = matches!(
        files.weights,
        checkpoint::Weights::Safetensors(_) | checkpoint::Weights::Pytorch(_)
    );
    let spin = out.spinner(
        cfg.progress && single_file,
        &format!(
            "reading tensor `{}` from {}",
            choice.name,
            files
                .weights
                .path()
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        ),
    );
    let emb = checkpoint::load_embedding(&files.weights, &choice.name, files.fetcher.as_ref())?;
    super::check_rows(&emb.file, &emb.name, emb.rows, &source)?;
    let src = Matrix {
        dtype: emb.dtype,
        rows: emb.rows,
        cols: emb.cols,
        data: emb.bytes(),
    };
    let bad_rows = src.nonfinite_rows();
    if let Some(&first) = bad_rows.first() {
        let msg = format!(
            "{} row(s) hold NaN or infinity (first: row {first})",
            bad_rows.len()
        );
        if cfg.strict {
            return Err(Error::tensor(&emb.file, &emb.name, msg));
        }
        out.warn(&format!(
            "tensor `{}` in {}: {msg}",
            emb.name,
            emb.file.display()
        ));
    }

    let out_dtype = cfg.dtype.unwrap_or(emb.dtype);
    let no_held_out = HashSet::new();
    let engine = Source {
        matrix: src,
        vocab: &source,
        tokenizer: &tokenizer,
        initializer_range: model_cfg.initializer_range,
        held_out: &no_held_out,
        derived: &init::Derived::default(),
    };
    let sigma = (cfg.init.fill() == Method::Random).then(|| init::sigma(&engine));
    if let Some(r) = sigma.as_ref().and_then(|s| s.implausible) {
        out.warn(&format!(
            "{}: initializer_range {r} is not a plausible standard deviation; random rows use the source matrix's std {} instead",
            files.config.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "config.json".into()),
            sigma.as_ref().map_or(0.0, |s| s.value)
        ));
    }
    let fill_name = cfg.init.fill().name();
    spin.finish_and_clear();
    mark("load_embedding");
    let spin = out.spinner(
        cfg.progress,
        &format!("matching {} target tokens", target.tokens.len()),
    );
    let mut plan = init::plan(&engine, &target, cfg.init);
    if plan.tokenizer_errors > 0 {
        out.warn(&format!(
            "the source tokenizer could not encode {} target token(s); they got the {fill_name} fill",
            plan.tokenizer_errors
        ));
    }
    // Static vectors and donors know words: a coded target token is looked up as its text.
    let texts = target.texts();
    let mut guide_report = None;
    let mut vectors = None;
    if let Some(path) = &cfg.aux_vectors {
        let v = read_aux_vectors(&engine, &plan, &texts, path)?;
        guide_report = Some(init::guide_by_vectors(
            &engine, &mut plan, &texts, &v, cfg.guide,
        )?);
        vectors = Some(v);
        mark("aux_vectors");
    }
    let donor_provenance = donor_files.as_ref().map(|f| f.provenance.clone());
    let loaded = match (&cfg.donor, &donor_files) {
        (Some(d), Some(files)) => Some(super::donor::load(d, files, out)?),
        _ => None,
    };
    if let Some(loaded) = &loaded {
        let report = init::guide_by_donor(
            &engine,
            &mut plan,
            &target.tokens,
            &loaded.donor(),
            cfg.guide,
        )?
        .ok_or_else(|| super::donor::no_shared(&loaded.name, &cfg.model))?;
        guide_report = Some(report);
        mark("donor");
    }
    spin.finish_and_clear();
    mark("match_and_compose");
    // compose-fit and auto: the map from the mean of pieces to the row, fitted on the source's
    // own multi-piece tokens, and the composed rows it applies to.
    let fitting =
        init::fit(&engine, &mut plan, &texts, cfg.init, cfg.seed).map_err(|e| match e {
            Error::Invalid(m) | Error::NoEvidence(m) => {
                Error::Invalid(format!("{}: {m}", cfg.model))
            }
            e => e,
        })?;
    if cfg.init == Method::ComposeFit || cfg.init == Method::Auto {
        mark("fit_composition");
    }
    let opts = init::options(
        &engine,
        cfg.init,
        sigma.as_ref(),
        &fitting,
        (out_dtype, cfg.seed, cfg.calibrate_norm),
    );
    let mut report = TransplantReport {
        output: if cfg.write_matrix {
            cfg.output.path.display().to_string()
        } else {
            String::new()
        },
        source: files.provenance.clone(),
        weights: emb.file.display().to_string(),
        weights_format: files.weights.format().to_string(),
        tensor: emb.name.clone(),
        tensor_rule: choice.rule.clone(),
        source_shape: [emb.rows, emb.cols],
        source_dtype: emb.dtype.name().to_string(),
        source_vocab: source.path.display().to_string(),
        source_vocab_size: source.size,
        source_tokenizer: tokenizer.style,
        sigma: sigma.as_ref().map(|s| s.value),
        sigma_from: sigma.as_ref().map(|s| s.from.clone()),
        nonfinite_source_rows: bad_rows.len(),
        aux_vectors: cfg.aux_vectors.as_ref().map(|p| p.display().to_string()),
        donor: donor_provenance,
        guide: guide_report,
        compose_fit: fitting.summary(),
        auto: fitting.auto.clone(),
        ..stage::plan_report(cfg, &target, &plan, fill_name, out_dtype, emb.cols)
    };

    let meta = stage::metadata(&report, &stage::copied_rows_of(&plan));
    // The matrix is built block by block straight into the output's temp file.
    let mut batch = Batch::new();
    let stats = if cfg.write_matrix {
        stage::stage_matrix(cfg, out, &plan, src, &opts, &meta, &mut batch)?
    } else {
        build::BuildStats::default()
    };
    if let Some(emit) = &cfg.emit {
        // The model directory reads the embedding again through its own map.
        emb.release();
        let model = crate::emit::emit(
            &crate::emit::Input {
                cfg: emit,
                files: &files,
                source: &source,
                target: &target,
                plan: &plan,
                emb_name: &emb.name,
                emb_rows: emb.rows,
                opts,
                do_lower_case: model_cfg.do_lower_case,
                provenance: &meta,
                target_tokenizer: target_tokenizer.as_ref(),
                target_tokenizer_config: target_tokenizer_config.as_ref(),
                tokenizer: &tokenizer,
                strict: cfg.strict,
                warn: &|m: &str| out.warn(m),
            },
            &mut batch,
        )?;
        report.model = Some(model);
        mark("write_model");
    }
    stage::record_stats(&mut report, &stats);
    mark("build_and_write_output");
    // The report says how well the chosen method rebuilds rows the model knows.
    let held_out = match &cfg.report {
        Some(_) => {
            let prefer: HashSet<String> = target.tokens.iter().cloned().collect();
            let space = match (&vectors, &loaded) {
                (Some(v), _) => Some(heldout::GuideSpace::Vectors(v)),
                _ => None,
            };
            let donor = loaded.as_ref().map(|l| l.donor());
            let space = space.or(donor.as_ref().map(heldout::GuideSpace::Donor));
            let method = match space {
                Some(_) => Method::Guide(cfg.guide),
                None => cfg.init,
            };
            let ev = heldout::run(
                &engine,
                engine.candidates().to_vec(),
                &heldout::EvalOptions {
                    guide: space,
                    sample: REPORT_SAMPLE,
                    seed: cfg.seed,
                    methods: &[method],
                    prefer: Some(&prefer),
                    keep_rows: false,
                },
            );
            Some(match ev {
                Ok(ev) => ReportScore {
                    scored: ev.scored,
                    in_target: ev.in_target,
                    seed: cfg.seed,
                    score: ev.scores.into_iter().next(),
                    note: ev.notes.into_iter().next(),
                },
                // A vocabulary with nothing to hold out (or a tokenizer that cannot): no score.
                Err(Error::NoEvidence(m)) => ReportScore {
                    scored: 0,
                    in_target: None,
                    seed: cfg.seed,
                    score: None,
                    note: Some(m),
                },
                Err(e) => return Err(e),
            })
        }
        None => None,
    };
    mark("held_out_score");
    report.timings = timings;
    report.seconds = start.elapsed().as_secs_f64();
    let names = report::rows::source_names(&source);
    stage::stage_extras(
        cfg,
        &report,
        held_out.as_ref(),
        (&target, &plan, &names),
        &stats,
        &mut batch,
    )?;
    Ok(Staged { report, batch })
}

/// `--aux-vectors`: reads the vectors of the source's anchor candidates and of the target
/// tokens that are not copies (all the guide looks up).
fn read_aux_vectors(
    source: &Source<'_>,
    plan: &Plan,
    texts: &[String],
    path: &std::path::Path,
) -> Result<Vectors> {
    let wanted = vectors::Wanted::new(
        source
            .candidates()
            .iter()
            .map(|c| c.text.as_str())
            .chain(
                (0..texts.len())
                    .filter(|&i| !plan.rows[i].source.is_copy())
                    .map(|i| texts[i].as_str()),
            )
            .flat_map(Vectors::forms),
    );
    vectors::read(path, &|w: &str| wanted.contains(w))
}

//! `embed-transplant [transplant]`: resolve the model, read its embedding, build the new matrix
//! for the target vocabulary, write it.

use crate::align::{self, BuildOptions, Fill, Matrix};
use crate::checkpoint::{self, DType};
use crate::cli::{DTypeArg, InitArg};
use crate::config::TransplantConfig;
use crate::error::{Error, Result};
use crate::hub;
use crate::matching;
use crate::output::Output;
use crate::report::{self, ReportFile, TransplantReport};
use crate::vocab;
use crate::writer;
use std::collections::BTreeMap;
use std::time::Instant;

pub fn run(cfg: &TransplantConfig, out: &Output) -> Result<TransplantReport> {
    let start = Instant::now();
    let mut timings: BTreeMap<String, f64> = BTreeMap::new();
    let mut lap = Instant::now();
    let mut mark = |name: &str| {
        timings.insert(name.to_string(), lap.elapsed().as_secs_f64());
        lap = Instant::now();
    };
    // Refuse an unusable output path before downloading anything.
    writer::check_target(&cfg.output, cfg.force)?;
    let target = vocab::read_target(&cfg.vocab)?;
    if target.duplicates > 0 {
        out.warn(&format!(
            "{}: {} duplicate token line(s) (e.g. {:?}); each line still gets its own row",
            target.origin, target.duplicates, target.duplicate_examples
        ));
    }

    mark("read_target_vocab");
    let files = hub::resolve(&cfg.model, &cfg.hub)?;
    mark("resolve_model");
    let side = super::source_side(&files, cfg.source_vocab.as_deref(), &cfg.model)?;
    let (source, model_cfg, tokenizer) = (side.vocab, side.config, side.tokenizer);

    let tensors = checkpoint::list_tensors(&files.weights, files.fetcher.as_ref())?;
    let choice = checkpoint::choose_embedding(&files.weights, &tensors, cfg.tensor.as_deref())?;
    mark("load_source_vocab");
    let emb = checkpoint::load_embedding(&files.weights, &choice.name, files.fetcher.as_ref())?;
    writer::check_interrupted()?;
    if emb.rows < source.size {
        return Err(Error::tensor(
            &emb.file,
            &emb.name,
            format!(
                "has {} rows, fewer than the {} tokens of the source vocabulary {}",
                emb.rows,
                source.size,
                source.path.display()
            ),
        ));
    }
    let src = Matrix {
        dtype: emb.dtype,
        rows: emb.rows,
        cols: emb.cols,
        data: emb.bytes(),
    };
    let bad_rows = nonfinite_rows(src);
    if let Some(&first) = bad_rows.first() {
        let msg = format!(
            "{} row(s) hold NaN or infinity (first: row {first})",
            bad_rows.len()
        );
        if cfg.strict {
            return Err(Error::tensor(&emb.file, &emb.name, msg));
        }
        out.warn(&format!("tensor `{}`: {msg}", emb.name));
    }

    let out_dtype = match cfg.dtype {
        DTypeArg::Source => emb.dtype,
        DTypeArg::F32 => DType::F32,
        DTypeArg::F16 => DType::F16,
        DTypeArg::Bf16 => DType::BF16,
    };
    // A source tokenizer is always at hand here, so compose is the default.
    let init = cfg.init.unwrap_or(InitArg::Compose);
    let (fill, sigma, sigma_from) = match init {
        InitArg::Random | InitArg::Compose => {
            let (s, from) = match model_cfg.initializer_range {
                Some(r) => (r as f32, "config.json initializer_range"),
                None => (align::std_of(src, source.size), "std of the source matrix"),
            };
            (Fill::Random { sigma: s }, Some(s), Some(from.to_string()))
        }
        InitArg::Zeros => (Fill::Zeros, None, None),
        InitArg::Mean => (Fill::Mean, None, None),
    };
    let fill_name = match fill {
        Fill::Random { .. } => "random",
        Fill::Zeros => "zeros",
        Fill::Mean => "mean",
    };
    mark("load_embedding");
    let plan = matching::plan(
        &target.tokens,
        &source,
        Some(&tokenizer),
        init == InitArg::Compose,
        fill_name,
    )?;
    let opts = BuildOptions {
        out: out_dtype,
        fill,
        seed: cfg.seed,
        calibrate_norm: cfg.calibrate_norm,
        vocab_rows: source.size,
    };
    writer::check_interrupted()?;
    mark("match_and_compose");

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for m in &plan.methods {
        *counts.entry(m.name(fill_name)).or_default() += 1;
    }
    let copied = plan.rows.iter().filter(|r| r.is_copy()).count();
    let rows = plan.rows.len();

    let mut report = TransplantReport {
        output: cfg.output.display().to_string(),
        source: files.provenance.clone(),
        weights: emb.file.display().to_string(),
        weights_format: files.weights.format().to_string(),
        tensor: emb.name.clone(),
        tensor_rule: choice.rule.clone(),
        source_shape: [emb.rows, emb.cols],
        source_dtype: emb.dtype.name().to_string(),
        source_vocab: source.path.display().to_string(),
        source_vocab_size: source.size,
        target_vocab: target.origin.clone(),
        target_vocab_sha256: target.sha256.clone(),
        rows,
        dim: emb.cols,
        dtype: out_dtype.name().to_string(),
        copied,
        initialised: rows - copied,
        coverage_percent: if rows == 0 {
            0.0
        } else {
            100.0 * copied as f64 / rows as f64
        },
        counts,
        init: init_name(init).to_string(),
        fill: fill_name.to_string(),
        source_tokenizer: tokenizer.style,
        seed: cfg.seed,
        sigma,
        sigma_from,
        calibrate_norm: opts.calibrate_norm,
        median_norm_copied: None,
        median_norm_initialised: None,
        duplicate_lines: target.duplicates,
        nonfinite_source_rows: bad_rows.len(),
        seconds: 0.0,
        timings: BTreeMap::new(),
    };

    let copied_rows = report::ranges(
        plan.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.is_copy())
            .map(|(i, _)| i),
    );
    let meta = metadata(&report, &copied_rows);
    // The matrix is built block by block straight into the output file.
    let mut stats = align::BuildStats::default();
    writer::write_matrix_with(
        &cfg.output,
        out_dtype,
        [rows, emb.cols],
        &meta,
        cfg.force,
        |w| {
            stats = align::build_blocks(&plan.rows, src, &opts, |block| w.write_all(block))?;
            Ok(())
        },
    )?;
    report.median_norm_copied = stats.median_norm_copied;
    report.median_norm_initialised = stats.median_norm_initialised;
    mark("build_and_write_output");
    report.timings = timings;
    report.seconds = start.elapsed().as_secs_f64();
    if let Some(path) = &cfg.report {
        let doc = ReportFile {
            summary: &report,
            rows: &plan.notes,
        };
        writer::write_with(path, true, |w| {
            serde_json::to_writer_pretty(&mut *w, &doc)?;
            w.write_all(b"\n")
        })?;
    }
    Ok(report)
}

fn init_name(init: InitArg) -> &'static str {
    match init {
        InitArg::Compose => "compose",
        InitArg::Random => "random",
        InitArg::Zeros => "zeros",
        InitArg::Mean => "mean",
    }
}

/// Indices of rows with a NaN or infinite value (rows scanned in parallel).
fn nonfinite_rows(src: Matrix<'_>) -> Vec<usize> {
    use rayon::prelude::*;
    (0..src.rows)
        .into_par_iter()
        .with_min_len(1024)
        .map_init(
            || vec![0f32; src.cols],
            |tmp, i| {
                src.row_f32(i, tmp);
                tmp.iter().any(|v| !v.is_finite()).then_some(i)
            },
        )
        .flatten()
        .collect()
}

/// The output's `__metadata__`: strings only, sorted when written.
fn metadata(r: &TransplantReport, copied_rows: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    put("format", "pt".into());
    put(
        "tool",
        format!("embed-transplant {}", env!("CARGO_PKG_VERSION")),
    );
    put("source_model", r.source.model.clone());
    if let Some(rev) = &r.source.revision {
        put("source_revision", rev.clone());
    }
    if let Some(c) = &r.source.commit {
        put("source_commit", c.clone());
    }
    put("source_tensor", r.tensor.clone());
    put("source_dtype", r.source_dtype.clone());
    put(
        "source_shape",
        format!("{}x{}", r.source_shape[0], r.source_shape[1]),
    );
    put("dtype", r.dtype.clone());
    put("init", r.init.clone());
    put("fill", r.fill.clone());
    put("calibrate_norm", r.calibrate_norm.to_string());
    put("seed", r.seed.to_string());
    if let Some(s) = r.sigma {
        put("sigma", s.to_string());
    }
    put("rows", r.rows.to_string());
    put("copied", r.copied.to_string());
    put("initialised", r.initialised.to_string());
    put(
        "counts",
        serde_json::to_string(&r.counts).unwrap_or_default(),
    );
    put("copied_rows", copied_rows.to_string());
    put("target_vocab_sha256", r.target_vocab_sha256.clone());
    m
}

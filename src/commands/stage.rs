//! What every transplant stages, whatever its source (a checkpoint, [`super::transplant`], or
//! static vectors, [`super::vectors_source`]): the report's common fields, the matrix built
//! block by block into the output's temp file, `--report` and `--plot`, and the output's
//! metadata.

use crate::config::TransplantConfig;
use crate::console::Console;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::init::build::{self, BuildOptions};
use crate::linalg::Matrix;
use crate::load::vocab::TargetVocab;
use crate::matching::{self, Plan};
use crate::report::plot;
use crate::report::{self, ReportFile, ReportScore, TransplantReport};
use crate::write::Batch;
use std::collections::BTreeMap;

/// The report's fields that come from the target, the plan and the flags: the same for every
/// kind of source (the caller fills in the source's).
pub(crate) fn plan_report(
    cfg: &TransplantConfig,
    target: &TargetVocab,
    plan: &Plan,
    fill_name: &str,
    out_dtype: DType,
    dim: usize,
) -> TransplantReport {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in &plan.rows {
        *counts.entry(r.method.name(fill_name)).or_default() += 1;
    }
    let copied = plan.copied();
    let rows = plan.rows.len();
    TransplantReport {
        target_vocab: target.origin.clone(),
        target_vocab_sha256: target.sha256.clone(),
        rows,
        dim,
        dtype: out_dtype.name().to_string(),
        copied,
        initialised: rows - copied,
        coverage_percent: if rows == 0 {
            0.0
        } else {
            100.0 * copied as f64 / rows as f64
        },
        counts,
        init: cfg.init.name().to_string(),
        fill: fill_name.to_string(),
        seed: cfg.seed,
        calibrate_norm: cfg.calibrate_norm,
        duplicate_lines: target.duplicates,
        tokenizer_errors: plan.tokenizer_errors,
        ..TransplantReport::default()
    }
}

/// Row indices copied from the source, as `a-b,c` ranges (the `copied_rows` metadata).
pub(crate) fn copied_rows_of(plan: &matching::Plan) -> String {
    report::rows::ranges(
        plan.rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.source.is_copy())
            .map(|(i, _)| i),
    )
}

/// Stages the `-o` matrix, built block by block from `src` into the output's temp file. Rows
/// that overflow the output type are an error with `--strict`, else a warning.
pub(crate) fn stage_matrix(
    cfg: &TransplantConfig,
    out: &Console,
    plan: &matching::Plan,
    src: Matrix<'_>,
    opts: &BuildOptions,
    meta: &BTreeMap<String, String>,
    batch: &mut Batch,
) -> Result<build::BuildStats> {
    let rows = plan.rows.len();
    let bar = out.bytes_bar(
        cfg.progress,
        (rows * src.cols * opts.out.size()) as u64,
        &format!(
            "writing {}",
            cfg.output
                .path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
        ),
    );
    let mut stats = build::BuildStats::default();
    batch.matrix(&cfg.output, opts.out, [rows, src.cols], meta, |w| {
        stats = build::build_blocks(&plan.rows, src, opts, |block| {
            w.write_all(block)?;
            bar.inc(block.len() as u64);
            Ok(())
        })?;
        Ok(())
    })?;
    bar.finish_and_clear();
    if stats.overflow_rows > 0 {
        let msg = format!(
            "{} row(s) overflow to infinity as {}",
            stats.overflow_rows,
            opts.out.name()
        );
        if cfg.strict {
            return Err(Error::file(&cfg.output.path, msg));
        }
        out.warn(&format!("{}: {msg}", cfg.output.path.display()));
    }
    Ok(stats)
}

/// What building noticed, into the summary.
pub(crate) fn record_stats(report: &mut TransplantReport, stats: &build::BuildStats) {
    report.overflow_rows = stats.overflow_rows;
    report.median_norm_copied = stats.median_norm_copied;
    report.median_norm_initialised = stats.median_norm_initialised;
}

/// Stages `--report` (the summary, the held-out score and a note per row that is not an exact
/// copy, its pieces named by `names`) and `--plot`.
pub(crate) fn stage_extras(
    cfg: &TransplantConfig,
    report: &TransplantReport,
    held_out: Option<&ReportScore>,
    (target, plan, names): (&TargetVocab, &matching::Plan, &[&str]),
    stats: &build::BuildStats,
    batch: &mut Batch,
) -> Result<()> {
    if let Some(report_target) = &cfg.report {
        let notes = report::rows::notes(target, plan, names, &report.fill);
        let doc = ReportFile {
            summary: report,
            score: held_out,
            rows: &notes,
        };
        batch.json(report_target, &doc)?;
    }
    if let Some(plot_target) = &cfg.plot {
        let picture = plot::row_norms_svg(&norm_plot(report, plan, stats, &report.fill))
            .map_err(|msg| Error::file(&plot_target.path, msg))?;
        batch.file(plot_target, None, |w| w.write_all(picture.as_bytes()))?;
    }
    Ok(())
}

/// The `--plot` data: each row's norm grouped by its method, in the order the methods are tried.
fn norm_plot(
    r: &TransplantReport,
    plan: &matching::Plan,
    stats: &build::BuildStats,
    fill_name: &str,
) -> plot::NormPlot {
    use matching::Origin;
    let order = [
        Origin::Exact,
        Origin::Normalized,
        Origin::Continuation,
        Origin::Decoded,
        Origin::Composed,
        Origin::Guided,
        Origin::Fill,
    ];
    let mut groups: Vec<plot::NormGroup> = order
        .iter()
        .map(|m| plot::NormGroup {
            method: m.name(fill_name),
            copied: m.is_copy(),
            norms: Vec::new(),
        })
        .collect();
    for (row, &norm) in plan.rows.iter().zip(&stats.norms) {
        if let Some(k) = order.iter().position(|m| *m == row.method) {
            groups[k].norms.push(norm);
        }
    }
    plot::NormPlot {
        output: r.output.clone(),
        source: r.source.model.clone(),
        calibrate_norm: r.calibrate_norm,
        groups,
        median_copied: stats.median_norm_copied,
    }
}

/// The output's `__metadata__`: strings only, sorted when written.
pub(crate) fn metadata(r: &TransplantReport, copied_rows: &str) -> BTreeMap<String, String> {
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
    match &r.static_vectors {
        None => put("source_tensor", r.tensor.clone()),
        Some(v) => {
            put("source_format", v.format.clone());
            put("source_vectors_kept", v.kept.to_string());
        }
    }
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
    if let Some(a) = &r.aux_vectors {
        put("aux_vectors", a.clone());
    }
    if let Some(d) = &r.donor {
        put("donor", d.model.clone());
        if let Some(c) = &d.commit {
            put("donor_commit", c.clone());
        }
    }
    if let Some(g) = &r.guide {
        let key = if r.aux_vectors.is_some() {
            "aux_vectors_weights"
        } else {
            "donor_weights"
        };
        put(key, g.description.clone());
    }
    if let Some(a) = &r.auto {
        put("init_auto_used", a.used.clone());
        put("init_auto_reason", a.reason.clone());
        put("init_auto_fitted_rows", a.fitted.to_string());
        put(
            "init_auto_kinds",
            serde_json::to_string(&a.kinds).unwrap_or_default(),
        );
    }
    if let Some(f) = &r.compose_fit {
        put("compose_fit_identity", f.identity.to_string());
        put("compose_fit_alpha", f.alpha.to_string());
        put("compose_fit_lambda", f.lambda.to_string());
        put("compose_fit_size", f.fit_size.to_string());
        put(
            "compose_fit_validation_cosine",
            format!("{:.6}", f.validation_cosine),
        );
        put(
            "compose_fit_validation_cosine_plain",
            format!("{:.6}", f.validation_cosine_plain),
        );
        if let Some(n) = f.scaled_to {
            put("compose_fit_scaled_to", n.to_string());
        }
    }
    m
}

//! The transplant from a static word-vector file (`--model vectors.txt`, `.vec`, word2vec `.bin`,
//! `.npy` + word list). The file is streamed once and only the rows some target token needs (the
//! token, its normalised forms, a Chinese word's characters) are kept; those kept rows are the
//! source matrix that the plan, the build and the writer of every transplant run on.

use super::stage::{
    copied_rows_of, metadata, plan_report, record_stats, stage_extras, stage_matrix,
};
use super::Staged;
use crate::config::TransplantConfig;
use crate::console::Console;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::init::build::BuildOptions;
use crate::init::{self, Method};
use crate::linalg::Matrix;
use crate::load::hub::Provenance;
use crate::load::vectors;
use crate::load::vocab;
use crate::matching::{statics, Style};
use crate::report::ReportScore;
use crate::report::{StaticSource, TransplantReport};
use crate::write::Batch;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

pub fn run(cfg: &TransplantConfig, out: &Console) -> Result<Staged<TransplantReport>> {
    let start = Instant::now();
    let mut timings: BTreeMap<String, f64> = BTreeMap::new();
    let mut lap = Instant::now();
    let mut mark = |name: &str| {
        timings.insert(name.to_string(), lap.elapsed().as_secs_f64());
        lap = Instant::now();
    };
    let target = vocab::read_target(&cfg.vocab)?;
    super::warn_target(out, &target);
    mark("read_target_vocab");
    let path = Path::new(&cfg.model);
    let compose = cfg.init.composes();
    // Static vectors know words: a coded target token is looked up as the text it stands for.
    let words = target.texts();
    let wanted = statics::wanted(&words, compose);
    let spin = out.spinner(
        cfg.progress,
        &format!(
            "reading {}",
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
    );
    let vectors = vectors::read(path, &|w: &str| wanted.contains(w))?;
    spin.finish_and_clear();
    drop(wanted);
    mark("read_vectors");
    if vectors.is_empty() {
        return Err(Error::file(
            path,
            format!(
                "none of the {} target tokens (nor a normalised form{}) has a vector among its {}: nothing to transplant",
                target.tokens.len(),
                if compose { ", nor a Chinese word's characters" } else { "" },
                vectors.total
            ),
        ));
    }
    let plan = statics::plan(&words, &|t: &str| vectors.find(t), compose);
    mark("match_and_compose");

    let src = Matrix {
        dtype: DType::F32,
        rows: vectors.len(),
        cols: vectors.dim,
        data: bytemuck::cast_slice(&vectors.data),
    };
    let out_dtype = cfg.dtype.unwrap_or(DType::F32);
    let fill_kind = cfg.init.fill();
    let fill_name = fill_kind.name();
    let sigma = (fill_kind == Method::Random).then(|| {
        init::sigma_rule(None, "vectors read (the kept rows)", || {
            crate::linalg::std_of(src, src.rows, &Default::default())
        })
    });
    let fill = init::fill(fill_kind, sigma.as_ref());
    let (sigma, sigma_from) = match sigma {
        Some(s) => (Some(s.value), Some(s.from)),
        None => (None, None),
    };
    let opts = BuildOptions {
        out: out_dtype,
        fill,
        seed: cfg.seed,
        calibrate_norm: cfg.calibrate_norm,
        vocab_rows: src.rows,
        held_out: None,
        compose_map: None,
        row_stats: true,
    };
    let words_file = vectors.words_file.as_ref().map(|p| p.display().to_string());
    let mut report = TransplantReport {
        output: cfg.output.path.display().to_string(),
        source: Provenance {
            kind: "local",
            model: cfg.model.clone(),
            revision: None,
            commit: None,
        },
        weights: path.display().to_string(),
        weights_format: vectors.format.name().to_string(),
        tensor: String::new(),
        tensor_rule: "static word vectors".to_string(),
        source_shape: [vectors.total, vectors.dim],
        source_dtype: DType::F32.name().to_string(),
        source_vocab: words_file.clone().unwrap_or_else(|| cfg.model.clone()),
        source_vocab_size: vectors.total,
        source_tokenizer: Style::Other,
        sigma,
        sigma_from,
        static_vectors: Some(StaticSource {
            format: vectors.format.name().to_string(),
            vectors: vectors.total,
            kept: vectors.len(),
            words_file,
        }),
        ..plan_report(cfg, &target, &plan, fill_name, out_dtype, vectors.dim)
    };
    let meta = metadata(&report, &copied_rows_of(&plan));
    let mut batch = Batch::new();
    let stats = stage_matrix(cfg, out, &plan, src, &opts, &meta, &mut batch)?;
    record_stats(&mut report, &stats);
    mark("build_and_write_output");
    // No tokenizer to rebuild without held-out tokens: the report says so instead of a score.
    let held_out = cfg.report.as_ref().map(|_| ReportScore {
        scored: 0,
        in_target: None,
        seed: cfg.seed,
        score: None,
        note: Some("no held-out score for a static-vector source".into()),
    });
    report.timings = timings;
    report.seconds = start.elapsed().as_secs_f64();
    let names: Vec<&str> = vectors.words.iter().map(String::as_str).collect();
    stage_extras(
        cfg,
        &report,
        held_out.as_ref(),
        (&target, &plan, &names),
        &stats,
        &mut batch,
    )?;
    Ok(Staged { report, batch })
}

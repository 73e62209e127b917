//! `embed-transplant inspect`: what a transplant would read and do, from headers only.

use crate::config::InspectConfig;
use crate::console::Output;
use crate::error::{Error, Result};
use crate::load::checkpoint::{self};
use crate::load::hub::{self};
use crate::load::vocab::{self};
use crate::matching::{self};
use crate::report::{DryRun, InspectReport, VocabFacts};
use std::collections::BTreeMap;

pub fn run(cfg: &InspectConfig, out: &Output) -> Result<InspectReport> {
    let files = hub::resolve_headers_only(&cfg.model, &cfg.hub)?;
    let side = super::source_side(&files, cfg.source_vocab.as_deref(), &cfg.model, out)?;
    let tensors = checkpoint::list_tensors(&files.weights, files.fetcher.as_ref())?;
    let chosen = checkpoint::choose_embedding(&files.weights, &tensors, cfg.tensor.as_deref())
        .and_then(|c| {
            // The checks a transplant makes before building anything, from the header alone.
            if let Some(t) = tensors.iter().find(|t| t.name == c.name) {
                let file = files.weights.path();
                if !["f32", "f16", "bf16", "f64"].contains(&t.dtype.as_str()) && t.dtype != "?" {
                    return Err(Error::tensor(
                        file,
                        &t.name,
                        format!(
                            "dtype {} is not a float type this tool reads (f32, f16, bf16, f64)",
                            t.dtype
                        ),
                    ));
                }
                if let Some(shape) = &t.shape {
                    let (rows, _) = checkpoint::matrix_shape(file, &t.name, shape)?;
                    super::check_rows(file, &t.name, rows, &side.vocab)?;
                }
            }
            Ok(c)
        });
    let (embedding, embedding_rule, embedding_error) = match chosen {
        Ok(c) => (Some(c.name), Some(c.rule), None),
        Err(e) => (None, None, Some(e.to_string())),
    };
    let dry_run = match &cfg.vocab {
        Some(path) => {
            if let Some(e) = &embedding_error {
                // A dry run must fail where the transplant would.
                return Err(Error::Invalid(e.clone()));
            }
            let target = vocab::read_target(path)?;
            super::warn_target(out, &target);
            let plan = matching::plan_target(&target, &side.vocab, Some(&side.tokenizer), true);
            let mut counts = BTreeMap::new();
            for r in &plan.rows {
                *counts.entry(r.method.name("random")).or_default() += 1;
            }
            Some(DryRun {
                target_vocab: target.origin,
                rows: plan.rows.len(),
                copied: plan.copied(),
                counts,
            })
        }
        None => None,
    };
    Ok(InspectReport {
        source: files.provenance.clone(),
        weights: files.weights.path().display().to_string(),
        weights_format: files.weights.format().to_string(),
        tensors,
        embedding,
        embedding_rule,
        embedding_error,
        source_vocab: VocabFacts {
            path: side.vocab.path.display().to_string(),
            kind: side.vocab.kind,
            size: side.vocab.size,
            tokenizer: side.tokenizer.style,
            lowercase: side.tokenizer.lowercase,
            special_tokens: side.vocab.special.clone(),
        },
        config: side.config,
        dry_run,
    })
}

/// The human listing.
pub fn render(i: &InspectReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "model:    {} ({})", i.source.model, i.source.kind);
    if let (Some(rev), commit) = (&i.source.revision, &i.source.commit) {
        let _ = writeln!(s, "revision: {rev} {}", commit.as_deref().unwrap_or(""));
    }
    let _ = writeln!(s, "weights:  {} ({})", i.weights, i.weights_format);
    let _ = writeln!(s, "tensors:  {}", i.tensors.len());
    for t in &i.tensors {
        let mark = if Some(&t.name) == i.embedding.as_ref() {
            "*"
        } else {
            " "
        };
        let _ = writeln!(
            s,
            "  {mark} {:<60} {:<5} {:<16} {}",
            t.name,
            t.dtype,
            checkpoint::names::fmt_shape(&t.shape),
            t.file
        );
    }
    match (&i.embedding, &i.embedding_rule, &i.embedding_error) {
        (Some(e), Some(r), _) => {
            let _ = writeln!(s, "embedding: {e} ({r})");
        }
        (_, _, Some(err)) => {
            let _ = writeln!(s, "embedding: none: {err}");
        }
        _ => {}
    }
    let v = &i.source_vocab;
    let _ = writeln!(
        s,
        "vocab:    {} ({:?}, {} tokens, {:?} tokenizer, lowercase {}), special: {}",
        v.path,
        v.kind,
        v.size,
        v.tokenizer,
        v.lowercase,
        v.special_tokens.join(" ")
    );
    let c = &i.config;
    let _ = writeln!(
        s,
        "config:   model_type {} hidden_size {} vocab_size {} initializer_range {}",
        c.model_type.as_deref().unwrap_or("?"),
        c.hidden_size.map(|x| x.to_string()).unwrap_or("?".into()),
        c.vocab_size.map(|x| x.to_string()).unwrap_or("?".into()),
        c.initializer_range
            .map(|x| x.to_string())
            .unwrap_or("?".into()),
    );
    if let Some(d) = &i.dry_run {
        let counts: Vec<String> = d.counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            s,
            "dry run:  {} rows from {}: copied {} ({:.1}%) [{}]",
            d.rows,
            d.target_vocab,
            d.copied,
            100.0 * d.copied as f64 / d.rows.max(1) as f64,
            counts.join(", ")
        );
    }
    s
}

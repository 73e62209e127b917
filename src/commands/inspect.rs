//! `embed-transplant inspect`: what a transplant would read and do, from headers only.

use crate::config::InspectConfig;
use crate::console::Console;
use crate::error::{Error, Result};
use crate::load::checkpoint::{self};
use crate::load::hub::{self};
use crate::load::vocab::{self};
use crate::matching::{self};
use crate::report::{DryRun, InspectReport, VocabFacts};
use std::collections::BTreeMap;

pub fn run(cfg: &InspectConfig, out: &Console) -> Result<InspectReport> {
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

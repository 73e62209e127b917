//! All human text: the transplant's summary lines, `score`'s table, `finetune`'s line, and the
//! `inspect` and `evaluate` listings, each made from its report alone. [`crate::console`]
//! prints them (escaped); nothing else formats a report for people.

use super::{EvaluateReport, FinetuneReport, InspectReport, ScoreReport, TransplantReport};

/// `--init auto`'s choice, in one line.
fn auto_line(r: &TransplantReport) -> Option<String> {
    let a = r.auto.as_ref()?;
    Some(if a.fitted > 0 {
        format!(
            "init auto: compose-fit on {} of {} composed rows: {}",
            a.fitted, a.composed, a.reason
        )
    } else {
        format!("init auto: compose (plain mean of pieces): {}", a.reason)
    })
}

/// The transplant's summary: what was written, then auto's choice.
pub fn transplant(r: &TransplantReport) -> Vec<String> {
    let mut lines = Vec::new();
    let counts: Vec<String> = r
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let from = match (&r.source.revision, &r.source.commit) {
        (Some(rev), Some(c)) => format!(
            "{}@{rev} ({})",
            r.source.model,
            c.chars().take(12).collect::<String>()
        ),
        (Some(rev), None) => format!("{}@{rev}", r.source.model),
        _ => r.source.model.clone(),
    };
    if let Some(m) = &r.model {
        lines.push(format!(
                "wrote model directory {} ({}): {} rows ({} with a token{}{}), tokenizer {:?}, head {}, {} weights file(s)",
                m.dir,
                m.mode,
                m.rows,
                m.token_rows,
                if m.new_tokens > 0 { format!(", {} new", m.new_tokens) } else { String::new() },
                if m.padding_rows > 0 { format!(", {} padding", m.padding_rows) } else { String::new() },
                m.tokenizer,
                match (&m.routing.head, m.tied) {
                    (Some(h), _) => format!("{h} rebuilt"),
                    (None, _) => "tied (no separate head)".to_string(),
                },
                m.weight_files.len()
            ));
        if let Some(a) = &m.special_tokens {
            let mut parts: Vec<String> = a
                .moved
                .iter()
                .map(|(role, [from, to])| format!("{role} {from} -> {to}"))
                .collect();
            if !a.lacking.is_empty() {
                parts.push(format!(
                    "the target has no token for {} (their config ids, if any, set to null)",
                    a.lacking.join(", ")
                ));
            }
            if !a.dropped.is_empty() {
                parts.push(format!("not in the target: {}", a.dropped.join(" ")));
            }
            if !parts.is_empty() {
                lines.push(format!(
                    "special tokens adopted from the target tokenizer: {}",
                    parts.join("; ")
                ));
            }
        }
        if r.output.is_empty() {
            lines.extend(auto_line(r));
            return lines;
        }
    }
    let from = match &r.static_vectors {
        Some(v) => format!(
            "{from} ({}, {} of {} vectors kept)",
            v.format, v.kept, v.vectors
        ),
        None => format!("{from} tensor {} ({})", r.tensor, r.weights_format),
    };
    lines.push(format!(
        "wrote {}: {} rows x {} {} | copied {} ({:.1}%), initialised {} [{}] | from {} in {:.2}s",
        r.output,
        r.rows,
        r.dim,
        r.dtype,
        r.copied,
        r.coverage_percent,
        r.initialised,
        counts.join(", "),
        from,
        r.seconds
    ));
    lines.extend(auto_line(r));
    lines
}

/// `score`'s table: one line per method, then the fit's and the guide's facts.
pub fn score_table(r: &ScoreReport) -> Vec<String> {
    let in_target = r
        .in_target
        .map(|n| format!(", {n} in the target vocabulary"))
        .unwrap_or_default();
    let mut lines = vec![format!(
        "{}: {} held-out tokens scored against {} source rows (dim {}; seed {}{in_target})",
        r.model, r.scored, r.source_shape[0], r.source_shape[1], r.seed
    )];
    lines.push(format!(
        "{:<14} {:>11} {:>7} {:>7} {:>11} {:>10}",
        "method", "mean cosine", "top-1", "top-10", "median rank", "norm ratio"
    ));
    for s in &r.scores {
        lines.push(format!(
            "{:<14} {:>11.3} {:>6.1}% {:>6.1}% {:>11} {:>10.2}",
            s.method,
            s.mean_cosine,
            100.0 * s.top1,
            100.0 * s.top10,
            s.median_rank,
            s.norm_ratio
        ));
    }
    if let Some(f) = r.compose_fit.as_ref().filter(|f| f.identity) {
        lines.push(format!(
                "compose-fit: plain mean of pieces won the validation split ({:.3} on {} tokens): the map is the identity",
                f.validation_cosine_plain, f.fit_size
            ));
    } else if let Some(f) = &r.compose_fit {
        lines.push(format!(
                "compose-fit: ridge alpha {} (lambda {:.4}) on {} tokens; validation cosine {:.3} (plain mean {:.3})",
                f.alpha, f.lambda, f.fit_size, f.validation_cosine, f.validation_cosine_plain
            ));
    }
    if let Some(g) = &r.guide {
        let (what, had) = if g.donor {
            ("donor", "the donor knew")
        } else {
            ("vectors", "had a vector")
        };
        lines.push(format!(
                "guide: {} ({} {what}, dim {}), {} anchors; {} of the scored tokens {had} (the rest composed); guide: top {} softmax at temperature {}; guide-omp: k {}",
                g.file, g.vectors_in_file, g.dim, g.anchors, g.guided, g.top_k, g.temperature, g.omp_k
            ));
    }
    lines.push(format!("in {:.2}s", r.seconds));
    lines
}

/// `finetune`'s one line.
pub fn finetune(r: &FinetuneReport) -> String {
    match r.test_accuracy {
        Some(acc) => format!(
            "test accuracy {:.2}% (best epoch {}); wrote {}",
            100.0 * acc,
            r.best_epoch,
            r.output
        ),
        None => format!("best epoch {}; wrote {}", r.best_epoch, r.output),
    }
}

/// The human listing.
pub fn inspect(i: &InspectReport) -> String {
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
            crate::load::checkpoint::names::fmt_shape(&t.shape),
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

/// The human table.
pub fn evaluate(e: &EvaluateReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} examples, accuracy {:.2}%, loss {:.4}",
        e.data,
        e.examples,
        100.0 * e.accuracy,
        e.loss
    );
    let _ = writeln!(
        s,
        "{:<20} {:>9} {:>9} {:>9} {:>8}",
        "label", "precision", "recall", "f1", "support"
    );
    for c in &e.classes {
        let _ = writeln!(
            s,
            "{:<20} {:>9.4} {:>9.4} {:>9.4} {:>8}",
            c.label, c.precision, c.recall, c.f1, c.support
        );
    }
    s
}

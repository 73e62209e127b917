//! `--init auto` (the default): whether composed rows get the fitted map is decided per run from
//! the source's own evidence. A map fitted on one kind of token does not carry to another:
//! bert-base-chinese has no multi-character Chinese tokens, so a map fitted there learns from
//! English words and `##` pieces. So the target's composed tokens are sorted into kinds (script
//! and piece count); the map is fitted on held-out source tokens of those kinds only, and
//! checked kind by kind on a seeded fifth of them kept out of the fit. A kind gets the map only
//! when its validation tokens (5 or more) come out closer to their true rows with it than with
//! the plain mean, by more than two standard errors of the mean gain; every other composed row
//! stays the plain mean. The rows that get it take the map refitted on all those tokens, scaled
//! to the median norm of the source's rows (as compose-fit's are). The choice, and why, is in
//! the summary, `--json`, `--report` and the output's metadata.

use super::{fit_pairs, ordered_candidates, pair_rows, Fitting, Source};
use crate::error::{Error, Result};
use crate::init::build::RowSource;
use crate::init::fit;
use crate::linalg::cosine;
use crate::matching::holdout::Candidate;
use crate::matching::Plan;
use crate::report::{AutoChoice, AutoKind};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use unicode_script::{Script, UnicodeScript};

/// Fewer fit pairs than this (of the target's kinds): the map is not fitted at all.
pub const MIN_PAIRS: usize = 200;
/// Fewer validation pairs of a kind than this: that kind keeps the plain mean.
pub const MIN_VALIDATION: usize = 5;
/// A kind gets the map when its validation pairs' mean gain in cosine (map minus plain mean) is
/// above this many standard errors of that mean: a win, not noise.
const WIN_STANDARD_ERRORS: f64 = 2.0;
/// Every this-many-th fit pair (in the seeded order) is kept out of the fit to validate it.
const VALIDATION_EVERY: usize = 5;

/// A composed token's kind: the script of its text and its piece count (4 stands for 4 or more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Kind {
    /// The Unicode script's name (`Han`, `Latin`, `Common` for digits and punctuation only).
    script: &'static str,
    pieces: u8,
}

/// The Unicode script of a text: that of its first character with a script of its own (`Common`
/// when all are digits, punctuation and the like).
fn script_of(text: &str) -> &'static str {
    text.chars()
        .map(|c| c.script())
        .find(|s| !matches!(s, Script::Common | Script::Inherited | Script::Unknown))
        .unwrap_or(Script::Common)
        .full_name()
}

impl Kind {
    fn of(text: &str, pieces: usize) -> Kind {
        Kind {
            script: script_of(text),
            pieces: pieces.min(4) as u8,
        }
    }

    fn pieces_name(self) -> String {
        match self.pieces {
            4 => "4+".into(),
            n => n.to_string(),
        }
    }
}

impl AutoChoice {
    fn plain(composed: usize, kinds: Vec<AutoKind>, reason: String) -> AutoChoice {
        AutoChoice {
            used: "compose".into(),
            reason,
            composed,
            fitted: 0,
            kinds,
        }
    }
}

/// Whether `n` validation pairs whose cosine gains (map minus plain mean) sum to `gain` and
/// their squares to `gain2` show a win: at least [`MIN_VALIDATION`] pairs, and a mean gain above
/// [`WIN_STANDARD_ERRORS`] standard errors.
fn wins(n: usize, gain: f64, gain2: f64) -> bool {
    if n < MIN_VALIDATION {
        return false;
    }
    let n = n as f64;
    let mean = gain / n;
    let var = (gain2 / n - mean * mean).max(0.0) * n / (n - 1.0);
    mean > WIN_STANDARD_ERRORS * (var / n).sqrt()
}

/// Decides, fits and marks (see the module comment). `texts`: the target tokens as text.
pub fn choose(
    source: &Source<'_>,
    plan: &mut Plan,
    texts: &[String],
    seed: u64,
) -> Result<Fitting> {
    let mut rows_of: BTreeMap<Kind, Vec<usize>> = BTreeMap::new();
    for (i, row) in plan.rows.iter().enumerate() {
        if let RowSource::Composed(ids) = &row.source {
            if ids.len() >= 2 {
                let text = texts.get(i).map_or("", String::as_str);
                rows_of
                    .entry(Kind::of(text, ids.len()))
                    .or_default()
                    .push(i);
            }
        }
    }
    let composed: usize = rows_of.values().map(Vec::len).sum();
    let mut kinds: Vec<AutoKind> = rows_of
        .iter()
        .map(|(k, rows)| AutoKind {
            script: k.script.to_string(),
            pieces: k.pieces_name(),
            rows: rows.len(),
            fit: 0,
            validation: 0,
            cosine_fitted: None,
            cosine_plain: None,
            fitted: false,
        })
        .collect();
    let done = |choice: AutoChoice| -> Result<Fitting> {
        Ok(Fitting {
            auto: Some(choice),
            ..Fitting::default()
        })
    };
    if composed == 0 {
        return done(AutoChoice::plain(
            0,
            kinds,
            "no target token is composed of 2 or more pieces".into(),
        ));
    }
    // Held-out source tokens in the target's scripts; their piece counts are known once split.
    let scripts: BTreeSet<&str> = rows_of.keys().map(|k| k.script).collect();
    let cands: Vec<Candidate> = source
        .candidates()
        .iter()
        .filter(|c| scripts.contains(script_of(&c.text)))
        .cloned()
        .collect();
    let cands = ordered_candidates(cands, seed, None);
    let refs: Vec<&Candidate> = cands.iter().collect();
    let pairs: Vec<_> = fit_pairs(source, &refs)?
        .into_iter()
        .filter(|p| rows_of.contains_key(&Kind::of(&p.text, p.pieces.len())))
        .collect();
    if pairs.len() < MIN_PAIRS {
        let names: Vec<String> = kinds
            .iter()
            .map(|k| format!("{} {}", k.script, k.pieces))
            .collect();
        return done(AutoChoice::plain(
            composed,
            kinds,
            format!(
                "the source has {} held-out token(s) like those composed here ({} pieces) to fit a map on; {MIN_PAIRS} are needed",
                pairs.len(),
                names.join(", ")
            ),
        ));
    }
    let (x, y) = pair_rows(source.matrix, &pairs);
    let d = source.matrix.cols;
    let is_val = |i: usize| i % VALIDATION_EVERY == 0;
    let pick = |m: &[f32], val: bool| -> Vec<f32> {
        m.chunks_exact(d.max(1))
            .enumerate()
            .filter(|(i, _)| is_val(*i) == val)
            .flat_map(|(_, r)| r.iter().copied())
            .collect()
    };
    let map = match fit::fit(&pick(&x, false), &pick(&y, false), d, seed) {
        Ok(m) => m,
        Err(Error::NoEvidence(msg)) => return done(AutoChoice::plain(composed, kinds, msg)),
        Err(e) => return Err(e),
    };
    // Each kind's validation: the map as the builder applies it, against the plain mean.
    // (fit pairs, validation pairs, sum of cosines with the map, without, sum of squared gains)
    let mut sums: BTreeMap<Kind, (usize, usize, f64, f64, f64)> = BTreeMap::new();
    let mut tmp = vec![0f32; d];
    for (i, p) in pairs.iter().enumerate() {
        let kind = Kind::of(&p.text, p.pieces.len());
        let s = sums.entry(kind).or_default();
        if !is_val(i) {
            s.0 += 1;
            continue;
        }
        let (xi, yi) = (&x[i * d..(i + 1) * d], &y[i * d..(i + 1) * d]);
        let mut mapped = xi.to_vec();
        map.apply(&mut mapped, &mut tmp);
        let (with, plain) = (cosine(&mapped, yi) as f64, cosine(xi, yi) as f64);
        s.1 += 1;
        s.2 += with;
        s.3 += plain;
        s.4 += (with - plain) * (with - plain);
    }
    let mut fitted_kinds: BTreeSet<Kind> = BTreeSet::new();
    for (k, choice) in rows_of.keys().zip(kinds.iter_mut()) {
        let Some(&(fit, val, with, plain, gain2)) = sums.get(k) else {
            continue;
        };
        choice.fit = fit;
        choice.validation = val;
        if val > 0 {
            choice.cosine_fitted = Some(with / val as f64);
            choice.cosine_plain = Some(plain / val as f64);
            choice.fitted = !map.identity && wins(val, with - plain, gain2);
        }
        if choice.fitted {
            fitted_kinds.insert(*k);
        }
    }
    let mut fitted = 0;
    for k in &fitted_kinds {
        for &i in &rows_of[k] {
            if let RowSource::Composed(ids) = &mut plan.rows[i].source {
                plan.rows[i].source = RowSource::Fitted(std::mem::take(ids));
                fitted += 1;
            }
        }
    }
    if fitted == 0 {
        let reason = if map.identity {
            "the plain mean beat every fitted map on the source's own validation tokens".into()
        } else {
            format!(
                "on no kind composed here did the map beat the plain mean by {WIN_STANDARD_ERRORS} standard errors on {MIN_VALIDATION} or more validation tokens"
            )
        };
        return done(AutoChoice::plain(composed, kinds, reason));
    }
    // The kinds decided, the map the rows get is refitted on every pair (validation ones too),
    // unless that refit falls back to the identity; then scaled to the source's median norm.
    let mut map = match fit::fit(&x, &y, d, seed) {
        Ok(all) if !all.identity => all,
        _ => map,
    };
    map.target_norm = source.median_norm();
    let names: Vec<String> = kinds
        .iter()
        .filter(|k| k.fitted)
        .map(|k| format!("{} {}", k.script, k.pieces))
        .collect();
    Ok(Fitting {
        map: Some(Arc::new(map)),
        auto: Some(AutoChoice {
            used: "compose-fit".into(),
            reason: format!(
                "the map beat the plain mean on the source's own held-out tokens of kind(s) {}",
                names.join(", ")
            ),
            composed,
            fitted,
            kinds,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_wins_by_two_standard_errors_on_five_or_more_tokens() {
        let sums = |gains: &[f64]| -> (usize, f64, f64) {
            (
                gains.len(),
                gains.iter().sum(),
                gains.iter().map(|g| g * g).sum(),
            )
        };
        // 18 tokens, each 0.3 +- 0.1 better: a win (MiniLM's `Common 3` kind looked like this).
        let g: Vec<f64> = (0..18)
            .map(|i| 0.3 + if i % 2 == 0 { 0.1 } else { -0.1 })
            .collect();
        let (n, s, s2) = sums(&g);
        assert!(wins(n, s, s2));
        // Four tokens, however good: too few.
        let (n, s, s2) = sums(&[0.5; 4]);
        assert!(!wins(n, s, s2));
        // A mean gain of 0.01 with a spread of 0.2 on 100 tokens is noise; a loss is no win.
        let g: Vec<f64> = (0..100)
            .map(|i| 0.01 + if i % 2 == 0 { 0.2 } else { -0.2 })
            .collect();
        let (n, s, s2) = sums(&g);
        assert!(!wins(n, s, s2));
        let (n, s, s2) = sums(&[-0.1; 50]);
        assert!(!wins(n, s, s2));
    }

    #[test]
    fn kinds_by_script_and_piece_count() {
        assert_eq!(Kind::of("中国人", 3).script, "Han");
        assert_eq!(Kind::of("##ing", 2).script, "Latin");
        assert_eq!(Kind::of(" hello", 9).pieces, 4);
        assert_eq!(Kind::of("123", 2).script, "Common");
        assert_eq!(Kind::of("1日", 2).script, "Han");
        assert_eq!(Kind::of("x", 4).pieces_name(), "4+");
    }
}

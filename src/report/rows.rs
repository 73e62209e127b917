//! Row-level facts of a transplant: the copied rows as `a-b,c` ranges (the `copied_rows`
//! metadata, read back by `finetune --freeze-copied`), and a note per row that is not an exact
//! copy (`--report`).

use super::RowNote;
use crate::load::vocab::{SourceVocab, TargetVocab};
use crate::matching::{Origin, Plan};

/// Compresses sorted row indices into `a-b,c,d-e`.
pub fn ranges(indices: impl IntoIterator<Item = usize>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    for i in indices {
        run = match run {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some((a, b)) => {
                out.push(if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                });
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some((a, b)) = run {
        out.push(if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        });
    }
    out.join(",")
}

/// Parses `ranges` output back, against a matrix of `rows` rows: a mask with true for every row
/// named. Memory is bounded by `rows` whatever the text says; a malformed range, or one past the
/// end, is an error saying which.
pub fn parse_ranges(s: &str, rows: usize) -> Result<Vec<bool>, String> {
    let mut mask = vec![false; rows];
    let index = |t: &str| -> Result<usize, String> {
        let i: usize = t
            .trim()
            .parse()
            .map_err(|_| format!("`{t}` is not a row number"))?;
        if i >= rows {
            return Err(format!("row {i} is past the end ({rows} rows)"));
        }
        Ok(i)
    };
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (index(a)?, index(b)?),
            None => {
                let i = index(part)?;
                (i, i)
            }
        };
        if b < a {
            return Err(format!("range `{part}` runs backwards"));
        }
        mask[a..=b].fill(true);
    }
    Ok(mask)
}

/// Each source id's token (`?` for an id no token has).
pub fn source_names(source: &SourceVocab) -> Vec<&str> {
    let mut names: Vec<&str> = vec!["?"; source.size];
    for (t, &id) in &source.ids {
        if let Some(n) = names.get_mut(id as usize) {
            *n = t;
        }
    }
    names
}

/// The `--report` notes: every row that is not an exact copy, with how it was made and the source
/// tokens it was built from (`names`: each source id's token).
pub fn notes(target: &TargetVocab, plan: &Plan, names: &[&str], fill: &str) -> Vec<RowNote> {
    let tokens = &target.tokens;
    plan.rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.method != Origin::Exact)
        .map(|(i, r)| RowNote {
            line: i + 1,
            token: tokens[i].clone(),
            text: target
                .bytes_of(i)
                .map(|b| crate::load::vocab::escaped_text(&b)),
            method: r.method.name(fill),
            pieces: match &r.source {
                // Guided rows: each anchor with its weight.
                crate::init::build::RowSource::Weighted(parts) => parts
                    .iter()
                    .map(|&(id, w)| {
                        format!("{}:{w:.3}", names.get(id as usize).copied().unwrap_or("?"))
                    })
                    .collect(),
                _ => r
                    .pieces()
                    .iter()
                    .map(|&id| names.get(id as usize).copied().unwrap_or("?").to_string())
                    .collect(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip() {
        let v = vec![0, 1, 2, 5, 7, 8];
        assert_eq!(ranges(v.clone()), "0-2,5,7-8");
        let mask = parse_ranges("0-2,5,7-8", 9).unwrap();
        let back: Vec<usize> = (0..9).filter(|&i| mask[i]).collect();
        assert_eq!(back, v);
        assert_eq!(ranges(Vec::new()), "");
        assert!(parse_ranges("3-1", 9).unwrap_err().contains("backwards"));
        assert!(parse_ranges("0-9", 9).unwrap_err().contains("past the end"));
        assert!(parse_ranges("0-18446744073709551615", 9).is_err());
        assert!(parse_ranges("0-99999999999999999999", 9).is_err());
        assert!(parse_ranges("x", 9)
            .unwrap_err()
            .contains("not a row number"));
    }
}

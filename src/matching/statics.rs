//! The plan for a static-vector source (`--model vectors.txt`): each target token takes the
//! file's row for the token as written (`exact`), else for its first normalised form the file has
//! (`normalized`: NFKC, trimmed, lower-cased; see [`Vectors::forms`]); else, for a Chinese word
//! (2+ characters, every one a Han ideograph), the mean of the rows of those of its characters the
//! file has (`composed`, each character looked up the same way); else the fill.

use super::{Origin, Plan, Row};
use crate::init::build::RowSource;
use crate::load::vectors::Vectors;
use crate::load::vectors::Wanted;
use rayon::prelude::*;
use unicode_normalization::UnicodeNormalization;

/// A CJK unified or compatibility ideograph (the blocks and extensions through G, and U+3007 〇).
pub fn is_han(c: char) -> bool {
    matches!(c as u32,
        0x3007
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xF900..=0xFAFF
        | 0x20000..=0x2A6DF
        | 0x2A700..=0x2EBEF
        | 0x2F800..=0x2FA1F
        | 0x30000..=0x323AF)
}

/// The characters a token is composed from: its NFKC, trimmed form split into characters, when
/// that has 2+ characters and every one is a Han ideograph; else none.
pub fn han_chars(token: &str) -> Option<Vec<String>> {
    let n: String = token.nfkc().collect();
    let chars: Vec<String> = n.trim().chars().map(String::from).collect();
    let all_han = chars.iter().all(|c| c.chars().next().is_some_and(is_han));
    (chars.len() >= 2 && all_han).then_some(chars)
}

/// Every word the reader must keep for these target tokens: their forms and, when composing, the
/// forms of a Chinese word's characters.
pub fn wanted(tokens: &[String], compose: bool) -> Wanted {
    Wanted::new(tokens.iter().flat_map(|t| {
        let chars = if compose {
            han_chars(t).unwrap_or_default()
        } else {
            Vec::new()
        };
        Vectors::forms(t).into_iter().chain(
            chars
                .iter()
                .flat_map(|c| Vectors::forms(c))
                .collect::<Vec<_>>(),
        )
    }))
}

/// One row per target token, in target order. `find` gives a token's kept row and whether it was
/// found as written ([`Vectors::find`]).
pub fn plan(
    tokens: &[String],
    find: &(dyn Fn(&str) -> Option<(usize, bool)> + Sync),
    compose: bool,
) -> Plan {
    let rows = tokens
        .par_iter()
        .map(|t| {
            if let Some((i, exact)) = find(t) {
                return Row {
                    source: RowSource::Copy(i as u32),
                    method: if exact {
                        Origin::Exact
                    } else {
                        Origin::Normalized
                    },
                };
            }
            let pieces: Vec<u32> = if compose {
                han_chars(t)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|c| find(c).map(|(i, _)| i as u32))
                    .collect()
            } else {
                Vec::new()
            };
            if pieces.is_empty() {
                Row {
                    source: RowSource::Fill,
                    method: Origin::Fill,
                }
            } else {
                Row {
                    source: RowSource::Composed(pieces),
                    method: Origin::Composed,
                }
            }
        })
        .collect();
    Plan {
        rows,
        tokenizer_errors: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn finder(words: &[&str]) -> impl Fn(&str) -> Option<(usize, bool)> + Sync {
        let index: HashMap<String, usize> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), i))
            .collect();
        move |t: &str| {
            if let Some(&i) = index.get(t) {
                return Some((i, true));
            }
            Vectors::forms(t)
                .iter()
                .skip(1)
                .find_map(|f| index.get(f).copied())
                .map(|i| (i, false))
        }
    }

    #[test]
    fn exact_normalized_composed_from_characters_fill() {
        let words = ["apple", "Apple", "中", "国", "人", "abc"];
        let find = finder(&words);
        let tokens: Vec<String> = [
            "Apple",
            "APPLE",
            "ＡＢＣ",
            " abc",
            "中国",
            "中国人民",
            "人",
            "xyzzy",
            "民主",
            "中x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = plan(&tokens, &find, true);
        let got: Vec<(Origin, RowSource)> = p
            .rows
            .iter()
            .map(|r| (r.method, r.source.clone()))
            .collect();
        use RowSource::*;
        assert_eq!(
            got,
            vec![
                (Origin::Exact, Copy(1)),
                (Origin::Normalized, Copy(0)),
                (Origin::Normalized, Copy(5)),
                (Origin::Normalized, Copy(5)),
                (Origin::Composed, Composed(vec![2, 3])),
                // 民 is missing: the characters the file has.
                (Origin::Composed, Composed(vec![2, 3, 4])),
                (Origin::Exact, Copy(4)),
                // Not Chinese: never split into letters.
                (Origin::Fill, Fill),
                // No character known.
                (Origin::Fill, Fill),
                // Not every character is Han.
                (Origin::Fill, Fill),
            ]
        );
        // Without composition, Chinese words get the fill.
        let p = plan(&tokens[4..5], &find, false);
        assert_eq!(p.rows[0].method, Origin::Fill);
    }

    #[test]
    fn wanted_holds_forms_and_characters() {
        let w = wanted(&["ＡＢＣ".to_string(), "中國".to_string()], true);
        for s in ["ＡＢＣ", "ABC", "abc", "中國", "中", "國"] {
            assert!(w.contains(s), "{s}");
        }
        let w = wanted(&["中國".to_string()], false);
        assert!(!w.contains("中"));
        assert!(is_han('〇') && is_han('𠀀') && !is_han('a') && !is_han('あ'));
    }
}

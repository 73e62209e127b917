//! Which source row each target token takes: an exact match; else the same token after the source
//! tokenizer's normalisation (case, accents) or NFKC (full-width to half-width); else its WordPiece
//! continuation form (`x` <-> `##x`); else, for byte-level BPE and SentencePiece sources, the source
//! token that decodes to it; else (with `compose`) the mean of its pieces under the source
//! tokenizer; else the fill method. Every row records its method for counts and reports.
//!
//! (Over 400 lines only with its tests, over a quarter of it: the two ways of planning, a word list
//! ([`plan`]) and a tokenizer.json target's coded tokens ([`plan_target`]), share the copy search
//! and the composing.)

pub mod holdout;
pub mod statics;
mod tokenizer;

pub use tokenizer::{SourceTokenizer, Style};

use crate::init::build::RowSource;
use crate::load::vocab::{self, SourceVocab, Spelling, TargetVocab};
use rayon::prelude::*;
use tokenizer::byte_level;
use unicode_normalization::UnicodeNormalization;

/// How a row was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Exact,
    /// Equal after the source's normalisation or NFKC.
    Normalized,
    /// `x` matched `##x` or the reverse.
    Continuation,
    /// A byte-level BPE or SentencePiece token that decodes to the target token.
    Decoded,
    /// The mean of the token's pieces.
    Composed,
    /// Weighted source rows of its nearest anchors in a static-vector space (`--aux-vectors`).
    Guided,
    /// The fill method (random, zeros, mean).
    Fill,
}

impl Origin {
    pub fn is_copy(self) -> bool {
        matches!(
            self,
            Origin::Exact | Origin::Normalized | Origin::Continuation | Origin::Decoded
        )
    }

    pub fn name(self, fill: &str) -> String {
        match self {
            Origin::Exact => "exact".into(),
            Origin::Normalized => "normalized".into(),
            Origin::Continuation => "continuation".into(),
            Origin::Decoded => "decoded".into(),
            Origin::Composed => "composed".into(),
            Origin::Guided => "guided".into(),
            Origin::Fill => fill.into(),
        }
    }
}

/// One output row: where it comes from and how that was decided. The source token ids it was built
/// from (the match, or the pieces) are in `source`; their names are looked up only when a report
/// asks (strings per row would dominate the memory of a multi-million-line vocabulary).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub source: RowSource,
    pub method: Origin,
}

impl Row {
    /// The source ids the row was built from: the copied token, or the pieces (none for a fill;
    /// a guided row's anchors carry weights and are read from its source).
    pub fn pieces(&self) -> &[u32] {
        match &self.source {
            RowSource::Copy(id) => std::slice::from_ref(id),
            RowSource::Composed(ids) | RowSource::Fitted(ids) => ids,
            RowSource::Weighted(_) | RowSource::Fill => &[],
        }
    }
}

impl AsRef<RowSource> for Row {
    fn as_ref(&self) -> &RowSource {
        &self.source
    }
}

/// One row per target token, in target order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rows: Vec<Row>,
    /// Tokens the source tokenizer failed to encode (they got the fill).
    pub tokenizer_errors: usize,
}

impl Plan {
    pub fn copied(&self) -> usize {
        self.rows.iter().filter(|r| r.source.is_copy()).count()
    }
}

/// Finds a copy for one token: exact, normalised, continuation or decoded.
fn find_copy(
    t: &str,
    source: &SourceVocab,
    tok: Option<&SourceTokenizer>,
    style: Style,
) -> Option<(u32, Origin)> {
    let look = |s: &str| source.ids.get(s).copied();
    if let Some(id) = source.ids.get(t) {
        return Some((*id, Origin::Exact));
    }
    // Most tokens are already in NFKC and unchanged by the source's normaliser: no allocation then.
    let nfkc: Option<String> = match unicode_normalization::is_nfkc_quick(t.chars()) {
        unicode_normalization::IsNormalized::Yes => None,
        _ => Some(t.nfkc().collect::<String>()).filter(|n| n != t),
    };
    let mut forms: Vec<String> = Vec::new();
    if let Some(n) = &nfkc {
        forms.push(n.clone());
    }
    if let Some(tok) = tok {
        forms.extend(tok.normalize(t));
        if let Some(n) = &nfkc {
            forms.extend(tok.normalize(n));
        }
    }
    forms.retain(|f| f != t && !f.is_empty());
    forms.dedup();
    for f in &forms {
        if let Some(id) = look(f) {
            return Some((id, Origin::Normalized));
        }
    }
    if style == Style::WordPiece {
        let mut all = vec![t.to_string()];
        all.extend(forms.iter().cloned());
        for f in &all {
            let other = match f.strip_prefix("##") {
                Some(rest) if !rest.is_empty() => rest.to_string(),
                Some(_) => continue,
                None => format!("##{f}"),
            };
            if let Some(id) = look(&other) {
                return Some((id, Origin::Continuation));
            }
        }
    }
    match style {
        Style::ByteLevel => {
            for f in std::iter::once(t.to_string()).chain(forms.iter().cloned()) {
                let Some(b) = byte_level(&f) else { continue };
                for cand in [b.clone(), format!("\u{120}{b}")] {
                    if let Some(id) = look(&cand) {
                        return Some((id, Origin::Decoded));
                    }
                }
            }
        }
        Style::SentencePiece => {
            for f in std::iter::once(t.to_string()).chain(forms.iter().cloned()) {
                let spaced = f.replace(' ', "\u{2581}");
                for cand in [format!("\u{2581}{spaced}"), spaced] {
                    if let Some(id) = look(&cand) {
                        return Some((id, Origin::Decoded));
                    }
                }
            }
        }
        _ => {}
    }
    None
}

/// How many tokens are tokenized in one batch: bounds the memory of encodings.
const BATCH: usize = 8192;

/// Matches every target token and, with `compose`, builds the others from their pieces.
pub fn plan(
    tokens: &[String],
    source: &SourceVocab,
    tok: Option<&SourceTokenizer>,
    compose: bool,
) -> Plan {
    // Without a tokenizer, the vocabulary itself says whether it is WordPiece (decided once).
    let style = match tok {
        Some(t) => t.style,
        None if source.ids.keys().any(|k| k.starts_with("##")) => Style::WordPiece,
        None => Style::Other,
    };
    let found: Vec<Option<(u32, Origin)>> = tokens
        .par_iter()
        .map(|t| find_copy(t, source, tok, style))
        .collect();
    let mut oov = Vec::new();
    let mut rows: Vec<Row> = found
        .into_iter()
        .enumerate()
        .map(|(i, f)| match f {
            Some((id, method)) => Row {
                source: RowSource::Copy(id),
                method,
            },
            None => {
                oov.push(i);
                Row {
                    source: RowSource::Fill,
                    method: Origin::Fill,
                }
            }
        })
        .collect();
    let mut tokenizer_errors = 0;
    if let (true, Some(tok)) = (compose, tok) {
        let texts: Vec<&str> = oov.iter().map(|&i| tokens[i].as_str()).collect();
        tokenizer_errors = compose_into(&mut rows, &oov, &texts, source.size, |t| tok.pieces(t));
    }
    Plan {
        rows,
        tokenizer_errors,
    }
}

/// Makes rows `idx` the mean of the pieces `pieces_of` gives their `texts`, in batches. Returns
/// how many texts it could not split (they keep the fill).
fn compose_into(
    rows: &mut [Row],
    idx: &[usize],
    texts: &[&str],
    size: usize,
    pieces_of: impl Fn(&[&str]) -> Vec<Option<Vec<u32>>>,
) -> usize {
    let mut errors = 0;
    for (chunk, texts) in idx.chunks(BATCH).zip(texts.chunks(BATCH)) {
        for (&i, ids) in chunk.iter().zip(pieces_of(texts)) {
            let Some(ids) = ids else {
                errors += 1;
                continue;
            };
            // Pieces outside the embedding's vocabulary (added tokens past the matrix) cannot
            // be averaged; a token left with none falls back to the fill method.
            let ids: Vec<u32> = ids.into_iter().filter(|&id| (id as usize) < size).collect();
            if ids.is_empty() {
                continue;
            }
            rows[i] = Row {
                source: RowSource::Composed(ids),
                method: Origin::Composed,
            };
        }
    }
    errors
}

/// What a target token is looked up and split as.
enum Query {
    /// Text (a word-list line, an added token, or what a coded token decodes to; `decoded` then).
    Text { text: String, decoded: bool },
    /// A byte-level source's own spelling of the bytes: looked up as is, split by its BPE model.
    Spelled(String),
    /// Bytes that are not whole characters, for a source that reads text: the whole characters
    /// among them (possibly none).
    Partial(String),
}

/// Matches a target vocabulary, minding how it spells tokens: a tokenizer.json target's tokens
/// (byte-level `Ġduring`, SentencePiece `▁during`, `<0xE7>`) stand for bytes. With a byte-level
/// source those bytes in its code are looked up and, with `compose`, split by its BPE model
/// alone (partial characters included); with any other source they are decoded to text, looked
/// up and tokenised as text, and a token holding part of a character is composed from its whole
/// characters, or gets the fill when it has none. A word list goes to [`plan`].
pub fn plan_target(
    target: &TargetVocab,
    source: &SourceVocab,
    tok: Option<&SourceTokenizer>,
    compose: bool,
) -> Plan {
    if target.spelling == Spelling::Text {
        return plan(&target.tokens, source, tok, compose);
    }
    let style = tok.map_or(Style::Other, |t| t.style);
    let queries: Vec<Query> = (0..target.tokens.len())
        .into_par_iter()
        .map(|i| match target.bytes_of(i) {
            None => Query::Text {
                text: target.tokens[i].clone(),
                decoded: false,
            },
            Some(b) if style == Style::ByteLevel => Query::Spelled(vocab::byte_level_spelling(&b)),
            Some(b) => match String::from_utf8(b) {
                Ok(text) => Query::Text {
                    text,
                    decoded: true,
                },
                Err(e) => Query::Partial(vocab::lossy_text(e.as_bytes())),
            },
        })
        .collect();
    let same_code = style == Style::SentencePiece && target.spelling == Spelling::SentencePiece;
    let found: Vec<Option<(u32, Origin)>> = queries
        .par_iter()
        .zip(&target.tokens)
        .map(|(q, t)| match q {
            // A SentencePiece source has a SentencePiece target's piece as spelled (`▁the`,
            // `<0xE7>`).
            _ if same_code && source.ids.contains_key(t) => {
                source.ids.get(t).map(|&id| (id, Origin::Exact))
            }
            Query::Text { text, decoded } => {
                let hit = find_copy(text, source, tok, style).or_else(|| {
                    // A word-initial token (" during") is the word to a source that marks
                    // word starts by no space (WordPiece); SentencePiece's `▁` is tried above.
                    let word = text.strip_prefix(' ').filter(|w| {
                        *decoded
                            && style != Style::SentencePiece
                            && !w.is_empty()
                            && !w.starts_with(char::is_whitespace)
                    })?;
                    find_copy(word, source, tok, style)
                });
                match hit {
                    // The source has the text the token stands for, under another spelling.
                    Some((id, Origin::Exact)) if *decoded && text != t => {
                        Some((id, Origin::Decoded))
                    }
                    other => other,
                }
            }
            Query::Spelled(s) => source.ids.get(s).map(|&id| {
                (
                    id,
                    if s == t {
                        Origin::Exact
                    } else {
                        Origin::Decoded
                    },
                )
            }),
            Query::Partial(_) => None,
        })
        .collect();
    let mut rows: Vec<Row> = Vec::with_capacity(found.len());
    let (mut as_text, mut as_spelled) = (Vec::new(), Vec::new());
    for (i, f) in found.into_iter().enumerate() {
        match f {
            Some((id, method)) => rows.push(Row {
                source: RowSource::Copy(id),
                method,
            }),
            None => {
                rows.push(Row {
                    source: RowSource::Fill,
                    method: Origin::Fill,
                });
                match &queries[i] {
                    Query::Spelled(_) => as_spelled.push(i),
                    Query::Partial(rest) if rest.trim().is_empty() => {}
                    _ => as_text.push(i),
                }
            }
        }
    }
    let mut tokenizer_errors = 0;
    if let (true, Some(tok)) = (compose, tok) {
        let text_of = |i: &usize| match &queries[*i] {
            Query::Text { text, .. } | Query::Partial(text) | Query::Spelled(text) => text.as_str(),
        };
        let texts: Vec<&str> = as_text.iter().map(text_of).collect();
        tokenizer_errors +=
            compose_into(&mut rows, &as_text, &texts, source.size, |t| tok.pieces(t));
        let spelled: Vec<&str> = as_spelled.iter().map(text_of).collect();
        tokenizer_errors += compose_into(&mut rows, &as_spelled, &spelled, source.size, |t| {
            tok.model_pieces(t)
        });
    }
    Plan {
        rows,
        tokenizer_errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::vocab::SourceKind;
    use std::collections::HashMap;

    fn source(tokens: &[&str]) -> SourceVocab {
        let ids: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        SourceVocab {
            size: tokens.len(),
            ids,
            kind: SourceKind::VocabTxt,
            path: "vocab.txt".into(),
            special: tokens
                .iter()
                .filter(|t| t.starts_with('['))
                .map(|t| t.to_string())
                .collect(),
            repeated: 0,
            repeated_examples: Vec::new(),
        }
    }

    fn tokens(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_normalized_continuation_composed_fill() {
        let src = source(&["[PAD]", "[UNK]", "abc", "##ing", "中", "国", "run", "café"]);
        let tok = SourceTokenizer::from_wordpiece_vocab(&src, true).unwrap();
        let target = tokens(&["abc", "ＡＢＣ", "ABC", "ing", "##run", "中国", "😀", "cafe"]);
        let p = plan(&target, &src, Some(&tok), true);
        let methods: Vec<Origin> = p.rows.iter().map(|r| r.method).collect();
        assert_eq!(
            methods,
            vec![
                Origin::Exact,
                Origin::Normalized,
                Origin::Normalized,
                Origin::Continuation,
                Origin::Continuation,
                Origin::Composed,
                Origin::Fill,
                Origin::Fill,
            ]
        );
        assert_eq!(p.rows[1].source, RowSource::Copy(2));
        assert_eq!(p.rows[3].source, RowSource::Copy(3));
        assert_eq!(p.rows[5].source, RowSource::Composed(vec![4, 5]));
        assert_eq!(p.rows[5].pieces(), &[4, 5]);
        assert_eq!(p.rows[1].pieces(), &[2]);
        assert!(p.rows[6].pieces().is_empty());
        assert_eq!(p.tokenizer_errors, 0);
    }

    #[test]
    fn cased_source_does_not_lowercase() {
        let src = source(&["[UNK]", "abc"]);
        let tok = SourceTokenizer::from_wordpiece_vocab(&src, false).unwrap();
        let p = plan(&tokens(&["ABC"]), &src, Some(&tok), false);
        assert_eq!(p.rows[0].method, Origin::Fill);
    }

    #[test]
    fn sentencepiece_tokens_match_without_the_word_marker() {
        let src = source(&["<unk>", "\u{2581}hello", "\u{2581}new\u{2581}york", "world"]);
        let mut tok = SourceTokenizer::from_wordpiece_vocab(&src, false).unwrap();
        tok.style = Style::SentencePiece;
        let p = plan(
            &tokens(&["hello", "new york", "world"]),
            &src,
            Some(&tok),
            false,
        );
        let methods: Vec<Origin> = p.rows.iter().map(|r| r.method).collect();
        assert_eq!(
            methods,
            vec![Origin::Decoded, Origin::Decoded, Origin::Exact]
        );
        assert_eq!(p.rows[0].source, RowSource::Copy(1));
        assert_eq!(p.rows[1].source, RowSource::Copy(2));
    }

    #[test]
    fn sentencepiece_target_pieces_are_bytes_and_spaces() {
        let src = source(&["<unk>", "\u{2581}hello", "<0xE7>", "world", "hi"]);
        let mut tok = SourceTokenizer::from_wordpiece_vocab(&src, false).unwrap();
        tok.style = Style::SentencePiece;
        let mut target = TargetVocab::from_words(
            tokens(&[
                "\u{2581}hello",
                "<0xE7>",
                "\u{2581}world",
                "<0x68>",
                "<0xE4>",
            ]),
            "t.json",
        );
        target.spelling = Spelling::SentencePiece;
        let p = plan_target(&target, &src, Some(&tok), true);
        let got: Vec<(Origin, RowSource)> = p
            .rows
            .iter()
            .map(|r| (r.method, r.source.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Origin::Exact, RowSource::Copy(1)),
                (Origin::Exact, RowSource::Copy(2)),
                // " world": the text's pieces.
                (Origin::Composed, RowSource::Composed(vec![3])),
                // The byte 0x68 is "h": no token "h", so the pieces of "h" (the unknown token,
                // left out): the fill.
                (Origin::Fill, RowSource::Fill),
                // A lone lead byte for a text tokenizer: the fill.
                (Origin::Fill, RowSource::Fill),
            ]
        );
        // A word list is matched as before.
        let words = TargetVocab::from_words(tokens(&["hi"]), "v.txt");
        assert_eq!(
            plan_target(&words, &src, Some(&tok), true).rows[0].source,
            RowSource::Copy(4)
        );
    }

    #[test]
    fn our_byte_code_is_the_tokenizers_crates() {
        for c in (0u32..0x800)
            .chain(0x4E00..0x4F00)
            .filter_map(char::from_u32)
        {
            let s = c.to_string();
            assert_eq!(
                vocab::byte_level_spelling(s.as_bytes()),
                byte_level(&s).unwrap(),
                "{c:?}"
            );
        }
    }

    #[test]
    fn byte_level_tokens_match_their_human_form() {
        assert_eq!(byte_level("中").unwrap(), "ä¸Ń");
        assert_eq!(byte_level(" a").unwrap(), "Ġa");
    }
}

//! Which source row each target token takes: an exact match; else the same token after the source
//! tokenizer's normalisation (case, accents) or NFKC (full-width to half-width); else its WordPiece
//! continuation form (`x` <-> `##x`); else, for byte-level BPE and SentencePiece sources, the source
//! token that decodes to it; else (with `compose`) the mean of its pieces under the source
//! tokenizer; else the fill method. Every row records its method for counts and reports.

use crate::align::RowSource;
use crate::error::{Error, Result};
use crate::report::RowNote;
use crate::vocab::SourceVocab;
use rayon::prelude::*;
use std::collections::HashSet;
use std::path::Path;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::{BertNormalizer, NormalizerWrapper};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, Tokenizer};
use unicode_normalization::UnicodeNormalization;

/// How a row was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Exact,
    /// Equal after the source's normalisation or NFKC.
    Normalized,
    /// `x` matched `##x` or the reverse.
    Continuation,
    /// A byte-level BPE or SentencePiece token that decodes to the target token.
    Decoded,
    /// The mean of the token's pieces.
    Composed,
    /// The fill method (random, zeros, mean).
    Fill,
}

impl Method {
    pub fn is_copy(self) -> bool {
        matches!(
            self,
            Method::Exact | Method::Normalized | Method::Continuation | Method::Decoded
        )
    }

    pub fn name(self, fill: &str) -> String {
        match self {
            Method::Exact => "exact".into(),
            Method::Normalized => "normalized".into(),
            Method::Continuation => "continuation".into(),
            Method::Decoded => "decoded".into(),
            Method::Composed => "composed".into(),
            Method::Fill => fill.into(),
        }
    }
}

/// How the source vocabulary spells tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    WordPiece,
    ByteLevel,
    SentencePiece,
    Other,
}

/// The source model's tokenizer, and what we learned about its normalisation.
pub struct SourceTokenizer {
    tok: Tokenizer,
    pub style: Style,
    pub lowercase: bool,
    pub strip_accents: bool,
    special_ids: HashSet<u32>,
}

impl SourceTokenizer {
    /// From a tokenizer.json (padding and truncation switched off: we tokenize single words).
    pub fn from_file(path: &Path, source: &SourceVocab) -> Result<Self> {
        let mut tok = Tokenizer::from_file(path)
            .map_err(|e| Error::file(path, format!("not a readable tokenizer.json: {e}")))?;
        tok.with_padding(None);
        tok.with_truncation(None)
            .map_err(|e| Error::file(path, e.to_string()))?;
        let (lowercase, strip_accents) = tok
            .get_normalizer()
            .map(normalizer_flags)
            .unwrap_or((false, false));
        let style = detect_style(&tok, source);
        Ok(Self::finish(tok, style, lowercase, strip_accents, source))
    }

    /// A BERT WordPiece tokenizer built from vocab.txt: Chinese characters split, lower-casing (and
    /// accent stripping) as the model's tokenizer_config says (default: on, as in transformers).
    pub fn from_wordpiece_vocab(source: &SourceVocab, lowercase: bool) -> Result<Self> {
        let unk = if source.ids.contains_key("[UNK]") {
            "[UNK]"
        } else {
            source
                .special
                .first()
                .map(String::as_str)
                .unwrap_or("[UNK]")
        };
        // Built from our own map, not WordPiece::from_file, which trims each line and so would
        // lose bert-base-chinese's U+2028 tokens.
        let vocab: ahash::AHashMap<String, u32> =
            source.ids.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let wp = WordPiece::builder()
            .vocab(vocab)
            .unk_token(unk.to_string())
            .build()
            .map_err(|e| {
                Error::file(&source.path, format!("building a WordPiece tokenizer: {e}"))
            })?;
        let mut tok = Tokenizer::new(wp);
        tok.with_normalizer(Some(BertNormalizer::new(
            true,
            true,
            Some(lowercase),
            lowercase,
        )))
        .map_err(|e| Error::file(&source.path, e.to_string()))?;
        tok.with_pre_tokenizer(Some(BertPreTokenizer));
        Ok(Self::finish(
            tok,
            Style::WordPiece,
            lowercase,
            lowercase,
            source,
        ))
    }

    fn finish(
        tok: Tokenizer,
        style: Style,
        lowercase: bool,
        strip: bool,
        source: &SourceVocab,
    ) -> Self {
        let mut special_ids: HashSet<u32> = source
            .special
            .iter()
            .filter_map(|t| source.ids.get(t).copied())
            .collect();
        special_ids.extend(
            tok.get_added_tokens_decoder()
                .iter()
                .filter(|(_, t)| t.special)
                .map(|(id, _)| *id),
        );
        SourceTokenizer {
            tok,
            style,
            lowercase,
            strip_accents: strip,
            special_ids,
        }
    }

    /// The token as the source would normalise it (case, accents); None when that changes nothing.
    fn normalize(&self, s: &str) -> Option<String> {
        let lower = self.lowercase && s.chars().any(char::is_uppercase);
        let strip = self.strip_accents && s.nfd().any(is_combining_mark);
        if !lower && !strip {
            return None;
        }
        let mut out = s.to_string();
        if self.strip_accents {
            out = out.nfd().filter(|c| !is_combining_mark(*c)).nfc().collect();
        }
        if self.lowercase {
            out = out.to_lowercase();
        }
        Some(out)
    }

    /// Pieces (ids) of each text, special tokens and unknowns left out. A text the tokenizer
    /// cannot encode (a WordPiece vocabulary without an unknown token meeting an unknown word)
    /// gets no pieces, and so falls back to the fill method.
    fn pieces(&self, texts: &[&str]) -> Vec<Vec<u32>> {
        let keep = |e: &tokenizers::Encoding| -> Vec<u32> {
            e.get_ids()
                .iter()
                .copied()
                .filter(|id| !self.special_ids.contains(id))
                .collect()
        };
        // The _fast variants skip computing character offsets, which we do not use.
        match self.tok.encode_batch_fast(texts.to_vec(), false) {
            Ok(enc) => enc.iter().map(keep).collect(),
            Err(_) => texts
                .par_iter()
                .map(|t| {
                    self.tok
                        .encode(*t, false)
                        .map(|e| keep(&e))
                        .unwrap_or_default()
                })
                .collect(),
        }
    }
}

fn is_combining_mark(c: char) -> bool {
    unicode_normalization::char::is_combining_mark(c)
}

/// (lowercase, strip accents) of a tokenizer.json normaliser.
fn normalizer_flags(n: &NormalizerWrapper) -> (bool, bool) {
    match n {
        NormalizerWrapper::BertNormalizer(b) => {
            (b.lowercase, b.strip_accents.unwrap_or(b.lowercase))
        }
        NormalizerWrapper::Lowercase(_) => (true, false),
        NormalizerWrapper::StripAccents(_) => (false, true),
        NormalizerWrapper::Sequence(s) => s
            .as_ref()
            .iter()
            .map(normalizer_flags)
            .fold((false, false), |a, b| (a.0 || b.0, a.1 || b.1)),
        _ => (false, false),
    }
}

fn detect_style(tok: &Tokenizer, source: &SourceVocab) -> Style {
    let byte_level_pre = |p: &PreTokenizerWrapper| match p {
        PreTokenizerWrapper::ByteLevel(_) => true,
        PreTokenizerWrapper::Sequence(s) => s
            .as_ref()
            .iter()
            .any(|p| matches!(p, PreTokenizerWrapper::ByteLevel(_))),
        _ => false,
    };
    if matches!(tok.get_decoder(), Some(DecoderWrapper::ByteLevel(_)))
        || tok.get_pre_tokenizer().is_some_and(byte_level_pre)
    {
        return Style::ByteLevel;
    }
    if matches!(tok.get_decoder(), Some(DecoderWrapper::Metaspace(_)))
        || matches!(
            tok.get_pre_tokenizer(),
            Some(PreTokenizerWrapper::Metaspace(_))
        )
    {
        return Style::SentencePiece;
    }
    if matches!(tok.get_model(), ModelWrapper::WordPiece(_)) {
        return Style::WordPiece;
    }
    let share = |p: &str| {
        source.ids.keys().filter(|k| k.starts_with(p)).count() * 100 / source.ids.len().max(1)
    };
    if share("##") >= 5 {
        Style::WordPiece
    } else if share("\u{2581}") >= 5 {
        Style::SentencePiece
    } else if share("\u{120}") >= 5 {
        Style::ByteLevel
    } else {
        Style::Other
    }
}

/// A string in GPT-2's byte-to-unicode alphabet, through the tokenizers crate's own ByteLevel.
fn byte_level(s: &str) -> Option<String> {
    let mut pts = PreTokenizedString::from(s);
    ByteLevel::new(false, false, false)
        .pre_tokenize(&mut pts)
        .ok()?;
    Some(
        pts.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(s, _, _)| s)
            .collect(),
    )
}

/// Row sources for every target token, with their methods and notes for non-exact rows.
pub struct Plan {
    pub rows: Vec<RowSource>,
    pub methods: Vec<Method>,
    pub notes: Vec<RowNote>,
}

/// Finds a copy for one token: exact, normalised, continuation or decoded.
fn find_copy(
    t: &str,
    source: &SourceVocab,
    tok: Option<&SourceTokenizer>,
    style: Style,
) -> Option<(u32, Method, String)> {
    let look = |s: &str| source.ids.get(s).map(|&id| (id, s.to_string()));
    if let Some(id) = source.ids.get(t) {
        return Some((*id, Method::Exact, t.to_string()));
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
        if let Some((id, s)) = look(f) {
            return Some((id, Method::Normalized, s));
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
            if let Some((id, s)) = look(&other) {
                return Some((id, Method::Continuation, s));
            }
        }
    }
    match style {
        Style::ByteLevel => {
            for f in std::iter::once(t.to_string()).chain(forms.iter().cloned()) {
                let Some(b) = byte_level(&f) else { continue };
                for cand in [b.clone(), format!("\u{120}{b}")] {
                    if let Some((id, s)) = look(&cand) {
                        return Some((id, Method::Decoded, s));
                    }
                }
            }
        }
        Style::SentencePiece => {
            for f in std::iter::once(t.to_string()).chain(forms.iter().cloned()) {
                let spaced = f.replace(' ', "\u{2581}");
                for cand in [format!("\u{2581}{spaced}"), spaced] {
                    if let Some((id, s)) = look(&cand) {
                        return Some((id, Method::Decoded, s));
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
    fill_name: &str,
) -> Result<Plan> {
    // Without a tokenizer, the vocabulary itself says whether it is WordPiece (decided once).
    let style = match tok {
        Some(t) => t.style,
        None if source.ids.keys().any(|k| k.starts_with("##")) => Style::WordPiece,
        None => Style::Other,
    };
    let found: Vec<Option<(u32, Method, String)>> = tokens
        .par_iter()
        .map(|t| find_copy(t, source, tok, style))
        .collect();
    let mut rows = Vec::with_capacity(tokens.len());
    let mut methods = Vec::with_capacity(tokens.len());
    let mut pieces_of: Vec<Vec<String>> = vec![Vec::new(); tokens.len()];
    let mut oov = Vec::new();
    for (i, f) in found.into_iter().enumerate() {
        match f {
            Some((id, m, s)) => {
                rows.push(if m == Method::Exact {
                    RowSource::Exact(id)
                } else {
                    RowSource::Normalized(id)
                });
                methods.push(m);
                if m != Method::Exact {
                    pieces_of[i] = vec![s];
                }
            }
            None => {
                rows.push(RowSource::Fill);
                methods.push(Method::Fill);
                oov.push(i);
            }
        }
    }
    if let (true, Some(tok)) = (compose, tok) {
        let id_to_token: std::collections::HashMap<u32, &str> =
            source.ids.iter().map(|(k, v)| (*v, k.as_str())).collect();
        for chunk in oov.chunks(BATCH) {
            let texts: Vec<&str> = chunk.iter().map(|&i| tokens[i].as_str()).collect();
            let pieces = tok.pieces(&texts);
            for (&i, ids) in chunk.iter().zip(pieces) {
                // Pieces outside the embedding's vocabulary (added tokens past the matrix) cannot
                // be averaged; a token left with none falls back to the fill method.
                let ids: Vec<u32> = ids
                    .into_iter()
                    .filter(|&id| (id as usize) < source.size)
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                pieces_of[i] = ids
                    .iter()
                    .map(|id| id_to_token.get(id).copied().unwrap_or("?").to_string())
                    .collect();
                rows[i] = RowSource::Composed(ids);
                methods[i] = Method::Composed;
            }
        }
    }
    let notes = methods
        .iter()
        .enumerate()
        .filter(|(_, m)| **m != Method::Exact)
        .map(|(i, m)| RowNote {
            line: i + 1,
            token: tokens[i].clone(),
            method: m.name(fill_name),
            pieces: std::mem::take(&mut pieces_of[i]),
        })
        .collect();
    Ok(Plan {
        rows,
        methods,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::SourceKind;
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
        let p = plan(&target, &src, Some(&tok), true, "random").unwrap();
        assert_eq!(
            p.methods,
            vec![
                Method::Exact,
                Method::Normalized,
                Method::Normalized,
                Method::Continuation,
                Method::Continuation,
                Method::Composed,
                Method::Fill,
                Method::Fill,
            ]
        );
        assert_eq!(p.rows[1], RowSource::Normalized(2));
        assert_eq!(p.rows[3], RowSource::Normalized(3));
        assert_eq!(p.rows[5], RowSource::Composed(vec![4, 5]));
        let note = p.notes.iter().find(|n| n.token == "中国").unwrap();
        assert_eq!(note.pieces, vec!["中", "国"]);
        assert_eq!(note.method, "composed");
        assert_eq!(
            p.notes.iter().find(|n| n.token == "😀").unwrap().method,
            "random"
        );
    }

    #[test]
    fn cased_source_does_not_lowercase() {
        let src = source(&["[UNK]", "abc"]);
        let tok = SourceTokenizer::from_wordpiece_vocab(&src, false).unwrap();
        let p = plan(&tokens(&["ABC"]), &src, Some(&tok), false, "zeros").unwrap();
        assert_eq!(p.methods, vec![Method::Fill]);
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
            "zeros",
        )
        .unwrap();
        assert_eq!(
            p.methods,
            vec![Method::Decoded, Method::Decoded, Method::Exact]
        );
        assert_eq!(p.rows[0], RowSource::Normalized(1));
        assert_eq!(p.rows[1], RowSource::Normalized(2));
    }

    #[test]
    fn byte_level_tokens_match_their_human_form() {
        assert_eq!(byte_level("中").unwrap(), "ä¸Ń");
        assert_eq!(byte_level(" a").unwrap(), "Ġa");
    }
}

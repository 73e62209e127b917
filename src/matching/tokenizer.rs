//! The source model's tokenizer, as matching needs it: how it spells tokens (WordPiece, byte-level
//! BPE, SentencePiece), how it normalises (case, accents), and a token's pieces.

use crate::error::{Error, Result};
use crate::load::vocab::SourceVocab;
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
use tokenizers::{
    Model, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, Tokenizer,
};
use unicode_normalization::UnicodeNormalization;

/// How the source vocabulary spells tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    WordPiece,
    ByteLevel,
    SentencePiece,
    #[default]
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
        let tok = crate::load::vocab::read_tokenizer(path)?;
        Self::from_tokenizer(tok, path, source)
    }

    /// From a tokenizer already parsed from `path`.
    pub fn from_tokenizer(mut tok: Tokenizer, path: &Path, source: &SourceVocab) -> Result<Self> {
        tok.with_padding(None);
        tok.with_truncation(None)
            .map_err(|e| Error::file(path, e.to_string()))?;
        // A tokenizer.json can be valid JSON that makes the tokenizers crate panic on any text
        // (an added token that normalises to nothing: "AddedVocabulary bad split"): one line, not
        // a crash.
        if crate::panics::quiet(|| tok.encode_fast(PROBE, false)).is_none() {
            return Err(Error::file(
                path,
                "the tokenizers library panics on ordinary text with this tokenizer (e.g. an added token that is whitespace or normalises to nothing): the tokenizer is broken",
            ));
        }
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

    /// The tokenizers-crate tokenizer inside (for rebuilding it without some tokens).
    /// Each piece's share of a length-weighted composition: its length in bytes of text (a
    /// byte-level token's characters each stand for one byte), the `##`, `▁` or `Ġ` marker left
    /// out, at least 1; the shares sum to 1.
    pub fn length_weights(&self, ids: &[u32]) -> Vec<f32> {
        let lens: Vec<f32> = ids
            .iter()
            .map(|&id| {
                let t = self.tok.id_to_token(id).unwrap_or_default();
                let n = match self.style {
                    Style::WordPiece => t.strip_prefix("##").unwrap_or(&t).len(),
                    Style::SentencePiece => t.strip_prefix('\u{2581}').unwrap_or(&t).len(),
                    Style::ByteLevel => t.strip_prefix('\u{120}').unwrap_or(&t).chars().count(),
                    Style::Other => t.len(),
                };
                n.max(1) as f32
            })
            .collect();
        let total: f32 = lens.iter().sum();
        lens.iter().map(|l| l / total).collect()
    }

    pub(crate) fn inner(&self) -> &Tokenizer {
        &self.tok
    }

    /// The same source tokenizer with another tokenizers-crate model (see `holdout`).
    pub(super) fn replaced(&self, tok: Tokenizer) -> Self {
        SourceTokenizer {
            tok,
            style: self.style,
            lowercase: self.lowercase,
            strip_accents: self.strip_accents,
            special_ids: self.special_ids.clone(),
        }
    }

    /// Whether the id is a special token (never sampled, never a piece).
    pub(crate) fn is_special(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    /// The token as the source would normalise it (case, accents); None when that changes nothing.
    pub(super) fn normalize(&self, s: &str) -> Option<String> {
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

    /// Pieces (ids) of each text, special tokens and unknowns left out; None for a text the
    /// tokenizer cannot encode (a WordPiece vocabulary without an unknown token meeting an
    /// unknown word, say), which then falls back to the fill method and is counted.
    pub(super) fn pieces(&self, texts: &[&str]) -> Vec<Option<Vec<u32>>> {
        let keep = |e: &tokenizers::Encoding| -> Vec<u32> {
            e.get_ids()
                .iter()
                .copied()
                .filter(|id| !self.special_ids.contains(id))
                .collect()
        };
        // The _fast variants skip computing character offsets, which we do not use. A panic
        // inside the tokenizers crate is caught: the texts are then encoded one by one, and one
        // that panics counts as one the tokenizer cannot encode.
        match crate::panics::quiet(|| self.tok.encode_batch_fast(texts.to_vec(), false)) {
            Some(Ok(enc)) => enc.iter().map(|e| Some(keep(e))).collect(),
            _ => texts
                .par_iter()
                .map(|t| {
                    crate::panics::quiet(|| self.tok.encode(*t, false))
                        .and_then(|r| r.ok())
                        .map(|e| keep(&e))
                })
                .collect(),
        }
    }
}

impl SourceTokenizer {
    /// Pieces (ids) of each string by the tokenizer's model alone, as Python's
    /// `tokenizer.model.tokenize(s)`: no normaliser, no pre-tokenizer. For a byte-level source
    /// given a string already in its byte code (`Ġduring`, a partial character's `çĶ`), these
    /// are the pieces the whole tokenizer would give the bytes it stands for, without mapping
    /// the bytes a second time. Special tokens are left out; None when the model cannot.
    pub(super) fn model_pieces(&self, spelled: &[&str]) -> Vec<Option<Vec<u32>>> {
        let model = self.tok.get_model();
        spelled
            .par_iter()
            .map(|s| {
                model.tokenize(s).ok().map(|toks| {
                    toks.iter()
                        .map(|t| t.id)
                        .filter(|id| !self.special_ids.contains(id))
                        .collect()
                })
            })
            .collect()
    }
}

/// Plain text a working tokenizer encodes without trouble (spaces, tab, punctuation, CJK,
/// an accent, digits).
const PROBE: &str = "Hello world, the 中文 text\tcafé 123.";

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
pub(super) fn byte_level(s: &str) -> Option<String> {
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

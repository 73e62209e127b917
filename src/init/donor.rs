//! A donor model as the guide's auxiliary space (`--donor`): its embedding rows, found by the text
//! a token stands for. Every donor token is decoded by its tokenizer's spelling (WordPiece `##x`
//! continues a word; byte-level `Ġx` is " x" and `çĶļ` the bytes of 甚; SentencePiece `▁x` is
//! " x", `<0xE7>` a byte) to a text and whether it starts a word, normalised as the donor
//! normalises (lower-case, accents stripped for an uncased donor). Source and target tokens are
//! decoded the same way and looked up: the anchors are the source tokens the donor knows. Pure:
//! no I/O.

use crate::init::guide::Anchors;
use crate::linalg::Matrix;
use crate::load::vocab::{byte_fallback, decode_spelling, SourceVocab, Spelling};
use crate::matching::Style;
use std::collections::HashMap;
use unicode_normalization::UnicodeNormalization;

/// A donor's rows, by the text its tokens stand for.
pub struct Donor<'a> {
    matrix: Matrix<'a>,
    /// Word-starting (or whole) tokens and word continuations, by normalised text.
    words: HashMap<String, u32>,
    conts: HashMap<String, u32>,
    lowercase: bool,
    strip_accents: bool,
}

/// What a token stands for: its text (without the marker) and whether it continues a word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub text: String,
    pub continues: bool,
}

impl Text {
    fn new(text: &str, continues: bool) -> Option<Text> {
        Some(Text {
            text: text.to_string(),
            continues,
        })
    }
}

/// Whether a character is one of the byte-level alphabet's stand-ins (U+0100..U+0143): a string
/// with one is a byte-level token, not text.
fn is_stand_in(c: char) -> bool {
    ('\u{100}'..='\u{143}').contains(&c)
}

/// What a vocabulary token of a tokenizer with this spelling stands for. None for a token that is
/// not text on its own (part of a character, an empty marker).
pub fn token_text(token: &str, style: Style) -> Option<Text> {
    let text = match style {
        Style::WordPiece => match token.strip_prefix("##") {
            Some(rest) if !rest.is_empty() => return Text::new(rest, true),
            _ => return Text::new(token, false),
        },
        Style::ByteLevel => String::from_utf8(decode_spelling(token, Spelling::ByteLevel)?).ok()?,
        Style::SentencePiece => {
            String::from_utf8(decode_spelling(token, Spelling::SentencePiece)?).ok()?
        }
        Style::Other => return Text::new(token, false),
    };
    match text.strip_prefix(' ') {
        Some(rest) => Text::new(rest, false),
        None => Text::new(&text, true),
    }
}

/// What a target token stands for, its spelling read from the token itself: `##x` continues a
/// word; `▁x` starts one; a token with a byte-level stand-in character (`Ġ`, `Ċ`, ...) is decoded
/// from bytes (a leading space starts a word); anything else is a word as written.
pub fn marked_text(token: &str) -> Option<Text> {
    if let Some(rest) = token.strip_prefix("##").filter(|r| !r.is_empty()) {
        return Text::new(rest, true);
    }
    if token.starts_with('\u{2581}') || byte_fallback(token).is_some() {
        return token_text(token, Style::SentencePiece);
    }
    if token.chars().any(is_stand_in) {
        if let Some(t) = token_text(token, Style::ByteLevel) {
            return Some(t);
        }
    }
    Text::new(token, false)
}

/// Tokens that stand for no text: specials, and `[unused12]`-style reserved slots.
fn reserved(token: &str, vocab: &SourceVocab) -> bool {
    vocab.special.iter().any(|s| s == token)
        || (token.len() > 2
            && ((token.starts_with('[') && token.ends_with(']'))
                || (token.starts_with('<')
                    && token.ends_with('>')
                    && byte_fallback(token).is_none())))
}

impl<'a> Donor<'a> {
    /// The donor's vocabulary (spelt as `style`, normalised with `lowercase` / `strip_accents`)
    /// and its embedding (a row per id). Where two tokens stand for the same text, the lower id.
    pub fn new(
        vocab: &SourceVocab,
        style: Style,
        (lowercase, strip_accents): (bool, bool),
        matrix: Matrix<'a>,
    ) -> Donor<'a> {
        let mut d = Donor {
            matrix,
            words: HashMap::new(),
            conts: HashMap::new(),
            lowercase,
            strip_accents,
        };
        let mut tokens: Vec<(&String, u32)> = vocab
            .ids
            .iter()
            .map(|(t, id)| (t, *id))
            .filter(|(t, id)| (*id as usize) < matrix.rows && !reserved(t, vocab))
            .collect();
        tokens.sort_by_key(|t| t.1);
        for (t, id) in tokens {
            let Some(text) = token_text(t, style) else {
                continue;
            };
            let key = d.key(&text.text);
            if key.is_empty() {
                continue;
            }
            let map = if text.continues {
                &mut d.conts
            } else {
                &mut d.words
            };
            map.entry(key).or_insert(id);
        }
        d
    }

    pub fn dim(&self) -> usize {
        self.matrix.cols
    }

    /// Distinct texts the donor has a row for.
    pub fn len(&self) -> usize {
        self.words.len() + self.conts.len()
    }

    /// A text as the donor normalises it.
    fn key(&self, text: &str) -> String {
        let t = text.trim();
        let mut out: String = if self.strip_accents {
            t.nfd()
                .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
                .nfc()
                .collect()
        } else {
            t.to_string()
        };
        if self.lowercase {
            out = out.to_lowercase();
        }
        out
    }

    /// The donor id of a text of this kind only.
    fn find_strict(&self, t: &Text) -> Option<u32> {
        let map = if t.continues {
            &self.conts
        } else {
            &self.words
        };
        map.get(&self.key(&t.text)).copied()
    }

    /// The donor id of a text: of its own kind (word start or continuation), else the other.
    pub fn find(&self, t: &Text) -> Option<u32> {
        self.find_strict(t).or_else(|| {
            self.find_strict(&Text {
                text: t.text.clone(),
                continues: !t.continues,
            })
        })
    }

    /// The donor id of a target token ([`marked_text`]).
    pub fn find_token(&self, token: &str) -> Option<u32> {
        marked_text(token).and_then(|t| self.find(&t))
    }

    /// Donor row `id`, as f32.
    pub fn row(&self, id: u32) -> Vec<f32> {
        let mut v = vec![0f32; self.matrix.cols];
        self.matrix.row_f32(id as usize, &mut v);
        v
    }

    /// The donor id of every source token (ids below `vocab_rows`, specials and reserved slots
    /// left out) whose text, decoded as the source spells (`style`), the donor has as the same
    /// kind (word start or continuation), in source id order.
    pub fn shared(&self, source: &SourceVocab, style: Style, vocab_rows: usize) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = source
            .ids
            .iter()
            .filter(|(t, id)| (**id as usize) < vocab_rows && !reserved(t, source))
            .filter_map(|(t, id)| {
                let text = token_text(t, style)?;
                self.find_strict(&text).map(|d| (*id, d))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// The anchors of `shared` pairs: each source id with its donor row.
    pub fn anchors(&self, source: &SourceVocab, shared: &[(u32, u32)]) -> Anchors {
        let names: HashMap<u32, &str> =
            source.ids.iter().map(|(t, id)| (*id, t.as_str())).collect();
        let mut a = Anchors::new(self.dim());
        let mut row = vec![0f32; self.dim()];
        for &(s, d) in shared {
            self.matrix.row_f32(d as usize, &mut row);
            a.push(s, names.get(&s).copied().unwrap_or(""), &row);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::load::vocab::SourceKind;

    fn vocab(tokens: &[&str], special: &[&str]) -> SourceVocab {
        SourceVocab {
            size: tokens.len(),
            ids: tokens
                .iter()
                .enumerate()
                .map(|(i, t)| (t.to_string(), i as u32))
                .collect(),
            kind: SourceKind::VocabTxt,
            path: "vocab.txt".into(),
            special: special.iter().map(|s| s.to_string()).collect(),
            repeated: 0,
            repeated_examples: Vec::new(),
        }
    }

    fn text(t: &str, continues: bool) -> Option<Text> {
        Text::new(t, continues)
    }

    #[test]
    fn tokens_decode_to_their_text_by_spelling() {
        use Style::*;
        assert_eq!(token_text("##ing", WordPiece), text("ing", true));
        assert_eq!(token_text("during", WordPiece), text("during", false));
        assert_eq!(token_text("Ġduring", ByteLevel), text("during", false));
        assert_eq!(token_text("during", ByteLevel), text("during", true));
        assert_eq!(token_text("çĶļä¹Ī", ByteLevel), text("甚么", true));
        assert_eq!(token_text("ĠçĶļ", ByteLevel), text("甚", false));
        // Part of a character is no text.
        assert_eq!(token_text("çĶ", ByteLevel), None);
        assert_eq!(
            token_text("\u{2581}during", SentencePiece),
            text("during", false)
        );
        assert_eq!(token_text("ing", SentencePiece), text("ing", true));
        assert_eq!(token_text("<0x41>", SentencePiece), text("A", true));
        assert_eq!(token_text("<0xE7>", SentencePiece), None);
        // Target tokens: the spelling is read from the token.
        assert_eq!(marked_text("##ing"), text("ing", true));
        assert_eq!(marked_text("\u{2581}during"), text("during", false));
        assert_eq!(marked_text("Ġduring"), text("during", false));
        assert_eq!(marked_text("çĶļä¹Ī"), text("甚么", true));
        assert_eq!(marked_text("café"), text("café", false));
        assert_eq!(marked_text("甚么"), text("甚么", false));
    }

    #[test]
    fn donor_rows_are_found_by_text_and_normalised_as_the_donor_does() {
        let toks = [
            "[UNK]",
            "[unused1]",
            "hello",
            "##ing",
            "ing",
            "cafe",
            "world",
        ];
        let v = vocab(&toks, &["[UNK]"]);
        let rows: Vec<f32> = (0..toks.len() * 2).map(|i| i as f32).collect();
        let bytes: Vec<u8> = rows.iter().flat_map(|x| x.to_le_bytes()).collect();
        let m = Matrix {
            dtype: DType::F32,
            rows: toks.len(),
            cols: 2,
            data: &bytes,
        };
        let d = Donor::new(&v, Style::WordPiece, (true, true), m);
        assert_eq!(d.len(), 5);
        assert_eq!(d.find_token("Hello"), Some(2));
        assert_eq!(d.find_token("Ġhello"), Some(2));
        assert_eq!(d.find_token("\u{2581}Café"), Some(5));
        assert_eq!(d.find_token("##ing"), Some(3));
        assert_eq!(d.find_token("ing"), Some(4));
        // Only the word known: a continuation falls back to it.
        assert_eq!(d.find_token("##world"), Some(6));
        assert_eq!(d.find_token("[unused1]"), None);
        assert_eq!(d.find_token("[UNK]"), None);
        assert_eq!(d.row(5), vec![10.0, 11.0]);
        // A byte-level source: `ing` continues a word (`##ing`), `Ġworld` starts one; anchors
        // match kinds strictly (`world` would not match `##world`).
        let src = vocab(
            &["<|endoftext|>", "Ġhello", "ing", "Ġworld", "Ġxyz", "world"],
            &["<|endoftext|>"],
        );
        let shared = d.shared(&src, Style::ByteLevel, src.size);
        assert_eq!(shared, vec![(1, 2), (2, 3), (3, 6)]);
        let a = d.anchors(&src, &shared);
        assert_eq!(a.ids, vec![1, 2, 3]);
        assert_eq!(a.names, vec!["Ġhello", "ing", "Ġworld"]);
        // A cased donor keeps case.
        let cased = Donor::new(&v, Style::WordPiece, (false, false), m);
        assert_eq!(cased.find_token("Hello"), None);
    }
}

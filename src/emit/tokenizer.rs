//! The emitted tokenizer: the source's tokenizer.json with its vocabulary replaced (WordPiece,
//! SentencePiece Unigram) or extended (any family) so that it produces exactly the new rows;
//! which `--extend` words may be added ([`unfit_new_words`]); the streamed serialisation of an
//! extension ([`Extended`]); and the load-back check of what was written ([`check_written`]).
//!
//! (Over 400 lines because these four share the tokenizer.json layout they depend on: key order,
//! where new tokens go per family, how the tokenizers crate numbers them on load.)

use crate::error::{Error, Result};
use crate::matching::SourceTokenizer;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// The tokenizer model family, from tokenizer.json's `model.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    WordPiece,
    Unigram,
    Bpe,
    Other,
}

pub fn family(tj: &Value) -> Family {
    match tj.pointer("/model/type").and_then(Value::as_str) {
        Some("WordPiece") => Family::WordPiece,
        Some("Unigram") => Family::Unigram,
        Some("BPE") => Family::Bpe,
        // Older files omit the type; the fields tell.
        None if tj.pointer("/model/merges").is_some() => Family::Bpe,
        None if tj.pointer("/model/continuing_subword_prefix").is_some() => Family::WordPiece,
        _ => Family::Other,
    }
}

/// The tokenizer.json that transformers' BertTokenizerFast builds from a vocab.txt (for sources
/// that have only vocab.txt, such as bert-base-chinese).
pub fn wordpiece_from_vocab(
    id_to_token: &[Option<String>],
    lowercase: bool,
    specials: &[String],
) -> Value {
    let mut vocab = Map::new();
    for (i, t) in id_to_token.iter().enumerate() {
        if let Some(t) = t {
            vocab.insert(t.clone(), json!(i));
        }
    }
    let id = |s: &str| {
        id_to_token
            .iter()
            .position(|t| t.as_deref() == Some(s))
            .unwrap_or(0)
    };
    let mut added: Vec<Value> = specials
        .iter()
        .map(|s| added_token(id(s) as u32, s, false, true))
        .collect();
    added.sort_by_key(|v| v["id"].as_u64());
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": lowercase},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [id("[CLS]")], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [id("[SEP]")], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

fn added_token(id: u32, content: &str, normalized: bool, special: bool) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": normalized, "special": special})
}

pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// An added token matches raw text when it holds CJK characters (BERT's normaliser spaces them
/// out, so they would never match normalised text); otherwise normalised text (case folding).
fn added_normalized(t: &str) -> bool {
    !t.chars().any(is_cjk)
}

/// A WordPiece token that BERT's pre-tokeniser can never produce whole (it splits CJK
/// characters, whitespace and punctuation): it is also registered as an added token so that text
/// containing it still tokenizes to its row.
fn wordpiece_unproducible(t: &str) -> bool {
    let body = t.strip_prefix("##").unwrap_or(t);
    body.chars().count() > 1
        && body
            .chars()
            .any(|c| is_cjk(c) || c.is_whitespace() || c.is_ascii_punctuation())
}

/// What the new tokenizer must map.
pub struct Replace<'a> {
    /// Token of each token row; row i is id i.
    pub tokens: &'a [String],
    /// Token -> id (the last row of a repeated token, as transformers reads vocab.txt).
    pub ids: &'a HashMap<String, u32>,
    /// For Unigram scores: the source pieces each new row was composed of.
    pub pieces: &'a [Vec<String>],
}

/// The rule for a new Unigram piece's score, documented in docs/whole-model.md: the source piece's own
/// score when the source has it; for a composed piece the highest score among its pieces, the
/// bare `▁` left out (so the whole word beats its own split, whose score is the sum); otherwise
/// the lowest source score.
fn unigram_score(
    token: &str,
    pieces: &[String],
    scores: &HashMap<&str, f64>,
    min_score: f64,
) -> f64 {
    if let Some(s) = scores.get(token) {
        return *s;
    }
    // The bare word-boundary piece scores high everywhere and says nothing about the word.
    pieces
        .iter()
        .filter(|p| p.as_str() != "\u{2581}")
        .filter_map(|p| scores.get(p.as_str()).copied())
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))))
        .unwrap_or(min_score)
}

/// Why a tokenizer's vocabulary cannot be replaced by a token list.
pub fn cannot_replace(tj: &Value, origin: &Path) -> Error {
    match family(tj) {
        Family::Bpe => Error::Invalid(format!(
            "{}: a BPE tokenizer cannot take a plain token list (a list has no merges); pass --extend to keep the source tokenizer and append the new tokens",
            origin.display()
        )),
        _ => Error::Invalid(format!(
            "{}: tokenizer model type {} is not supported for --emit-model without --extend",
            origin.display(),
            tj.pointer("/model/type").and_then(Value::as_str).unwrap_or("(none)")
        )),
    }
}

/// Replaces the vocabulary of `tj` (WordPiece or Unigram). `origin` names the file in errors.
pub fn replace(tj: &mut Value, r: &Replace<'_>, origin: &Path) -> Result<()> {
    let fam = family(tj);
    let model = tj
        .get_mut("model")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| Error::file(origin, "tokenizer.json has no model"))?;
    match fam {
        Family::WordPiece => {
            let mut vocab = Map::new();
            for (t, id) in r.ids {
                vocab.insert(t.clone(), json!(id));
            }
            model.insert("vocab".into(), Value::Object(vocab));
            if let Some(unk) = model.get("unk_token").and_then(Value::as_str) {
                if !r.ids.contains_key(unk) {
                    return Err(Error::Invalid(format!(
                        "the source tokenizer's unknown token {unk:?} is not in the target vocabulary; add it or pass --keep-special"
                    )));
                }
            }
        }
        Family::Unigram => {
            let src: Vec<(String, f64)> = model
                .get("vocab")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|e| {
                            Some((e.get(0)?.as_str()?.to_string(), e.get(1)?.as_f64()?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let unk = model
                .get("unk_id")
                .and_then(Value::as_u64)
                .and_then(|i| src.get(i as usize))
                .map(|(p, _)| p.clone());
            let scores: HashMap<&str, f64> = src.iter().map(|(p, s)| (p.as_str(), *s)).collect();
            let min = src.iter().map(|(_, s)| *s).fold(0.0f64, f64::min);
            let vocab: Vec<Value> = r
                .tokens
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let p = r.pieces.get(i).map(Vec::as_slice).unwrap_or(&[]);
                    json!([t, unigram_score(t, p, &scores, min)])
                })
                .collect();
            model.insert("vocab".into(), Value::Array(vocab));
            if let Some(unk) = unk {
                let id = r.ids.get(&unk).ok_or_else(|| {
                    Error::Invalid(format!(
                        "the source tokenizer's unknown piece {unk:?} is not in the target vocabulary; add it or pass --keep-special"
                    ))
                })?;
                model.insert("unk_id".into(), json!(id));
            }
        }
        Family::Bpe | Family::Other => return Err(cannot_replace(tj, origin)),
    }
    // Added tokens: the source's, re-pointed (non-special ones the target lacks are dropped),
    // and WordPiece tokens the pre-tokeniser cannot produce.
    let mut added: Vec<Value> = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for a in tj
        .get("added_tokens")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let Some(content) = a.get("content").and_then(Value::as_str) else {
            continue;
        };
        let special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
        match r.ids.get(content) {
            Some(&id) => {
                let mut a = a.clone();
                a["id"] = json!(id);
                seen.insert(content.to_string());
                added.push(a);
            }
            None if special => {
                return Err(Error::Invalid(format!(
                    "special token {content:?} of the source tokenizer is not in the target vocabulary; add it or pass --keep-special"
                )))
            }
            None => {}
        }
    }
    if fam == Family::WordPiece {
        for (i, t) in r.tokens.iter().enumerate() {
            if wordpiece_unproducible(t)
                && r.ids.get(t) == Some(&(i as u32))
                && seen.insert(t.clone())
            {
                added.push(added_token(i as u32, t, added_normalized(t), false));
            }
        }
    }
    added.sort_by_key(|v| v["id"].as_u64());
    tj["added_tokens"] = Value::Array(added);
    if let Some(pp) = tj.get_mut("post_processor") {
        repoint_post_processor(pp, r.ids)?;
    }
    Ok(())
}

/// Updates the special-token ids a post-processor names (TemplateProcessing, BertProcessing,
/// RobertaProcessing, and Sequences of them).
fn repoint_post_processor(pp: &mut Value, ids: &HashMap<String, u32>) -> Result<()> {
    let look = |t: &str| {
        ids.get(t).copied().ok_or_else(|| {
            Error::Invalid(format!(
                "the source tokenizer's post-processor uses {t:?}, which is not in the target vocabulary; add it or pass --keep-special"
            ))
        })
    };
    if let Some(st) = pp.get_mut("special_tokens").and_then(Value::as_object_mut) {
        for v in st.values_mut() {
            let tokens: Vec<String> = v
                .get("tokens")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let new: Vec<u32> = tokens.iter().map(|t| look(t)).collect::<Result<_>>()?;
            v["ids"] = json!(new);
        }
    }
    for key in ["sep", "cls"] {
        if let Some(arr) = pp.get_mut(key).and_then(Value::as_array_mut) {
            if let Some(t) = arr.first().and_then(Value::as_str).map(String::from) {
                if arr.len() == 2 {
                    arr[1] = json!(look(&t)?);
                }
            }
        }
    }
    if let Some(ps) = pp.get_mut("processors").and_then(Value::as_array_mut) {
        for p in ps {
            repoint_post_processor(p, ids)?;
        }
    }
    Ok(())
}

/// How `--extend` put the new tokens into the tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Extension {
    /// Added (non-special) tokens, matched before pre-tokenisation.
    AddedTokens,
    /// Added tokens, and also WordPiece vocabulary entries (so vocab.txt has every row).
    WordPieceAndAddedTokens,
    /// SentencePiece Unigram pieces appended to the model's vocabulary, scored by
    /// [`extension_score`].
    UnigramPieces,
}

/// The score of a piece `--extend` appends to a Unigram model: the highest score among the
/// source's ordinary pieces (added tokens such as `<s>` score 0 and are left out). Scores are log
/// probabilities (negative), so any split of the new piece into two or more pieces sums lower: the
/// word is one token wherever its own span is in question.
fn extension_score(tj: &Value) -> Option<f64> {
    let added: std::collections::HashSet<&str> = tj
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| a.get("content").and_then(Value::as_str))
        .collect();
    tj.pointer("/model/vocab")?
        .as_array()?
        .iter()
        .filter_map(|e| Some((e.get(0)?.as_str()?, e.get(1)?.as_f64()?)))
        .filter(|(p, s)| !added.contains(p) && *s < 0.0)
        .map(|(_, s)| s)
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))))
}

/// How `--extend` puts new tokens into `tj` (the first new id is `first`):
///
/// - SentencePiece Unigram: appended to the model's pieces (when the piece list ends where the
///   new ids start), so the normaliser and the Metaspace pre-tokeniser treat them as they treat
///   every piece: no stray `▁` before a new word or in front of the text after it, which added
///   tokens give (Metaspace prepends `▁` to every segment an added token leaves), and decoding
///   gives back the text.
/// - WordPiece: added tokens (BERT's normaliser spaces CJK characters out, so a multi-character
///   Chinese word is only ever matched as an added token), and vocabulary entries too, so that
///   vocab.txt lists every row.
/// - Anything else (byte-level BPE): added tokens.
pub fn extension_for(tj: &Value, first: Option<u32>) -> Extension {
    match family(tj) {
        Family::Unigram => {
            let pieces = tj.pointer("/model/vocab").and_then(Value::as_array);
            match (pieces, extension_score(tj)) {
                (Some(p), Some(_)) if first.is_none_or(|f| f as usize == p.len()) => {
                    Extension::UnigramPieces
                }
                _ => Extension::AddedTokens,
            }
        }
        Family::WordPiece if tj.pointer("/model/vocab").is_some_and(Value::is_object) => {
            Extension::WordPieceAndAddedTokens
        }
        _ => Extension::AddedTokens,
    }
}

/// `--extend`: puts `new` (token, id; ids consecutive from the source's size) into the tokenizer
/// as [`extension_for`] decided, so that text containing them tokenizes to them. Builds a JSON
/// value per new token: the reference the tests hold [`Extended`] to (the directory is written
/// through it, with the same bytes and without those values).
#[cfg(test)]
pub fn extend(tj: &mut Value, new: &[(String, u32)], kind: Extension) {
    let bytes = serde_json::to_vec(&Extended::new(tj, new, kind)).unwrap_or_default();
    if let Ok(v) = serde_json::from_slice(&bytes) {
        *tj = v;
    }
}

/// The source tokenizer.json plus `--extend`'s new tokens, serialised as [`extend`] would build
/// it (the same keys in the same order, so the same bytes) without a JSON value per new token:
/// at a million new words those values took over a gigabyte.
pub struct Extended<'a> {
    tj: &'a Value,
    new: &'a [(String, u32)],
    kind: Extension,
    score: f64,
    /// Indices into `new` in byte order of the token (WordPiece vocabulary is a sorted map).
    sorted: Vec<u32>,
}

impl<'a> Extended<'a> {
    pub fn new(tj: &'a Value, new: &'a [(String, u32)], kind: Extension) -> Self {
        let mut sorted: Vec<u32> = Vec::new();
        if kind == Extension::WordPieceAndAddedTokens {
            sorted = (0..new.len() as u32).collect();
            sorted.sort_unstable_by(|&a, &b| new[a as usize].0.cmp(&new[b as usize].0));
        }
        Extended {
            tj,
            new,
            kind,
            score: extension_score(tj).unwrap_or(0.0),
            sorted,
        }
    }
}

/// A non-special added token as [`added_token`] writes it (fields in serde_json's key order).
#[derive(serde::Serialize)]
struct AddedOut<'a> {
    content: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u32>,
    lstrip: bool,
    normalized: bool,
    rstrip: bool,
    single_word: bool,
    special: bool,
}

fn added_out(t: &str, id: Option<u32>) -> AddedOut<'_> {
    AddedOut {
        content: t,
        id,
        lstrip: false,
        normalized: added_normalized(t),
        rstrip: false,
        single_word: false,
        special: false,
    }
}

/// Serialises a map's entries with one key's value replaced, the key inserted in order when it
/// is missing (as `map["key"] = ...` does on a sorted map).
fn map_with<S: serde::Serializer, V: serde::Serialize>(
    s: S,
    m: &Map<String, Value>,
    key: &str,
    value: &V,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let missing = !m.contains_key(key);
    let mut out = s.serialize_map(Some(m.len() + usize::from(missing)))?;
    let mut done = !missing;
    for (k, v) in m {
        if !done && k.as_str() > key {
            out.serialize_entry(key, value)?;
            done = true;
        }
        if k == key {
            out.serialize_entry(k, value)?;
        } else {
            out.serialize_entry(k, v)?;
        }
    }
    if !done {
        out.serialize_entry(key, value)?;
    }
    out.end()
}

/// The source's added tokens, then the new ones.
struct AddedList<'a>(Option<&'a Vec<Value>>, &'a [(String, u32)]);

impl serde::Serialize for AddedList<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let old = self.0.map(Vec::as_slice).unwrap_or(&[]);
        let mut seq = s.serialize_seq(Some(old.len() + self.1.len()))?;
        for v in old {
            seq.serialize_element(v)?;
        }
        for (t, id) in self.1 {
            seq.serialize_element(&added_out(t, Some(*id)))?;
        }
        seq.end()
    }
}

/// A WordPiece vocabulary (a sorted map) with the new tokens merged in by key.
struct WordPieceVocab<'a> {
    old: &'a Map<String, Value>,
    ext: &'a Extended<'a>,
}

impl serde::Serialize for WordPieceVocab<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let new = self.ext.new;
        let fresh: Vec<u32> = self
            .ext
            .sorted
            .iter()
            .copied()
            .filter(|&i| !self.old.contains_key(&new[i as usize].0))
            .collect();
        let mut m = s.serialize_map(Some(self.old.len() + fresh.len()))?;
        let mut fresh = fresh.into_iter().peekable();
        for (k, v) in self.old {
            while let Some(&i) = fresh.peek() {
                let (t, id) = &new[i as usize];
                if t.as_str() > k.as_str() {
                    break;
                }
                m.serialize_entry(t, id)?;
                fresh.next();
            }
            m.serialize_entry(k, v)?;
        }
        for i in fresh {
            let (t, id) = &new[i as usize];
            m.serialize_entry(t, id)?;
        }
        m.end()
    }
}

/// A Unigram piece list with the new pieces appended at the extension score.
struct UnigramVocab<'a>(&'a [Value], &'a [(String, u32)], f64);

impl serde::Serialize for UnigramVocab<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len() + self.1.len()))?;
        for v in self.0 {
            seq.serialize_element(v)?;
        }
        for (t, _) in self.1 {
            seq.serialize_element(&(t, self.2))?;
        }
        seq.end()
    }
}

/// The model object with its vocabulary extended.
struct ModelOut<'a>(&'a Map<String, Value>, &'a Extended<'a>);

impl serde::Serialize for ModelOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let ext = self.1;
        match (ext.kind, self.0.get("vocab")) {
            (Extension::UnigramPieces, Some(Value::Array(a))) => {
                map_with(s, self.0, "vocab", &UnigramVocab(a, ext.new, ext.score))
            }
            (Extension::WordPieceAndAddedTokens, Some(Value::Object(old))) => {
                map_with(s, self.0, "vocab", &WordPieceVocab { old, ext })
            }
            _ => self.0.serialize(s),
        }
    }
}

impl serde::Serialize for Extended<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(top) = self.tj.as_object() else {
            return self.tj.serialize(s);
        };
        if self.kind == Extension::UnigramPieces {
            let mut m = s.serialize_map(Some(top.len()))?;
            for (k, v) in top {
                match (k.as_str(), v) {
                    ("model", Value::Object(model)) => {
                        m.serialize_entry(k, &ModelOut(model, self))?
                    }
                    _ => m.serialize_entry(k, v)?,
                }
            }
            return m.end();
        }
        // Added tokens (inserted in key order when the source had none), and the model.
        struct Top<'b>(&'b Map<String, Value>, &'b Extended<'b>);
        impl serde::Serialize for Top<'_> {
            fn serialize<S2: serde::Serializer>(
                &self,
                s: S2,
            ) -> std::result::Result<S2::Ok, S2::Error> {
                let added = AddedList(
                    self.0.get("added_tokens").and_then(Value::as_array),
                    self.1.new,
                );
                map_with(s, self.0, "added_tokens", &added)
            }
        }
        if let Some(Value::Object(model)) = top.get("model") {
            // "model" sorts after "added_tokens": one pass with both replaced.
            let mut m = s.serialize_map(Some(
                top.len() + usize::from(!top.contains_key("added_tokens")),
            ))?;
            let added = AddedList(top.get("added_tokens").and_then(Value::as_array), self.new);
            let mut added_done = top.contains_key("added_tokens");
            if !added_done
                && top
                    .keys()
                    .next()
                    .is_none_or(|k| k.as_str() > "added_tokens")
            {
                m.serialize_entry("added_tokens", &added)?;
                added_done = true;
            }
            for (k, v) in top {
                if !added_done && k.as_str() > "added_tokens" {
                    m.serialize_entry("added_tokens", &added)?;
                    added_done = true;
                }
                match k.as_str() {
                    "added_tokens" => m.serialize_entry(k, &added)?,
                    "model" => m.serialize_entry(k, &ModelOut(model, self))?,
                    _ => m.serialize_entry(k, v)?,
                }
            }
            if !added_done {
                m.serialize_entry("added_tokens", &added)?;
            }
            return m.end();
        }
        Top(top, self).serialize(s)
    }
}

/// `added_tokens_decoder` of tokenizer_config.json: the source tokenizer's added tokens and the
/// new ones, keyed by id as text (in the text's order, as a sorted JSON map keeps them).
pub struct Decoder<'a> {
    old: &'a [Value],
    new: &'a [(String, u32)],
}

impl serde::Serialize for Decoder<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        // (key, Ok(old entry) | Err(new index)).
        let mut keys: Vec<(String, std::result::Result<&Value, usize>)> = Vec::new();
        for a in self.old {
            if let Some(id) = a.get("id").and_then(Value::as_u64) {
                keys.push((id.to_string(), Ok(a)));
            }
        }
        keys.extend(
            self.new
                .iter()
                .enumerate()
                .map(|(i, (_, id))| (id.to_string(), Err(i))),
        );
        // A sorted map keeps the last value of a repeated key.
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        keys.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                std::mem::swap(later, earlier);
                true
            } else {
                false
            }
        });
        let mut m = s.serialize_map(Some(keys.len()))?;
        for (k, v) in &keys {
            match v {
                Ok(a) => {
                    let mut e = (*a).clone();
                    if let Some(o) = e.as_object_mut() {
                        o.remove("id");
                    }
                    m.serialize_entry(k, &e)?;
                }
                Err(i) => m.serialize_entry(k, &added_out(&self.new[*i].0, None))?,
            }
        }
        m.end()
    }
}

/// tokenizer_config.json with `--extend`'s new tokens in its `added_tokens_decoder` (when it has
/// one), serialised without a JSON value per new token; `tj` is the source tokenizer.json.
pub struct ExtendedConfig<'a> {
    pub tc: &'a Value,
    pub tj: &'a Value,
    pub new: &'a [(String, u32)],
}

impl serde::Serialize for ExtendedConfig<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.tc.as_object() {
            Some(m) if m.contains_key("added_tokens_decoder") => {
                let old = self
                    .tj
                    .get("added_tokens")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                map_with(
                    s,
                    m,
                    "added_tokens_decoder",
                    &Decoder { old, new: self.new },
                )
            }
            _ => self.tc.serialize(s),
        }
    }
}

/// Appends `kept` (token, id) as special added tokens (--keep-special with a target tokenizer).
pub fn append_special(tj: &mut Value, kept: &[(String, u32)]) {
    if kept.is_empty() {
        return;
    }
    let mut added = tj
        .get("added_tokens")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (t, id) in kept {
        added.push(added_token(*id, t, false, true));
    }
    tj["added_tokens"] = Value::Array(added);
}

/// tokenizer_config.json: the source's (or a minimal one), with `added_tokens_decoder` rebuilt
/// from the new added tokens when the source had one.
pub fn tokenizer_config(source: Option<Value>, tj: &Value, defaults: &[(&str, String)]) -> Value {
    let mut tc = source.unwrap_or_else(|| json!({}));
    if !tc.is_object() {
        tc = json!({});
    }
    for (k, v) in defaults {
        if tc.get(*k).is_none() {
            tc[*k] = json!(v);
        }
    }
    if tc.get("added_tokens_decoder").is_some() {
        let mut dec = Map::new();
        for a in tj
            .get("added_tokens")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(id) = a.get("id").and_then(Value::as_u64) {
                let mut e = a.clone();
                if let Some(o) = e.as_object_mut() {
                    o.remove("id");
                }
                dec.insert(id.to_string(), e);
            }
        }
        tc["added_tokens_decoder"] = Value::Object(dec);
    }
    tc
}

/// The `*_token` entries of a tokenizer config (and of special_tokens_map.json).
pub(crate) const TOKEN_KEYS: &[&str] = &[
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// special_tokens_map.json from the tokenizer config's `*_token` entries.
pub fn special_tokens_map(tc: &Value) -> Value {
    let mut m = Map::new();
    for &k in TOKEN_KEYS {
        if let Some(v) = tc.get(k).filter(|v| !v.is_null()) {
            m.insert(k.into(), v.clone());
        }
    }
    Value::Object(m)
}

/// The WordPiece vocabulary by id, for vocab.txt (ids without a token are an error: vocab.txt
/// has no way to skip a line).
pub fn wordpiece_lines(tj: &Value) -> Option<Vec<String>> {
    let vocab = tj.pointer("/model/vocab")?.as_object()?;
    let mut by_id: Vec<Option<&str>> = vec![None; vocab.len()];
    for (t, id) in vocab {
        let id = id.as_u64()? as usize;
        if id >= by_id.len() {
            by_id.resize(id + 1, None);
        }
        by_id[id] = Some(t);
    }
    by_id.into_iter().map(|t| t.map(String::from)).collect()
}

/// Characters that show nothing alone: whitespace, controls, zero-width and other invisible
/// format characters (U+200B-U+200F, U+2060-U+2064, U+FEFF, the soft hyphen, U+180E, U+034F).
fn invisible(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}' | '\u{180E}' | '\u{034F}')
}

/// Words encoded per batch when checking (bounds the memory of the encodings).
const CHECK_BATCH: usize = 8192;

/// Why `--extend` must not add each word (None: it may). A word that is whitespace or invisible,
/// or starts with a combining mark, or that the source tokenizer reads as nothing or as one of its
/// own tokens, would break the written tokenizer or change how ordinary text tokenises: an added
/// `" "` turns every space into a token (or makes the tokenizers library panic), and `Hello` on
/// an uncased model would take the place of `hello`.
///
/// With `pieces` (new Unigram pieces, which the normaliser does not touch, unlike added tokens),
/// a word the normaliser changes (`ＡＢＣ` under NFKC is `ABC`) could never be produced: refused too.
pub fn unfit_new_words(words: &[&str], tok: &SourceTokenizer, pieces: bool) -> Vec<Option<String>> {
    let inner = tok.inner();
    let normalized = |w: &str| -> Option<String> {
        let n = inner.get_normalizer()?;
        let mut s = tokenizers::NormalizedString::from(w);
        crate::panics::quiet(|| tokenizers::Normalizer::normalize(n, &mut s))?.ok()?;
        Some(s.get().to_string())
    };
    let mut out: Vec<Option<String>> = words
        .iter()
        .map(|w| {
            if w.chars().all(invisible) {
                Some("it is whitespace or invisible (zero-width, control)".to_string())
            } else if w
                .chars()
                .next()
                .is_some_and(unicode_normalization::char::is_combining_mark)
            {
                Some("it starts with a combining mark".to_string())
            } else if pieces {
                // A word-initial piece `▁word` is matched after Metaspace: its body is what the
                // normaliser sees.
                let body = w.strip_prefix('\u{2581}').unwrap_or(w);
                normalized(body).filter(|n| n != body).map(|n| {
                    format!("the source tokenizer's normaliser turns it into {n:?}, so a new piece spelled this way would never match")
                })
            } else {
                None
            }
        })
        .collect();
    let todo: Vec<usize> = (0..words.len()).filter(|&i| out[i].is_none()).collect();
    for chunk in todo.chunks(CHECK_BATCH) {
        let texts: Vec<&str> = chunk.iter().map(|&i| words[i]).collect();
        let enc = match crate::panics::quiet(|| inner.encode_batch_fast(texts, false)) {
            Some(Ok(e)) => e,
            _ => {
                for &i in chunk {
                    out[i] = Some("the source tokenizer fails on it".to_string());
                }
                continue;
            }
        };
        for (&i, e) in chunk.iter().zip(&enc) {
            match e.get_ids() {
                [] => {
                    out[i] = Some(
                        "the source tokenizer reads it as nothing (its normaliser removes it)"
                            .to_string(),
                    )
                }
                [id] if !tok.is_special(*id) => {
                    out[i] = Some(format!(
                        "the source tokenizer already reads it as its token {:?} (id {id})",
                        inner.id_to_token(*id).unwrap_or_default()
                    ))
                }
                _ => {}
            }
        }
    }
    out
}

/// Plain text every tokenizer is checked on besides its own tokens.
const PLAIN_PROBES: &[&str] = &[
    "Hello world, this is a test.",
    "The quick brown fox jumps over the lazy dog 123 times!",
    "中文的文本，还有数字 2024 年。",
    "café naïve résumé",
];

/// Source tokens sampled for the probe.
const PROBE_TOKENS: usize = 2000;

/// Checks a written tokenizer, parsed back from its file, before the directory is committed:
/// it must load; with a `reference` (the source tokenizer for `--extend`, the target tokenizer
/// when one replaces the source's) a probe made of the reference's own tokens (a deterministic
/// sample, each alone and joined by spaces) and some plain text encode to the same ids with both;
/// each `(word, id)` of `new` encodes to that one id. Probe texts that contain a new word are left
/// out: there the new word is meant to win.
///
/// `new`'s ids run on from `first_new`. Every entry of the file is parsed, but at most
/// [`MAX_CHECKED_NEW`] new tokens (every k-th) are loaded into the tokenizer that is checked: the
/// tokenizers crate holds a tokenizer with a million added tokens in about a gigabyte, five
/// times its file.
pub fn check_written(
    path: &Path,
    reference: Option<&tokenizers::Tokenizer>,
    new: &[(String, u32)],
    first_new: u32,
) -> Result<()> {
    let bad = |msg: String| {
        Error::Invalid(format!(
            "the written tokenizer does not hold up when loaded back ({msg}): nothing was written; this is a bug, please report it"
        ))
    };
    let (mut written, kept) = load_sampled(path, new, first_new)?;
    let new = &kept[..];
    written.with_padding(None);
    written
        .with_truncation(None)
        .map_err(|e| bad(e.to_string()))?;
    let encode = |t: &tokenizers::Tokenizer, texts: Vec<String>| -> Result<Vec<Vec<u32>>> {
        match crate::panics::quiet(|| t.encode_batch_fast(texts, false)) {
            Some(Ok(e)) => Ok(e.iter().map(|e| e.get_ids().to_vec()).collect()),
            Some(Err(e)) => Err(bad(format!("encoding fails: {e}"))),
            None => Err(bad("the tokenizers library panics on it".into())),
        }
    };
    // Lower-cased new words, and whether one holds whitespace (then joined probes could form one).
    let new_words: std::collections::HashSet<String> =
        new.iter().map(|(w, _)| w.to_lowercase()).collect();
    let spaced = new_words.iter().any(|w| w.chars().any(char::is_whitespace));
    let holds_new = |t: &str| -> bool {
        let t = t.to_lowercase();
        let starts: Vec<usize> = t.char_indices().map(|(i, _)| i).collect();
        starts.iter().any(|&a| {
            t[a..]
                .char_indices()
                .skip(1)
                .map(|(j, _)| a + j)
                .chain(std::iter::once(t.len()))
                .any(|b| new_words.contains(&t[a..b]))
        })
    };
    let mut probes: Vec<String> = PLAIN_PROBES.iter().map(|s| s.to_string()).collect();
    if let Some(r) = reference {
        let n = r.get_vocab_size(true);
        let step = (n / PROBE_TOKENS).max(1);
        let special: std::collections::HashSet<u32> = r
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id)
            .collect();
        for id in (0..n as u32).step_by(step) {
            if special.contains(&id) {
                continue;
            }
            if let Some(Ok(t)) = crate::panics::quiet(|| r.decode(&[id], false)) {
                if !t.trim().is_empty() && t.len() <= 64 {
                    probes.push(t);
                }
            }
        }
    }
    // Special tokens are matched whole only where the tokenizer registers them (a vocab.txt
    // source's reference has none): probes holding one say nothing about ordinary text.
    let specials: Vec<String> = written
        .get_added_tokens_decoder()
        .values()
        .filter(|t| t.special)
        .map(|t| t.content.clone())
        .collect();
    probes.retain(|t| !holds_new(t) && !specials.iter().any(|s| t.contains(s.as_str())));
    if !spaced {
        let joined: Vec<String> = probes.chunks(50).map(|c| c.join(" ")).collect();
        probes.extend(joined);
    }
    let got = encode(&written, probes.clone())?;
    if let Some(r) = reference {
        let want = encode(r, probes.clone())?;
        for ((p, g), w) in probes.iter().zip(&got).zip(&want) {
            if g != w {
                return Err(bad(format!("{p:?} encodes to {g:?}, not {w:?} as before")));
            }
        }
    }
    // Each new word alone is its one token (SentencePiece's bare word-start piece counted apart).
    let meta = written.token_to_id("\u{2581}");
    for chunk in new.chunks(CHECK_BATCH) {
        let ids = encode(&written, chunk.iter().map(|(w, _)| w.clone()).collect())?;
        for ((w, id), got) in chunk.iter().zip(ids) {
            let got: Vec<u32> = if got.len() > 1 {
                got.into_iter().filter(|&g| Some(g) != meta).collect()
            } else {
                got
            };
            if got != [*id] {
                return Err(bad(format!(
                    "the new word {w:?} encodes to {got:?}, not to its id {id}"
                )));
            }
        }
    }
    Ok(())
}

/// New tokens loaded back and checked one by one at most; beyond, a deterministic sample.
pub const MAX_CHECKED_NEW: usize = 20_000;

/// Reads a written tokenizer.json back: streamed, every entry parsed, keeping the source's
/// entries and every k-th new token (ids `first_new` + j with j a multiple of k), so that at
/// most [`MAX_CHECKED_NEW`] of `new` are loaded. Unigram pieces are positions, so the kept new
/// pieces move down; the returned list gives each kept word the id it has in what was loaded.
fn load_sampled(
    path: &Path,
    new: &[(String, u32)],
    first_new: u32,
) -> Result<(tokenizers::Tokenizer, Vec<(String, u32)>)> {
    use serde::de::DeserializeSeed;
    let stride = new.len().div_ceil(MAX_CHECKED_NEW).max(1) as u64;
    let first = first_new as u64;
    let keep = move |id: u64| id < first || (id - first) % stride == 0;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > crate::bounded::MAX_VOCAB_BYTES {
        return Err(Error::file(
            path,
            "the written tokenizer.json is over 1 GiB",
        ));
    }
    let mut de =
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(1 << 20, f));
    let unreadable = |e: serde_json::Error| {
        Error::file(
            path,
            format!("the written tokenizer.json does not parse back: {e}"),
        )
    };
    let v = sample::Top { keep: &keep }
        .deserialize(&mut de)
        .map_err(unreadable)?;
    de.end().map_err(unreadable)?;
    // Where the sample leaves gaps, what is loaded moves down: Unigram pieces (positions), and
    // added tokens that are not in the model's vocabulary (the tokenizers crate numbers those on
    // from the model's size in file order). WordPiece entries keep their ids.
    let pieces = v
        .pointer("/model/vocab")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() as u64 > first);
    let map = v.pointer("/model/vocab").and_then(Value::as_object);
    let kept: Vec<(String, u32)> = new
        .iter()
        .enumerate()
        .filter(|(j, _)| *j as u64 % stride == 0)
        .map(|(j, (w, id))| {
            let moved = stride > 1 && (pieces || !map.is_some_and(|m| m.contains_key(w)));
            let id = if moved {
                first_new + (j as u64 / stride) as u32
            } else {
                *id
            };
            (w.clone(), id)
        })
        .collect();
    let tok = match crate::panics::quiet(|| serde_json::from_value::<tokenizers::Tokenizer>(v)) {
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            return Err(Error::file(
                path,
                format!("the written tokenizer.json does not load back: {e}"),
            ))
        }
        None => {
            return Err(Error::file(
                path,
                "the written tokenizer.json makes the tokenizers library panic",
            ))
        }
    };
    Ok((tok, kept))
}

/// Streaming readers that keep a sample of a tokenizer.json's new entries (see `load_sampled`).
mod sample {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};
    use std::fmt;

    type Keep<'a> = &'a dyn Fn(u64) -> bool;

    /// The top-level object: `added_tokens` and `model.vocab` sampled, the rest as it is.
    pub struct Top<'a> {
        pub keep: Keep<'a>,
    }

    impl<'de> DeserializeSeed<'de> for Top<'_> {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_map(Obj {
                keep: self.keep,
                top: true,
            })
        }
    }

    /// An object whose `added_tokens` (at the top) or `vocab` (in the model) is sampled.
    struct Obj<'a> {
        keep: Keep<'a>,
        top: bool,
    }

    impl<'de> Visitor<'de> for Obj<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(k) = m.next_key::<String>()? {
                let v = match (self.top, k.as_str()) {
                    (true, "added_tokens") => m.next_value_seed(Added { keep: self.keep })?,
                    (true, "model") => m.next_value_seed(Model { keep: self.keep })?,
                    (false, "vocab") => m.next_value_seed(Vocab { keep: self.keep })?,
                    _ => m.next_value::<Value>()?,
                };
                out.insert(k, v);
            }
            Ok(Value::Object(out))
        }
    }

    struct Model<'a> {
        keep: Keep<'a>,
    }

    impl<'de> DeserializeSeed<'de> for Model<'_> {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_map(Obj {
                keep: self.keep,
                top: false,
            })
        }
    }

    /// `added_tokens`: entries whose id is kept.
    struct Added<'a> {
        keep: Keep<'a>,
    }

    impl<'de> DeserializeSeed<'de> for Added<'_> {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Added<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of added tokens")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = s.next_element::<Value>()? {
                if v.get("id").and_then(Value::as_u64).is_none_or(self.keep) {
                    out.push(v);
                }
            }
            Ok(Value::Array(out))
        }
    }

    /// `model.vocab`: a map token -> id (kept by id) or a list of pieces (kept by position).
    struct Vocab<'a> {
        keep: Keep<'a>,
    }

    impl<'de> DeserializeSeed<'de> for Vocab<'_> {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Vocab<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a vocabulary (map or list)")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some((k, v)) = m.next_entry::<String, Value>()? {
                if v.as_u64().is_none_or(self.keep) {
                    out.insert(k, v);
                }
            }
            Ok(Value::Object(out))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Value, A::Error> {
            let mut out = Vec::new();
            let mut pos = 0u64;
            while let Some(v) = s.next_element::<Value>()? {
                if (self.keep)(pos) {
                    out.push(v);
                }
                pos += 1;
            }
            Ok(Value::Array(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unigram_scores_follow_the_rule() {
        let scores: HashMap<&str, f64> = [("a", -2.0), ("b", -5.0)].into_iter().collect();
        assert_eq!(unigram_score("a", &[], &scores, -20.0), -2.0);
        assert_eq!(
            unigram_score("ab", &["a".into(), "b".into()], &scores, -20.0),
            -2.0
        );
        assert_eq!(unigram_score("zz", &[], &scores, -20.0), -20.0);
        let with_space: HashMap<&str, f64> =
            [("\u{2581}", -1.0), ("b", -5.0)].into_iter().collect();
        assert_eq!(
            unigram_score("xb", &["\u{2581}".into(), "b".into()], &with_space, -20.0),
            -5.0
        );
    }

    #[test]
    fn extend_puts_new_tokens_where_the_family_needs_them() {
        let unigram = json!({"added_tokens": [{"id": 0, "content": "<s>", "special": true}],
            "model": {"type": "Unigram", "vocab": [["<s>", 0.0], ["a", -3.5], ["\u{2581}", -2.0]]}});
        let new = vec![("ab".to_string(), 3)];
        assert_eq!(extension_for(&unigram, Some(3)), Extension::UnigramPieces);
        let mut tj = unigram.clone();
        extend(&mut tj, &new, Extension::UnigramPieces);
        // The best ordinary score (<s>'s 0 is an added token's), no added token.
        assert_eq!(tj["model"]["vocab"][3], json!(["ab", -2.0]));
        assert_eq!(tj["added_tokens"], unigram["added_tokens"]);
        // Ids past the piece list: the new pieces could not get their ids, so added tokens.
        assert_eq!(extension_for(&unigram, Some(4)), Extension::AddedTokens);

        let wp = json!({"added_tokens": [], "model": {"type": "WordPiece", "vocab": {"a": 0}}});
        let kind = extension_for(&wp, Some(1));
        assert_eq!(kind, Extension::WordPieceAndAddedTokens);
        let mut tj = wp.clone();
        extend(&mut tj, &[("中国".to_string(), 1)], kind);
        assert_eq!(tj["model"]["vocab"]["中国"], 1);
        assert_eq!(tj["added_tokens"][0]["content"], "中国");
        assert_eq!(tj["added_tokens"][0]["normalized"], false);

        let bpe =
            json!({"added_tokens": [], "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}});
        assert_eq!(extension_for(&bpe, Some(1)), Extension::AddedTokens);
    }

    fn wordpiece(vocab: &[&str], added: &[(&str, u32)]) -> String {
        let v: Map<String, Value> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), json!(i)))
            .collect();
        let a: Vec<Value> = added
            .iter()
            .map(|(t, id)| added_token(*id, t, true, false))
            .collect();
        json!({"version": "1.0", "added_tokens": a, "normalizer": {"type": "Lowercase"},
            "pre_tokenizer": {"type": "Whitespace"}, "model": {"type": "WordPiece",
            "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
            "vocab": v}})
        .to_string()
    }

    #[test]
    fn the_load_back_check_catches_a_tokenizer_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let vocab = ["[UNK]", "hello", "world", "ab", "##out", "out", "about"];
        let reference: tokenizers::Tokenizer = wordpiece(&vocab, &[]).parse().unwrap();
        let written = dir.path().join("tokenizer.json");
        // A good extension: the new word is one token, the source's tokens encode as before.
        std::fs::write(&written, wordpiece(&vocab, &[("zzq", 7)])).unwrap();
        check_written(&written, Some(&reference), &[("zzq".into(), 7)], 7).unwrap();
        // A new word whose id the tokenizer does not give it.
        let e = check_written(&written, Some(&reference), &[("zzq".into(), 8)], 8).unwrap_err();
        assert!(
            e.to_string()
                .contains("the new word \"zzq\" encodes to [7], not to its id 8"),
            "{e}"
        );
        // A tokenizer in which a source token reads differently ("ab" registered as an added
        // token splits "about"): refused.
        std::fs::write(&written, wordpiece(&vocab, &[("ab", 3)])).unwrap();
        let e = check_written(&written, Some(&reference), &[], 7).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"about\" encodes to [3, 5], not [6] as before"),
            "{e}"
        );
        // Probes holding a new word are left out (there it is meant to win).
        std::fs::write(&written, wordpiece(&vocab, &[("zzq", 7), ("bo", 8)])).unwrap();
        check_written(
            &written,
            Some(&reference),
            &[("zzq".into(), 7), ("bo".into(), 8)],
            7,
        )
        .unwrap();
        // Sampled: of 45,000 new words (ids 7..), every third is loaded and checked.
        let many: Vec<(String, u32)> = (0..45_000u32).map(|i| (format!("w{i}x"), 7 + i)).collect();
        let pairs: Vec<(&str, u32)> = many.iter().map(|(w, i)| (w.as_str(), *i)).collect();
        std::fs::write(&written, wordpiece(&vocab, &pairs)).unwrap();
        let (tok, kept) = load_sampled(&written, &many, 7).unwrap();
        assert_eq!(kept.len(), 15_000);
        // Added tokens outside the model's vocabulary are numbered on by the tokenizers crate.
        assert_eq!(kept[1], ("w3x".to_string(), 8));
        assert_eq!(tok.get_vocab_size(true), 7 + 15_000);
        check_written(&written, Some(&reference), &many, 7).unwrap();
        // A file that does not load.
        std::fs::write(&written, "{}").unwrap();
        assert!(check_written(&written, None, &[], 0).is_err());
    }

    #[test]
    fn unproducible_wordpiece_tokens() {
        assert!(wordpiece_unproducible("中国"));
        assert!(!wordpiece_unproducible("中"));
        assert!(!wordpiece_unproducible("##ing"));
        assert!(wordpiece_unproducible("e-mail"));
        assert!(!wordpiece_unproducible("hello"));
    }
}

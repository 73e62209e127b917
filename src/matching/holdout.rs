//! Source tokens treated as unknown: which tokens can be held out, and their pieces under the
//! source tokenizer rebuilt without them. `score` measures init methods this way and
//! `compose-fit` gets its training pairs this way, from the model alone.
//!
//! A token can be held out when it is a whole word the tokenizer produces from its own spelling:
//! its decoded text (`playing`, `▁playing` -> `playing`, `Ġhello` -> ` hello`) encodes back to
//! exactly that token. The tokenizer is rebuilt from its tokenizer.json model, edited:
//! - WordPiece: the held-out tokens leave the vocabulary map (the other ids are kept).
//! - BPE: they leave the vocabulary, and so does every merge that uses or produces one.
//! - Unigram: ids are list positions, so the tokens stay but get score -1e6: Viterbi never picks
//!   one while a segmentation without unknown pieces exists; a token still produced is dropped.

use super::SourceTokenizer;
use crate::error::{Error, Result};
use rayon::prelude::*;
use serde_json::Value;
use std::collections::HashSet;
use tokenizers::Tokenizer;

/// A source token that can be held out, and the text it decodes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub text: String,
}

/// A held-out token with its pieces (2 or more source ids, none of them held out).
#[derive(Debug, Clone, PartialEq)]
pub struct Decomposed {
    pub id: u32,
    pub text: String,
    pub pieces: Vec<u32>,
}

/// Texts encoded per batch (bounds the memory of encodings).
const BATCH: usize = 8192;

/// Every source token (ids below `vocab_size`, specials left out) whose decoded text has 2 or
/// more characters and encodes back to exactly that token, in id order.
pub fn candidates(tok: &SourceTokenizer, vocab_size: usize) -> Vec<Candidate> {
    let inner = tok.inner();
    let decoded: Vec<Candidate> = (0..vocab_size as u32)
        .into_par_iter()
        .filter(|&id| !tok.is_special(id))
        .filter_map(|id| {
            let text = inner.decode(&[id], false).ok()?;
            (text.chars().count() >= 2 && !text.chars().any(char::is_control))
                .then_some(Candidate { id, text })
        })
        .collect();
    let mut out = Vec::with_capacity(decoded.len());
    for chunk in decoded.chunks(BATCH) {
        let texts: Vec<&str> = chunk.iter().map(|c| c.text.as_str()).collect();
        for (c, pieces) in chunk.iter().zip(tok.pieces(&texts)) {
            if pieces.as_deref() == Some(&[c.id][..]) {
                out.push(c.clone());
            }
        }
    }
    out
}

/// Each token's pieces under the tokenizer rebuilt without `held` (which holds at least the
/// tokens' own ids). Tokens that come out as fewer than 2 pieces, or with a held-out or
/// out-of-matrix piece, are dropped.
pub fn decompose(
    tok: &SourceTokenizer,
    tokens: &[&Candidate],
    held: &HashSet<u32>,
    vocab_size: usize,
) -> Result<Vec<Decomposed>> {
    let rebuilt = without(tok, held)?;
    let mut out = Vec::new();
    for chunk in tokens.chunks(BATCH) {
        let texts: Vec<&str> = chunk.iter().map(|c| c.text.as_str()).collect();
        for (c, pieces) in chunk.iter().zip(rebuilt.pieces(&texts)) {
            let Some(pieces) = pieces else { continue };
            if pieces.len() >= 2
                && pieces
                    .iter()
                    .all(|p| !held.contains(p) && (*p as usize) < vocab_size)
            {
                out.push(Decomposed {
                    id: c.id,
                    text: c.text.clone(),
                    pieces,
                });
            }
        }
    }
    Ok(out)
}

/// The source tokenizer with the `held` tokens removed (see the module comment).
pub fn without(tok: &SourceTokenizer, held: &HashSet<u32>) -> Result<SourceTokenizer> {
    let err = |msg: String| Error::NoEvidence(format!("rebuilding the source tokenizer: {msg}"));
    let mut v = serde_json::to_value(tok.inner()).map_err(|e| err(e.to_string()))?;
    let model = v
        .get_mut("model")
        .ok_or_else(|| err("no model in the tokenizer".into()))?;
    let kind = model
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let as_id = |v: &Value| v.as_u64().map(|i| i as u32);
    match kind.as_str() {
        "WordPiece" => {
            if let Some(Value::Object(vocab)) = model.get_mut("vocab") {
                vocab.retain(|_, id| !as_id(id).is_some_and(|i| held.contains(&i)));
            }
        }
        "BPE" => {
            let prefix_len = model
                .get("continuing_subword_prefix")
                .and_then(Value::as_str)
                .map_or(0, str::len);
            let mut removed: HashSet<String> = HashSet::new();
            if let Some(Value::Object(vocab)) = model.get_mut("vocab") {
                vocab.retain(|k, id| {
                    let drop = as_id(id).is_some_and(|i| held.contains(&i));
                    if drop {
                        removed.insert(k.clone());
                    }
                    !drop
                });
            }
            if let Some(Value::Array(merges)) = model.get_mut("merges") {
                merges.retain(|m| {
                    let (a, b) = match m {
                        Value::String(s) => match s.split_once(' ') {
                            Some((a, b)) => (a.to_string(), b.to_string()),
                            None => return true,
                        },
                        Value::Array(p) if p.len() == 2 => (
                            p[0].as_str().unwrap_or("").to_string(),
                            p[1].as_str().unwrap_or("").to_string(),
                        ),
                        _ => return true,
                    };
                    let merged = format!("{a}{}", b.get(prefix_len..).unwrap_or(""));
                    !(removed.contains(&a) || removed.contains(&b) || removed.contains(&merged))
                });
            }
        }
        "Unigram" => {
            if let Some(Value::Array(vocab)) = model.get_mut("vocab") {
                for &id in held {
                    if let Some(Value::Array(entry)) = vocab.get_mut(id as usize) {
                        if entry.len() == 2 {
                            entry[1] = Value::from(-1e6);
                        }
                    }
                }
            }
        }
        other => {
            return Err(err(format!(
                "a {other} tokenizer cannot treat its own tokens as unknown (WordPiece, BPE and Unigram can)"
            )))
        }
    }
    let rebuilt: Tokenizer = serde_json::from_value(v).map_err(|e| err(e.to_string()))?;
    Ok(tok.replaced(rebuilt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::vocab::{SourceKind, SourceVocab};
    use std::collections::HashMap;

    fn source(tokens: &[&str]) -> SourceVocab {
        SourceVocab {
            size: tokens.len(),
            ids: tokens
                .iter()
                .enumerate()
                .map(|(i, t)| (t.to_string(), i as u32))
                .collect::<HashMap<_, _>>(),
            kind: SourceKind::VocabTxt,
            path: "vocab.txt".into(),
            special: vec!["[UNK]".into()],
            repeated: 0,
            repeated_examples: Vec::new(),
        }
    }

    #[test]
    fn wordpiece_word_splits_once_held_out() {
        let src = source(&[
            "[UNK]", "play", "##ing", "playing", "p", "##l", "##a", "##y",
        ]);
        let tok = SourceTokenizer::from_wordpiece_vocab(&src, true).unwrap();
        let cands = candidates(&tok, src.size);
        let texts: Vec<&str> = cands.iter().map(|c| c.text.as_str()).collect();
        // `##ing` decodes to itself and does not encode back; `p` is one character.
        assert_eq!(texts, vec!["play", "playing"]);
        let playing = &cands[1];
        let d = decompose(&tok, &[playing], &HashSet::from([3]), src.size).unwrap();
        assert_eq!(d[0].pieces, vec![1, 2]);
        // Holding out `play` too: the word falls to characters.
        let d = decompose(&tok, &[playing], &HashSet::from([1, 3]), src.size).unwrap();
        assert_eq!(d[0].pieces, vec![4, 5, 6, 7, 2]);
    }

    fn tokenizer_json(path: &std::path::Path, json: &str) -> SourceTokenizer {
        std::fs::write(path, json).unwrap();
        let src = crate::load::vocab::load_source(path).unwrap();
        SourceTokenizer::from_file(path, &src).unwrap()
    }

    #[test]
    fn bpe_and_unigram_words_split_once_held_out() {
        let dir = tempfile::tempdir().unwrap();
        let bpe = tokenizer_json(
            &dir.path().join("bpe.json"),
            r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,
            "end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,
            "vocab":{"a":0,"b":1,"c":2,"ab":3,"abc":4},"merges":["a b","ab c"]}}"#,
        );
        let cands = candidates(&bpe, 5);
        assert_eq!(cands.iter().map(|c| c.id).collect::<Vec<_>>(), vec![3, 4]);
        let d = decompose(&bpe, &[&cands[1]], &HashSet::from([4]), 5).unwrap();
        assert_eq!(d[0].pieces, vec![3, 2]);
        let d = decompose(&bpe, &[&cands[1]], &HashSet::from([3, 4]), 5).unwrap();
        assert_eq!(d[0].pieces, vec![0, 1, 2]);

        let uni = tokenizer_json(
            &dir.path().join("uni.json"),
            r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":null,"pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true},
            "post_processor":null,"decoder":{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true},
            "model":{"type":"Unigram","unk_id":0,"byte_fallback":false,
            "vocab":[["<unk>",0.0],["▁",-2.0],["▁ab",-1.0],["a",-3.0],["b",-3.0],["▁a",-2.5]]}}"#,
        );
        let cands = candidates(&uni, 6);
        let ab = cands.iter().find(|c| c.id == 2).unwrap();
        assert_eq!(ab.text, "ab");
        let d = decompose(&uni, &[ab], &HashSet::from([2]), 6).unwrap();
        assert_eq!(d[0].pieces, vec![5, 4]);
    }
}

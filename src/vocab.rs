//! Vocabularies: the target list the user brings (one token per line) and the source model's own
//! (tokenizer.json or vocab.txt), as token -> id maps.

use crate::bounded;
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

/// Longest token line we accept. Real vocabularies stay far below; a longer line is almost
/// certainly a file that is not a vocabulary (a corpus, a binary), so we say so.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// The target vocabulary: output row i is `tokens[i]`.
#[derive(Debug, Clone)]
pub struct TargetVocab {
    pub tokens: Vec<String>,
    /// How many lines repeat an earlier line.
    pub duplicates: usize,
    /// The first few repeated tokens, for the warning.
    pub duplicate_examples: Vec<String>,
    /// Lines holding only whitespace, and lines with an inner carriage return or tab (1-based):
    /// almost always a broken file, so they are warned about.
    pub blank_lines: Vec<usize>,
    pub control_lines: Vec<usize>,
    /// sha256 of the file's bytes as read.
    pub sha256: String,
    /// Where it came from, as the user named it (`<stdin>` for `-`).
    pub origin: String,
}

/// Reads a target vocabulary from a file, or from standard input when `path` is `-`. The limits
/// hold while streaming: a line is never read past [`MAX_TOKEN_BYTES`], so `/dev/zero` or a
/// 50 MB line fail after a kilobyte, not after filling memory.
pub fn read_target(path: &Path) -> Result<TargetVocab> {
    if path == Path::new("-") {
        parse_target_stream(std::io::stdin().lock(), "<stdin>")
    } else {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        if f.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(Error::file(path, "is a directory, not a vocabulary file"));
        }
        parse_target_stream(
            std::io::BufReader::with_capacity(1 << 16, f),
            &path.display().to_string(),
        )
    }
}

/// Parses target-vocabulary bytes (see [`parse_target_stream`]).
pub fn parse_target(bytes: &[u8], origin: &str) -> Result<TargetVocab> {
    parse_target_stream(bytes, origin)
}

/// Parses a target vocabulary: UTF-8, one token per line; a BOM and CRLF endings are accepted;
/// only the line ending is stripped, so a token may hold spaces. Lines are split on `\n` alone:
/// U+2028 and other Unicode separators are parts of tokens (bert-base-chinese has two).
pub fn parse_target_stream(r: impl BufRead, origin: &str) -> Result<TargetVocab> {
    parse_target_limited(r, origin, bounded::MAX_VOCAB_ROWS)
}

/// [`parse_target_stream`] with a row limit of `max_rows` (an endless stream stops there).
fn parse_target_limited(mut r: impl BufRead, origin: &str, max_rows: usize) -> Result<TargetVocab> {
    let line_err = |line: usize, msg: String| Error::Line {
        path: origin.to_string(),
        line,
        msg,
    };
    let mut hasher = Sha256::new();
    let mut tokens: Vec<String> = Vec::new();
    // Hash of a token -> its first line's index; a hash collision between different tokens only
    // means a duplicate goes uncounted.
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut duplicates = 0;
    let mut duplicate_examples = Vec::new();
    let (mut blank_lines, mut control_lines) = (Vec::new(), Vec::new());
    let mut buf: Vec<u8> = Vec::with_capacity(MAX_TOKEN_BYTES + 2);
    let hash_state = std::hash::RandomState::new();
    let mut line = 0;
    loop {
        buf.clear();
        // One byte more than the longest line with its CRLF, so a longer line shows without
        // reading the rest of it.
        let n = (&mut r)
            .take(MAX_TOKEN_BYTES as u64 + 3)
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io(origin, e))?;
        if n == 0 {
            break;
        }
        line += 1;
        hasher.update(&buf);
        let ended = buf.last() == Some(&b'\n');
        let mut raw: &[u8] = &buf;
        if ended {
            raw = &raw[..raw.len() - 1];
        }
        if line == 1 {
            raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
        }
        raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.contains(&0) {
            return Err(line_err(line, "contains a NUL byte".into()));
        }
        if raw.len() > MAX_TOKEN_BYTES || (!ended && n > MAX_TOKEN_BYTES + 2) {
            return Err(line_err(
                line,
                format!("line is longer than {MAX_TOKEN_BYTES} bytes: is this a vocabulary?"),
            ));
        }
        if raw.is_empty() {
            // A file that ends in a newline has no empty last line.
            if ended || line > 1 {
                return Err(line_err(
                    line,
                    "empty line (every line must hold a token)".into(),
                ));
            }
        }
        let token = std::str::from_utf8(raw).map_err(|e| {
            line_err(
                line,
                format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
            )
        })?;
        if !token.is_empty() {
            if tokens.len() >= max_rows {
                return Err(line_err(
                    line,
                    format!(
                        "more than {max_rows} lines, the limit for a vocabulary: is this a vocabulary?"
                    ),
                ));
            }
            if token.trim().is_empty() {
                blank_lines.push(line);
            } else if token.contains(['\r', '\t']) {
                control_lines.push(line);
            }
            let h = std::hash::BuildHasher::hash_one(&hash_state, token);
            let first = *seen.entry(h).or_insert(tokens.len());
            if first != tokens.len() && tokens[first] == token {
                duplicates += 1;
                if duplicate_examples.len() < 5 {
                    duplicate_examples.push(token.to_string());
                }
            }
            tokens.push(token.to_string());
        }
    }
    if tokens.is_empty() {
        return Err(Error::file(origin, "the vocabulary is empty"));
    }
    Ok(TargetVocab {
        tokens,
        duplicates,
        duplicate_examples,
        blank_lines,
        control_lines,
        sha256: hex(&hasher.finalize()),
        origin: origin.to_string(),
    })
}

/// How the source vocabulary was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    TokenizerJson,
    VocabTxt,
}

/// The source model's vocabulary: token -> row of its embedding matrix.
#[derive(Debug, Clone)]
pub struct SourceVocab {
    pub ids: HashMap<String, u32>,
    /// One past the largest id: the embedding needs at least this many rows.
    pub size: usize,
    pub kind: SourceKind,
    pub path: PathBuf,
    /// Special tokens (added tokens marked special in tokenizer.json, `[XXX]` in vocab.txt).
    pub special: Vec<String>,
    /// vocab.txt lines repeating an earlier token (the last line's id wins), and a few of them.
    pub repeated: usize,
    pub repeated_examples: Vec<String>,
}

/// Loads the source vocabulary, choosing the reader by file name: `*.json` is a tokenizer.json,
/// anything else a vocab.txt (one token per line, line number = id).
pub fn load_source(path: &Path) -> Result<SourceVocab> {
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        load_tokenizer_json(path)
    } else {
        load_vocab_txt(path)
    }
}

/// The source vocabulary and, for a tokenizer.json, the tokenizer parsed from it (parsed once:
/// a byte-level BPE tokenizer.json with 150k merges takes about half a second).
pub fn load_source_and_tokenizer(
    path: &Path,
) -> Result<(SourceVocab, Option<tokenizers::Tokenizer>)> {
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        let tok = read_tokenizer(path)?;
        Ok((vocab_of_tokenizer(path, &tok)?, Some(tok)))
    } else {
        Ok((load_vocab_txt(path)?, None))
    }
}

fn load_tokenizer_json(path: &Path) -> Result<SourceVocab> {
    let tok = read_tokenizer(path)?;
    vocab_of_tokenizer(path, &tok)
}

/// The text of a tokenizer.json, read bounded ([`bounded::MAX_VOCAB_BYTES`]).
fn tokenizer_text(path: &Path) -> Result<String> {
    bounded::read_text(path, bounded::MAX_VOCAB_BYTES, "a tokenizer.json")
}

/// A tokenizer.json parsed by the tokenizers crate, read bounded; a panic inside the crate is an
/// error naming the file, not a crash.
pub fn read_tokenizer(path: &Path) -> Result<tokenizers::Tokenizer> {
    let text = tokenizer_text(path)?;
    parse_tokenizer(&text, path)
}

/// Parses tokenizer.json text (`origin` names it in errors).
pub fn parse_tokenizer(text: &str, origin: &Path) -> Result<tokenizers::Tokenizer> {
    match crate::panics::quiet(|| text.parse::<tokenizers::Tokenizer>()) {
        Some(Ok(t)) => Ok(t),
        Some(Err(e)) => Err(Error::file(
            origin,
            format!("not a readable tokenizer.json: {e}"),
        )),
        None => Err(Error::file(
            origin,
            "not a readable tokenizer.json: the tokenizers library failed on it (panicked)",
        )),
    }
}

/// A tokenizer.json as a JSON value, read bounded; its top level must be an object.
pub fn read_tokenizer_value(path: &Path) -> Result<serde_json::Value> {
    let text = tokenizer_text(path)?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(path, format!("not a tokenizer.json: {e}")))?;
    if !v.is_object() {
        return Err(Error::file(path, "not a tokenizer.json: not a JSON object"));
    }
    Ok(v)
}

fn vocab_of_tokenizer(path: &Path, tok: &tokenizers::Tokenizer) -> Result<SourceVocab> {
    let ids: HashMap<String, u32> = tok.get_vocab(true);
    if ids.is_empty() {
        return Err(Error::file(path, "the tokenizer's vocabulary is empty"));
    }
    let special = tok
        .get_added_tokens_decoder()
        .values()
        .filter(|t| t.special)
        .map(|t| t.content.clone())
        .collect();
    Ok(finish_source(ids, SourceKind::TokenizerJson, path, special))
}

fn load_vocab_txt(path: &Path) -> Result<SourceVocab> {
    let text = bounded::read_text(path, bounded::MAX_VOCAB_BYTES, "a vocab.txt")?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut ids = HashMap::new();
    let mut special = Vec::new();
    let (mut repeated, mut repeated_examples) = (0, Vec::new());
    // `str::lines` splits on \n (and strips \r) only, never on U+2028: the right reading of vocab.txt.
    for (id, token) in text.lines().enumerate() {
        if id >= bounded::MAX_VOCAB_ROWS {
            return Err(Error::file(
                path,
                format!(
                    "more than {} lines, the limit for a vocabulary",
                    bounded::MAX_VOCAB_ROWS
                ),
            ));
        }
        let id = id as u32;
        // The last occurrence keeps its id, as in transformers' BertTokenizer and the tokenizers
        // crate's WordPiece reader (both insert line by line into a map).
        if ids.insert(token.to_string(), id).is_some() {
            repeated += 1;
            if repeated_examples.len() < 5 {
                repeated_examples.push(token.to_string());
            }
        }
        if token.len() > 2
            && token.starts_with('[')
            && token.ends_with(']')
            && !token[1..].contains('[')
        {
            special.push(token.to_string());
        }
    }
    if ids.is_empty() {
        return Err(Error::file(path, "the vocabulary is empty"));
    }
    let mut v = finish_source(ids, SourceKind::VocabTxt, path, special);
    v.repeated = repeated;
    v.repeated_examples = repeated_examples;
    Ok(v)
}

fn finish_source(
    ids: HashMap<String, u32>,
    kind: SourceKind,
    path: &Path,
    mut special: Vec<String>,
) -> SourceVocab {
    let size = ids.values().map(|&i| i as usize + 1).max().unwrap_or(0);
    special.sort();
    SourceVocab {
        ids,
        size,
        kind,
        path: path.to_path_buf(),
        special,
        repeated: 0,
        repeated_examples: Vec::new(),
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A target tokenizer.json (`--vocab tokenizer.json` with `--emit-model`): its tokens by id
/// (model vocabulary and added tokens) are the rows, and the file itself becomes the model's
/// tokenizer. Ids must run 0..n without gaps.
pub fn read_target_tokenizer(path: &Path) -> Result<(TargetVocab, serde_json::Value)> {
    let bytes = bounded::read_text_bytes(path, bounded::MAX_VOCAB_BYTES, "a tokenizer.json")?;
    let tj: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::file(path, format!("not a tokenizer.json: {e}")))?;
    let mut by_id: Vec<Option<String>> = Vec::new();
    let mut put = |t: &str, id: u64| {
        let id = id as usize;
        if id >= by_id.len() {
            by_id.resize(id + 1, None);
        }
        by_id[id] = Some(t.to_string());
    };
    match tj.pointer("/model/vocab") {
        Some(serde_json::Value::Object(m)) => {
            for (t, id) in m {
                let id = id
                    .as_u64()
                    .ok_or_else(|| Error::file(path, format!("token {t:?} has no integer id")))?;
                put(t, id);
            }
        }
        Some(serde_json::Value::Array(a)) => {
            for (i, e) in a.iter().enumerate() {
                let t = e.get(0).and_then(|x| x.as_str()).ok_or_else(|| {
                    Error::file(path, format!("vocabulary entry {i} is not [piece, score]"))
                })?;
                put(t, i as u64);
            }
        }
        _ => return Err(Error::file(path, "not a tokenizer.json: no model.vocab")),
    }
    for a in tj
        .get("added_tokens")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        if let (Some(t), Some(id)) = (
            a.get("content").and_then(|x| x.as_str()),
            a.get("id").and_then(|x| x.as_u64()),
        ) {
            put(t, id);
        }
    }
    let tokens: Vec<String> = by_id
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.ok_or_else(|| Error::file(path, format!("no token has id {i}: the ids of a target tokenizer must run 0..n without gaps"))))
        .collect::<Result<_>>()?;
    if tokens.is_empty() {
        return Err(Error::file(path, "the tokenizer has no tokens"));
    }
    let sha256 = hex(&Sha256::digest(&bytes));
    Ok((
        TargetVocab {
            tokens,
            duplicates: 0,
            duplicate_examples: Vec::new(),
            blank_lines: Vec::new(),
            control_lines: Vec::new(),
            sha256,
            origin: path.display().to_string(),
        },
        tj,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_bom_and_trailing_newline_are_accepted() {
        let v = parse_target(b"\xEF\xBB\xBFa\r\nb b\r\n", "v.txt").unwrap();
        assert_eq!(v.tokens, vec!["a", "b b"]);
    }

    #[test]
    fn line_separator_is_part_of_a_token() {
        let v = parse_target("x\u{2028}y\nz\n".as_bytes(), "v.txt").unwrap();
        assert_eq!(v.tokens, vec!["x\u{2028}y", "z"]);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_target(b"a\n\nb\n", "v.txt").unwrap_err().to_string();
        assert_eq!(e, "v.txt line 2: empty line (every line must hold a token)");
        let e = parse_target(b"a\nb\xff\n", "v.txt")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("v.txt line 2: invalid UTF-8"), "{e}");
        let e = parse_target(b"a\nb\0\n", "v.txt").unwrap_err().to_string();
        assert!(e.starts_with("v.txt line 2: contains a NUL"), "{e}");
        let e = parse_target(b"", "v.txt").unwrap_err().to_string();
        assert_eq!(e, "v.txt: the vocabulary is empty");
    }

    #[test]
    fn an_endless_stream_stops_at_the_row_limit() {
        let stream = std::io::BufReader::new(YesA);
        let e = parse_target_limited(stream, "<stdin>", 1000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "<stdin> line 1001: more than 1000 lines, the limit for a vocabulary: is this a vocabulary?"
        );
        assert_eq!(bounded::MAX_VOCAB_ROWS, 16_777_216);
    }

    /// `yes a` as a reader.
    struct YesA;
    impl std::io::Read for YesA {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = if i % 2 == 0 { b'a' } else { b'\n' };
            }
            Ok(buf.len() - buf.len() % 2)
        }
    }

    #[test]
    fn duplicates_are_counted_and_kept() {
        let v = parse_target(b"a\nb\na\na\n", "v.txt").unwrap();
        assert_eq!(v.tokens.len(), 4);
        assert_eq!(v.duplicates, 2);
        assert_eq!(v.duplicate_examples, vec!["a", "a"]);
    }
}

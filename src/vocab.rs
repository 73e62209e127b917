//! Vocabularies: the target list the user brings (one token per line) and the source model's own
//! (tokenizer.json or vocab.txt), as token -> id maps.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::Read;
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
    /// sha256 of the file's bytes as read.
    pub sha256: String,
    /// Where it came from, as the user named it (`<stdin>` for `-`).
    pub origin: String,
}

/// Reads a target vocabulary from a file, or from standard input when `path` is `-`.
pub fn read_target(path: &Path) -> Result<TargetVocab> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io("<stdin>", e))?;
        parse_target(&bytes, "<stdin>")
    } else {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        parse_target(&bytes, &path.display().to_string())
    }
}

/// Parses target-vocabulary bytes: UTF-8, one token per line; a BOM and CRLF endings are
/// accepted; only the line ending is stripped, so a token may hold spaces. Lines are split on
/// `\n` alone: U+2028 and other Unicode separators are parts of tokens (bert-base-chinese has two).
pub fn parse_target(bytes: &[u8], origin: &str) -> Result<TargetVocab> {
    let sha256 = hex(&Sha256::digest(bytes));
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let line_err = |line: usize, msg: String| Error::Line {
        path: origin.to_string(),
        line,
        msg,
    };
    if body.is_empty() {
        return Err(Error::file(origin, "the vocabulary is empty"));
    }
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    let mut tokens = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    let mut duplicates = 0;
    let mut duplicate_examples = Vec::new();
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            return Err(line_err(
                line,
                "empty line (every line must hold a token)".into(),
            ));
        }
        if raw.len() > MAX_TOKEN_BYTES {
            return Err(line_err(
                line,
                format!(
                    "line is {} bytes long, more than {MAX_TOKEN_BYTES}: is this a vocabulary?",
                    raw.len()
                ),
            ));
        }
        let token = std::str::from_utf8(raw).map_err(|e| {
            line_err(
                line,
                format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
            )
        })?;
        if token.contains('\0') {
            return Err(line_err(line, "contains a NUL byte".into()));
        }
        if !seen.insert(token) {
            duplicates += 1;
            if duplicate_examples.len() < 5 {
                duplicate_examples.push(token.to_string());
            }
        }
        tokens.push(token);
    }
    let tokens = tokens.into_iter().map(str::to_string).collect();
    Ok(TargetVocab {
        tokens,
        duplicates,
        duplicate_examples,
        sha256,
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

fn load_tokenizer_json(path: &Path) -> Result<SourceVocab> {
    let tok = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| Error::file(path, format!("not a readable tokenizer.json: {e}")))?;
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
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        Error::Line {
            path: path.display().to_string(),
            line,
            msg: "invalid UTF-8".into(),
        }
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut ids = HashMap::new();
    let mut special = Vec::new();
    // `str::lines` splits on \n (and strips \r) only, never on U+2028: the right reading of vocab.txt.
    for (id, token) in text.lines().enumerate() {
        let id = u32::try_from(id).map_err(|_| Error::file(path, "more than 2^32 lines"))?;
        // The first occurrence keeps its id, as in the tokenizers crate's WordPiece reader.
        ids.entry(token.to_string()).or_insert(id);
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
    Ok(finish_source(ids, SourceKind::VocabTxt, path, special))
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
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    fn duplicates_are_counted_and_kept() {
        let v = parse_target(b"a\nb\na\na\n", "v.txt").unwrap();
        assert_eq!(v.tokens.len(), 4);
        assert_eq!(v.duplicates, 2);
        assert_eq!(v.duplicate_examples, vec!["a", "a"]);
    }
}

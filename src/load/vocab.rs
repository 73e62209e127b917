//! Vocabularies: the target list the user brings (one token per line) and the source model's own
//! (tokenizer.json or vocab.txt), as token -> id maps.
//!
//! (Over 400 lines because it reads three kinds of input, the target list, the source vocabulary
//! and a target tokenizer.json, under the same limits and token spellings; a fifth is tests.)

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
    /// How the tokens are spelled: plain text for a word list; a tokenizer.json's own code
    /// (byte-level, SentencePiece) for its model vocabulary.
    pub spelling: Spelling,
    /// Rows (sorted) whose token is plain text whatever the spelling: a tokenizer.json's added
    /// tokens (`<|im_start|>` is stored as typed, not byte-mapped).
    pub plain: Vec<usize>,
}

/// How a target vocabulary spells its tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Spelling {
    /// As typed (a word list, a WordPiece vocabulary).
    #[default]
    Text,
    /// GPT-2's byte-to-character code (GPT-2, RoBERTa, Qwen, LLaMA-3): `Ġduring` is " during",
    /// `çĶļ` the three bytes of 甚.
    ByteLevel,
    /// SentencePiece: `▁` is a space and `<0xE7>` a byte-fallback piece holding one byte.
    SentencePiece,
}

impl TargetVocab {
    /// A word list held in memory (tests, library callers): the sha256 is that of the lines
    /// written one per line.
    pub fn from_words(tokens: Vec<String>, origin: &str) -> Self {
        let mut h = Sha256::new();
        for t in &tokens {
            h.update(t.as_bytes());
            h.update(b"\n");
        }
        TargetVocab {
            tokens,
            duplicates: 0,
            duplicate_examples: Vec::new(),
            blank_lines: Vec::new(),
            control_lines: Vec::new(),
            sha256: hex(&h.finalize()),
            origin: origin.to_string(),
            spelling: Spelling::Text,
            plain: Vec::new(),
        }
    }

    /// The bytes the token of row `i` stands for, when its spelling is a code (None: the token is
    /// its own text). May be part of a character (byte-level tokens and byte-fallback pieces
    /// split characters).
    pub fn bytes_of(&self, i: usize) -> Option<Vec<u8>> {
        if self.spelling == Spelling::Text || self.plain.binary_search(&i).is_ok() {
            return None;
        }
        decode_spelling(&self.tokens[i], self.spelling)
    }

    /// The text each token stands for (a partial character's bytes dropped), for consumers that
    /// want words: static vectors, `--aux-vectors`.
    pub fn texts(&self) -> std::borrow::Cow<'_, [String]> {
        if self.spelling == Spelling::Text {
            return std::borrow::Cow::Borrowed(&self.tokens);
        }
        (0..self.tokens.len())
            .map(|i| match self.bytes_of(i) {
                Some(b) => lossy_text(&b),
                None => self.tokens[i].clone(),
            })
            .collect()
    }
}

/// The bytes as text with the bytes of partial characters dropped.
pub fn lossy_text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).replace('\u{fffd}', "")
}

/// The bytes as text, partial characters written `\xE7` (for reports).
pub fn escaped_text(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.utf8_chunks() {
        out.push_str(chunk.valid());
        for x in chunk.invalid() {
            out.push_str(&format!("\\x{x:02X}"));
        }
    }
    out
}

/// The bytes a token spelled in `spelling` stands for; None when the token is not in that code
/// (a character outside GPT-2's byte alphabet).
pub fn decode_spelling(token: &str, spelling: Spelling) -> Option<Vec<u8>> {
    match spelling {
        Spelling::Text => Some(token.as_bytes().to_vec()),
        Spelling::ByteLevel => token.chars().map(char_byte).collect(),
        Spelling::SentencePiece => {
            if let Some(b) = byte_fallback(token) {
                return Some(vec![b]);
            }
            Some(token.replace('\u{2581}', " ").into_bytes())
        }
    }
}

/// A SentencePiece byte-fallback piece, `<0xE7>`: its byte.
pub fn byte_fallback(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Bytes GPT-2's code writes as themselves: printable Latin-1 except the soft hyphen.
fn printable(b: u8) -> bool {
    matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// GPT-2's byte-to-character code (`bytes_to_unicode`): printable bytes are themselves, the
/// other 68 take U+0100.. in byte order. (The tokenizers crate keeps its table private.)
static BYTE_CHARS: std::sync::LazyLock<[char; 256]> = std::sync::LazyLock::new(|| {
    let mut t = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        t[b as usize] = if printable(b) {
            b as char
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or('\0')
        };
    }
    t
});

pub fn byte_char(b: u8) -> char {
    BYTE_CHARS[b as usize]
}

/// The byte a character of GPT-2's code stands for.
pub fn char_byte(c: char) -> Option<u8> {
    let n = c as u32;
    if n < 256 {
        return printable(n as u8).then_some(n as u8);
    }
    static CODED: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| (0..=255u8).filter(|&x| !printable(x)).collect());
    CODED.get((n - 256) as usize).copied()
}

/// Bytes in GPT-2's code (how a byte-level BPE vocabulary stores them).
pub fn byte_level_spelling(b: &[u8]) -> String {
    b.iter().map(|&x| byte_char(x)).collect()
}

/// Reads a target vocabulary from a file, or from standard input when `path` is `-`; a
/// tokenizer.json (see [`is_tokenizer_json`]) gives its tokens by id. The limits
/// hold while streaming: a line is never read past [`MAX_TOKEN_BYTES`], so `/dev/zero` or a
/// 50 MB line fail after a kilobyte, not after filling memory.
pub fn read_target(path: &Path) -> Result<TargetVocab> {
    if is_tokenizer_json(path) {
        return read_target_tokenizer(path).map(|(v, _)| v);
    }
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
        spelling: Spelling::Text,
        plain: Vec::new(),
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

/// Whether a target vocabulary file is a tokenizer.json rather than a word list: its name ends in
/// `.json`, or it opens a JSON object: `{` then a `"` after any whitespace (a word list would
/// have to start with the lines `{` and `"...`; a pretty-printed tokenizer.json read as lines
/// would otherwise pass for one).
pub fn is_tokenizer_json(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        return true;
    }
    if path == Path::new("-") {
        return false;
    }
    // Only a regular file is sniffed: opening a FIFO would wait for a writer, and a second open
    // for the real read would then find it drained.
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut head = Vec::with_capacity(64);
    if f.take(64).read_to_end(&mut head).is_err() {
        return false;
    }
    looks_like_json(&head)
}

fn looks_like_json(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    // `{` then, after any whitespace (line breaks included), a `"` opening the first key.
    match head.trim_ascii_start().strip_prefix(b"{") {
        Some(rest) => rest.trim_ascii_start().starts_with(b"\""),
        None => false,
    }
}

/// How a target tokenizer spells its model vocabulary, from the types in its pre-tokenizer and
/// decoder (`ByteLevel`; `Metaspace`, `ByteFallback` or a `Replace` of `▁`), Sequences included.
fn spelling_of(tj: &serde_json::Value) -> Spelling {
    fn types(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(t) = m.get("type").and_then(|t| t.as_str()) {
                    out.push(t.to_string());
                }
                if m.get("type").and_then(|t| t.as_str()) == Some("Replace")
                    && m.get("pattern")
                        .and_then(|p| p.get("String"))
                        .and_then(|p| p.as_str())
                        == Some("\u{2581}")
                {
                    out.push("Metaspace".into());
                }
                for v in m.values() {
                    types(v, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| types(v, out)),
            _ => {}
        }
    }
    let mut t = Vec::new();
    for k in ["pre_tokenizer", "decoder"] {
        if let Some(v) = tj.get(k) {
            types(v, &mut t);
        }
    }
    if t.iter().any(|x| x == "ByteLevel") {
        Spelling::ByteLevel
    } else if t.iter().any(|x| x == "Metaspace" || x == "ByteFallback")
        || tj.pointer("/model/byte_fallback").and_then(|b| b.as_bool()) == Some(true)
    {
        Spelling::SentencePiece
    } else {
        Spelling::Text
    }
}

/// A target tokenizer.json (`--vocab tokenizer.json`): its tokens by id (model vocabulary and
/// added tokens) are the rows, and with `--emit-model` the file itself becomes the model's
/// tokenizer. Ids must run 0..n: each id is checked against the number of entries before
/// anything is allocated for it, a gap is an error, and so are two tokens on one id.
pub fn read_target_tokenizer(path: &Path) -> Result<(TargetVocab, serde_json::Value)> {
    let bytes = bounded::read_text_bytes(path, bounded::MAX_VOCAB_BYTES, "a tokenizer.json")?;
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let tj: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::file(path, format!("not a tokenizer.json: {e}")))?;
    // (token, id, added) in file order.
    let mut entries: Vec<(&str, u64, bool)> = Vec::new();
    let no_id = |what: String| {
        Error::file(
            path,
            format!("{what} has no id that is a non-negative integer"),
        )
    };
    match tj.pointer("/model/vocab") {
        Some(serde_json::Value::Object(m)) => {
            for (t, id) in m {
                let id = id.as_u64().ok_or_else(|| no_id(format!("token {t:?}")))?;
                entries.push((t, id, false));
            }
        }
        Some(serde_json::Value::Array(a)) => {
            for (i, e) in a.iter().enumerate() {
                let t = e.get(0).and_then(|x| x.as_str()).ok_or_else(|| {
                    Error::file(path, format!("vocabulary entry {i} is not [piece, score]"))
                })?;
                entries.push((t, i as u64, false));
            }
        }
        _ => return Err(Error::file(path, "not a tokenizer.json: no model.vocab")),
    }
    for (i, a) in tj
        .get("added_tokens")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let t = a
            .get("content")
            .and_then(|x| x.as_str())
            .ok_or_else(|| Error::file(path, format!("added token {i} has no content")))?;
        let id = a
            .get("id")
            .and_then(|x| x.as_u64())
            .ok_or_else(|| no_id(format!("added token {t:?}")))?;
        entries.push((t, id, true));
    }
    let n = entries.len();
    if n == 0 {
        return Err(Error::file(path, "the tokenizer has no tokens"));
    }
    // Every id below the entry count: the only allocation is n slots, whatever the ids claim.
    let mut by_id: Vec<Option<(&str, bool)>> = vec![None; n];
    for &(t, id, added) in &entries {
        let slot = usize::try_from(id)
            .ok()
            .and_then(|i| by_id.get_mut(i))
            .ok_or_else(|| {
                Error::file(
                    path,
                    format!("token {t:?} has id {id}, but the file holds only {n} tokens: the ids of a target tokenizer must run 0..n without gaps"),
                )
            })?;
        match slot {
            Some((other, _)) if *other != t => {
                return Err(Error::file(
                    path,
                    format!(
                        "tokens {other:?} and {t:?} both have id {id}: each id must name one token"
                    ),
                ))
            }
            // An added token repeating its model-vocabulary entry (BERT's [PAD]): one token.
            Some((_, was_added)) => *was_added |= added,
            None => *slot = Some((t, added)),
        }
    }
    let len = by_id.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
    by_id.truncate(len);
    let mut tokens = Vec::with_capacity(len);
    let mut plain = Vec::new();
    for (i, slot) in by_id.into_iter().enumerate() {
        let (t, added) = slot.ok_or_else(|| {
            Error::file(
                path,
                format!(
                    "no token has id {i}: the ids of a target tokenizer must run 0..n without gaps"
                ),
            )
        })?;
        if added {
            plain.push(i);
        }
        tokens.push(t.to_string());
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let (mut duplicates, mut duplicate_examples) = (0, Vec::new());
    for t in &tokens {
        let c = seen.entry(t).or_default();
        *c += 1;
        if *c > 1 {
            duplicates += 1;
            if duplicate_examples.len() < 5 {
                duplicate_examples.push(t.clone());
            }
        }
    }
    let spelling = spelling_of(&tj);
    let sha256 = hex(&Sha256::digest(&bytes));
    Ok((
        TargetVocab {
            tokens,
            duplicates,
            duplicate_examples,
            blank_lines: Vec::new(),
            control_lines: Vec::new(),
            sha256,
            origin: path.display().to_string(),
            spelling,
            plain,
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

    fn write_tj(name: &str, tj: serde_json::Value) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(name);
        std::fs::write(&p, serde_json::to_vec_pretty(&tj).unwrap()).unwrap();
        (d, p)
    }

    fn tj_err(tj: serde_json::Value) -> String {
        let (_d, p) = write_tj("t.json", tj);
        read_target_tokenizer(&p).unwrap_err().to_string()
    }

    #[test]
    fn target_tokenizer_rows_are_ids_and_bad_ids_are_errors() {
        let tj = serde_json::json!({
            "added_tokens": [{"id": 3, "content": "<|x|>", "special": true}],
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel"}]},
            "model": {"type": "BPE", "vocab": {"b": 1, "\u{120}a": 0, "\u{e7}\u{136}": 2}, "merges": []}});
        // Detected by content too: a pretty-printed file named without .json.
        let (_d, p) = write_tj("target", tj.clone());
        assert!(is_tokenizer_json(&p));
        let v = read_target(&p).unwrap();
        assert_eq!(v.tokens, ["\u{120}a", "b", "\u{e7}\u{136}", "<|x|>"]);
        assert_eq!(v.spelling, Spelling::ByteLevel);
        assert_eq!(v.plain, [3]);
        assert_eq!(v.bytes_of(0).unwrap(), b" a");
        assert_eq!(v.bytes_of(2).unwrap(), [0xE7, 0x94]);
        assert_eq!(v.bytes_of(3), None);
        assert_eq!(escaped_text(&v.bytes_of(2).unwrap()), "\\xE7\\x94");

        let mut gap = tj.clone();
        gap["model"]["vocab"]["b"] = serde_json::json!(2);
        gap["model"]["vocab"]["\u{e7}\u{136}"] = serde_json::json!(3);
        gap["added_tokens"] = serde_json::json!([{"id": 2, "content": "b", "special": false}]);
        let e = tj_err(gap);
        assert!(
            e.ends_with(
                "no token has id 1: the ids of a target tokenizer must run 0..n without gaps"
            ),
            "{e}"
        );
        for (id, shown) in [
            (
                serde_json::json!(150000000u64),
                "has id 150000000, but the file holds only 4 tokens",
            ),
            (
                serde_json::json!(u64::MAX),
                "has id 18446744073709551615, but the file holds only 4 tokens",
            ),
            (
                serde_json::json!(1e12),
                "token \"b\" has no id that is a non-negative integer",
            ),
            (
                serde_json::json!(-1),
                "token \"b\" has no id that is a non-negative integer",
            ),
        ] {
            let mut big = tj.clone();
            big["model"]["vocab"]["b"] = id;
            let e = tj_err(big);
            assert!(e.contains(shown), "{e}");
        }
        let mut two = tj.clone();
        two["added_tokens"][0]["id"] = serde_json::json!(1);
        let e = tj_err(two);
        assert!(
            e.ends_with("tokens \"b\" and \"<|x|>\" both have id 1: each id must name one token"),
            "{e}"
        );
    }

    #[test]
    fn spellings_decode_to_bytes() {
        assert_eq!(
            decode_spelling("\u{2581}new\u{2581}york", Spelling::SentencePiece).unwrap(),
            b" new york"
        );
        assert_eq!(
            decode_spelling("<0xE7>", Spelling::SentencePiece).unwrap(),
            [0xE7]
        );
        assert_eq!(
            decode_spelling(
                "\u{e7}\u{136}\u{13c}\u{e4}\u{b9}\u{12a}",
                Spelling::ByteLevel
            )
            .unwrap(),
            "甚么".as_bytes()
        );
        assert_eq!(decode_spelling("中", Spelling::ByteLevel), None);
        for b in 0..=255u8 {
            assert_eq!(char_byte(byte_char(b)), Some(b));
        }
        assert_eq!(byte_level_spelling(" \n".as_bytes()), "\u{120}\u{10a}");
        assert!(!looks_like_json(b"{\n}\n"));
        assert!(looks_like_json(b"\xEF\xBB\xBF{\"version\""));
        assert!(looks_like_json(b"{\n  \"version\""));
        assert!(!looks_like_json(b"the\n{\n"));
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

//! Static word vectors (word2vec, GloVe, fastText, Tencent AI Lab): text with or without the
//! `count dim` header line, word2vec binary, and `.npy` with a word list; also which `--model`
//! paths are such files ([`sniff`]). Only the rows a caller wants ([`Wanted`]) are kept. Text is
//! memory-mapped and parsed in rounds of 16 MB, each cut at line ends into pieces parsed in
//! parallel and its pages released before the next (the reused checkpoint map helpers); binary
//! and `.npy` are read through a buffer.
//!
//! Every text line's field count is checked (a ragged row is an error naming its line), but the
//! values are parsed only on the rows that are kept: a bad number in a row nobody needs is not
//! noticed. A header's count and dimension are checked against the file.
//!
//! `.npy` (a 2-D `<f4` or `<f8` array, C or Fortran order) takes its words, one per line, from the file
//! with the same name and `.txt` in place of `.npy` (`glove.npy` -> `glove.txt`), else
//! `vocab.txt` beside it.

use crate::error::{Error, Result};
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use unicode_normalization::UnicodeNormalization;

/// The kept rows of a static-vector file.
#[derive(Debug, Clone)]
pub struct Vectors {
    pub path: PathBuf,
    pub format: Format,
    /// `.npy`: the file its words came from.
    pub words_file: Option<PathBuf>,
    pub dim: usize,
    /// Vectors in the file (kept or not).
    pub total: usize,
    pub words: Vec<String>,
    /// words.len() x dim, row-major.
    pub data: Vec<f32>,
    index: HashMap<String, usize>,
}

impl Vectors {
    pub fn get(&self, word: &str) -> Option<&[f32]> {
        self.position(word).map(|i| self.row(i))
    }

    /// The row number of `word` among the kept rows.
    pub fn position(&self, word: &str) -> Option<usize> {
        self.index.get(word).copied()
    }

    /// Kept row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// A token's vector under the first of its [`Vectors::forms`] the file has.
    pub fn lookup(&self, token: &str) -> Option<&[f32]> {
        self.find(token).map(|(i, _)| self.row(i))
    }

    /// The kept row a token finds under its [`Vectors::forms`], and whether it was the token as
    /// written (`true`) or a normalised form.
    pub fn find(&self, token: &str) -> Option<(usize, bool)> {
        if let Some(i) = self.position(token) {
            return Some((i, true));
        }
        Self::forms(token)
            .iter()
            .skip(1)
            .find_map(|f| self.position(f))
            .map(|i| (i, false))
    }

    /// The forms a token is looked up under, in order, without repeats: as written; NFKC
    /// (full-width `ＡＢＣ` -> `ABC`, as the matching of checkpoints does); trimmed; lower-cased
    /// (GloVe is lower-case). Also the rows to keep while reading.
    pub fn forms(token: &str) -> Vec<String> {
        let nfkc: String = token.nfkc().collect();
        let trimmed = nfkc.trim();
        let mut out = vec![token.to_string()];
        for f in [
            nfkc.as_str(),
            token.trim(),
            trimmed,
            &trimmed.to_lowercase(),
        ] {
            if !f.is_empty() && !out.iter().any(|o| o == f) {
                out.push(f.to_string());
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    fn push(&mut self, word: String, v: &[f32]) {
        if self.index.contains_key(&word) {
            return; // the first occurrence wins
        }
        self.index.insert(word.clone(), self.words.len());
        self.words.push(word);
        self.data.extend_from_slice(v);
    }
}

/// The words a reader keeps: a set, with a bit filter in front of it so that the millions of
/// words nobody wants are turned away by one hash and one bit (a set lookup misses the cache on
/// most of them).
pub struct Wanted {
    set: ahash::AHashSet<String>,
    bits: Vec<u64>,
    hasher: ahash::RandomState,
}

impl Wanted {
    pub fn new(words: impl IntoIterator<Item = String>) -> Self {
        let set: ahash::AHashSet<String> = words.into_iter().collect();
        // About 16 bits per word: a few percent of unwanted words reach the set.
        let n = (set.len() * 16).next_power_of_two().max(64);
        let hasher = ahash::RandomState::with_seeds(1, 2, 3, 4);
        let mut bits = vec![0u64; n / 64];
        for w in &set {
            let h = hasher.hash_one(w.as_str()) as usize & (n - 1);
            bits[h / 64] |= 1 << (h % 64);
        }
        Wanted { set, bits, hasher }
    }

    pub fn contains(&self, word: &str) -> bool {
        let h = self.hasher.hash_one(word) as usize & (self.bits.len() * 64 - 1);
        self.bits[h / 64] & (1 << (h % 64)) != 0 && self.set.contains(word)
    }
}

/// The file formats read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// word2vec / GloVe / fastText text, with or without the `count dim` header line.
    Text,
    /// word2vec binary: a `count dim` line, then per vector the word, a space and dim f32 LE.
    Binary,
    /// A 2-D `.npy` array and a word list.
    Npy,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "word2vec text",
            Format::Binary => "word2vec binary",
            Format::Npy => "npy",
        }
    }

    fn of_path(path: &Path) -> Format {
        match extension(path).as_str() {
            "npy" => Format::Npy,
            "bin" => Format::Binary,
            _ => Format::Text,
        }
    }
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Whether `--model PATH` names a static-vector file rather than a checkpoint, and which format:
/// `.npy` always; `.txt` and `.vec` always (no checkpoint is text); `.bin` when its first line is
/// `count dim` (a PyTorch `.bin` starts with a zip or pickle header); other names (none of
/// `.safetensors`, `.json`, `.pt`, `.pth`, `.ckpt`) when the first line is a `count dim` header or
/// a word followed by numbers. Directories and hub ids are never vector files.
pub fn sniff(path: &Path) -> Option<Format> {
    if !path.is_file() {
        return None;
    }
    let head = || -> Vec<u8> {
        let mut buf = vec![0u8; 1 << 16];
        let n = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut buf))
            .unwrap_or(0);
        buf.truncate(n);
        buf
    };
    let first_line = |b: &[u8]| -> Option<String> {
        let end = b.iter().position(|&c| c == b'\n')?;
        std::str::from_utf8(&b[..end])
            .ok()
            .map(|l| l.trim_start_matches('\u{feff}').trim_end().to_string())
    };
    match extension(path).as_str() {
        "npy" => Some(Format::Npy),
        "txt" | "vec" => Some(Format::Text),
        "bin" => first_line(&head())
            .and_then(|l| parse_header(&l))
            .map(|_| Format::Binary),
        "safetensors" | "json" | "pt" | "pth" | "ckpt" => None,
        _ => {
            let l = first_line(&head())?;
            let mut fields = l.split_ascii_whitespace();
            let word = fields.next()?;
            let nums: Vec<&str> = fields.collect();
            let looks = parse_header(&l).is_some()
                || (!word.is_empty()
                    && !nums.is_empty()
                    && nums.iter().all(|x| x.parse::<f32>().is_ok()));
            looks.then_some(Format::Text)
        }
    }
}

/// Bytes of a text file parsed per round: the mapped pages of one round are all this process
/// holds of the file (they are released before the next round).
const ROUND: usize = 16 << 20;
/// Longest line accepted (a file without line ends is not a vector file).
const MAX_LINE: usize = 32 << 20;
/// Largest dimension a binary or `.npy` header may claim (real word vectors have 50-1,000): a
/// header is checked against this and the file's length before anything is allocated for it.
pub const MAX_DIM: usize = 1 << 16;

/// Reads the rows of `path` whose word `wanted` accepts.
pub fn read(path: &Path, wanted: &(dyn Fn(&str) -> bool + Sync)) -> Result<Vectors> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Error::file(path, "is a directory, not a vector file"));
    }
    match Format::of_path(path) {
        Format::Npy => read_npy(path, f, wanted),
        Format::Binary => read_binary(path, f, wanted),
        Format::Text => {
            drop(f);
            read_text(path, wanted, ROUND)
        }
    }
}

fn empty(path: &Path, format: Format, dim: usize) -> Vectors {
    Vectors {
        path: path.to_path_buf(),
        format,
        words_file: None,
        dim,
        total: 0,
        words: Vec::new(),
        data: Vec::new(),
        index: HashMap::new(),
    }
}

fn line_err(path: &Path, line: usize, msg: impl Into<String>) -> Error {
    Error::Line {
        path: path.display().to_string(),
        line,
        msg: msg.into(),
    }
}

/// `count dim` (two non-negative integers and nothing else).
fn parse_header(line: &str) -> Option<(usize, usize)> {
    let mut it = line.split_ascii_whitespace();
    let (a, b) = (it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// What one piece of lines gave: lines seen, rows kept, and the first error (by local line).
struct BlockOut {
    lines: usize,
    kept: Vec<(String, Vec<f32>)>,
    error: Option<(usize, String)>,
}

/// How many bytes of `hay` equal `b`, in 32-byte strides with byte counters (which the compiler
/// turns into vector compares): a line's field count is checked on every row, so this runs over
/// the whole file.
fn count_byte(hay: &[u8], b: u8) -> usize {
    let mut total = 0usize;
    let mut chunks = hay.chunks_exact(32);
    let mut acc = [0u8; 32];
    let mut n = 0;
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += u8::from(x == b);
        }
        n += 1;
        if n == 255 {
            total += acc.iter().map(|&a| a as usize).sum::<usize>();
            acc = [0; 32];
            n = 0;
        }
    }
    total += acc.iter().map(|&a| a as usize).sum::<usize>();
    total + chunks.remainder().iter().filter(|&&x| x == b).count()
}

fn parse_block(block: &[u8], dim: usize, wanted: &(dyn Fn(&str) -> bool + Sync)) -> BlockOut {
    let mut out = BlockOut {
        lines: 0,
        kept: Vec::new(),
        error: None,
    };
    // Lines as `split(b'\n')` gives them (an empty block is one empty line), found with memchr.
    let mut rest = Some(block);
    while let Some(r) = rest {
        let raw = match memchr::memchr(b'\n', r) {
            Some(p) => {
                rest = Some(&r[p + 1..]);
                &r[..p]
            }
            None => {
                rest = None;
                r
            }
        };
        out.lines += 1;
        let mut line = raw;
        while let Some((&last, rest)) = line.split_last() {
            if last == b'\r' || last == b' ' || last == b'\t' {
                line = rest;
            } else {
                break;
            }
        }
        let fail = |msg: String| Some((out.lines, msg));
        if line.is_empty() {
            out.error = fail("empty line".into());
            return out;
        }
        let Some(sp) = memchr::memchr(b' ', line) else {
            out.error = fail(format!("a word and no values (expected {dim})"));
            return out;
        };
        let (word, values) = (&line[..sp], &line[sp + 1..]);
        let fields = count_byte(values, b' ') + 1;
        let fields = if fields == dim {
            fields
        } else {
            // Runs of spaces or tabs: count properly before calling the row ragged.
            values
                .split(|b| b.is_ascii_whitespace())
                .filter(|s| !s.is_empty())
                .count()
        };
        if fields != dim {
            out.error = fail(format!("{fields} values, expected {dim}"));
            return out;
        }
        let Ok(word) = std::str::from_utf8(word) else {
            out.error = fail("the word is not UTF-8".into());
            return out;
        };
        if !wanted(word) {
            continue;
        }
        let mut v = Vec::with_capacity(dim);
        for s in values
            .split(|b| b.is_ascii_whitespace())
            .filter(|s| !s.is_empty())
        {
            // Correctly rounded, as `str::parse::<f32>`, straight from the bytes.
            match fast_float2::parse::<f32, _>(s) {
                Ok(x) if x.is_finite() => v.push(x),
                _ => {
                    out.error = fail(format!(
                        "`{}` is not a finite number",
                        String::from_utf8_lossy(s)
                    ));
                    return out;
                }
            }
        }
        out.kept.push((word.to_string(), v));
    }
    out
}

/// The text format, memory-mapped: each round of [`ROUND`] bytes is cut at line ends into a
/// few pieces per thread, parsed in parallel, merged in file order, and its pages released.
fn read_text(path: &Path, wanted: &(dyn Fn(&str) -> bool + Sync), round: usize) -> Result<Vectors> {
    let map = crate::load::checkpoint::map_file(path).map_err(|e| match e {
        Error::File { .. } => Error::file(path, "holds no vectors"),
        e => e,
    })?;
    let data: &[u8] = &map;
    let mut out = empty(path, Format::Text, 0);
    // The first line: a header, or the first vector (which sets the dimension).
    let first_end = memchr::memchr(b'\n', data).unwrap_or(data.len());
    if first_end > MAX_LINE {
        return Err(line_err(path, 1, "a line over 32 MiB: not a vector file"));
    }
    let first = String::from_utf8_lossy(&data[..first_end]);
    let first = first.trim_start_matches('\u{feff}');
    let (header, dim, mut pos, mut line_no) = match parse_header(first) {
        Some((_, 0)) => return Err(line_err(path, 1, "the header says dimension 0")),
        Some((count, d)) => (Some(count), d, (first_end + 1).min(data.len()), 1),
        None => {
            let fields = first.split_ascii_whitespace().count();
            if fields < 2 {
                return Err(line_err(
                    path,
                    1,
                    "neither a `count dim` header nor a word followed by its values",
                ));
            }
            // The BOM is not part of the first word.
            let bom = if data.starts_with("\u{feff}".as_bytes()) {
                3
            } else {
                0
            };
            (None, fields - 1, bom, 0)
        }
    };
    out.dim = dim;
    // Rounds end at a line end, which they leave out: a final line end closes the last line and
    // opens no empty one, while an empty line anywhere (also last) is a piece's empty line.
    let end = data.len();
    let parts = rayon::current_num_threads().max(1) * 4;
    while pos < end {
        let round_end = cut(data, pos, (pos + round).min(end), end)
            .ok_or_else(|| too_long(path, data, pos, line_no))?;
        let round_end = if round_end == end && data[end - 1] == b'\n' {
            end - 1
        } else {
            round_end
        };
        let body = &data[pos..round_end];
        let piece = (body.len() / parts).max(round.min(1 << 16));
        let mut pieces: Vec<&[u8]> = Vec::with_capacity(parts + 1);
        let mut at = 0;
        loop {
            let next = if body.len() - at <= piece {
                body.len()
            } else {
                cut(body, at, at + piece, body.len()).unwrap_or(body.len())
            };
            pieces.push(&body[at..next]);
            if next >= body.len() {
                break;
            }
            at = next + 1;
        }
        let results: Vec<BlockOut> = pieces
            .par_iter()
            .map(|p| parse_block(p, dim, wanted))
            .collect();
        for r in results {
            if let Some((local, msg)) = r.error {
                return Err(line_err(path, line_no + local, msg));
            }
            for (w, v) in r.kept {
                out.push(w, &v);
            }
            line_no += r.lines;
            out.total += r.lines;
        }
        crate::load::checkpoint::release_range(&map, pos, round_end - pos);
        pos = round_end + 1;
    }
    if let Some(count) = header {
        if count != out.total {
            return Err(Error::file(
                path,
                format!(
                    "the header (line 1) says {count} vectors but the file has {}",
                    out.total
                ),
            ));
        }
    }
    if out.total == 0 {
        return Err(Error::file(path, "holds no vectors"));
    }
    Ok(out)
}

/// The first line end at or after `target` (at most `limit`; `limit` itself when the line runs
/// to it), or None when the line from `from` is longer than [`MAX_LINE`].
fn cut(data: &[u8], from: usize, target: usize, limit: usize) -> Option<usize> {
    let target = target.min(limit);
    let window = &data[target..limit.min(target.max(from) + MAX_LINE)];
    match memchr::memchr(b'\n', window) {
        Some(p) => Some(target + p),
        None if limit - target <= MAX_LINE => Some(limit),
        None => None,
    }
}

fn too_long(path: &Path, data: &[u8], pos: usize, line_no: usize) -> Error {
    let upto = &data[pos..(pos + ROUND).min(data.len())];
    line_err(
        path,
        line_no + 1 + count_byte(upto, b'\n'),
        "a line over 32 MiB: not a vector file",
    )
}

fn read_binary(
    path: &Path,
    f: std::fs::File,
    wanted: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vectors> {
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = r.read(&mut byte).map_err(|e| Error::io(path, e))?;
        if n == 0 || byte[0] == b'\n' {
            break;
        }
        head.push(byte[0]);
        if head.len() > 100 {
            break;
        }
    }
    let (count, dim) = parse_header(&String::from_utf8_lossy(&head))
        .filter(|&(_, d)| d > 0)
        .ok_or_else(|| {
            line_err(
                path,
                1,
                "a word2vec binary file starts with a `count dim` line",
            )
        })?;
    if dim > MAX_DIM {
        return Err(line_err(
            path,
            1,
            format!("the header says dimension {dim} (1 to {MAX_DIM} accepted)"),
        ));
    }
    // One vector's buffer is allocated from the header's dimension: it must fit in the file.
    // (The count allocates nothing; a count the file cannot hold ends at the truncated vector.)
    if let Ok(m) = r.get_ref().metadata() {
        if m.is_file() && (dim * 4) as u64 > m.len() {
            return Err(line_err(
                path,
                1,
                format!(
                    "the header says dimension {dim}, more than the file's {} bytes can hold",
                    m.len()
                ),
            ));
        }
    }
    let mut out = empty(path, Format::Binary, dim);
    let mut vals = vec![0u8; dim * 4];
    let mut v = vec![0f32; dim];
    let mut word = Vec::new();
    for k in 0..count {
        word.clear();
        loop {
            let n = r.read(&mut byte).map_err(|e| Error::io(path, e))?;
            if n == 0 {
                return Err(Error::file(
                    path,
                    format!(
                        "the header says {count} vectors but the file ends in vector {}",
                        k + 1
                    ),
                ));
            }
            match byte[0] {
                b' ' => break,
                b'\n' if word.is_empty() => {}
                b => word.push(b),
            }
            if word.len() > 4096 {
                return Err(Error::file(
                    path,
                    format!(
                        "vector {}: a word over 4 KiB: not a word2vec binary file",
                        k + 1
                    ),
                ));
            }
        }
        r.read_exact(&mut vals).map_err(|_| {
            Error::file(
                path,
                format!(
                    "the header says {count} vectors of {dim} values but the file ends in vector {}",
                    k + 1
                ),
            )
        })?;
        let Ok(w) = std::str::from_utf8(&word) else {
            return Err(Error::file(
                path,
                format!("vector {}: the word is not UTF-8", k + 1),
            ));
        };
        if wanted(w) {
            for (x, b) in v.iter_mut().zip(vals.chunks_exact(4)) {
                *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::file(
                    path,
                    format!("vector {} (`{w}`) holds NaN or infinity", k + 1),
                ));
            }
            out.push(w.to_string(), &v);
        }
        out.total += 1;
    }
    Ok(out)
}

/// An `.npy` header: the Python dict literal numpy writes (`{'descr': '<f4', 'fortran_order':
/// False, 'shape': (400000, 50), }`), parsed as the literal it is: each of the three keys exactly
/// once, nothing else, so a stray `'<f4'` elsewhere cannot pass for the dtype.
#[derive(Debug, PartialEq)]
struct NpyHeader {
    width: usize,
    fortran: bool,
    shape: [usize; 2],
}

impl NpyHeader {
    fn parse(h: &str) -> std::result::Result<NpyHeader, String> {
        let mut p = PyLit {
            s: h.as_bytes(),
            i: 0,
        };
        p.expect(b'{')?;
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        loop {
            p.ws();
            if p.eat(b'}') {
                break;
            }
            let key = p.string()?;
            p.ws();
            p.expect(b':')?;
            p.ws();
            let dup = || format!("key '{key}' appears twice");
            match key.as_str() {
                "descr" => {
                    if descr.replace(p.string()?).is_some() {
                        return Err(dup());
                    }
                }
                "fortran_order" => {
                    let v = if p.word("True") {
                        true
                    } else if p.word("False") {
                        false
                    } else {
                        return Err("fortran_order is not True or False".into());
                    };
                    if fortran.replace(v).is_some() {
                        return Err(dup());
                    }
                }
                "shape" => {
                    if shape.replace(p.tuple()?).is_some() {
                        return Err(dup());
                    }
                }
                other => return Err(format!("unexpected key '{other}' in the header")),
            }
            p.ws();
            if !p.eat(b',') {
                p.ws();
                p.expect(b'}')?;
                break;
            }
        }
        if !p.s[p.i..].iter().all(|b| b.is_ascii_whitespace()) {
            return Err("text after the header's dict".into());
        }
        let descr = descr.ok_or("no 'descr' in the header")?;
        let width = match descr.as_str() {
            "<f4" => 4,
            "<f8" => 8,
            d => {
                return Err(format!(
                    "dtype '{d}' is not <f4 or <f8 (little-endian float)"
                ))
            }
        };
        let shape = shape.ok_or("no 'shape' in the header")?;
        let [rows, dim] = shape[..] else {
            return Err(format!("shape has {} dimensions, not 2", shape.len()));
        };
        Ok(NpyHeader {
            width,
            fortran: fortran.ok_or("no 'fortran_order' in the header")?,
            shape: [rows, dim],
        })
    }
}

/// A cursor over a Python literal (only what `.npy` headers use).
struct PyLit<'a> {
    s: &'a [u8],
    i: usize,
}

impl PyLit<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn eat(&mut self, b: u8) -> bool {
        let hit = self.s.get(self.i) == Some(&b);
        self.i += usize::from(hit);
        hit
    }
    fn expect(&mut self, b: u8) -> std::result::Result<(), String> {
        if self.eat(b) {
            Ok(())
        } else {
            Err(format!(
                "expected '{}' at byte {} of the header",
                b as char, self.i
            ))
        }
    }
    fn word(&mut self, w: &str) -> bool {
        let hit = self.s[self.i..].starts_with(w.as_bytes());
        self.i += if hit { w.len() } else { 0 };
        hit
    }
    /// A quoted string without escapes (numpy never writes any).
    fn string(&mut self) -> std::result::Result<String, String> {
        let q = match self.s.get(self.i) {
            Some(&q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(format!(
                    "expected a quoted string at byte {} of the header",
                    self.i
                ))
            }
        };
        let start = self.i + 1;
        let len = self.s[start..]
            .iter()
            .position(|&b| b == q || b == b'\\')
            .ok_or("an unterminated string in the header")?;
        if self.s[start + len] == b'\\' {
            return Err("an escape in a header string".into());
        }
        self.i = start + len + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }
    /// `(a, b)`, `(a,)`, `()`: non-negative integers.
    fn tuple(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        loop {
            self.ws();
            if self.eat(b')') {
                return Ok(out);
            }
            let start = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            let n = std::str::from_utf8(&self.s[start..self.i])
                .ok()
                .and_then(|d| d.parse::<usize>().ok())
                .ok_or_else(|| {
                    format!("the shape holds something other than an integer at byte {start}")
                })?;
            out.push(n);
            self.ws();
            if !self.eat(b',') {
                self.ws();
                self.expect(b')')?;
                return Ok(out);
            }
        }
    }
}

fn read_npy(
    path: &Path,
    mut f: std::fs::File,
    wanted: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vectors> {
    let bad = |m: &str| Error::file(path, format!("not a 2-D float .npy array: {m}"));
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic).map_err(|_| bad("too short"))?;
    if &magic[..6] != b"\x93NUMPY" {
        return Err(bad("no NUMPY magic"));
    }
    let hlen = if magic[6] == 1 {
        let mut b = [0u8; 2];
        f.read_exact(&mut b).map_err(|_| bad("too short"))?;
        u16::from_le_bytes(b) as usize
    } else {
        let mut b = [0u8; 4];
        f.read_exact(&mut b).map_err(|_| bad("too short"))?;
        u32::from_le_bytes(b) as usize
    };
    if hlen > 1 << 16 {
        return Err(bad("header too long"));
    }
    let mut h = vec![0u8; hlen];
    f.read_exact(&mut h).map_err(|_| bad("too short"))?;
    let h = std::str::from_utf8(&h).map_err(|_| bad("the header is not text"))?;
    let header = NpyHeader::parse(h).map_err(|m| bad(&m))?;
    let (width, fortran) = (header.width, header.fortran);
    let [rows, dim] = header.shape;
    // The data must be exactly rows x dim values: checked before anything is allocated for them.
    let data_len = rows
        .checked_mul(dim)
        .and_then(|n| n.checked_mul(width))
        .ok_or_else(|| bad(&format!("shape ({rows}, {dim}) overflows")))?;
    let header_len = magic.len() + if magic[6] == 1 { 2 } else { 4 } + hlen;
    if let Ok(m) = f.metadata() {
        let have = m.len().saturating_sub(header_len as u64);
        if m.is_file() && have != data_len as u64 {
            return Err(bad(&format!(
                "shape ({rows}, {dim}) of {width}-byte values needs {data_len} bytes of data, the file has {have}"
            )));
        }
    }
    if dim == 0 || dim > MAX_DIM {
        return Err(bad(&format!("dimension {dim} (1 to {MAX_DIM} accepted)")));
    }
    let words_path = [
        path.with_extension("txt"),
        path.parent().unwrap_or(Path::new(".")).join("vocab.txt"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or_else(|| {
        Error::file(
            path,
            format!(
                "no word list beside it ({} or vocab.txt, one word per line)",
                path.with_extension("txt").display()
            ),
        )
    })?;
    let text =
        crate::bounded::read_text(&words_path, crate::bounded::MAX_VOCAB_BYTES, "a word list")?;
    let words: Vec<&str> = text.split('\n').collect();
    let words = match words.last() {
        Some(&"") => &words[..words.len() - 1],
        _ => &words[..],
    };
    if words.len() != rows {
        return Err(Error::file(
            &words_path,
            format!(
                "has {} lines but {} holds {rows} vectors",
                words.len(),
                path.display()
            ),
        ));
    }
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut out = empty(path, Format::Npy, dim);
    out.words_file = Some(words_path.clone());
    let decode = |b: &[u8]| -> f32 {
        if width == 4 {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        } else {
            f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32
        }
    };
    let ends = |what: String| {
        Error::file(
            path,
            format!("shape says {rows} x {dim} but the data ends in {what}"),
        )
    };
    if fortran {
        // Column-major (numpy's Fortran order): one column at a time, scattered to kept rows.
        let mut kept: Vec<usize> = Vec::new();
        for (k, w) in words.iter().enumerate() {
            let w = w.strip_suffix('\r').unwrap_or(w);
            if wanted(w) && out.get(w).is_none() {
                out.push(w.to_string(), &vec![0.0; dim]);
                kept.push(k);
            }
        }
        let mut col = vec![0u8; rows * width];
        for c in 0..dim {
            r.read_exact(&mut col)
                .map_err(|_| ends(format!("column {c}")))?;
            for (o, &k) in kept.iter().enumerate() {
                out.data[o * dim + c] = decode(&col[k * width..(k + 1) * width]);
            }
        }
    } else {
        let mut raw = vec![0u8; dim * width];
        let mut v = vec![0f32; dim];
        for (k, w) in words.iter().enumerate() {
            r.read_exact(&mut raw)
                .map_err(|_| ends(format!("row {k}")))?;
            let w = w.strip_suffix('\r').unwrap_or(w);
            if wanted(w) {
                for (x, b) in v.iter_mut().zip(raw.chunks_exact(width)) {
                    *x = decode(b);
                }
                out.push(w.to_string(), &v);
            }
        }
    }
    out.total = rows;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_headers_are_parsed_as_dict_literals() {
        let ok = NpyHeader::parse(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (400000, 50), }          \n",
        );
        assert_eq!(
            ok,
            Ok(NpyHeader {
                width: 4,
                fortran: false,
                shape: [400000, 50]
            })
        );
        let f = NpyHeader::parse("{\"shape\": (3,2),\"descr\":\"<f8\",\"fortran_order\":True}")
            .unwrap();
        assert_eq!((f.width, f.fortran, f.shape), (8, true, [3, 2]));
        for (h, err) in [
            // A big-endian file with a stray '<f4' key: the dtype is '>f4'.
            (
                "{'descr': '>f4', 'x': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                "unexpected key 'x'",
            ),
            (
                "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }",
                "dtype '>f4'",
            ),
            (
                "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}",
                "appears twice",
            ),
            (
                "{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3)}",
                "not True or False",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4)}",
                "3 dimensions",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3)}",
                "other than an integer",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 3)}",
                "other than an integer",
            ),
            ("{'descr': '<f4', 'fortran_order': False}", "no 'shape'"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)} junk",
                "text after",
            ),
        ] {
            let e = NpyHeader::parse(h).unwrap_err();
            assert!(e.contains(err), "{h}: {e}");
        }
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn all(_: &str) -> bool {
        true
    }

    #[test]
    fn text_with_and_without_header_binary_and_npy_agree() {
        let d = tempfile::tempdir().unwrap();
        let plain = write(d.path(), "a.txt", b"the 0.5 -1 2\nof 1e-3 0 3.25 \n");
        let header = write(d.path(), "b.vec", b"2 3\nthe 0.5 -1 2\r\nof 1e-3 0 3.25\n");
        let mut bin = b"2 3\n".to_vec();
        for (w, v) in [("the", [0.5f32, -1.0, 2.0]), ("of", [1e-3, 0.0, 3.25])] {
            bin.extend_from_slice(w.as_bytes());
            bin.push(b' ');
            v.iter()
                .for_each(|x| bin.extend_from_slice(&x.to_le_bytes()));
            bin.push(b'\n');
        }
        let bin = write(d.path(), "c.bin", &bin);
        let hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        npy.extend_from_slice(&(hdr.len() as u16).to_le_bytes());
        npy.extend_from_slice(hdr.as_bytes());
        for x in [0.5f32, -1.0, 2.0, 1e-3, 0.0, 3.25] {
            npy.extend_from_slice(&x.to_le_bytes());
        }
        let npy = write(d.path(), "g.npy", &npy);
        write(d.path(), "g.txt", b"the\nof\n");
        let hdr = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }";
        let mut f = b"\x93NUMPY\x01\x00".to_vec();
        f.extend_from_slice(&(hdr.len() as u16).to_le_bytes());
        f.extend_from_slice(hdr.as_bytes());
        for x in [0.5f32, 1e-3, -1.0, 0.0, 2.0, 3.25] {
            f.extend_from_slice(&x.to_le_bytes());
        }
        let fortran = write(d.path(), "f.npy", &f);
        write(d.path(), "f.txt", b"the\nof\n");
        for p in [plain, header, bin, npy, fortran] {
            let v = read(&p, &all).unwrap();
            assert_eq!((v.dim, v.total, v.len()), (3, 2, 2), "{p:?}");
            assert_eq!(v.get("of").unwrap(), &[1e-3, 0.0, 3.25]);
            assert_eq!(v.get("the").unwrap(), &[0.5, -1.0, 2.0]);
        }
        // Only the wanted rows are kept.
        let p = d.path().join("a.txt");
        let v = read(&p, &|w: &str| w == "of").unwrap();
        assert_eq!((v.len(), v.total), (1, 2));
    }

    #[test]
    fn broken_files_name_the_line() {
        let d = tempfile::tempdir().unwrap();
        let err = |name: &str, bytes: &[u8]| {
            let p = write(d.path(), name, bytes);
            read(&p, &all).unwrap_err().to_string()
        };
        let e = err("ragged.txt", b"a 1 2 3\nb 1 2\nc 1 2 3\n");
        assert!(
            e.ends_with("ragged.txt line 2: 2 values, expected 3"),
            "{e}"
        );
        let e = err("float.txt", b"a 1 2 3\nb 1 x 3\n");
        assert!(
            e.ends_with("float.txt line 2: `x` is not a finite number"),
            "{e}"
        );
        let e = err("dim.txt", b"3 4\na 1 2 3\n");
        assert!(e.ends_with("dim.txt line 2: 3 values, expected 4"), "{e}");
        let e = err("lies.txt", b"3 2\na 1 2\nb 1 2\n");
        assert!(
            e.contains("the header (line 1) says 3 vectors but the file has 2"),
            "{e}"
        );
        let e = err("empty.txt", b"a 1 2\n\nb 1 2\n");
        assert!(e.ends_with("empty.txt line 2: empty line"), "{e}");
        let e = err("trunc.bin", b"2 3\nthe \x00\x00\x80\x3f");
        assert!(e.contains("ends in vector 1"), "{e}");
        let e = err("nowords.npy", b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'}");
        assert!(e.contains("no 'shape'"), "{e}");
    }

    #[test]
    fn rounds_and_pieces_keep_lines_and_their_numbers() {
        let d = tempfile::tempdir().unwrap();
        let mut s = String::new();
        for i in 0..300 {
            s.push_str(&format!("w{i} {i} 2.5\r\n"));
        }
        let all_rows = |v: &Vectors| {
            assert_eq!((v.total, v.len(), v.dim), (300, 300, 2));
            for i in [0usize, 1, 137, 299] {
                assert_eq!(v.get(&format!("w{i}")).unwrap(), &[i as f32, 2.5]);
            }
        };
        // Rounds and pieces of every size, with and without a header, BOM or final line end.
        for text in [
            s.clone(),
            format!("300 2\n{s}"),
            format!("\u{feff}{s}"),
            s.trim_end().to_string(),
        ] {
            let p = write(d.path(), "r.txt", text.as_bytes());
            for round in [1, 7, 64, 1000, 1 << 20] {
                all_rows(&read_text(&p, &all, round).unwrap());
            }
        }
        // An empty line (also right at a round's cut) or at the end is an error naming it.
        for (text, line) in [
            (format!("{s}\n"), 301),
            (format!("a 1 2\n\n{s}"), 2),
            (s.replacen("w5 5 2.5\r\n", "\n", 1), 6),
        ] {
            let p = write(d.path(), "e.txt", text.as_bytes());
            for round in [1, 5, 6, 7, 13, 1 << 20] {
                let e = match read_text(&p, &all, round) {
                    Ok(v) => panic!("round {round} line {line}: read {} lines", v.total),
                    Err(e) => e.to_string(),
                };
                assert!(
                    e.ends_with(&format!("line {line}: empty line")),
                    "{round}: {e}"
                );
            }
        }
    }

    #[test]
    fn wanted_keeps_exactly_its_words() {
        let words: Vec<String> = (0..5000).map(|i| format!("w{i}")).collect();
        let w = Wanted::new(words.iter().cloned());
        assert_eq!(w.set.len(), 5000);
        assert!(words.iter().all(|x| w.contains(x)));
        assert!((5000..50_000).all(|i| !w.contains(&format!("w{i}"))));
        assert!(!Wanted::new(Vec::new()).contains(""));
    }

    #[test]
    fn numbers_parse_as_rust_does() {
        for s in [
            "0.5",
            "-1",
            "1e-3",
            "+2.25",
            ".5",
            "5.",
            "-0",
            "3.4028235e38",
            "1e-45",
        ] {
            let text = format!("a {s}\n");
            let d = tempfile::tempdir().unwrap();
            let p = write(d.path(), "n.txt", text.as_bytes());
            let v = read(&p, &all).unwrap();
            assert_eq!(
                v.get("a").unwrap()[0].to_bits(),
                s.parse::<f32>().unwrap().to_bits(),
                "{s}"
            );
        }
        for s in ["nan", "inf", "-infinity", "1e39", "1,5", "0x10", "--1"] {
            let d = tempfile::tempdir().unwrap();
            let p = write(d.path(), "n.txt", format!("a {s}\n").as_bytes());
            let e = read(&p, &all).unwrap_err().to_string();
            assert!(
                e.ends_with(&format!("line 1: `{s}` is not a finite number")),
                "{e}"
            );
        }
    }

    #[test]
    fn count_byte_counts() {
        let hay: Vec<u8> = (0..20_000u32)
            .map(|i| if i % 7 == 0 { b' ' } else { b'x' })
            .collect();
        for len in [0, 1, 31, 32, 33, 8160, 8161, 20_000] {
            let want = hay[..len].iter().filter(|&&b| b == b' ').count();
            assert_eq!(count_byte(&hay[..len], b' '), want, "{len}");
        }
    }

    #[test]
    fn line_numbers_hold_across_blocks() {
        // More lines than one worker's piece, the bad one late.
        let d = tempfile::tempdir().unwrap();
        let mut s = String::new();
        for i in 0..50_000 {
            s.push_str(&format!("w{i} 1 2\n"));
        }
        s.push_str("bad 1\n");
        let p = write(d.path(), "big.txt", s.as_bytes());
        let e = read(&p, &|w: &str| w == "w49999").unwrap_err().to_string();
        assert!(
            e.ends_with("big.txt line 50001: 1 values, expected 2"),
            "{e}"
        );
    }
}

//! Static word vectors (word2vec, GloVe, fastText, Tencent AI Lab): the kept rows ([`Vectors`],
//! with the forms a token is looked up under), which `--model` paths are such files ([`sniff`]),
//! and [`read`], which hands a file to its format's reader, one file per format family: [`text`]
//! (word2vec / GloVe / fastText text, with or without the `count dim` header line), [`binary`]
//! (word2vec `.bin`), [`npy`] (a 2-D `.npy` array with a word list). Only the rows a caller wants
//! ([`Wanted`]) are kept.

mod binary;
mod npy;
mod text;

use crate::error::{Error, Result};
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

    pub(super) fn push(&mut self, word: String, v: &[f32]) {
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

/// Largest dimension a binary or `.npy` header may claim (real word vectors have 50-1,000): a
/// header is checked against this and the file's length before anything is allocated for it.
pub(super) const MAX_DIM: usize = 1 << 16;

/// Reads the rows of `path` whose word `wanted` accepts.
pub fn read(path: &Path, wanted: &(dyn Fn(&str) -> bool + Sync)) -> Result<Vectors> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Error::file(path, "is a directory, not a vector file"));
    }
    match Format::of_path(path) {
        Format::Npy => npy::read_npy(path, f, wanted),
        Format::Binary => binary::read_binary(path, f, wanted),
        Format::Text => {
            drop(f);
            text::read_text(path, wanted, text::ROUND)
        }
    }
}

pub(super) fn empty(path: &Path, format: Format, dim: usize) -> Vectors {
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

pub(super) fn line_err(path: &Path, line: usize, msg: impl Into<String>) -> Error {
    Error::Line {
        path: path.display().to_string(),
        line,
        msg: msg.into(),
    }
}

/// `count dim` (two non-negative integers and nothing else).
pub(super) fn parse_header(line: &str) -> Option<(usize, usize)> {
    let mut it = line.split_ascii_whitespace();
    let (a, b) = (it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    pub(super) fn all(_: &str) -> bool {
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
    fn wanted_keeps_exactly_its_words() {
        let words: Vec<String> = (0..5000).map(|i| format!("w{i}")).collect();
        let w = Wanted::new(words.iter().cloned());
        assert_eq!(w.set.len(), 5000);
        assert!(words.iter().all(|x| w.contains(x)));
        assert!((5000..50_000).all(|i| !w.contains(&format!("w{i}"))));
        assert!(!Wanted::new(Vec::new()).contains(""));
    }
}

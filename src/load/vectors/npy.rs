//! `.npy`: a 2-D `<f4` or `<f8` array, C or Fortran order, read through a buffer, its header
//! parsed as the Python dict literal it is ([`NpyHeader`]). Its words, one per line, come from the
//! file with the same name and `.txt` in place of `.npy` (`glove.npy` -> `glove.txt`), else
//! `vocab.txt` beside it.

use super::{empty, Format, Vectors, MAX_DIM};
use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

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

pub(super) fn read_npy(
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
}

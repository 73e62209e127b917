//! word2vec / GloVe / fastText text, with or without the `count dim` header line. The file is
//! memory-mapped and parsed in rounds of 16 MB, each cut at line ends into pieces parsed in
//! parallel and its pages released before the next (the reused checkpoint map helpers).
//!
//! Every line's field count is checked (a ragged row is an error naming its line), but the values
//! are parsed only on the rows that are kept: a bad number in a row nobody needs is not noticed.
//! A header's count and dimension are checked against the file.

use super::{empty, line_err, parse_header, Format, Vectors};
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::path::Path;

/// Bytes of a text file parsed per round: the mapped pages of one round are all this process
/// holds of the file (they are released before the next round).
pub(super) const ROUND: usize = 16 << 20;
/// Longest line accepted (a file without line ends is not a vector file).
const MAX_LINE: usize = 32 << 20;

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
pub(super) fn read_text(
    path: &Path,
    wanted: &(dyn Fn(&str) -> bool + Sync),
    round: usize,
) -> Result<Vectors> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::vectors::read;
    use crate::load::vectors::tests::{all, write};

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

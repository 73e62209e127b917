//! word2vec binary (`.bin`): a `count dim` line, then per vector the word, a space and dim f32 LE,
//! read through a buffer. The header's dimension is checked against [`MAX_DIM`] and the file's
//! length before a vector's buffer is allocated.

use super::{empty, line_err, parse_header, Format, Vectors, MAX_DIM};
use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

pub(super) fn read_binary(
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

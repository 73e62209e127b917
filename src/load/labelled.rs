//! Labelled text files (`label<TAB>text` per line) for `finetune` and `evaluate`: read once,
//! streamed with a bound on the line length, labels mapped to class indices.

use crate::error::{Error, Result};
use crate::train::{Dataset, Segmenter};
use std::io::{BufRead, Read};
use std::path::Path;

/// Longest line accepted: far above any sentence or review, far below a file that is not a TSV.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Most lines a TSV file may have (2^24): a stream without end (`yes 'a<TAB>b'`) stops here.
pub const MAX_ROWS: usize = 1 << 24;

/// One row of a TSV file: 1-based line, label, text.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub line: usize,
    pub label: String,
    pub text: String,
}

/// Reads a TSV file; a header line `label<TAB>text` is skipped.
pub fn read_tsv(path: &Path) -> Result<Vec<Example>> {
    read_tsv_limited(path, MAX_ROWS)
}

/// [`read_tsv`] stopping after `max_rows` lines.
fn read_tsv_limited(path: &Path, max_rows: usize) -> Result<Vec<Example>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut r = std::io::BufReader::with_capacity(1 << 16, f);
    let origin = path.display().to_string();
    let err = |line: usize, msg: &str| Error::Line {
        path: origin.clone(),
        line,
        msg: msg.to_string(),
    };
    let mut rows = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        let n = (&mut r)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        line += 1;
        if line > max_rows {
            return Err(err(
                line,
                &format!("more than {max_rows} lines, the limit for a TSV file"),
            ));
        }
        let ended = buf.last() == Some(&b'\n');
        if !ended && n > MAX_LINE_BYTES {
            return Err(err(
                line,
                &format!("line is longer than {MAX_LINE_BYTES} bytes: is this a TSV file?"),
            ));
        }
        let mut raw: &[u8] = &buf;
        if ended {
            raw = &raw[..raw.len() - 1];
        }
        if line == 1 {
            raw = raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw);
        }
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|_| err(line, "invalid UTF-8"))?;
        if text.trim().is_empty() {
            return Err(err(line, "empty line"));
        }
        let Some((label, sentence)) = text.split_once('\t') else {
            return Err(err(line, "expected `label<TAB>text`, found no tab"));
        };
        if line == 1 && label == "label" && sentence == "text" {
            continue;
        }
        let label = label.trim();
        if label.is_empty() {
            return Err(err(line, "empty label"));
        }
        rows.push(Example {
            line,
            label: label.to_string(),
            text: sentence.to_string(),
        });
    }
    if rows.is_empty() {
        return Err(Error::file(path, "no examples"));
    }
    Ok(rows)
}

/// The sorted distinct labels of rows.
pub fn labels_of(rows: &[Example]) -> Vec<String> {
    let mut labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    labels.sort();
    labels.dedup();
    labels
}

/// Tokenized examples with class indices, in one flat buffer. A label outside `labels` is an
/// error naming the line; `unknown_label` says what the labels are (training data, or a head).
pub fn examples(
    path: &Path,
    rows: &[Example],
    labels: &[String],
    seg: &Segmenter,
    max_len: usize,
    unknown_label: &str,
) -> Result<Dataset> {
    let mut data = Dataset::new();
    for r in rows {
        let label = labels
            .iter()
            .position(|l| *l == r.label)
            .ok_or_else(|| Error::Line {
                path: path.display().to_string(),
                line: r.line,
                msg: format!("label `{}` {unknown_label} {labels:?}", r.label),
            })?;
        data.push(label, &seg.segment(&r.text, max_len));
    }
    data.shrink_to_fit();
    Ok(data)
}

/// Most classes accepted without `--max-classes`.
pub const MAX_CLASSES: usize = 10_000;

/// Labels that are text: more classes than half the lines, or more than [`MAX_CLASSES`], almost
/// always means the columns are swapped (`text<TAB>label`), and would build a head with a row per
/// sentence. `--max-classes N` (`max`) allows up to N classes instead.
pub fn check_classes(path: &Path, classes: usize, lines: usize, max: Option<usize>) -> Result<()> {
    let too_many = match max {
        Some(n) => classes > n,
        None => classes > MAX_CLASSES || classes * 2 > lines,
    };
    if !too_many {
        return Ok(());
    }
    let limit = match max {
        Some(n) => format!("more than --max-classes {n}"),
        None if classes > MAX_CLASSES => format!("more than {MAX_CLASSES}"),
        None => "more than half the lines".to_string(),
    };
    Err(Error::file(
        path,
        format!(
            "{classes} distinct labels in {lines} lines ({limit}): are the columns swapped? Each line must be `label<TAB>text`; pass --max-classes N to allow more classes"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tsv");
        std::fs::write(&p, "label\ttext\npos\tgood\nneg bad\n").unwrap();
        let e = read_tsv(&p).unwrap_err().to_string();
        assert!(
            e.ends_with("t.tsv line 3: expected `label<TAB>text`, found no tab"),
            "{e}"
        );
        std::fs::write(&p, "label\ttext\npos\tgood\n\tbad\n").unwrap();
        assert!(read_tsv(&p)
            .unwrap_err()
            .to_string()
            .ends_with("line 3: empty label"));
        std::fs::write(&p, "label\ttext\npos\tgood\r\nneg\tbad\n").unwrap();
        let rows = read_tsv(&p).unwrap();
        let got: Vec<(usize, &str, &str)> = rows
            .iter()
            .map(|r| (r.line, r.label.as_str(), r.text.as_str()))
            .collect();
        assert_eq!(got, vec![(2, "pos", "good"), (3, "neg", "bad")]);
        let long = format!("pos\t{}\n", "x".repeat(MAX_LINE_BYTES + 10));
        std::fs::write(&p, long).unwrap();
        assert!(read_tsv(&p)
            .unwrap_err()
            .to_string()
            .contains("line 1: line is longer"));
    }

    #[test]
    fn a_stream_without_end_stops_at_the_row_limit() {
        // A FIFO fed `yes 'pos<TAB>good'` for ever.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("endless.tsv");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let writer_path = fifo.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(writer_path) {
                while f.write_all(b"pos\tgood\n").is_ok() {}
            }
        });
        let e = read_tsv_limited(&fifo, 1000).unwrap_err().to_string();
        assert!(
            e.ends_with("endless.tsv line 1001: more than 1000 lines, the limit for a TSV file"),
            "{e}"
        );
        assert_eq!(MAX_ROWS, 16_777_216);
    }
}

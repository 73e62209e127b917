//! Bounded reads: every file the tool reads whole (configs, tokenizer.json, vocab.txt, word lists)
//! goes through here, so that no file, however large or endless (`/dev/zero`, a FIFO fed by
//! `yes`), can make us allocate more than a documented cap. Streams read line by line (the
//! target vocabulary, TSV data, vector files) have their own line and row limits beside them.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// Largest small JSON file read (config.json, tokenizer_config.json, generation_config.json, a
/// sharded checkpoint's index, special_tokens_map.json): real ones are kilobytes.
pub const MAX_JSON_BYTES: u64 = 64 << 20;

/// Largest vocabulary file read whole (tokenizer.json, vocab.txt, the word list of an `.npy`):
/// real ones are at most tens of megabytes (a tokenizer `--extend`ed by a million words is a few
/// hundred).
pub const MAX_VOCAB_BYTES: u64 = 1 << 30;

/// Most rows a vocabulary may have (target lines, source vocab.txt lines): 2^24 = 16,777,216.
/// An endless stream (`yes | embed-transplant -v -`) stops here with an error.
pub const MAX_VOCAB_ROWS: usize = 1 << 24;

/// Human size of a cap (`64 MiB`, `1 GiB`).
pub fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// Reads a whole text file of at most `cap` bytes. `what` names the kind of file in the error
/// ("a config file"). Text files never hold a NUL byte, so one is an error at once (`/dev/zero`
/// fails after the first block rather than after `cap` bytes).
pub fn read_text_bytes(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::file(path, format!("is a directory, not {what}")));
    }
    let too_big = || {
        Error::file(
            path,
            format!(
                "larger than {}, the limit for {what}: is this the right file?",
                human(cap)
            ),
        )
    };
    if meta.is_file() && meta.len() > cap {
        return Err(too_big());
    }
    let mut buf: Vec<u8> = Vec::with_capacity(if meta.is_file() {
        meta.len() as usize
    } else {
        1 << 16
    });
    let mut r = f.take(cap + 1);
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        if let Some(p) = memchr::memchr(0, &chunk[..n]) {
            let line = buf
                .iter()
                .chain(&chunk[..p])
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            return Err(Error::Line {
                path: path.display().to_string(),
                line,
                msg: format!("contains a NUL byte: not {what}"),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() as u64 > cap {
            return Err(too_big());
        }
    }
    Ok(buf)
}

/// [`read_text_bytes`] as UTF-8; invalid UTF-8 is an error naming its line.
pub fn read_text(path: &Path, cap: u64, what: &str) -> Result<String> {
    let bytes = read_text_bytes(path, cap, what)?;
    String::from_utf8(bytes).map_err(|e| {
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
    })
}

/// A small JSON file ([`MAX_JSON_BYTES`]) whose top level must be an object (config.json and
/// its kin): anything else is a one-line error naming the file.
pub fn read_json_object(path: &Path) -> Result<serde_json::Value> {
    let text = read_text(path, MAX_JSON_BYTES, "a JSON config file")?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(path, format!("not valid JSON: {e}")))?;
    if !v.is_object() {
        let kind = match v {
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(Error::file(
            path,
            format!("not a JSON object (the file holds {kind})"),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_nul_bytes_and_non_objects_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(&p, b"{\"a\": 1}").unwrap();
        assert_eq!(read_json_object(&p).unwrap()["a"], 1);
        std::fs::write(&p, b"[1, 2]").unwrap();
        let e = read_json_object(&p).unwrap_err().to_string();
        assert!(
            e.ends_with("c.json: not a JSON object (the file holds an array)"),
            "{e}"
        );
        std::fs::write(&p, b"{}\n{\0}").unwrap();
        let e = read_text(&p, 100, "a config").unwrap_err().to_string();
        assert!(
            e.ends_with("c.json line 2: contains a NUL byte: not a config"),
            "{e}"
        );
        std::fs::write(&p, vec![b' '; 101]).unwrap();
        let e = read_text(&p, 100, "a config").unwrap_err().to_string();
        assert!(
            e.contains("larger than 0 MiB, the limit for a config"),
            "{e}"
        );
        let e = read_text(Path::new("/dev/zero"), 1 << 20, "x").unwrap_err();
        assert!(e.to_string().contains("line 1: contains a NUL byte"), "{e}");
    }
}

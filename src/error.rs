//! The library's error type: every message says what was being done and to which file, line or tensor.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while transplanting. Each variant renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error on a named file.
    #[error("{}: {err}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    /// A problem on one line of a text file (vocabularies, data sets).
    #[error("{path} line {line}: {msg}")]
    Line {
        path: String,
        line: usize,
        msg: String,
    },
    /// A problem with a whole file (checkpoint, config, vocabulary).
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    /// A problem with one tensor of a checkpoint.
    #[error("tensor `{tensor}` in {}: {msg}", path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },
    /// The hub could not give us a file.
    #[error("{0}")]
    Hub(String),
    /// Input that cannot be used (a model that is neither a path nor a hub id, ...).
    #[error("{0}")]
    Invalid(String),
    /// Flags that do not fit together, found after argument parsing (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The source gives too little to learn or measure from: too few multi-piece tokens to fit
    /// compose-fit's map on, none to score, or a tokenizer that cannot be rebuilt without its
    /// held-out tokens. Callers that can do without (auto, the report's score, score's
    /// compose-fit row) say why and go on; `--init compose-fit` fails with it.
    #[error("{0}")]
    NoEvidence(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl AsRef<Path>, err: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            err,
        }
    }

    pub fn file(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    pub fn tensor(path: impl AsRef<Path>, tensor: &str, msg: impl Into<String>) -> Self {
        Error::Tensor {
            path: path.as_ref().to_path_buf(),
            tensor: tensor.to_string(),
            msg: msg.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_say_the_file_in_one_line_and_keep_their_cause() {
        let e = Error::io("vocab.txt", std::io::Error::other("gone"));
        assert_eq!(e.to_string(), "vocab.txt: gone");
        let cause = std::error::Error::source(&e).map(|c| c.to_string());
        assert_eq!(cause.as_deref(), Some("gone"));
    }
}

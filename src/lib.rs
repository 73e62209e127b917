//! embed-transplant: move a pretrained checkpoint's word embeddings onto a new vocabulary.
//!
//! The data flows one way: [`config`] turns parsed flags ([`cli`]) into one validated config per
//! command; [`load`] resolves the model's files on the hub, reads the one embedding tensor, both
//! vocabularies and static vectors; [`matching`] decides where each target row comes from; [`init`]
//! makes the rows the source lacks (pure, on [`linalg`]); [`write`] stages the output files, which
//! are committed together, and [`emit`] the whole-model directory; [`train`] is `finetune`'s model
//! and loop. [`commands`] strings them together per subcommand; `write::cancel` ends the process on
//! a signal after removing temp files; [`report`] holds what a run did as plain data and its human
//! text, and [`console`] is the only module that prints (clippy's `print_stdout`/`print_stderr` are
//! denied everywhere else).

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub(crate) mod bounded;
pub mod cli;
pub(crate) mod commands;
pub(crate) mod config;
pub(crate) mod console;
pub(crate) mod dtype;
pub(crate) mod emit;
pub(crate) mod error;
pub(crate) mod init;
pub(crate) mod linalg;
pub(crate) mod load;
pub(crate) mod matching;
pub(crate) mod panics;
pub(crate) mod report;
pub(crate) mod train;
pub(crate) mod write;

pub use error::{Error, Result};

/// Runs one parsed command line (see `main.rs` for the exit codes).
pub fn run(cli: cli::Cli) -> anyhow::Result<()> {
    commands::dispatch(cli)
}

/// Installs the handler that removes temp files on SIGINT, SIGTERM, SIGHUP and SIGPIPE.
pub fn install_signal_handler() -> std::io::Result<()> {
    write::cancel::install(console::interrupted)
}

/// Prints `error: ...` on stderr, control characters escaped.
pub fn print_error(msg: &str) {
    console::error(&msg)
}

/// What the property tests and fuzz targets drive: not a stable API.
#[doc(hidden)]
pub mod api {
    pub use crate::dtype::DType;
    pub use crate::linalg::Matrix;
    pub use crate::report::rows::{notes, parse_ranges, source_names};
    pub mod build {
        pub use crate::init::build::{build_blocks, BuildOptions, BuildStats, Fill, RowSource};
    }
    pub mod checkpoint {
        pub use crate::load::checkpoint::pickle::PthFile;
        pub use crate::load::checkpoint::{
            choose_embedding, list_tensors, load_embedding, FetchFile, Weights,
        };
    }
    pub mod vocab {
        pub use crate::load::vocab::{
            load_source, parse_target, SourceVocab, TargetVocab, MAX_TOKEN_BYTES,
        };
    }
    pub mod matching {
        pub use crate::matching::{plan, Origin, SourceTokenizer};
    }
}

//! embed-transplant: move a pretrained checkpoint's word embeddings onto a new vocabulary.
//!
//! The data flows one way: [`config`] turns parsed flags ([`cli`]) into one validated config per
//! command; [`hub`] resolves the model's files, [`checkpoint`] reads the one embedding tensor,
//! [`vocab`] reads both vocabularies, [`matching`] decides where each target row comes from,
//! [`align`] builds the matrix (pure), and [`writer`] stages the output files, which are committed
//! together. [`commands`] strings them together per subcommand; [`cancel`] ends the process on a
//! signal after removing temp files; [`output`] is the only module that prints (clippy's
//! `print_stdout`/`print_stderr` are denied everywhere else).

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod align;
pub mod bounded;
pub mod cancel;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod compose_fit;
pub mod config;
pub mod donor;
pub mod dtype;
pub mod error;
pub mod guide;
pub mod hub;
pub mod init;
pub mod labelled;
pub mod matching;
pub mod model_config;
pub mod model_out;
pub mod output;
pub mod panics;
pub mod plot;
pub mod quality;
pub mod report;
pub mod train;
pub mod vectors;
pub mod vocab;
pub mod writer;

pub use error::{Error, Result};

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

pub mod bounded;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod dtype;
pub mod emit;
pub mod error;
pub mod init;
pub mod linalg;
pub mod load;
pub mod matching;
pub mod panics;
pub mod report;
pub mod train;
pub mod write;

pub use error::{Error, Result};

//! embed-transplant: move a pretrained checkpoint's word embeddings onto a new vocabulary.
//!
//! The data flows one way: [`hub`] resolves the model's files, [`checkpoint`] reads the one
//! embedding tensor, [`vocab`] reads both vocabularies, [`matching`] decides where each target row
//! comes from, [`align`] builds the matrix (pure), and [`writer`] writes the .safetensors file.
//! [`commands`] strings them together per subcommand; [`output`] is the only module that prints.

pub mod align;
pub mod cancel;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dtype;
pub mod error;
pub mod hub;
pub mod labelled;
pub mod matching;
pub mod model_config;
pub mod output;
pub mod report;
pub mod train;
pub mod vocab;
pub mod writer;

pub use error::{Error, Result};

//! One module per subcommand; each takes its validated config and returns what happened.

pub mod evaluate;
pub mod finetune;
pub mod inspect;
pub mod transplant;

use crate::error::{Error, Result};
use crate::hub::ModelFiles;
use crate::matching::SourceTokenizer;
use crate::model_config::ModelConfig;
use crate::vocab::{self, SourceKind, SourceVocab};
use std::path::Path;

/// The source side of a model besides its weights: vocabulary, config and tokenizer.
pub struct SourceSide {
    pub vocab: SourceVocab,
    pub config: ModelConfig,
    pub tokenizer: SourceTokenizer,
}

/// Loads the source vocabulary (`--source-vocab`, else tokenizer.json, else vocab.txt), the
/// config files and the tokenizer.
pub fn source_side(
    files: &ModelFiles,
    source_vocab: Option<&Path>,
    model: &str,
) -> Result<SourceSide> {
    let path = source_vocab
        .map(Path::to_path_buf)
        .or_else(|| files.tokenizer_json.clone())
        .or_else(|| files.vocab_txt.clone())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{model}: no source vocabulary (tokenizer.json or vocab.txt) beside the weights; pass --source-vocab"
            ))
        })?;
    let vocab = vocab::load_source(&path)?;
    let config = ModelConfig::load(files.config.as_deref(), files.tokenizer_config.as_deref())?;
    let tokenizer = match vocab.kind {
        SourceKind::TokenizerJson => SourceTokenizer::from_file(&vocab.path, &vocab)?,
        // transformers' BertTokenizer lower-cases unless told otherwise.
        SourceKind::VocabTxt => {
            SourceTokenizer::from_wordpiece_vocab(&vocab, config.do_lower_case.unwrap_or(true))?
        }
    };
    Ok(SourceSide {
        vocab,
        config,
        tokenizer,
    })
}

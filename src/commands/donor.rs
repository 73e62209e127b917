//! `--donor MODEL`, for the transplant and `score`: the donor is resolved like `--model` (hub id,
//! directory or weights file) and only its tokenizer and embedding tensor are read.

use crate::console::Console;
use crate::error::{Error, Result};
use crate::init::donor::Donor;
use crate::linalg::Matrix;
use crate::load::checkpoint::{self, Embedding};
use crate::load::hub::{self, HubSettings, ModelFiles};
use std::path::Path;

/// A donor's files, tokenizer and embedding.
pub struct Loaded {
    pub name: String,
    pub side: super::SourceSide,
    pub emb: Embedding,
}

/// The donor's files (for the output checks, before anything is read).
pub fn resolve(donor: &str, hub_settings: &HubSettings) -> Result<ModelFiles> {
    if !Path::new(donor).exists() && !hub::is_hub_id(donor) {
        return Err(Error::Invalid(format!(
            "--donor {donor}: no such file or directory, and not a hub id (org/name)"
        )));
    }
    // --revision names the source model's revision: the donor follows its main branch.
    let mut settings = hub_settings.clone();
    settings.revision = "main".into();
    let files = hub::resolve(donor, &settings)?;
    if files.tokenizer_json.is_none() && files.vocab_txt.is_none() {
        return Err(Error::Invalid(format!(
            "--donor {donor}: no tokenizer.json or vocab.txt beside its weights (a donor's tokens are matched by their text)"
        )));
    }
    Ok(files)
}

/// Reads the donor's tokenizer and embedding tensor (chosen as for a source model).
pub fn load(donor: &str, files: &ModelFiles, out: &Console) -> Result<Loaded> {
    let side = super::source_side(files, None, &format!("--donor {donor}"), out)?;
    let tensors = checkpoint::list_tensors(&files.weights, files.fetcher.as_ref())?;
    let choice = checkpoint::choose_embedding(&files.weights, &tensors, None)?;
    let emb = checkpoint::load_embedding(&files.weights, &choice.name, files.fetcher.as_ref())?;
    super::check_rows(&emb.file, &emb.name, emb.rows, &side.vocab)?;
    let m = matrix(&emb);
    if let Some(&first) = m.nonfinite_rows().first() {
        return Err(Error::tensor(
            &emb.file,
            &emb.name,
            format!("the donor's row {first} holds NaN or infinity"),
        ));
    }
    Ok(Loaded {
        name: donor.to_string(),
        side,
        emb,
    })
}

fn matrix(emb: &Embedding) -> Matrix<'_> {
    Matrix {
        dtype: emb.dtype,
        rows: emb.rows,
        cols: emb.cols,
        data: emb.bytes(),
    }
}

impl Loaded {
    /// The donor's rows by text.
    pub fn donor(&self) -> Donor<'_> {
        let t = &self.side.tokenizer;
        Donor::new(
            &self.side.vocab,
            t.style,
            (t.lowercase, t.strip_accents),
            matrix(&self.emb),
        )
    }
}

/// No shared token: nothing to anchor a guided row on.
pub fn no_shared(donor: &str, model: &str) -> Error {
    Error::Invalid(format!(
        "--donor {donor} shares no token with {model} (matched by text, as the donor normalises): there is nothing to anchor a guided row on"
    ))
}

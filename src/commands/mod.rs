//! One module per subcommand; each takes its validated config and returns what happened, with
//! the files it wrote staged (see [`Staged`]): the caller prints, then commits them.

pub mod donor;
pub mod evaluate;
pub mod finetune;
pub mod inspect;
pub mod score;
pub mod stage;
pub mod transplant;
pub mod vectors_source;

use crate::cli::{Cli, Command};
use crate::config;
use crate::console::{self, Console};
use crate::error::{Error, Result};
use crate::load::hub::ModelFiles;
use crate::load::model_config::ModelConfig;
use crate::load::vocab::{self, SourceKind, SourceVocab, TargetVocab};
use crate::matching::SourceTokenizer;
use crate::write::Batch;
use clap::CommandFactory;
use std::io::IsTerminal;
use std::path::Path;

/// A command's result and its files, written to temp files but not yet in place: the caller
/// prints the report (a failed `--json` write then leaves no file), then commits the batch.
pub struct Staged<R> {
    pub report: R,
    pub batch: Batch,
}

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
    out: &Console,
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
    let (vocab, parsed) = vocab::load_source_and_tokenizer(&path)?;
    if vocab.repeated > 0 {
        out.warn(&format!(
            "{}: {} token(s) occur on more than one line (e.g. {:?}); the last line's id is used, as transformers does",
            vocab.path.display(),
            vocab.repeated,
            vocab.repeated_examples
        ));
    }
    let config = ModelConfig::load(files.config.as_deref(), files.tokenizer_config.as_deref())?;
    let tokenizer = match (vocab.kind, parsed) {
        (SourceKind::TokenizerJson, Some(tok)) => {
            SourceTokenizer::from_tokenizer(tok, &vocab.path, &vocab)?
        }
        (SourceKind::TokenizerJson, None) => SourceTokenizer::from_file(&vocab.path, &vocab)?,
        // transformers' BertTokenizer lower-cases unless told otherwise.
        (SourceKind::VocabTxt, _) => {
            SourceTokenizer::from_wordpiece_vocab(&vocab, config.do_lower_case.unwrap_or(true))?
        }
    };
    Ok(SourceSide {
        vocab,
        config,
        tokenizer,
    })
}

/// Warnings about a target vocabulary that are almost always a broken file.
pub fn warn_target(out: &Console, target: &TargetVocab) {
    if target.duplicates > 0 {
        out.warn(&format!(
            "{}: {} duplicate token line(s) (e.g. {:?}); each line still gets its own row",
            target.origin, target.duplicates, target.duplicate_examples
        ));
    }
    for (what, lines) in [
        ("only whitespace", &target.blank_lines),
        ("an inner carriage return or tab", &target.control_lines),
    ] {
        if !lines.is_empty() {
            let shown: Vec<String> = lines.iter().take(10).map(usize::to_string).collect();
            out.warn(&format!(
                "{}: {} line(s) hold {what} (line {}{}): is the file broken?",
                target.origin,
                lines.len(),
                shown.join(", "),
                if lines.len() > 10 { ", ..." } else { "" }
            ));
        }
    }
}

/// The embedding must have a row for every token of the source vocabulary.
pub fn check_rows(file: &Path, tensor: &str, rows: usize, source: &SourceVocab) -> Result<()> {
    if rows < source.size {
        return Err(Error::tensor(
            file,
            tensor,
            format!(
                "has {rows} rows, fewer than the {} tokens of the source vocabulary {}",
                source.size,
                source.path.display()
            ),
        ));
    }
    Ok(())
}

/// What `finetune` and `evaluate` read first: the target vocabulary, the embedding built for it
/// (tensor `weight`, one row per line), and the embedding file's metadata.
pub struct LabelledInput {
    pub target: TargetVocab,
    pub emb: crate::load::checkpoint::Embedding,
    pub meta: std::collections::BTreeMap<String, String>,
}

/// Reads the vocabulary and the embedding, and checks that they belong together (row count, and
/// the `target_vocab_sha256` the transplant recorded) and that the rows are finite.
pub fn labelled_input(
    embeddings: &Path,
    vocab_path: &Path,
    ignore_vocab_mismatch: bool,
    allow_nonfinite: bool,
    out: &Console,
) -> Result<LabelledInput> {
    let target = vocab::read_target(vocab_path)?;
    let file = crate::load::checkpoint::SafetensorsFile::open(embeddings)?;
    let meta = file.metadata();
    let emb = file.matrix("weight")?;
    if emb.rows != target.tokens.len() {
        return Err(Error::tensor(
            embeddings,
            "weight",
            format!(
                "has {} rows but {} has {} lines: not the vocabulary it was built for",
                emb.rows,
                target.origin,
                target.tokens.len()
            ),
        ));
    }
    if let Some(recorded) = meta.get("target_vocab_sha256") {
        if *recorded != target.sha256 && !ignore_vocab_mismatch {
            return Err(Error::file(
                embeddings,
                format!(
                    "was built for another vocabulary than {} (metadata `target_vocab_sha256` differs from the file's sha256 {}): rows would not line up; pass --ignore-vocab-mismatch to use it anyway",
                    target.origin, target.sha256
                ),
            ));
        }
    }
    check_finite(&emb, allow_nonfinite, out)?;
    Ok(LabelledInput { target, emb, meta })
}

/// NaN or infinity in a tensor read for training or evaluation: an error, or a warning with
/// `--allow-nonfinite`.
pub fn check_finite(
    t: &crate::load::checkpoint::Embedding,
    allow_nonfinite: bool,
    out: &Console,
) -> Result<()> {
    let m = crate::linalg::Matrix {
        dtype: t.dtype,
        rows: t.rows,
        cols: t.cols,
        data: t.bytes(),
    };
    let bad = m.nonfinite_rows();
    if let Some(first) = bad.first() {
        let msg = format!(
            "{} row(s) hold NaN or infinity (first: row {first})",
            bad.len()
        );
        if !allow_nonfinite {
            return Err(Error::tensor(
                &t.file,
                &t.name,
                format!("{msg}; pass --allow-nonfinite to use it anyway"),
            ));
        }
        out.warn(&format!(
            "tensor `{}` in {}: {msg}",
            t.name,
            t.file.display()
        ));
    }
    Ok(())
}

/// Runs one parsed command line: config, command, print, commit.
pub(crate) fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let tty = std::io::stderr().is_terminal();
    let args = match cli.command {
        Some(Command::Transplant(a)) => a,
        None => cli.transplant,
        Some(Command::Inspect(a)) => {
            let cfg = config::inspect(a, tty)?;
            let inspection = inspect::run(&cfg, &Console { quiet: false })?;
            if cfg.json {
                console::print_json(&inspection)?;
            } else {
                console::print_human_text(&crate::report::render::inspect(&inspection))?;
            }
            return Ok(());
        }
        Some(Command::Finetune(a)) => {
            let cfg = config::finetune(a, tty)?;
            let out = Console { quiet: cfg.quiet };
            let done = finetune::run(&cfg, &out)?;
            // stdout first: if it fails, the batch is dropped and no file appears.
            if cfg.json {
                console::print_json(&done.report)?;
            }
            done.batch.commit()?;
            out.finetune_summary(&done.report);
            return Ok(());
        }
        Some(Command::Evaluate(a)) => {
            let cfg = config::evaluate(a)?;
            let e = evaluate::run(&cfg, &Console { quiet: false })?;
            if cfg.json {
                console::print_json(&e)?;
            } else {
                console::print_human_text(&crate::report::render::evaluate(&e))?;
            }
            return Ok(());
        }
        Some(Command::Score(a)) => {
            let cfg = config::score(a, tty)?;
            let out = Console { quiet: cfg.quiet };
            let done = score::run(&cfg, &out)?;
            // stdout first: if it fails, the batch is dropped and no file appears.
            if cfg.json {
                console::print_json(&done.report)?;
            }
            done.batch.commit()?;
            if !cfg.json {
                out.score_table(&done.report);
            }
            return Ok(());
        }
        Some(Command::Completions { shell }) => {
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "embed-transplant", &mut buf);
            console::print_text(&String::from_utf8_lossy(&buf))?;
            return Ok(());
        }
        Some(Command::Man) => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
            console::print_text(&String::from_utf8_lossy(&buf))?;
            return Ok(());
        }
    };
    let cfg = config::transplant(args, tty)?;
    let out = Console { quiet: cfg.quiet };
    let done = match cfg.vectors {
        Some(_) => vectors_source::run(&cfg, &out)?,
        None => transplant::run(&cfg, &out)?,
    };
    if cfg.json {
        console::print_json(&done.report)?;
    }
    done.batch.commit()?;
    out.summary(&done.report);
    Ok(())
}

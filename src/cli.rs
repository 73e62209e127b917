//! The command line (clap derive): doc comments are the help text.
//!
//! (Over 400 lines because every flag's help text sits on its field, as clap derive wants; there
//! is no logic here.)

use crate::load::hub::Secret;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  embed-transplant --model bert-base-chinese --vocab vocab.txt -o embeddings.safetensors
  embed-transplant --model ./my-model-dir --vocab - --json < words.txt > summary.json
  HF_HUB_OFFLINE=1 embed-transplant -m hfl/chinese-roberta-wwm-ext -v vocab.txt --init mean

Exit codes: 0 success, 1 bad input or failure (no new file is left), 2 usage error,
129/130/143 ended by SIGHUP/SIGINT/SIGTERM (no new file is left).";

/// Move a pretrained checkpoint's word embeddings onto a new vocabulary.
///
/// Rows whose token the source model knows are copied exactly; the others are initialised (by
/// default composed from the source tokenizer's pieces, with a fitted map where the source's own
/// held-out tokens show it helps; see --init, --aux-vectors and --donor for the others). The
/// result is a .safetensors file with one tensor `weight` that PyTorch loads directly.
#[derive(Debug, Parser)]
#[command(
    name = "embed-transplant",
    version,
    after_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub transplant: TransplantArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build the new embedding matrix (the default when no subcommand is given).
    Transplant(TransplantArgs),
    /// List a checkpoint's tensors, the embedding it would use, its vocabulary and config; with
    /// --vocab, a dry run of the alignment. Reads headers only and writes nothing.
    Inspect(InspectArgs),
    /// Fine-tune a transplanted embedding on a labelled text-classification set (mean-pooled
    /// embeddings, a linear layer, softmax cross-entropy; deferred Adam by default, or dense Adam,
    /// lazy Adam or SGD).
    Finetune(FinetuneArgs),
    /// Accuracy and per-class precision/recall of a fine-tuned embedding and head on a data set.
    Evaluate(EvaluateArgs),
    /// How well each init method rebuilds rows the model knows: source tokens are held out (the
    /// tokenizer rebuilt without them), re-initialised from their pieces, and compared with their
    /// true rows. Writes nothing unless --save-rows names a file.
    Score(ScoreArgs),
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// Source model: a hub id, a model directory, or a weights file.
    #[arg(short, long)]
    pub model: String,

    /// Target vocabulary for a dry run of the alignment (`-` for stdin).
    #[arg(short, long, value_name = "PATH")]
    pub vocab: Option<PathBuf>,

    /// Name of the embedding tensor, when the automatic choice is wrong or ambiguous.
    #[arg(long, value_name = "NAME")]
    pub tensor: Option<String>,

    /// Source vocabulary (tokenizer.json or vocab.txt) instead of the model's own.
    #[arg(long, value_name = "PATH")]
    pub source_vocab: Option<PathBuf>,

    #[command(flatten)]
    pub hub: HubArgs,

    /// Print the listing as JSON on standard output instead of as text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ScoreArgs {
    /// Source model: a hub id, a model directory, or a weights file.
    #[arg(short, long)]
    pub model: String,

    /// Target vocabulary: held-out tokens that also occur in it are preferred (`-` for stdin).
    #[arg(short, long, value_name = "PATH")]
    pub vocab: Option<PathBuf>,

    /// Held-out tokens to score.
    #[arg(long, default_value_t = 2000)]
    pub sample: usize,

    /// Seed of the sample, the fit's validation split and the random rows.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Static word vectors (word2vec/GloVe/fastText text, word2vec .bin, or .npy with a word
    /// list): also score the `guide` method (nearest anchors in the static space).
    #[arg(long, value_name = "FILE")]
    pub aux_vectors: Option<PathBuf>,

    /// A donor model (hub id, directory or weights file, with its tokenizer): score held-out
    /// tokens the donor knows, with both guide rules (`guide`: softmax, `guide-omp`) besides every
    /// other method.
    #[arg(long, value_name = "MODEL", conflicts_with = "aux_vectors")]
    pub donor: Option<String>,

    /// OMP's anchors per token for the `guide-omp` method (capped at the auxiliary dimension).
    #[arg(long, value_name = "N", default_value_t = crate::init::guide::DEFAULT_K)]
    pub guide_k: usize,

    /// Name of the embedding tensor, when the automatic choice is wrong or ambiguous.
    #[arg(long, value_name = "NAME")]
    pub tensor: Option<String>,

    /// Source vocabulary (tokenizer.json or vocab.txt) instead of the model's own.
    #[arg(long, value_name = "PATH")]
    pub source_vocab: Option<PathBuf>,

    #[command(flatten)]
    pub hub: HubArgs,

    /// Write each method's rebuilt rows, the true rows and the held-out tokens to this
    /// .safetensors file (one [tokens, dim] f32 tensor per method, `truth`; the tokens in its
    /// metadata), to study them further.
    #[arg(long, value_name = "PATH")]
    pub save_rows: Option<PathBuf>,

    /// Replace an existing --save-rows file.
    #[arg(long)]
    pub force: bool,

    /// Print nothing on standard error but warnings and errors (no table: use --json).
    #[arg(short, long)]
    pub quiet: bool,

    /// Print the report as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

/// Output element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DTypeArg {
    /// The source tensor's own type (rows are copied bit for bit).
    Source,
    /// 32-bit float.
    F32,
    /// 16-bit float (IEEE half).
    F16,
    /// bfloat16.
    Bf16,
}

/// A guide's rule (`--guide`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GuideArg {
    /// The softmax-weighted mean of the 10 nearest anchors (temperature 0.1).
    Softmax,
    /// Orthogonal matching pursuit with --guide-k anchors.
    Omp,
}

/// How rows that the source vocabulary lacks are initialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitArg {
    /// compose, with compose-fit's map only on the kinds of token (script, piece count) where
    /// the source's own held-out tokens of that kind say it beats the plain mean; the summary
    /// says which was used and why.
    Auto,
    /// The mean of the token's pieces under the source tokenizer (e.g. a Chinese word from its
    /// characters); tokens with no known piece fall back to random.
    Compose,
    /// compose, then an affine map fitted by ridge regression on the source's own multi-piece
    /// tokens (mean of pieces -> true row; lambda by a held-out split).
    ComposeFit,
    /// compose with each piece weighted by its length (bytes of its text, without the `##`,
    /// `▁` or `Ġ` marker): a held-out score win over the plain mean on all-MiniLM-L6-v2.
    ComposeLength,
    /// N(0, sigma): sigma is config.json's initializer_range, else the source matrix's std.
    Random,
    /// All zeros.
    Zeros,
    /// The mean of the source vocabulary's rows.
    Mean,
}

#[derive(Debug, Clone, Args)]
pub struct TransplantArgs {
    /// Source model: a hub id (bert-base-chinese, org/name), a model directory, or a weights file.
    #[arg(short, long, required = true, value_name = "MODEL")]
    pub model: Option<String>,

    /// Target vocabulary: one token per line, UTF-8; `-` reads standard input. Row i is line i.
    #[arg(short, long, required = true, value_name = "PATH")]
    pub vocab: Option<PathBuf>,

    /// Output .safetensors file (default embeddings.safetensors; with --emit-model, the matrix is
    /// written only when -o is given).
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Also write a whole model directory for the new vocabulary (weights, config.json, tokenizer,
    /// transplant.json) that transformers loads with from_pretrained.
    #[arg(long, value_name = "DIR")]
    pub emit_model: Option<PathBuf>,

    /// With --emit-model: keep every source token's id and rows, and append the target tokens the
    /// source does not know (added to the tokenizer as non-special added tokens).
    #[arg(long, requires = "emit_model")]
    pub extend: bool,

    /// With --emit-model: append rows (initialised like the fill, never used by the tokenizer)
    /// until the row count is a multiple of N (1 to 65536).
    #[arg(long, value_name = "N", requires = "emit_model")]
    pub pad_to_multiple_of: Option<usize>,

    /// With --emit-model: append special tokens the target vocabulary lacks, with their source
    /// rows, instead of failing.
    #[arg(long, requires = "emit_model")]
    pub keep_special: bool,

    /// With --emit-model: the largest weights file (e.g. 5GB, 500MB, 2000000); bigger models, and
    /// sharded sources, are written as shards plus model.safetensors.index.json.
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "5GB",
        requires = "emit_model"
    )]
    pub max_shard_size: String,

    /// Name of the embedding tensor, when the automatic choice is wrong or ambiguous.
    #[arg(long, value_name = "NAME")]
    pub tensor: Option<String>,

    /// Source vocabulary (tokenizer.json or vocab.txt) instead of the model's own.
    #[arg(long, value_name = "PATH")]
    pub source_vocab: Option<PathBuf>,

    /// Initialisation of rows the source vocabulary lacks (after exact and normalised matching).
    /// auto and the compose methods fall back to random for tokens with no known piece.
    #[arg(long, value_enum, default_value_t = InitArg::Auto)]
    pub init: InitArg,

    /// Static word vectors (word2vec/GloVe/fastText text, word2vec .bin, or .npy with a word
    /// list) as a guide: a token the source lacks but the file knows gets the similarity-weighted
    /// mean of the source rows of its nearest anchors (tokens in both); others as --init says.
    #[arg(long, value_name = "FILE")]
    pub aux_vectors: Option<PathBuf>,

    /// A donor model as the guide (hub id, directory or weights file, resolved like --model; only
    /// its tokenizer and embedding are read): a token the source lacks but the donor knows (by
    /// the text it stands for) is built from the source rows of anchors, the tokens both share,
    /// chosen in the donor's embedding space. Dimensions may differ.
    #[arg(long, value_name = "MODEL", conflicts_with = "aux_vectors")]
    pub donor: Option<String>,

    /// How --donor or --aux-vectors builds a row from its anchors: omp (orthogonal matching
    /// pursuit: the --guide-k anchors whose auxiliary rows best reconstruct the token's, their
    /// coefficients applied to source rows; the default with --donor) or softmax (the
    /// similarity-weighted mean of the 10 nearest; the default with --aux-vectors).
    #[arg(long, value_enum, value_name = "RULE")]
    pub guide: Option<GuideArg>,

    /// OMP's anchors per token (default 32; capped at the auxiliary dimension).
    #[arg(long, value_name = "N")]
    pub guide_k: Option<usize>,

    /// Scale every initialised row to the median L2 norm of the copied rows.
    #[arg(long)]
    pub calibrate_norm: bool,

    /// Seed for random initialisation; recorded in the output.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Element type of the output.
    #[arg(long, value_enum, default_value_t = DTypeArg::Source)]
    pub dtype: DTypeArg,

    #[command(flatten)]
    pub hub: HubArgs,

    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,

    /// Print the summary as JSON on standard output.
    #[arg(long)]
    pub json: bool,

    /// Write the summary and the list of initialised tokens to this JSON file.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Draw the row norms per method and the coverage per method as an SVG picture.
    #[arg(long, value_name = "SVG")]
    pub plot: Option<PathBuf>,

    /// Print nothing on standard error but warnings and errors.
    #[arg(short, long)]
    pub quiet: bool,

    /// Treat NaN or infinite values in the source embedding as an error.
    #[arg(long)]
    pub strict: bool,
}

/// Optimiser for fine-tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    /// Dense Adam (beta 0.9/0.999, eps 1e-8, no weight decay): every embedding row's moments decay
    /// and every row with momentum moves at every step, as torch.optim.Adam.
    Adam,
    /// Adam on the embedding rows a batch touched only (PyTorch's SparseAdam, TensorFlow's
    /// LazyAdam); the classifier gets ordinary Adam.
    LazyAdam,
    /// Dense Adam's updates at lazy Adam's cost: the zero-gradient steps a row missed are applied
    /// in closed form when a batch next reads it, and at the end of each epoch.
    DeferredAdam,
    /// Plain stochastic gradient descent (touched rows only, which is the same update).
    Sgd,
}

#[derive(Debug, Clone, Args)]
pub struct FinetuneArgs {
    /// The transplanted embedding (.safetensors with tensor `weight`).
    #[arg(long, value_name = "PATH")]
    pub embeddings: PathBuf,

    /// The target vocabulary the embedding was built for (row i = line i).
    #[arg(short, long, value_name = "PATH")]
    pub vocab: PathBuf,

    /// Training data: `label<TAB>text` per line; a header line `label<TAB>text` is allowed.
    #[arg(long, value_name = "TSV")]
    pub train: PathBuf,

    /// Validation data; the best epoch by validation accuracy is kept.
    #[arg(long, value_name = "TSV")]
    pub valid: Option<PathBuf>,

    /// Test data, evaluated once with the final model.
    #[arg(long, value_name = "TSV")]
    pub test: Option<PathBuf>,

    /// Output: the fine-tuned embedding.
    #[arg(
        short,
        long,
        value_name = "PATH",
        default_value = "finetuned.safetensors"
    )]
    pub output: PathBuf,

    /// Also write the classifier (`weight` [classes, dim], `bias`, label names in the metadata).
    #[arg(long, value_name = "PATH")]
    pub head: Option<PathBuf>,

    /// Draw training and validation loss and accuracy per epoch as an SVG picture.
    #[arg(long, value_name = "SVG")]
    pub plot: Option<PathBuf>,

    /// Passes over the training data.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,

    /// The classifier's learning rate, and the embedding's unless --embedding-lr is given.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,

    /// The embedding's learning rate (default: --lr); lower keeps more of the pretrained rows.
    #[arg(long)]
    pub embedding_lr: Option<f64>,

    /// Training examples per step (the last batch of an epoch may be smaller).
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,

    /// How the embedding's rows are updated; the classifier gets dense Adam (plain SGD with sgd).
    #[arg(long, value_enum, default_value_t = OptimizerArg::DeferredAdam)]
    pub optimizer: OptimizerArg,

    /// Seed for the classifier's initialisation and the shuffling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Train only the classifier; the embedding stays as it is.
    #[arg(long, conflicts_with = "freeze_copied")]
    pub freeze_embeddings: bool,

    /// Train the classifier alone for the first K epochs, then the embedding as well.
    #[arg(
        long,
        value_name = "K",
        default_value_t = 0,
        conflicts_with = "freeze_embeddings"
    )]
    pub freeze_embeddings_epochs: usize,

    /// Keep the rows copied from the source model fixed; train only the initialised ones
    /// (taken from the embedding file's `copied_rows` metadata).
    #[arg(long)]
    pub freeze_copied: bool,

    /// Allow up to N classes. Without it, more than 10,000 classes, or more classes than half
    /// the training lines, is an error (the columns are almost surely swapped: text<TAB>label).
    #[arg(long, value_name = "N")]
    pub max_classes: Option<usize>,

    /// Tokens per text; longer texts are truncated.
    #[arg(long, default_value_t = 128)]
    pub max_len: usize,

    /// The vocabulary's unknown token; characters with no match become it (or are dropped when
    /// the vocabulary lacks it).
    #[arg(long, default_value = "[UNK]")]
    pub unk_token: String,

    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,

    /// Use the embeddings although their `target_vocab_sha256` metadata names another vocabulary.
    #[arg(long)]
    pub ignore_vocab_mismatch: bool,

    /// Train on embeddings holding NaN or infinity (a warning instead of an error).
    #[arg(long)]
    pub allow_nonfinite: bool,

    /// Print per-epoch and test metrics as JSON on standard output.
    #[arg(long)]
    pub json: bool,

    /// Print nothing on standard error but warnings and errors.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct EvaluateArgs {
    /// The fine-tuned embedding.
    #[arg(long, value_name = "PATH")]
    pub embeddings: PathBuf,

    /// The classifier written by `finetune --head`.
    #[arg(long, value_name = "PATH")]
    pub head: PathBuf,

    /// The target vocabulary.
    #[arg(short, long, value_name = "PATH")]
    pub vocab: PathBuf,

    /// Labelled data: `label<TAB>text` per line.
    #[arg(long, value_name = "TSV")]
    pub data: PathBuf,

    /// Tokens per text; longer texts are truncated (as in finetune).
    #[arg(long, default_value_t = 128)]
    pub max_len: usize,

    /// The vocabulary's unknown token; characters with no match become it (as in finetune).
    #[arg(long, default_value = "[UNK]")]
    pub unk_token: String,

    /// Ignored: evaluation goes example by example. Accepted (hidden) so that scripts written
    /// for earlier versions keep working.
    #[arg(long, default_value_t = 256, hide = true)]
    pub batch_size: usize,

    /// Use the embeddings although their `target_vocab_sha256` metadata names another vocabulary.
    #[arg(long)]
    pub ignore_vocab_mismatch: bool,

    /// Evaluate embeddings or a head holding NaN or infinity (a warning instead of an error).
    #[arg(long)]
    pub allow_nonfinite: bool,

    /// Print the accuracy and per-class metrics as JSON on standard output instead of as text.
    #[arg(long)]
    pub json: bool,
}

/// How to reach the hub and its cache; shared by every command that takes `--model`.
#[derive(Debug, Clone, Args)]
pub struct HubArgs {
    /// Hub revision: branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,

    /// Use only the local hub cache, never the network.
    #[arg(long, env = "HF_HUB_OFFLINE", value_parser = clap::builder::FalseyValueParser::new(), num_args = 0, default_missing_value = "1")]
    pub offline: bool,

    /// Hub address.
    #[arg(long, env = "HF_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,

    /// Hub cache directory (default: $HF_HOME/hub, shared with Python's huggingface_hub).
    #[arg(long, env = "HF_HUB_CACHE", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Hub access token (read from HF_TOKEN; never printed).
    #[arg(long, env = "HF_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<Secret>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every subcommand, flag and argument has help text, and a value list documents all of its
    /// values or none (clap lists them with their help, a bare value among them reads as a gap).
    #[test]
    fn every_command_flag_and_value_has_help() {
        fn walk(cmd: &clap::Command, path: &str, gaps: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    gaps.push(format!("{path} {id}"));
                }
                let values = arg.get_possible_values();
                let documented = values.iter().filter(|v| v.get_help().is_some()).count();
                if documented > 0 && documented < values.len() {
                    for v in values.iter().filter(|v| v.get_help().is_none()) {
                        gaps.push(format!("{path} {id}={}", v.get_name()));
                    }
                }
            }
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    gaps.push(name.clone());
                }
                walk(sub, &name, gaps);
            }
        }
        let mut gaps = Vec::new();
        walk(&Cli::command(), "embed-transplant", &mut gaps);
        assert!(gaps.is_empty(), "no help text: {gaps:#?}");
    }
}

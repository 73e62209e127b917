//! Parsed flags -> one validated config per command, in domain types. Every cross-flag check and
//! environment lookup lives here; nothing below `commands` sees clap.
//!
//! (Over 400 lines because every command's cross-flag checks live here by design, one function
//! per command, so that nothing below sees clap.)

use crate::cli::{
    DTypeArg, EvaluateArgs, FinetuneArgs, GuideArg, HubArgs, InitArg, InspectArgs, OptimizerArg,
    ScoreArgs, TransplantArgs,
};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::init::Method;
use crate::load::hub::{HubSettings, Secret};
use crate::train::OptimizerKind;
use crate::write::{Inputs, Target};
use std::path::{Path, PathBuf};

/// Largest `--pad-to-multiple-of` (2^16): at most that many rows, never used by a token, are
/// appended; real models pad to 8, 64 or 128.
pub const MAX_PAD_MULTIPLE: usize = 1 << 16;

/// Everything the transplant command needs, checked.
#[derive(Debug, Clone)]
pub struct TransplantConfig {
    pub model: String,
    /// `--model` names a static word-vector file (see [`crate::load::vectors::sniff`]), in this format.
    pub vectors: Option<crate::load::vectors::Format>,
    pub vocab: PathBuf,
    pub output: Target,
    /// False when --emit-model is given without -o: no matrix file then.
    pub write_matrix: bool,
    pub emit: Option<EmitConfig>,
    pub tensor: Option<String>,
    pub source_vocab: Option<PathBuf>,
    /// How rows the source lacks are made (never [`Method::Guide`]: the guide is `guide`).
    pub init: Method,
    pub aux_vectors: Option<PathBuf>,
    /// `--donor`: a model as the guide.
    pub donor: Option<String>,
    /// How --donor / --aux-vectors build a row (OMP's k not yet capped at the dimension).
    pub guide: crate::init::guide::Rule,
    pub calibrate_norm: bool,
    pub seed: u64,
    /// None: the source tensor's own type.
    pub dtype: Option<DType>,
    pub hub: HubSettings,
    pub json: bool,
    pub report: Option<Target>,
    /// `--plot`: the row-norm picture.
    pub plot: Option<Target>,
    pub quiet: bool,
    pub strict: bool,
    /// Draw progress bars (stderr is a terminal, and neither --quiet nor --json).
    pub progress: bool,
}

/// `--emit-model DIR` and its companions.
#[derive(Debug, Clone)]
pub struct EmitConfig {
    pub dir: crate::write::DirTarget,
    pub extend: bool,
    pub pad_to_multiple_of: Option<usize>,
    pub keep_special: bool,
    pub max_shard_size: u64,
}

/// `5GB`, `500MB`, `10KB`, `1GiB` or a plain byte count, as transformers' max_shard_size.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 1.0).then_some(v as u64)
}

impl TransplantConfig {
    /// What this run reads that is known from its flags, before any work: the vocabularies,
    /// --aux-vectors, the hub token file, a local model's files (a sharded index's shards
    /// included) or a hub model's cache entry (whole). The model's resolved files are added once
    /// known ([`crate::load::hub::ModelFiles::inputs`]). No output may name or replace one.
    pub fn local_inputs(&self) -> Inputs {
        let mut v = Inputs::new();
        v.file(&self.vocab);
        v.files(self.source_vocab.clone());
        v.files(self.aux_vectors.clone());
        v.file(token_path());
        model_inputs(&mut v, &self.model, &self.hub);
        if self.vectors == Some(crate::load::vectors::Format::Npy) {
            // An .npy's word list.
            let m = Path::new(&self.model);
            v.file(m.with_extension("txt"));
            v.file(m.parent().unwrap_or(Path::new(".")).join("vocab.txt"));
        }
        if let Some(donor) = &self.donor {
            model_inputs(&mut v, donor, &self.hub);
        }
        v
    }
}

/// The inputs `--model MODEL` names before it is resolved: a file (and, for a shard index, its
/// shards), a directory's files, or a hub id's cache entry (every file of it, whole).
pub fn model_inputs(v: &mut Inputs, model: &str, hub: &HubSettings) {
    let m = Path::new(model);
    if m.is_file() {
        v.file(m);
        let dir = m.parent().unwrap_or(Path::new("."));
        let index = m
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".index.json"));
        if index {
            if let Ok(shards) = crate::load::checkpoint::shard_names(m) {
                v.files(shards.into_iter().map(|s| dir.join(s)));
            }
        }
    } else if let Ok(dir) = std::fs::read_dir(m) {
        v.files(
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| !p.is_dir()),
        );
    } else if crate::load::hub::is_hub_id(model) {
        v.tree(hub.cache_entry(model));
    }
}

/// `inspect`'s settings.
#[derive(Debug, Clone)]
pub struct InspectConfig {
    pub model: String,
    pub vocab: Option<PathBuf>,
    pub tensor: Option<String>,
    pub source_vocab: Option<PathBuf>,
    pub hub: HubSettings,
    pub json: bool,
}

/// `score`'s settings.
#[derive(Debug, Clone)]
pub struct ScoreConfig {
    pub model: String,
    pub vocab: Option<PathBuf>,
    pub sample: usize,
    pub seed: u64,
    pub aux_vectors: Option<PathBuf>,
    /// `--donor`: held-out tokens the donor knows are scored, with both guide rules.
    pub donor: Option<String>,
    /// OMP's k for the `guide-omp` method.
    pub guide_k: usize,
    pub tensor: Option<String>,
    pub source_vocab: Option<PathBuf>,
    /// `--save-rows`: each method's held-out rows, as a safetensors file.
    pub save_rows: Option<Target>,
    pub hub: HubSettings,
    pub json: bool,
    pub quiet: bool,
}

impl ScoreConfig {
    /// What this run reads before the model is resolved (no output may be one of them).
    pub fn local_inputs(&self) -> Inputs {
        let mut v = Inputs::new();
        v.files(self.vocab.clone());
        v.files(self.source_vocab.clone());
        v.files(self.aux_vectors.clone());
        v.file(token_path());
        model_inputs(&mut v, &self.model, &self.hub);
        if let Some(donor) = &self.donor {
            model_inputs(&mut v, donor, &self.hub);
        }
        v
    }
}

/// `finetune`'s settings.
#[derive(Debug, Clone)]
pub struct FinetuneConfig {
    pub embeddings: PathBuf,
    pub vocab: PathBuf,
    pub train: PathBuf,
    pub valid: Option<PathBuf>,
    pub test: Option<PathBuf>,
    pub output: Target,
    pub head: Option<Target>,
    /// `--plot`: the training-curve picture.
    pub plot: Option<Target>,
    pub epochs: usize,
    pub lr: f64,
    pub embedding_lr: f64,
    pub batch_size: usize,
    pub optimizer: OptimizerKind,
    pub seed: u64,
    pub freeze_embeddings: bool,
    pub freeze_embeddings_epochs: usize,
    pub freeze_copied: bool,
    /// `--max-classes`: None means the default rule (see [`crate::load::labelled::check_classes`]).
    pub max_classes: Option<usize>,
    pub max_len: usize,
    pub unk_token: String,
    pub ignore_vocab_mismatch: bool,
    pub allow_nonfinite: bool,
    pub json: bool,
    pub quiet: bool,
    /// Draw a progress bar (stderr is a terminal, and neither --quiet nor --json).
    pub progress: bool,
}

impl FinetuneConfig {
    /// The files finetune reads: no output may name one.
    pub fn inputs(&self) -> Inputs {
        let mut v = Inputs::new();
        v.files([
            self.embeddings.clone(),
            self.vocab.clone(),
            self.train.clone(),
        ]);
        v.files(self.valid.clone());
        v.files(self.test.clone());
        v
    }
}

/// `evaluate`'s settings.
#[derive(Debug, Clone)]
pub struct EvaluateConfig {
    pub embeddings: PathBuf,
    pub head: PathBuf,
    pub vocab: PathBuf,
    pub data: PathBuf,
    pub max_len: usize,
    pub unk_token: String,
    pub ignore_vocab_mismatch: bool,
    pub allow_nonfinite: bool,
    pub json: bool,
}

/// Builds the transplant config from parsed arguments and the environment.
pub fn transplant(args: TransplantArgs, stderr_is_terminal: bool) -> Result<TransplantConfig> {
    let model = args
        .model
        .ok_or_else(|| Error::Usage("--model is required".into()))?;
    let vocab = args
        .vocab
        .ok_or_else(|| Error::Usage("--vocab is required".into()))?;
    if model.trim().is_empty() {
        return Err(Error::Usage("--model is empty".into()));
    }
    let vectors = crate::load::vectors::sniff(Path::new(&model));
    if let Some(format) = vectors {
        static_source_flags(
            &model,
            format,
            [
                args.emit_model.is_some(),
                args.tensor.is_some(),
                args.source_vocab.is_some(),
                matches!(args.init, InitArg::ComposeFit),
                args.aux_vectors.is_some(),
                args.donor.is_some(),
            ],
        )?;
    }
    if let Some(d) = &args.donor {
        donor_flag(d)?;
    }
    let guide = guide_rule(
        args.guide,
        args.guide_k,
        (args.donor.is_some(), args.aux_vectors.is_some()),
    )?;
    let write_matrix = args.output.is_some() || args.emit_model.is_none();
    let output = Target::new(
        args.output
            .as_deref()
            .unwrap_or(Path::new("embeddings.safetensors")),
        args.force,
        "--output",
    );
    let report = args
        .report
        .as_deref()
        .map(|p| Target::new(p, args.force, "--report"));
    let emit = match &args.emit_model {
        None => None,
        Some(dir) => {
            if !matches!(args.dtype, DTypeArg::Source) {
                return Err(Error::Usage(
                    "--dtype with --emit-model: a model's tensors keep the source's types; drop --dtype (or write the matrix alone with -o)".into(),
                ));
            }
            let max_shard_size = parse_size(&args.max_shard_size).ok_or_else(|| {
                Error::Usage(format!(
                    "--max-shard-size {}: not a size (e.g. 5GB, 500MB, 1000000)",
                    args.max_shard_size
                ))
            })?;
            if let Some(n) = args.pad_to_multiple_of {
                if !(1..=MAX_PAD_MULTIPLE).contains(&n) {
                    return Err(Error::Usage(format!(
                        "--pad-to-multiple-of {n}: must be 1 to {MAX_PAD_MULTIPLE} (hardware pads to 8, 64 or 128)"
                    )));
                }
            }
            Some(EmitConfig {
                dir: crate::write::DirTarget {
                    path: dir.clone(),
                    force: args.force,
                    flag: "--emit-model",
                },
                extend: args.extend,
                pad_to_multiple_of: args.pad_to_multiple_of,
                keep_special: args.keep_special,
                max_shard_size,
            })
        }
    };
    let plot = args
        .plot
        .as_deref()
        .map(|p| Target::new(p, args.force, "--plot"));
    if plot.is_some() && !write_matrix {
        return Err(Error::Usage(
            "--plot draws the matrix's rows as they are written: with --emit-model, pass -o too"
                .into(),
        ));
    }
    distinct(
        &[
            write_matrix.then_some(&output),
            report.as_ref(),
            plot.as_ref(),
        ],
        emit.as_ref().map(|e| &e.dir),
    )?;
    let progress = stderr_is_terminal && !args.quiet && !args.json;
    let hub = hub_settings(args.hub, progress)?;
    let cfg = TransplantConfig {
        model,
        vectors,
        vocab,
        output,
        write_matrix,
        emit,
        tensor: args.tensor,
        source_vocab: args.source_vocab,
        init: match args.init {
            // Static vectors have no tokenizer to fit a map on: auto is plain composition there.
            InitArg::Auto if vectors.is_some() => Method::Compose,
            InitArg::Auto => Method::Auto,
            InitArg::Compose => Method::Compose,
            InitArg::ComposeFit => Method::ComposeFit,
            InitArg::ComposeLength => Method::ComposeLength,
            InitArg::Random => Method::Random,
            InitArg::Zeros => Method::Zeros,
            InitArg::Mean => Method::Mean,
        },
        aux_vectors: args.aux_vectors,
        donor: args.donor,
        guide,
        calibrate_norm: args.calibrate_norm,
        seed: args.seed,
        dtype: match args.dtype {
            DTypeArg::Source => None,
            DTypeArg::F32 => Some(DType::F32),
            DTypeArg::F16 => Some(DType::F16),
            DTypeArg::Bf16 => Some(DType::BF16),
        },
        hub,
        json: args.json,
        report,
        plot,
        quiet: args.quiet,
        strict: args.strict,
        progress,
    };
    // Every output path is checked before any work starts.
    let inputs = cfg.local_inputs();
    if cfg.write_matrix {
        cfg.output.check(&inputs)?;
    }
    for t in [&cfg.report, &cfg.plot].into_iter().flatten() {
        t.check(&inputs)?;
    }
    if let Some(e) = &cfg.emit {
        e.dir.check(&inputs)?;
    }
    Ok(cfg)
}

/// Flags that need a checkpoint are usage errors when `--model` is a static-vector file.
fn static_source_flags(
    model: &str,
    format: crate::load::vectors::Format,
    [emit_model, tensor, source_vocab, compose_fit, aux_vectors, donor]: [bool; 6],
) -> Result<()> {
    let refused = [
        (
            emit_model,
            "--emit-model needs a checkpoint (a static-vector file has no model to emit)",
        ),
        (
            tensor,
            "--tensor names a checkpoint's tensor (a static-vector file holds one matrix)",
        ),
        (
            source_vocab,
            "--source-vocab does not apply (the file's own words are the source vocabulary)",
        ),
        (
            compose_fit,
            "--init compose-fit needs a checkpoint's tokenizer to fit on (use --init compose)",
        ),
        (
            aux_vectors,
            "--aux-vectors guides a checkpoint's rows (here the static vectors are the source)",
        ),
        (
            donor,
            "--donor guides a checkpoint's rows (here the static vectors are the source)",
        ),
    ];
    match refused.iter().find(|(given, _)| *given) {
        Some((_, flag)) => Err(Error::Usage(format!(
            "--model {model} is a static word-vector file ({}): {flag}",
            format.name()
        ))),
        None => Ok(()),
    }
}

/// `--donor` names a model: not empty, not a static word-vector file.
fn donor_flag(donor: &str) -> Result<()> {
    if donor.trim().is_empty() {
        return Err(Error::Usage("--donor is empty".into()));
    }
    if let Some(format) = crate::load::vectors::sniff(Path::new(donor)) {
        return Err(Error::Usage(format!(
            "--donor {donor} is a static word-vector file ({}): pass it as --aux-vectors (a donor is a model with a tokenizer)",
            format.name()
        )));
    }
    Ok(())
}

/// `--guide` and `--guide-k`: only with a guide, and k only for OMP. The default rule depends
/// on the guide ([`crate::init::guide::default_rule`]).
fn guide_rule(
    rule: Option<GuideArg>,
    k: Option<usize>,
    (donor, aux_vectors): (bool, bool),
) -> Result<crate::init::guide::Rule> {
    use crate::init::guide::Rule;
    if !donor && !aux_vectors && (rule.is_some() || k.is_some()) {
        let flag = if rule.is_some() {
            "--guide"
        } else {
            "--guide-k"
        };
        return Err(Error::Usage(format!(
            "{flag} applies to a guide: pass --donor MODEL or --aux-vectors FILE"
        )));
    }
    if k == Some(0) {
        return Err(Error::Usage("--guide-k must be at least 1".into()));
    }
    let rule = match rule {
        Some(GuideArg::Softmax) => Rule::Softmax,
        Some(GuideArg::Omp) => Rule::Omp {
            k: crate::init::guide::DEFAULT_K,
        },
        None => crate::init::guide::default_rule(donor),
    };
    match (rule, k) {
        (Rule::Softmax, Some(_)) => Err(Error::Usage(
            "--guide-k is OMP's anchor count: it does not apply to the softmax rule (pass --guide omp)"
                .into(),
        )),
        (Rule::Omp { .. }, Some(k)) => Ok(Rule::Omp { k }),
        (rule, None) => Ok(rule),
    }
}

/// Two flags naming the same output file by any spelling (`./g` and `g`, links, hard links), or a
/// file output inside the directory `--emit-model` replaces.
fn distinct(targets: &[Option<&Target>], dir: Option<&crate::write::DirTarget>) -> Result<()> {
    let t: Vec<&Target> = targets.iter().flatten().copied().collect();
    for (i, a) in t.iter().enumerate() {
        for b in &t[i + 1..] {
            if a.path == b.path || crate::write::same_path(&a.path, &b.path) {
                return Err(Error::Usage(format!(
                    "{} and {} name the same file",
                    b.flag, a.flag
                )));
            }
        }
        if let Some(d) = dir.filter(|d| d.holds(&a.path)) {
            return Err(Error::Usage(format!(
                "{} {} is inside {} {}, which is written whole: put it elsewhere",
                a.flag,
                a.path.display(),
                d.flag,
                d.path.display()
            )));
        }
    }
    Ok(())
}

pub fn inspect(args: InspectArgs, stderr_is_terminal: bool) -> Result<InspectConfig> {
    if let Some(format) = crate::load::vectors::sniff(Path::new(&args.model)) {
        return Err(Error::Usage(format!(
            "inspect --model {}: a static word-vector file ({}) has no tensors or tokenizer to inspect; `--model {0} --vocab V --json` with -o transplants and prints the counts",
            args.model,
            format.name()
        )));
    }
    let hub = hub_settings(args.hub, stderr_is_terminal && !args.json)?;
    Ok(InspectConfig {
        model: args.model,
        vocab: args.vocab,
        tensor: args.tensor,
        source_vocab: args.source_vocab,
        hub,
        json: args.json,
    })
}

pub fn score(args: ScoreArgs, stderr_is_terminal: bool) -> Result<ScoreConfig> {
    if let Some(format) = crate::load::vectors::sniff(Path::new(&args.model)) {
        return Err(Error::Usage(format!(
            "score --model {}: a static word-vector file ({}) has no tokenizer to hold tokens out of; score a checkpoint (the file can be its --aux-vectors)",
            args.model,
            format.name()
        )));
    }
    if args.sample == 0 {
        return Err(Error::Usage("--sample must be at least 1".into()));
    }
    if args.guide_k == 0 {
        return Err(Error::Usage("--guide-k must be at least 1".into()));
    }
    if let Some(d) = &args.donor {
        donor_flag(d)?;
    }
    let hub = hub_settings(args.hub, stderr_is_terminal && !args.json)?;
    Ok(ScoreConfig {
        model: args.model,
        vocab: args.vocab,
        sample: args.sample,
        seed: args.seed,
        aux_vectors: args.aux_vectors,
        donor: args.donor,
        guide_k: args.guide_k,
        tensor: args.tensor,
        source_vocab: args.source_vocab,
        save_rows: args
            .save_rows
            .as_deref()
            .map(|p| Target::new(p, args.force, "--save-rows")),
        hub,
        json: args.json,
        quiet: args.quiet,
    })
}

pub fn finetune(args: FinetuneArgs, stderr_is_terminal: bool) -> Result<FinetuneConfig> {
    if args.epochs == 0 || args.batch_size == 0 || args.max_len == 0 {
        return Err(Error::Usage(
            "--epochs, --batch-size and --max-len must be at least 1".into(),
        ));
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return Err(Error::Usage("--lr must be a positive number".into()));
    }
    let embedding_lr = args.embedding_lr.unwrap_or(args.lr);
    if !(embedding_lr.is_finite() && embedding_lr > 0.0) {
        return Err(Error::Usage(
            "--embedding-lr must be a positive number".into(),
        ));
    }
    if args.freeze_embeddings_epochs >= args.epochs {
        return Err(Error::Usage(format!(
            "--freeze-embeddings-epochs {} leaves no epoch of --epochs {} to train the embedding (use --freeze-embeddings to never train it)",
            args.freeze_embeddings_epochs, args.epochs
        )));
    }
    let output = Target::new(&args.output, args.force, "--output");
    let head = args
        .head
        .as_deref()
        .map(|p| Target::new(p, args.force, "--head"));
    let plot = args
        .plot
        .as_deref()
        .map(|p| Target::new(p, args.force, "--plot"));
    distinct(&[Some(&output), head.as_ref(), plot.as_ref()], None)?;
    let cfg = FinetuneConfig {
        embeddings: args.embeddings,
        vocab: args.vocab,
        train: args.train,
        valid: args.valid,
        test: args.test,
        output,
        head,
        plot,
        epochs: args.epochs,
        lr: args.lr,
        embedding_lr,
        batch_size: args.batch_size,
        optimizer: match args.optimizer {
            OptimizerArg::Adam => OptimizerKind::Adam,
            OptimizerArg::LazyAdam => OptimizerKind::LazyAdam,
            OptimizerArg::DeferredAdam => OptimizerKind::DeferredAdam,
            OptimizerArg::Sgd => OptimizerKind::Sgd,
        },
        seed: args.seed,
        freeze_embeddings: args.freeze_embeddings,
        freeze_embeddings_epochs: args.freeze_embeddings_epochs,
        freeze_copied: args.freeze_copied,
        max_classes: args.max_classes,
        max_len: args.max_len,
        unk_token: args.unk_token,
        ignore_vocab_mismatch: args.ignore_vocab_mismatch,
        allow_nonfinite: args.allow_nonfinite,
        json: args.json,
        quiet: args.quiet,
        progress: stderr_is_terminal && !args.quiet && !args.json,
    };
    let inputs = cfg.inputs();
    cfg.output.check(&inputs)?;
    for t in [&cfg.head, &cfg.plot].into_iter().flatten() {
        t.check(&inputs)?;
    }
    Ok(cfg)
}

pub fn evaluate(args: EvaluateArgs) -> Result<EvaluateConfig> {
    if args.batch_size == 0 || args.max_len == 0 {
        return Err(Error::Usage(
            "--batch-size and --max-len must be at least 1".into(),
        ));
    }
    Ok(EvaluateConfig {
        embeddings: args.embeddings,
        head: args.head,
        vocab: args.vocab,
        data: args.data,
        max_len: args.max_len,
        unk_token: args.unk_token,
        ignore_vocab_mismatch: args.ignore_vocab_mismatch,
        allow_nonfinite: args.allow_nonfinite,
        json: args.json,
    })
}

/// Hub settings from flags (which read HF_ENDPOINT, HF_HUB_CACHE, HF_TOKEN, HF_HUB_OFFLINE) and the
/// rest of the environment (HUGGINGFACE_HUB_CACHE, HF_HOME, HF_TOKEN_PATH). A token with a control
/// character is a usage error that does not show it.
pub fn hub_settings(args: HubArgs, progress: bool) -> Result<HubSettings> {
    // Surrounding whitespace (a trailing newline) is trimmed, as huggingface_hub does.
    let token = match args
        .token
        .map(|t| Secret::new(t.expose().trim()))
        .filter(|t| !t.expose().is_empty())
    {
        Some(t) => {
            t.check("--token or HF_TOKEN")?;
            Some(t)
        }
        None => token_from_file()?,
    };
    Ok(HubSettings {
        endpoint: args.endpoint.filter(|e| !e.is_empty()),
        cache_dir: args
            .cache_dir
            .or_else(|| env_path("HUGGINGFACE_HUB_CACHE"))
            .unwrap_or_else(|| hf_home().join("hub")),
        token,
        offline: args.offline,
        revision: args.revision,
        progress,
    })
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// HF_HOME, else ~/.cache/huggingface, as Python's huggingface_hub decides it.
pub fn hf_home() -> PathBuf {
    env_path("HF_HOME").unwrap_or_else(|| {
        let base = env_path("XDG_CACHE_HOME")
            .or_else(|| env_path("HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        base.join("huggingface")
    })
}

/// Where `huggingface-cli login` stores the token: HF_TOKEN_PATH, else $HF_HOME/token.
fn token_path() -> PathBuf {
    env_path("HF_TOKEN_PATH").unwrap_or_else(|| hf_home().join("token"))
}

/// The token `huggingface-cli login` stored (HF_TOKEN_PATH, else $HF_HOME/token). Surrounding
/// whitespace (the usual trailing newline) is trimmed, as huggingface_hub does.
fn token_from_file() -> Result<Option<Secret>> {
    let path = token_path();
    let Ok(t) = crate::bounded::read_text(&path, 1 << 20, "a token file") else {
        return Ok(None);
    };
    let t = Secret::new(t.trim());
    if t.expose().is_empty() {
        return Ok(None);
    }
    t.check(&path.display().to_string())?;
    Ok(Some(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn transplant_cfg(extra: &[&str], tty: bool) -> TransplantConfig {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.safetensors");
        let mut argv = vec![
            "embed-transplant",
            "-m",
            "some/model",
            "-v",
            "vocab.txt",
            "-o",
        ];
        argv.push(out.to_str().unwrap());
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).unwrap();
        transplant(cli.transplant, tty).unwrap()
    }

    #[test]
    fn progress_only_on_a_terminal_without_quiet_or_json() {
        assert!(transplant_cfg(&[], true).progress);
        assert!(transplant_cfg(&[], true).hub.progress);
        for (extra, tty) in [
            (&[][..], false),
            (&["-q"][..], true),
            (&["--json"][..], true),
        ] {
            let cfg = transplant_cfg(extra, tty);
            assert!(!cfg.progress && !cfg.hub.progress, "{extra:?} tty={tty}");
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ft.safetensors");
        let ft = |extra: &[&str], tty: bool| {
            let mut argv = vec![
                "embed-transplant",
                "finetune",
                "--embeddings",
                "e.safetensors",
            ];
            argv.extend_from_slice(&["-v", "v.txt", "--train", "t.tsv", "-o"]);
            argv.push(out.to_str().unwrap());
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).unwrap().command {
                Some(Command::Finetune(a)) => finetune(a, tty).unwrap().progress,
                _ => unreachable!(),
            }
        };
        assert!(ft(&[], true));
        assert!(!ft(&[], false) && !ft(&["-q"], true) && !ft(&["--json"], true));
    }
}

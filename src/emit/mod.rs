//! `--emit-model DIR`: a whole model directory for the new vocabulary that transformers loads
//! with `from_pretrained`. [`weights`] routes every tensor (embedding, untied head and per-token
//! biases rebuilt by the same plan as the matrix; everything else streamed bit for bit),
//! [`tokenizer`] rebuilds or extends the tokenizer, this module lays out the rows, rewrites
//! config.json and writes the directory through the caller's [`Batch`] (a temp directory beside
//! DIR, renamed into place at commit).
//!
//! (Over 400 lines because [`emit`] is one pass of about 570 lines, special tokens, rows, id
//! remapping, config.json, weights and side files, each step using what the earlier ones bound;
//! tests/cli/model_out.rs loads every output back.)

pub mod tokenizer;
pub mod weights;

use crate::config::EmitConfig;
use crate::error::{Error, Result};
use crate::init::build::{BuildOptions, RowSource};
use crate::load::checkpoint::store::TensorStore;
use crate::load::hub::ModelFiles;
use crate::load::vocab::{SourceKind, SourceVocab, TargetVocab};
use crate::matching::{Origin, Plan, SourceTokenizer};
use crate::report::{Adopted, ModelReport};
use crate::write::Batch;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use tokenizer::Family;

/// Everything the directory is made from.
pub struct Input<'a> {
    pub cfg: &'a EmitConfig,
    pub files: &'a ModelFiles,
    pub source: &'a SourceVocab,
    pub target: &'a TargetVocab,
    pub plan: &'a Plan,
    pub emb_name: &'a str,
    pub emb_rows: usize,
    pub opts: BuildOptions,
    pub do_lower_case: Option<bool>,
    /// The matrix output's provenance metadata (also written as transplant.json).
    pub provenance: &'a BTreeMap<String, String>,
    /// `--vocab tokenizer.json`: the target tokenizer, written unchanged (its ids are the rows).
    pub target_tokenizer: Option<&'a Value>,
    /// The tokenizer_config.json beside the target tokenizer.json, when there is one.
    pub target_tokenizer_config: Option<&'a Value>,
    /// The source tokenizer: `--extend` asks it whether a new word would be a valid token, and
    /// the written tokenizer is checked against it.
    pub tokenizer: &'a SourceTokenizer,
    /// `--strict`: a target word `--extend` cannot add is an error instead of a warning.
    pub strict: bool,
    /// Where warnings go.
    pub warn: &'a (dyn Fn(&str) + Sync),
}

/// The tokenizer's files, built beside the weights' write.
struct SideFiles {
    tj: Value,
    tc: Value,
    stm: Value,
    vocab_txt: Option<Vec<String>>,
}

const CONFIG_ID_KEYS: &[&str] = &[
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "unk_token_id",
    "cls_token_id",
    "sep_token_id",
    "mask_token_id",
    "decoder_start_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
];

/// Roles of special tokens, as tokenizer_config.json names them (`{role}_token`).
const ROLES: &[&str] = &["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

/// The role a config.json id key stands for (`decoder_start_token_id` has none: it takes the role
/// of the token it names).
fn role_of_key(k: &str) -> Option<&'static str> {
    let k = k.strip_prefix("forced_").unwrap_or(k);
    ROLES
        .iter()
        .find(|r| k.strip_prefix(**r) == Some("_token_id"))
        .copied()
}

/// Names of special tokens by role, tried in order when a target tokenizer has no
/// tokenizer_config.json to say (GPT-2's `<|endoftext|>` is its bos, eos and unk).
const ROLE_NAMES: &[(&str, &[&str])] = &[
    (
        "bos",
        &[
            "<s>",
            "<|begin_of_text|>",
            "<|startoftext|>",
            "<bos>",
            "[BOS]",
            "<|endoftext|>",
        ],
    ),
    (
        "eos",
        &["</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "[EOS]"],
    ),
    ("unk", &["<unk>", "[UNK]", "<|unk|>"]),
    ("sep", &["[SEP]", "</s>"]),
    ("pad", &["<pad>", "[PAD]", "<|pad|>"]),
    ("cls", &["[CLS]", "<s>"]),
    ("mask", &["<mask>", "[MASK]"]),
];

/// The target tokenizer's token per role: its tokenizer_config.json's `{role}_token` entries when
/// it has one, else its special added tokens recognised by name ([`ROLE_NAMES`]).
fn target_roles(
    tj: &Value,
    tc: Option<&Value>,
    ids: &HashMap<String, u32>,
) -> BTreeMap<String, String> {
    let mut roles = BTreeMap::new();
    if let Some(tc) = tc {
        for r in ROLES {
            if let Some(t) = tc.get(format!("{r}_token")).and_then(token_name) {
                if ids.contains_key(&t) {
                    roles.insert(r.to_string(), t);
                }
            }
        }
        return roles;
    }
    let special: HashSet<&str> = tj
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a.get("special").and_then(Value::as_bool) == Some(true))
        .filter_map(|a| a.get("content").and_then(Value::as_str))
        .collect();
    for (r, names) in ROLE_NAMES {
        if let Some(t) = names.iter().find(|n| special.contains(**n)) {
            roles.insert(r.to_string(), t.to_string());
        }
    }
    roles
}

fn token_name(v: &Value) -> Option<String> {
    v.as_str()
        .map(String::from)
        .or_else(|| v.get("content").and_then(Value::as_str).map(String::from))
}

/// Builds the directory's contents and stages it in `batch`.
pub fn emit(inp: &Input<'_>, batch: &mut Batch) -> Result<ModelReport> {
    let source = inp.source;
    let cfg_path = inp.files.config.as_deref().ok_or_else(|| {
        Error::Invalid(format!(
            "--emit-model needs the model's config.json, and {} has none",
            inp.files.provenance.model
        ))
    })?;
    let mut config = crate::bounded::read_json_object(cfg_path)?;
    let tok_cfg = match &inp.files.tokenizer_config {
        Some(p) => Some(crate::bounded::read_json_object(p)?),
        None => None,
    };
    let mut id_to_token: Vec<Option<String>> = vec![None; source.size];
    for (t, &id) in &source.ids {
        if let Some(slot) = id_to_token.get_mut(id as usize) {
            *slot = Some(t.clone());
        }
    }

    // Special tokens: named by config.json ids, tokenizer files, added special tokens.
    let mut specials: Vec<(String, String)> = Vec::new();
    let mut push = |t: String, why: String| {
        if !specials.iter().any(|(s, _)| *s == t) {
            specials.push((t, why));
        }
    };
    for k in CONFIG_ID_KEYS {
        for v in ids_of(config.get(*k)) {
            match id_to_token.get(v as usize).and_then(Option::as_ref) {
                Some(t) => push(t.clone(), format!("config.json {k}")),
                None if !inp.cfg.extend => {
                    return Err(Error::file(
                        cfg_path,
                        format!("{k} {v} names no token of the source vocabulary"),
                    ))
                }
                None => {}
            }
        }
    }
    if let Some(tc) = &tok_cfg {
        for k in tokenizer::TOKEN_KEYS {
            if let Some(t) = tc.get(*k).and_then(token_name) {
                if source.ids.contains_key(&t) {
                    push(t, format!("tokenizer_config.json {k}"));
                }
            }
        }
    }
    let mut tj: Value = match source.kind {
        SourceKind::TokenizerJson => crate::load::vocab::read_tokenizer_value(&source.path)?,
        SourceKind::VocabTxt => {
            let bert: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                .iter()
                .filter(|s| source.ids.contains_key(**s))
                .map(|s| s.to_string())
                .collect();
            if !source.ids.contains_key("[CLS]") || !source.ids.contains_key("[SEP]") {
                return Err(Error::file(
                    &source.path,
                    "a vocab.txt without [CLS] and [SEP]: not a BERT vocabulary; --emit-model needs a tokenizer.json for it",
                ));
            }
            for s in &bert {
                push(s.clone(), "BERT special token".into());
            }
            tokenizer::wordpiece_from_vocab(&id_to_token, inp.do_lower_case.unwrap_or(true), &bert)
        }
    };
    for a in tj
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if a.get("special").and_then(Value::as_bool) == Some(true) {
            if let Some(c) = a.get("content").and_then(Value::as_str) {
                push(c.to_string(), "a special token of tokenizer.json".into());
            }
        }
    }
    let family = tokenizer::family(inp.target_tokenizer.unwrap_or(&tj));
    if !inp.cfg.extend
        && inp.target_tokenizer.is_none()
        && !matches!(family, Family::WordPiece | Family::Unigram)
    {
        return Err(tokenizer::cannot_replace(&tj, &source.path));
    }

    // Rows.
    let mut rows: Vec<RowSource>;
    let mut token_ids: HashMap<String, u32> = HashMap::new();
    let mut kept_special = Vec::new();
    let mut new_tokens: Vec<(String, u32)> = Vec::new();
    let token_rows;
    let mut row_tokens: Vec<String> = Vec::new();
    let mut row_pieces: Vec<Vec<String>> = Vec::new();
    if inp.cfg.extend {
        rows = (0..inp.emb_rows as u32).map(RowSource::Copy).collect();
        let mut next = source.size as u32;
        let mut seen: HashSet<&str> = HashSet::new();
        let mut candidates: Vec<usize> = Vec::new();
        for (i, (t, r)) in inp.target.tokens.iter().zip(&inp.plan.rows).enumerate() {
            let known =
                source.ids.contains_key(t) || matches!(r.method, Origin::Exact | Origin::Decoded);
            if !known && seen.insert(t.as_str()) {
                candidates.push(i);
            }
        }
        drop(seen);
        let words: Vec<&str> = candidates
            .iter()
            .map(|&i| inp.target.tokens[i].as_str())
            .collect();
        let pieces = inp.target_tokenizer.is_none()
            && tokenizer::extension_for(&tj, Some(source.size as u32))
                == tokenizer::Extension::UnigramPieces;
        let unfit = tokenizer::unfit_new_words(&words, inp.tokenizer, pieces);
        drop(words);
        let refused: Vec<(usize, &str)> = candidates
            .iter()
            .zip(&unfit)
            .filter_map(|(&i, why)| why.as_deref().map(|w| (i, w)))
            .collect();
        if let Some(&(i, why)) = refused.first() {
            let line =
                |i: usize, why: &str| format!("line {} ({:?}): {why}", i + 1, inp.target.tokens[i]);
            if inp.strict {
                return Err(Error::Line {
                    path: inp.target.origin.clone(),
                    line: i + 1,
                    msg: format!(
                        "--extend cannot add {:?}: {why} (--strict)",
                        inp.target.tokens[i]
                    ),
                });
            }
            let shown: Vec<String> = refused.iter().take(5).map(|&(i, w)| line(i, w)).collect();
            let more = refused.len().saturating_sub(shown.len());
            (inp.warn)(&format!(
                "{}: {} word(s) not added by --extend (they would break the tokenizer or change how ordinary text tokenises; their rows are not written): {}{}",
                inp.target.origin,
                refused.len(),
                shown.join("; "),
                if more > 0 { format!("; and {more} more") } else { String::new() }
            ));
        }
        for (&i, why) in candidates.iter().zip(&unfit) {
            if why.is_some() {
                continue;
            }
            let (t, r) = (&inp.target.tokens[i], &inp.plan.rows[i]);
            let id = next;
            next += 1;
            if (id as usize) < rows.len() {
                rows[id as usize] = r.source.clone();
            } else {
                rows.push(r.source.clone());
            }
            new_tokens.push((t.clone(), id));
        }
        // token_ids stays empty: with --extend nothing looks a token up by name (a map of a
        // million new words cost 80 MB).
        token_rows = next as usize;
    } else {
        rows = inp.plan.rows.iter().map(|r| r.source.clone()).collect();
        for (t, r) in inp.target.tokens.iter().zip(&inp.plan.rows) {
            // A decoded match (byte-level or SentencePiece) takes the source's spelling, so the
            // tokenizer produces it as the source did.
            let name = |id: &u32| id_to_token.get(*id as usize).and_then(Option::clone);
            let spelled = match (
                r.method,
                r.pieces().first().and_then(name),
                inp.target_tokenizer,
            ) {
                (Origin::Decoded, Some(p), None) => p,
                _ => t.clone(),
            };
            row_tokens.push(spelled);
            row_pieces.push(r.pieces().iter().filter_map(name).collect());
        }
        for (i, t) in row_tokens.iter().enumerate() {
            token_ids.insert(t.clone(), i as u32);
        }
        for (s, why) in &specials {
            if token_ids.contains_key(s) {
                continue;
            }
            if !inp.cfg.keep_special {
                // A target tokenizer brings its own special tokens: roles are adopted below.
                if inp.target_tokenizer.is_some() {
                    continue;
                }
                return Err(Error::Invalid(format!(
                    "special token {s:?} ({why}) is not in the target vocabulary {}; add it, or pass --keep-special to append it with its source row",
                    inp.target.origin
                )));
            }
            let id = rows.len() as u32;
            rows.push(RowSource::Copy(source.ids[s]));
            row_tokens.push(s.clone());
            row_pieces.push(Vec::new());
            token_ids.insert(s.clone(), id);
            kept_special.push(s.clone());
        }
        token_rows = rows.len();
    }
    let mut padding_rows = 0;
    if let Some(n) = inp.cfg.pad_to_multiple_of {
        while rows.len() % n != 0 {
            rows.push(RowSource::Fill);
            padding_rows += 1;
        }
    }

    // A target tokenizer replacing the source's: roles whose source token it lacks move to its
    // token of the same role (as mergekit's tokensurgeon takes the donor's), or lack one.
    let adopted: Option<Adopted> = match inp.target_tokenizer {
        Some(ttj) if !inp.cfg.extend && !inp.cfg.keep_special => {
            let mut source_roles: BTreeMap<String, String> = BTreeMap::new();
            for k in CONFIG_ID_KEYS {
                if let (Some(r), Some(&v)) = (role_of_key(k), ids_of(config.get(*k)).first()) {
                    if let Some(Some(t)) = id_to_token.get(v as usize) {
                        source_roles
                            .entry(r.to_string())
                            .or_insert_with(|| t.clone());
                    }
                }
            }
            if let Some(tc) = &tok_cfg {
                for r in ROLES {
                    if let Some(t) = tc.get(format!("{r}_token")).and_then(token_name) {
                        if source.ids.contains_key(&t) {
                            source_roles.insert(r.to_string(), t);
                        }
                    }
                }
            }
            let target_roles = target_roles(ttj, inp.target_tokenizer_config, &token_ids);
            let mut a = Adopted {
                target_roles,
                ..Adopted::default()
            };
            for (r, t) in &source_roles {
                if token_ids.contains_key(t) {
                    continue;
                }
                match a.target_roles.get(r) {
                    Some(to) => {
                        a.moved.insert(r.clone(), [t.clone(), to.clone()]);
                    }
                    None => a.lacking.push(r.clone()),
                }
            }
            let with_role: HashSet<&String> = source_roles.values().collect();
            a.dropped = specials
                .iter()
                .map(|(t, _)| t)
                .filter(|t| !token_ids.contains_key(*t) && !with_role.contains(t))
                .cloned()
                .collect();
            a.lacking.sort();
            Some(a)
        }
        _ => None,
    };
    let role_target_id = |key: &str, token: &str| -> Option<u64> {
        let a = adopted.as_ref()?;
        let role = role_of_key(key).map(String::from).or_else(|| {
            a.moved
                .iter()
                .find(|(_, [from, _])| from == token)
                .map(|(r, _)| r.clone())
        })?;
        let to = a.target_roles.get(&role)?;
        token_ids.get(to).map(|&i| i as u64)
    };
    let new_id_of = |key: &str, old: u64| -> Option<u64> {
        if inp.cfg.extend {
            return Some(old);
        }
        let t = id_to_token.get(old as usize)?.as_ref()?;
        token_ids
            .get(t)
            .map(|&i| i as u64)
            .or_else(|| role_target_id(key, t))
    };
    // With an adopted tokenizer an id whose role the target lacks becomes null (dropped from a
    // list); otherwise it is an error.
    let remap = |key: &str, v: &Value, file: &Path| -> Result<Value> {
        let f = |old: u64| new_id_of(key, old);
        if let Some(a) = &adopted {
            // A role the source left null takes the target's token, so config and tokenizer agree.
            if v.is_null() {
                let id = role_of_key(key)
                    .and_then(|r| a.target_roles.get(r))
                    .and_then(|t| token_ids.get(t));
                return Ok(id.map_or(Value::Null, |&i| json!(i)));
            }
            return Ok(remap_or_null(v, &f));
        }
        remap_ids(v, &f).ok_or_else(|| {
            Error::file(
                file,
                format!("{key} names a token the new vocabulary lacks"),
            )
        })
    };

    // config.json.
    let mut config_ids = BTreeMap::new();
    let tied_in_config = config.get("tie_word_embeddings").and_then(Value::as_bool);
    config["vocab_size"] = json!(rows.len());
    for k in CONFIG_ID_KEYS {
        if let Some(v) = config.get(*k).cloned() {
            let new = remap(k, &v, cfg_path)?;
            config_ids.insert(k.to_string(), new.clone());
            config[*k] = new;
        }
    }
    // From the model's own files (a hub source downloads it here: the matrix output never needs it).
    let generation = match inp.files.fetcher.fetch_optional("generation_config.json")? {
        Some(p) => {
            let mut g = crate::bounded::read_json_object(&p)?;
            for k in CONFIG_ID_KEYS {
                if let Some(v) = g.get(*k).cloned() {
                    g[*k] = remap(k, &v, &p)?;
                }
            }
            Some(g)
        }
        _ => None,
    };

    // Weights.
    let store = TensorStore::open(&inp.files.weights, inp.files.fetcher.as_ref())?;
    let (tensors, routing) = weights::route(
        &store,
        inp.emb_name,
        tied_in_config,
        inp.emb_rows,
        rows.len(),
    )?;
    let tied = routing.head.is_none();
    let files = weights::plan_files(&tensors, store.sharded, inp.cfg.max_shard_size);
    let builder = weights::Builder {
        store: &store,
        rows: &rows,
        opts: inp.opts.clone(),
    };

    let extension = (inp.cfg.extend && inp.target_tokenizer.is_none())
        .then(|| tokenizer::extension_for(&tj, new_tokens.first().map(|(_, id)| *id)));
    let mut doc: BTreeMap<String, Value> = inp
        .provenance
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let report = ModelReport {
        dir: inp.cfg.dir.path.display().to_string(),
        mode: if inp.cfg.extend { "extend" } else { "replace" },
        rows: rows.len(),
        token_rows,
        new_tokens: new_tokens.len(),
        kept_special: kept_special.clone(),
        padding_rows,
        tokenizer: family,
        extension,
        tied,
        routing,
        weight_files: files.iter().map(|(n, _)| n.clone()).collect(),
        config_ids,
        special_tokens: adopted.clone(),
    };
    doc.insert(
        "emit_model".into(),
        serde_json::to_value(&report).unwrap_or_default(),
    );

    // The tokenizer files are built while the weights are written: the write waits mostly on
    // the disk, the tokenizer on the CPU.
    let new_tokens = &new_tokens;
    let side_files = move || -> Result<SideFiles> {
        // Tokenizer.
        let tok_origin = source.path.clone();
        if let Some(target_tj) = inp.target_tokenizer {
            tj = target_tj.clone();
            let kept: Vec<(String, u32)> = kept_special
                .iter()
                .map(|s| (s.clone(), token_ids[s]))
                .collect();
            tokenizer::append_special(&mut tj, &kept);
        } else if extension.is_some() {
            // The new tokens are written into the files as they are serialised
            // (tokenizer::Extended): a JSON value per new word took gigabytes at a million.
        } else {
            tokenizer::replace(
                &mut tj,
                &tokenizer::Replace {
                    tokens: &row_tokens,
                    ids: &token_ids,
                    pieces: &row_pieces,
                },
                &tok_origin,
            )?;
        }
        // Tokenizer side files.
        let mut defaults: Vec<(&str, String)> = Vec::new();
        if family == Family::WordPiece {
            defaults.push(("tokenizer_class", "BertTokenizer".into()));
            for (k, t) in [
                ("unk_token", "[UNK]"),
                ("sep_token", "[SEP]"),
                ("pad_token", "[PAD]"),
                ("cls_token", "[CLS]"),
                ("mask_token", "[MASK]"),
            ] {
                if token_ids.contains_key(t)
                    || source.ids.contains_key(t)
                    || new_tokens.iter().any(|(n, _)| n == t)
                {
                    defaults.push((k, t.into()));
                }
            }
        }
        let base = match &adopted {
            Some(a) => Some(adopted_tokenizer_config(
                tok_cfg,
                inp.target_tokenizer_config,
                a,
                &token_ids,
            )),
            None => tok_cfg,
        };
        let mut tc = tokenizer::tokenizer_config(base, &tj, &defaults);
        if family == Family::WordPiece {
            // A target tokenizer says itself whether it lower-cases.
            let lower = match (&adopted, inp.target_tokenizer) {
                (Some(_), Some(ttj)) => inp
                    .target_tokenizer_config
                    .and_then(|c| c.get("do_lower_case"))
                    .and_then(Value::as_bool)
                    .or_else(|| {
                        ttj.pointer("/normalizer/lowercase")
                            .and_then(Value::as_bool)
                    }),
                _ => None,
            };
            tc["do_lower_case"] = json!(lower.or(inp.do_lower_case).unwrap_or(true));
        }
        let stm = tokenizer::special_tokens_map(&tc);
        let vocab_txt = if family == Family::WordPiece {
            let mut lines = tokenizer::wordpiece_lines(&tj).ok_or_else(|| {
                Error::Invalid(
                    "the new WordPiece vocabulary has ids without a token: cannot write vocab.txt"
                        .into(),
                )
            })?;
            if extension == Some(tokenizer::Extension::WordPieceAndAddedTokens) {
                // The new tokens' lines, at their ids (consecutive after the source's).
                for (t, id) in new_tokens.iter() {
                    if *id as usize == lines.len() {
                        lines.push(t.clone());
                    } else if *id as usize > lines.len() {
                        return Err(Error::Invalid(
                            "the new WordPiece vocabulary has ids without a token: cannot write vocab.txt"
                                .into(),
                        ));
                    }
                }
            }
            Some(lines)
        } else {
            None
        };
        Ok(SideFiles {
            tj,
            tc,
            stm,
            vocab_txt,
        })
    };
    batch.directory(&inp.cfg.dir, |dir| {
        let (weights, side) = std::thread::scope(|scope| {
            // Shards are written side by side: one copying a file's tensors waits on the disk
            // while another builds a matrix.
            let weights = scope.spawn(|| -> Result<()> {
                use rayon::prelude::*;
                files.par_iter().try_for_each(|(name, idx)| {
                    let ts: Vec<&weights::OutTensor> = idx.iter().map(|&i| &tensors[i]).collect();
                    builder.write_file(dir, name, &ts)
                })
            });
            // The tokenizer's files are built and written (and their JSON values dropped) while
            // the weights are being written.
            let side = side_files().and_then(|side| {
                let SideFiles {
                    tj,
                    tc,
                    stm,
                    vocab_txt,
                } = side;
                write_json(dir, "config.json", &config)?;
                if let Some(g) = &generation {
                    write_json(dir, "generation_config.json", g)?;
                }
                match extension {
                    Some(kind) => {
                        let ext = tokenizer::Extended::new(&tj, new_tokens, kind);
                        write_json(dir, "tokenizer.json", &ext)?;
                        drop(ext);
                        let tc = tokenizer::ExtendedConfig {
                            tc: &tc,
                            tj: &tj,
                            new: new_tokens,
                        };
                        write_json(dir, "tokenizer_config.json", &tc)?;
                    }
                    None => {
                        write_json(dir, "tokenizer.json", &tj)?;
                        write_json(dir, "tokenizer_config.json", &tc)?;
                    }
                }
                drop(tj);
                write_json(dir, "special_tokens_map.json", &stm)?;
                if let Some(lines) = &vocab_txt {
                    let mut text = lines.join("\n");
                    text.push('\n');
                    write_bytes(dir, "vocab.txt", text.as_bytes())?;
                }
                drop(vocab_txt);
                check_tokenizer(
                    inp,
                    &dir.join("tokenizer.json"),
                    extension.is_some().then_some(new_tokens.as_slice()),
                )
            });
            let weights = weights
                .join()
                .unwrap_or_else(|_| Err(Error::Invalid("the weights writer panicked".into())));
            (weights, side)
        });
        weights?;
        side?;
        if files.len() > 1 || files[0].0 != "model.safetensors" {
            write_json(
                dir,
                "model.safetensors.index.json",
                &weights::index_json(&tensors, &files),
            )?;
        }
        // What we wrote, so that a later `--force` knows it replaces only this (write::target::foreign).
        let mut written: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        written.push("transplant.json".into());
        written.sort();
        doc.insert("files".into(), json!(written));
        write_json(dir, "transplant.json", &doc)
    })?;
    Ok(report)
}

/// Loads the written tokenizer back and checks it (see [`tokenizer::check_written`]): with
/// `--extend` against the source tokenizer (`new` holds the new words), with a target
/// tokenizer.json against the target, otherwise that it loads and encodes plain text.
fn check_tokenizer(inp: &Input<'_>, written: &Path, new: Option<&[(String, u32)]>) -> Result<()> {
    if inp.target_tokenizer.is_some() {
        let origin = Path::new(&inp.target.origin);
        let mut target = crate::load::vocab::read_tokenizer(origin)?;
        target.with_padding(None);
        target
            .with_truncation(None)
            .map_err(|e| Error::file(origin, e.to_string()))?;
        return tokenizer::check_written(written, Some(&target), &[], u32::MAX);
    }
    match new {
        Some(new) => tokenizer::check_written(
            written,
            Some(inp.tokenizer.inner()),
            new,
            inp.source.size as u32,
        ),
        None => tokenizer::check_written(written, None, &[], u32::MAX),
    }
}

/// The ids a config value holds (an int, or a list of ints as some eos_token_ids are).
fn ids_of(v: Option<&Value>) -> Vec<u64> {
    match v {
        Some(Value::Number(n)) => n.as_u64().into_iter().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).collect(),
        _ => Vec::new(),
    }
}

/// tokenizer_config.json when a target tokenizer replaced the source's: the target's own
/// tokenizer_config.json when it has one (the model's `model_max_length` kept), else the source's
/// with each `{role}_token` the new tokenizer lacks pointed at the target's token of that role (or
/// removed), the target's other roles added, and a chat template that names a token the new
/// tokenizer lacks removed.
fn adopted_tokenizer_config(
    source: Option<Value>,
    target: Option<&Value>,
    a: &Adopted,
    ids: &HashMap<String, u32>,
) -> Value {
    let max_len = source
        .as_ref()
        .and_then(|s| s.get("model_max_length").cloned());
    if let Some(t) = target.filter(|t| t.is_object()) {
        let mut tc = t.clone();
        if let Some(m) = max_len {
            tc["model_max_length"] = m;
        }
        return tc;
    }
    let mut tc = source.filter(Value::is_object).unwrap_or_else(|| json!({}));
    for r in ROLES {
        let key = format!("{r}_token");
        let kept = tc
            .get(&key)
            .and_then(token_name)
            .is_some_and(|t| ids.contains_key(&t));
        if kept {
            continue;
        }
        match a.target_roles.get(*r) {
            Some(t) => tc[&key] = json!(t),
            None => {
                if let Some(o) = tc.as_object_mut() {
                    o.remove(&key);
                }
            }
        }
    }
    let gone: Vec<&String> = a
        .moved
        .values()
        .map(|[from, _]| from)
        .chain(&a.dropped)
        .collect();
    let stale = tc
        .get("chat_template")
        .is_some_and(|c| gone.iter().any(|t| c.to_string().contains(t.as_str())));
    if let Some(o) = tc.as_object_mut() {
        if stale {
            o.remove("chat_template");
        }
        // The source's class may be tied to its tokenizer family; the generic fast tokenizer
        // reads any tokenizer.json.
        o.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    }
    tc
}

/// As [`remap_ids`], with an id that maps to nothing made null (a list drops it).
fn remap_or_null(v: &Value, f: &dyn Fn(u64) -> Option<u64>) -> Value {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(id) => f(id).map_or(Value::Null, |x| json!(x)),
            None => v.clone(),
        },
        Value::Array(a) => {
            let kept: Vec<Value> = a
                .iter()
                .map(|x| remap_or_null(x, f))
                .filter(|x| !x.is_null())
                .collect();
            if kept.is_empty() {
                Value::Null
            } else {
                Value::Array(kept)
            }
        }
        _ => v.clone(),
    }
}

fn remap_ids(v: &Value, f: &dyn Fn(u64) -> Option<u64>) -> Option<Value> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(id) => f(id).map(|x| json!(x)),
            None => Some(v.clone()),
        },
        Value::Array(a) => a
            .iter()
            .map(|x| remap_ids(x, f))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        _ => Some(v.clone()),
    }
}

fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let p = dir.join(name);
    let f = crate::write::cancel::create_file(&p).map_err(|e| Error::io(&p, e))?;
    let mut w = std::io::BufWriter::new(&f);
    std::io::Write::write_all(&mut w, bytes).map_err(|e| Error::io(&p, e))?;
    std::io::Write::flush(&mut w).map_err(|e| Error::io(&p, e))?;
    drop(w);
    sync_side_file(&p, &f)
}

/// Syncs a side file once written. The test hook of the weights writer holds the side files
/// too (signal tests land here).
fn sync_side_file(p: &Path, f: &std::fs::File) -> Result<()> {
    f.sync_all().map_err(|e| Error::io(p, e))?;
    if let Some(pause) = crate::write::test_pause() {
        std::thread::sleep(pause);
    }
    Ok(())
}

/// Pretty JSON and a newline, streamed to the file (a tokenizer.json can be hundreds of MB).
fn write_json<T: serde::Serialize>(dir: &Path, name: &str, v: &T) -> Result<()> {
    let p = dir.join(name);
    // Created under the signal handler's lock, as every file in the temp directory.
    let f = crate::write::cancel::create_file(&p).map_err(|e| Error::io(&p, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &f);
    serde_json::to_writer_pretty(&mut w, v).map_err(|e| match e.io_error_kind() {
        Some(_) => Error::io(&p, e.into()),
        None => Error::Invalid(format!("{}: {e}", p.display())),
    })?;
    std::io::Write::write_all(&mut w, b"\n").map_err(|e| Error::io(&p, e))?;
    std::io::Write::flush(&mut w).map_err(|e| Error::io(&p, e))?;
    drop(w);
    sync_side_file(&p, &f)
}

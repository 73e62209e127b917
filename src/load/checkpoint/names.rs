//! Which tensor of a checkpoint is the word embedding, per model family. Pure: names and shapes in,
//! a choice (and the rule that made it) out.

/// One rule: a name suffix and the families it stands for. Order matters: the first rule with a
/// match decides.
pub struct Rule {
    pub suffix: &'static str,
    pub families: &'static str,
}

/// Suffixes are matched at a `.` boundary (or the whole name), so `bert.embeddings.word_embeddings.weight`
/// and `embeddings.word_embeddings.weight` both match the BERT rule, with or without a model-type prefix.
pub const RULES: &[Rule] = &[
    Rule {
        suffix: "embeddings.word_embeddings.weight",
        families: "BERT, RoBERTa, MacBERT, ERNIE, ALBERT, XLM-R, DistilBERT, ELECTRA",
    },
    Rule {
        suffix: "shared.weight",
        families: "T5, BART (shared encoder/decoder embedding)",
    },
    Rule {
        suffix: "embed_tokens.weight",
        families: "LLaMA, Qwen2, Mistral, Gemma, OPT",
    },
    Rule {
        suffix: "wte.weight",
        families: "GPT-2, Qwen (v1)",
    },
    Rule {
        suffix: "word_embeddings.weight",
        families: "BLOOM, Falcon, ChatGLM",
    },
    Rule {
        suffix: "embed_in.weight",
        families: "GPT-NeoX, Pythia",
    },
];

/// A tensor as the chooser sees it. The shape is unknown for shards not yet downloaded.
#[derive(Debug, Clone)]
pub struct TensorCandidate {
    pub name: String,
    pub shape: Option<Vec<usize>>,
}

/// The outcome: the tensor's name and why it was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub name: String,
    pub rule: String,
}

fn ends_with_at_boundary(name: &str, suffix: &str) -> bool {
    name == suffix
        || (name.len() > suffix.len()
            && name.ends_with(suffix)
            && name.as_bytes()[name.len() - suffix.len() - 1] == b'.')
}

fn is_matrix(c: &TensorCandidate) -> bool {
    c.shape.as_ref().is_none_or(|s| s.len() == 2)
}

/// Picks the word-embedding tensor: `forced` when given (it must exist), else the first rule that
/// matches exactly one 2-D tensor. A rule that matches several (an encoder and a decoder) is an
/// ambiguity; nothing matching is an error. Errors list the candidates with their shapes.
pub fn choose(candidates: &[TensorCandidate], forced: Option<&str>) -> Result<Choice, String> {
    if let Some(name) = forced {
        return match candidates.iter().find(|c| c.name == name) {
            Some(c) if is_matrix(c) => Ok(Choice {
                name: name.to_string(),
                rule: "--tensor".into(),
            }),
            Some(c) => Err(format!(
                "tensor `{name}` has shape {}, not [rows, dim]",
                fmt_shape(&c.shape)
            )),
            None => Err(format!(
                "no tensor named `{name}`; 2-D tensors: {}",
                list(candidates.iter().filter(|c| is_matrix(c)))
            )),
        };
    }
    for rule in RULES {
        let hits: Vec<&TensorCandidate> = candidates
            .iter()
            .filter(|c| is_matrix(c) && ends_with_at_boundary(&c.name, rule.suffix))
            .collect();
        match hits.len() {
            0 => continue,
            1 => {
                return Ok(Choice {
                    name: hits[0].name.clone(),
                    rule: format!("name ends in `{}` ({})", rule.suffix, rule.families),
                })
            }
            _ => {
                return Err(format!(
                    "several tensors look like the word embedding: {}; pick one with --tensor",
                    list(hits.into_iter())
                ))
            }
        }
    }
    let matrices: Vec<&TensorCandidate> = candidates.iter().filter(|c| is_matrix(c)).collect();
    if matrices.is_empty() {
        return Err("no 2-D tensor in the checkpoint, so no word embedding".into());
    }
    Err(format!(
        "no tensor has a known word-embedding name; 2-D tensors: {}; pick one with --tensor",
        list(matrices.into_iter())
    ))
}

fn list<'a>(cands: impl Iterator<Item = &'a TensorCandidate>) -> String {
    let all: Vec<String> = cands
        .map(|c| format!("{} {}", c.name, fmt_shape(&c.shape)))
        .collect();
    if all.len() > 12 {
        format!("{} ... ({} in all)", all[..12].join(", "), all.len())
    } else {
        all.join(", ")
    }
}

pub fn fmt_shape(shape: &Option<Vec<usize>>) -> String {
    match shape {
        Some(s) => format!(
            "[{}]",
            s.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "[?]".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, shape: &[usize]) -> TensorCandidate {
        TensorCandidate {
            name: name.into(),
            shape: Some(shape.to_vec()),
        }
    }

    #[test]
    fn families() {
        let cases: &[(&[&str], &str)] = &[
            (
                &[
                    "bert.embeddings.word_embeddings.weight",
                    "bert.embeddings.position_embeddings.weight",
                    "cls.predictions.decoder.weight",
                ],
                "bert.embeddings.word_embeddings.weight",
            ),
            (
                &["embeddings.word_embeddings.weight", "pooler.dense.weight"],
                "embeddings.word_embeddings.weight",
            ),
            (
                &["roberta.embeddings.word_embeddings.weight"],
                "roberta.embeddings.word_embeddings.weight",
            ),
            (
                &["distilbert.embeddings.word_embeddings.weight"],
                "distilbert.embeddings.word_embeddings.weight",
            ),
            (
                &["albert.embeddings.word_embeddings.weight"],
                "albert.embeddings.word_embeddings.weight",
            ),
            (
                &["electra.embeddings.word_embeddings.weight"],
                "electra.embeddings.word_embeddings.weight",
            ),
            (
                &["transformer.wte.weight", "transformer.wpe.weight"],
                "transformer.wte.weight",
            ),
            (&["wte.weight", "wpe.weight"], "wte.weight"),
            (
                &["model.embed_tokens.weight", "lm_head.weight"],
                "model.embed_tokens.weight",
            ),
            (
                &[
                    "shared.weight",
                    "encoder.embed_tokens.weight",
                    "decoder.embed_tokens.weight",
                ],
                "shared.weight",
            ),
            (
                &["gpt_neox.embed_in.weight", "embed_out.weight"],
                "gpt_neox.embed_in.weight",
            ),
            (
                &[
                    "transformer.word_embeddings.weight",
                    "transformer.h.0.mlp.weight",
                ],
                "transformer.word_embeddings.weight",
            ),
        ];
        for (names, want) in cases {
            let cands: Vec<TensorCandidate> = names.iter().map(|n| c(n, &[10, 4])).collect();
            assert_eq!(choose(&cands, None).unwrap().name, *want, "{names:?}");
        }
    }

    #[test]
    fn ambiguity_and_absence_list_shapes() {
        let cands = vec![
            c("encoder.embed_tokens.weight", &[10, 4]),
            c("decoder.embed_tokens.weight", &[10, 4]),
        ];
        let e = choose(&cands, None).unwrap_err();
        assert!(e.contains("encoder.embed_tokens.weight [10, 4]"), "{e}");
        assert!(e.contains("--tensor"), "{e}");
        let cands = vec![c("foo.weight", &[10, 4]), c("bar.bias", &[4])];
        let e = choose(&cands, None).unwrap_err();
        assert!(
            e.contains("foo.weight [10, 4]") && !e.contains("bar.bias"),
            "{e}"
        );
    }

    #[test]
    fn forced_name_must_exist_and_be_2d() {
        let cands = vec![c("a.weight", &[10, 4]), c("b", &[4])];
        assert_eq!(choose(&cands, Some("a.weight")).unwrap().rule, "--tensor");
        assert!(choose(&cands, Some("b"))
            .unwrap_err()
            .contains("not [rows, dim]"));
        assert!(choose(&cands, Some("zz"))
            .unwrap_err()
            .contains("no tensor named `zz`"));
    }

    #[test]
    fn suffix_needs_a_dot_boundary() {
        let cands = vec![c("xshared.weight", &[3, 2])];
        assert!(choose(&cands, None).is_err());
    }
}

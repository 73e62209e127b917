//! The facts we use from a model's config.json and tokenizer_config.json.

use crate::error::Result;
use std::path::Path;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ModelConfig {
    pub model_type: Option<String>,
    pub hidden_size: Option<u64>,
    pub vocab_size: Option<u64>,
    pub initializer_range: Option<f64>,
    /// From tokenizer_config.json.
    pub do_lower_case: Option<bool>,
}

impl ModelConfig {
    /// Reads config.json and tokenizer_config.json when present. Unknown fields are ignored;
    /// a file that is not JSON is an error naming it.
    pub fn load(config: Option<&Path>, tokenizer_config: Option<&Path>) -> Result<Self> {
        let mut c = ModelConfig::default();
        if let Some(p) = config {
            let v = crate::bounded::read_json_object(p)?;
            c.model_type = v
                .get("model_type")
                .and_then(|x| x.as_str())
                .map(String::from);
            c.hidden_size = v
                .get("hidden_size")
                .or_else(|| v.get("n_embd"))
                .or_else(|| v.get("d_model"))
                .and_then(|x| x.as_u64());
            c.vocab_size = v.get("vocab_size").and_then(|x| x.as_u64());
            // As written: the transplant judges whether it is plausible (and says so).
            c.initializer_range = v.get("initializer_range").and_then(|x| x.as_f64());
        }
        if let Some(p) = tokenizer_config {
            let v = crate::bounded::read_json_object(p)?;
            c.do_lower_case = v.get("do_lower_case").and_then(|x| x.as_bool());
        }
        Ok(c)
    }
}

//! A .safetensors file of arbitrary bytes: list its tensors, and load every 2-D float tensor the
//! way the CLI would (reading every byte of it). Errors are fine; panics are not.
#![no_main]

use embed_transplant::api::checkpoint::{self, FetchFile, Weights};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

/// A single-file checkpoint has no shards: any fetch is an error.
struct NoFetch;

impl FetchFile for NoFetch {
    fn fetch(&self, name: &str) -> embed_transplant::Result<PathBuf> {
        Err(embed_transplant::Error::Invalid(format!("no fetching in the fuzzer: {name}")))
    }
    fn local(&self, _: &str) -> Option<PathBuf> {
        None
    }
}

thread_local! {
    static DIR: tempfile::TempDir = tempfile::tempdir().expect("temp dir");
}

fuzz_target!(|data: &[u8]| {
    let path = DIR.with(|d| d.path().join("x.safetensors"));
    std::fs::write(&path, data).expect("write input");
    let weights = Weights::Safetensors(path);
    let Ok(tensors) = checkpoint::list_tensors(&weights, &NoFetch) else {
        return;
    };
    let _ = checkpoint::choose_embedding(&weights, &tensors, None);
    for t in &tensors {
        let float = matches!(
            t.dtype.to_ascii_lowercase().as_str(),
            "f32" | "f16" | "bf16" | "f64"
        );
        if !float || t.shape.as_ref().is_none_or(|s| s.len() != 2) {
            continue;
        }
        if let Ok(e) = checkpoint::load_embedding(&weights, &t.name, &NoFetch) {
            let bytes = e.bytes();
            assert_eq!(bytes.len(), e.rows * e.cols * e.dtype.size(), "{}", t.name);
            // Touch every byte, as building the new matrix would.
            std::hint::black_box(bytes.iter().fold(0u8, |a, b| a ^ b));
        }
    }
});

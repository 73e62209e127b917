//! A PyTorch .bin of arbitrary bytes (zip or legacy stream): parse it, then read every tensor and
//! load every 2-D one through the public checkpoint API. Errors are fine; panics, hangs and
//! unbounded allocations are not.
#![no_main]

use embed_transplant::api::checkpoint::{self, FetchFile, PthFile, Weights};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

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
    let path = DIR.with(|d| d.path().join("x.bin"));
    std::fs::write(&path, data).expect("write input");
    let Ok(pth) = PthFile::open(&path) else {
        return;
    };
    for entry in &pth.entries {
        if let Ok(bytes) = pth.read(entry) {
            let want: usize = entry.shape.iter().product::<usize>()
                * entry.dtype.map(|d| d.size()).unwrap_or(0);
            assert_eq!(bytes.len(), want, "{}", entry.name);
        }
    }
    let weights = Weights::Pytorch(path);
    if let Ok(tensors) = checkpoint::list_tensors(&weights, &NoFetch) {
        for t in tensors.iter().filter(|t| t.shape.as_ref().is_some_and(|s| s.len() == 2)) {
            let _ = checkpoint::load_embedding(&weights, &t.name, &NoFetch);
        }
    }
});

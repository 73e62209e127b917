//! End-to-end tests of the `embed-transplant` binary, one test binary: each test runs it in its own
//! temp dir with a cleaned environment (own HF_HOME, no token, no proxy), against the fixtures and a
//! fake hub on 127.0.0.1. Nothing here reaches the internet.

#[path = "../common/fake_hub.rs"]
mod fake_hub;

mod artefacts;
mod common;
mod donor;
mod errors;
mod finetune;
mod formats;
mod hostile;
mod hub;
mod inspect;
mod model_out;
mod plot;
mod safety;
mod score;
mod signals;
mod target_tokenizer;
mod transplant;
mod vectors;

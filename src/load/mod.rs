//! Reading: the model's files resolved through the hub or from disk ([`hub`]), the one embedding
//! tensor from a checkpoint ([`checkpoint`]), vocabularies ([`vocab`]), static word vectors
//! ([`vectors`]), config.json's few fields ([`model_config`]) and labelled text ([`labelled`]).

pub mod checkpoint;
pub mod hub;
pub mod labelled;
pub mod model_config;
pub mod vectors;
pub mod vocab;

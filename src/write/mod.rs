//! Everything the tool writes. Each output file or directory is staged under a temp name beside
//! its target, and all of a run's outputs are renamed into place together: a target holds its old
//! content or the complete new one at every instant, and a run that fails leaves no new file.
//!
//! - [`safetensors`]: the header bytes (tensors with a sorted `__metadata__`, so the same inputs
//!   give the same bytes).
//! - [`target`]: the output rules: no output is, holds or lies inside an input ([`Inputs`]),
//!   `--force` replaces a directory only when it is empty or ours.
//! - [`batch`]: staging and the commit ([`Batch`]; a directory swapped in one step).
//! - [`temp`]: temp names that carry their owner, swept by the next run.
//! - [`cancel`]: a signal removes the temp files and ends the run.

mod batch;
pub mod cancel;
mod safetensors;
mod target;
mod temp;

pub(crate) use batch::{test_pause, Batch};
pub(crate) use safetensors::{header, Entry, TensorOut};
pub(crate) use target::{same_path, DirTarget, Inputs, Target};

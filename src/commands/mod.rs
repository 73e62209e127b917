//! One module per subcommand; each takes its validated config and returns what happened.

pub mod transplant;

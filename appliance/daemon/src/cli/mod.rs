//! Subcommands other than `run`.

pub(crate) mod setup;
pub(crate) mod status;

//! Subcommands other than `run`.

pub(crate) mod export;
pub(crate) mod setup;
pub(crate) mod status;

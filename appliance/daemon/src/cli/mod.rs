//! Subcommands other than `run`.

pub(crate) mod setup;

//! fieldmesh's durable state: one SQLite file under the state directory, opened in WAL mode,
//! with an ordered list of migrations tracked by `PRAGMA user_version`.
//!
//! This crate knows tables, not protocols: it stores rows the daemon hands it and gives them
//! back typed. Times are Unix milliseconds chosen by the caller, so tests pick their own clock.

mod allocations;
mod bindings;
mod db;
mod error;
mod messages;
mod migrations;
mod voicemail;

pub use allocations::AllocationRow;
pub use bindings::BindingRow;
pub use db::Db;
pub use error::StoreError;
pub use messages::MessageRow;
pub use voicemail::VoicemailRow;

//! Errors at the store's boundary.

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created or is not writable.
    #[error("state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// SQLite refused (disk full, corrupt file, locked by another process).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer fieldmesh whose schema this one does not know.
    #[error("database schema version {found} is newer than this fieldmesh supports ({supported})")]
    TooNew { found: u32, supported: u32 },
}

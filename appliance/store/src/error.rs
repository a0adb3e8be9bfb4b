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
    /// An export was asked to a path it must not write: one that exists (an export never
    /// overwrites), or one SQLite cannot name (not UTF-8).
    #[error("cannot export the database to {path}: {why}")]
    ExportTarget { path: PathBuf, why: &'static str },
}

impl StoreError {
    /// The disk (or the page limit set with [`crate::Db::set_max_pages`]) is full: the write
    /// was refused, what was stored before is intact, and freeing space lets writes resume. A
    /// caller answers "no room" rather than "broken".
    pub fn is_full(&self) -> bool {
        match self {
            StoreError::Sqlite(e) => e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
            StoreError::Dir { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            StoreError::TooNew { .. } | StoreError::ExportTarget { .. } => false,
        }
    }
}

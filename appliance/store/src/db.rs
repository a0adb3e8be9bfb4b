//! Opening the database: directory, WAL, durability settings, migrations.

use crate::error::StoreError;
use crate::migrations::MIGRATIONS;
use rusqlite::Connection;
use std::path::{Path, PathBuf};

/// The appliance's database.
pub struct Db {
    pub(crate) conn: Connection,
    path: PathBuf,
}

impl Db {
    /// File name inside the state directory.
    pub const FILE: &'static str = "fieldmesh.db";

    /// Opens (creating if needed) the database in `dir`, which is created too.
    pub fn open(dir: &Path) -> Result<Db, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(Self::FILE);
        let mut conn = Connection::open(&path)?;
        // WAL survives kill -9 on its own; FULL makes each commit reach the disk before we
        // acknowledge it. Messages (and later voicemail) write with FULL; bindings switch to
        // NORMAL for their own commits (bindings.rs), as the register-rate benchmark showed
        // the fsync dominating a REGISTER's cost.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        migrate(&mut conn)?;
        Ok(Db { conn, path })
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version this build writes (the number of migrations it knows).
    pub fn supported_version() -> u32 {
        MIGRATIONS.len() as u32
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let supported = MIGRATIONS.len() as u32;
    if version > supported {
        return Err(StoreError::TooNew {
            found: version,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as u32)?;
        tx.commit()?;
    }
    Ok(())
}

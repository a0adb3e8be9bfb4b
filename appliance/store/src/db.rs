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
        // acknowledge it. Messages and voicemail write with FULL; bindings switch to
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

    /// Caps the database at `pages` pages (of 4 KiB by default) for this connection, so
    /// recordings cannot fill the SD card the system also needs; a write past the cap fails
    /// with [`StoreError::is_full`]. SQLite never sets it below the current size (so 0 caps
    /// the database where it is) nor above `u32::MAX - 1`: the cap in effect is returned.
    pub fn set_max_pages(&mut self, pages: u32) -> Result<u32, StoreError> {
        // SQLite reads 0 as a question ("what is the cap?"), not as a cap.
        let pages = pages.clamp(1, u32::MAX - 1);
        let mut in_effect = 0;
        self.conn
            .pragma_update_and_check(None, "max_page_count", pages, |r| {
                in_effect = r.get(0)?;
                Ok(())
            })?;
        Ok(in_effect)
    }

    /// Writes a consistent copy of the whole database to the new file `to` while it stays in
    /// use (a snapshot of the last commit, WAL included), and syncs it before returning.
    pub fn export(&mut self, to: &Path) -> Result<(), StoreError> {
        let refuse = |why| StoreError::ExportTarget {
            path: to.to_path_buf(),
            why,
        };
        // VACUUM INTO would also refuse a non-empty file, but accepts an empty one and says
        // only "output file already exists" in the other case.
        if to.symlink_metadata().is_ok() {
            return Err(refuse("it already exists"));
        }
        let target = to.to_str().ok_or_else(|| refuse("the path is not UTF-8"))?;
        // The copy is written with the connection's synchronous level: FULL makes it reach
        // the disk before we report success (bindings may have left it at NORMAL).
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        self.conn.execute("VACUUM INTO ?1", [target])?;
        Ok(())
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

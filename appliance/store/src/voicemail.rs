//! Voicemail: recordings left for an extension, kept until the owner deletes them or they
//! expire. Saving and deleting commit with `synchronous = FULL` like messages (`messages.rs`):
//! a caller was told the recording was kept, and a deletion forgotten by a power cut would
//! bring the voicemail back from a neighbour's replica.

use crate::db::Db;
use crate::error::StoreError;
use rusqlite::{OptionalExtension, params};

/// One stored voicemail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoicemailRow {
    /// Unique id (deduplicates replicas; remembered after deletion).
    pub id: String,
    pub aor: String,
    /// The caller's From header value as it was written.
    pub from_hdr: String,
    /// When it was left, as text to show (RFC 2822 style, as given).
    pub date: String,
    /// Unix milliseconds when it was recorded; orders the list and drives expiry.
    pub received_ms: i64,
    pub duration_ms: i64,
    /// The encoded recording, opaque here.
    pub audio: Vec<u8>,
    pub heard: bool,
}

impl Db {
    /// Saves a voicemail; a second save of the same id, or of one already deleted, is a no-op
    /// (replicas arriving late from neighbours).
    pub fn save_voicemail(&mut self, v: &VoicemailRow) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        self.conn.execute(
            "INSERT OR IGNORE INTO voicemail
                 (id, aor, from_hdr, date, received_ms, duration_ms, audio, heard)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
             WHERE NOT EXISTS (SELECT 1 FROM delivered WHERE id = ?1)",
            params![
                v.id,
                v.aor,
                v.from_hdr,
                v.date,
                v.received_ms,
                v.duration_ms,
                v.audio,
                v.heard
            ],
        )?;
        Ok(())
    }

    /// Voicemails for `aor`, newest first. Replicas can arrive after younger recordings, so
    /// the recording time orders them, and arrival only breaks ties.
    pub fn voicemails(&mut self, aor: &str) -> Result<Vec<VoicemailRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, aor, from_hdr, date, received_ms, duration_ms, audio, heard
             FROM voicemail WHERE aor = ?1 ORDER BY received_ms DESC, seq DESC",
        )?;
        let rows = stmt.query_map(params![aor], |r| {
            Ok(VoicemailRow {
                id: r.get(0)?,
                aor: r.get(1)?,
                from_hdr: r.get(2)?,
                date: r.get(3)?,
                received_ms: r.get(4)?,
                duration_ms: r.get(5)?,
                audio: r.get(6)?,
                heard: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many voicemails `aor` has not heard yet, and has heard.
    pub fn voicemail_counts(&mut self, aor: &str) -> Result<(u64, u64), StoreError> {
        Ok(self.conn.query_row(
            "SELECT count(*) FILTER (WHERE heard = 0), count(*) FILTER (WHERE heard != 0)
             FROM voicemail WHERE aor = ?1",
            params![aor],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// Marks a voicemail heard; returns its extension if it was here and new.
    pub fn voicemail_heard(&mut self, id: &str) -> Result<Option<String>, StoreError> {
        // A heard mark lost to a power cut only shows the voicemail as new again.
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let aor = self
            .conn
            .query_row(
                "UPDATE voicemail SET heard = 1 WHERE id = ?1 AND heard = 0 RETURNING aor",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(aor)
    }

    /// Deletes a voicemail and remembers its id, so no replica brings it back; the id is
    /// remembered even if the voicemail was not here (deleted through another appliance).
    /// Returns the AOR it belonged to, if it was here.
    pub fn delete_voicemail(
        &mut self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<String>, StoreError> {
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = self.conn.transaction()?;
        let aor = tx
            .query_row(
                "DELETE FROM voicemail WHERE id = ?1 RETURNING aor",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute(
            "INSERT OR IGNORE INTO delivered (id, at_ms, kind) VALUES (?1, ?2, 'voicemail')",
            params![id, now_ms],
        )?;
        tx.commit()?;
        Ok(aor)
    }

    /// Drops voicemails recorded before `before_ms` (and deletion memories as old); returns
    /// how many voicemails went.
    pub fn expire_voicemail(&mut self, before_ms: i64) -> Result<usize, StoreError> {
        self.conn.execute(
            "DELETE FROM delivered WHERE kind = 'voicemail' AND at_ms < ?1",
            params![before_ms],
        )?;
        Ok(self.conn.execute(
            "DELETE FROM voicemail WHERE received_ms < ?1",
            params![before_ms],
        )?)
    }

    /// Every stored message and voicemail as (id, AOR, `"message"` or `"voicemail"`), messages
    /// first, each in arrival order: what this appliance holds, for the status API.
    pub fn stored_ids(&mut self) -> Result<Vec<(String, String, &'static str)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, aor, 0 AS kind, seq FROM messages
             UNION ALL
             SELECT id, aor, 1 AS kind, seq FROM voicemail
             ORDER BY kind, seq",
        )?;
        let rows = stmt.query_map([], |r| {
            let kind = if r.get::<_, i64>(2)? == 0 {
                "message"
            } else {
                "voicemail"
            };
            Ok((r.get(0)?, r.get(1)?, kind))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The ids most recently delivered or deleted here, newest first (at most `limit`): told
    /// to neighbours, so a holder that was cut off when it happened drops its copy.
    pub fn gone_ids(&mut self, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM delivered ORDER BY at_ms DESC, rowid DESC LIMIT ?1")?;
        let rows = stmt.query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            r.get(0)
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

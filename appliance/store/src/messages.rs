//! Store-and-forward messages: what a MESSAGE for an unreachable phone becomes until a phone
//! of that extension answers 2xx. Written with `synchronous = FULL` (see `db.rs`): a `202` is
//! only sent after the commit returned, so an acknowledged message survives kill -9.

use crate::db::Db;
use crate::error::StoreError;
use rusqlite::params;

/// One stored message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageRow {
    /// Unique id (deduplicates deliveries and replicas).
    pub id: String,
    pub aor: String,
    /// The From and To header values as the sender wrote them.
    pub from_hdr: String,
    pub to_hdr: String,
    pub content_type: String,
    pub body: Vec<u8>,
    /// The Date to deliver with (the sender's, or when we accepted it).
    pub date: String,
    /// Unix milliseconds when it was accepted.
    pub received_ms: i64,
}

impl Db {
    /// Saves a message; a second save of the same id, or of one already delivered, is a no-op
    /// (replicas, retransmissions, late fetch answers).
    pub fn save_message(&mut self, m: &MessageRow) -> Result<(), StoreError> {
        // Acknowledged data: the commit must reach the disk before the 202 goes out.
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        self.conn.execute(
            "INSERT OR IGNORE INTO messages (id, aor, from_hdr, to_hdr, content_type, body, date, received_ms)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
             WHERE NOT EXISTS (SELECT 1 FROM delivered WHERE id = ?1)",
            params![m.id, m.aor, m.from_hdr, m.to_hdr, m.content_type, m.body, m.date, m.received_ms],
        )?;
        Ok(())
    }

    /// Messages waiting for `aor`, oldest first.
    pub fn pending_messages(&mut self, aor: &str) -> Result<Vec<MessageRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, aor, from_hdr, to_hdr, content_type, body, date, received_ms
             FROM messages WHERE aor = ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![aor], |r| {
            Ok(MessageRow {
                id: r.get(0)?,
                aor: r.get(1)?,
                from_hdr: r.get(2)?,
                to_hdr: r.get(3)?,
                content_type: r.get(4)?,
                body: r.get(5)?,
                date: r.get(6)?,
                received_ms: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A phone answered 2xx (here or on another appliance): the message leaves the store and
    /// its id is remembered, so no copy of it is ever delivered again.
    pub fn message_delivered(&mut self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        // A delivery forgotten by a power cut would deliver the message twice.
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM messages WHERE id = ?1", params![id])?;
        tx.execute(
            "INSERT OR IGNORE INTO delivered (id, at_ms) VALUES (?1, ?2)",
            params![id, now_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// How many messages wait for `aor`, and in all.
    pub fn message_counts(&mut self, aor: &str) -> Result<(u64, u64), StoreError> {
        let for_aor = self.conn.query_row(
            "SELECT count(*) FROM messages WHERE aor = ?1",
            params![aor],
            |r| r.get(0),
        )?;
        let total = self
            .conn
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;
        Ok((for_aor, total))
    }

    /// Drops messages accepted before `before_ms` (and delivery memories as old); returns how
    /// many messages went.
    pub fn expire_messages(&mut self, before_ms: i64) -> Result<usize, StoreError> {
        self.conn.execute(
            "DELETE FROM delivered WHERE kind = 'message' AND at_ms < ?1",
            params![before_ms],
        )?;
        Ok(self.conn.execute(
            "DELETE FROM messages WHERE received_ms < ?1",
            params![before_ms],
        )?)
    }
}

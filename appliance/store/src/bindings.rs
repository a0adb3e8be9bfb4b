//! Registrar bindings and recently seen extensions.

use crate::db::Db;
use crate::error::StoreError;
use rusqlite::params;

/// One binding as stored. Addresses are kept as text (`ip:port`) and transports as their
/// names, so the table reads well in `sqlite3` during an incident.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingRow {
    pub aor: String,
    pub contact: String,
    pub q: u16,
    /// Unix milliseconds when the binding expires.
    pub expires_ms: i64,
    pub call_id: String,
    pub cseq: u32,
    pub instance: Option<String>,
    pub transport: String,
    pub local: String,
    pub remote: String,
    pub source: String,
    /// The display name the phone gave, for the operator's directory.
    pub display_name: Option<String>,
    /// Unix milliseconds when the phone first registered; 0 when unknown (rows written before
    /// migration 5).
    pub since_ms: i64,
}

impl Db {
    /// One REGISTER's effect on `aor` in a single transaction: remove `removed` contacts,
    /// upsert `saved` rows, and note the extension as seen at `now_ms`.
    pub fn save_registration(
        &mut self,
        aor: &str,
        removed: &[String],
        saved: &[BindingRow],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        // Bindings commit without waiting for fsync (STYLE §4): WAL alone survives kill -9, and
        // a binding lost to a power cut heals at the phone's next refresh. The fsync was most of
        // the CPU cost of a REGISTER in the register-rate benchmark.
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let tx = self.conn.transaction()?;
        {
            let mut delete =
                tx.prepare_cached("DELETE FROM bindings WHERE aor = ?1 AND contact = ?2")?;
            for contact in removed {
                delete.execute(params![aor, contact])?;
            }
            let mut upsert = tx.prepare_cached(
                "INSERT OR REPLACE INTO bindings
                 (aor, contact, q, expires_ms, call_id, cseq, instance, transport, local, remote, source,
                  display_name, since_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?;
            for b in saved {
                upsert.execute(params![
                    b.aor,
                    b.contact,
                    b.q,
                    b.expires_ms,
                    b.call_id,
                    b.cseq,
                    b.instance,
                    b.transport,
                    b.local,
                    b.remote,
                    b.source,
                    b.display_name,
                    b.since_ms
                ])?;
            }
            tx.prepare_cached(
                "INSERT INTO extensions (aor, last_seen_ms) VALUES (?1, ?2)
                 ON CONFLICT (aor) DO UPDATE SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
            )?
            .execute(params![aor, now_ms])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes bindings of `aor` by contact (expired ones).
    pub fn remove_bindings(&mut self, aor: &str, contacts: &[String]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut delete =
                tx.prepare_cached("DELETE FROM bindings WHERE aor = ?1 AND contact = ?2")?;
            for contact in contacts {
                delete.execute(params![aor, contact])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Bindings still valid at `now_ms`; expired ones are deleted on the way.
    pub fn live_bindings(&mut self, now_ms: i64) -> Result<Vec<BindingRow>, StoreError> {
        self.conn.execute(
            "DELETE FROM bindings WHERE expires_ms <= ?1",
            params![now_ms],
        )?;
        let mut stmt = self.conn.prepare(
            "SELECT aor, contact, q, expires_ms, call_id, cseq, instance, transport, local, remote, source,
                    display_name, since_ms
             FROM bindings ORDER BY aor, contact",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(BindingRow {
                aor: r.get(0)?,
                contact: r.get(1)?,
                q: r.get(2)?,
                expires_ms: r.get(3)?,
                call_id: r.get(4)?,
                cseq: r.get(5)?,
                instance: r.get(6)?,
                transport: r.get(7)?,
                local: r.get(8)?,
                remote: r.get(9)?,
                source: r.get(10)?,
                display_name: r.get(11)?,
                since_ms: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Extensions seen since `since_ms`, with when; older ones are forgotten on the way.
    pub fn known_extensions(&mut self, since_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        self.conn.execute(
            "DELETE FROM extensions WHERE last_seen_ms < ?1",
            params![since_ms],
        )?;
        let mut stmt = self
            .conn
            .prepare("SELECT aor, last_seen_ms FROM extensions ORDER BY aor")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

//! Extensions handed out by "give me a free extension": kept so the same number is not handed
//! out again while its new owner may still be setting up the phone.

use crate::db::Db;
use crate::error::StoreError;
use rusqlite::params;

/// One handed-out extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocationRow {
    pub extension: String,
    /// The display name asked for (may be empty).
    pub name: String,
    /// Unix milliseconds when it was handed out.
    pub at_ms: i64,
}

impl Db {
    /// Records `extension` as handed out at `at_ms`; `false` if it already was since
    /// `forget_before_ms` (and is kept as it was). Allocations older than that are forgotten
    /// first. Durable before it returns: the number is then shown to a person.
    pub fn allocate(
        &mut self,
        extension: &str,
        name: &str,
        at_ms: i64,
        forget_before_ms: i64,
    ) -> Result<bool, StoreError> {
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        self.conn
            .prepare_cached("DELETE FROM allocations WHERE at_ms < ?1")?
            .execute(params![forget_before_ms])?;
        let added = self
            .conn
            .prepare_cached(
                "INSERT INTO allocations (extension, name, at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (extension) DO NOTHING",
            )?
            .execute(params![extension, name, at_ms])?;
        Ok(added == 1)
    }

    /// Extensions handed out since `since_ms`, oldest first.
    pub fn allocations(&mut self, since_ms: i64) -> Result<Vec<AllocationRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT extension, name, at_ms FROM allocations WHERE at_ms >= ?1 ORDER BY at_ms",
        )?;
        let rows = stmt.query_map(params![since_ms], |r| {
            Ok(AllocationRow {
                extension: r.get(0)?,
                name: r.get(1)?,
                at_ms: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extension_is_handed_out_once_and_survives_reopening() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut db = Db::open(dir.path()).expect("open");
        assert!(db.allocate("2001", "Ana", 1_000, 0).expect("first"));
        assert!(!db.allocate("2001", "Bo", 2_000, 0).expect("second"));
        drop(db);
        let mut db = Db::open(dir.path()).expect("reopen");
        let kept = db.allocations(0).expect("list");
        assert_eq!(
            kept,
            vec![AllocationRow {
                extension: "2001".into(),
                name: "Ana".into(),
                at_ms: 1_000
            }]
        );
        assert!(db.allocations(1_001).expect("recent").is_empty());
        // Once it is older than the reservation, the number can be handed out again.
        assert!(db.allocate("2001", "Bo", 9_000, 5_000).expect("again"));
        assert_eq!(db.allocations(0).expect("list")[0].name, "Bo");
    }
}

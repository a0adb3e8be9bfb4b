//! What the SIP core saves, as a narrow synchronous trait (the shape of libp2p-kad's
//! `RecordStore`). The rule: the core answers `2xx` only after the call returned `Ok`; a failed
//! write becomes a `500` and nothing is acknowledged. The daemon implements it over SQLite;
//! [`MemoryStorage`] serves the tests.

use crate::location::BindingRecord;

/// A write that did not reach durable storage.
#[derive(Debug, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StorageError(pub String);

/// Durable state the SIP core writes.
pub trait Storage {
    /// One REGISTER's effect on one AOR, atomically: `removed` contacts go, `saved` ones are
    /// inserted or replaced (keyed by AOR and contact), and the extension is marked as seen.
    fn save_registration(
        &mut self,
        aor: &str,
        removed: &[String],
        saved: &[BindingRecord],
    ) -> Result<(), StorageError>;

    /// Bindings that expired and were dropped from the location service.
    fn remove_expired(&mut self, aor: &str, contacts: &[String]) -> Result<(), StorageError>;
}

/// Storage in memory, for tests; `fail` makes every write fail.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    pub bindings: Vec<BindingRecord>,
    pub seen: Vec<String>,
    pub fail: bool,
}

impl Storage for MemoryStorage {
    fn save_registration(
        &mut self,
        aor: &str,
        removed: &[String],
        saved: &[BindingRecord],
    ) -> Result<(), StorageError> {
        if self.fail {
            return Err(StorageError("disk full (test)".into()));
        }
        self.bindings.retain(|b| {
            b.aor != aor
                || !(removed.contains(&b.contact) || saved.iter().any(|s| s.contact == b.contact))
        });
        self.bindings.extend(saved.iter().cloned());
        if !self.seen.iter().any(|s| s == aor) {
            self.seen.push(aor.to_string());
        }
        Ok(())
    }

    fn remove_expired(&mut self, aor: &str, contacts: &[String]) -> Result<(), StorageError> {
        self.bindings
            .retain(|b| b.aor != aor || !contacts.contains(&b.contact));
        Ok(())
    }
}

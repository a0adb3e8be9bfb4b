//! What the SIP core saves, as a narrow synchronous trait (the shape of libp2p-kad's
//! `RecordStore`). The rule: the core answers `2xx` only after the call returned `Ok`; a failed
//! write becomes a `500` and nothing is acknowledged. The daemon implements it over SQLite;
//! [`MemoryStorage`] serves the tests.

use crate::location::BindingRecord;
use crate::messaging::StoredMessage;
use crate::voicemail::StoredVoicemail;

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

    /// Keeps a message for an extension that cannot take it now. Must be durable on `Ok`:
    /// the sender is told `202` right after.
    fn save_message(&mut self, message: &StoredMessage) -> Result<(), StorageError>;

    /// Messages waiting for `aor`, oldest first.
    fn pending_messages(&mut self, aor: &str) -> Result<Vec<StoredMessage>, StorageError>;

    /// A phone answered 2xx: forget the message.
    fn message_delivered(&mut self, id: &str) -> Result<(), StorageError>;

    /// Waiting messages for `aor` and in all (for the caps).
    fn message_counts(&mut self, aor: &str) -> Result<(u64, u64), StorageError>;

    /// Keeps a voice message (recorded here or a replica). Durable on `Ok`; a voicemail
    /// deleted before never comes back.
    fn save_voicemail(&mut self, voicemail: &StoredVoicemail) -> Result<(), StorageError>;

    /// The mailbox of `aor`, newest first.
    fn voicemails(&mut self, aor: &str) -> Result<Vec<StoredVoicemail>, StorageError>;

    /// (new, heard) voice messages of `aor`.
    fn voicemail_counts(&mut self, aor: &str) -> Result<(u64, u64), StorageError>;

    /// Marks a voicemail heard; returns its extension if it was here and new.
    fn voicemail_heard(&mut self, id: &str) -> Result<Option<String>, StorageError>;

    /// Deletes a voicemail for good (remembering its id); returns its extension if it was here.
    fn delete_voicemail(&mut self, id: &str) -> Result<Option<String>, StorageError>;
}

/// Storage in memory, for tests; `fail` makes every write fail.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    pub bindings: Vec<BindingRecord>,
    pub messages: Vec<StoredMessage>,
    pub seen: Vec<String>,
    pub voicemails: Vec<StoredVoicemail>,
    /// Ids of deleted voicemails and delivered messages: never stored again.
    pub gone: Vec<String>,
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

    fn save_message(&mut self, message: &StoredMessage) -> Result<(), StorageError> {
        if self.fail {
            return Err(StorageError("disk full (test)".into()));
        }
        if !self.messages.iter().any(|m| m.id == message.id) {
            self.messages.push(message.clone());
        }
        Ok(())
    }

    fn pending_messages(&mut self, aor: &str) -> Result<Vec<StoredMessage>, StorageError> {
        Ok(self
            .messages
            .iter()
            .filter(|m| m.aor == aor)
            .cloned()
            .collect())
    }

    fn message_delivered(&mut self, id: &str) -> Result<(), StorageError> {
        self.messages.retain(|m| m.id != id);
        Ok(())
    }

    fn message_counts(&mut self, aor: &str) -> Result<(u64, u64), StorageError> {
        let mine = self.messages.iter().filter(|m| m.aor == aor).count() as u64;
        Ok((mine, self.messages.len() as u64))
    }

    fn save_voicemail(&mut self, voicemail: &StoredVoicemail) -> Result<(), StorageError> {
        if self.fail {
            return Err(StorageError("disk full (test)".into()));
        }
        if !self.gone.contains(&voicemail.id)
            && !self.voicemails.iter().any(|v| v.id == voicemail.id)
        {
            self.voicemails.push(voicemail.clone());
        }
        Ok(())
    }

    fn voicemails(&mut self, aor: &str) -> Result<Vec<StoredVoicemail>, StorageError> {
        Ok(self
            .voicemails
            .iter()
            .rev()
            .filter(|v| v.aor == aor)
            .cloned()
            .collect())
    }

    fn voicemail_counts(&mut self, aor: &str) -> Result<(u64, u64), StorageError> {
        let mine = self.voicemails.iter().filter(|v| v.aor == aor);
        let heard = mine.clone().filter(|v| v.heard).count() as u64;
        Ok((mine.count() as u64 - heard, heard))
    }

    fn voicemail_heard(&mut self, id: &str) -> Result<Option<String>, StorageError> {
        Ok(self
            .voicemails
            .iter_mut()
            .find(|v| v.id == id && !v.heard)
            .map(|v| {
                v.heard = true;
                v.aor.clone()
            }))
    }

    fn delete_voicemail(&mut self, id: &str) -> Result<Option<String>, StorageError> {
        if self.fail {
            return Err(StorageError("disk full (test)".into()));
        }
        if !self.gone.iter().any(|g| g == id) {
            self.gone.push(id.to_string());
        }
        let aor = self
            .voicemails
            .iter()
            .find(|v| v.id == id)
            .map(|v| v.aor.clone());
        self.voicemails.retain(|v| v.id != id);
        Ok(aor)
    }
}

//! sip's `Storage` over store's `Db`: the one place that knows both. Relative expiries and ages
//! from the core become Unix times on disk, and back again at start, because the core has no
//! wall clock.

use sip::{BindingRecord, StorageError, Transport};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use store::{BindingRow, Db, MessageRow, VoicemailRow};

/// What the core gets back at start: live bindings, and extensions with how much longer each
/// stays known.
pub(crate) struct Restored {
    pub(crate) bindings: Vec<BindingRecord>,
    pub(crate) known: Vec<(String, Duration)>,
}

/// SQLite-backed storage for the SIP core.
pub(crate) struct SqlStorage {
    db: Db,
    /// How long messages and voicemails wait for their extension.
    keep_ms: i64,
}

impl SqlStorage {
    pub(crate) fn new(db: Db, keep: Duration) -> Self {
        SqlStorage {
            db,
            keep_ms: i64::try_from(keep.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Every message and voicemail kept here: (id, extension, kind).
    pub(crate) fn stored(&mut self) -> Vec<(String, String, &'static str)> {
        self.db.stored_ids().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "stored items unreadable");
            Vec::new()
        })
    }

    /// Ids recently delivered or deleted here (newest first, bounded), for the inventory.
    pub(crate) fn gone(&mut self) -> Vec<String> {
        self.db.gone_ids(2000).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "delivered ids unreadable");
            Vec::new()
        })
    }

    /// Bindings and recently seen extensions to put back into the core at start.
    pub(crate) fn restore(&mut self, known_for: Duration) -> Result<Restored, store::StoreError> {
        let now = now_ms();
        let bindings = self
            .db
            .live_bindings(now)?
            .into_iter()
            .filter_map(|row| record(row, now))
            .collect();
        let known_ms = i64::try_from(known_for.as_millis()).unwrap_or(i64::MAX);
        let known = self
            .db
            .known_extensions(now.saturating_sub(known_ms))?
            .into_iter()
            .map(|(aor, seen)| {
                let left = (seen.saturating_add(known_ms)).saturating_sub(now).max(0);
                (aor, Duration::from_millis(left as u64))
            })
            .collect();
        Ok(Restored { bindings, known })
    }
}

impl sip::Storage for SqlStorage {
    fn save_registration(
        &mut self,
        aor: &str,
        removed: &[String],
        saved: &[BindingRecord],
    ) -> Result<(), StorageError> {
        let now = now_ms();
        let rows: Vec<BindingRow> = saved.iter().map(|r| row(r, now)).collect();
        self.db
            .save_registration(aor, removed, &rows, now)
            .map_err(|e| StorageError(e.to_string()))
    }

    fn remove_expired(&mut self, aor: &str, contacts: &[String]) -> Result<(), StorageError> {
        self.db
            .remove_bindings(aor, contacts)
            .map_err(|e| StorageError(e.to_string()))
    }

    fn save_message(&mut self, m: &sip::StoredMessage) -> Result<(), StorageError> {
        let now = now_ms();
        // Messages nobody collected in a week are dropped (issue 6's default).
        let _ = self.db.expire_messages(now.saturating_sub(self.keep_ms));
        let row = MessageRow {
            id: m.id.clone(),
            aor: m.aor.clone(),
            from_hdr: m.from.clone(),
            to_hdr: m.to.clone(),
            content_type: m.content_type.clone(),
            body: m.body.to_vec(),
            // The sender's Date if it gave one, else when we accepted it: the recipient sees
            // when the message was written, not when it finally arrived.
            date: m
                .date
                .clone()
                .unwrap_or_else(|| httpdate::fmt_http_date(SystemTime::now())),
            received_ms: now,
        };
        self.db
            .save_message(&row)
            .map_err(|e| StorageError(e.to_string()))
    }

    fn pending_messages(&mut self, aor: &str) -> Result<Vec<sip::StoredMessage>, StorageError> {
        let rows = self
            .db
            .pending_messages(aor)
            .map_err(|e| StorageError(e.to_string()))?;
        Ok(rows
            .into_iter()
            .map(|r| sip::StoredMessage {
                id: r.id,
                aor: r.aor,
                from: r.from_hdr,
                to: r.to_hdr,
                content_type: r.content_type,
                body: r.body.into(),
                date: Some(r.date),
            })
            .collect())
    }

    fn message_delivered(&mut self, id: &str) -> Result<(), StorageError> {
        self.db
            .message_delivered(id, now_ms())
            .map_err(|e| StorageError(e.to_string()))
    }

    fn message_counts(&mut self, aor: &str) -> Result<(u64, u64), StorageError> {
        self.db
            .message_counts(aor)
            .map_err(|e| StorageError(e.to_string()))
    }

    fn save_voicemail(&mut self, v: &sip::StoredVoicemail) -> Result<(), StorageError> {
        let now = now_ms();
        let _ = self.db.expire_voicemail(now.saturating_sub(self.keep_ms));
        let row = VoicemailRow {
            id: v.id.clone(),
            aor: v.aor.clone(),
            from_hdr: v.from.clone(),
            date: v.date.clone(),
            // When it was recorded (a replica may arrive long after): the mailbox is played
            // newest first, and expiry counts from the recording.
            received_ms: httpdate::parse_http_date(&v.date)
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_millis()).ok())
                .unwrap_or(now),
            duration_ms: i64::try_from(v.duration_ms).unwrap_or(i64::MAX),
            audio: v.audio.to_vec(),
            heard: v.heard,
        };
        self.db.save_voicemail(&row).map_err(error)
    }

    fn voicemails(&mut self, aor: &str) -> Result<Vec<sip::StoredVoicemail>, StorageError> {
        let rows = self.db.voicemails(aor).map_err(error)?;
        Ok(rows
            .into_iter()
            .map(|r| sip::StoredVoicemail {
                id: r.id,
                aor: r.aor,
                from: r.from_hdr,
                date: r.date,
                duration_ms: u64::try_from(r.duration_ms).unwrap_or(0),
                audio: r.audio.into(),
                heard: r.heard,
            })
            .collect())
    }

    fn voicemail_counts(&mut self, aor: &str) -> Result<(u64, u64), StorageError> {
        self.db.voicemail_counts(aor).map_err(error)
    }

    fn voicemail_heard(&mut self, id: &str) -> Result<Option<String>, StorageError> {
        self.db.voicemail_heard(id).map_err(error)
    }

    fn delete_voicemail(&mut self, id: &str) -> Result<Option<String>, StorageError> {
        self.db.delete_voicemail(id, now_ms()).map_err(error)
    }
}

/// A store error for the core; a full disk says so, for the log line and the 503.
fn error(e: store::StoreError) -> StorageError {
    if e.is_full() {
        StorageError(format!("disk full: {e}"))
    } else {
        StorageError(e.to_string())
    }
}

fn row(r: &BindingRecord, now: i64) -> BindingRow {
    BindingRow {
        aor: r.aor.clone(),
        contact: r.contact.clone(),
        q: r.q,
        expires_ms: now.saturating_add(i64::try_from(r.expires_in.as_millis()).unwrap_or(i64::MAX)),
        call_id: r.call_id.clone(),
        cseq: r.cseq,
        instance: r.instance.clone(),
        transport: match r.transport {
            Transport::Udp => "udp".into(),
            Transport::Tcp => "tcp".into(),
        },
        local: r.local.to_string(),
        remote: r.remote.to_string(),
        source: r.source.to_string(),
        display_name: r.display_name.clone(),
        since_ms: now
            .saturating_sub(i64::try_from(r.registered_for.as_millis()).unwrap_or(i64::MAX)),
    }
}

/// A stored row back as a record; rows that do not parse (hand-edited files) are skipped with
/// a log line rather than stopping the appliance.
fn record(row: BindingRow, now: i64) -> Option<BindingRecord> {
    let parsed = (|| {
        Some(BindingRecord {
            transport: match row.transport.as_str() {
                "udp" => Transport::Udp,
                "tcp" => Transport::Tcp,
                _ => return None,
            },
            local: row.local.parse().ok()?,
            remote: row.remote.parse().ok()?,
            source: row.source.parse().ok()?,
            expires_in: Duration::from_millis(row.expires_ms.saturating_sub(now).max(0) as u64),
            aor: row.aor.clone(),
            contact: row.contact.clone(),
            q: row.q,
            call_id: row.call_id.clone(),
            cseq: row.cseq,
            instance: row.instance.clone(),
            display_name: row.display_name.clone(),
            // 0: a row from before migration 5, when nobody noted it (registered "now").
            registered_for: match row.since_ms {
                0 => Duration::ZERO,
                since => Duration::from_millis(now.saturating_sub(since).max(0) as u64),
            },
        })
    })();
    if parsed.is_none() {
        tracing::warn!(aor = %row.aor, contact = %row.contact, "unreadable stored binding skipped");
    }
    parsed
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip::Storage as _;

    const KEEP: Duration = Duration::from_secs(3600);

    fn open(dir: &std::path::Path) -> SqlStorage {
        SqlStorage::new(Db::open(dir).expect("open"), KEEP)
    }

    fn binding_record(display_name: Option<&str>, registered_for: Duration) -> BindingRecord {
        let phone = "10.0.1.2:5070".parse().expect("addr");
        BindingRecord {
            aor: "201".into(),
            contact: "sip:201@10.0.1.2:5070".into(),
            q: 1000,
            expires_in: Duration::from_secs(300),
            call_id: "c1".into(),
            cseq: 1,
            instance: None,
            transport: Transport::Udp,
            local: "10.0.0.1:5060".parse().expect("addr"),
            remote: phone,
            source: phone,
            display_name: display_name.map(str::to_string),
            registered_for,
        }
    }

    #[test]
    fn display_name_and_age_survive_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let saved = binding_record(Some("Ana Lima"), Duration::from_secs(90));
        open(dir.path())
            .save_registration("201", &[], std::slice::from_ref(&saved))
            .expect("save");

        let restored = open(dir.path()).restore(KEEP).expect("restore");
        let [back] = restored.bindings.as_slice() else {
            panic!("one binding, got {:?}", restored.bindings)
        };
        assert_eq!(back.display_name.as_deref(), Some("Ana Lima"));
        // Wall-clock time passes between the save and the restore; the age only grows.
        assert!(
            back.registered_for >= Duration::from_secs(90)
                && back.registered_for < Duration::from_secs(150),
            "{:?}",
            back.registered_for
        );
    }

    #[test]
    fn a_row_from_before_since_was_kept_restores_as_registered_now() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut row = row(&binding_record(None, Duration::ZERO), now_ms());
        row.since_ms = 0;
        Db::open(dir.path())
            .expect("open")
            .save_registration("201", &[], &[row], now_ms())
            .expect("save");

        let restored = open(dir.path()).restore(KEEP).expect("restore");
        let [back] = restored.bindings.as_slice() else {
            panic!("one binding, got {:?}", restored.bindings)
        };
        assert_eq!(back.registered_for, Duration::ZERO);
        assert_eq!(back.display_name, None);
    }
}

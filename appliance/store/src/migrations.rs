//! The schema, as an ordered list of migrations. Each runs once, in order, inside a
//! transaction; `PRAGMA user_version` records how many have run. Never edit a released one:
//! append.

pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: registrar bindings and the extensions seen recently (404 versus 480).
    "CREATE TABLE bindings (
        aor        TEXT    NOT NULL,
        contact    TEXT    NOT NULL,
        q          INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL,
        call_id    TEXT    NOT NULL,
        cseq       INTEGER NOT NULL,
        instance   TEXT,
        transport  TEXT    NOT NULL,
        local      TEXT    NOT NULL,
        remote     TEXT    NOT NULL,
        source     TEXT    NOT NULL,
        PRIMARY KEY (aor, contact)
    );
    CREATE INDEX bindings_expiry ON bindings (expires_ms);
    CREATE TABLE extensions (
        aor          TEXT    PRIMARY KEY,
        last_seen_ms INTEGER NOT NULL
    );",
    // 2: store-and-forward messages. `seq` keeps arrival order per AOR; a message leaves the
    // table only when a phone answered 2xx (or it expired).
    "CREATE TABLE messages (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        id           TEXT    NOT NULL UNIQUE,
        aor          TEXT    NOT NULL,
        from_hdr     TEXT    NOT NULL,
        to_hdr       TEXT    NOT NULL,
        content_type TEXT    NOT NULL,
        body         BLOB    NOT NULL,
        date         TEXT    NOT NULL,
        received_ms  INTEGER NOT NULL
    );
    CREATE INDEX messages_aor ON messages (aor, seq);",
    // 3: ids of delivered messages, so a replica arriving late (from a neighbour's fetch
    // answer or an old holder) cannot bring a delivered message back: delivered once.
    "CREATE TABLE delivered (
        id    TEXT    PRIMARY KEY,
        at_ms INTEGER NOT NULL
    );",
    // 4: voicemail, newest first per AOR. Deleted voicemails leave their id in `delivered`
    // like delivered messages do; `kind` lets each expire with its own retention, since a
    // voicemail tombstone dropped at the message retention would let a holder's older replica
    // bring a deleted voicemail back.
    "CREATE TABLE voicemail (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        id          TEXT    NOT NULL UNIQUE,
        aor         TEXT    NOT NULL,
        from_hdr    TEXT    NOT NULL,
        date        TEXT    NOT NULL,
        received_ms INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        audio       BLOB    NOT NULL,
        heard       INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX voicemail_aor ON voicemail (aor, seq);
    ALTER TABLE delivered ADD COLUMN kind TEXT NOT NULL DEFAULT 'message';",
    // 5: the operator's directory: the display name a phone gave, and when it first registered
    // (Unix ms; 0 in rows written before, read back as "since the restart").
    "ALTER TABLE bindings ADD COLUMN display_name TEXT;
    ALTER TABLE bindings ADD COLUMN since_ms INTEGER NOT NULL DEFAULT 0;",
    // 6: extensions handed out by "give me a free extension" (Unix ms), so a number is not
    // handed out twice while its new owner is still setting up the phone.
    "CREATE TABLE allocations (
        extension TEXT    PRIMARY KEY,
        name      TEXT    NOT NULL,
        at_ms     INTEGER NOT NULL
    );",
];

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;
    use crate::{BindingRow, Db};

    /// A file exactly as a build with four migrations left it, with one binding in it.
    fn database_at_migration_4(dir: &std::path::Path) {
        let conn = rusqlite::Connection::open(dir.join(Db::FILE)).expect("raw open");
        for (i, sql) in MIGRATIONS[..4].iter().enumerate() {
            conn.execute_batch(sql).expect("old migration");
            conn.pragma_update(None, "user_version", i + 1)
                .expect("version");
        }
        conn.execute(
            "INSERT INTO bindings
             (aor, contact, q, expires_ms, call_id, cseq, instance, transport, local, remote, source)
             VALUES ('201', 'sip:201@10.0.1.2:5070', 1000, 9000, 'c1', 1, NULL, 'udp',
                     '10.0.0.1:5060', '10.0.1.2:5070', '10.0.1.2:5070')",
            [],
        )
        .expect("old row");
    }

    #[test]
    fn a_database_at_migration_4_upgrades_and_keeps_its_bindings() {
        let dir = tempfile::tempdir().expect("temp dir");
        database_at_migration_4(dir.path());
        let mut db = Db::open(dir.path()).expect("upgrade");
        assert_eq!(
            db.schema_version().expect("version"),
            Db::supported_version()
        );
        let old = db.live_bindings(1_000).expect("read");
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].contact, "sip:201@10.0.1.2:5070");
        assert_eq!(old[0].display_name, None, "no name before migration 5");
        assert_eq!(old[0].since_ms, 0, "0: unknown");

        let refreshed = BindingRow {
            display_name: Some("Ana Lima".into()),
            since_ms: 500,
            expires_ms: 20_000,
            ..old[0].clone()
        };
        db.save_registration("201", &[], std::slice::from_ref(&refreshed), 1_000)
            .expect("save");
        assert_eq!(db.live_bindings(1_000).expect("read"), vec![refreshed]);
    }
}

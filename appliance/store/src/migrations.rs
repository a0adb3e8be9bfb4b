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
];

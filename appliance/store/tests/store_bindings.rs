//! Real SQLite files in a temporary directory, reopened after drop.

use fieldmesh_store::{BindingRow, Db};

fn row(aor: &str, contact: &str, expires_ms: i64) -> BindingRow {
    BindingRow {
        aor: aor.into(),
        contact: contact.into(),
        q: 1000,
        expires_ms,
        call_id: "c1".into(),
        cseq: 1,
        instance: None,
        transport: "udp".into(),
        local: "127.0.0.1:5060".into(),
        remote: "127.0.0.1:5071".into(),
        source: "127.0.0.1:5071".into(),
        display_name: None,
        since_ms: 0,
    }
}

#[test]
fn bindings_survive_reopening_and_expired_ones_are_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let mut db = Db::open(&dir.path().join("state")).expect("open");
        db.save_registration(
            "alice",
            &[],
            &[row("alice", "sip:alice@127.0.0.1:5071", 10_000)],
            1_000,
        )
        .expect("save");
        db.save_registration(
            "bob",
            &[],
            &[row("bob", "sip:bob@127.0.0.1:5080", 2_000)],
            1_000,
        )
        .expect("save");
    }
    let mut db = Db::open(&dir.path().join("state")).expect("reopen");
    let live = db.live_bindings(5_000).expect("read");
    assert_eq!(live, vec![row("alice", "sip:alice@127.0.0.1:5071", 10_000)]);
    let known = db.known_extensions(0).expect("known");
    assert_eq!(
        known,
        vec![("alice".to_string(), 1_000), ("bob".to_string(), 1_000)]
    );
    assert_eq!(db.known_extensions(1_001).expect("known"), vec![]);
}

#[test]
fn display_name_and_since_round_trip_through_a_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = BindingRow {
        display_name: Some("Ana \"A\" Lima ☎".into()),
        since_ms: 1_700_000_000_123,
        ..row("201", "sip:201@10.0.1.2:5070", 1_700_000_300_000)
    };
    let anonymous = BindingRow {
        display_name: None,
        since_ms: 1_700_000_000_456,
        ..row("202", "sip:202@10.0.1.3:5070", 1_700_000_300_000)
    };
    {
        let mut db = Db::open(dir.path()).expect("open");
        db.save_registration("201", &[], std::slice::from_ref(&first), 1_700_000_000_123)
            .expect("save");
        db.save_registration(
            "202",
            &[],
            std::slice::from_ref(&anonymous),
            1_700_000_000_456,
        )
        .expect("save");
    }
    let mut db = Db::open(dir.path()).expect("reopen");
    assert_eq!(
        db.live_bindings(1_700_000_100_000).expect("read"),
        vec![first.clone(), anonymous]
    );

    // A refresh rewrites the row with what the daemon hands it: a later expiry, the same since.
    let refreshed = BindingRow {
        expires_ms: 1_700_000_360_000,
        cseq: 2,
        ..first
    };
    db.save_registration(
        "201",
        &[],
        std::slice::from_ref(&refreshed),
        1_700_000_060_000,
    )
    .expect("refresh");
    let live = db.live_bindings(1_700_000_100_000).expect("read");
    assert_eq!(live[0], refreshed);
    assert_eq!(live[0].since_ms, 1_700_000_000_123);
}

#[test]
fn a_registration_replaces_and_removes_in_one_step() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut db = Db::open(dir.path()).expect("open");
    db.save_registration("alice", &[], &[row("alice", "sip:a@1", 9_000)], 0)
        .expect("save");
    db.save_registration(
        "alice",
        &["sip:a@1".into()],
        &[row("alice", "sip:a@2", 9_000)],
        0,
    )
    .expect("save");
    let contacts: Vec<String> = db
        .live_bindings(0)
        .expect("read")
        .into_iter()
        .map(|b| b.contact)
        .collect();
    assert_eq!(contacts, vec!["sip:a@2".to_string()]);
    db.remove_bindings("alice", &["sip:a@2".into()])
        .expect("remove");
    assert!(db.live_bindings(0).expect("read").is_empty());
}

#[test]
fn a_database_from_a_newer_fieldmesh_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let db = Db::open(dir.path()).expect("open");
        assert_eq!(
            db.schema_version().expect("version"),
            Db::supported_version()
        );
    }
    let conn = rusqlite::Connection::open(dir.path().join(Db::FILE)).expect("raw open");
    conn.pragma_update(None, "user_version", 99).expect("bump");
    drop(conn);
    let err = Db::open(dir.path()).err().expect("refused");
    assert!(err.to_string().contains("newer"), "{err}");
}

//! Voicemail, export and a full disk, in real SQLite files.

use fieldmesh_store::{Db, MessageRow, VoicemailRow};

fn vm(id: &str, aor: &str, at: i64) -> VoicemailRow {
    VoicemailRow {
        id: id.into(),
        aor: aor.into(),
        from_hdr: "\"Ann\" <sip:201@x>;tag=a".into(),
        date: "Wed, 25 Nov 2026 09:00:00 GMT".into(),
        received_ms: at,
        duration_ms: 4_000 + at,
        audio: format!("opus {id}").into_bytes(),
        heard: false,
    }
}

fn msg(id: &str, aor: &str, at: i64) -> MessageRow {
    MessageRow {
        id: id.into(),
        aor: aor.into(),
        from_hdr: "<sip:201@x>;tag=a".into(),
        to_hdr: format!("<sip:{aor}@x>"),
        content_type: "text/plain".into(),
        body: format!("hello {id}").into_bytes(),
        date: "Wed, 25 Nov 2026 09:00:00 GMT".into(),
        received_ms: at,
    }
}

fn ids(rows: &[VoicemailRow]) -> Vec<&str> {
    rows.iter().map(|v| v.id.as_str()).collect()
}

#[test]
fn voicemails_are_listed_newest_first_counted_and_marked_heard() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut db = Db::open(dir.path()).expect("open");
    db.save_voicemail(&vm("v1", "303", 10)).expect("save");
    db.save_voicemail(&vm("v3", "303", 30)).expect("save");
    // A replica of an older recording arrives last: it still sorts by when it was recorded.
    db.save_voicemail(&vm("v2", "303", 20)).expect("save");
    db.save_voicemail(&vm("x1", "404", 5)).expect("save");
    db.save_voicemail(&VoicemailRow {
        audio: b"another copy".to_vec(),
        ..vm("v1", "303", 99)
    })
    .expect("a duplicate id is ignored");

    let list = db.voicemails("303").expect("list");
    assert_eq!(ids(&list), vec!["v3", "v2", "v1"]);
    assert_eq!(
        list[2],
        vm("v1", "303", 10),
        "the first copy is kept, whole"
    );
    assert_eq!(db.voicemail_counts("303").expect("counts"), (3, 0));

    assert_eq!(
        db.voicemail_heard("v2").expect("heard").as_deref(),
        Some("303")
    );
    assert_eq!(
        db.voicemail_heard("v2").expect("heard"),
        None,
        "already heard"
    );
    assert_eq!(db.voicemail_heard("nope").expect("heard"), None, "not here");
    assert_eq!(db.voicemail_counts("303").expect("counts"), (2, 1));
    assert!(db.voicemails("303").expect("list")[1].heard);
    assert_eq!(db.voicemail_counts("999").expect("counts"), (0, 0));

    db.save_message(&msg("m1", "303", 1)).expect("save");
    assert_eq!(
        db.stored_ids().expect("ids"),
        vec![
            ("m1".to_string(), "303".to_string(), "message"),
            ("v1".to_string(), "303".to_string(), "voicemail"),
            ("v3".to_string(), "303".to_string(), "voicemail"),
            ("v2".to_string(), "303".to_string(), "voicemail"),
            ("x1".to_string(), "404".to_string(), "voicemail"),
        ]
    );
}

#[test]
fn a_deleted_voicemail_never_comes_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut db = Db::open(dir.path()).expect("open");
    db.save_voicemail(&vm("v1", "303", 10)).expect("save");
    assert_eq!(
        db.delete_voicemail("v1", 100).expect("delete"),
        Some("303".to_string())
    );
    db.save_voicemail(&vm("v1", "303", 10))
        .expect("a late replica of a deleted voicemail");
    assert!(db.voicemails("303").expect("list").is_empty());

    // Deleted through another appliance before its replica got here.
    assert_eq!(db.delete_voicemail("v2", 100).expect("delete"), None);
    db.save_voicemail(&vm("v2", "303", 20)).expect("save");
    assert!(db.voicemails("303").expect("list").is_empty());
    assert!(db.stored_ids().expect("ids").is_empty());
    // Both ids are told to neighbours as gone, newest first, and the list is bounded.
    db.message_delivered("m1", 200).expect("delivered");
    assert_eq!(db.gone_ids(10).expect("gone"), vec!["m1", "v2", "v1"]);
    assert_eq!(db.gone_ids(1).expect("gone"), vec!["m1"]);
}

#[test]
fn voicemails_expire_with_their_own_retention() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut db = Db::open(dir.path()).expect("open");
    for (id, at) in [("v1", 10), ("v2", 20), ("v3", 30)] {
        db.save_voicemail(&vm(id, "303", at)).expect("save");
    }
    db.delete_voicemail("v3", 50).expect("delete");
    db.save_message(&msg("m1", "303", 10)).expect("save");

    assert_eq!(db.expire_voicemail(25).expect("expire"), 2);
    assert!(db.voicemails("303").expect("list").is_empty());
    assert_eq!(
        db.message_counts("303").expect("count"),
        (1, 1),
        "messages untouched"
    );

    // Message retention is shorter: expiring messages must not forget that v3 was deleted.
    db.expire_messages(1_000).expect("expire messages");
    db.save_voicemail(&vm("v3", "303", 30)).expect("save");
    assert!(
        db.voicemails("303").expect("list").is_empty(),
        "v3 stays deleted"
    );
    // Once older than the voicemail retention, the deletion is forgotten too.
    db.expire_voicemail(51).expect("expire");
    db.save_voicemail(&vm("v3", "303", 30)).expect("save");
    assert_eq!(ids(&db.voicemails("303").expect("list")), vec!["v3"]);
}

#[test]
fn voicemails_survive_reopening() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let mut db = Db::open(dir.path()).expect("open");
        db.save_voicemail(&vm("v1", "303", 10)).expect("save");
        db.save_voicemail(&vm("v2", "303", 20)).expect("save");
        db.voicemail_heard("v1").expect("heard");
        db.delete_voicemail("v9", 5).expect("delete");
    }
    let mut db = Db::open(dir.path()).expect("reopen");
    assert_eq!(
        db.schema_version().expect("version"),
        Db::supported_version()
    );
    let list = db.voicemails("303").expect("list");
    assert_eq!(
        list,
        vec![
            vm("v2", "303", 20),
            VoicemailRow {
                heard: true,
                ..vm("v1", "303", 10)
            }
        ]
    );
    db.save_voicemail(&vm("v9", "303", 1)).expect("save");
    assert_eq!(
        db.voicemails("303").expect("list").len(),
        2,
        "v9 stays deleted"
    );
}

#[test]
fn an_export_is_a_whole_database_that_opens_on_its_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut db = Db::open(&dir.path().join("state")).expect("open");
    db.save_message(&msg("m1", "303", 1)).expect("save");
    let big = VoicemailRow {
        audio: vec![7; 300_000],
        ..vm("v1", "303", 10)
    };
    db.save_voicemail(&big).expect("save");
    db.delete_voicemail("v0", 5).expect("delete");

    let copy_dir = dir.path().join("copy");
    std::fs::create_dir(&copy_dir).expect("copy dir");
    let to = copy_dir.join(Db::FILE);
    db.export(&to).expect("export");
    // The original stays in use.
    db.save_message(&msg("m2", "303", 2))
        .expect("save after export");

    let err = db.export(&to).expect_err("an export never overwrites");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(!err.is_full());

    let mut copy = Db::open(&copy_dir).expect("open the copy");
    assert_eq!(
        copy.schema_version().expect("version"),
        Db::supported_version()
    );
    let messages: Vec<String> = copy
        .pending_messages("303")
        .expect("read")
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(messages, vec!["m1"], "a snapshot: m2 came after");
    assert_eq!(copy.voicemails("303").expect("list"), vec![big]);
    copy.save_voicemail(&vm("v0", "303", 1)).expect("save");
    assert!(
        copy.voicemails("303")
            .expect("list")
            .iter()
            .all(|v| v.id != "v0"),
        "deletions travel with the export"
    );
}

#[test]
fn a_full_disk_refuses_writes_keeps_what_was_stored_and_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut db = Db::open(dir.path()).expect("open");
    db.save_message(&msg("m1", "303", 1)).expect("save");
    db.save_voicemail(&vm("v1", "303", 10)).expect("save");

    // Zero means "no more than now": SQLite never sets the cap below the current size.
    let cap = db.set_max_pages(0).expect("cap");
    assert!(cap > 0);
    let big = VoicemailRow {
        audio: vec![1; 200_000],
        ..vm("v2", "303", 20)
    };
    let err = db
        .save_voicemail(&big)
        .expect_err("no room for a voicemail");
    assert!(err.is_full(), "{err}");
    let long = MessageRow {
        body: vec![b'x'; 200_000],
        ..msg("m2", "303", 2)
    };
    let err = db.save_message(&long).expect_err("no room for a message");
    assert!(err.is_full(), "{err}");

    assert_eq!(
        db.voicemails("303").expect("read"),
        vec![vm("v1", "303", 10)]
    );
    assert_eq!(
        db.pending_messages("303").expect("read"),
        vec![msg("m1", "303", 1)]
    );

    assert!(db.set_max_pages(u32::MAX).expect("lift") > cap);
    db.save_voicemail(&big).expect("room again");
    db.save_message(&long).expect("room again");
    assert_eq!(ids(&db.voicemails("303").expect("read")), vec!["v2", "v1"]);
    assert_eq!(db.message_counts("303").expect("count"), (2, 2));
}

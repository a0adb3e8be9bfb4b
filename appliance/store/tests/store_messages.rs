//! Store-and-forward messages in a real SQLite file.

use fieldmesh_store::{Db, MessageRow};

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

#[test]
fn messages_survive_reopening_in_order_and_leave_when_delivered() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let mut db = Db::open(dir.path()).expect("open");
        for (i, id) in ["m1", "m2", "m3"].iter().enumerate() {
            db.save_message(&msg(id, "303", i as i64)).expect("save");
        }
        db.save_message(&msg("m2", "303", 9))
            .expect("a duplicate id is ignored");
        db.save_message(&msg("x1", "404", 0)).expect("save");
    }
    let mut db = Db::open(dir.path()).expect("reopen");
    let ids: Vec<String> = db
        .pending_messages("303")
        .expect("read")
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, vec!["m1", "m2", "m3"]);
    assert_eq!(db.message_counts("303").expect("count"), (3, 4));
    db.message_delivered("m1", 5).expect("delivered");
    db.save_message(&msg("m1", "303", 6))
        .expect("a late replica of a delivered message");
    assert_eq!(db.pending_messages("303").expect("read").len(), 2);
    // m1 (at 0) was delivered; of the rest only x1 (at 0) is older than 1 ms.
    assert_eq!(db.expire_messages(1).expect("expire"), 1);
    assert_eq!(db.message_counts("404").expect("count"), (0, 2));
}

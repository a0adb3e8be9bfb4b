//! Bindings survive a power cut (issue 3): they live in SQLite under the state directory.

use fieldmesh_tests::node::Node;
use fieldmesh_tests::sipp::{self, Sipp};
use std::time::Duration;

#[test]
fn after_kill_9_and_restart_a_call_reaches_bob_without_him_registering_again() {
    let mut node = Node::start();
    let bob = Sipp::new("uas_proxy")
        .timeout(Duration::from_secs(25))
        .spawn();
    sipp::register(node.sip, "bob", bob.port());
    assert_eq!(
        node.bound_aors(),
        vec!["bob".to_string()],
        "before the restart"
    );

    node.kill9();
    node.restart();
    let status = node.status();
    let contact = format!("127.0.0.1:{}", bob.port());
    let kept = status["bindings"]
        .as_array()
        .expect("bindings array")
        .iter()
        .any(|b| b["aor"] == "bob" && b["contact"].as_str().is_some_and(|c| c.contains(&contact)));
    assert!(
        kept,
        "bob's binding ({contact}) is gone after kill -9 and restart: {status}"
    );

    Sipp::new("uac_proxy")
        .to(node.sip)
        .service("bob")
        .pause_ms(200)
        .run()
        .expect_success(1);
    bob.wait().expect_success(1);
}

/// `fieldmesh export` (issue 6): a copy taken while the appliance runs restores it. The copy
/// is put in place of the database of a stopped appliance, which then knows bob again; an
/// export over an existing file is refused with a message naming it.
#[test]
fn an_export_taken_while_running_restores_the_bindings() {
    let mut node = Node::start();
    sipp::register(node.sip, "bob", 5999);
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = dir.path().join("backup.db");
    let export = |out: &std::path::Path| {
        std::process::Command::new(Node::binary())
            .arg("export")
            .arg("--state-dir")
            .arg(&node.state_dir)
            .arg("--out")
            .arg(out)
            .output()
            .expect("run fieldmesh export")
    };
    let done = export(&copy);
    assert!(
        done.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    let bytes = std::fs::read(&copy).expect("the copy exists");
    assert!(
        bytes.starts_with(b"SQLite format 3\0"),
        "not an SQLite file"
    );
    let again = export(&copy);
    let why = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success(),
        "a second export overwrote the copy"
    );
    assert!(
        why.contains("backup.db"),
        "the refusal does not name the file: {why}"
    );

    // A new appliance on the same state directory, with the copy as its database.
    let (status, _) = node.terminate();
    assert!(status.success());
    for f in ["fieldmesh.db", "fieldmesh.db-wal", "fieldmesh.db-shm"] {
        let _ = std::fs::remove_file(node.state_dir.join(f));
    }
    std::fs::copy(&copy, node.state_dir.join("fieldmesh.db")).expect("restore the copy");
    node.restart();
    assert_eq!(
        node.bound_aors(),
        vec!["bob".to_string()],
        "after restoring the export"
    );
}

/// A tmpfs mounted for one test, unmounted when dropped (also when the test fails).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount tmpfs (needs root): {status}");
        SmallDisk { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fills what is left with a file (bounded by the tmpfs size); returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Issue 6, bad input: the disk fills up. Messages are then refused with `503` and Retry-After
/// (never a 202 for what is not on disk), with a log line; nothing acknowledged before is lost,
/// and once space returns messages are accepted again and everything is delivered.
#[test]
fn a_full_disk_refuses_messages_with_503_and_recovers_when_space_returns() {
    let disk = SmallDisk::mount("2m");
    let mut node = Node::start_with(fieldmesh_tests::node::NodeOptions {
        state_dir: Some(disk.path().join("state")),
        ..Default::default()
    });
    // Some messages are on disk before it fills.
    Sipp::new("message")
        .to(node.sip)
        .service("ivy")
        .calls(5)
        .rate(50)
        .run()
        .expect_success(5);
    let filler = disk.fill();
    let sent = Sipp::new("message")
        .to(node.sip)
        .service("ivy")
        .calls(300)
        .rate(100)
        .timeout(Duration::from_secs(20))
        .recv_timeout(Duration::from_secs(2))
        .run();
    let answers = sent.received();
    // One final answer per Call-ID (sipp logs retransmitted answers again).
    let mut seen = std::collections::HashSet::new();
    let finals: Vec<&String> = answers
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 ") && !m.starts_with("SIP/2.0 1"))
        .filter(|m| seen.insert(sipp::header(m, "Call-ID").unwrap_or("").to_string()))
        .collect();
    let accepted = finals
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 202"))
        .count();
    let refused: Vec<&&String> = finals
        .iter()
        .filter(|m| m.starts_with("SIP/2.0 503"))
        .collect();
    eprintln!(
        "disk full: {accepted} accepted (room left in the WAL), {} refused with 503",
        refused.len()
    );
    assert!(!refused.is_empty(), "no 503 once the disk was full");
    assert_eq!(
        accepted + refused.len(),
        finals.len(),
        "only 202 or 503: {finals:?}"
    );
    for r in &refused {
        assert!(sipp::header(r, "Retry-After").is_some(), "{r}");
    }
    assert!(
        node.log_text().contains("message not stored"),
        "a log line says why"
    );

    // Space returns: new messages are accepted again, and the phone gets every one acked.
    std::fs::remove_file(filler).expect("free the space");
    Sipp::new("message")
        .to(node.sip)
        .service("ivy")
        .calls(2)
        .rate(50)
        .run()
        .expect_success(2);
    let total = 5 + accepted + 2;
    // And a restart finds the database intact.
    node.kill9();
    node.restart();
    let ivy = Sipp::new("uas_message")
        .calls(total as u32)
        .timeout(Duration::from_secs(60))
        .spawn();
    sipp::register(node.sip, "ivy", ivy.port());
    ivy.wait().expect_success(total as u64);
    assert!(!node.log_text().contains("panicked"));
}

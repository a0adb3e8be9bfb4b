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

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

//! Issue 6, stories 1 and 3 (messages): a MESSAGE for an extension that is away is answered
//! 202 on appliance A and replicated; A then dies for good (kill -9, state deleted); the
//! extension's phone registers on C and still receives every message, in order, once.

use fieldmesh_tests::lab::{Lab, wait_neighbours};
use fieldmesh_tests::node::NodeOptions;
use fieldmesh_tests::wait::wait_for;
use std::time::{Duration, Instant};

#[test]
fn messages_accepted_by_an_appliance_that_then_dies_reach_the_phone_on_another_in_order_once() {
    let lab = Lab::new("messages-replicas");
    let apps = ["a", "b", "c"].map(|n| lab.appliance(n));
    let [a, _b, c] = &apps;
    let mut nodes = apps
        .each_ref()
        .map(|x| lab.start_node(x, NodeOptions::default()));
    wait_neighbours(&nodes.each_ref(), Duration::from_secs(10));

    // X on A writes to 303, whose phone is nowhere: each message is answered 202 (sipp's
    // message scenario accepts 202 as success).
    a.caller("message")
        .service("303")
        .calls(3)
        .rate(5)
        .run()
        .expect_success(3);
    // Each message went to two other appliances before A goes.
    wait_for(
        "A to replicate 3 messages to 2 holders each",
        Duration::from_secs(10),
        || {
            nodes[0].log_text().matches("message replicated").count() == 3
                && nodes[0].log_text().matches("holders=2").count() == 3
        },
    );

    // A is gone for good: killed, its state directory deleted.
    nodes[0].kill9();
    std::fs::remove_dir_all(&nodes[0].state_dir).expect("delete A's state");

    // 303's phone registers on C and receives all three, in order, and nothing twice.
    let t = Instant::now();
    let inbox = c
        .phone("uas_message")
        .calls(3)
        .timeout(Duration::from_secs(30))
        .spawn();
    c.register("303", inbox.port(), 300);
    let got = inbox.wait();
    got.expect_success(3);
    eprintln!(
        "3 stored messages delivered on C {:?} after the registration",
        t.elapsed()
    );
    let bodies: Vec<String> = got
        .received()
        .iter()
        .filter(|m| m.starts_with("MESSAGE "))
        .filter_map(|m| m.lines().last().map(|l| l.trim().to_string()))
        .collect();
    assert_eq!(
        bodies,
        vec![
            "hello 1 from sipp",
            "hello 2 from sipp",
            "hello 3 from sipp"
        ]
    );
    // C and B keep nothing for 303 any more.
    std::thread::sleep(Duration::from_millis(500));
    for node in &nodes[1..] {
        let log = node.log_text();
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// Issue 6, story 5: a message accepted on A while C (where the recipient's phone lives) is cut
/// off is delivered to that phone after the partition heals, when the phone next registers.
#[test]
fn a_message_accepted_during_a_partition_reaches_the_phone_after_the_heal() {
    use fieldmesh_tests::lab::wait_peer_gone;
    let lab = Lab::new("messages-partition");
    let apps = ["a", "b", "c"].map(|n| lab.appliance(n));
    let [a, _b, c] = &apps;
    let nodes = apps
        .each_ref()
        .map(|x| lab.start_node(x, NodeOptions::default()));
    wait_neighbours(&nodes.each_ref(), Duration::from_secs(10));
    let inbox = c
        .phone("uas_message")
        .calls(1)
        .timeout(Duration::from_secs(60))
        .spawn();
    let port = inbox.port();
    c.register("404", port, 300);

    // C is cut off; once A has noticed, A's phone writes to 404.
    lab.link_down(c);
    let c_id = nodes[2].peer_id();
    wait_peer_gone(&[&nodes[0]], &c_id, Instant::now(), Duration::from_secs(15));
    a.caller("message").service("404").run().expect_success(1);
    assert!(
        nodes[0]
            .log_text()
            .contains("message stored for later delivery"),
        "A stored it"
    );

    // The link comes back; at its next refresh the phone on C gets the message.
    lab.link_up(c);
    wait_neighbours(&nodes.each_ref(), Duration::from_secs(15));
    c.register("404", port, 300);
    inbox.wait().expect_success(1);
}

/// Ids of the messages kept on `node` for `aor`, from the status API's `stored`.
fn stored_messages(node: &fieldmesh_tests::node::Node, aor: &str) -> Vec<String> {
    node.status()["stored"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["aor"] == aor && s["kind"] == "message")
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect()
}

/// Issue 6, story 3 (replica count): with four appliances, a message accepted by A is kept on
/// A and two others. A is removed for good; once it has been gone for
/// `store.restore_after_secs`, one remaining holder copies the message to the fourth
/// appliance, so it is on 1 + k = 3 appliances again (status API). The phone then gets it
/// once, and no copy is left anywhere.
#[test]
fn when_a_holder_is_gone_for_good_the_others_restore_the_replica_count() {
    const RESTORE_AFTER_SECS: u64 = 4;
    let lab = Lab::new("messages-restore");
    let apps = ["a", "b", "c", "d"].map(|n| lab.appliance(n));
    let a = &apps[0];
    let mut nodes = apps.each_ref().map(|x| {
        lab.start_node(
            x,
            NodeOptions {
                config_toml: Some(format!(
                    "[store]\nrestore_after_secs = {RESTORE_AFTER_SECS}\n"
                )),
                ..NodeOptions::default()
            },
        )
    });
    wait_neighbours(&nodes.each_ref(), Duration::from_secs(10));

    a.caller("message").service("303").run().expect_success(1);
    wait_for(
        "A to replicate to 2 holders",
        Duration::from_secs(10),
        || nodes[0].log_text().contains("holders=2"),
    );
    let id = stored_messages(&nodes[0], "303")
        .pop()
        .expect("A keeps the message it accepted");
    let holders = |nodes: &[fieldmesh_tests::node::Node]| -> Vec<String> {
        nodes
            .iter()
            .filter(|n| stored_messages(n, "303").contains(&id))
            .map(|n| n.label.clone())
            .collect()
    };
    let before = holders(&nodes[..]);
    assert_eq!(before.len(), 3, "A and two replicas: {before:?}");
    // The count is met: for a few inventory rounds nothing is copied to the fourth.
    std::thread::sleep(Duration::from_secs(RESTORE_AFTER_SECS + 2));
    assert_eq!(
        holders(&nodes[..]),
        before,
        "no copy while the count is met"
    );

    // A is gone for good.
    nodes[0].kill9();
    std::fs::remove_dir_all(&nodes[0].state_dir).expect("delete A's state");
    let t = Instant::now();
    let rest = &nodes[1..];
    wait_for(
        "the message to be on B, C and D",
        Duration::from_secs(RESTORE_AFTER_SECS * 2 + 30),
        || holders(rest).len() == 3,
    );
    eprintln!(
        "replica count back to 3 on {:?} {:?} after A died (restore_after {RESTORE_AFTER_SECS} s)",
        holders(rest),
        t.elapsed()
    );
    let restored: usize = rest
        .iter()
        .map(|n| n.log_text().matches("replica count restored").count())
        .sum();
    assert_eq!(restored, 1, "exactly one holder made the copy");

    // 303 registers on the appliance that got the new copy; it is delivered once, and every
    // copy goes.
    let d = &apps[3];
    let inbox = d
        .phone("uas_message")
        .calls(1)
        .timeout(Duration::from_secs(30))
        .spawn();
    d.register("303", inbox.port(), 300);
    inbox.wait().expect_success(1);
    wait_for("every copy to go", Duration::from_secs(10), || {
        holders(rest).is_empty()
    });
}

//! Instant messages (RFC 3428): a MESSAGE to a registered phone is relayed and the phone's 200
//! comes back (issue 3); one for an extension whose phone is away is stored, answered 202 and
//! delivered when a phone of that extension registers (issue 6).

use fieldmesh_tests::node::Node;
use fieldmesh_tests::sipp::{self, Sipp};

#[test]
fn three_messages_to_a_registered_phone_are_relayed_and_the_sender_gets_200() {
    let node = Node::start();
    let dan = Sipp::new("uas_message").calls(3).spawn();
    sipp::register(node.sip, "dan", dan.port());
    Sipp::new("message")
        .to(node.sip)
        .service("dan")
        .calls(3)
        .rate(10)
        .run()
        .expect_success(3);
    dan.wait().expect_success(3);
}

#[test]
fn messages_to_an_absent_extension_are_accepted_202_and_delivered_when_its_phone_registers() {
    let node = Node::start();
    // sipp's message scenario counts a 202 as success, like a 200.
    Sipp::new("message")
        .to(node.sip)
        .service("erin")
        .calls(3)
        .rate(10)
        .run()
        .expect_success(3);
    let erin = Sipp::new("uas_message").calls(3).spawn();
    sipp::register(node.sip, "erin", erin.port());
    let outcome = erin.wait();
    outcome.expect_success(3);
    let bodies: Vec<String> = outcome
        .received()
        .into_iter()
        .filter(|m| m.starts_with("MESSAGE "))
        .filter_map(|m| m.lines().last().map(str::to_string))
        .collect();
    assert_eq!(
        bodies.len(),
        3,
        "each stored message delivered once: {bodies:?}"
    );
}

#[test]
fn after_kill_9_every_message_answered_202_is_still_delivered() {
    let mut node = Node::start();
    Sipp::new("message")
        .to(node.sip)
        .service("fay")
        .calls(20)
        .rate(50)
        .run()
        .expect_success(20);
    node.kill9();
    node.restart();
    let fay = Sipp::new("uas_message").calls(20).spawn();
    sipp::register(node.sip, "fay", fay.port());
    fay.wait().expect_success(20);
}

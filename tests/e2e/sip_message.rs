//! Instant messages (RFC 3428, issue 3): a MESSAGE to a registered phone is relayed and the
//! phone's 200 comes back; to an extension nobody registered the node answers 404 itself.

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
fn a_message_to_an_extension_nobody_registered_gets_404() {
    let node = Node::start();
    Sipp::new("message_unknown")
        .to(node.sip)
        .service("nobody")
        .run()
        .expect_success(1);
}

//! Calls through the proxy (RFC 3261 §16, issue 3): sipp phones register, a sipp caller calls
//! them through the node, and both sides must see exactly the messages their scenario expects.

use fieldmesh_tests::node::{NO_VOICEMAIL, Node, NodeOptions};
use fieldmesh_tests::ports::free_port;
use fieldmesh_tests::sipp::{self, LOOPBACK, Sipp};
use std::time::Duration;

#[test]
fn five_calls_through_the_proxy_have_no_failed_call_and_no_unexpected_message() {
    let node = Node::start();
    let bob = Sipp::new("uas_proxy")
        .calls(5)
        .timeout(Duration::from_secs(25))
        .spawn();
    sipp::register(node.sip, "bob", bob.port());
    Sipp::new("uac_proxy")
        .to(node.sip)
        .service("bob")
        .calls(5)
        .rate(5)
        .pause_ms(500)
        .timeout(Duration::from_secs(25))
        .run()
        .expect_success(5);
    bob.wait().expect_success(5);
}

#[test]
fn a_caller_cancels_a_ringing_call_and_gets_200_for_the_cancel_and_487_for_the_invite() {
    let node = Node::start();
    let carl = Sipp::new("uas_ringing_cancel").spawn();
    sipp::register(node.sip, "carl", carl.port());
    Sipp::new("uac_cancel")
        .to(node.sip)
        .service("carl")
        .run()
        .expect_success(1);
    carl.wait().expect_success(1);
}

#[test]
fn a_call_to_an_extension_nobody_registered_gets_404() {
    let node = Node::start();
    Sipp::new("invite_unknown")
        .to(node.sip)
        .service("nobody")
        .run()
        .expect_success(1);
}

#[test]
fn a_call_to_an_extension_whose_phone_unregistered_gets_480() {
    let node = Node::start_with(NodeOptions {
        config_toml: Some(NO_VOICEMAIL.into()),
        ..NodeOptions::default()
    });
    let port = free_port(LOOPBACK);
    sipp::register(node.sip, "gone", port);
    Sipp::new("register")
        .to(node.sip)
        .service("gone")
        .key("cport", port)
        .key("expires", 0)
        .run()
        .expect_success(1);
    Sipp::new("invite_unavailable")
        .to(node.sip)
        .service("gone")
        .run()
        .expect_success(1);
}

#[test]
fn a_call_nobody_answers_gets_480_after_the_no_answer_time_and_the_phone_is_cancelled() {
    let node = Node::start_with(NodeOptions {
        config_toml: Some(format!("[sip]\nno_answer_secs = 2\n{NO_VOICEMAIL}")),
        ..NodeOptions::default()
    });
    let ivan = Sipp::new("uas_ringing_cancel").spawn();
    sipp::register(node.sip, "ivan", ivan.port());
    let caller = Sipp::new("invite_unavailable")
        .to(node.sip)
        .service("ivan")
        .run();
    caller.expect_success(1);
    eprintln!("480 after {:?} (no_answer_secs = 2)", caller.elapsed);
    // uas_ringing_cancel succeeds only after CANCEL, its 487 and the proxy's ACK for it.
    ivan.wait().expect_success(1);
}

#[test]
fn options_to_the_appliance_itself_gets_200_with_allow_accept_and_supported() {
    let node = Node::start();
    Sipp::new("options").to(node.sip).run().expect_success(1);
}

#[test]
fn a_call_over_tcp_from_a_phone_registered_over_tcp_goes_through_the_proxy() {
    let node = Node::start();
    let bob = Sipp::new("uas_proxy").tcp().spawn();
    Sipp::new("register")
        .to(node.sip)
        .tcp()
        .service("tcpbob")
        .key("cport", bob.port())
        .key("expires", 300)
        .run()
        .expect_success(1);
    Sipp::new("uac_proxy")
        .to(node.sip)
        .service("tcpbob")
        .tcp()
        .pause_ms(200)
        .run()
        .expect_success(1);
    bob.wait().expect_success(1);
}

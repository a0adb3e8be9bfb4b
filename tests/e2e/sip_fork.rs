//! Forking (RFC 3261 §16.7, §13.2.2.4, issue 3): one extension registered from two phones rings
//! both; every 2xx reaches the caller, and a branch still ringing when another answered is
//! CANCELled.

use fieldmesh_tests::node::Node;
use fieldmesh_tests::sipp::{self, Sipp, header};
use std::collections::BTreeSet;

/// Two bindings for `aor` in the status API (two phones, two REGISTER Call-IDs).
fn assert_two_bindings(node: &Node, aor: &str) {
    let status = node.status();
    let n = status["bindings"]
        .as_array()
        .expect("bindings array")
        .iter()
        .filter(|b| b["aor"] == aor)
        .count();
    assert_eq!(n, 2, "bindings of {aor}: {status}");
}

#[test]
fn when_both_phones_answer_the_caller_gets_both_2xx_and_acks_and_hangs_up_each() {
    let node = Node::start();
    let desk = Sipp::new("uas_answer").spawn();
    let mobile = Sipp::new("uas_answer").spawn();
    sipp::register(node.sip, "greg", desk.port());
    sipp::register(node.sip, "greg", mobile.port());
    assert_two_bindings(&node, "greg");

    let caller = Sipp::new("uac_fork")
        .to(node.sip)
        .service("greg")
        .pause_ms(200)
        .run();
    caller.expect_success(1);
    // Each phone saw the caller's ACK and BYE for its own 200: both 2xx reached the caller.
    desk.wait().expect_success(1);
    mobile.wait().expect_success(1);

    let tags: BTreeSet<String> = caller
        .received()
        .iter()
        .filter(|m| {
            m.starts_with("SIP/2.0 200") && header(m, "CSeq").is_some_and(|c| c.ends_with("INVITE"))
        })
        .filter_map(|m| {
            header(m, "To")?
                .split(";tag=")
                .nth(1)
                .map(|t| t.split(';').next().unwrap_or(t).to_string())
        })
        .collect();
    assert_eq!(
        tags.len(),
        2,
        "the two 200s must open two dialogs (To tags): {tags:?}\n{}",
        caller.report()
    );
}

#[test]
fn when_one_phone_answers_the_other_ringing_phone_gets_cancel() {
    let node = Node::start();
    // The desk phone rings for a second, then answers; the mobile only rings.
    let desk = Sipp::new("uas_proxy").pause_ms(1000).spawn();
    let mobile = Sipp::new("uas_ringing_cancel").spawn();
    sipp::register(node.sip, "hank", desk.port());
    sipp::register(node.sip, "hank", mobile.port());
    assert_two_bindings(&node, "hank");

    Sipp::new("uac_proxy")
        .to(node.sip)
        .service("hank")
        .pause_ms(200)
        .run()
        .expect_success(1);
    desk.wait().expect_success(1);
    // uas_ringing_cancel succeeds only after CANCEL, its 487 and the proxy's ACK for it.
    mobile.wait().expect_success(1);
}

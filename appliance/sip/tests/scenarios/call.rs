//! Calls and other requests through the proxy (RFC 3261 §16).

use crate::support::{Answer, Net};
use fieldmesh_sip::message::Message;
use std::time::Duration;

#[test]
fn a_call_to_a_registered_phone_rings_and_is_answered() {
    let mut net = Net::new(10);
    let bob = net.phone("10.0.1.3:5080", Answer::After(Duration::from_secs(2)));
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    net.register(bob, "202", "reg-b", "300");
    let invite = net.invite_text(alice, "202", "call1");
    assert_eq!(net.send_and_wait_final(alice, &invite), 200);
    assert_eq!(net.phone_ref(alice).codes(), vec![100, 180, 200]);
    let Some(Message::Request(at_bob)) = net
        .phone_ref(bob)
        .received
        .iter()
        .find(|m| matches!(m, Message::Request(r) if r.method.is("INVITE")))
    else {
        panic!("bob got no INVITE")
    };
    assert_eq!(
        fieldmesh_sip::message::print_uri(&at_bob.uri),
        "sip:202@10.0.1.3:5080",
        "R-URI is the contact"
    );
    assert_eq!(at_bob.common.vias.len(), 2, "our Via on top of alice's");
    assert_eq!(at_bob.max_forwards(), Some(69));
    let rr: Vec<&str> = at_bob.header(&ezk_sip_types::Name::RECORD_ROUTE).collect();
    assert_eq!(rr, vec!["<sip:10.0.0.1:5060;lr>"]);
    assert_eq!(
        net.endpoint.in_flight().2,
        0,
        "response contexts are gone after the call"
    );
}

#[test]
fn unknown_extension_gets_404_and_known_but_unbound_gets_480() {
    let mut net = Net::new(11);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let bob = net.phone("10.0.1.3:5080", Answer::Silent);
    let invite = net.invite_text(alice, "299", "c404");
    assert_eq!(net.send_and_wait_final(alice, &invite), 404);
    net.register(bob, "202", "reg-b", "300");
    net.register(bob, "202", "reg-b", "0");
    let invite = net.invite_text(alice, "202", "c480");
    assert_eq!(net.send_and_wait_final(alice, &invite), 480);
}

#[test]
fn message_and_unknown_methods_are_relayed_with_their_final_response() {
    let mut net = Net::new(12);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let bob = net.phone("10.0.1.3:5080", Answer::RingForever);
    net.register(bob, "202", "reg-b", "300");
    for method in ["MESSAGE", "FOO", "INFO", "SUBSCRIBE"] {
        let text = format!(
            "{method} sip:202@fieldmesh SIP/2.0\r\nVia: SIP/2.0/UDP {alice};branch=z9hG4bK{method}\r\n\
             From: <sip:201@x>;tag=f\r\nTo: <sip:202@x>\r\nCall-ID: {method}-1\r\nCSeq: 1 {method}\r\n\
             Max-Forwards: 70\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
        );
        assert_eq!(net.send_and_wait_final(alice, &text), 200, "{method}");
    }
    assert_eq!(
        net.phone_ref(bob).methods(),
        vec!["MESSAGE", "FOO", "INFO", "SUBSCRIBE"]
    );
}

#[test]
fn options_to_the_appliance_is_answered_and_other_methods_are_refused() {
    let mut net = Net::new(13);
    let a = net.phone("10.0.1.2:5070", Answer::Silent);
    let ask = |method: &str, net: &Net| {
        format!(
            "{method} sip:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK{method}o\r\nFrom: <sip:t@x>;tag=1\r\n\
             To: <sip:{p}>\r\nCall-ID: {method}-o\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            p = net.proxy
        )
    };
    let t = ask("OPTIONS", &net);
    assert_eq!(net.send_and_wait_final(a, &t), 200);
    let t = ask("BYE", &net);
    assert_eq!(net.send_and_wait_final(a, &t), 405);
    let t = ask("FOO", &net);
    assert_eq!(net.send_and_wait_final(a, &t), 501);
}

#[test]
fn max_forwards_zero_gets_483_and_a_looping_request_482() {
    let mut net = Net::new(14);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let bob = net.phone("10.0.1.3:5080", Answer::Silent);
    net.register(bob, "202", "reg-b", "300");
    let invite = net
        .invite_text(alice, "202", "mf0")
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    assert_eq!(net.send_and_wait_final(alice, &invite), 483);
    // A phone registered with the appliance's own address as contact would make us call ourselves.
    let text = format!(
        "REGISTER sip:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {alice};branch=z9hG4bKloop\r\nFrom: <sip:203@x>;tag=s\r\n\
         To: <sip:203@x>\r\nCall-ID: loop\r\nCSeq: 1 REGISTER\r\nContact: <sip:203@{p}>\r\nContent-Length: 0\r\n\r\n",
        p = net.proxy
    );
    assert_eq!(net.send_and_wait_final(alice, &text), 200);
    let invite = net.invite_text(alice, "203", "loop1");
    assert_eq!(net.send_and_wait_final(alice, &invite), 482);
}

#[test]
fn in_dialog_requests_follow_the_route_we_record() {
    let mut net = Net::new(15);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let bob = net.phone("10.0.1.3:5080", Answer::After(Duration::from_millis(100)));
    net.register(bob, "202", "reg-b", "300");
    let invite = net.invite_text(alice, "202", "dlg");
    assert_eq!(net.send_and_wait_final(alice, &invite), 200);
    let bye = format!(
        "BYE sip:phone@{bob} SIP/2.0\r\nVia: SIP/2.0/UDP {alice};branch=z9hG4bKbye\r\n\
         Route: <sip:{p};lr>\r\nFrom: <sip:caller@fieldmesh>;tag=cdlg\r\nTo: <sip:202@fieldmesh>;tag=tag5080\r\n\
         Call-ID: dlg\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        p = net.proxy
    );
    assert_eq!(net.send_and_wait_final(alice, &bye), 200);
    let Some(Message::Request(b)) = net
        .phone_ref(bob)
        .received
        .iter()
        .rev()
        .find(|m| matches!(m, Message::Request(r) if r.method.is("BYE")))
    else {
        panic!("no BYE at bob")
    };
    assert!(b.routes().is_empty(), "our Route was popped");
}

#[test]
fn a_request_pre_routed_elsewhere_gets_403_at_once() {
    let mut net = Net::new(16);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let text = format!(
        "MESSAGE sip:kumiko@example.org SIP/2.0\r\nVia: SIP/2.0/UDP {alice};branch=z9hG4bKpre\r\n\
         Route: <sip:192.0.2.77:5080;lr>\r\nFrom: <sip:201@x>;tag=f\r\nTo: <sip:kumiko@example.org>\r\n\
         Call-ID: pre\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(net.send_and_wait_final(alice, &text), 403);
}

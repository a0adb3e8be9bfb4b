//! RFC 3261 §10.3 registrar behaviour, end to end through the endpoint.

use crate::support::{Answer, Net};
use std::time::Duration;

#[test]
fn a_registration_is_answered_with_its_binding_and_capped_expires() {
    let mut net = Net::new(1);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    assert_eq!(net.register(alice, "201", "reg-a", "3600"), 200);
    let bindings = net.endpoint.bindings(net.now);
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].aor.0, "201");
    let stored = &net.endpoint.storage().bindings;
    assert_eq!(stored.len(), 1, "saved before the 200");
    assert_eq!(
        stored[0].expires_in,
        Duration::from_secs(300),
        "3600 asked, capped to 300"
    );
}

#[test]
fn a_refresh_with_the_same_call_id_replaces_the_old_binding() {
    let mut net = Net::new(2);
    let old = net.phone("10.0.1.2:5070", Answer::Silent);
    let new = net.phone("10.0.1.9:5070", Answer::Silent);
    assert_eq!(net.register(old, "201", "same-call", "300"), 200);
    assert_eq!(net.register(new, "201", "same-call", "300"), 200);
    let contacts: Vec<String> = net
        .endpoint
        .bindings(net.now)
        .iter()
        .map(|b| b.contact.clone())
        .collect();
    assert_eq!(contacts, vec!["sip:201@10.0.1.9:5070".to_string()]);
}

#[test]
fn two_phones_with_different_call_ids_both_stay_bound() {
    let mut net = Net::new(3);
    let a = net.phone("10.0.1.2:5070", Answer::Silent);
    let b = net.phone("10.0.1.3:5070", Answer::Silent);
    assert_eq!(net.register(a, "201", "call-a", "300"), 200);
    assert_eq!(net.register(b, "201", "call-b", "300"), 200);
    assert_eq!(net.endpoint.bindings(net.now).len(), 2);
}

#[test]
fn expires_zero_removes_and_star_removes_all() {
    let mut net = Net::new(4);
    let a = net.phone("10.0.1.2:5070", Answer::Silent);
    let b = net.phone("10.0.1.3:5070", Answer::Silent);
    net.register(a, "201", "call-a", "300");
    net.register(b, "201", "call-b", "300");
    assert_eq!(net.register(a, "201", "call-a", "0"), 200);
    assert_eq!(net.endpoint.bindings(net.now).len(), 1);
    let star = format!(
        "REGISTER sip:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {b};branch=z9hG4bKstar\r\nFrom: <sip:201@x>;tag=s\r\n\
         To: <sip:201@x>\r\nCall-ID: call-b\r\nCSeq: 99 REGISTER\r\nContact: *\r\nExpires: 0\r\n\
         Content-Length: 0\r\n\r\n",
        p = net.proxy
    );
    assert_eq!(net.send_and_wait_final(b, &star), 200);
    assert!(net.endpoint.bindings(net.now).is_empty());
    assert!(net.endpoint.storage().bindings.is_empty());
}

#[test]
fn register_with_star_and_other_contacts_gets_400() {
    let mut net = Net::new(5);
    let a = net.phone("10.0.1.2:5070", Answer::Silent);
    let text = format!(
        "REGISTER sip:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKs2\r\nFrom: <sip:201@x>;tag=s\r\n\
         To: <sip:201@x>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nContact: *\r\nContact: <sip:201@{a}>\r\n\
         Expires: 0\r\nContent-Length: 0\r\n\r\n",
        p = net.proxy
    );
    assert_eq!(net.send_and_wait_final(a, &text), 400);
}

#[test]
fn malformed_expires_gets_400_invalid_expires_and_short_gets_423() {
    let mut net = Net::new(6);
    let a = net.phone("10.0.1.2:5070", Answer::Silent);
    assert_eq!(net.register(a, "201", "c1", "soon"), 400);
    let last = net.phone_ref(a).received.last().expect("answer").clone();
    let fieldmesh_sip::message::Message::Response(r) = last else {
        panic!("response")
    };
    assert_eq!(r.reason, "Invalid Expires");
    assert_eq!(net.register(a, "201", "c1", "10"), 423);
    let Some(fieldmesh_sip::message::Message::Response(r)) = net.phone_ref(a).received.last()
    else {
        panic!()
    };
    assert!(r.encode().windows(15).any(|w| w == b"Min-Expires: 60"));
    assert!(net.endpoint.bindings(net.now).is_empty());
}

#[test]
fn several_contacts_with_q_values_are_all_bound() {
    let mut net = Net::new(7);
    let a = net.phone("10.0.1.2:5070", Answer::Silent);
    let text = format!(
        "REGISTER sip:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKq\r\nFrom: <sip:201@x>;tag=s\r\n\
         To: <sip:201@x>\r\nCall-ID: cq\r\nCSeq: 1 REGISTER\r\n\
         Contact: <sip:201@10.0.1.2:5070>;q=0.5, <sip:201@10.0.1.2:5072>;q=0.9\r\n\
         Expires: 120\r\nContent-Length: 0\r\n\r\n",
        p = net.proxy
    );
    assert_eq!(net.send_and_wait_final(a, &text), 200);
    let qs: Vec<u16> = net.endpoint.bindings(net.now).iter().map(|b| b.q).collect();
    assert_eq!(qs.len(), 2);
    assert!(qs.contains(&500) && qs.contains(&900));
}

#[test]
fn a_failed_store_write_is_500_and_nothing_is_bound() {
    let mut net = Net::new(8);
    net.endpoint.storage().fail = true;
    let a = net.phone("10.0.1.2:5070", Answer::Silent);
    assert_eq!(net.register(a, "201", "c1", "300"), 500);
    assert!(net.endpoint.bindings(net.now).is_empty());
}

#[test]
fn bindings_expire_and_are_swept_from_storage() {
    let mut net = Net::new(9);
    let a = net.phone("10.0.1.2:5070", Answer::Silent);
    net.register(a, "201", "c1", "60");
    net.drive_for(Duration::from_secs(70));
    assert!(net.endpoint.bindings(net.now).is_empty());
    assert!(net.endpoint.storage().bindings.is_empty());
}

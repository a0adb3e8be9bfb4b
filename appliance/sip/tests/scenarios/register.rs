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

/// A REGISTER for `user` from phone `from` with these To and From header values (the From tag
/// is added); returns the final code.
fn register_as(
    net: &mut Net,
    from: std::net::SocketAddr,
    user: &str,
    to: &str,
    from_hdr: &str,
    call_id: &str,
    cseq: u32,
) -> u16 {
    let text = format!(
        "REGISTER sip:{p} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKdn{call_id}{cseq}\r\n\
         From: {from_hdr};tag=dn{cseq}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n\
         Contact: <sip:{user}@{from}>\r\nExpires: 300\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        p = net.proxy
    );
    net.send_and_wait_final(from, &text)
}

/// The one live binding of `aor`.
fn binding_of(net: &Net, aor: &str) -> fieldmesh_sip::Binding {
    let found: Vec<_> = net
        .endpoint
        .bindings(net.now)
        .into_iter()
        .filter(|b| b.aor.0 == aor)
        .cloned()
        .collect();
    assert_eq!(found.len(), 1, "one binding of {aor}: {found:?}");
    found.into_iter().next().expect("one")
}

#[test]
fn the_display_name_comes_from_to_and_a_refresh_keeps_since() {
    let mut net = Net::new(10);
    let ana = net.phone("10.0.1.2:5070", Answer::Silent);
    let to = r#""Ana Lima" <sip:201@fieldmesh>"#;
    let from = "<sip:201@fieldmesh>";
    assert_eq!(register_as(&mut net, ana, "201", to, from, "ana", 1), 200);
    let first = binding_of(&net, "201");
    assert_eq!(first.display_name.as_deref(), Some("Ana Lima"));
    assert_eq!(
        first.since, first.registered_at,
        "a first registration starts now"
    );
    let stored = &net.endpoint.storage().bindings;
    assert_eq!(stored[0].display_name.as_deref(), Some("Ana Lima"));
    assert_eq!(stored[0].registered_for, Duration::ZERO);

    net.drive_for(Duration::from_secs(60));
    assert_eq!(register_as(&mut net, ana, "201", to, from, "ana", 2), 200);
    let refreshed = binding_of(&net, "201");
    assert_eq!(
        refreshed.since, first.since,
        "since is kept across the refresh"
    );
    assert!(
        refreshed.registered_at >= first.registered_at + Duration::from_secs(60),
        "registered_at moves with every REGISTER"
    );
    assert_eq!(refreshed.display_name.as_deref(), Some("Ana Lima"));
    let stored = &net.endpoint.storage().bindings;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].registered_for,
        refreshed.registered_at - first.since,
        "saved as an age relative to the REGISTER"
    );

    // The same phone from a new address (same Call-ID) replaces its binding and keeps since.
    let moved = net.phone("10.0.1.9:5070", Answer::Silent);
    net.drive_for(Duration::from_secs(60));
    assert_eq!(register_as(&mut net, moved, "201", to, from, "ana", 3), 200);
    let after_move = binding_of(&net, "201");
    assert_eq!(after_move.contact, "sip:201@10.0.1.9:5070");
    assert_eq!(after_move.since, first.since);

    // Another phone of the same extension is registered since its own first REGISTER.
    let desk = net.phone("10.0.1.3:5070", Answer::Silent);
    assert_eq!(register_as(&mut net, desk, "201", to, from, "desk", 1), 200);
    let other = net
        .endpoint
        .bindings(net.now)
        .into_iter()
        .find(|b| b.call_id == "desk")
        .cloned()
        .expect("the desk phone's binding");
    assert_eq!(other.since, other.registered_at);
    assert!(other.since > first.since);
}

#[test]
fn an_overlong_or_control_laden_display_name_is_cut_and_cleaned_and_still_200() {
    let mut net = Net::new(11);
    let a = net.phone("10.0.1.2:5070", Answer::Silent);
    let long = format!("\"{}\" <sip:301@fieldmesh>", "Ω".repeat(200));
    assert_eq!(
        register_as(&mut net, a, "301", &long, "<sip:301@fieldmesh>", "long", 1),
        200
    );
    assert_eq!(
        binding_of(&net, "301").display_name,
        Some("Ω".repeat(fieldmesh_sip::registrar::DISPLAY_NAME_MAX))
    );

    let b = net.phone("10.0.1.3:5070", Answer::Silent);
    let noisy = "\"\u{1b}[2J Ana\u{7}\u{0} Lima\u{7f} \" <sip:302@fieldmesh>";
    assert_eq!(
        register_as(&mut net, b, "302", noisy, "<sip:302@fieldmesh>", "noisy", 1),
        200
    );
    assert_eq!(
        binding_of(&net, "302").display_name.as_deref(),
        Some("[2J Ana Lima")
    );

    // Nothing left after cleaning: no name from To, so From's is taken.
    let c = net.phone("10.0.1.4:5070", Answer::Silent);
    let empty = "\"\u{1}\u{2} \" <sip:303@fieldmesh>";
    assert_eq!(
        register_as(
            &mut net,
            c,
            "303",
            empty,
            "Reception <sip:303@fieldmesh>",
            "empty",
            1
        ),
        200
    );
    assert_eq!(
        binding_of(&net, "303").display_name.as_deref(),
        Some("Reception")
    );

    // No display name anywhere: none.
    let d = net.phone("10.0.1.5:5070", Answer::Silent);
    assert_eq!(net.register(d, "304", "plain", "300"), 200);
    assert_eq!(binding_of(&net, "304").display_name, None);
}

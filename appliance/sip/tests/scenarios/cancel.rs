//! CANCEL (RFC 3261 §9, §16.10) and its races.

use crate::support::{Answer, Net};
use std::time::Duration;

#[test]
fn cancel_before_answer_gets_200_then_487_and_the_phone_stops_ringing() {
    let mut net = Net::new(30);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let bob = net.phone("10.0.1.3:5080", Answer::RingForever);
    net.register(bob, "202", "reg-b", "300");
    let invite = net.invite_text(alice, "202", "cx");
    net.send(alice, &invite);
    net.drive_for(Duration::from_secs(1));
    let cancel = net.cancel_text(alice, "202", "cx");
    net.send(alice, &cancel);
    net.drive();
    assert_eq!(net.phone_ref(alice).codes(), vec![100, 180, 200, 487]);
    assert_eq!(
        net.phone_ref(bob).methods(),
        vec!["INVITE", "CANCEL", "ACK"]
    );
}

#[test]
fn cancel_for_an_unknown_transaction_gets_481() {
    let mut net = Net::new(31);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let cancel = net.cancel_text(alice, "202", "nothing");
    assert_eq!(net.send_and_wait_final(alice, &cancel), 481);
}

#[test]
fn cancel_crossing_the_200_leaves_the_call_answered() {
    let mut net = Net::new(32);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    // Bob answers 20 ms after ringing; alice's CANCEL leaves 15 ms after the INVITE, so the
    // CANCEL and the 200 cross on the wire.
    let bob = net.phone("10.0.1.3:5080", Answer::After(Duration::from_millis(20)));
    net.register(bob, "202", "reg-b", "300");
    let invite = net.invite_text(alice, "202", "race");
    net.send(alice, &invite);
    net.drive_for(Duration::from_millis(30));
    let cancel = net.cancel_text(alice, "202", "race");
    net.send(alice, &cancel);
    net.drive();
    let codes = net.phone_ref(alice).codes();
    assert!(codes.contains(&200), "{codes:?}");
    assert!(!codes.contains(&487), "a final was already sent: {codes:?}");
}

#[test]
fn cancel_to_a_phone_that_never_rang_ends_the_call_at_once() {
    let mut net = Net::new(33);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let bob = net.phone("10.0.1.3:5080", Answer::Silent);
    net.register(bob, "202", "reg-b", "300");
    let invite = net.invite_text(alice, "202", "silent");
    net.send(alice, &invite);
    net.drive_for(Duration::from_millis(200));
    let cancel = net.cancel_text(alice, "202", "silent");
    net.send(alice, &cancel);
    net.drive_for(Duration::from_millis(100));
    assert_eq!(
        net.phone_ref(alice).codes(),
        vec![100, 200, 487],
        "no 32 s wait for Timer B"
    );
}

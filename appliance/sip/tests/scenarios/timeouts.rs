//! Timers under loss and silence: retransmissions, no-answer, Timer B/F.

use crate::support::{Answer, Net};
use fieldmesh_sip::Config;
use std::time::Duration;

#[test]
fn no_answer_within_the_no_answer_time_gives_480_and_cancels() {
    let config = Config {
        no_answer: Duration::from_secs(10),
        ..Config::default()
    };
    let mut net = Net::with_config(40, config);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let bob = net.phone("10.0.1.3:5080", Answer::RingForever);
    net.register(bob, "202", "reg-b", "300");
    let invite = net.invite_text(alice, "202", "na");
    net.send(alice, &invite);
    net.drive_for(Duration::from_secs(9));
    assert_eq!(net.phone_ref(alice).codes(), vec![100, 180]);
    net.drive_for(Duration::from_secs(2));
    assert_eq!(net.phone_ref(alice).codes(), vec![100, 180, 480]);
    assert!(net.phone_ref(bob).methods().contains(&"CANCEL".to_string()));
}

#[test]
fn a_dead_phone_times_out_with_408_after_timer_b() {
    let mut net = Net::new(41);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let bob = net.phone("10.0.1.3:5080", Answer::Silent);
    net.register(bob, "202", "reg-b", "300");
    let text = format!(
        "INFO sip:202@x SIP/2.0\r\nVia: SIP/2.0/UDP {alice};branch=z9hG4bKm1\r\nFrom: <sip:201@x>;tag=f\r\n\
         To: <sip:202@x>\r\nCall-ID: m-dead\r\nCSeq: 1 INFO\r\nContent-Length: 0\r\n\r\n"
    );
    net.send(alice, &text);
    net.drive_for(Duration::from_millis(31_900));
    assert!(
        net.phone_ref(alice).codes().is_empty(),
        "still trying before Timer F"
    );
    assert_eq!(
        net.phone_ref(bob).methods().len(),
        11,
        "the request and 10 retransmissions (Timer E)"
    );
    net.drive_for(Duration::from_secs(2));
    assert_eq!(net.phone_ref(alice).codes(), vec![408]);
}

#[test]
fn calls_complete_over_a_lossy_link_thanks_to_retransmissions() {
    let mut completed = 0;
    for seed in 0..20 {
        let mut net = Net::new(100 + seed);
        let alice = net.phone("10.0.1.2:5070", Answer::Silent);
        let bob = net.phone("10.0.1.3:5080", Answer::After(Duration::from_millis(300)));
        net.loss = 0.0;
        net.register(bob, "202", "reg-b", "300");
        net.loss = 0.2;
        let text = format!(
            "MESSAGE sip:202@x SIP/2.0\r\nVia: SIP/2.0/UDP {alice};branch=z9hG4bKl{seed}\r\nFrom: <sip:201@x>;tag=f\r\n\
             To: <sip:202@x>\r\nCall-ID: lossy{seed}\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
        );
        // The phone does not retransmit in this script, so resend as a UAC would (Timer E).
        for _ in 0..6 {
            net.send(alice, &text);
            net.drive_for(Duration::from_millis(600));
        }
        net.drive();
        if net.phone_ref(alice).codes().contains(&200) {
            completed += 1;
        }
        let messages = net
            .phone_ref(bob)
            .methods()
            .iter()
            .filter(|m| *m == "MESSAGE")
            .count();
        assert!(messages >= 1 || !net.phone_ref(alice).codes().contains(&200));
    }
    assert!(
        completed >= 18,
        "{completed}/20 MESSAGEs completed at 20% loss"
    );
}

#[test]
fn duplicated_requests_are_absorbed_by_the_server_transaction() {
    let mut net = Net::new(42);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let bob = net.phone("10.0.1.3:5080", Answer::Silent);
    net.register(bob, "202", "reg-b", "300");
    let text = format!(
        "MESSAGE sip:202@x SIP/2.0\r\nVia: SIP/2.0/UDP {alice};branch=z9hG4bKdup\r\nFrom: <sip:201@x>;tag=f\r\n\
         To: <sip:202@x>\r\nCall-ID: dup\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    );
    net.send(alice, &text);
    net.send(alice, &text);
    net.send(alice, &text);
    net.drive_for(Duration::from_millis(100));
    assert_eq!(
        net.phone_ref(bob).methods(),
        vec!["MESSAGE"],
        "one request forwarded, not three"
    );
}

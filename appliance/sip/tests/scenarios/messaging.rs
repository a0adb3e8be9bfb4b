//! Store-and-forward MESSAGE: stored durably and answered 202, delivered in order when the
//! extension's phone registers, never twice.

use crate::support::{Answer, Net};
use fieldmesh_sip::message::Message;
use fieldmesh_sip::{Config, Event, MessagingConfig};
use std::net::SocketAddr;
use std::time::Duration;

fn message(from: SocketAddr, to: &str, n: u32, body: &str) -> String {
    format!(
        "MESSAGE sip:{to}@fieldmesh SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKmsg{n}\r\n\
         From: <sip:201@fieldmesh>;tag=f{n}\r\nTo: <sip:{to}@fieldmesh>\r\nCall-ID: msg-{n}\r\nCSeq: 1 MESSAGE\r\n\
         Date: Wed, 25 Nov 2026 09:0{n}:00 GMT\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn bodies_received(net: &Net, phone: SocketAddr) -> Vec<String> {
    net.phone_ref(phone)
        .received
        .iter()
        .filter_map(|m| match m {
            Message::Request(r) if r.method.is("MESSAGE") => {
                Some(String::from_utf8_lossy(&r.body).into_owned())
            }
            _ => None,
        })
        .collect()
}

#[test]
fn messages_to_an_absent_extension_are_stored_then_delivered_in_order_once() {
    let mut net = Net::new(60);
    let x = net.phone("10.0.1.2:5070", Answer::Silent);
    let y = net.phone("10.0.1.3:5080", Answer::RingForever);
    for (n, body) in [(1, "first"), (2, "second"), (3, "third")] {
        let text = message(x, "303", n, body);
        assert_eq!(net.send_and_wait_final(x, &text), 202, "{body}");
    }
    assert_eq!(
        net.endpoint.storage().messages.len(),
        3,
        "on disk before each 202"
    );
    assert_eq!(net.register(y, "303", "reg-y", "300"), 200);
    net.drive();
    assert_eq!(bodies_received(&net, y), vec!["first", "second", "third"]);
    assert!(
        net.endpoint.storage().messages.is_empty(),
        "delivered messages leave the store"
    );
    // The original From and Date travel with the message.
    let Some(Message::Request(first)) = net
        .phone_ref(y)
        .received
        .iter()
        .find(|m| matches!(m, Message::Request(r) if r.method.is("MESSAGE")))
    else {
        panic!("no MESSAGE")
    };
    assert_eq!(
        first.header(&ezk_sip_types::Name::FROM).next(),
        Some("<sip:201@fieldmesh>;tag=f1")
    );
    assert_eq!(
        first.header(&ezk_sip_types::Name::DATE).next(),
        Some("Wed, 25 Nov 2026 09:01:00 GMT")
    );
    // A second registration delivers nothing again.
    net.register(y, "303", "reg-y", "300");
    net.drive();
    assert_eq!(bodies_received(&net, y).len(), 3);
    let delivered = net
        .events
        .iter()
        .filter(|e| matches!(e, Event::MessageDelivered { .. }))
        .count();
    assert_eq!(delivered, 3);
}

#[test]
fn a_phone_too_slow_to_answer_gets_the_message_stored_and_a_late_200_marks_it_delivered() {
    let mut net = Net::new(61);
    let x = net.phone("10.0.1.2:5070", Answer::Silent);
    let y = net.phone("10.0.1.3:5080", Answer::Silent);
    net.register(y, "303", "reg-y", "300");
    let text = message(x, "303", 1, "slow");
    net.send(x, &text);
    net.drive_for(Duration::from_millis(5100));
    assert_eq!(
        net.phone_ref(x).codes(),
        vec![202],
        "stored after 5 s, well before Timer F"
    );
    assert_eq!(net.endpoint.storage().messages.len(), 1);
    // The phone finally answers the (retransmitted) MESSAGE.
    let Some(Message::Request(at_y)) = net.phone_ref(y).received.last().cloned() else {
        panic!("nothing at y")
    };
    let ok = crate::support::response(&at_y, 200, "OK", "late", y);
    net.send(y, &ok);
    net.drive_for(Duration::from_millis(100));
    assert!(
        net.endpoint.storage().messages.is_empty(),
        "the late 200 marked it delivered"
    );
}

#[test]
fn a_full_mailbox_is_480_and_a_failing_disk_is_503_with_retry_after() {
    let config = Config {
        messaging: MessagingConfig {
            per_aor_cap: 2,
            ..MessagingConfig::default()
        },
        ..Config::default()
    };
    let mut net = Net::with_config(62, config);
    let x = net.phone("10.0.1.2:5070", Answer::Silent);
    for n in 1..=2 {
        let text = message(x, "303", n, "hi");
        assert_eq!(net.send_and_wait_final(x, &text), 202);
    }
    let text = message(x, "303", 3, "one too many");
    assert_eq!(net.send_and_wait_final(x, &text), 480);
    let Some(Message::Response(r)) = net.phone_ref(x).received.last() else {
        panic!()
    };
    assert_eq!(r.reason, "Mailbox Full");
    net.endpoint.storage().fail = true;
    let text = message(x, "304", 4, "disk full");
    assert_eq!(net.send_and_wait_final(x, &text), 503);
    let Some(Message::Response(r)) = net.phone_ref(x).received.last() else {
        panic!()
    };
    assert!(
        r.encode().windows(12).any(|w| w == b"Retry-After:"),
        "a 503 says when to retry"
    );
}

#[test]
fn an_oversized_message_body_gets_413() {
    let config = Config {
        messaging: MessagingConfig {
            max_body: 10,
            ..MessagingConfig::default()
        },
        ..Config::default()
    };
    let mut net = Net::with_config(63, config);
    let x = net.phone("10.0.1.2:5070", Answer::Silent);
    let text = message(x, "303", 1, "this body is longer than ten bytes");
    assert_eq!(net.send_and_wait_final(x, &text), 413);
    assert!(net.endpoint.storage().messages.is_empty());
}

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

/// The From header of the first MESSAGE `phone` received.
fn first_message_from(net: &Net, phone: SocketAddr) -> Option<String> {
    net.phone_ref(phone).received.iter().find_map(|m| match m {
        Message::Request(r) if r.method.is("MESSAGE") => r
            .header(&ezk_sip_types::Name::FROM)
            .next()
            .map(str::to_string),
        _ => None,
    })
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

/// The notices the endpoint asked the daemon to send, in order.
fn notices(net: &Net) -> Vec<fieldmesh_sip::DeliveryNotice> {
    net.events
        .iter()
        .filter_map(|e| match e {
            Event::MessageDelivered {
                notice: Some(n), ..
            } => Some(n.clone()),
            _ => None,
        })
        .collect()
}

/// Sends the notices as the daemon does, at a fixed time of day.
fn send_notices(net: &mut Net) {
    for notice in notices(net) {
        net.command(fieldmesh_sip::Command::SendNotice {
            notice,
            at: "14:02".into(),
            datetime: "2026-11-25T14:02:00+00:00".into(),
        });
    }
    net.drive();
}

/// MESSAGE requests `phone` received, as (Content-Type, body).
fn messages_at(net: &Net, phone: SocketAddr) -> Vec<(String, String)> {
    net.phone_ref(phone)
        .received
        .iter()
        .filter_map(|m| match m {
            Message::Request(r) if r.method.is("MESSAGE") => Some((
                r.header(&ezk_sip_types::Name::CONTENT_TYPE)
                    .next()
                    .unwrap_or("")
                    .to_string(),
                String::from_utf8_lossy(&r.body).into_owned(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn the_sender_of_a_stored_message_is_told_when_it_was_delivered() {
    let mut net = Net::new(63);
    let x = net.phone("10.0.1.2:5070", Answer::RingForever);
    let y = net.phone("10.0.1.3:5080", Answer::RingForever);
    assert_eq!(net.register(x, "201", "reg-x", "300"), 200);
    assert_eq!(
        net.send_and_wait_final(x, &message(x, "303", 1, "water at the school")),
        202
    );
    assert!(notices(&net).is_empty(), "nothing delivered yet");
    net.register(y, "303", "reg-y", "300");
    net.drive();
    let told = notices(&net);
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].sender, "sip:201@fieldmesh");
    assert_eq!(told[0].aor, "303");
    send_notices(&mut net);
    let at_x = messages_at(&net, x);
    assert_eq!(
        at_x,
        vec![(
            "text/plain;charset=utf-8".to_string(),
            "Delivered to 303 at 14:02 (\"water at the school\")".to_string()
        )]
    );
    // The notice came from the appliance, and telling 201 stored nothing.
    let notice_from = first_message_from(&net, x).expect("a notice");
    assert!(
        notice_from.starts_with("\"fieldmesh\" <sip:fieldmesh@fieldmesh>"),
        "{notice_from}"
    );
    assert!(net.endpoint.storage().messages.is_empty());
    assert_eq!(
        net.phone_ref(x).codes(),
        vec![200, 202],
        "x saw no stray response"
    );
}

#[test]
fn a_notice_for_an_absent_sender_is_stored_for_it_and_begets_no_notice_itself() {
    let mut net = Net::new(64);
    let x = net.phone("10.0.1.2:5070", Answer::RingForever);
    let y = net.phone("10.0.1.3:5080", Answer::RingForever);
    // 201 writes without being registered itself (then it is away).
    assert_eq!(net.send_and_wait_final(x, &message(x, "303", 1, "hi")), 202);
    net.register(y, "303", "reg-y", "300");
    net.drive();
    send_notices(&mut net);
    assert_eq!(
        net.endpoint.storage().messages.len(),
        1,
        "the notice waits for 201"
    );
    // 201 registers: the notice is delivered, and it yields no notice of its own.
    net.register(x, "201", "reg-x", "300");
    net.drive();
    let at_x = messages_at(&net, x);
    assert_eq!(at_x.len(), 1);
    assert!(
        at_x[0].1.starts_with("Delivered to 303 at 14:02"),
        "{at_x:?}"
    );
    assert_eq!(notices(&net).len(), 1, "a notice is never noticed");
    assert!(net.endpoint.storage().messages.is_empty());
}

#[test]
fn a_message_asking_for_an_imdn_gets_an_rfc_5438_delivered_notification() {
    let mut net = Net::new(65);
    let x = net.phone("10.0.1.2:5070", Answer::RingForever);
    let y = net.phone("10.0.1.3:5080", Answer::RingForever);
    net.register(x, "201", "reg-x", "300");
    let cpim = "From: <sip:201@fieldmesh>\r\nTo: <sip:303@fieldmesh>\r\n\
                NS: im <urn:ietf:params:imdn>\r\nim.Message-ID: 34jk324j\r\n\
                im.Disposition-Notification: positive-delivery, display\r\n\
                DateTime: 2026-11-25T14:00:00Z\r\n\r\n\
                Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
    let text = message(x, "303", 1, cpim).replace("Content-Type: text/plain\r\n\r\n", "");
    let text = text.replacen("Content-Type: text/plain", "Content-Type: message/cpim", 1);
    assert_eq!(net.send_and_wait_final(x, &text), 202);
    net.register(y, "303", "reg-y", "300");
    net.drive();
    send_notices(&mut net);
    let at_x = messages_at(&net, x);
    assert_eq!(at_x.len(), 1, "{at_x:?}");
    let (content_type, body) = &at_x[0];
    assert_eq!(content_type, "message/cpim");
    for part in [
        "NS: imdn <urn:ietf:params:imdn>",
        "Content-Type: message/imdn+xml",
        "Content-Disposition: notification",
        "<message-id>34jk324j</message-id>",
        "<datetime>2026-11-25T14:02:00+00:00</datetime>",
        "<delivered/>",
        "<recipient-uri>sip:303@fieldmesh</recipient-uri>",
    ] {
        assert!(body.contains(part), "{part} missing in\n{body}");
    }
    // The IMDN itself, were it stored and delivered later, would not be noticed.
    assert!(
        fieldmesh_sip::StoredMessage {
            id: "n".into(),
            aor: "201".into(),
            from: "<sip:303@fieldmesh>;tag=1".into(),
            to: "<sip:201@fieldmesh>".into(),
            content_type: "message/cpim".into(),
            body: body.clone().into(),
            date: None,
        }
        .notice()
        .is_none()
    );
}

/// The outcomes of web texts, as (token, status).
fn text_answers(net: &Net) -> Vec<(u64, u16)> {
    net.events
        .iter()
        .filter_map(|e| match e {
            Event::TextAnswered { token, status, .. } => Some((*token, *status)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_text_typed_on_the_web_page_reaches_the_phone_or_the_store_and_its_outcome_is_told() {
    let mut net = Net::new(65);
    let y = net.phone("10.0.1.3:5080", Answer::RingForever);
    assert_eq!(net.register(y, "303", "reg-y", "300"), 200);
    let text = |to: &str, body: &str| fieldmesh_sip::WebText {
        to: to.into(),
        from_name: "Coordinator \"HQ\"\r\nVia: x".into(),
        text: body.into(),
    };
    net.command(fieldmesh_sip::Command::SendText {
        token: 7,
        text: text("303", "generator at noon"),
    });
    net.drive();
    assert_eq!(text_answers(&net), vec![(7, 200)]);
    assert_eq!(
        bodies_received(&net, y),
        vec!["generator at noon".to_string()]
    );
    let from = first_message_from(&net, y).expect("a MESSAGE");
    // The name cannot smuggle a header: quotes and line breaks are gone.
    assert!(
        from.starts_with("\"Coordinator HQVia: x\" <sip:web@"),
        "{from}"
    );
    // 303 leaves: the next text is stored (202) and its delivery begets no notice to "web".
    assert_eq!(net.register(y, "303", "reg-y2", "0"), 200);
    net.command(fieldmesh_sip::Command::SendText {
        token: 8,
        text: text("303", "are you there?"),
    });
    net.drive();
    assert_eq!(text_answers(&net), vec![(7, 200), (8, 202)]);
    assert_eq!(net.endpoint.storage().messages.len(), 1);
    net.register(y, "303", "reg-y3", "300");
    net.drive();
    assert!(notices(&net).is_empty(), "no notice for a web text");
    assert_eq!(
        bodies_received(&net, y).last().map(String::as_str),
        Some("are you there?")
    );
}

//! Voicemail and message waiting as the SIP core drives them: which calls divert, what the
//! appliance answers, who is told about a mailbox and how (RFC 3842), and what the daemon is
//! asked to replicate or forget. The relay is the recording fake of `media.rs`.

use crate::media::{body_of, net_with_relay, route};
use crate::support::{Answer, Net};
use bytes::Bytes;
use fieldmesh_sip::message::{Message, Request};
use fieldmesh_sip::{Command, Event, MailboxAction, StoredVoicemail};
use std::net::SocketAddr;
use std::time::Duration;

fn voicemail(id: &str, aor: &str, heard: bool) -> StoredVoicemail {
    StoredVoicemail {
        id: id.into(),
        aor: aor.into(),
        from: "<sip:201@fieldmesh>;tag=x".into(),
        date: "Wed, 25 Nov 2026 14:02:00 GMT".into(),
        duration_ms: 5000,
        audio: Bytes::from_static(b"FMVM1"),
        heard,
    }
}

fn requests<'a>(net: &'a Net, phone: SocketAddr, method: &str) -> Vec<&'a Request> {
    net.phone_ref(phone)
        .received
        .iter()
        .filter_map(|m| match m {
            Message::Request(r) if r.method.is(method) => Some(r),
            _ => None,
        })
        .collect()
}

fn summary(r: &Request) -> String {
    body_of(&Message::Request(r.clone()))
        .lines()
        .find(|l| l.starts_with("Voice-Message:"))
        .unwrap_or("")
        .to_string()
}

fn subscribe_text(from: SocketAddr, user: &str, target: &str, id: &str, expires: u32) -> String {
    format!(
        "SUBSCRIBE sip:{target}@fieldmesh SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKsub{id}{expires}\r\n\
         From: <sip:{user}@fieldmesh>;tag=s{id}\r\nTo: <sip:{target}@fieldmesh>\r\nCall-ID: {id}\r\n\
         CSeq: 1 SUBSCRIBE\r\nContact: <sip:{user}@{from}>\r\nEvent: message-summary\r\n\
         Expires: {expires}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn a_busy_callee_sends_the_call_to_voicemail_on_the_callers_appliance() {
    let (mut net, log) = net_with_relay(80);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let c = net.phone("10.99.0.3:5060", Answer::Reject(486));
    net.command(route(c));
    let invite = net.invite_text(alice, "303", "v1");
    assert_eq!(net.send_and_wait_final(alice, &invite), 200);
    let ok = net
        .phone_ref(alice)
        .received
        .iter()
        .rev()
        .find(|m| matches!(m, Message::Response(r) if r.code == 200))
        .cloned()
        .expect("200");
    assert_eq!(body_of(&ok), "v=0\r\nc=IN IP4 10.0.0.1 record\r\n");
    let log = log.lock().unwrap();
    assert_eq!(log.records.len(), 1);
    assert_eq!(log.records[0].0, "v1");
    assert_eq!(log.records[0].1, "303");
    assert!(log.records[0].2.contains("tag=cv1"), "{:?}", log.records[0]);
    // The crossing attempt's media was released before the recording took the Call-ID.
    assert_eq!(log.ended, vec!["v1"]);
}

#[test]
fn unknown_extensions_get_404_but_known_unreachable_ones_get_voicemail() {
    let (mut net, log) = net_with_relay(81);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let invite = net.invite_text(alice, "999", "v2");
    assert_eq!(net.send_and_wait_final(alice, &invite), 404);
    // 303 was registered on another appliance once (known), and nobody serves it now.
    net.command(Command::RemoteRoutes {
        aor: "303".into(),
        routes: Vec::new(),
        known: true,
    });
    let invite = net.invite_text(alice, "303", "v3");
    assert_eq!(net.send_and_wait_final(alice, &invite), 200);
    assert_eq!(log.lock().unwrap().records.len(), 1);
}

#[test]
fn an_unanswered_call_is_cancelled_and_goes_to_voicemail_after_the_no_answer_time() {
    let (mut net, log) = net_with_relay(82);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let bob = net.phone("10.0.1.3:5070", Answer::RingForever);
    net.register(bob, "202", "reg-b", "300");
    let invite = net.invite_text(alice, "202", "v4");
    assert_eq!(net.send_and_wait_final(alice, &invite), 200);
    assert!(net.phone_ref(bob).methods().contains(&"CANCEL".to_string()));
    assert_eq!(log.lock().unwrap().records.len(), 1);
    assert!(
        !net.phone_ref(alice).codes().contains(&480),
        "{:?}",
        net.phone_ref(alice).codes()
    );
}

#[test]
fn a_recorded_voicemail_is_stored_replicated_and_announced_to_the_owners_phone() {
    let (mut net, _log) = net_with_relay(83);
    let yves = net.phone("10.0.1.9:5070", Answer::After(Duration::ZERO));
    net.register(yves, "303", "reg-y", "300");
    net.command(Command::VoicemailRecorded {
        voicemail: voicemail("vm1", "303", false),
    });
    net.drive();
    assert_eq!(net.endpoint.storage().voicemails.len(), 1);
    assert!(
        net.events.iter().any(
            |e| matches!(e, Event::VoicemailStored { voicemail, .. } if voicemail.id == "vm1")
        )
    );
    // Never subscribed: an unsolicited NOTIFY, as PBXs send.
    let notifies = requests(&net, yves, "NOTIFY");
    assert_eq!(notifies.len(), 1);
    assert_eq!(summary(notifies[0]), "Voice-Message: 1/0 (0/0)");
    assert!(body_of(&Message::Request(notifies[0].clone())).contains("Messages-Waiting: yes"));
}

#[test]
fn a_subscription_gets_the_state_at_once_and_every_change_after() {
    let (mut net, _log) = net_with_relay(84);
    let yves = net.phone("10.0.1.9:5070", Answer::After(Duration::ZERO));
    net.register(yves, "303", "reg-y", "300");
    let sub = subscribe_text(yves, "303", "303", "s1", 600);
    assert_eq!(net.send_and_wait_final(yves, &sub), 200);
    let notifies = requests(&net, yves, "NOTIFY");
    assert_eq!(notifies.len(), 1);
    assert_eq!(summary(notifies[0]), "Voice-Message: 0/0 (0/0)");
    assert!(
        notifies[0]
            .header(&ezk_sip_types::Name::SUBSCRIPTION_STATE)
            .any(|v| v.starts_with("active;expires="))
    );
    // A replica from another appliance: the subscription hears of it (in its dialog).
    net.command(Command::StoreReplicas {
        messages: Vec::new(),
        voicemails: vec![voicemail("vm2", "303", false)],
    });
    net.drive();
    let notifies = requests(&net, yves, "NOTIFY");
    assert_eq!(notifies.len(), 2);
    assert_eq!(summary(notifies[1]), "Voice-Message: 1/0 (0/0)");
    assert_eq!(notifies[1].common.call_id, "s1");
    // Deleted with key 7: gone from the store, the daemon is told to forget every copy.
    net.command(Command::Mailbox {
        action: MailboxAction::Deleted("vm2".into()),
    });
    net.drive();
    let notifies = requests(&net, yves, "NOTIFY");
    assert_eq!(summary(notifies[2]), "Voice-Message: 0/0 (0/0)");
    assert!(net.endpoint.storage().voicemails.is_empty());
    assert!(
        net.events
            .iter()
            .any(|e| matches!(e, Event::VoicemailDeleted { id, .. } if id == "vm2"))
    );
    // A late replica of the deleted voicemail never brings it back.
    net.command(Command::StoreReplicas {
        messages: Vec::new(),
        voicemails: vec![voicemail("vm2", "303", false)],
    });
    assert!(net.endpoint.storage().voicemails.is_empty());
}

#[test]
fn nobody_may_watch_someone_elses_mailbox_and_bad_expires_is_400() {
    let (mut net, _log) = net_with_relay(85);
    let eve = net.phone("10.0.1.6:5070", Answer::After(Duration::ZERO));
    let sub = subscribe_text(eve, "666", "303", "s2", 600);
    assert_eq!(net.send_and_wait_final(eve, &sub), 403);
    let bad = subscribe_text(eve, "666", "666", "s3", 600).replace("Expires: 600", "Expires: soon");
    assert_eq!(net.send_and_wait_final(eve, &bad), 400);
    assert!(requests(&net, eve, "NOTIFY").is_empty());
}

#[test]
fn the_mailbox_number_plays_the_callers_own_messages_newest_first_and_heard_ones_turn_old() {
    let (mut net, log) = net_with_relay(86);
    let phone = net.phone("10.0.1.9:5070", Answer::After(Duration::ZERO));
    net.register(phone, "caller", "reg-c", "300");
    for id in ["old1", "new2"] {
        net.command(Command::StoreReplicas {
            messages: Vec::new(),
            voicemails: vec![voicemail(id, "caller", false)],
        });
    }
    net.command(Command::StoreReplicas {
        messages: Vec::new(),
        voicemails: vec![voicemail("other", "303", false)],
    });
    let invite = net.invite_text(phone, "*98", "v7");
    assert_eq!(net.send_and_wait_final(phone, &invite), 200);
    assert_eq!(
        log.lock().unwrap().plays,
        vec![(
            "v7".to_string(),
            vec!["new2".to_string(), "old1".to_string()]
        )]
    );
    net.command(Command::Mailbox {
        action: MailboxAction::Heard("new2".into()),
    });
    net.drive();
    let notifies = requests(&net, phone, "NOTIFY");
    assert_eq!(
        summary(notifies.last().expect("notify")),
        "Voice-Message: 1/1 (0/0)"
    );
}

#[test]
fn a_recording_at_its_maximum_length_is_ended_with_bye_to_the_caller() {
    let (mut net, log) = net_with_relay(87);
    let alice = net.phone("10.0.1.2:5070", Answer::After(Duration::ZERO));
    let c = net.phone("10.99.0.3:5060", Answer::Reject(480));
    net.command(route(c));
    let invite = net.invite_text(alice, "303", "v8");
    assert_eq!(net.send_and_wait_final(alice, &invite), 200);
    net.command(Command::EndCall {
        call_id: "v8".into(),
    });
    net.drive();
    let byes = requests(&net, alice, "BYE");
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].common.call_id, "v8");
    assert_eq!(byes[0].common.to.tag.as_deref(), Some("cv8"));
    assert!(byes[0].common.from.tag.is_some());
    assert_eq!(log.lock().unwrap().ended, vec!["v8", "v8"]);
}

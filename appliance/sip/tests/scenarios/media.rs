//! Media anchoring as the SIP core drives it: which bodies go through the relay, towards which
//! side, and what happens when the relay refuses. The relay is a recording fake here; the real
//! one is tested in `fieldmesh-media` and end to end.

use crate::support::{Answer, Net};
use bytes::Bytes;
use fieldmesh_sip::message::Message;
use fieldmesh_sip::{Command, Config, Media, MediaRefusal, MeshSide, RemoteRoute, Toward};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
pub(crate) struct Log {
    /// (call-id, sender tag, toward) per rewrite.
    rewrites: Vec<(String, String, Toward)>,
    pub(crate) ended: Vec<String>,
    echoes: Vec<String>,
    /// (call-id, mailbox, From) per voicemail answered.
    pub(crate) records: Vec<(String, String, String)>,
    /// (call-id, ids played, newest first) per mailbox call.
    pub(crate) plays: Vec<(String, Vec<String>)>,
}

pub(crate) struct FakeRelay(pub(crate) Arc<Mutex<Log>>);

impl Media for FakeRelay {
    fn rewrite(
        &mut self,
        _now: Instant,
        call_id: &str,
        sender_tag: &str,
        body: &[u8],
        toward: Toward,
    ) -> Result<Bytes, MediaRefusal> {
        if body.windows(9).any(|w| w == b"refuse-me") {
            return Err(MediaRefusal {
                code: 503,
                reason: "Service Unavailable (no media ports free)".into(),
                retry_after: Some(5),
            });
        }
        let mut log = self.0.lock().expect("lock");
        log.rewrites
            .push((call_id.to_string(), sender_tag.to_string(), toward));
        Ok(Bytes::from(format!(
            "v=0\r\nc=IN IP4 {} phone={}\r\n",
            toward.ip, toward.phone
        )))
    }

    fn echo(
        &mut self,
        _now: Instant,
        call_id: &str,
        _body: &[u8],
        ip: IpAddr,
    ) -> Result<Bytes, MediaRefusal> {
        self.0
            .lock()
            .expect("lock")
            .echoes
            .push(call_id.to_string());
        Ok(Bytes::from(format!("v=0\r\nc=IN IP4 {ip} echo\r\n")))
    }

    fn record(
        &mut self,
        _now: Instant,
        call_id: &str,
        _body: &[u8],
        ip: IpAddr,
        mailbox: &str,
        from: &str,
    ) -> Result<Bytes, MediaRefusal> {
        self.0.lock().expect("lock").records.push((
            call_id.to_string(),
            mailbox.to_string(),
            from.to_string(),
        ));
        Ok(Bytes::from(format!("v=0\r\nc=IN IP4 {ip} record\r\n")))
    }

    fn play(
        &mut self,
        _now: Instant,
        call_id: &str,
        _body: &[u8],
        ip: IpAddr,
        messages: &[fieldmesh_sip::StoredVoicemail],
    ) -> Result<Bytes, MediaRefusal> {
        self.0.lock().expect("lock").plays.push((
            call_id.to_string(),
            messages.iter().map(|m| m.id.clone()).collect(),
        ));
        Ok(Bytes::from(format!("v=0\r\nc=IN IP4 {ip} play\r\n")))
    }

    fn end(&mut self, _now: Instant, call_id: &str) {
        self.0.lock().expect("lock").ended.push(call_id.to_string());
    }

    fn has_call(&self, call_id: &str) -> bool {
        self.0
            .lock()
            .expect("lock")
            .rewrites
            .iter()
            .any(|(c, ..)| c == call_id)
    }
}

pub(crate) fn net_with_relay(seed: u64) -> (Net, Arc<Mutex<Log>>) {
    net_with_relay_and(seed, Config::default())
}

/// A network with a mesh side and the fake relay, from `config` otherwise.
pub(crate) fn net_with_relay_and(seed: u64, config: Config) -> (Net, Arc<Mutex<Log>>) {
    let config = Config {
        mesh: Some(MeshSide {
            local: "10.99.0.1:5060".parse().expect("addr"),
            peer_timeout: Duration::from_secs(3),
            lookup_timeout: Duration::from_secs(2),
        }),
        ..config
    };
    let mut net = Net::with_config(seed, config);
    let log = Arc::new(Mutex::new(Log::default()));
    net.endpoint.set_media(Box::new(FakeRelay(log.clone())));
    (net, log)
}

pub(crate) fn route(peer: std::net::SocketAddr) -> Command {
    Command::RemoteRoutes {
        aor: "303".into(),
        routes: vec![RemoteRoute {
            peer: "12D3KooWpeerC".into(),
            node: "c".into(),
            sip: peer,
        }],
        known: true,
    }
}

pub(crate) fn body_of(m: &Message) -> String {
    match m {
        Message::Request(r) => String::from_utf8_lossy(&r.body).into_owned(),
        Message::Response(r) => String::from_utf8_lossy(&r.body).into_owned(),
    }
}

#[test]
fn a_call_to_another_appliance_is_anchored_both_ways() {
    let (mut net, log) = net_with_relay(70);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let c = net.phone("10.99.0.3:5060", Answer::After(Duration::from_millis(100)));
    net.command(route(c));
    let invite = net.invite_text(alice, "303", "m1");
    assert_eq!(net.send_and_wait_final(alice, &invite), 200);
    let at_c = body_of(&net.phone_ref(c).received[0]);
    assert_eq!(
        at_c, "v=0\r\nc=IN IP4 10.99.0.1 phone=false\r\n",
        "offer points at our mesh side"
    );
    let ok = net
        .phone_ref(alice)
        .received
        .iter()
        .find(|m| matches!(m, Message::Response(r) if r.code == 200))
        .expect("200 reached alice");
    assert_eq!(
        body_of(ok),
        "v=0\r\nc=IN IP4 10.0.0.1 phone=true\r\n",
        "answer points at our phone side"
    );
    let log = log.lock().unwrap();
    let tags: Vec<&str> = log.rewrites.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(
        tags,
        vec!["cm1", "tag5060"],
        "offer from the caller, answer from the callee"
    );
}

#[test]
fn a_call_between_two_phones_of_one_appliance_stays_direct() {
    let (mut net, log) = net_with_relay(71);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let bob = net.phone("10.0.1.3:5070", Answer::After(Duration::from_millis(100)));
    net.register(bob, "202", "reg-b", "300");
    let invite = net.invite_text(alice, "202", "m2");
    assert_eq!(net.send_and_wait_final(alice, &invite), 200);
    let at_bob = net
        .phone_ref(bob)
        .received
        .iter()
        .find(|m| matches!(m, Message::Request(r) if r.method.is("INVITE")))
        .map(body_of)
        .expect("INVITE reached bob");
    assert_eq!(at_bob, "v=0\n", "untouched");
    assert!(log.lock().unwrap().rewrites.is_empty());
}

#[test]
fn a_relay_out_of_ports_answers_503_with_retry_after_and_forwards_nothing() {
    let (mut net, _log) = net_with_relay(72);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let c = net.phone("10.99.0.3:5060", Answer::After(Duration::from_millis(100)));
    net.command(route(c));
    let invite = net.invite_text(alice, "303", "m3").replace(
        "Content-Length: 4\r\n\r\nv=0\n",
        "Content-Length: 10\r\n\r\nrefuse-me\n",
    );
    assert_eq!(net.send_and_wait_final(alice, &invite), 503);
    assert!(net.phone_ref(c).received.is_empty());
    let Some(Message::Response(r)) = net.phone_ref(alice).received.last() else {
        panic!("no response")
    };
    assert_eq!(r.reason, "Service Unavailable (no media ports free)");
    let retry: Vec<&str> = r
        .headers
        .get_raw(&ezk_sip_types::Name::RETRY_AFTER)
        .map(|v| v.as_str())
        .collect();
    assert_eq!(retry, vec!["5"]);
}

#[test]
fn the_echo_number_is_answered_by_the_appliance_and_bye_ends_it() {
    let (mut net, log) = net_with_relay(73);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let invite = net.invite_text(alice, "*43", "m4");
    assert_eq!(net.send_and_wait_final(alice, &invite), 200);
    let Some(Message::Response(ok)) = net.phone_ref(alice).received.last().cloned() else {
        panic!("no response")
    };
    assert_eq!(
        body_of(&Message::Response(ok.clone())),
        "v=0\r\nc=IN IP4 10.0.0.1 echo\r\n"
    );
    let contact: Vec<&str> = ok
        .headers
        .get_raw(&ezk_sip_types::Name::CONTACT)
        .map(|v| v.as_str())
        .collect();
    assert_eq!(contact, vec!["<sip:*43@10.0.0.1:5060>"]);
    let to_tag = ok.common.to.tag.clone().expect("tagged");
    let bye = format!(
        "BYE sip:*43@10.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {alice};branch=z9hG4bKbye4\r\n\
         From: <sip:caller@fieldmesh>;tag=cm4\r\nTo: <sip:*43@fieldmesh>;tag={to_tag}\r\nCall-ID: m4\r\n\
         CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(net.send_and_wait_final(alice, &bye), 200);
    let log = log.lock().unwrap();
    assert_eq!(log.echoes, vec!["m4"]);
    assert_eq!(log.ended, vec!["m4"]);
}

#[test]
fn a_rejected_call_releases_its_media() {
    let mut config = Config::default();
    config.voicemail.enabled = false;
    let (mut net, log) = net_with_relay_and(74, config);
    let alice = net.phone("10.0.1.2:5070", Answer::Silent);
    let c = net.phone("10.99.0.3:5060", Answer::Reject(486));
    net.command(route(c));
    let invite = net.invite_text(alice, "303", "m5");
    assert_eq!(net.send_and_wait_final(alice, &invite), 486);
    assert_eq!(log.lock().unwrap().ended, vec!["m5"]);
}

#[test]
fn a_call_whose_media_timed_out_is_ended_with_bye_on_both_sides() {
    let (mut net, log) = net_with_relay(75);
    let alice = net.phone("10.0.1.2:5070", Answer::After(Duration::ZERO));
    let c = net.phone("10.99.0.3:5060", Answer::After(Duration::from_millis(100)));
    net.command(route(c));
    let invite = net.invite_text(alice, "303", "m6");
    assert_eq!(net.send_and_wait_final(alice, &invite), 200);
    net.command(Command::EndCall {
        call_id: "m6".into(),
    });
    net.drive();
    let bye_to = |phone| {
        net.phone_ref(phone)
            .received
            .iter()
            .find_map(|m| match m {
                Message::Request(r) if r.method.is("BYE") => Some(r.clone()),
                _ => None,
            })
            .expect("a BYE")
    };
    let to_alice = bye_to(alice);
    assert_eq!(
        to_alice.common.from.tag.as_deref(),
        Some("tag5060"),
        "in the callee's name"
    );
    assert_eq!(to_alice.common.to.tag.as_deref(), Some("cm6"));
    assert_eq!(
        fieldmesh_sip::message::print_uri(&to_alice.uri),
        "sip:caller@10.0.1.2:5070"
    );
    let to_c = bye_to(c);
    assert_eq!(
        to_c.common.from.tag.as_deref(),
        Some("cm6"),
        "in the caller's name"
    );
    assert_eq!(to_c.common.to.tag.as_deref(), Some("tag5060"));
    assert_eq!(
        fieldmesh_sip::message::print_uri(&to_c.uri),
        "sip:phone@10.99.0.3:5060"
    );
    assert!(to_c.common.cseq > 1, "above the caller's CSeq");
    assert_eq!(log.lock().unwrap().ended, vec!["m6"]);
    assert_eq!(
        net.endpoint.in_flight(),
        (0, 0, 0),
        "BYE transactions finished"
    );
}

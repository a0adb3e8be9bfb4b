//! A simulated network for the SIP core (after quinn-proto's `tests/util.rs` and str0m's
//! netem): one [`Endpoint`], scripted phones (small UAs written for the tests, not mocks of our
//! code), per-message latency, seeded loss, and a fake clock that jumps to the next event.

use bytes::Bytes;
use fieldmesh_sip::message::{Message, parse};
use fieldmesh_sip::{Config, Datagram, Endpoint, Input, MemoryStorage, Output, Transport};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub(crate) const PROXY: &str = "10.0.0.1:5060";

/// How a scripted phone answers an INVITE.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Answer {
    /// 180 at once, then 200 after the delay.
    After(Duration),
    /// 180 at once and nothing more (until CANCEL).
    RingForever,
    /// This final code at once.
    Reject(u16),
    /// Nothing at all (a dead phone).
    Silent,
}

/// A scripted phone: records everything it receives and answers by its policy.
pub(crate) struct Phone {
    pub(crate) addr: SocketAddr,
    pub(crate) answer: Answer,
    /// Every message received, in order.
    pub(crate) received: Vec<Message>,
    tag: String,
}

impl Phone {
    /// Status codes of responses received, in order.
    pub(crate) fn codes(&self) -> Vec<u16> {
        self.received
            .iter()
            .filter_map(|m| match m {
                Message::Response(r) => Some(r.code),
                Message::Request(_) => None,
            })
            .collect()
    }

    /// Methods of requests received, in order.
    pub(crate) fn methods(&self) -> Vec<String> {
        self.received
            .iter()
            .filter_map(|m| match m {
                Message::Request(r) => Some(r.method.to_string()),
                Message::Response(_) => None,
            })
            .collect()
    }
}

/// The network: the endpoint under test, the phones, and messages in flight.
pub(crate) struct Net {
    pub(crate) now: Instant,
    pub(crate) endpoint: Endpoint<MemoryStorage>,
    pub(crate) proxy: SocketAddr,
    pub(crate) phones: BTreeMap<SocketAddr, Phone>,
    /// One-way latency of every message.
    pub(crate) latency: Duration,
    /// Share of datagrams lost (0.0-1.0), in both directions, from a seeded RNG.
    pub(crate) loss: f64,
    /// Datagrams in flight: (arrival time, sequence, datagram).
    queue: Vec<(Instant, u64, Datagram)>,
    seq: u64,
    rng: SmallRng,
    /// Phones' deferred answers: (when, phone, bytes to the proxy).
    timers: Vec<(Instant, SocketAddr, Bytes)>,
    /// Every event the endpoint emitted, in order.
    pub(crate) events: Vec<fieldmesh_sip::Event>,
}

impl Net {
    /// A network with a default-configured endpoint.
    pub(crate) fn new(seed: u64) -> Net {
        Net::with_config(seed, Config::default())
    }

    pub(crate) fn with_config(seed: u64, mut config: Config) -> Net {
        #[allow(clippy::disallowed_methods)] // the scenario's one starting instant
        let now = Instant::now();
        let proxy: SocketAddr = PROXY.parse().expect("addr");
        config.listen = vec![proxy];
        config.rng_seed = seed;
        Net {
            now,
            endpoint: Endpoint::new(now, config, MemoryStorage::default()),
            proxy,
            phones: BTreeMap::new(),
            latency: Duration::from_millis(5),
            loss: 0.0,
            queue: Vec::new(),
            seq: 0,
            rng: SmallRng::seed_from_u64(seed),
            timers: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Adds a phone at `addr` answering INVITEs per `answer`.
    pub(crate) fn phone(&mut self, addr: &str, answer: Answer) -> SocketAddr {
        let addr: SocketAddr = addr.parse().expect("phone address");
        let tag = format!("tag{}", addr.port());
        self.phones.insert(
            addr,
            Phone {
                addr,
                answer,
                received: Vec::new(),
                tag,
            },
        );
        addr
    }

    /// Feeds a command from "the daemon" and lets the network run until quiet.
    pub(crate) fn command(&mut self, command: fieldmesh_sip::Command) {
        self.endpoint
            .handle_input(self.now, Input::Command(command));
        self.drain();
    }

    pub(crate) fn phone_ref(&self, addr: SocketAddr) -> &Phone {
        &self.phones[&addr]
    }

    /// Registers `user` from phone `addr` with its own address as Contact; returns the code.
    pub(crate) fn register(
        &mut self,
        addr: SocketAddr,
        user: &str,
        call_id: &str,
        expires: &str,
    ) -> u16 {
        let seq = self.next_seq();
        let text = format!(
            "REGISTER sip:{proxy} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};branch=z9hG4bKreg{seq}\r\n\
             From: <sip:{user}@fieldmesh>;tag=r{seq}\r\nTo: <sip:{user}@fieldmesh>\r\n\
             Call-ID: {call_id}\r\nCSeq: {seq} REGISTER\r\nContact: <sip:{user}@{addr}>\r\n\
             Expires: {expires}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            proxy = self.proxy,
        );
        self.send_and_wait_final(addr, &text)
    }

    /// Sends raw text from a phone to the proxy and drives until quiet; returns the last
    /// final response code the phone got (0 if none).
    pub(crate) fn send_and_wait_final(&mut self, from: SocketAddr, text: &str) -> u16 {
        let before = self.phones[&from].received.len();
        self.send(from, text);
        self.drive();
        self.phones[&from].received[before..]
            .iter()
            .rev()
            .find_map(|m| match m {
                Message::Response(r) if r.code >= 200 => Some(r.code),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// A phone sends `text` to the proxy (it arrives after the latency, unless lost).
    pub(crate) fn send(&mut self, from: SocketAddr, text: &str) {
        let d = Datagram {
            transport: Transport::Udp,
            local: from,
            remote: self.proxy,
            bytes: Bytes::copy_from_slice(text.as_bytes()),
        };
        self.enqueue(d);
    }

    /// An INVITE from phone `from` to extension `to`; `id` names the call.
    pub(crate) fn invite_text(&mut self, from: SocketAddr, to: &str, id: &str) -> String {
        format!(
            "INVITE sip:{to}@fieldmesh SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKinv{id}\r\n\
             From: <sip:caller@fieldmesh>;tag=c{id}\r\nTo: <sip:{to}@fieldmesh>\r\nCall-ID: {id}\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:caller@{from}>\r\nMax-Forwards: 70\r\n\
             Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n"
        )
    }

    /// The CANCEL for [`Net::invite_text`]'s INVITE.
    pub(crate) fn cancel_text(&mut self, from: SocketAddr, to: &str, id: &str) -> String {
        format!(
            "CANCEL sip:{to}@fieldmesh SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bKinv{id}\r\n\
             From: <sip:caller@fieldmesh>;tag=c{id}\r\nTo: <sip:{to}@fieldmesh>\r\nCall-ID: {id}\r\n\
             CSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    }

    /// Runs until quiet: nothing in flight on the wire, no phone about to answer, and no
    /// transaction left in the endpoint (bounded at 200 s of fake time).
    pub(crate) fn drive(&mut self) {
        let end = self.now + Duration::from_secs(200);
        while self.now < end {
            self.drive_for(Duration::from_millis(100));
            if self.queue.is_empty()
                && self.timers.is_empty()
                && self.endpoint.in_flight() == (0, 0, 0)
            {
                return;
            }
        }
    }

    /// Runs events up to `span` of fake time from now (bounded in steps).
    pub(crate) fn drive_for(&mut self, span: Duration) {
        let end = self.now + span;
        for _ in 0..100_000 {
            let next_msg = self.queue.iter().map(|(t, s, _)| (*t, *s)).min();
            let next_timer = self.timers.iter().map(|(t, _, _)| *t).min();
            let next_ep = self.endpoint.poll_timeout();
            let next = [next_msg.map(|(t, _)| t), next_timer, next_ep]
                .into_iter()
                .flatten()
                .min();
            let Some(at) = next.filter(|at| *at <= end) else {
                self.now = self.now.max(end.min(self.now + span));
                return;
            };
            self.now = self.now.max(at);
            if let Some((t, s)) = next_msg.filter(|(t, _)| *t == at) {
                let i = self
                    .queue
                    .iter()
                    .position(|(qt, qs, _)| *qt == t && *qs == s)
                    .expect("found");
                let (_, _, d) = self.queue.swap_remove(i);
                self.deliver(d);
            } else if let Some(i) = self.timers.iter().position(|(t, _, _)| *t == at) {
                let (_, from, bytes) = self.timers.swap_remove(i);
                self.send(
                    from,
                    std::str::from_utf8(&bytes).expect("phones write text"),
                );
            } else {
                self.endpoint.handle_input(self.now, Input::Timeout);
            }
            self.drain();
        }
        panic!("the network did not settle within 100000 steps");
    }

    fn drain(&mut self) {
        while let Some(out) = self.endpoint.poll_output() {
            match out {
                Output::Transmit(d) => self.enqueue(d),
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    fn enqueue(&mut self, d: Datagram) {
        if self.loss > 0.0 && self.rng.random_bool(self.loss) {
            return;
        }
        let seq = self.next_seq();
        self.queue.push((self.now + self.latency, seq, d));
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn deliver(&mut self, d: Datagram) {
        if d.remote == self.proxy {
            // From a phone: the datagram's `local` is the phone, `remote` the proxy.
            let input = Datagram {
                transport: d.transport,
                local: self.proxy,
                remote: d.local,
                bytes: d.bytes,
            };
            self.endpoint.handle_input(self.now, Input::Datagram(input));
            return;
        }
        let Some(phone) = self.phones.get_mut(&d.remote) else {
            return;
        };
        let Ok(message) = parse(&d.bytes, false) else {
            panic!(
                "the proxy sent something unparseable: {}",
                String::from_utf8_lossy(&d.bytes)
            );
        };
        let replies = react(phone, &message);
        phone.received.push(message);
        let addr = phone.addr;
        for (delay, text) in replies {
            if delay.is_zero() {
                self.send(addr, &text);
            } else {
                self.timers
                    .push((self.now + delay, addr, Bytes::from(text)));
            }
        }
    }
}

/// What a scripted phone says back to a message: (delay, text) pairs.
fn react(phone: &Phone, message: &Message) -> Vec<(Duration, String)> {
    let req = match message {
        Message::Request(req) => req,
        Message::Response(r) if r.common.cseq_method.is("INVITE") && r.code >= 300 => {
            return vec![(Duration::ZERO, ack_for(r))];
        }
        Message::Response(_) => return Vec::new(),
    };
    let reply = |code: u16, reason: &str| response(req, code, reason, &phone.tag, phone.addr);
    match req.method.as_str() {
        "INVITE" => {
            let answered_before = phone.received.iter().any(|m| {
                matches!(m, Message::Request(r) if r.method.is("INVITE") && r.common.call_id == req.common.call_id)
            });
            if answered_before {
                return Vec::new(); // a retransmission; UAS retransmissions are not modelled
            }
            match phone.answer {
                Answer::After(d) => vec![
                    (Duration::ZERO, reply(180, "Ringing")),
                    (d, reply(200, "OK")),
                ],
                Answer::RingForever => vec![(Duration::ZERO, reply(180, "Ringing"))],
                Answer::Reject(code) => vec![(Duration::ZERO, reply(code, "Scripted"))],
                Answer::Silent => Vec::new(),
            }
        }
        "CANCEL" => {
            let invite = phone.received.iter().rev().find_map(|m| match m {
                Message::Request(r)
                    if r.method.is("INVITE") && r.common.call_id == req.common.call_id =>
                {
                    Some(r)
                }
                _ => None,
            });
            let mut out = vec![(Duration::ZERO, reply(200, "OK"))];
            if let Some(invite) = invite {
                out.push((
                    Duration::ZERO,
                    response(invite, 487, "Request Terminated", &phone.tag, phone.addr),
                ));
            }
            out
        }
        "ACK" => Vec::new(),
        _ => match phone.answer {
            Answer::Silent => Vec::new(),
            Answer::Reject(code) => vec![(Duration::ZERO, reply(code, "Scripted"))],
            Answer::After(_) | Answer::RingForever => vec![(Duration::ZERO, reply(200, "OK"))],
        },
    }
}

/// A UAC's ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same branch as the INVITE.
fn ack_for(r: &fieldmesh_sip::message::Response) -> String {
    use ezk_sip_types::Name;
    let via = r
        .headers
        .get_raw(&Name::VIA)
        .next()
        .map(|v| v.to_string())
        .unwrap_or_default();
    let from = r
        .headers
        .get_raw(&Name::FROM)
        .next()
        .map(|v| v.to_string())
        .unwrap_or_default();
    let to = r
        .headers
        .get_raw(&Name::TO)
        .next()
        .map(|v| v.to_string())
        .unwrap_or_default();
    format!(
        "ACK sip:callee@fieldmesh SIP/2.0\r\nVia: {via}\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {}\r\n\
         CSeq: {} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        r.common.call_id, r.common.cseq
    )
}

/// A response from a phone: every Via, From, To (+tag), Call-ID, CSeq, and for 2xx to INVITE a
/// Contact and the Record-Route.
pub(crate) fn response(
    req: &fieldmesh_sip::message::Request,
    code: u16,
    reason: &str,
    tag: &str,
    me: SocketAddr,
) -> String {
    use ezk_sip_types::Name;
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for v in req.headers.get_raw(&Name::VIA) {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    for v in req.headers.get_raw(&Name::FROM) {
        out.push_str(&format!("From: {v}\r\n"));
    }
    for v in req.headers.get_raw(&Name::TO) {
        let tag = if v.contains("tag=") {
            String::new()
        } else {
            format!(";tag={tag}")
        };
        out.push_str(&format!("To: {v}{tag}\r\n"));
    }
    out.push_str(&format!("Call-ID: {}\r\n", req.common.call_id));
    for v in req.headers.get_raw(&Name::CSEQ) {
        out.push_str(&format!("CSeq: {v}\r\n"));
    }
    if req.method.is("INVITE") && (200..300).contains(&code) {
        out.push_str(&format!("Contact: <sip:phone@{me}>\r\n"));
        for v in req.headers.get_raw(&Name::RECORD_ROUTE) {
            out.push_str(&format!("Record-Route: {v}\r\n"));
        }
    }
    if req.method.is("INVITE") && (200..300).contains(&code) {
        // An SDP answer naming the phone, so tests can see whether it was anchored.
        let body = format!("v=0\r\na=answer-from:{me}\r\n");
        out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
        return out;
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

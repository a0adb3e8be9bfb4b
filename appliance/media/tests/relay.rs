//! The relay with simulated time: a call's offer and answer, packets through both legs,
//! latching, hijack attempts, hold, timeouts, exhaustion and transcoding.

mod support;

use bytes::Bytes;
use fieldmesh_media::codec::{Codec, Decoder, Encoder};
use fieldmesh_media::relay::{Datagram, Event, Input, Relay, RelayConfig, Toward};
use fieldmesh_media::rtp::{Header, Packet};
use fieldmesh_media::sdp::SdpError;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const PHONE: &str = "10.42.0.2";
const FAR: &str = "10.99.0.2";

fn toward_mesh() -> Toward {
    Toward {
        ip: "10.99.0.1".parse().unwrap(),
        phone: false,
    }
}

fn toward_phone() -> Toward {
    Toward {
        ip: "10.42.0.1".parse().unwrap(),
        phone: true,
    }
}

fn offer(ip: &str, audio_port: u16, fmts: &str, extra: &str) -> String {
    let rtpmaps: String = fmts
        .split(' ')
        .map(|pt| match pt {
            "96" => "a=rtpmap:96 opus/48000/2\r\n".to_string(),
            "101" => "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n".to_string(),
            "102" => "a=rtpmap:102 telephone-event/48000\r\na=fmtp:102 0-16\r\n".to_string(),
            _ => String::new(),
        })
        .collect();
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {audio_port} RTP/AVP {fmts}\r\n{rtpmaps}{extra}"
    )
}

struct Call {
    relay: Relay,
    now: Instant,
    /// Our port the phone was told (caller leg) and the one the far appliance was told.
    phone_port: u16,
    mesh_port: u16,
}

fn ports_in(sdp: &[u8]) -> Vec<u16> {
    std::str::from_utf8(sdp)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("m="))
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect()
}

fn start(config: RelayConfig, caller_fmts: &str, callee_fmts: &str) -> Call {
    #[allow(clippy::disallowed_methods)] // the test's one starting instant
    let now = Instant::now();
    let mut relay = Relay::new(now, config);
    // The caller is our phone; the offer goes to another appliance.
    let out = relay
        .handle_sdp(
            now,
            "call-1",
            "caller-tag",
            offer(PHONE, 4000, caller_fmts, "").as_bytes(),
            toward_mesh(),
        )
        .expect("offer anchored");
    let mesh_port = ports_in(&out)[0];
    assert!(
        std::str::from_utf8(&out)
            .unwrap()
            .contains("c=IN IP4 10.99.0.1")
    );
    let answer = relay
        .handle_sdp(
            now,
            "call-1",
            "callee-tag",
            offer(FAR, 6000, callee_fmts, "").as_bytes(),
            toward_phone(),
        )
        .expect("answer anchored");
    let phone_port = ports_in(&answer)[0];
    assert!(
        std::str::from_utf8(&answer)
            .unwrap()
            .contains("c=IN IP4 10.42.0.1")
    );
    assert_ne!(phone_port, mesh_port);
    Call {
        relay,
        now,
        phone_port,
        mesh_port,
    }
}

fn rtp(seq: u16, pt: u8, payload: &[u8]) -> Bytes {
    Bytes::from(
        Header {
            marker: false,
            payload_type: pt,
            sequence: seq,
            timestamp: u32::from(seq) * 160,
            ssrc: 42,
        }
        .packet(payload),
    )
}

impl Call {
    fn send(&mut self, port: u16, from: &str, bytes: Bytes) -> Vec<Datagram> {
        self.relay.handle_input(
            self.now,
            Input::Datagram(Datagram {
                local_port: port,
                remote: from.parse().unwrap(),
                bytes,
            }),
        );
        self.drain().0
    }

    fn drain(&mut self) -> (Vec<Datagram>, Vec<Event>) {
        support::drain(&mut self.relay)
    }

    fn advance(&mut self, by: Duration) -> (Vec<Datagram>, Vec<Event>) {
        support::advance(&mut self.relay, &mut self.now, by)
    }
}

#[test]
fn packets_cross_from_one_leg_to_the_other_from_our_other_port() {
    let mut call = start(RelayConfig::default(), "0 8", "0");
    let phone = format!("{PHONE}:4000");
    let out = call.send(call.phone_port, &phone, rtp(1, 0, &[0xff; 160]));
    assert_eq!(out.len(), 1, "relayed untouched, unbuffered");
    assert_eq!(out[0].local_port, call.mesh_port);
    assert_eq!(
        out[0].remote,
        format!("{FAR}:6000").parse::<SocketAddr>().unwrap()
    );
    assert_eq!(out[0].bytes, rtp(1, 0, &[0xff; 160]));
    let back = call.send(
        call.mesh_port,
        &format!("{FAR}:6000"),
        rtp(7, 0, &[0x7f; 160]),
    );
    assert_eq!(back[0].local_port, call.phone_port);
    assert_eq!(back[0].remote, phone.parse::<SocketAddr>().unwrap());
}

#[test]
fn the_first_packet_latches_and_other_sources_are_dropped() {
    let mut call = start(RelayConfig::default(), "0", "0");
    // The phone is behind NAT: its packets come from another port than its SDP says.
    let natted = "10.42.0.2:40000";
    assert_eq!(call.send(call.phone_port, natted, rtp(1, 0, b"x")).len(), 1);
    let back = call.send(call.mesh_port, &format!("{FAR}:6000"), rtp(1, 0, b"y"));
    assert_eq!(
        back[0].remote,
        natted.parse::<SocketAddr>().unwrap(),
        "replies follow the latch"
    );
    // Somebody else tries to inject media into the call.
    assert!(
        call.send(call.phone_port, "10.42.0.66:4000", rtp(2, 0, b"evil"))
            .is_empty()
    );
    assert!(
        call.send(call.mesh_port, "10.99.0.66:6000", rtp(2, 0, b"evil"))
            .is_empty()
    );
    // Garbage does not latch or crash.
    let mut fresh = start(RelayConfig::default(), "0", "0");
    for junk in [
        &b""[..],
        b"\x80",
        b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        &[0xff; 40],
    ] {
        assert!(
            fresh
                .send(
                    fresh.phone_port,
                    "10.42.0.66:1",
                    Bytes::copy_from_slice(junk)
                )
                .is_empty()
        );
    }
    assert_eq!(
        fresh.send(fresh.phone_port, natted, rtp(1, 0, b"x")).len(),
        1,
        "junk did not latch"
    );
    let reports = fresh.relay.reports(fresh.now);
    assert_eq!(reports[0].streams[0].legs[0].dropped, 4);
}

#[test]
fn a_silent_call_times_out_and_a_held_one_does_not() {
    let config = RelayConfig {
        media_timeout: Duration::from_secs(60),
        ..RelayConfig::default()
    };
    let mut call = start(config.clone(), "0", "0");
    call.send(call.phone_port, &format!("{PHONE}:4000"), rtp(1, 0, b"x"));
    let (_, events) = call.advance(Duration::from_secs(59));
    assert!(events.is_empty());
    let (_, events) = call.advance(Duration::from_secs(2));
    assert!(
        matches!(&events[0], Event::TimedOut { call_id } if call_id == "call-1"),
        "{events:?}"
    );
    assert!(matches!(&events[1], Event::Ended(r) if r.call_id == "call-1"));
    assert!(!call.relay.has_call("call-1"));
    assert_eq!(call.relay.load().1, 500, "every port back in the pool");

    // Hold: a re-offer with sendonly from the caller, answered recvonly.
    let mut held = start(config, "0", "0");
    let reoffer = offer(PHONE, 4000, "0", "a=sendonly\r\n");
    held.relay
        .handle_sdp(
            held.now,
            "call-1",
            "caller-tag",
            reoffer.as_bytes(),
            toward_mesh(),
        )
        .expect("re-offer");
    held.relay
        .handle_sdp(
            held.now,
            "call-1",
            "callee-tag",
            offer(FAR, 6000, "0", "a=recvonly\r\n").as_bytes(),
            toward_phone(),
        )
        .expect("re-answer");
    let (_, events) = held.advance(Duration::from_secs(300));
    assert!(events.is_empty(), "held calls stay: {events:?}");
}

#[test]
fn several_media_lines_each_get_their_ports_and_unknown_transports_are_rejected() {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut relay = Relay::new(now, RelayConfig::default());
    let sdp = format!(
        "{}m=video 4002 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\nm=text 4004 RTP/AVP 98\r\na=rtpmap:98 t140/1000\r\n\
         m=audio 4006 TCP/MSRP 0\r\n",
        offer(PHONE, 4000, "0", "")
    );
    let out = relay
        .handle_sdp(now, "c", "t", sdp.as_bytes(), toward_mesh())
        .expect("anchored");
    let ports = ports_in(&out);
    assert_eq!(ports.len(), 4, "no line dropped");
    assert!(ports[..3].iter().all(|p| (20000..21000).contains(p)));
    assert_eq!(ports[3], 0, "TCP line rejected with port 0");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("a=rtpmap:98 t140/1000"), "{text}");
}

#[test]
fn running_out_of_ports_refuses_the_offer_and_frees_nothing_else() {
    let config = RelayConfig {
        ports: vec![20000, 20002],
        ..RelayConfig::default()
    };
    let call = start(config, "0", "0");
    let mut relay = call.relay;
    let err = relay
        .handle_sdp(
            call.now,
            "call-2",
            "x",
            offer(PHONE, 4000, "0", "").as_bytes(),
            toward_mesh(),
        )
        .unwrap_err();
    assert_eq!(err, SdpError::NoPorts);
    assert_eq!(err.status().0, 503);
    assert!(relay.has_call("call-1") && !relay.has_call("call-2"));
}

#[test]
fn bad_sdp_gets_488_with_a_reason() {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut relay = Relay::new(now, RelayConfig::default());
    let mut many = offer(PHONE, 4000, "0", "");
    for i in 0..200 {
        many.push_str(&format!("m=audio {} RTP/AVP 0\r\n", 5000 + 2 * i));
    }
    for bad in [
        many,
        offer(PHONE, 4000, "0", "").replace("4000", "99999"),
        "garbage".into(),
    ] {
        let err = relay
            .handle_sdp(now, "c", "t", bad.as_bytes(), toward_mesh())
            .unwrap_err();
        assert_eq!(err.status().0, 488, "{err}");
    }
    assert_eq!(relay.load(), (0, 500), "nothing allocated");
}

#[test]
fn an_opus_caller_and_a_pcmu_callee_are_transcoded_both_ways() {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut relay = Relay::new(now, RelayConfig::default());
    // At the callee's appliance: the offer arrives from the mesh and goes to our phone.
    let to_phone = relay
        .handle_sdp(
            now,
            "t1",
            "caller",
            offer(FAR, 6000, "96 102", "").as_bytes(),
            toward_phone(),
        )
        .expect("offer");
    let text = String::from_utf8_lossy(&to_phone).into_owned();
    assert!(
        text.contains("m=audio 2") && text.contains(" 96 102 0 8"),
        "codecs appended: {text}"
    );
    assert!(text.contains("telephone-event/8000"), "{text}");
    // The phone answers PCMU (and events at 8 kHz).
    let te8 = text
        .lines()
        .find(|l| l.contains("telephone-event/8000"))
        .and_then(|l| l.strip_prefix("a=rtpmap:"))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_string();
    let answer = format!(
        "v=0\r\no=- 1 1 IN IP4 {PHONE}\r\ns=-\r\nc=IN IP4 {PHONE}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 {te8}\r\n\
         a=rtpmap:{te8} telephone-event/8000\r\n"
    );
    let to_mesh = relay
        .handle_sdp(now, "t1", "callee", answer.as_bytes(), toward_mesh())
        .expect("answer");
    let back = String::from_utf8_lossy(&to_mesh).into_owned();
    assert!(
        back.contains("RTP/AVP 96 102") && back.contains("opus/48000/2"),
        "the caller gets opus back: {back}"
    );
    let phone_port = ports_in(&to_phone)[0];
    let mesh_port = ports_in(&to_mesh)[0];
    let mut call = Call {
        relay,
        now,
        phone_port,
        mesh_port,
    };
    // 1 s of PCMU from the phone becomes opus towards the mesh, one packet per 20 ms tick.
    let mut encoder = Encoder::new(Codec::Pcmu).unwrap();
    let mut opus_out = Vec::new();
    for i in 0..50u16 {
        let pcm: Vec<i16> = (0..160)
            .map(|n| {
                ((f64::from(i * 160 + n) * 2.0 * std::f64::consts::PI * 1000.0 / 8000.0).sin()
                    * 8000.0) as i16
            })
            .collect();
        let payload = encoder.encode(&pcm);
        call.send(phone_port, &format!("{PHONE}:4000"), rtp(i, 0, &payload));
        let (sent, _) = call.advance(Duration::from_millis(20));
        opus_out.extend(sent);
    }
    // Our own sender report goes out on the RTCP port after a second; the rest is opus.
    let (reports, opus_out): (Vec<Datagram>, Vec<Datagram>) = opus_out
        .into_iter()
        .partition(|d| d.local_port == mesh_port + 1);
    assert!(
        reports
            .iter()
            .all(|d| fieldmesh_media::rtcp::Compound::parse(&d.bytes).is_ok()),
        "{reports:?}"
    );
    assert_eq!(reports.len(), 1, "one sender report in the first second");
    assert!(opus_out.len() >= 40, "{} opus packets", opus_out.len());
    let mut decoder = Decoder::new(Codec::Opus).unwrap();
    let mut pcm = Vec::new();
    for d in &opus_out {
        assert_eq!(d.local_port, mesh_port);
        assert_eq!(
            d.remote,
            format!("{FAR}:6000").parse::<SocketAddr>().unwrap()
        );
        let p = Packet::new_checked(&d.bytes).unwrap();
        assert_eq!(p.payload_type(), 96);
        decoder.decode(p.payload(), &mut pcm).unwrap();
    }
    assert!(
        pcm.iter().map(|s| i32::from(*s).abs()).max().unwrap() > 2000,
        "audible audio came out"
    );
    // DTMF from the PCMU phone reaches the opus side as events at 48 kHz on PT 102.
    let te: u8 = te8.parse().unwrap();
    let event = [5u8, 0x0a, 0x01, 0x40]; // digit 5, duration 320 at 8 kHz
    let out = call.send(phone_port, &format!("{PHONE}:4000"), rtp(60, te, &event));
    let p = Packet::new_checked(&out[0].bytes).unwrap();
    assert_eq!(p.payload_type(), 102);
    assert_eq!(p.payload()[0], 5);
    assert_eq!(
        u16::from_be_bytes([p.payload()[2], p.payload()[3]]),
        320 * 6
    );
    call.relay.end(call.now, "t1");
    let (_, events) = call.drain();
    let Some(Event::Ended(report)) = events.first() else {
        panic!("no report: {events:?}")
    };
    assert_eq!(report.streams[0].transcoded.as_deref(), Some("opus<->PCMU"));
    assert!(report.streams[0].legs[1].quality.packets >= 50);
}

#[test]
fn the_echo_service_plays_packets_back_after_the_delay() {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut relay = Relay::new(now, RelayConfig::default());
    let answer = relay
        .handle_echo_offer(
            now,
            "e1",
            offer(PHONE, 4000, "96 0 101", "").as_bytes(),
            "10.42.0.1".parse().unwrap(),
        )
        .expect("answered");
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        text.contains("RTP/AVP 96 101"),
        "first codec and events only: {text}"
    );
    let port = ports_in(&answer)[0];
    let mut call = Call {
        relay,
        now,
        phone_port: port,
        mesh_port: 0,
    };
    assert!(
        call.send(port, "10.42.0.2:4000", rtp(1, 96, b"hello"))
            .is_empty()
    );
    let (sent, _) = call.advance(Duration::from_millis(499));
    assert!(sent.is_empty());
    let (sent, _) = call.advance(Duration::from_millis(2));
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].remote,
        "10.42.0.2:4000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(sent[0].bytes, rtp(1, 96, b"hello"));
}

#[test]
fn figures_use_each_payload_types_clock_and_survive_a_new_ssrc() {
    let mut call = start(RelayConfig::default(), "96 101", "96 101");
    let phone = format!("{PHONE}:4000");
    let opus = |seq: u16, ssrc: u32| {
        Bytes::from(
            Header {
                marker: false,
                payload_type: 96,
                sequence: seq,
                timestamp: u32::from(seq) * 960,
                ssrc,
            }
            .packet(&[1; 60]),
        )
    };
    for seq in 0..50u16 {
        call.send(call.phone_port, &phone, opus(seq, 1));
        call.advance(Duration::from_millis(20));
    }
    // A DTMF event repeats its timestamp: no jitter from it.
    for seq in 50..55u16 {
        call.send(call.phone_port, &phone, rtp(seq, 101, &[1, 0, 0, 160]));
        call.advance(Duration::from_millis(20));
    }
    // A new source (another SSRC, another sequence) on the same leg.
    for seq in 0..20u16 {
        call.send(call.phone_port, &phone, opus(seq + 9000, 2));
        call.advance(Duration::from_millis(20));
    }
    let report = &call.relay.reports(call.now)[0];
    let leg = &report.streams[0].legs[0];
    assert_eq!(leg.quality.packets, 75, "counted across the SSRC change");
    assert!(
        leg.quality.jitter_ms < 1.0,
        "48 kHz timestamps read at 48 kHz: {}",
        leg.quality.jitter_ms
    );
    assert!(leg.quality.mos > 4.0, "{}", leg.quality.mos);
    let callee = &report.streams[0].legs[1];
    assert_eq!(callee.quality.packets, 0);
    assert_eq!(callee.quality.mos, 0.0, "no estimate without packets");
}

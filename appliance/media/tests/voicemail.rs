//! Voicemail through the relay with simulated time: a phone leaves a message after the
//! greeting, and a phone listens to its mailbox and presses keys.

mod support;

use bytes::Bytes;
use fieldmesh_media::codec::{Codec, Decoder, Encoder};
use fieldmesh_media::relay::{
    Datagram, Event, Input, MailboxAction, RecordingLabel, Relay, RelayConfig,
};
use fieldmesh_media::rtp::{Header, Packet};
use fieldmesh_media::sdp::SdpError;
use fieldmesh_media::voicemail::{self, PlaybackItem};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const PHONE: &str = "10.42.0.2:4000";
const TICK: Duration = Duration::from_millis(20);

fn our_ip() -> IpAddr {
    "10.42.0.1".parse().unwrap()
}

fn phone() -> SocketAddr {
    PHONE.parse().unwrap()
}

/// A phone's offer: `fmts` as on the m-line; 96 is opus, 101 and 102 telephone-event at 8
/// and 48 kHz, 9 is G.722 (which we do not decode).
fn offer(fmts: &str) -> String {
    let rtpmaps: String = fmts
        .split(' ')
        .map(|pt| match pt {
            "96" => "a=rtpmap:96 opus/48000/2\r\n",
            "101" => "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
            "102" => "a=rtpmap:102 telephone-event/48000\r\na=fmtp:102 0-16\r\n",
            "9" => "a=rtpmap:9 G722/8000\r\n",
            _ => "",
        })
        .collect();
    format!(
        "v=0\r\no=- 1 1 IN IP4 10.42.0.2\r\ns=-\r\nc=IN IP4 10.42.0.2\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP {fmts}\r\n{rtpmaps}m=video 4002 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n"
    )
}

fn label() -> RecordingLabel {
    RecordingLabel {
        mailbox: "201".into(),
        from: "sip:202@fieldmesh".into(),
    }
}

fn ports_in(sdp: &[u8]) -> Vec<u16> {
    std::str::from_utf8(sdp)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("m="))
        .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
        .collect()
}

struct Lab {
    relay: Relay,
    now: Instant,
    /// The phone's RTP state.
    seq: u16,
    ts: u32,
}

impl Lab {
    fn new(config: RelayConfig) -> Lab {
        #[allow(clippy::disallowed_methods)] // the test's one starting instant
        let now = Instant::now();
        Lab {
            relay: Relay::new(now, config),
            now,
            seq: 1000,
            ts: 5000,
        }
    }

    fn drain(&mut self) -> (Vec<Datagram>, Vec<Event>) {
        support::drain(&mut self.relay)
    }

    fn advance(&mut self, by: Duration) -> (Vec<Datagram>, Vec<Event>) {
        support::advance(&mut self.relay, &mut self.now, by)
    }

    fn send(&mut self, port: u16, bytes: Bytes) -> (Vec<Datagram>, Vec<Event>) {
        self.relay.handle_input(
            self.now,
            Input::Datagram(Datagram {
                local_port: port,
                remote: phone(),
                bytes,
            }),
        );
        self.drain()
    }

    /// One 20 ms packet of `payload` from the phone, stepping its clock by `step`.
    fn phone_packet(&mut self, pt: u8, payload: &[u8], step: u32) -> Bytes {
        let bytes = Header {
            marker: false,
            payload_type: pt,
            sequence: self.seq,
            timestamp: self.ts,
            ssrc: 0x5eed,
        }
        .packet(payload);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(step);
        Bytes::from(bytes)
    }

    /// The phone talks: `duration` of a sine at `hz` in `codec`, one packet per tick.
    fn talk(&mut self, port: u16, codec: Codec, pt: u8, hz: f64, duration: Duration) -> Vec<Event> {
        let mut encoder = Encoder::new(codec).unwrap();
        let rate = codec.clock_rate();
        let frame = codec.frame_samples(20);
        let mut events = Vec::new();
        let mut n = 0u32;
        for _ in 0..duration.as_millis() / 20 {
            let pcm: Vec<i16> = (n..n + frame)
                .map(|i| {
                    ((f64::from(i) * 2.0 * std::f64::consts::PI * hz / f64::from(rate)).sin()
                        * 8000.0) as i16
                })
                .collect();
            n += frame;
            let bytes = self.phone_packet(pt, &encoder.encode(&pcm), frame);
            events.extend(self.send(port, bytes).1);
            events.extend(self.advance(TICK).1);
        }
        events
    }

    /// One key press as phones send it (RFC 4733): a start packet, an update, and the final
    /// packet with the E bit three times, all with the event's timestamp.
    fn press(&mut self, port: u16, pt: u8, key: u8) -> Vec<Event> {
        let mut events = Vec::new();
        for (end, duration) in [
            (false, 160u16),
            (false, 480),
            (true, 800),
            (true, 800),
            (true, 800),
        ] {
            let payload = [
                key,
                if end { 0x80 | 10 } else { 10 },
                (duration >> 8) as u8,
                duration as u8,
            ];
            let bytes = self.phone_packet(pt, &payload, 0);
            events.extend(self.send(port, bytes).1);
        }
        self.ts = self.ts.wrapping_add(800);
        events
    }
}

/// How much of `pcm`'s energy is at `hz`: about 1 for a pure tone at `hz`, near 0 otherwise
/// (Goertzel).
fn share_at(pcm: &[i16], rate: u32, hz: f64) -> f64 {
    let n = pcm.len() as f64;
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * hz / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0;
    for &x in pcm {
        let x = f64::from(x);
        energy += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    if energy == 0.0 {
        return 0.0;
    }
    power / (n * energy / 2.0)
}

fn decode(codec: Codec, packets: &[Datagram]) -> Vec<i16> {
    let mut decoder = Decoder::new(codec).unwrap();
    let mut pcm = Vec::new();
    for d in packets {
        let p = Packet::new_checked(&d.bytes).unwrap();
        decoder.decode(p.payload(), &mut pcm).unwrap();
    }
    pcm
}

/// The packets of a stored recording decoded to 48 kHz, an empty frame being silence.
fn decode_recording(audio: &[u8]) -> Vec<i16> {
    let mut decoder = Decoder::new(Codec::Opus).unwrap();
    let mut pcm = Vec::new();
    for frame in voicemail::unpack(audio).unwrap() {
        if frame.is_empty() {
            pcm.extend([0; 960]);
        } else {
            decoder.decode(&frame, &mut pcm).unwrap();
        }
    }
    pcm
}

/// A stored recording of `duration` of a sine at `hz`, made with the crate's Opus encoder.
fn recording_of(hz: f64, duration: Duration) -> Vec<u8> {
    let mut encoder = Encoder::new(Codec::Opus).unwrap();
    let frames: Vec<Vec<u8>> = (0..duration.as_millis() as u32 / 20)
        .map(|f| {
            let pcm: Vec<i16> = (f * 960..(f + 1) * 960)
                .map(|i| {
                    ((f64::from(i) * 2.0 * std::f64::consts::PI * hz / 48000.0).sin() * 8000.0)
                        as i16
                })
                .collect();
            encoder.encode(&pcm)
        })
        .collect();
    voicemail::pack(&frames)
}

/// Answers a record offer and plays the greeting through; returns our port and the greeting
/// packets.
fn record_call(lab: &mut Lab, call_id: &str, fmts: &str) -> (u16, Vec<Datagram>) {
    let answer = lab
        .relay
        .handle_record_offer(lab.now, call_id, offer(fmts).as_bytes(), our_ip(), label())
        .expect("answered");
    let ports = ports_in(&answer);
    assert_eq!(ports.len(), 2, "every m-line answered");
    assert!((20000..21000).contains(&ports[0]));
    assert_eq!(ports[1], 0, "video rejected");
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(text.contains("c=IN IP4 10.42.0.1"), "{text}");
    // The greeting (about 4 s), a pause and the beep: until a tick sends nothing.
    let mut greeting = Vec::new();
    loop {
        let (sent, events) = lab.advance(TICK);
        assert!(events.is_empty(), "{events:?}");
        if sent.is_empty() && !greeting.is_empty() {
            break;
        }
        greeting.extend(sent);
        assert!(greeting.len() < 400, "the greeting ends");
    }
    (ports[0], greeting)
}

#[test]
fn a_pcmu_phone_hears_the_greeting_and_its_message_is_recorded_as_opus() {
    let mut lab = Lab::new(RelayConfig::default());
    let (port, greeting) = record_call(&mut lab, "vm-1", "0 101");
    let answer = lab
        .relay
        .handle_record_offer(
            lab.now,
            "vm-1",
            offer("0 101").as_bytes(),
            our_ip(),
            label(),
        )
        .expect("a retransmission");
    assert!(String::from_utf8_lossy(&answer).contains("RTP/AVP 0 101"));
    assert!(
        (200..=240).contains(&greeting.len()),
        "about 4.5 s of greeting and beep: {}",
        greeting.len()
    );
    let first = Packet::new_checked(&greeting[0].bytes).unwrap();
    assert!(first.marker());
    for (i, d) in greeting.iter().enumerate() {
        assert_eq!((d.local_port, d.remote), (port, phone()));
        let p = Packet::new_checked(&d.bytes).unwrap();
        assert_eq!((p.payload_type(), p.payload().len()), (0, 160));
        assert_eq!(
            p.timestamp(),
            first.timestamp().wrapping_add(160 * i as u32)
        );
        assert_eq!(p.sequence(), first.sequence().wrapping_add(i as u16));
        assert_eq!(p.marker(), i == 0);
    }
    let pcm = decode(Codec::Pcmu, &greeting);
    let beep = &pcm[pcm.len() - 3200..];
    assert!(share_at(beep, 8000, 880.0) > 0.5, "the beep at 880 Hz");
    assert!(
        share_at(&pcm, 8000, 1000.0) < 0.05,
        "no 1 kHz in our own audio"
    );

    let events = lab.talk(port, Codec::Pcmu, 0, 1000.0, Duration::from_secs(3));
    assert!(events.is_empty(), "{events:?}");
    let report = &lab.relay.reports(lab.now)[0];
    assert_eq!(report.service, "record");
    assert_eq!(report.streams.len(), 1);
    assert_eq!(report.streams[0].legs.len(), 1);
    assert_eq!(report.streams[0].legs[0].quality.packets, 150);

    lab.relay.end(lab.now, "vm-1");
    let (_, events) = lab.drain();
    let [
        Event::Recorded {
            call_id,
            label: l,
            audio,
            duration,
        },
        Event::Ended(ended),
    ] = &events[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!((call_id.as_str(), l), ("vm-1", &label()));
    assert_eq!(ended.call_id, "vm-1");
    let frames = voicemail::unpack(audio).unwrap();
    assert!(
        (150..=160).contains(&frames.len()),
        "{} frames",
        frames.len()
    );
    assert_eq!(*duration, TICK * frames.len() as u32);
    let pcm = decode_recording(audio);
    let middle = &pcm[48000 / 2..48000 * 5 / 2];
    assert!(
        share_at(middle, 48000, 1000.0) > 0.5,
        "{}",
        share_at(middle, 48000, 1000.0)
    );
    assert!(!lab.relay.has_call("vm-1"));
    assert_eq!(lab.relay.load(), (0, 500));
}

#[test]
fn a_call_with_no_message_stores_nothing() {
    let mut lab = Lab::new(RelayConfig::default());
    let (port, _) = record_call(&mut lab, "vm-quiet", "0");
    lab.advance(Duration::from_secs(5));
    lab.relay.end(lab.now, "vm-quiet");
    let (_, events) = lab.drain();
    assert!(
        matches!(&events[..], [Event::Ended(r)] if r.service == "record"),
        "{events:?}"
    );

    // Talking over the greeting and hanging up at the beep is no message either.
    let answer = lab
        .relay
        .handle_record_offer(
            lab.now,
            "vm-early",
            offer("0").as_bytes(),
            our_ip(),
            label(),
        )
        .unwrap();
    let port2 = ports_in(&answer)[0];
    assert_ne!(port, port2, "a fresh port pair");
    let events = lab.talk(port2, Codec::Pcmu, 0, 1000.0, Duration::from_secs(4));
    assert!(events.is_empty());
    lab.relay.end(lab.now, "vm-early");
    let (_, events) = lab.drain();
    assert!(matches!(&events[..], [Event::Ended(_)]), "{events:?}");
}

#[test]
fn a_recording_stops_at_its_maximum_length_once() {
    let mut lab = Lab::new(RelayConfig {
        max_recording: Duration::from_secs(2),
        ..RelayConfig::default()
    });
    let (port, _) = record_call(&mut lab, "vm-long", "0");
    let events = lab.talk(port, Codec::Pcmu, 0, 1000.0, Duration::from_secs(5));
    let finished: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::Finished { call_id } if call_id == "vm-long"))
        .collect();
    assert_eq!(finished.len(), 1, "{events:?}");
    assert_eq!(events.len(), 1);
    lab.relay.end(lab.now, "vm-long");
    let (_, events) = lab.drain();
    let Some(Event::Recorded {
        duration, audio, ..
    }) = events.first()
    else {
        panic!("{events:?}")
    };
    assert_eq!(*duration, Duration::from_secs(2));
    assert_eq!(voicemail::unpack(audio).unwrap().len(), 100);
}

#[test]
fn an_opus_phone_gets_an_opus_greeting_and_its_message_is_recorded() {
    let mut lab = Lab::new(RelayConfig::default());
    let answer = lab
        .relay
        .handle_record_offer(
            lab.now,
            "vm-o",
            offer("96 0 102 101").as_bytes(),
            our_ip(),
            label(),
        )
        .unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        text.contains("RTP/AVP 96 102\r\n"),
        "opus and its 48 kHz events: {text}"
    );
    lab.relay.end(lab.now, "vm-o");
    lab.drain();

    let (port, greeting) = record_call(&mut lab, "vm-opus", "96 102");
    let mut timestamps = Vec::new();
    for d in &greeting {
        let p = Packet::new_checked(&d.bytes).unwrap();
        assert_eq!(p.payload_type(), 96);
        timestamps.push(p.timestamp());
    }
    assert!(
        timestamps
            .windows(2)
            .all(|w| w[1].wrapping_sub(w[0]) == 960)
    );
    let pcm = decode(Codec::Opus, &greeting);
    assert!(
        share_at(&pcm[pcm.len() - 9600..], 48000, 880.0) > 0.5,
        "the beep"
    );
    lab.talk(port, Codec::Opus, 96, 1000.0, Duration::from_secs(2));
    lab.relay.end(lab.now, "vm-opus");
    let (_, events) = lab.drain();
    let Some(Event::Recorded { audio, .. }) = events.first() else {
        panic!("{events:?}")
    };
    let pcm = decode_recording(audio);
    assert!(share_at(&pcm[24000..72000], 48000, 1000.0) > 0.5);
}

/// Answers a playback offer and returns our port.
fn playback_call(lab: &mut Lab, call_id: &str, fmts: &str, items: Vec<PlaybackItem>) -> u16 {
    let answer = lab
        .relay
        .handle_playback_offer(lab.now, call_id, offer(fmts).as_bytes(), our_ip(), items)
        .expect("answered");
    ports_in(&answer)[0]
}

/// Runs ticks until `count` packets went to the phone (or none come any more).
fn listen(lab: &mut Lab, count: usize) -> (Vec<Datagram>, Vec<Event>) {
    let mut sent = Vec::new();
    let mut events = Vec::new();
    while sent.len() < count {
        let (s, e) = lab.advance(TICK);
        events.extend(e);
        if s.is_empty() {
            break;
        }
        sent.extend(s);
    }
    (sent, events)
}

fn item(id: &str, hz: f64, seconds: u64) -> PlaybackItem {
    PlaybackItem {
        id: id.into(),
        audio: recording_of(hz, Duration::from_secs(seconds)),
    }
}

#[test]
fn a_pcmu_phone_hears_numbered_messages_and_deletes_one_with_7() {
    let mut lab = Lab::new(RelayConfig::default());
    let answer = lab
        .relay
        .handle_playback_offer(
            lab.now,
            "pb-1",
            offer("0 101").as_bytes(),
            our_ip(),
            vec![item("m1", 1000.0, 3), item("m2", 1000.0, 1)],
        )
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer).contains("RTP/AVP 0 101"),
        "keys come as events"
    );
    let port = ports_in(&answer)[0];
    assert_eq!(lab.relay.reports(lab.now)[0].service, "playback");
    // One beep (150 ms) and the pauses (150 + 300 ms): 30 packets without 1 kHz.
    let (intro, events) = listen(&mut lab, 30);
    assert!(events.is_empty());
    assert!(Packet::new_checked(&intro[0].bytes).unwrap().marker());
    let pcm = decode(Codec::Pcmu, &intro);
    assert!(
        share_at(&pcm[..1200], 8000, 660.0) > 0.5,
        "the message-number beep"
    );
    assert!(share_at(&pcm, 8000, 1000.0) < 0.05);
    let (message, _) = listen(&mut lab, 50);
    let pcm = decode(Codec::Pcmu, &message);
    assert!(
        share_at(&pcm[1600..], 8000, 1000.0) > 0.5,
        "the recording, resampled to 8 kHz"
    );

    let mut events = lab.press(port, 101, 7);
    assert_eq!(
        events,
        vec![Event::Mailbox {
            call_id: "pb-1".into(),
            action: MailboxAction::Deleted("m1".into())
        }]
    );
    // The second message at once: two beeps, then its second of audio, then it is heard.
    let (intro, e) = listen(&mut lab, 45);
    events = e;
    let pcm = decode(Codec::Pcmu, &intro);
    assert!(
        share_at(&pcm[2400..3600], 8000, 660.0) > 0.5,
        "the second beep"
    );
    assert!(share_at(&pcm, 8000, 1000.0) < 0.05);
    let (rest, e) = listen(&mut lab, 10_000);
    events.extend(e);
    assert_eq!(
        events,
        vec![Event::Mailbox {
            call_id: "pb-1".into(),
            action: MailboxAction::Heard("m2".into())
        }]
    );
    // 1 s of message, then "no more messages" (about 0.9 s), then nothing.
    assert!((85..=110).contains(&rest.len()), "{}", rest.len());
    let (after, _) = lab.advance(Duration::from_secs(1));
    assert!(after.is_empty());
}

#[test]
fn a_silent_listener_is_timed_out_only_after_playback() {
    let mut lab = Lab::new(RelayConfig {
        media_timeout: Duration::from_secs(2),
        ..RelayConfig::default()
    });
    playback_call(&mut lab, "pb-t", "0", vec![item("long", 1000.0, 5)]);
    let (sent, events) = listen(&mut lab, 10_000);
    assert!(
        sent.len() > 250,
        "5 s of message and the prompts: {}",
        sent.len()
    );
    assert_eq!(events.len(), 1, "only Heard: {events:?}");
    let (_, events) = lab.advance(Duration::from_secs(3));
    assert!(
        matches!(&events[..], [Event::TimedOut { call_id }, Event::Ended(_)] if call_id == "pb-t"),
        "{events:?}"
    );
}

#[test]
fn hash_skips_a_message_as_heard_and_keys_after_the_end_do_nothing() {
    let mut lab = Lab::new(RelayConfig::default());
    let port = playback_call(
        &mut lab,
        "pb-2",
        "0 101",
        vec![item("a", 1000.0, 5), item("b", 440.0, 5)],
    );
    listen(&mut lab, 10);
    let events = lab.press(port, 101, 11);
    assert_eq!(
        events,
        vec![Event::Mailbox {
            call_id: "pb-2".into(),
            action: MailboxAction::Heard("a".into())
        }]
    );
    listen(&mut lab, 10);
    // 9 keeps: heard as well; then only the end prompt is left.
    let events = lab.press(port, 101, 9);
    assert_eq!(
        events,
        vec![Event::Mailbox {
            call_id: "pb-2".into(),
            action: MailboxAction::Heard("b".into())
        }]
    );
    let (end, events) = listen(&mut lab, 10_000);
    assert!(events.is_empty());
    assert!((40..=50).contains(&end.len()), "{}", end.len());
    assert!(lab.press(port, 101, 7).is_empty());
    // Other keys are ignored.
    let port = playback_call(&mut lab, "pb-3", "0 101", vec![item("c", 1000.0, 1)]);
    assert!(lab.press(port, 101, 5).is_empty());
}

#[test]
fn an_empty_mailbox_plays_only_the_end_prompt() {
    let mut lab = Lab::new(RelayConfig::default());
    playback_call(&mut lab, "pb-empty", "8", Vec::new());
    let (sent, events) = listen(&mut lab, 10_000);
    assert!(events.is_empty());
    assert!((40..=50).contains(&sent.len()), "{}", sent.len());
    assert!(
        sent.iter()
            .all(|d| Packet::new_checked(&d.bytes).unwrap().payload_type() == 8)
    );
    let pcm = decode(Codec::Pcma, &sent);
    assert!(pcm.iter().any(|s| s.unsigned_abs() > 2000), "speech");
}

#[test]
fn an_opus_phone_gets_the_stored_opus_back() {
    let mut lab = Lab::new(RelayConfig::default());
    let port = playback_call(&mut lab, "pb-opus", "96 102", vec![item("o", 1000.0, 2)]);
    let (intro, _) = listen(&mut lab, 30);
    let (message, _) = listen(&mut lab, 100);
    let mut decoder = Decoder::new(Codec::Opus).unwrap();
    let mut pcm = Vec::new();
    for d in intro.iter().chain(&message) {
        let p = Packet::new_checked(&d.bytes).unwrap();
        assert_eq!(p.payload_type(), 96);
        decoder.decode(p.payload(), &mut pcm).unwrap();
    }
    assert!(share_at(&pcm[..7200], 48000, 660.0) > 0.5, "the beep");
    assert!(share_at(&pcm[30 * 960 + 9600..], 48000, 1000.0) > 0.5);
    let events = lab.press(port, 102, 7);
    assert_eq!(
        events,
        vec![Event::Mailbox {
            call_id: "pb-opus".into(),
            action: MailboxAction::Deleted("o".into())
        }]
    );
}

#[test]
fn offers_are_refused_like_echo_ones() {
    let mut lab = Lab::new(RelayConfig {
        ports: vec![20000],
        max_calls: 2,
        ..RelayConfig::default()
    });
    let err = lab
        .relay
        .handle_record_offer(lab.now, "x", offer("9").as_bytes(), our_ip(), label())
        .unwrap_err();
    assert_eq!((err.clone(), err.status().0), (SdpError::NoCodec, 488));
    lab.relay
        .handle_record_offer(lab.now, "a", offer("0").as_bytes(), our_ip(), label())
        .unwrap();
    let err = lab
        .relay
        .handle_playback_offer(lab.now, "b", offer("0").as_bytes(), our_ip(), Vec::new())
        .unwrap_err();
    assert_eq!(err, SdpError::NoPorts);
    let err = lab
        .relay
        .handle_playback_offer(lab.now, "b", b"garbage", our_ip(), Vec::new())
        .unwrap_err();
    assert_eq!(err.status().0, 488);
    assert_eq!(lab.relay.load(), (1, 0), "nothing allocated by refusals");
    // A re-offer (the phone moved) keeps the port and is answered again; a different codec is not.
    let moved = offer("0").replace("m=audio 4000", "m=audio 4010");
    let answer = lab
        .relay
        .handle_record_offer(lab.now, "a", moved.as_bytes(), our_ip(), label())
        .unwrap();
    assert_eq!(ports_in(&answer), vec![20000, 0]);
    let err = lab
        .relay
        .handle_record_offer(lab.now, "a", offer("8").as_bytes(), our_ip(), label())
        .unwrap_err();
    assert_eq!(err, SdpError::NoCodec);
}

#[test]
fn garbage_to_voicemail_ports_does_not_panic() {
    let mut lab = Lab::new(RelayConfig::default());
    let (record, _) = record_call(&mut lab, "g-rec", "96 102");
    let play = playback_call(
        &mut lab,
        "g-play",
        "0 101",
        vec![
            PlaybackItem {
                id: "broken".into(),
                audio: b"FMVM1\x00\x10abc".to_vec(),
            },
            item("ok", 1000.0, 1),
        ],
    );
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..3000 {
        let len = (next() % 300) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 && bytes.len() >= 12 {
            // Valid RTP headers with garbage payloads, on the voice and the event types.
            bytes[0] = 0x80;
            bytes[1] = [0u8, 96, 101, 102][round / 2 % 4];
        }
        for port in [record, record + 1, play, play + 1] {
            lab.send(port, Bytes::from(bytes.clone()));
        }
        if round % 10 == 0 {
            lab.advance(TICK);
        }
    }
    lab.advance(Duration::from_secs(30));
    lab.relay.end(lab.now, "g-rec");
    lab.relay.end(lab.now, "g-play");
    let (_, events) = lab.drain();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Ended(r) if r.call_id == "g-play"))
    );
    assert!(voicemail::unpack(b"FMVM1\x00").is_err());
    assert!(voicemail::unpack(b"not a recording").is_err());
}

//! Issue 5, end to end: media across two appliances in the lab. A and B share a mesh link
//! (in one story through an impairment hop and nftables loss); each has one phone namespace
//! (10.42.0.2 behind 10.42.0.1, the same /24 on both), so a phone can only ever reach its own
//! appliance and the appliances must carry the media between them.
//!
//! 1. baresip (opus) on A and baresip (PCMU) on B hear each other's tone; each phone's SDP
//!    names only its own appliance; B transcodes; the figures are in both status APIs and logs.
//! 2. The same with 3 % random loss and 20 ± 10 ms jitter on the mesh: tones still there, and
//!    the longest silence in the recordings is printed and held to ≤ 60 ms.
//! 3. sipp plays the G.711 pcap across: the far phone namespace counts the RTP.
//! 4. An audio + video + text offer (with ICE candidates and `a=rtcp`): every stream crosses
//!    both ways on the ports of the SDP, payloads unchanged.
//! 5. RFC 4733 DTMF from a PCMU phone arrives at an opus phone as the right digits.
//! 6. The echo number `*43` plays the caller's tone back.
//!
//! Where the link is clean (1, 3, 4) the relay's per-leg figures must be plausible too: every
//! packet counted, nothing lost, jitter of a few ms. Those checks come after the media ones,
//! so a failure there says the media crossed and only the figures are wrong.

use fieldmesh_tests::audio::{self, ToneReport};
use fieldmesh_tests::baresip::{Baresip, BaresipOptions};
use fieldmesh_tests::impair::Impairment;
use fieldmesh_tests::lab::{Appliance, PHONE_IP, PHONE_SIDE_IP, PHONE_SIDE_SIP};
use fieldmesh_tests::media::{
    MediaLab, RandomLoss, RtpPeer, Sdp, Stream, assert_anchored, describe_call, dtmf_digits, gaps,
    legs, quality_lines, sdp_of, stream_payload, wait_recent_calls,
};
use fieldmesh_tests::wait::wait_until;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Peak of the sent tones (RMS 0.354, −9 dBFS).
const AMPLITUDE: f64 = 0.5;
/// A received tone must be within 3 dB of what was sent...
const MIN_RMS: f64 = 0.25;
/// ...and not louder by more than 3 dB.
const MAX_RMS: f64 = 0.5;
/// A received tone must carry at least half the received power (−3 dB of total).
const MIN_SHARE_DB: f64 = -3.0;
/// The tone a phone sent must not come back to it (no echo, no crossed streams).
const MAX_OWN_TONE_DB: f64 = -20.0;
/// Longest silence allowed in a recording on the lossy mesh (issue 5: "no audible gap").
const MAX_GAP_MS: f64 = 60.0;
/// How long a test waits for the relay's figures after a call ended.
const FIGURES_WAIT: Duration = Duration::from_secs(5);

const PHONE: IpAddr = IpAddr::V4(PHONE_IP);

/// A baresip in `app`'s phone namespace, registering at its appliance's phone side.
fn phone(app: &Appliance, user: &str, mic: &Path) -> BaresipOptions {
    BaresipOptions::new(user, PHONE, PHONE_SIDE_SIP, mic).in_netns(&app.phone_netns)
}

/// 1 kHz and 2 kHz tones, 48 kHz mono, long enough for any call here.
struct Tones {
    dir: tempfile::TempDir,
}

impl Tones {
    fn new() -> Tones {
        let dir = tempfile::tempdir().expect("temp dir");
        for f in [1000.0, 2000.0] {
            audio::write_sine(
                &dir.path().join(format!("{f}.wav")),
                48_000,
                f,
                40.0,
                AMPLITUDE,
            );
        }
        Tones { dir }
    }

    fn wav(&self, freq: f64) -> PathBuf {
        self.dir.path().join(format!("{freq}.wav"))
    }
}

/// The SDP in the first message of `messages` that starts with `start` (`INVITE `,
/// `SIP/2.0 200`) and has one.
fn sdp_in(messages: &[String], start: &str) -> Option<Sdp> {
    messages
        .iter()
        .filter(|m| m.starts_with(start))
        .find_map(|m| sdp_of(m))
}

/// Fails unless `phone` logged that its audio came from its own appliance's phone side
/// (baresip: `stream: incoming rtp for 'audio' established, receiving from IP:PORT`).
#[track_caller]
fn assert_media_from_own_appliance(phone: &Baresip) {
    const NEEDLE: &str = "incoming rtp for 'audio' established, receiving from ";
    let line = phone
        .find_line(NEEDLE)
        .unwrap_or_else(|| panic!("{}: no incoming RTP logged", phone.user));
    let from = line.split_once(NEEDLE).map_or("", |(_, f)| f.trim());
    assert!(
        from.starts_with(&format!("{PHONE_SIDE_IP}:")),
        "{}: audio came from {from}, not from its appliance {PHONE_SIDE_IP}",
        phone.user
    );
    eprintln!("{}: audio received from {from}", phone.user);
}

/// What one baresip-to-baresip call across A and B produced.
struct ToneCall {
    alice: Baresip,
    bob: Baresip,
    /// Alice (opus, on A) sends 1 kHz; bob (PCMU, on B) sends 2 kHz.
    alice_rec: PathBuf,
    bob_rec: PathBuf,
    at_bob: ToneReport,
    at_alice: ToneReport,
    /// The tone each sent, in what it received (must be absent).
    own_at_bob: ToneReport,
    own_at_alice: ToneReport,
    setup: Duration,
}

/// Alice (opus only, on A) calls bob (PCMU only, auto-answer, on B); the call lasts `length`;
/// alice hangs up. Checks the SDP each phone saw.
fn tone_call(m: &MediaLab, tones: &Tones, length: Duration) -> ToneCall {
    let mut bob = Baresip::start(phone(&m.b, "bob", &tones.wav(2000.0)).codecs("pcmu"));
    let mut alice = Baresip::start(phone(&m.a, "alice", &tones.wav(1000.0)).codecs("opus/48000/2"));
    bob.wait_registered();
    alice.wait_registered();
    m.wait_routes("alice", "bob");

    let dialled = Instant::now();
    alice.dial("bob");
    alice.wait_established();
    bob.wait_established();
    let setup = dialled.elapsed();
    std::thread::sleep(length);
    alice.hangup();
    alice.wait_terminated();
    bob.wait_terminated();

    // The phones' own view: each talks only to its own appliance.
    let offer = sdp_in(&bob.received_sip(), "INVITE ").expect("bob received an INVITE with SDP");
    let answer =
        sdp_in(&alice.received_sip(), "SIP/2.0 200").expect("alice received a 200 with SDP");
    eprintln!(
        "SDP bob (PCMU, on B) received:\n{}\nSDP alice (opus, on A) received:\n{}",
        offer.text.trim_end(),
        answer.text.trim_end()
    );
    assert_anchored("the offer bob received", &offer);
    assert_anchored("the answer alice received", &answer);
    for p in [&alice, &bob] {
        assert_media_from_own_appliance(p);
    }
    let offered = offer.first("audio").expect("audio in bob's offer");
    assert!(
        offered.pt_of("PCMU").is_some(),
        "B did not offer PCMU to its PCMU-only phone for an opus-only caller:\n{}",
        offer.text
    );

    let length_s = length.as_secs_f64();
    let bob_rec = bob.received_recording(length_s - 1.5);
    let alice_rec = alice.received_recording(length_s - 1.5);
    ToneCall {
        at_bob: audio::analyse(&bob_rec, 1000.0),
        at_alice: audio::analyse(&alice_rec, 2000.0),
        own_at_bob: audio::analyse(&bob_rec, 2000.0),
        own_at_alice: audio::analyse(&alice_rec, 1000.0),
        alice,
        bob,
        alice_rec,
        bob_rec,
        setup,
    }
}

impl ToneCall {
    fn print(&self) {
        eprintln!(
            "call set up in {:.0?}; bob decodes {:?}, alice decodes {:?}\n\
             bob received 1 kHz:   {}\n  (his own 2 kHz in it: {:.1} dB)\n\
             alice received 2 kHz: {}\n  (her own 1 kHz in it: {:.1} dB)",
            self.setup,
            self.bob.decoder(),
            self.alice.decoder(),
            self.at_bob,
            self.own_at_bob.share_db,
            self.at_alice,
            self.own_at_alice.share_db,
        );
    }

    #[track_caller]
    fn assert_tones(&self) {
        for (who, tone, own) in [
            ("bob (1 kHz from alice)", &self.at_bob, &self.own_at_bob),
            ("alice (2 kHz from bob)", &self.at_alice, &self.own_at_alice),
        ] {
            assert!(
                tone.share_db >= MIN_SHARE_DB && (MIN_RMS..=MAX_RMS).contains(&tone.rms),
                "{who}: the tone is not there at its level: {tone} (want ≥ {MIN_SHARE_DB} dB of \
                 total, RMS {MIN_RMS}..{MAX_RMS})"
            );
            assert!(
                own.share_db <= MAX_OWN_TONE_DB,
                "{who}: the phone hears its own tone: {own}"
            );
        }
    }
}

/// Checks the relay's figures for the one call on each appliance: both legs of every stream
/// carried packets, and B (whose phone speaks PCMU to an opus caller) transcodes. Prints them.
fn assert_figures(m: &MediaLab) -> [serde_json::Value; 2] {
    let calls = [m.node_a(), m.node_b()].map(|n| {
        let mut c = wait_recent_calls(n, 1, FIGURES_WAIT);
        assert_eq!(
            c.len(),
            1,
            "{}: one call expected in recent_calls: {c:?}",
            n.label
        );
        c.remove(0)
    });
    for (node, call) in [m.node_a(), m.node_b()].into_iter().zip(&calls) {
        eprintln!("{} recent call: {}", node.label, describe_call(call));
        let all = legs(call);
        assert!(
            all.iter().any(|(_, _, l)| l["leg"] == "caller")
                && all.iter().any(|(_, _, l)| l["leg"] == "callee"),
            "{}: the call lacks a caller or callee leg: {call}",
            node.label
        );
        for (media, _, leg) in &all {
            assert!(
                leg["packets"].as_u64().unwrap_or(0) > 0,
                "{}: {media} leg {} received no packets: {call}",
                node.label,
                leg["leg"]
            );
        }
        let logged = quality_lines(node);
        let id = call["call_id"].as_str().unwrap_or("?");
        eprintln!("{} logged:\n  {}", node.label, logged.join("\n  "));
        assert!(
            logged
                .iter()
                .any(|l| l.contains("call_id=") && l.contains(id)),
            "{}: no `call quality` log line with call_id={id}",
            node.label
        );
    }
    let transcoded: Vec<String> = legs(&calls[1])
        .into_iter()
        .filter_map(|(_, t, _)| t)
        .collect();
    assert!(
        transcoded
            .iter()
            .any(|t| t.contains("opus") && t.contains("PCMU")),
        "B does not show the call as transcoded opus<->PCMU: {}",
        calls[1]
    );
    // B sends its own sender reports on the legs it re-encodes; bob's receiver reports answer
    // them, so B knows the round trip to its phone.
    let rtt_to_bob = legs(&calls[1])
        .into_iter()
        .find(|(_, _, l)| l["leg"] == "callee")
        .and_then(|(_, _, l)| l["rtt_ms"].as_f64());
    assert!(
        rtt_to_bob.is_some_and(|ms| (0.0..1000.0).contains(&ms)),
        "B has no round trip to bob: {}",
        calls[1]
    );
    calls
}

/// On a clean link (veths, no impairment) every leg that carried packets lost none and shows
/// an interarrival jitter of a few ms (RFC 3550 §6.4.1, in the stream's own clock rate).
#[track_caller]
fn assert_clean_link_figures(node: &str, call: &serde_json::Value) {
    for (media, transcoded, leg) in legs(call) {
        if leg["packets"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        let jitter = leg["jitter_ms"].as_f64().unwrap_or(f64::NAN);
        assert!(
            leg["lost"] == 0 && jitter <= 20.0,
            "{node}: {media} leg {} ({}) on a clean link shows lost {} and jitter {jitter} ms \
             (want 0 and ≤ 20 ms): {}",
            leg["leg"],
            transcoded.as_deref().unwrap_or("relayed"),
            leg["lost"],
            describe_call(call)
        );
    }
}

#[test]
fn opus_caller_and_pcmu_callee_hear_each_other_across_appliances() {
    let m = MediaLab::new("media-tones", None);
    let tones = Tones::new();
    let call = tone_call(&m, &tones, Duration::from_secs(6));
    call.print();
    let figures = assert_figures(&m);
    call.assert_tones();
    assert!(
        call.bob.decoder().is_some_and(|d| d.starts_with("PCMU"))
            && call.alice.decoder().is_some_and(|d| d.starts_with("opus")),
        "each phone should decode its own codec: bob {:?}, alice {:?}",
        call.bob.decoder(),
        call.alice.decoder()
    );
    for (node, call) in [m.node_a(), m.node_b()].iter().zip(&figures) {
        assert_clean_link_figures(&node.label, call);
    }
}

#[test]
fn tones_cross_a_mesh_with_3_percent_loss_and_jitter_without_gaps_over_60ms() {
    let asked = Impairment {
        delay_ms: 20,
        jitter_ms: 10,
        loss_pct: 0.0,
        seed: 5,
    };
    let m = MediaLab::new("media-lossy", Some(asked));
    // 3 % of the media datagrams each appliance sends to the other (nftables; no netem here).
    let losses = [&m.a, &m.b].map(|x| RandomLoss::add(&x.netns, &x.mesh[0].ifname, 30));
    let tones = Tones::new();
    let call = tone_call(&m, &tones, Duration::from_secs(10));
    call.print();
    eprintln!("mesh hop: {}", m.lab.hop_stats(&m.b_link));
    for l in &losses {
        eprintln!("loss: {}", l.describe());
    }
    let [_, on_b] = assert_figures(&m);
    let mut found = Vec::new();
    for (who, rec) in [
        ("bob (PCMU from B's transcoder)", &call.bob_rec),
        ("alice (opus relayed by A)", &call.alice_rec),
    ] {
        let audio = audio::read_wav(rec).expect("recording");
        let g = gaps(&audio, 1.0, 0.5);
        eprintln!("gaps at {who}: {g}");
        found.push((who, g));
    }
    call.assert_tones();
    let lost: u64 = legs(&on_b)
        .iter()
        .map(|(_, _, l)| l["lost"].as_u64().unwrap_or(0))
        .sum();
    eprintln!("B's legs report {lost} packets lost in all");
    for (who, g) in &found {
        assert!(
            g.longest_silence_ms <= MAX_GAP_MS,
            "{who}: a gap of {:.0} ms (limit {MAX_GAP_MS} ms): {g}",
            g.longest_silence_ms
        );
    }
    for l in &losses {
        let (seen, dropped) = l.counts();
        assert!(
            seen > 200 && dropped > 0,
            "the loss rule did not act on the media ({}): the test did not test loss",
            l.describe()
        );
    }
}

#[test]
fn sipp_pcap_audio_reaches_the_far_phone_through_both_appliances() {
    let m = MediaLab::new("media-pcap", None);
    let sink_addr = SocketAddr::new(PHONE, 7000);
    let sink = RtpPeer::start(&m.b.phone_netns, sink_addr);
    let callee =
        m.b.phone("uas_rtp")
            .key("aport", sink_addr.port())
            .timeout(Duration::from_secs(40))
            .spawn();
    m.register_on_b("202", callee.port());

    let caller =
        m.a.caller("uac_pcap_proxy")
            .service("202")
            .arg("-mi")
            .arg(&PHONE_IP.to_string())
            .recv_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(40))
            .run();
    let got = callee.wait();
    let offer = sdp_in(&got.received(), "INVITE ");
    let answer = sdp_in(&caller.received(), "SIP/2.0 200");
    eprintln!(
        "SDP the callee received:\n{}\nSDP the caller received:\n{}",
        offer.as_ref().map_or("-", |s| s.text.as_str()).trim_end(),
        answer.as_ref().map_or("-", |s| s.text.as_str()).trim_end()
    );
    caller.expect_success(1);
    got.expect_success(1);
    assert_anchored(
        "the offer the callee received",
        &offer.expect("offer with SDP"),
    );
    assert_anchored(
        "the answer the caller received",
        &answer.expect("answer with SDP"),
    );

    let packets = sink.received();
    let pcma = sink.rtp_with_pt(8);
    let sources: Vec<SocketAddr> = {
        let mut s: Vec<SocketAddr> = packets.iter().map(|p| p.from).collect();
        s.sort();
        s.dedup();
        s
    };
    let digits = dtmf_digits(&packets, 101);
    eprintln!(
        "the callee's namespace received {:?} from {sources:?}; PCMA {} of 236; RFC 4733 digits \
         {digits:?}",
        sink.counts(),
        pcma.len()
    );
    m.print_calls();
    assert!(
        sources.iter().all(|s| s.ip() == IpAddr::V4(PHONE_SIDE_IP)),
        "media reached the callee from somewhere else than its own appliance: {sources:?}"
    );
    assert!(
        pcma.len() >= 224,
        "only {} of the pcap's 236 PCMA packets reached the far phone",
        pcma.len()
    );
    assert!(
        pcma.iter().all(|p| p.payload.len() == 240),
        "PCMA payloads changed size (30 ms = 240 bytes)"
    );
    assert_eq!(
        digits, "1",
        "the pcap's RFC 2833 '1' did not arrive as one '1'"
    );
    // The relay's figures count every packet of the caller's leg (the pcap's PCMA and the
    // RFC 2833 packets come with different SSRCs).
    for node in [m.node_a(), m.node_b()] {
        let calls = wait_recent_calls(node, 1, FIGURES_WAIT);
        let caller_packets: u64 = legs(&calls[0])
            .iter()
            .filter(|(_, _, l)| l["leg"] == "caller")
            .map(|(_, _, l)| l["packets"].as_u64().unwrap_or(0))
            .sum();
        assert!(
            caller_packets >= 224,
            "{}: the caller's leg counts {caller_packets} packets, but {} RTP packets crossed \
             it: {}",
            node.label,
            packets.len(),
            describe_call(&calls[0])
        );
    }
}

/// One stream kind of the audio + video + text call: its m= kind, the phones' port, payload
/// type, packets sent each way, interval (ms), timestamp step and payload size.
struct Kind {
    kind: &'static str,
    port: u16,
    pt: u8,
    count: u16,
    interval_ms: u64,
    ts_step: u32,
    size: usize,
}

const KINDS: [Kind; 3] = [
    Kind {
        kind: "audio",
        port: 7000,
        pt: 8,
        count: 100,
        interval_ms: 20,
        ts_step: 160,
        size: 160,
    },
    Kind {
        kind: "video",
        port: 7002,
        pt: 96,
        count: 100,
        interval_ms: 20,
        ts_step: 1800,
        size: 1000,
    },
    Kind {
        kind: "text",
        port: 7004,
        pt: 98,
        count: 30,
        interval_ms: 50,
        ts_step: 50,
        size: 12,
    },
];

impl Kind {
    fn stream(&self, ssrc: u32) -> Stream {
        Stream {
            pt: self.pt,
            ssrc,
            count: self.count,
            interval: Duration::from_millis(self.interval_ms),
            ts_step: self.ts_step,
            payload_len: self.size,
        }
    }
}

#[test]
fn video_and_text_packets_are_relayed_both_ways_on_the_ports_of_the_sdp() {
    let m = MediaLab::new("media-video", None);
    let peers = |app: &Appliance| -> Vec<RtpPeer> {
        KINDS
            .iter()
            .map(|k| RtpPeer::start(&app.phone_netns, SocketAddr::new(PHONE, k.port)))
            .collect()
    };
    let (at_a, at_b) = (peers(&m.a), peers(&m.b));
    let callee =
        m.b.phone("uas_av")
            .key("aport", KINDS[0].port)
            .key("vport", KINDS[1].port)
            .key("tport", KINDS[2].port)
            .timeout(Duration::from_secs(40))
            .spawn();
    m.register_on_b("202", callee.port());
    let caller =
        m.a.caller("uac_av")
            .service("202")
            .key("aport", KINDS[0].port)
            .key("rtcpport", KINDS[0].port + 1)
            .key("vport", KINDS[1].port)
            .key("tport", KINDS[2].port)
            .pause_ms(5000)
            .timeout(Duration::from_secs(30))
            .spawn();
    let answer = wait_until(
        "the caller to receive a 200 with SDP",
        Duration::from_secs(10),
        || sdp_in(&caller.received(), "SIP/2.0 200"),
    );
    let offer = sdp_in(&callee.received(), "INVITE ").expect("the callee got an INVITE with SDP");
    eprintln!(
        "SDP the callee (B) received:\n{}\nSDP the caller (A) received:\n{}",
        offer.text.trim_end(),
        answer.text.trim_end()
    );
    // The offer had a=rtcp and ICE candidates: rewritten and stripped.
    assert_anchored("the offer the callee received", &offer);
    assert_anchored("the answer the caller received", &answer);
    let target = |sdp: &Sdp, kind: &str| {
        sdp.first(kind)
            .and_then(|m| m.target())
            .filter(|t| t.port() != 0)
            .unwrap_or_else(|| panic!("no active m={kind} in:\n{}", sdp.text))
    };
    let targets: Vec<(SocketAddr, SocketAddr)> = KINDS
        .iter()
        .map(|k| (target(&answer, k.kind), target(&offer, k.kind)))
        .collect();
    // Every stream both ways at once (2 s of audio and video, 1.5 s of text). SSRCs 0xA0+i
    // from A's phone, 0xB0+i from B's.
    std::thread::scope(|s| {
        for (i, k) in KINDS.iter().enumerate() {
            let ((to_a, to_b), from_a, from_b) = (targets[i], &at_a[i], &at_b[i]);
            s.spawn(move || from_a.send_stream(to_a, k.stream(0xA0 + i as u32)));
            s.spawn(move || from_b.send_stream(to_b, k.stream(0xB0 + i as u32)));
        }
    });
    let all_in = || {
        KINDS.iter().enumerate().all(|(i, k)| {
            [&at_a[i], &at_b[i]]
                .iter()
                .all(|p| p.rtp_with_pt(k.pt).len() >= usize::from(k.count))
        })
    };
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until && !all_in() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = caller.wait();
    let served = callee.wait();
    for (i, k) in KINDS.iter().enumerate() {
        eprintln!(
            "{}: A's phone received {:?}, B's phone received {:?} (of {} sent each way)",
            k.kind,
            at_a[i].counts(),
            at_b[i].counts(),
            k.count
        );
    }
    m.print_calls();
    got.expect_success(1);
    served.expect_success(1);
    for (i, k) in KINDS.iter().enumerate() {
        for (name, peer, from_ssrc) in [
            ("B's phone", &at_b[i], 0xA0 + i as u32),
            ("A's phone", &at_a[i], 0xB0 + i as u32),
        ] {
            let got = peer.rtp_with_pt(k.pt);
            let want = usize::from(k.count) * 95 / 100;
            assert!(
                got.len() >= want,
                "{name}: {} of {} {} packets arrived ({:?})",
                got.len(),
                k.count,
                k.kind,
                peer.counts()
            );
            assert!(
                got.iter().all(|p| p.from.ip() == IpAddr::V4(PHONE_SIDE_IP)),
                "{name}: {} came from somewhere else than its own appliance",
                k.kind
            );
            let changed = got
                .iter()
                .filter(|p| match p.payload.get(..2) {
                    Some(&[hi, lo]) => {
                        p.payload != stream_payload(from_ssrc, u16::from_be_bytes([hi, lo]), k.size)
                    }
                    _ => true,
                })
                .count();
            assert_eq!(
                changed, 0,
                "{name}: {changed} {} payloads were changed",
                k.kind
            );
        }
    }
    // Paced at exact intervals over clean veths: the relay's figures must say so.
    for node in [m.node_a(), m.node_b()] {
        let calls = wait_recent_calls(node, 1, FIGURES_WAIT);
        assert_clean_link_figures(&node.label, &calls[0]);
    }
}

#[test]
fn dtmf_from_a_pcmu_phone_arrives_at_an_opus_phone_as_digits() {
    let m = MediaLab::new("media-dtmf", None);
    let tones = Tones::new();
    let mut bob = Baresip::start(phone(&m.b, "bob", &tones.wav(2000.0)).codecs("pcmu"));
    let mut alice = Baresip::start(phone(&m.a, "alice", &tones.wav(1000.0)).codecs("opus/48000/2"));
    bob.wait_registered();
    alice.wait_registered();
    m.wait_routes("alice", "bob");
    alice.dial("bob");
    alice.wait_established();
    bob.wait_established();
    // Let the streams start before the first digit.
    std::thread::sleep(Duration::from_millis(500));
    let digits = "159#*0";
    for d in digits.chars() {
        bob.send(&format!("/sndcode {d}"));
        // Each digit is a key press and release; 300 ms apart, as a person types.
        std::thread::sleep(Duration::from_millis(300));
    }
    // baresip 1.0 logs each received RFC 4733 event as `received event: '1' (end=0)`, then
    // `(end=1)` when the key is released.
    let key = |d: char| format!("received event: '{d}' (end=0)");
    let last = digits.chars().last().expect("digits");
    let waited = wait_until_log(&alice, &key(last), Duration::from_secs(5));
    alice.hangup();
    alice.wait_terminated();
    bob.wait_terminated();
    let received: String = alice
        .log_text()
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("received event: '")?.1;
            rest.ends_with("(end=0)").then(|| rest.chars().next())?
        })
        .collect();
    let sent: Vec<String> = bob
        .log_text()
        .lines()
        .filter(|l| l.contains("send DTMF"))
        .map(String::from)
        .collect();
    eprintln!(
        "bob (PCMU) sent: {sent:?}\nalice (opus) received digits {received:?} (last one \
         {waited})\nalice decodes {:?}, bob decodes {:?}",
        alice.decoder(),
        bob.decoder()
    );
    m.print_calls();
    assert_eq!(
        received, digits,
        "alice received other digits than bob sent"
    );
}

/// Whether `phone` logs `needle` within `timeout` (no panic: the caller reports).
fn wait_until_log(phone: &Baresip, needle: &str, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if phone.find_line(needle).is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn echo_number_plays_the_callers_tone_back() {
    let m = MediaLab::new("media-echo", None);
    let tones = Tones::new();
    let mut alice = Baresip::start(phone(&m.a, "alice", &tones.wav(1000.0)));
    alice.wait_registered();
    alice.dial("*43");
    alice.wait_established();
    std::thread::sleep(Duration::from_secs(4));
    alice.hangup();
    alice.wait_terminated();
    let answer =
        sdp_in(&alice.received_sip(), "SIP/2.0 200").expect("alice received a 200 with SDP");
    eprintln!("SDP of the echo's answer:\n{}", answer.text.trim_end());
    assert_anchored("the echo's answer", &answer);
    assert_media_from_own_appliance(&alice);
    let rec = alice.received_recording(2.0);
    // The echo starts 0.5 s late: skip a second.
    let heard = audio::analyse_after(&rec, 1000.0, 1.0);
    eprintln!(
        "alice decodes {:?}; her own tone back: {heard}",
        alice.decoder()
    );
    let calls = wait_recent_calls(m.node_a(), 1, FIGURES_WAIT);
    eprintln!("A recent call: {}", describe_call(&calls[0]));
    assert!(
        calls[0]["echo"] == true,
        "A's recent call is not marked echo: {}",
        calls[0]
    );
    assert!(
        heard.share_db >= MIN_SHARE_DB && (MIN_RMS..=MAX_RMS).contains(&heard.rms),
        "alice did not hear her 1 kHz tone back: {heard}"
    );
}

#[test]
fn a_call_without_media_is_ended_with_bye_to_both_phones_after_the_media_timeout() {
    let m = MediaLab::with_config("media-timeout", None, Some("[media]\ntimeout_secs = 5\n"));
    // Nobody sends RTP: sipp answers and waits for the BYE that the appliances send.
    let callee =
        m.b.phone("uas_rtp")
            .key("aport", 7000)
            .timeout(Duration::from_secs(40))
            .spawn();
    m.register_on_b("203", callee.port());
    let started = Instant::now();
    let caller =
        m.a.caller("uac_wait_bye")
            .service("203")
            .timeout(Duration::from_secs(40))
            .run();
    let ended_after = started.elapsed();
    let got = callee.wait();
    eprintln!("the caller's call ended after {ended_after:?}");
    caller.expect_success(1);
    got.expect_success(1);
    assert!(
        ended_after >= Duration::from_secs(5),
        "ended before the media timeout: {ended_after:?}"
    );
    // Whichever appliance noticed first ended it; the other may just have relayed its BYE.
    assert!(
        [m.node_a(), m.node_b()]
            .iter()
            .any(|n| n.log_text().contains("ending the call: no media")),
        "no appliance logged the media timeout"
    );
}

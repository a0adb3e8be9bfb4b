//! Issue 6, voicemail end to end with real phones (baresip) on two appliances in the lab:
//! alice on A calls yves, who is away; A's greeting plays, alice's 1 kHz tone is recorded as
//! Opus and replicated to B; yves comes back on B, is told (message-summary NOTIFY, 1 new),
//! dials `*98`, hears the tone, presses 7, and the voicemail is gone from every appliance.

use fieldmesh_tests::audio;
use fieldmesh_tests::baresip::{Baresip, BaresipOptions};
use fieldmesh_tests::lab::{Appliance, PHONE_IP, PHONE_SIDE_SIP};
use fieldmesh_tests::media::MediaLab;
use fieldmesh_tests::node::Node;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long alice talks after the greeting and beep (the 5 s).
const TALK: Duration = Duration::from_secs(5);
/// The greeting and beep before the recording starts (the prompt is about 4 s).
const GREETING: Duration = Duration::from_secs(5);

fn phone(app: &Appliance, user: &str, mic: &Path) -> BaresipOptions {
    BaresipOptions::new(user, IpAddr::V4(PHONE_IP), PHONE_SIDE_SIP, mic).in_netns(&app.phone_netns)
}

/// `f`'s first `Some` within `timeout`, polled every 100 ms; `None` if none came (the test
/// then says what it saw instead).
fn poll_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Voicemails kept on `node` for `aor`: (id, kind) from the status API's `stored`.
fn stored(node: &Node, aor: &str) -> Vec<String> {
    node.status()["stored"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["aor"] == aor && s["kind"] == "voicemail")
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect()
}

/// The strongest share of `freq` in any one-second window of a recording (a tone among
/// prompts and beeps), with that window's RMS.
fn best_window(path: &Path, freq: f64) -> (f64, f64) {
    let wav = audio::read_wav(path).expect("recording");
    let rate = wav.rate as usize;
    wav.samples
        .chunks(rate)
        .filter(|w| w.len() == rate)
        .map(|w| (audio::tone_share_db(w, wav.rate, freq), audio::rms(w)))
        .fold((f64::NEG_INFINITY, 0.0), |best, x| {
            if x.0 > best.0 { x } else { best }
        })
}

#[test]
fn a_voicemail_left_on_a_is_announced_played_and_deleted_on_b() {
    let m = MediaLab::new("voicemail", None);
    let dir = tempfile::tempdir().expect("temp dir");
    let tone = dir.path().join("1000.wav");
    audio::write_sine(&tone, 48_000, 1000.0, 40.0, 0.5);
    let silence = dir.path().join("silence.wav");
    audio::write_sine(&silence, 48_000, 1000.0, 40.0, 0.0);

    // yves was here once (his extension is known) and is away now.
    m.register_on_b("yves", 5099);
    m.b.register("yves", 5099, 0);
    let [na, nb] = &m.nodes;

    let mut alice = Baresip::start(phone(&m.a, "alice", &tone).codecs("pcmu"));
    alice.wait_registered();
    let called = Instant::now();
    alice.dial("yves");
    alice.wait_established();
    eprintln!("voicemail answered alice after {:.0?}", called.elapsed());
    std::thread::sleep(GREETING + TALK);
    alice.hangup();
    alice.wait_terminated();

    // Stored on A, replicated to B.
    let on_both = poll_for(Duration::from_secs(15), || {
        let (a, b) = (stored(na, "yves"), stored(nb, "yves"));
        (a.len() == 1 && b == a).then_some(a)
    });
    let ids = on_both.unwrap_or_else(|| {
        panic!(
            "the voicemail is not on both appliances: A {:?}, B {:?}",
            stored(na, "yves"),
            stored(nb, "yves")
        )
    });
    eprintln!("voicemail {} kept on A and B", ids[0]);

    // yves comes back on B: told of one new message.
    let mut yves = Baresip::start(phone(&m.b, "yves", &silence).codecs("pcmu"));
    yves.wait_registered();
    let notified = poll_for(Duration::from_secs(10), || {
        yves.received_sip()
            .into_iter()
            .find(|m| m.starts_with("NOTIFY ") && m.contains("Voice-Message: 1/0"))
    });
    let notify = notified.unwrap_or_else(|| {
        panic!(
            "yves got no message-summary NOTIFY with 1 new message; received:\n{}",
            yves.received_sip().join("\n---\n")
        )
    });
    assert!(notify.contains("Messages-Waiting: yes"), "{notify}");
    assert!(notify.contains("Event: message-summary"), "{notify}");

    // The mailbox: beeps, then alice's tone; 7 deletes it.
    yves.dial("*98");
    yves.wait_established();
    std::thread::sleep(Duration::from_millis(700) + TALK);
    yves.send("/sndcode 7");
    let gone = poll_for(Duration::from_secs(10), || {
        (stored(na, "yves").is_empty() && stored(nb, "yves").is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    yves.hangup();
    yves.wait_terminated();
    let heard = yves.received_recording(TALK.as_secs_f64());
    let (share_db, rms) = best_window(&heard, 1000.0);
    eprintln!(
        "yves heard the recording: best 1 s window 1 kHz {share_db:.1} dB of total, RMS {rms:.3}"
    );
    assert!(
        share_db >= -3.0 && rms >= 0.1,
        "alice's 1 kHz tone not found in what yves heard ({share_db:.1} dB, RMS {rms:.3}): {}",
        heard.display()
    );
    assert!(
        gone.is_some(),
        "after 7 the voicemail is still kept: A {:?}, B {:?}",
        stored(na, "yves"),
        stored(nb, "yves")
    );
    let last = yves
        .received_sip()
        .into_iter()
        .rfind(|m| m.starts_with("NOTIFY "))
        .unwrap_or_default();
    assert!(
        last.contains("Voice-Message: 0/0"),
        "no NOTIFY saying the mailbox is empty; last one:\n{last}"
    );
}

/// Issue 6, story 3 (voicemail): a voicemail recorded on A is replicated to B and C; A dies for
/// good (kill -9, state deleted); yves registers on C, is told of it and hears it.
#[test]
fn a_voicemail_survives_the_appliance_that_recorded_it() {
    use fieldmesh_tests::lab::{Lab, wait_neighbours};
    use fieldmesh_tests::media::MEDIA_PORTS;
    use fieldmesh_tests::node::NodeOptions;
    let lab = Lab::new("voicemail-replicas");
    let apps = ["a", "b", "c"].map(|n| lab.appliance(n));
    let [a, _b, c] = &apps;
    let mut nodes = apps.each_ref().map(|x| {
        lab.start_node(
            x,
            NodeOptions {
                extra_args: vec![
                    "--media-ports".into(),
                    format!("{}-{}", MEDIA_PORTS.0, MEDIA_PORTS.1),
                ],
                ..NodeOptions::default()
            },
        )
    });
    wait_neighbours(&nodes.each_ref(), Duration::from_secs(10));
    let dir = tempfile::tempdir().expect("temp dir");
    let tone = dir.path().join("1000.wav");
    audio::write_sine(&tone, 48_000, 1000.0, 40.0, 0.5);
    let silence = dir.path().join("silence.wav");
    audio::write_sine(&silence, 48_000, 1000.0, 40.0, 0.0);

    // yves was on C once and is away; alice on A leaves him a voicemail.
    c.register("yves", 5099, 300);
    c.register("yves", 5099, 0);
    let mut alice = Baresip::start(phone(a, "alice", &tone).codecs("opus/48000/2"));
    alice.wait_registered();
    alice.dial("yves");
    alice.wait_established();
    std::thread::sleep(GREETING + TALK);
    alice.hangup();
    alice.wait_terminated();
    let replicated = poll_for(Duration::from_secs(15), || {
        let log = nodes[0].log_text();
        log.lines()
            .find(|l| l.contains("voicemail replicated"))
            .map(str::to_string)
    })
    .expect("A did not replicate the voicemail");
    assert!(replicated.contains("holders=2"), "{replicated}");
    let ids = stored(&nodes[0], "yves");
    assert_eq!(ids.len(), 1, "A keeps one voicemail for yves");
    for node in &nodes[1..] {
        assert_eq!(stored(node, "yves"), ids, "{} holds a replica", node.label);
    }

    // A is gone for good.
    nodes[0].kill9();
    std::fs::remove_dir_all(&nodes[0].state_dir).expect("delete A's state");

    // yves registers on C: told, and hears alice.
    let mut yves = Baresip::start(phone(c, "yves", &silence).codecs("pcmu"));
    yves.wait_registered();
    let notified = poll_for(Duration::from_secs(10), || {
        yves.received_sip()
            .into_iter()
            .find(|m| m.starts_with("NOTIFY ") && m.contains("Voice-Message: 1/0"))
    });
    assert!(
        notified.is_some(),
        "yves on C was not told of the voicemail; received:\n{}",
        yves.received_sip().join("\n---\n")
    );
    yves.dial("*98");
    yves.wait_established();
    std::thread::sleep(Duration::from_millis(700) + TALK);
    yves.hangup();
    yves.wait_terminated();
    let heard = yves.received_recording(TALK.as_secs_f64());
    let (share_db, rms) = best_window(&heard, 1000.0);
    eprintln!("yves on C heard: best 1 s window 1 kHz {share_db:.1} dB, RMS {rms:.3}");
    assert!(
        share_db >= -3.0 && rms >= 0.1,
        "alice's tone not heard on C ({share_db:.1} dB, RMS {rms:.3})"
    );
}

//! Two stock baresip phones and one appliance (issue 3): both register, alice calls bob, bob
//! answers by himself, alice's 1 kHz tone must arrive in what bob recorded (and bob's 440 Hz in
//! what alice recorded), both hang up; then alice's MESSAGE reaches bob. Media flows phone to
//! phone: the appliance only routes the SIP.

use fieldmesh_tests::audio;
use fieldmesh_tests::baresip::{Baresip, BaresipOptions};
use fieldmesh_tests::node::Node;
use fieldmesh_tests::wait::wait_for;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const ALICE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const BOB_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// How long the call lasts: the only sleep, and it is the call, not a wait.
const CALL_LENGTH: Duration = Duration::from_secs(3);
/// The sent tones have a peak of 0.5 (RMS 0.354); a received one must be within 3 dB of it.
const MIN_RMS: f64 = 0.25;

#[test]
fn phones_baresip_call_carries_a_tone_then_a_message_arrives() {
    let node = Node::start();
    let media = tempfile::tempdir().expect("temp dir");
    let tone_1k = media.path().join("tone1k.wav");
    let tone_440 = media.path().join("tone440.wav");
    audio::write_sine(&tone_1k, 48_000, 1000.0, 10.0, 0.5);
    audio::write_sine(&tone_440, 48_000, 440.0, 10.0, 0.5);

    let mut bob =
        Baresip::start(BaresipOptions::new("bob", BOB_IP, node.sip, &tone_440).contact("alice"));
    let mut alice =
        Baresip::start(BaresipOptions::new("alice", ALICE_IP, node.sip, &tone_1k).contact("bob"));
    let (bob_reg, alice_reg) = (bob.wait_registered(), alice.wait_registered());
    wait_for(
        "alice and bob in the node's bindings",
        Duration::from_secs(5),
        || {
            let aors = node.bound_aors();
            aors.iter().any(|a| a == "alice") && aors.iter().any(|a| a == "bob")
        },
    );

    let dialled = Instant::now();
    alice.dial("bob");
    alice.wait_established();
    bob.wait_established();
    let setup = dialled.elapsed();
    std::thread::sleep(CALL_LENGTH);
    alice.hangup();
    let alice_end = alice.wait_terminated();
    let bob_end = bob.wait_terminated();

    let text = "hello bob, alice here";
    let sent = Instant::now();
    alice.message(text);
    bob.wait_message(text);
    let message_time = sent.elapsed();

    let at_bob = audio::analyse(&bob.received_recording(2.0), 1000.0);
    let at_alice = audio::analyse(&alice.received_recording(2.0), 440.0);
    eprintln!(
        "registered: bob {bob_reg:?}, alice {alice_reg:?} after start; call set up in {setup:?}\n\
         codec: bob decodes {:?}, alice decodes {:?}\n\
         ended: alice {:?}; bob {:?}\n\
         bob received (1 kHz): {at_bob}\nalice received (440 Hz): {at_alice}\n\
         MESSAGE delivered in {message_time:?}",
        bob.decoder(),
        alice.decoder(),
        alice_end.trim(),
        bob_end.trim(),
    );
    assert!(
        at_bob.share_db >= -3.0 && at_bob.rms >= MIN_RMS,
        "1 kHz tone not at bob: {at_bob}"
    );
    assert!(
        at_alice.share_db >= -3.0 && at_alice.rms >= MIN_RMS,
        "440 Hz not at alice: {at_alice}"
    );
}

//! linphonec and baresip through one appliance (issue 3): linphonec registers, calls a baresip
//! phone that answers by itself, each one's tone must arrive at the other, linphonec hangs up and
//! both see the call end.

use fieldmesh_tests::audio;
use fieldmesh_tests::baresip::{Baresip, BaresipOptions};
use fieldmesh_tests::linphone::{LinphoneOptions, Linphonec};
use fieldmesh_tests::node::Node;
use fieldmesh_tests::wait::wait_for;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

const CAROL_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
const DAVE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));
/// How long the call lasts: the only sleep, and it is the call, not a wait.
const CALL_LENGTH: Duration = Duration::from_secs(3);
/// The sent tones have RMS 0.354; a received one must be within 3 dB of it.
const MIN_RMS: f64 = 0.25;

#[test]
fn phones_linphone_calls_baresip_and_the_tones_cross() {
    let node = Node::start();
    let media = tempfile::tempdir().expect("temp dir");
    let tone_1k = media.path().join("tone1k.wav");
    let tone_440 = media.path().join("tone440.wav");
    audio::write_sine(&tone_1k, 48_000, 1000.0, 10.0, 0.5);
    audio::write_sine(&tone_440, 48_000, 440.0, 10.0, 0.5);

    let mut dave = Baresip::start(BaresipOptions::new("dave", DAVE_IP, node.sip, &tone_440));
    let mut carol = Linphonec::start(LinphoneOptions::new("carol", CAROL_IP, node.sip, &tone_1k));
    let (dave_reg, carol_reg) = (dave.wait_registered(), carol.wait_registered());
    wait_for(
        "carol and dave in the node's bindings",
        Duration::from_secs(5),
        || {
            let aors = node.bound_aors();
            aors.iter().any(|a| a == "carol") && aors.iter().any(|a| a == "dave")
        },
    );

    let dialled = Instant::now();
    carol.call("dave");
    carol.wait_connected();
    dave.wait_established();
    let setup = dialled.elapsed();
    std::thread::sleep(CALL_LENGTH);
    carol.terminate();
    let carol_end = carol.wait_ended();
    let dave_end = dave.wait_terminated();

    let at_dave = audio::analyse(&dave.received_recording(2.0), 1000.0);
    let at_carol = audio::analyse(&carol.recording(2.0), 440.0);
    eprintln!(
        "registered: dave {dave_reg:?}, carol {carol_reg:?} after start; call set up in {setup:?}\n\
         codec: dave decodes {:?}\nended: carol {:?}; dave {:?}\n\
         dave received (1 kHz from linphonec): {at_dave}\n\
         carol received (440 Hz from baresip): {at_carol}",
        dave.decoder(),
        carol_end.trim(),
        dave_end.trim(),
    );
    assert!(
        at_dave.share_db >= -3.0 && at_dave.rms >= MIN_RMS,
        "1 kHz not at dave: {at_dave}"
    );
    assert!(
        at_carol.share_db >= -3.0 && at_carol.rms >= MIN_RMS,
        "440 Hz not at carol: {at_carol}"
    );
}

//! Fuzzes the parse edge and the endpoint behind it: any bytes, over UDP and TCP, must not
//! panic, and a request we parsed must parse again after our own encoding.
#![no_main]

use fieldmesh_sip::message::{Message, parse};
use fieldmesh_sip::{Config, Datagram, Endpoint, Input, MemoryStorage, Transport};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    for stream in [false, true] {
        if let Ok(Message::Request(r)) = parse(data, stream) {
            // What we parsed must survive our own encoding.
            let again = r.encode();
            assert!(parse(&again, stream).is_ok(), "re-encoded request does not parse");
        }
    }
    #[allow(clippy::disallowed_methods)] // the fuzzer's one starting instant
    let now = Instant::now();
    let mut ep = Endpoint::new(now, Config::default(), MemoryStorage::default());
    let d = Datagram {
        transport: if data.first().is_some_and(|b| b & 1 == 1) { Transport::Tcp } else { Transport::Udp },
        local: "192.0.2.1:5060".parse().expect("addr"),
        remote: "192.0.2.2:5070".parse().expect("addr"),
        bytes: data.to_vec().into(),
    };
    ep.handle_input(now, Input::Datagram(d));
    // Answers to malformed requests echo the malformed lines (RFC 3261 §8.2.6.2), so they need
    // not parse; draining them must not panic.
    while ep.poll_output().is_some() {}
    ep.handle_input(now + Duration::from_secs(64), Input::Timeout);
    while ep.poll_output().is_some() {}
});

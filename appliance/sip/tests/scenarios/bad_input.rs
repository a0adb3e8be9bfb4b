//! Sweeps of malformed input through the public API: every panic is collected and reported,
//! not just the first (str0m's malformed-packet-injection test).

use fieldmesh_sip::{Config, Datagram, Endpoint, Input, MemoryStorage, Transport};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

const GOOD: &str = "INVITE sip:202@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.1.2:5070;branch=z9hG4bKx1\r\n\
    Max-Forwards: 70\r\nTo: <sip:202@x>\r\nFrom: <sip:201@x>;tag=a\r\nCall-ID: bad-input\r\n\
    CSeq: 1 INVITE\r\nContact: <sip:201@10.0.1.2:5070>\r\nContent-Length: 0\r\n\r\n";

#[test]
fn truncations_mutations_and_random_bytes_never_panic() {
    #[allow(clippy::disallowed_methods)] // the test's one starting instant
    let mut now = Instant::now();
    let mut ep = Endpoint::new(now, Config::default(), MemoryStorage::default());
    let mut rng = SmallRng::seed_from_u64(7);
    let mut inputs: Vec<Vec<u8>> = (0..GOOD.len())
        .map(|n| GOOD.as_bytes()[..n].to_vec())
        .collect();
    for _ in 0..5000 {
        let mut m = GOOD.as_bytes().to_vec();
        for _ in 0..rng.random_range(1..6) {
            let i = rng.random_range(0..m.len());
            match rng.random_range(0..3) {
                0 => m[i] = rng.random(),
                1 => {
                    m.remove(i);
                }
                _ => m.insert(
                    i,
                    *b":;,<>\"@[] \r\n\t"
                        .get(rng.random_range(0..15))
                        .unwrap_or(&b'x'),
                ),
            }
        }
        inputs.push(m);
    }
    for _ in 0..2000 {
        let len = rng.random_range(0..300);
        inputs.push((0..len).map(|_| rng.random()).collect());
    }
    let mut panics = Vec::new();
    for (i, bytes) in inputs.iter().enumerate() {
        let d = Datagram {
            transport: if i % 2 == 0 {
                Transport::Udp
            } else {
                Transport::Tcp
            },
            local: "10.0.0.1:5060".parse().expect("addr"),
            remote: "10.0.1.2:5070".parse().expect("addr"),
            bytes: bytes.clone().into(),
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            ep.handle_input(now, Input::Datagram(d));
            while ep.poll_output().is_some() {}
        }));
        if result.is_err() {
            panics.push(String::from_utf8_lossy(bytes).into_owned());
        }
        now += Duration::from_millis(1);
    }
    // Let every timer run out; nothing may panic there either.
    for _ in 0..200 {
        now += Duration::from_secs(1);
        ep.handle_input(now, Input::Timeout);
        while ep.poll_output().is_some() {}
    }
    assert!(
        panics.is_empty(),
        "{} inputs panicked, e.g.: {:?}",
        panics.len(),
        panics.first()
    );
    let (servers, clients, contexts) = ep.in_flight();
    assert_eq!(
        (servers, clients, contexts),
        (0, 0, 0),
        "everything ends once its timers ran"
    );
}

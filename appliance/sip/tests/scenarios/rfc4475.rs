//! RFC 4475 §3.1 torture messages through the parse edge and the endpoint, against the table
//! in `tests/rfc4475/EXPECTED.tsv`.

use fieldmesh_sip::message::{Message, ParseError, parse};
use fieldmesh_sip::{Config, Datagram, Endpoint, Input, MemoryStorage, Output, Transport};
use std::time::Instant;

struct Row {
    name: String,
    kind: String,
    expect: String,
}

fn table() -> Vec<Row> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/rfc4475");
    let text = std::fs::read_to_string(format!("{dir}/EXPECTED.tsv")).expect("EXPECTED.tsv");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Row {
                name: cols[0].into(),
                kind: cols[2].into(),
                expect: cols[3].trim().into(),
            }
        })
        .collect()
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/rfc4475/{name}.dat", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What the endpoint sent back for one message: the status line, or nothing.
fn answer(bytes: Vec<u8>) -> Option<String> {
    #[allow(clippy::disallowed_methods)] // the test's one starting instant
    let now = Instant::now();
    let mut ep = Endpoint::new(now, Config::default(), MemoryStorage::default());
    let d = Datagram {
        transport: Transport::Udp,
        local: "192.0.2.1:5060".parse().expect("addr"),
        remote: "192.0.2.99:5060".parse().expect("addr"),
        bytes: bytes.into(),
    };
    ep.handle_input(now, Input::Datagram(d));
    let mut finals = Vec::new();
    while let Some(out) = ep.poll_output() {
        if let Output::Transmit(t) = out {
            let text = String::from_utf8_lossy(&t.bytes).into_owned();
            let line = text.lines().next().unwrap_or("").to_string();
            if !line.starts_with("SIP/2.0 100 ") {
                finals.push(line);
            }
        }
    }
    finals.into_iter().next()
}

#[test]
fn every_torture_message_gets_the_outcome_the_rfc_expects() {
    let mut wrong = Vec::new();
    for row in table() {
        let bytes = fixture(&row.name);
        let parsed = parse(&bytes, false);
        let reply = answer(bytes);
        let ok = match (row.kind.as_str(), row.expect.as_str()) {
            ("response", "drop") => {
                matches!(parsed, Err(ParseError::Response(_))) && reply.is_none()
            }
            ("response", _) => matches!(parsed, Ok(Message::Response(_))),
            (_, "process") => matches!(parsed, Ok(Message::Request(_))),
            (_, code) => reply.as_deref().is_some_and(|line| {
                line.starts_with(&format!("SIP/2.0 {code} ")) && line.len() > "SIP/2.0 400 ".len()
            }),
        };
        if !ok {
            wrong.push(format!(
                "{} (expect {}): parsed {:?}, answered {:?}",
                row.name,
                row.expect,
                parsed.map(|_| "ok"),
                reply
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of the torture messages are wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

//! RFC 4475 torture messages through the running daemon (issue 3): every fixture of
//! `appliance/sip/tests/rfc4475/` is sent over UDP from its own loopback socket, and what comes
//! back must match `EXPECTED.tsv`: a valid request is processed (some response; an ACK gets
//! none), an invalid one gets the expected code with a reason phrase, a `drop` gets nothing.
//! Afterwards the node still answers OPTIONS. All mismatches are reported together.

use crate::raw;
use fieldmesh_tests::node::Node;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../appliance/sip/tests/rfc4475"
);
/// How long to wait for an answer to each fixture.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
enum Expected {
    /// Valid: processed (any response, or none for ACK and for responses).
    Process,
    /// Invalid: answered with this status code and a reason phrase.
    Code(u16),
    /// Dropped: nothing comes back.
    Drop,
}

struct Row {
    name: String,
    file: PathBuf,
    expected: Expected,
}

fn rows() -> Vec<Row> {
    let dir = Path::new(FIXTURES);
    let table = dir.join("EXPECTED.tsv");
    let text = std::fs::read_to_string(&table).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the RFC 4475 fixtures of issue 3)",
            table.display()
        )
    });
    let mut rows = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
        let (Some(name), Some(outcome)) = (cols.first(), cols.get(1)) else {
            panic!("{}: bad row {line:?}", table.display())
        };
        let expected = match *outcome {
            "process" => Expected::Process,
            "drop" => Expected::Drop,
            code => match code.parse() {
                Ok(code) => Expected::Code(code),
                Err(_) if rows.is_empty() => continue, // the header row
                Err(_) => panic!("{}: unknown outcome {code:?} in {line:?}", table.display()),
            },
        };
        rows.push(Row {
            name: name.to_string(),
            file: dir.join(name),
            expected,
        });
    }
    assert!(!rows.is_empty(), "{} lists no fixture", table.display());
    rows
}

/// What the node sent back for one fixture within the timeout: the responses' status lines.
fn answers(node: SocketAddr, bytes: &[u8]) -> Result<Vec<(u16, String)>, String> {
    let sock = raw::udp_socket();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    sock.send_to(bytes, node)
        .map_err(|e| format!("send: {e}"))?;
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => match raw::status_line(&buf[..n]) {
                Some(status) => {
                    let is_final = status.0 >= 200;
                    got.push(status);
                    if is_final {
                        break;
                    }
                }
                None => {
                    return Err(format!(
                        "not a SIP response: {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    ));
                }
            },
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
    Ok(got)
}

/// `None` if what came back matches the expectation, else why not.
fn check(row: &Row, bytes: &[u8], got: &[(u16, String)]) -> Option<String> {
    let start = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).to_string();
    let is_response = start.starts_with("SIP/");
    let is_ack = start.starts_with("ACK ");
    let finals: Vec<&(u16, String)> = got.iter().filter(|(c, _)| *c >= 200).collect();
    match row.expected {
        Expected::Process if is_ack || is_response => (!got.is_empty()).then(|| {
            format!(
                "processed {} must get no response, got {got:?}",
                if is_ack { "ACK" } else { "response" }
            )
        }),
        Expected::Process => got
            .is_empty()
            .then(|| "valid request got no response within 2 s".to_string()),
        Expected::Drop => (!got.is_empty()).then(|| format!("must be dropped, got {got:?}")),
        Expected::Code(code) => match finals.first() {
            Some((c, reason)) if *c == code && !reason.is_empty() => None,
            Some((c, reason)) if *c == code => {
                Some(format!("got {c} without a reason phrase ({reason:?})"))
            }
            Some(_) | None => Some(format!("expected {code}, got {got:?}")),
        },
    }
}

#[test]
fn every_rfc4475_torture_message_gets_its_expected_outcome_and_the_node_survives() {
    let node = Node::start();
    let rows = rows();
    let results: Vec<(String, Option<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = rows
            .iter()
            .map(|row| {
                let sip = node.sip;
                scope.spawn(move || {
                    let bytes = match std::fs::read(&row.file) {
                        Ok(b) => b,
                        Err(e) => {
                            return (
                                row.name.clone(),
                                Some(format!("{}: {e}", row.file.display())),
                            );
                        }
                    };
                    let verdict = match answers(sip, &bytes) {
                        Ok(got) => {
                            eprintln!("{:<28} expected {:?}: got {got:?}", row.name, row.expected);
                            check(row, &bytes, &got)
                        }
                        Err(e) => Some(e),
                    };
                    (row.name.clone(), verdict)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("fixture thread panicked"))
            .collect()
    });
    let mismatches: Vec<String> = results
        .into_iter()
        .filter_map(|(name, why)| why.map(|w| format!("  {name}: {w}")))
        .collect();
    let options = raw::udp_options_200(node.sip, Duration::from_secs(3));
    assert!(
        mismatches.is_empty() && options.is_some(),
        "{} of {} RFC 4475 fixtures did not get their expected outcome:\n{}\nOPTIONS afterwards: {options:?}",
        mismatches.len(),
        rows.len(),
        mismatches.join("\n")
    );
}

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
    is_response: bool,
    expected: Expected,
}

/// The rows of `EXPECTED.tsv` (columns found by the header: `name`, `kind`, `expect`); each
/// fixture is `NAME.dat` beside it.
fn rows() -> Vec<Row> {
    let dir = Path::new(FIXTURES);
    let table = dir.join("EXPECTED.tsv");
    let text = std::fs::read_to_string(&table).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the RFC 4475 fixtures of issue 3)",
            table.display()
        )
    });
    let mut lines = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
    let header: Vec<&str> = lines
        .next()
        .expect("EXPECTED.tsv header")
        .split('\t')
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h.trim() == name)
            .unwrap_or_else(|| panic!("{}: no {name:?} column in {header:?}", table.display()))
    };
    let (name_col, kind_col, expect_col) = (column("name"), column("kind"), column("expect"));
    let rows: Vec<Row> = lines
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').map(str::trim).collect();
            let col = |i: usize| {
                *cols
                    .get(i)
                    .unwrap_or_else(|| panic!("{}: short row {line:?}", table.display()))
            };
            let expected = match col(expect_col) {
                "process" => Expected::Process,
                "drop" => Expected::Drop,
                code => Expected::Code(code.parse().unwrap_or_else(|_| {
                    panic!("{}: bad expect {code:?} in {line:?}", table.display())
                })),
            };
            let name = col(name_col).to_string();
            Row {
                file: dir.join(format!("{name}.dat")),
                name,
                is_response: col(kind_col) == "response",
                expected,
            }
        })
        .collect();
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
    let is_response = row.is_response;
    let is_ack = bytes.starts_with(b"ACK ");
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

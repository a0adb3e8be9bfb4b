//! Bad input from the network (issue 3): a flood of garbage datagrams, oversized and non-SIP
//! TCP streams. None may stop the node from answering OPTIONS.

use crate::raw::{self, TcpAnswer};
use fieldmesh_tests::node::Node;
use std::net::SocketAddr;
use std::time::Duration;

/// xorshift64*: a seeded generator, so every run sends the same garbage.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Well-formed messages that the flood cuts short and corrupts.
fn templates(node: SocketAddr) -> Vec<String> {
    let head = |first: &str, cseq: &str| {
        format!(
            "{first}\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-junk\r\nFrom: <sip:junk@127.0.0.1>;tag=j\r\n\
             To: <sip:nobody@{node}>\r\nCall-ID: junk@127.0.0.1\r\nCSeq: 1 {cseq}\r\nMax-Forwards: 70\r\n"
        )
    };
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n";
    vec![
        format!(
            "{}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            head(&format!("INVITE sip:nobody@{node} SIP/2.0"), "INVITE"),
            sdp.len()
        ),
        format!(
            "{}Content-Length: 0\r\n\r\n",
            head(&format!("OPTIONS sip:{node} SIP/2.0"), "OPTIONS")
        ),
        format!(
            "{}Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
            head(&format!("MESSAGE sip:nobody@{node} SIP/2.0"), "MESSAGE")
        ),
        format!(
            "{}Content-Length: 0\r\n\r\n",
            head("SIP/2.0 200 OK", "INVITE")
        ),
    ]
}

#[test]
fn ten_thousand_garbage_datagrams_leave_the_node_answering_options_within_a_second() {
    let node = Node::start();
    let templates = templates(node.sip);
    let flood = raw::udp_socket();
    let mut rng = Rng(0x5eed_0003_f1e1_d0e5);
    let mut datagram = Vec::with_capacity(1500);
    let mut send_errors = 0;
    for i in 0..10_000 {
        datagram.clear();
        if i % 2 == 0 {
            let len = 1 + rng.below(1400);
            datagram.extend((0..len).map(|_| rng.next() as u8));
        } else {
            let t = templates[rng.below(templates.len())].as_bytes();
            datagram.extend_from_slice(&t[..1 + rng.below(t.len() - 1)]);
            if rng.below(2) == 0 {
                let at = rng.below(datagram.len());
                datagram[at] = rng.next() as u8;
            }
        }
        // Loopback drops what the node cannot take; a refused send only means the same.
        if flood.send_to(&datagram, node.sip).is_err() {
            send_errors += 1;
        }
    }
    let latency = raw::udp_options_200(node.sip, Duration::from_secs(5));
    eprintln!(
        "OPTIONS answered {latency:?} after 10,000 garbage datagrams ({send_errors} sends refused)"
    );
    let latency = latency.expect("the node answers OPTIONS after 10,000 garbage datagrams");
    assert!(
        latency < Duration::from_secs(1),
        "OPTIONS took {latency:?} after the flood (limit 1 s)"
    );
}

/// The node answers OPTIONS 200 over UDP and over a new TCP connection.
fn assert_still_answers(node: &Node, after: &str) {
    let udp = raw::udp_options_200(node.sip, Duration::from_secs(3));
    assert!(udp.is_some(), "no 200 for OPTIONS over UDP after {after}");
    assert_eq!(
        raw::tcp_options(node.sip),
        TcpAnswer::Status(200),
        "OPTIONS over TCP after {after}"
    );
}

fn message_head(node: SocketAddr, content_length: usize) -> String {
    format!(
        "MESSAGE sip:nobody@{node} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-big\r\n\
         From: <sip:big@127.0.0.1>;tag=big\r\nTo: <sip:nobody@{node}>\r\nCall-ID: big@127.0.0.1\r\n\
         CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\nContent-Length: {content_length}\r\n\r\n"
    )
}

#[test]
fn a_tcp_message_with_a_100000_byte_body_gets_513_or_the_connection_closed() {
    let node = Node::start();
    let mut s = raw::tcp_connect(node.sip);
    let body = vec![b'a'; 100_000];
    raw::tcp_send(
        &mut s,
        &[message_head(node.sip, body.len()).as_bytes(), &body],
    );
    let answer = raw::tcp_answer(&mut s, Duration::from_secs(5));
    eprintln!("the node answered {answer:?}");
    assert!(
        matches!(answer, TcpAnswer::Status(513) | TcpAnswer::Closed),
        "a 100,000-byte MESSAGE over TCP got {answer:?}; expected 513 or a closed connection"
    );
    assert_still_answers(&node, "a 100,000-byte TCP message");
}

#[test]
fn a_tcp_header_section_over_64_kib_without_an_end_gets_513_or_the_connection_closed() {
    let node = Node::start();
    let mut s = raw::tcp_connect(node.sip);
    let start = format!(
        "MESSAGE sip:nobody@{} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-pad\r\n",
        node.sip
    );
    let line = format!("X-Pad: {}\r\n", "p".repeat(90));
    let pad = line.repeat(70 * 1024 / line.len());
    raw::tcp_send(&mut s, &[start.as_bytes(), pad.as_bytes()]);
    let answer = raw::tcp_answer(&mut s, Duration::from_secs(5));
    eprintln!("the node answered {answer:?}");
    assert!(
        matches!(answer, TcpAnswer::Status(513) | TcpAnswer::Closed),
        "70 KiB of headers without an end got {answer:?}; expected 513 or a closed connection"
    );
    assert_still_answers(&node, "70 KiB of unterminated TCP headers");
}

#[test]
fn a_tcp_connection_that_does_not_speak_sip_is_closed() {
    let node = Node::start();
    let garbage: [&[u8]; 2] = [
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x00\xff\xfe binary, not SIP\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ];
    for bytes in garbage {
        let mut s = raw::tcp_connect(node.sip);
        raw::tcp_send(&mut s, &[bytes]);
        assert!(
            raw::tcp_closed_within(&mut s, Duration::from_secs(5)),
            "the node kept a TCP connection open 5 s after {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert_still_answers(&node, "non-SIP TCP connections");
}

//! Raw SIP over loopback sockets, for what no SIP client sends: torture messages, garbage,
//! oversized TCP messages. Every read has a timeout and every loop a deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// A UDP socket on 127.0.0.1 with a free port.
pub(crate) fn udp_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1")
}

/// An OPTIONS request for the node itself (Request-URI without a user), sent from `from`.
pub(crate) fn options(node: SocketAddr, from: SocketAddr, transport: &str, n: u32) -> String {
    let id = format!("{}-{n}", std::process::id());
    format!(
        "OPTIONS sip:{node} SIP/2.0\r\nVia: SIP/2.0/{transport} {from};branch=z9hG4bK-probe-{id}\r\n\
         From: <sip:probe@{from}>;tag=probe-{id}\r\nTo: <sip:{node}>\r\nCall-ID: probe-{id}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Status code and reason phrase of a SIP response, if `bytes` starts with one.
pub(crate) fn status_line(bytes: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next()?;
    let rest = line.strip_prefix("SIP/2.0 ")?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((code.parse().ok()?, reason.trim().to_string()))
}

/// Sends OPTIONS over UDP, again every 250 ms, until a 200 arrives; returns the time since the
/// first send, or `None` after `give_up`.
pub(crate) fn udp_options_200(node: SocketAddr, give_up: Duration) -> Option<Duration> {
    let sock = udp_socket();
    let from = sock.local_addr().expect("local address");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("read timeout");
    let request = options(node, from, "UDP", from.port().into());
    let start = Instant::now();
    let mut next_send = start;
    let mut buf = [0u8; 65536];
    while start.elapsed() < give_up {
        if Instant::now() >= next_send {
            sock.send_to(request.as_bytes(), node)
                .expect("send OPTIONS over UDP");
            next_send += Duration::from_millis(250);
        }
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if status_line(&buf[..n]).is_some_and(|(code, _)| code == 200) => {
                return Some(start.elapsed());
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => eprintln!("UDP OPTIONS probe: {e}"),
        }
    }
    None
}

/// What came back on a TCP connection.
#[derive(Debug, PartialEq)]
pub(crate) enum TcpAnswer {
    /// A SIP response with this status code arrived.
    Status(u16),
    /// The node closed (or reset) the connection without a SIP response.
    Closed,
    /// Nothing within the timeout, and the connection is still open.
    Silent,
}

/// Connects to the node over TCP, with 5 s read and write timeouts.
pub(crate) fn tcp_connect(node: SocketAddr) -> TcpStream {
    let s =
        TcpStream::connect_timeout(&node, Duration::from_secs(2)).expect("TCP connect to the node");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .expect("write timeout");
    s
}

/// Writes `parts` in order; stops quietly if the node closed the connection meanwhile.
pub(crate) fn tcp_send(s: &mut TcpStream, parts: &[&[u8]]) {
    for part in parts {
        if let Err(e) = s.write_all(part) {
            eprintln!("TCP write stopped: {e} (the node closed the connection?)");
            return;
        }
    }
}

/// Reads until a whole response head, EOF, or `timeout`.
pub(crate) fn tcp_answer(s: &mut TcpStream, timeout: Duration) -> TcpAnswer {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => {
                return status_line(&got).map_or(TcpAnswer::Closed, |(c, _)| TcpAnswer::Status(c));
            }
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n")
                    && let Some((code, _)) = status_line(&got)
                {
                    return TcpAnswer::Status(code);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return TcpAnswer::Closed,
        }
    }
    TcpAnswer::Silent
}

/// Reads until the node closes the connection; `false` if it is still open after `timeout`.
pub(crate) fn tcp_closed_within(s: &mut TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 8192];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// OPTIONS over a new TCP connection; the status code that came back.
pub(crate) fn tcp_options(node: SocketAddr) -> TcpAnswer {
    let mut s = tcp_connect(node);
    let from = s.local_addr().expect("local address");
    let request = options(node, from, "TCP", from.port().into());
    tcp_send(&mut s, &[request.as_bytes()]);
    tcp_answer(&mut s, Duration::from_secs(5))
}

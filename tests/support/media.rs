//! Checks for the media relay's end-to-end tests (issue 5): two appliances in the lab with
//! phones behind each, what the phones' SDP says, the relay's figures in the status API, RTP
//! sent and counted by the test itself inside a phone namespace, random loss on the mesh with
//! nftables, and gaps in a recorded tone.
//!
//! Like [`crate::audio`], nothing here shares code with the appliance's media crate: RTP and
//! SDP are read with a few lines of our own, so a bug there cannot hide behind shared code.

use crate::audio::Audio;
use crate::impair::Impairment;
use crate::lab::{
    Appliance, Lab, Link, PHONE_SIDE_IP, ROUTE_WAIT, in_netns, wait_neighbours, wait_route,
};
use crate::node::{Node, NodeOptions};
use crate::wait::wait_until_why;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The relay ports every lab appliance gets (`--media-ports`), narrower than the default so
/// the tests also show the flag is honoured.
pub const MEDIA_PORTS: (u16, u16) = (21000, 21099);

// ---- The lab: A and B, one phone namespace each ----

/// Two appliances, A on the lab's first link and B on `b_link` (the same link, or one behind
/// an impairment hop), both running and seeing each other.
pub struct MediaLab {
    /// A's and B's daemons (dropped before the lab, which then removes the namespaces).
    pub nodes: [Node; 2],
    pub a: Appliance,
    pub b: Appliance,
    /// B's mesh link.
    pub b_link: Link,
    pub lab: Lab,
}

impl MediaLab {
    /// A and B on one bridge, or with B behind an impairment hop if `impairment` is given.
    /// Each runs with `--media-ports` [`MEDIA_PORTS`].
    pub fn new(name: &str, impairment: Option<Impairment>) -> MediaLab {
        MediaLab::with_config(name, impairment, None)
    }

    /// [`MediaLab::new`] with extra configuration (TOML) for both appliances.
    pub fn with_config(name: &str, impairment: Option<Impairment>, toml: Option<&str>) -> MediaLab {
        let lab = Lab::new(name);
        let a = lab.appliance("a");
        let b_link = match impairment {
            Some(i) => lab.impaired_link(&lab.mesh(), i),
            None => lab.mesh(),
        };
        let b = lab.appliance_on("b", &[&b_link]);
        let opts = || NodeOptions {
            extra_args: vec![
                "--media-ports".into(),
                format!("{}-{}", MEDIA_PORTS.0, MEDIA_PORTS.1),
            ],
            config_toml: toml.map(str::to_string),
            ..NodeOptions::default()
        };
        let nodes = [lab.start_node(&a, opts()), lab.start_node(&b, opts())];
        wait_neighbours(&[&nodes[0], &nodes[1]], Duration::from_secs(15));
        MediaLab {
            nodes,
            a,
            b,
            b_link,
            lab,
        }
    }

    pub fn node_a(&self) -> &Node {
        &self.nodes[0]
    }

    pub fn node_b(&self) -> &Node {
        &self.nodes[1]
    }

    /// Waits until A routes `on_b` to B and B routes `on_a` to A (both registered already).
    pub fn wait_routes(&self, on_a: &str, on_b: &str) {
        let [na, nb] = &self.nodes;
        wait_route(na, on_b, nb, self.b.mesh_sip(), ROUTE_WAIT, |_| true);
        wait_route(nb, on_a, na, self.a.mesh_sip(), ROUTE_WAIT, |_| true);
    }

    /// Registers a sipp phone listening on `port` in B's phone namespace as `ext`, and waits
    /// until A routes `ext` to B.
    pub fn register_on_b(&self, ext: &str, port: u16) {
        self.b.register(ext, port, 300);
        wait_route(
            &self.nodes[0],
            ext,
            &self.nodes[1],
            self.b.mesh_sip(),
            ROUTE_WAIT,
            |_| true,
        );
    }

    /// Prints both appliances' `calls` and `recent_calls`.
    pub fn print_calls(&self) {
        for node in &self.nodes {
            let status = node.status();
            for (what, list) in [
                ("live", &status["calls"]),
                ("ended", &status["recent_calls"]),
            ] {
                for call in list.as_array().into_iter().flatten() {
                    eprintln!("{} {what} call: {}", node.label, describe_call(call));
                }
            }
        }
    }
}

// ---- The status API's call figures ----

/// The `recent_calls` (ended) of one status JSON.
pub fn recent_calls(status: &serde_json::Value) -> Vec<serde_json::Value> {
    status["recent_calls"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until `node` lists `n` ended calls; returns them.
pub fn wait_recent_calls(node: &Node, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
    let what = format!("{} to list {n} ended call(s) in recent_calls", node.label);
    wait_until_why(&what, timeout, || {
        let status = node.status();
        let calls = recent_calls(&status);
        if calls.len() >= n {
            Ok(calls)
        } else {
            Err(format!(
                "calls {} recent_calls {}",
                status["calls"], status["recent_calls"]
            ))
        }
    })
}

/// Every leg of a call JSON, with its stream's `media` and `transcoded`.
pub fn legs(call: &serde_json::Value) -> Vec<(String, Option<String>, serde_json::Value)> {
    let mut out = Vec::new();
    for stream in call["streams"].as_array().into_iter().flatten() {
        let media = stream["media"].as_str().unwrap_or("?").to_string();
        let transcoded = stream["transcoded"].as_str().map(String::from);
        for leg in stream["legs"].as_array().into_iter().flatten() {
            out.push((media.clone(), transcoded.clone(), leg.clone()));
        }
    }
    out
}

/// One line for a call: id, duration, and per leg packets, loss, jitter, RTT, MOS.
pub fn describe_call(call: &serde_json::Value) -> String {
    let mut s = format!(
        "{} {:.1} s{}",
        call["call_id"].as_str().unwrap_or("?"),
        call["duration_s"].as_f64().unwrap_or(f64::NAN),
        if call["echo"] == true { " (echo)" } else { "" }
    );
    for (media, transcoded, leg) in legs(call) {
        s.push_str(&format!(
            "\n    {media}{} {:>6} from {}: {} packets, {} lost ({:.2} %), jitter {:.1} ms, \
             rtt {} ms, MOS {:.2}, {} dropped",
            transcoded.map(|t| format!(" [{t}]")).unwrap_or_default(),
            leg["leg"].as_str().unwrap_or("?"),
            leg["remote"].as_str().unwrap_or("-"),
            leg["packets"],
            leg["lost"],
            leg["loss_pct"].as_f64().unwrap_or(f64::NAN),
            leg["jitter_ms"].as_f64().unwrap_or(f64::NAN),
            leg["rtt_ms"]
                .as_f64()
                .map_or("-".to_string(), |v| format!("{v:.1}")),
            leg["mos"].as_f64().unwrap_or(f64::NAN),
            leg["dropped"],
        ));
    }
    s
}

/// Lines of a daemon's log that report a call's quality (`call quality ... call_id=...`).
pub fn quality_lines(node: &Node) -> Vec<String> {
    node.log_text()
        .lines()
        .filter(|l| l.contains("call quality"))
        .map(String::from)
        .collect()
}

// ---- SDP as a phone saw it ----

/// One `m=` section of an SDP body.
#[derive(Clone, Debug, Default)]
pub struct MediaDesc {
    /// `audio`, `video`, `text`, ...
    pub kind: String,
    pub port: u16,
    /// Payload formats in order (`0`, `8`, `101`, ...).
    pub formats: Vec<String>,
    /// Its `c=` address, or the session's.
    pub addr: Option<String>,
    /// Its `a=` lines, without `a=`.
    pub attrs: Vec<String>,
}

impl MediaDesc {
    /// The encoding name of payload type `pt` (`PCMU/8000`), from its `a=rtpmap`.
    pub fn rtpmap(&self, pt: &str) -> Option<String> {
        let prefix = format!("rtpmap:{pt} ");
        self.attrs
            .iter()
            .find_map(|a| a.strip_prefix(&prefix).map(|v| v.trim().to_string()))
    }

    /// The payload type whose rtpmap starts with `name` (case-insensitive), e.g.
    /// `telephone-event`.
    pub fn pt_of(&self, name: &str) -> Option<u8> {
        let name = name.to_ascii_lowercase();
        self.formats.iter().find_map(|pt| {
            let map = self.rtpmap(pt)?.to_ascii_lowercase();
            if map.starts_with(&name) {
                pt.parse().ok()
            } else {
                None
            }
        })
    }

    /// Where the phone sends this stream.
    pub fn target(&self) -> Option<SocketAddr> {
        format!("{}:{}", self.addr.as_deref()?, self.port)
            .parse()
            .ok()
    }
}

/// An SDP body, split into its media sections.
#[derive(Clone, Debug, Default)]
pub struct Sdp {
    pub text: String,
    pub media: Vec<MediaDesc>,
}

impl Sdp {
    /// The first section of `kind`.
    pub fn first(&self, kind: &str) -> Option<&MediaDesc> {
        self.media.iter().find(|m| m.kind == kind)
    }
}

/// The SDP body of a SIP message's text (after the blank line), if it has one.
pub fn sdp_of(message: &str) -> Option<Sdp> {
    let message = message.replace("\r\n", "\n");
    let (_, body) = message.split_once("\n\n")?;
    body.trim_start()
        .starts_with("v=0")
        .then(|| parse_sdp(body))
}

/// Parses an SDP body.
pub fn parse_sdp(body: &str) -> Sdp {
    let mut session_addr = None;
    let mut media: Vec<MediaDesc> = Vec::new();
    for line in body.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix("c=") {
            let addr = c.split_whitespace().nth(2).map(String::from);
            match media.last_mut() {
                Some(m) => m.addr = addr,
                None => session_addr = addr,
            }
        } else if let Some(m) = line.strip_prefix("m=") {
            let mut f = m.split_whitespace();
            media.push(MediaDesc {
                kind: f.next().unwrap_or_default().to_string(),
                port: f.next().and_then(|p| p.parse().ok()).unwrap_or(0),
                formats: f.skip(1).map(String::from).collect(),
                addr: None,
                attrs: Vec::new(),
            });
        } else if let (Some(a), Some(m)) = (line.strip_prefix("a="), media.last_mut()) {
            m.attrs.push(a.to_string());
        }
    }
    for m in &mut media {
        if m.addr.is_none() {
            m.addr = session_addr.clone();
        }
    }
    Sdp {
        text: body.to_string(),
        media,
    }
}

/// Fails unless `sdp`, which a phone received, points every active stream at its own
/// appliance's phone side (10.42.0.1, a port in [`MEDIA_PORTS`], `a=rtcp` likewise) and holds
/// no mesh address, no other phone's address and no ICE candidate.
#[track_caller]
pub fn assert_anchored(what: &str, sdp: &Sdp) {
    let own = PHONE_SIDE_IP.to_string();
    assert!(!sdp.media.is_empty(), "{what}: no m= line in\n{}", sdp.text);
    for m in sdp.media.iter().filter(|m| m.port != 0) {
        assert_eq!(
            m.addr.as_deref(),
            Some(own.as_str()),
            "{what}: m={} is not sent to the phone's own appliance:\n{}",
            m.kind,
            sdp.text
        );
        assert!(
            (MEDIA_PORTS.0..=MEDIA_PORTS.1).contains(&m.port),
            "{what}: m={} port {} is outside the relay range {MEDIA_PORTS:?}:\n{}",
            m.kind,
            m.port,
            sdp.text
        );
        for a in &m.attrs {
            if let Some(rtcp) = a.strip_prefix("rtcp:") {
                let mut f = rtcp.split_whitespace();
                let port: u16 = f.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                assert!(
                    (MEDIA_PORTS.0..=MEDIA_PORTS.1).contains(&port)
                        && f.nth(2).is_none_or(|ip| ip == own),
                    "{what}: a={a} does not name the relay:\n{}",
                    sdp.text
                );
            }
        }
    }
    for bad in ["10.99.", "a=candidate", "a=ice-"] {
        assert!(
            !sdp.text.contains(bad),
            "{what}: the SDP holds {bad:?}:\n{}",
            sdp.text
        );
    }
    for line in sdp.text.lines().filter(|l| l.starts_with("c=")) {
        assert!(
            line.contains(&own),
            "{what}: {line} is not the phone's appliance:\n{}",
            sdp.text
        );
    }
}

// ---- RTP sent and received by the test inside a phone namespace ----

/// One datagram an [`RtpPeer`] received.
#[derive(Clone, Debug)]
pub struct Packet {
    pub from: SocketAddr,
    pub at: Instant,
    /// RTP header fields (`pt` 0 and the rest 0 for a datagram that is not RTP).
    pub rtp: bool,
    pub pt: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

/// Parses one datagram as RTP (version 2, not an RTCP packet type), skipping CSRCs and a
/// header extension.
pub fn parse_rtp(from: SocketAddr, at: Instant, d: &[u8]) -> Packet {
    let mut p = Packet {
        from,
        at,
        rtp: false,
        pt: 0,
        marker: false,
        seq: 0,
        timestamp: 0,
        ssrc: 0,
        payload: d.to_vec(),
    };
    if d.len() < 12 || d[0] >> 6 != 2 || (192..=223).contains(&d[1]) {
        return p;
    }
    let cc = usize::from(d[0] & 0x0f);
    let mut start = 12 + 4 * cc;
    if d[0] & 0x10 != 0 && d.len() >= start + 4 {
        start += 4 + 4 * usize::from(u16::from_be_bytes([d[start + 2], d[start + 3]]));
    }
    if start > d.len() {
        return p;
    }
    let mut end = d.len();
    if d[0] & 0x20 != 0 {
        end = end.saturating_sub(usize::from(d[d.len() - 1])).max(start);
    }
    p.rtp = true;
    p.marker = d[1] & 0x80 != 0;
    p.pt = d[1] & 0x7f;
    p.seq = u16::from_be_bytes([d[2], d[3]]);
    p.timestamp = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    p.ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
    p.payload = d[start..end].to_vec();
    p
}

/// A UDP socket inside a phone namespace that records every datagram it receives and sends
/// RTP streams from the same port (symmetric RTP, so the appliance can latch on it).
pub struct RtpPeer {
    pub addr: SocketAddr,
    socket: UdpSocket,
    got: Arc<Mutex<Vec<Packet>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A stream for [`RtpPeer::send_stream`]: `count` packets of `payload_len` bytes, every
/// `interval`, timestamps advancing by `ts_step`. Payload byte 0-1 hold the sequence number
/// and the rest a pattern, so the receiver can tell the payload arrived unchanged.
#[derive(Clone, Copy, Debug)]
pub struct Stream {
    pub pt: u8,
    pub ssrc: u32,
    pub count: u16,
    pub interval: Duration,
    pub ts_step: u32,
    pub payload_len: usize,
}

/// The payload [`RtpPeer::send_stream`] puts in packet `i` of a stream.
pub fn stream_payload(ssrc: u32, i: u16, len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len)
        .map(|k| (k as u32).wrapping_mul(31).wrapping_add(ssrc) as u8)
        .collect();
    let tag = i.to_be_bytes();
    p[..2.min(len)].copy_from_slice(&tag[..2.min(len)]);
    p
}

impl RtpPeer {
    /// Binds `addr` inside `netns` and starts recording.
    pub fn start(netns: &str, addr: SocketAddr) -> RtpPeer {
        let socket = in_netns(netns, || UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("bind {addr} in {netns}: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let socket = socket.try_clone().expect("clone socket");
            let (got, stop) = (got.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        let p = parse_rtp(from, Instant::now(), &buf[..n]);
                        got.lock().expect("packets").push(p);
                    }
                }
            })
        };
        RtpPeer {
            addr,
            socket,
            got,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Packet> {
        self.got.lock().expect("packets").clone()
    }

    /// RTP packets received so far with payload type `pt`.
    pub fn rtp_with_pt(&self, pt: u8) -> Vec<Packet> {
        self.received()
            .into_iter()
            .filter(|p| p.rtp && p.pt == pt)
            .collect()
    }

    /// Counts of received datagrams by kind: `"PT 8"`, `"other"` (RTCP and non-RTP).
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for p in self.received() {
            let k = if p.rtp {
                format!("PT {}", p.pt)
            } else {
                "other".to_string()
            };
            *c.entry(k).or_insert(0) += 1;
        }
        c
    }

    /// Sends one datagram to `to`.
    pub fn send(&self, to: SocketAddr, datagram: &[u8]) {
        self.socket
            .send_to(datagram, to)
            .unwrap_or_else(|e| panic!("send from {} to {to}: {e}", self.addr));
    }

    /// Sends `stream` to `to`, paced by its interval (the stream's length is the scenario's
    /// time, not a wait).
    pub fn send_stream(&self, to: SocketAddr, s: Stream) {
        let start = Instant::now();
        for i in 0..s.count {
            let due = start + s.interval * u32::from(i);
            if let Some(left) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(left);
            }
            let mut d = Vec::with_capacity(12 + s.payload_len);
            d.push(0x80);
            d.push(s.pt | if i == 0 { 0x80 } else { 0 });
            d.extend_from_slice(&i.wrapping_add(1000).to_be_bytes());
            d.extend_from_slice(&(u32::from(i).wrapping_mul(s.ts_step)).to_be_bytes());
            d.extend_from_slice(&s.ssrc.to_be_bytes());
            d.extend_from_slice(&stream_payload(s.ssrc, i, s.payload_len));
            // A full socket buffer is not the relay's fault; count only what left.
            let _ = self.socket.send_to(&d, to);
        }
    }
}

impl Drop for RtpPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// RFC 4733 events in received packets of payload type `pt`: one digit per event (the
/// first packet of each, by RTP timestamp), in order. Event 0-9 → '0'-'9', 10 '*', 11 '#',
/// 12-15 'A'-'D'.
pub fn dtmf_digits(packets: &[Packet], pt: u8) -> String {
    let mut seen = Vec::new();
    let mut digits = String::new();
    for p in packets.iter().filter(|p| p.rtp && p.pt == pt) {
        let Some(&event) = p.payload.first() else {
            continue;
        };
        if seen.contains(&p.timestamp) {
            continue;
        }
        seen.push(p.timestamp);
        digits.push(match event {
            0..=9 => char::from(b'0' + event),
            10 => '*',
            11 => '#',
            12..=15 => char::from(b'A' + event - 12),
            _ => '?',
        });
    }
    digits
}

// ---- Random loss on the mesh (nftables) ----

/// An nftables table in an appliance namespace that drops a share of the UDP datagrams it
/// sends on one interface to the relay's ports (the kernel has no netem; NOTES-clients.md §6).
/// It goes away with the namespace.
pub struct RandomLoss {
    netns: String,
    ifname: String,
}

impl RandomLoss {
    /// Drops `permille`/1000 of the UDP datagrams leaving `ifname` in `netns` for a port in
    /// [`MEDIA_PORTS`] (RTP and RTCP between the appliances; SIP and the overlay are spared).
    pub fn add(netns: &str, ifname: &str, permille: u32) -> RandomLoss {
        let (lo, hi) = MEDIA_PORTS;
        // nft 1.0.6 wants one statement per line.
        let rules = format!(
            "table inet fmloss {{\n\
             \x20 chain out {{\n\
             \x20   type filter hook output priority 0; policy accept;\n\
             \x20   oifname \"{ifname}\" udp dport {lo}-{hi} counter\n\
             \x20   oifname \"{ifname}\" udp dport {lo}-{hi} numgen random mod 1000 < {permille} counter drop\n\
             \x20 }}\n\
             }}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nft ({e}): apt-get install nftables"));
        child
            .stdin
            .take()
            .expect("nft stdin")
            .write_all(rules.as_bytes())
            .expect("write nft rules");
        let out = child.wait_with_output().expect("nft");
        assert!(
            out.status.success(),
            "nft in {netns}: {}\n{rules}",
            String::from_utf8_lossy(&out.stderr)
        );
        RandomLoss {
            netns: netns.to_string(),
            ifname: ifname.to_string(),
        }
    }

    /// (datagrams seen, datagrams dropped) so far.
    pub fn counts(&self) -> (u64, u64) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "nft",
                "list",
                "table",
                "inet",
                "fmloss",
            ])
            .output()
            .expect("nft list");
        let text = String::from_utf8_lossy(&out.stdout);
        let packets: Vec<u64> = text
            .lines()
            .filter_map(|l| {
                let rest = l.split_once("counter packets ")?.1;
                rest.split_whitespace().next()?.parse().ok()
            })
            .collect();
        (
            packets.first().copied().unwrap_or(0),
            packets.get(1).copied().unwrap_or(0),
        )
    }

    /// `mesh0 in fmlab-…-a: 12 of 400 dropped (3.0 %)`.
    pub fn describe(&self) -> String {
        let (seen, dropped) = self.counts();
        format!(
            "{} in {}: {dropped} of {seen} media datagrams dropped ({:.1} %)",
            self.ifname,
            self.netns,
            dropped as f64 * 100.0 / seen.max(1) as f64
        )
    }
}

// ---- Gaps in a recorded tone ----

/// Silences and dips in the steady part of a recorded tone ([`gaps`]).
#[derive(Clone, Debug)]
pub struct Gaps {
    /// Seconds analysed.
    pub seconds: f64,
    /// Median RMS of the 2 ms blocks: the tone's level.
    pub level: f64,
    /// Longest run of blocks more than 20 dB below the level, in ms.
    pub longest_silence_ms: f64,
    /// How many such runs last 20 ms or more.
    pub silences_20ms: usize,
    /// Longest run of blocks more than 6 dB below the level, in ms.
    pub longest_dip_ms: f64,
    /// Where the longest silence starts, in seconds from the file's start.
    pub silence_at_s: f64,
}

impl std::fmt::Display for Gaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} s analysed at RMS {:.3}: longest silence (< -20 dB) {:.0} ms at {:.2} s, {} \
             silences ≥ 20 ms, longest dip (< -6 dB) {:.0} ms",
            self.seconds,
            self.level,
            self.longest_silence_ms,
            self.silence_at_s,
            self.silences_20ms,
            self.longest_dip_ms
        )
    }
}

/// Finds gaps in a steady tone: skips `skip_start` and `skip_end` seconds, cuts the rest into
/// 2 ms blocks (whole periods of 1 and 2 kHz) and looks for runs of blocks far below the
/// median block's RMS. A frame a phone never decoded leaves no trace here (baresip records only
/// what it decodes); silence or a fade the appliance or the phone inserted does.
pub fn gaps(audio: &Audio, skip_start: f64, skip_end: f64) -> Gaps {
    let rate = f64::from(audio.rate);
    let block = (audio.rate as usize / 500).max(1);
    let block_ms = block as f64 * 1000.0 / rate;
    let x = audio.after(skip_start);
    let keep = x.len().saturating_sub((skip_end * rate) as usize);
    let x = &x[..keep];
    let levels: Vec<f64> = x.chunks_exact(block).map(crate::audio::rms).collect();
    let mut sorted = levels.clone();
    sorted.sort_by(f64::total_cmp);
    let level = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let runs = |below: f64| -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut start = None;
        for (i, &l) in levels.iter().enumerate() {
            match (l < below, start) {
                (true, None) => start = Some(i),
                (false, Some(s)) => {
                    out.push((s, i - s));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push((s, levels.len() - s));
        }
        out
    };
    let silences = runs(level * 0.1);
    let dips = runs(level * 0.5);
    let longest = silences
        .iter()
        .max_by_key(|r| r.1)
        .copied()
        .unwrap_or((0, 0));
    Gaps {
        seconds: x.len() as f64 / rate,
        level,
        longest_silence_ms: longest.1 as f64 * block_ms,
        silence_at_s: skip_start + longest.0 as f64 * block_ms / 1000.0,
        silences_20ms: silences
            .iter()
            .filter(|r| r.1 as f64 * block_ms >= 20.0)
            .count(),
        longest_dip_ms: dips.iter().map(|r| r.1).max().unwrap_or(0) as f64 * block_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::sine;

    #[test]
    fn a_tone_with_a_hole_has_a_gap_of_that_length() {
        let rate = 8000;
        let mut x = sine(rate, 1000.0, 2.0, 0.5);
        x.extend(std::iter::repeat_n(0.0, 8 * 40));
        x.extend(sine(rate, 1000.0, 2.0, 0.5));
        let audio = Audio {
            rate,
            channels: 1,
            samples: x,
        };
        let g = gaps(&audio, 0.5, 0.5);
        assert!((g.longest_silence_ms - 40.0).abs() <= 4.0, "{g}");
        assert_eq!(g.silences_20ms, 1, "{g}");
        assert!((g.silence_at_s - 2.0).abs() < 0.01, "{g}");
        let clean = Audio {
            rate: 48_000,
            channels: 1,
            samples: sine(48_000, 2000.0, 3.0, 0.5),
        };
        let g = gaps(&clean, 0.5, 0.5);
        assert_eq!(g.longest_silence_ms, 0.0, "{g}");
        assert_eq!(g.longest_dip_ms, 0.0, "{g}");
    }

    #[test]
    fn sdp_sections_get_the_session_address_and_their_formats() {
        let sdp = parse_sdp(
            "v=0\r\no=- 1 1 IN IP4 10.42.0.1\r\ns=-\r\nc=IN IP4 10.42.0.1\r\nt=0 0\r\n\
             m=audio 21000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=rtcp:21001\r\n\
             m=video 21002 RTP/AVP 96\r\nc=IN IP4 10.42.0.3\r\na=rtpmap:96 H264/90000\r\n",
        );
        assert_eq!(sdp.media.len(), 2);
        let audio = sdp.first("audio").expect("audio");
        assert_eq!(audio.target(), Some("10.42.0.1:21000".parse().unwrap()));
        assert_eq!(audio.pt_of("telephone-event"), Some(101));
        assert_eq!(audio.rtpmap("0").as_deref(), Some("PCMU/8000"));
        assert_eq!(
            sdp.first("video").unwrap().addr.as_deref(),
            Some("10.42.0.3")
        );
        assert_anchored(
            "audio only",
            &parse_sdp(&sdp.text.replace("10.42.0.3", "10.42.0.1")),
        );
    }

    #[test]
    fn rtp_headers_and_dtmf_events_are_read() {
        let from: SocketAddr = "10.42.0.1:21000".parse().unwrap();
        let now = Instant::now();
        let ev = |ts: u32, event: u8| {
            let mut d = vec![0x80, 101, 0, 1];
            d.extend_from_slice(&ts.to_be_bytes());
            d.extend_from_slice(&[0, 0, 0, 7, event, 0x0a, 0, 160]);
            parse_rtp(from, now, &d)
        };
        let p = [ev(100, 1), ev(100, 1), ev(900, 11), ev(1800, 10)];
        assert!(p[0].rtp && p[0].pt == 101 && p[0].ssrc == 7);
        assert_eq!(dtmf_digits(&p, 101), "1#*");
        assert!(!parse_rtp(from, now, &[0x80, 200, 0, 6, 0, 0, 0, 1]).rtp);
    }
}

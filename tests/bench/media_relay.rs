//! The media relay, fieldmesh beside rtpengine in the same run (issue 5's benchmark). It prints
//! figures and asserts none of them:
//!
//! ```sh
//! cargo build --release -p fieldmesh
//! cargo bench -p fieldmesh-tests --bench media_relay
//! FIELDMESH_BENCH_MEDIA_SECS=5 FIELDMESH_BENCH_MEDIA_RELAY_CALLS=10,100 \
//!     cargo bench -p fieldmesh-tests --bench media_relay
//! ```
//!
//! One appliance runs in a lab (`tests/support/lab.rs`); the bench plays both ends of its calls
//! with plain sockets:
//! - **the phone**: in the appliance's phone namespace (10.42.0.2), it registers extension 300
//!   at 10.42.0.1:5060 and answers every INVITE with 200 and PCMU;
//! - **another appliance**: in a second namespace on the mesh bridge (10.99.0.2), it sends
//!   `INVITE sip:300@10.99.0.1:5060;fm=peer`, as an appliance relaying a call does, with an
//!   SDP offer naming its own mesh address, then ACK, and BYE at the end of each step.
//!
//! The appliance anchors the media of such a call (phone side ↔ mesh side): each end is told
//! one of its relay ports, and RTP sent there reaches the other end. Each step sets up N calls
//! and sends 50 packets/s each way on each (20 ms of PCMU: 160 bytes + 12 bytes of RTP
//! header), paced evenly, from one socket per end. A relayed G.711 call is therefore **100
//! relayed packets/s** (50 each way; each packet enters and leaves the relay once). The bench counts every packet per call at
//! the far end (loss), and reads the one-way time from a timestamp in the payload; the same
//! stream sent straight through the appliance namespace's kernel (IP forwarding, no relay) gives
//! the floor, so "added" is relay p50 minus that floor.
//! - **relayed**: PCMU offered, PCMU answered: the relay forwards packets untouched. N steps
//!   through `FIELDMESH_BENCH_MEDIA_RELAY_CALLS` (10,50,100,200; the relay takes ≤200 calls,
//!   and runs with `--media-ports 20000-20999`, the default range: 250 streams).
//! - **rtpengine** (Debian `rtpengine-daemon`, userspace: `--table=-1`) runs in the same
//!   appliance namespace with the same two addresses, driven over its ng protocol (bencode over
//!   UDP on 127.0.0.1:2223 inside the namespace: offer, answer, delete), and relays the same
//!   streams from the same sockets, step by step after fieldmesh's step of the same N.
//! - **transcoded**: the mesh side offers only Opus (real Opus frames of a 440 Hz tone, 48 kHz
//!   mono, 32 kbit/s, made with libopus once and cycled), the appliance adds PCMU to the offer it
//!   sends its phone, the phone answers PCMU (a 1 kHz µ-law tone), so the relay decodes,
//!   resamples and re-encodes both directions: 100 transcoded 20 ms frames/s per call. Loss is
//!   frames sent minus frames the far end received, per call (the relay may add concealment
//!   frames at the end; a call never counts below 0), plus gaps in the relay's own sequence
//!   numbers. Steps: `FIELDMESH_BENCH_MEDIA_TRANSCODE_CALLS` (10,25,50,75,100).
//!
//! CPU is the relay process's own: utime + stime from `/proc/<pid>/stat` over the streaming
//! window (call setup excluded; 10 ms ticks, printed), so the figure holds although the
//! load generator shares the machine. µs per packet = CPU ÷ packets sent into the relay;
//! µs per frame = CPU ÷ frames sent into the transcoder. "Calls per core" extrapolates from the
//! µs of the largest step without loss: 1,000,000 ÷ (µs × 100). With 2+ cores, the relay
//! (every thread) is pinned to CPU 0 and the bench's senders and receivers to CPU 1
//! (`FIELDMESH_BENCH_PIN=0` turns that off), so "0 loss at N" means one core carried N calls.
//! Delivering a packet through a veth is kernel work charged to whoever sends it, for both
//! relays alike. Steps stop for a relay after one with more than 1 % loss.
//!
//! Safety: traffic only inside the lab's namespaces (and the ng socket on the appliance
//! namespace's loopback); every loop is bounded in count and time; only processes this bench
//! started are stopped, by PID; the lab deletes its namespaces on drop. Needs root and iproute2;
//! rtpengine is optional (without it the bench says so and goes on).
//!
//! The table goes to `target/bench/media-relay-<unix time>.md` and
//! `target/bench/media-relay-latest.md`. Uses the `fieldmesh` binary `tests/support/node.rs`
//! finds (the newest of target/{release,debug}, or `FIELDMESH_BIN`): build `--release`.

use fieldmesh_tests::host::{clock_ticks, cpu_model, cpu_ticks, pin, pss_bytes, which};
use fieldmesh_tests::lab::{Appliance, Lab, PHONE_IP, PHONE_SIDE_IP, SIP_PORT, in_netns};
use fieldmesh_tests::node::{Node, NodeOptions};
use fieldmesh_tests::trace::percentile;
use fieldmesh_tests::wait::wait_until;
use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{setsockopt, sockopt};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The extension the bench's phone registers.
const EXT: &str = "300";
/// The phone's SIP port (its Contact) and both ends' RTP port.
const PHONE_SIP_PORT: u16 = 5062;
const RTP_PORT: u16 = 40000;
/// The fake appliance's SIP port.
const PEER_SIP_PORT: u16 = 5060;
/// 20 ms of G.711 and the RTP header in front of it.
const G711_PAYLOAD: usize = 160;
const RTP_HEADER: usize = 12;
const FRAME: Duration = Duration::from_millis(20);
/// Relayed packets (or transcoded frames) per second on one call, both ways together.
const PER_CALL: f64 = 100.0;
/// The relay's limit (`RelayConfig::max_calls`); its default port range (`MEDIA_PORTS`) holds
/// 250 streams.
const MAX_CALLS: usize = 200;
const MEDIA_PORTS: (u16, u16) = (20000, 20999);
/// Opus's dynamic payload type in the mesh side's offer.
const OPUS_PT: u8 = 96;
/// rtpengine's ng port (inside the appliance namespace) and its RTP ports, clear of
/// fieldmesh's 20000-20999.
const NG: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 2223);
const RTPENGINE_PORTS: (u16, u16) = (30000, 31999);
/// Marks the bench's own stamped payloads.
const MAGIC: &[u8; 4] = b"FMBR";
/// After the senders stop, how long receivers keep counting (the transcoder's jitter buffer
/// still holds up to a few frames).
const DRAIN: Duration = Duration::from_millis(600);
/// More loss than this ends a relay's steps.
const GIVE_UP_LOSS_PCT: f64 = 1.0;
/// Socket buffers of the bench's RTP sockets (SO_*BUFFORCE: root, above rmem_max).
const SOCKET_BUFFER: usize = 8 << 20;

struct Settings {
    secs: u64,
    relay_calls: Vec<usize>,
    transcode_calls: Vec<usize>,
    pin: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let list = |key: &str, default: &[usize]| -> Vec<usize> {
            match std::env::var(key) {
                Ok(v) => {
                    let parsed: Option<Vec<usize>> = v
                        .split(',')
                        .map(|x| x.trim().parse::<usize>().ok())
                        .collect();
                    match parsed {
                        Some(mut l) if !l.is_empty() => {
                            for n in &mut l {
                                *n = (*n).clamp(1, MAX_CALLS);
                            }
                            l.truncate(8);
                            l
                        }
                        _ => {
                            eprintln!("media_relay bench: {key}={v:?} is not a list like 10,50");
                            std::process::exit(2);
                        }
                    }
                }
                Err(_) => default.to_vec(),
            }
        };
        let secs = match std::env::var("FIELDMESH_BENCH_MEDIA_SECS") {
            Ok(v) => v.trim().parse::<u64>().unwrap_or_else(|_| {
                eprintln!("media_relay bench: FIELDMESH_BENCH_MEDIA_SECS={v:?} is not a number");
                std::process::exit(2);
            }),
            Err(_) => 10,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Settings {
            secs: secs.clamp(2, 60),
            relay_calls: list("FIELDMESH_BENCH_MEDIA_RELAY_CALLS", &[10, 50, 100, 200]),
            transcode_calls: list(
                "FIELDMESH_BENCH_MEDIA_TRANSCODE_CALLS",
                &[10, 25, 50, 75, 100],
            ),
            pin: cores >= 2 && std::env::var("FIELDMESH_BENCH_PIN").map_or(true, |v| v != "0"),
        }
    }
}

fn main() {
    let cfg = Settings::from_env();
    for (tool, package) in [("ip", "iproute2"), ("bridge", "iproute2")] {
        if which(tool).is_none() {
            eprintln!("media_relay bench: `{tool}` missing (Debian package {package})");
            std::process::exit(2);
        }
    }
    let started = Instant::now();
    let binary = Node::binary();
    eprintln!("media_relay bench: binary {}", binary.display());
    let base = Instant::now();

    let lab = Lab::new("media-relay");
    // The appliance first, so it gets 10.99.0.1; the fake appliance is 10.99.0.2.
    let a = lab.appliance("a");
    let p = lab.appliance("p");
    let appliance_mesh = a.mesh_ip();
    let peer_ip = p.mesh_ip();
    // The default range (the tests' nodes get a narrower one): 500 pairs, 250 streams.
    let node = lab.start_node(
        &a,
        NodeOptions {
            extra_args: vec![
                "--media-ports".into(),
                format!("{}-{}", MEDIA_PORTS.0, MEDIA_PORTS.1),
            ],
            ..NodeOptions::default()
        },
    );
    let fm_pid = node.pid();
    for line in node.log_text().lines().filter(|l| l.contains("relay port")) {
        eprintln!("fieldmesh: {line}");
    }

    let mut phone = Phone::start(&a);
    phone.register();
    phone.answer();
    let mut peer = PeerUac::new(&p, appliance_mesh);
    let phone_rtp = rtp_socket(
        &a.phone_netns,
        SocketAddr::new(IpAddr::V4(PHONE_IP), RTP_PORT),
    );
    let peer_rtp = rtp_socket(&p.netns, SocketAddr::new(IpAddr::V4(peer_ip), RTP_PORT));
    // RTCP ports, bound so the relays' reports do not draw ICMP errors; never read (a full
    // buffer drops silently).
    let _phone_rtcp = rtp_socket(
        &a.phone_netns,
        SocketAddr::new(IpAddr::V4(PHONE_IP), RTP_PORT + 1),
    );
    let _peer_rtcp = rtp_socket(&p.netns, SocketAddr::new(IpAddr::V4(peer_ip), RTP_PORT + 1));
    let ends = Ends {
        phone: phone_rtp,
        peer: peer_rtp,
        base,
        pin: cfg.pin,
    };

    // The floor: the same kind of stream straight through the appliance namespace's kernel.
    let floor = direct_floor(&lab, &a, &p, &ends);

    let (mut rtpengine, rtpengine_missing) = match Rtpengine::start(&a, appliance_mesh) {
        Ok(r) => (Some(r), None),
        Err(why) => {
            eprintln!("rtpengine: not available ({why})");
            (None, Some(why))
        }
    };
    let rtpengine_version = match &rtpengine {
        Some(r) => r.version.clone(),
        None => "not available".to_string(),
    };

    // Before any call: the baseline of the footprint per active call.
    let pss_idle = (
        pss_bytes(fm_pid),
        rtpengine.as_ref().map(|r| pss_bytes(r.pid())),
    );
    let mut relay_rows: Vec<Row> = Vec::new();
    let (mut fm_going, mut re_going) = (true, rtpengine.is_some());
    for (step, &n) in cfg.relay_calls.iter().enumerate() {
        if fm_going {
            pin(&[fm_pid], cfg.pin.then_some(0));
            let row = fieldmesh_step(&cfg, &ends, &phone, &mut peer, &node, n, step, Mode::Relay);
            fm_going = row.loss_pct() <= GIVE_UP_LOSS_PCT && row.setup_failed == 0;
            relay_rows.push(row);
        }
        if re_going && let Some(re) = &mut rtpengine {
            pin(&[re.pid()], cfg.pin.then_some(0));
            let row = re.step(&cfg, &ends, n, step);
            re_going = row.loss_pct() <= GIVE_UP_LOSS_PCT && row.setup_failed == 0;
            relay_rows.push(row);
        }
    }
    drop(rtpengine);

    let mut transcode_rows: Vec<Row> = Vec::new();
    for (step, &n) in cfg.transcode_calls.iter().enumerate() {
        pin(&[fm_pid], cfg.pin.then_some(0));
        let row = fieldmesh_step(
            &cfg,
            &ends,
            &phone,
            &mut peer,
            &node,
            n,
            100 + step,
            Mode::Transcode,
        );
        let go_on = row.loss_pct() <= GIVE_UP_LOSS_PCT && row.setup_failed == 0;
        transcode_rows.push(row);
        if !go_on {
            break;
        }
    }

    let quality = node
        .log_text()
        .lines()
        .filter(|l| l.contains("call quality") && l.contains("lost=") && !l.contains("lost=0 "))
        .count();
    eprintln!("fieldmesh log lines \"call quality\" with lost > 0: {quality}");
    drop(phone);
    drop(node);
    drop(lab);
    let report = render(&Render {
        cfg: &cfg,
        binary: &binary,
        rtpengine_version: &rtpengine_version,
        rtpengine_missing,
        floor: &floor,
        relay: &relay_rows,
        transcode: &transcode_rows,
        pss_idle,
        took: started.elapsed(),
    });
    println!("\n{report}");
    fieldmesh_tests::trace::write_report("media-relay", &report);
}

// ---- One step ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Relay,
    Transcode,
}

/// One step's figures for one relay.
#[derive(Default, Clone)]
struct Row {
    relay: &'static str,
    calls: usize,
    /// Calls that did not come up (SIP or ng failure).
    setup_failed: usize,
    /// Sending time, and the CPU window (sending + drain).
    secs: f64,
    window_secs: f64,
    /// Packets (frames) the bench sent into the relay, both directions.
    sent: u64,
    /// Packets (frames) received at the far ends.
    received: u64,
    /// Σ per call and direction of max(0, sent - received).
    lost: u64,
    /// Gaps in the sequence numbers the far ends saw.
    seq_gaps: u64,
    /// Packets that arrived from a port other than their call's.
    misrouted: u64,
    cpu_ticks: u64,
    cpu_secs: f64,
    /// One-way ms, sorted (stamped payloads only).
    one_way: Vec<f64>,
    /// How far the senders fell behind their schedule, worst (ms).
    sender_lag_ms: f64,
    /// Level of the PCMU the transcoder made for the phone (the mesh side's 440 Hz tone was
    /// sent at -9 dBFS RMS).
    pcmu_dbfs: Option<f64>,
    /// The relay's PSS with this step's calls up, after streaming (bytes).
    pss_active: u64,
    note: String,
}

impl Row {
    fn loss_pct(&self) -> f64 {
        if self.sent == 0 {
            return 100.0;
        }
        (self.lost + self.seq_gaps) as f64 * 100.0 / self.sent as f64
    }

    fn zero_loss(&self) -> bool {
        self.setup_failed == 0 && self.lost == 0 && self.seq_gaps == 0 && self.sent > 0
    }

    /// CPU µs per packet (or frame) sent into the relay.
    fn cpu_us(&self) -> Option<f64> {
        (self.sent > 0).then(|| self.cpu_secs * 1e6 / self.sent as f64)
    }

    fn pps_in(&self) -> f64 {
        self.sent as f64 / self.secs.max(1e-9)
    }
}

/// The bench's two RTP sockets and what every stream shares.
struct Ends {
    phone: Arc<UdpSocket>,
    peer: Arc<UdpSocket>,
    base: Instant,
    pin: bool,
}

/// Sets up `n` calls through fieldmesh, streams on them for the configured time, ends them.
#[allow(clippy::too_many_arguments)]
fn fieldmesh_step(
    cfg: &Settings,
    ends: &Ends,
    phone: &Phone,
    peer: &mut PeerUac,
    node: &Node,
    n: usize,
    step: usize,
    mode: Mode,
) -> Row {
    let label = match mode {
        Mode::Relay => "relay",
        Mode::Transcode => "transcode",
    };
    eprintln!("---- fieldmesh {label}: {n} calls ----");
    let t = Instant::now();
    let calls = peer.invite_all(step, n, mode, phone);
    let up: Vec<&Call> = calls.iter().filter(|c| c.up()).collect();
    eprintln!(
        "fieldmesh {label}: {}/{n} calls up in {:.2?}",
        up.len(),
        t.elapsed()
    );
    let mut row = Row {
        relay: "fieldmesh",
        calls: n,
        setup_failed: n - up.len(),
        ..Row::default()
    };
    if mode == Mode::Transcode {
        let transcoded = up
            .iter()
            .filter(|c| c.answer_formats.first() == Some(&OPUS_PT))
            .count();
        if transcoded != up.len() {
            row.note = format!(
                "only {transcoded} of {} answers to the mesh side kept Opus",
                up.len()
            );
        }
    }
    if !up.is_empty() {
        // Phone side sends to the port of the offer it received; the mesh side to the port
        // of the answer it received.
        let to_phone_side: Vec<SocketAddr> = up.iter().filter_map(|c| c.phone_target).collect();
        let to_mesh_side: Vec<SocketAddr> = up.iter().filter_map(|c| c.peer_target).collect();
        let (phone_load, peer_load) = match mode {
            Mode::Relay => (Load::Stamped, Load::Stamped),
            Mode::Transcode => (Load::pcmu_tone(), Load::opus_tone()),
        };
        let result = stream(
            ends,
            [
                Flow {
                    dests: to_phone_side,
                    load: phone_load,
                },
                Flow {
                    dests: to_mesh_side,
                    load: peer_load,
                },
            ],
            Duration::from_secs(cfg.secs),
            &[node.pid()],
        );
        result.fill(&mut row);
        row.pss_active = pss_bytes(node.pid());
    }
    let t = Instant::now();
    let ended = peer.bye_all(&calls);
    let live = node.status()["calls"].as_array().map_or(0, Vec::len);
    eprintln!(
        "fieldmesh {label}: {ended}/{} calls ended in {:.2?}; the relay still anchors {live}",
        up.len(),
        t.elapsed()
    );
    row
}

// ---- RTP streams ----

/// What one end sends on every call.
#[derive(Clone)]
enum Load {
    /// 160-byte payloads carrying MAGIC, the call index and the send time (PCMU, PT 0).
    Stamped,
    /// Real encoded frames, cycled.
    Frames {
        pt: u8,
        ts_step: u32,
        frames: Arc<Vec<Vec<u8>>>,
    },
}

impl Load {
    /// 20 ms of a 1 kHz tone at -6 dBFS, µ-law (the tone repeats every 8 samples, so one frame
    /// serves every packet).
    fn pcmu_tone() -> Load {
        let frame: Vec<u8> = (0..G711_PAYLOAD)
            .map(|i| {
                let x = (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 8000.0).sin();
                linear_to_ulaw((x * 16384.0) as i16)
            })
            .collect();
        Load::Frames {
            pt: 0,
            ts_step: 160,
            frames: Arc::new(vec![frame]),
        }
    }

    /// One second of a 440 Hz tone as 20 ms Opus frames (48 kHz mono, VoIP, 32 kbit/s,
    /// in-band FEC), encoded once.
    fn opus_tone() -> Load {
        let mut encoder = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)
            .expect("libopus encoder");
        encoder
            .set_bitrate(opus::Bitrate::Bits(32_000))
            .expect("opus bitrate");
        encoder.set_inband_fec(true).expect("opus fec");
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 1500];
        for f in 0..50 {
            let pcm: Vec<i16> = (0..960)
                .map(|i| {
                    let t = (f * 960 + i) as f64 / 48_000.0;
                    ((2.0 * std::f64::consts::PI * 440.0 * t).sin() * 16384.0) as i16
                })
                .collect();
            let len = encoder.encode(&pcm, &mut buf).expect("opus encode");
            frames.push(buf[..len].to_vec());
        }
        Load::Frames {
            pt: OPUS_PT,
            ts_step: 960,
            frames: Arc::new(frames),
        }
    }

    fn stamped(&self) -> bool {
        matches!(self, Load::Stamped)
    }
}

/// G.711 µ-law of one linear sample (the classic Sun/ITU table-free coder).
fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let exponent = (u >> 4) & 0x07;
    let magnitude = (((i32::from(u & 0x0F)) << 3) + 0x84) << exponent;
    let s = magnitude - 0x84;
    (if u & 0x80 != 0 { -s } else { s }) as i16
}

/// One end's streams: where each call's packets go.
struct Flow {
    dests: Vec<SocketAddr>,
    load: Load,
}

/// What a stream run measured, per direction: [phone → mesh side, mesh side → phone].
struct StreamResult {
    secs: f64,
    window_secs: f64,
    sent: [Vec<u64>; 2],
    rx: [Rx; 2],
    cpu_ticks: u64,
    cpu_secs: f64,
    lag_ms: f64,
}

impl StreamResult {
    fn fill(&self, row: &mut Row) {
        row.secs = self.secs;
        row.window_secs = self.window_secs;
        row.cpu_ticks = self.cpu_ticks;
        row.cpu_secs = self.cpu_secs;
        row.sender_lag_ms = self.lag_ms;
        let mut one_way = Vec::new();
        for dir in 0..2 {
            let rx = &self.rx[dir];
            for (call, &sent) in self.sent[dir].iter().enumerate() {
                let got = rx.counts.get(call).copied().unwrap_or(0);
                row.sent += sent;
                row.received += got;
                row.lost += sent.saturating_sub(got);
            }
            row.seq_gaps += rx.seq_gaps();
            if rx.pcm_n > 0 {
                let rms = (rx.pcm_sq / rx.pcm_n as f64).sqrt() / 32768.0;
                row.pcmu_dbfs = Some(20.0 * rms.max(1e-9).log10());
            }
            row.misrouted += rx.misrouted + rx.unknown;
            one_way.extend_from_slice(&rx.one_way_ms);
        }
        one_way.sort_by(f64::total_cmp);
        row.one_way = one_way;
    }
}

/// What one end received.
#[derive(Default)]
struct Rx {
    counts: Vec<u64>,
    /// Per call: the first sequence number and the highest offset from it.
    seq: Vec<Option<(u16, u16)>>,
    one_way_ms: Vec<f64>,
    misrouted: u64,
    unknown: u64,
    /// Σ x² and the number of samples of the PCMU the transcoder sent (not stamped loads).
    pcm_sq: f64,
    pcm_n: u64,
}

impl Rx {
    fn seq_gaps(&self) -> u64 {
        self.seq
            .iter()
            .zip(&self.counts)
            .map(|(s, &c)| match s {
                Some((_, max)) => (u64::from(*max) + 1).saturating_sub(c),
                None => 0,
            })
            .sum()
    }
}

/// Streams `flows[0]` from the phone end and `flows[1]` from the mesh end for `duration`,
/// counting at the far ends, and measures the CPU of `pids` over the window.
fn stream(ends: &Ends, flows: [Flow; 2], duration: Duration, pids: &[u32]) -> StreamResult {
    let calls = flows[0].dests.len();
    assert_eq!(
        calls,
        flows[1].dests.len(),
        "both ends stream the same calls"
    );
    // A packet for call k arrives at the phone from the port the phone sends to (symmetric
    // RTP), and at the mesh end from the port it sends to.
    let by_port = |dests: &[SocketAddr]| -> HashMap<SocketAddr, usize> {
        dests.iter().enumerate().map(|(k, d)| (*d, k)).collect()
    };
    let [phone_flow, peer_flow] = flows;
    let stop = Arc::new(AtomicBool::new(false));
    let receivers: Vec<JoinHandle<Rx>> = [
        // Index 0 counts phone → mesh side: received at the mesh end, from the mesh end's
        // targets.
        (
            ends.peer.clone(),
            by_port(&peer_flow.dests),
            phone_flow.load.stamped(),
        ),
        (
            ends.phone.clone(),
            by_port(&phone_flow.dests),
            peer_flow.load.stamped(),
        ),
    ]
    .into_iter()
    .map(|(socket, from, stamped)| {
        let stop = stop.clone();
        let (base, pin_it) = (ends.base, ends.pin);
        std::thread::spawn(move || {
            pin_self(pin_it);
            receive(&socket, &from, stamped, calls, base, &stop, duration)
        })
    })
    .collect();
    // Let the receivers start.
    std::thread::sleep(Duration::from_millis(50));
    let ticks_before = pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
    let start = Instant::now() + Duration::from_millis(20);
    let senders: Vec<JoinHandle<(Vec<u64>, f64)>> = [
        (ends.phone.clone(), phone_flow, 0u32),
        (ends.peer.clone(), peer_flow, 1u32),
    ]
    .into_iter()
    .map(|(socket, flow, side)| {
        let (base, pin_it) = (ends.base, ends.pin);
        std::thread::spawn(move || {
            pin_self(pin_it);
            send(&socket, &flow, side, start, duration, base)
        })
    })
    .collect();
    let sent: Vec<(Vec<u64>, f64)> = senders
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        .collect();
    std::thread::sleep(DRAIN);
    let ticks_after = pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>();
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut rx: Vec<Rx> = receivers
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        .collect();
    let rx1 = rx.pop().unwrap_or_default();
    let rx0 = rx.pop().unwrap_or_default();
    let cpu_ticks = ticks_after.saturating_sub(ticks_before);
    let lag_ms = sent.iter().map(|s| s.1).fold(0.0, f64::max);
    let mut sent = sent.into_iter().map(|s| s.0);
    StreamResult {
        secs: duration.as_secs_f64(),
        window_secs: secs,
        sent: [
            sent.next().unwrap_or_default(),
            sent.next().unwrap_or_default(),
        ],
        rx: [rx0, rx1],
        cpu_ticks,
        cpu_secs: cpu_ticks as f64 / clock_ticks(),
        lag_ms,
    }
}

/// Sends 50 packets/s to each of `flow.dests`, call k's packets offset by k/N of a frame so the
/// load is even; returns the packets sent per call and the worst lag behind schedule (ms).
fn send(
    socket: &UdpSocket,
    flow: &Flow,
    side: u32,
    start: Instant,
    duration: Duration,
    base: Instant,
) -> (Vec<u64>, f64) {
    let calls = flow.dests.len();
    let ticks = duration.as_millis() as u64 / FRAME.as_millis() as u64;
    let total = ticks * calls as u64;
    let mut sent = vec![0u64; calls];
    let mut lag = Duration::ZERO;
    let deadline = start + duration + Duration::from_secs(5);
    let spacing = FRAME / calls as u32;
    let mut packet = Vec::with_capacity(RTP_HEADER + 1500);
    for i in 0..total {
        let tick = i / calls as u64;
        let call = (i % calls as u64) as usize;
        let due = start + FRAME * tick as u32 + spacing * call as u32;
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if due > now {
            std::thread::sleep(due - now);
        } else {
            lag = lag.max(now - due);
        }
        packet.clear();
        let (pt, ts_step) = match &flow.load {
            Load::Stamped => (0u8, 160u32),
            Load::Frames { pt, ts_step, .. } => (*pt, *ts_step),
        };
        packet.push(0x80);
        packet.push(pt | if tick == 0 { 0x80 } else { 0 });
        packet.extend_from_slice(&(tick as u16).to_be_bytes());
        packet.extend_from_slice(&((tick as u32).wrapping_mul(ts_step)).to_be_bytes());
        packet.extend_from_slice(&((side << 16) | call as u32 | 0x1000_0000).to_be_bytes());
        match &flow.load {
            Load::Stamped => {
                packet.extend_from_slice(MAGIC);
                packet.extend_from_slice(&(call as u32).to_be_bytes());
                let ns = base.elapsed().as_nanos() as u64;
                packet.extend_from_slice(&ns.to_be_bytes());
                packet.resize(RTP_HEADER + G711_PAYLOAD, 0xFF);
            }
            Load::Frames { frames, .. } => {
                packet.extend_from_slice(&frames[tick as usize % frames.len()]);
            }
        }
        if socket.send_to(&packet, flow.dests[call]).is_ok() {
            sent[call] += 1;
        }
    }
    (sent, lag.as_secs_f64() * 1e3)
}

/// Counts packets per call until `stop` (bounded by `duration` + 15 s).
fn receive(
    socket: &UdpSocket,
    from: &HashMap<SocketAddr, usize>,
    stamped: bool,
    calls: usize,
    base: Instant,
    stop: &AtomicBool,
    duration: Duration,
) -> Rx {
    let mut rx = Rx {
        counts: vec![0; calls],
        seq: vec![None; calls],
        ..Rx::default()
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(20)));
    let deadline = Instant::now() + duration + Duration::from_secs(15);
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let Ok((n, src)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let at = base.elapsed().as_nanos() as u64;
        let d = &buf[..n];
        if n < RTP_HEADER || d[0] >> 6 != 2 {
            rx.unknown += 1;
            continue;
        }
        let by_source = from.get(&src).copied();
        let call = if stamped {
            let payload = &d[RTP_HEADER..];
            if payload.len() < 16 || &payload[..4] != MAGIC {
                rx.unknown += 1;
                continue;
            }
            let call =
                u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]) as usize;
            let mut ns = [0u8; 8];
            ns.copy_from_slice(&payload[8..16]);
            let sent_ns = u64::from_be_bytes(ns);
            if call >= calls {
                rx.unknown += 1;
                continue;
            }
            if !from.is_empty() && by_source != Some(call) {
                rx.misrouted += 1;
            }
            rx.one_way_ms.push(at.saturating_sub(sent_ns) as f64 / 1e6);
            call
        } else {
            match by_source {
                Some(call) => call,
                None => {
                    rx.unknown += 1;
                    continue;
                }
            }
        };
        rx.counts[call] += 1;
        if !stamped && d[1] & 0x7F == 0 {
            for &u in &d[RTP_HEADER..] {
                let x = f64::from(ulaw_to_linear(u));
                rx.pcm_sq += x * x;
            }
            rx.pcm_n += (n - RTP_HEADER) as u64;
        }
        let seq = u16::from_be_bytes([d[2], d[3]]);
        match &mut rx.seq[call] {
            None => rx.seq[call] = Some((seq, 0)),
            Some((first, max)) => {
                let off = seq.wrapping_sub(*first);
                if off < 0x8000 && off > *max {
                    *max = off;
                }
            }
        }
    }
    rx
}

/// The floor: stamped streams between the two ends straight through the appliance
/// namespace's kernel (IP forwarding on, a route in each end's namespace), no relay.
fn direct_floor(lab: &Lab, a: &Appliance, p: &Appliance, ends: &Ends) -> Row {
    eprintln!("---- floor: 10 streams each way, kernel forwarding, no relay ----");
    lab.forward(a);
    // Host routes: the fake appliance's namespace has a phone side of its own (10.42.0.0/24).
    ip_in(
        &a.phone_netns,
        &format!("route add {}/32 via {PHONE_SIDE_IP}", p.mesh_ip()),
    );
    ip_in(
        &p.netns,
        &format!("route add {PHONE_IP}/32 via {}", a.mesh_ip()),
    );
    let calls = 10;
    let to_peer = SocketAddr::new(IpAddr::V4(p.mesh_ip()), RTP_PORT);
    let to_phone = SocketAddr::new(IpAddr::V4(PHONE_IP), RTP_PORT);
    let result = stream(
        ends,
        [
            Flow {
                dests: vec![to_peer; calls],
                load: Load::Stamped,
            },
            Flow {
                dests: vec![to_phone; calls],
                load: Load::Stamped,
            },
        ],
        Duration::from_secs(3),
        &[],
    );
    let mut row = Row {
        relay: "kernel (floor)",
        calls,
        ..Row::default()
    };
    // All calls come from one port: `stream`'s per-port map names the last one, so
    // misrouting means nothing here.
    result.fill(&mut row);
    row.misrouted = 0;
    // Forwarding off again: the relays must carry everything.
    ip_in(
        &a.phone_netns,
        &format!("route del {}/32 via {PHONE_SIDE_IP}", p.mesh_ip()),
    );
    ip_in(
        &p.netns,
        &format!("route del {PHONE_IP}/32 via {}", a.mesh_ip()),
    );
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &a.netns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=0",
        ])
        .output();
    if !out.is_ok_and(|o| o.status.success()) {
        eprintln!("could not turn IP forwarding off in {}", a.netns);
    }
    eprintln!(
        "floor: one-way p50 {:?} ms, {} of {} received",
        percentile(&row.one_way, 0.5),
        row.received,
        row.sent
    );
    row
}

fn rtp_socket(netns: &str, addr: SocketAddr) -> Arc<UdpSocket> {
    let socket = in_netns(netns, || UdpSocket::bind(addr))
        .unwrap_or_else(|e| panic!("bind {addr} in {netns}: {e}"));
    let _ = setsockopt(&socket, sockopt::RcvBufForce, &SOCKET_BUFFER);
    let _ = setsockopt(&socket, sockopt::SndBufForce, &SOCKET_BUFFER);
    Arc::new(socket)
}

fn ip_in(netns: &str, args: &str) {
    let out = Command::new("ip")
        .args(["-n", netns])
        .args(args.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` ({e})"));
    assert!(
        out.status.success(),
        "ip -n {netns} {args}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

// ---- SIP: the phone (UAS) and the other appliance (UAC) ----

/// What the phone saw of one call: where it must send its RTP.
#[derive(Clone, Debug)]
struct Offered {
    target: SocketAddr,
}

/// The phone: registers, then answers every INVITE with 200 + PCMU and every BYE with 200.
struct Phone {
    socket: Arc<UdpSocket>,
    seen: Arc<Mutex<HashMap<String, Offered>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Phone {
    fn start(a: &Appliance) -> Phone {
        let addr = SocketAddr::new(IpAddr::V4(PHONE_IP), PHONE_SIP_PORT);
        let socket = in_netns(&a.phone_netns, || UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("phone SIP socket {addr}: {e}"));
        let _ = setsockopt(&socket, sockopt::RcvBufForce, &(4usize << 20));
        Phone {
            socket: Arc::new(socket),
            seen: Arc::new(Mutex::new(HashMap::new())),
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
        }
    }

    /// REGISTERs extension 300 (Contact: this socket), then starts answering.
    fn register(&self) {
        let me = SocketAddr::new(IpAddr::V4(PHONE_IP), PHONE_SIP_PORT);
        let registrar = SocketAddr::new(IpAddr::V4(PHONE_SIDE_IP), SIP_PORT);
        let register = format!(
            "REGISTER sip:{PHONE_SIDE_IP} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-bench-reg;rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{EXT}@{PHONE_SIDE_IP}>;tag=reg1\r\n\
             To: <sip:{EXT}@{PHONE_SIDE_IP}>\r\n\
             Call-ID: bench-register@{PHONE_IP}\r\n\
             CSeq: 1 REGISTER\r\n\
             Contact: <sip:{EXT}@{me}>\r\n\
             Expires: 3600\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let _ = self
            .socket
            .set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = [0u8; 65535];
        let status = wait_until(
            "the phone's REGISTER to get 200",
            Duration::from_secs(10),
            || {
                let _ = self.socket.send_to(register.as_bytes(), registrar);
                let until = Instant::now() + Duration::from_millis(500);
                while Instant::now() < until {
                    if let Ok((n, _)) = self.socket.recv_from(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        if let Some(code) = status_code(&text)
                            && code >= 200
                        {
                            return Some(code);
                        }
                    }
                }
                None
            },
        );
        assert_eq!(status, 200, "the appliance refused the phone's REGISTER");
        eprintln!("phone: extension {EXT} registered at {registrar}");
    }

    /// Starts the answering thread (after [`Phone::register`]).
    fn answer(&mut self) {
        let socket = self.socket.clone();
        let seen = self.seen.clone();
        let stop = self.stop.clone();
        self.thread = Some(std::thread::spawn(move || {
            let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = vec![0u8; 65535];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if let Some(reply) = phone_reply(&text, &seen) {
                    let _ = socket.send_to(reply.as_bytes(), from);
                }
            }
        }));
    }

    fn offered(&self, call_id: &str) -> Option<Offered> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(call_id)
            .cloned()
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The phone's answer to one request: 200 with a PCMU answer to an INVITE, 200 to a BYE.
fn phone_reply(text: &str, seen: &Mutex<HashMap<String, Offered>>) -> Option<String> {
    let method = text.split_whitespace().next()?;
    if method.starts_with("SIP/") || method == "ACK" {
        return None;
    }
    let (head, body) = split_message(text);
    let call_id = header(head, &["call-id", "i"])?;
    let mut reply = String::from("SIP/2.0 200 OK\r\n");
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" | "record-route" | "from" | "f" | "call-id" | "i" | "cseq" => {
                reply.push_str(line.trim_end());
                reply.push_str("\r\n");
            }
            "to" | "t" => {
                let value = value.trim();
                if value.contains(";tag=") {
                    let _ = write!(reply, "To: {value}\r\n");
                } else {
                    let _ = write!(reply, "To: {value};tag=ph{:x}\r\n", hash(&call_id));
                }
            }
            _ => {}
        }
    }
    if method != "INVITE" {
        reply.push_str("Content-Length: 0\r\n\r\n");
        return Some(reply);
    }
    let offer = parse_sdp(body);
    let target = offer.target()?;
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(call_id.clone(), Offered { target });
    let pcmu = offer.pt_of("PCMU").unwrap_or(0);
    let sdp = format!(
        "v=0\r\no=phone {h} {h} IN IP4 {PHONE_IP}\r\ns=-\r\nc=IN IP4 {PHONE_IP}\r\nt=0 0\r\n\
         m=audio {RTP_PORT} RTP/AVP {pcmu}\r\na=rtpmap:{pcmu} PCMU/8000\r\na=ptime:20\r\n\
         a=sendrecv\r\n",
        h = hash(&call_id) % 1_000_000
    );
    let _ = write!(
        reply,
        "Contact: <sip:{EXT}@{PHONE_IP}:{PHONE_SIP_PORT}>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    Some(reply)
}

/// One call placed by the fake appliance.
#[derive(Clone, Debug, Default)]
struct Call {
    call_id: String,
    from_tag: String,
    branch: String,
    invite: String,
    /// From the 200: the To header (with the phone's tag), its Contact, the route set.
    to: Option<String>,
    contact: Option<String>,
    routes: Vec<String>,
    /// Where the mesh end must send (the 200's SDP) and the formats it answered.
    peer_target: Option<SocketAddr>,
    answer_formats: Vec<u8>,
    /// Where the phone must send (the INVITE's SDP as the phone saw it).
    phone_target: Option<SocketAddr>,
    failed: Option<u16>,
    trying: bool,
    attempts: u32,
    last_sent: Option<Instant>,
}

impl Call {
    fn up(&self) -> bool {
        self.to.is_some()
            && self.failed.is_none()
            && self.phone_target.is_some()
            && self.peer_target.is_some()
    }
}

/// The fake appliance on the mesh side: places calls with `;fm=peer`, ACKs, ends them.
struct PeerUac {
    socket: UdpSocket,
    me: SocketAddr,
    appliance: SocketAddr,
}

impl PeerUac {
    fn new(p: &Appliance, appliance_mesh: Ipv4Addr) -> PeerUac {
        let me = SocketAddr::new(IpAddr::V4(p.mesh_ip()), PEER_SIP_PORT);
        let socket = in_netns(&p.netns, || UdpSocket::bind(me))
            .unwrap_or_else(|e| panic!("fake appliance SIP socket {me}: {e}"));
        let _ = setsockopt(&socket, sockopt::RcvBufForce, &(4usize << 20));
        PeerUac {
            socket,
            me,
            appliance: SocketAddr::new(IpAddr::V4(appliance_mesh), SIP_PORT),
        }
    }

    /// Places `n` calls (≈200 INVITEs/s), ACKs every 200, and waits (≤20 s) until all are up
    /// or failed. INVITEs without any answer are sent again after 1 s, at most 4 times.
    fn invite_all(&mut self, step: usize, n: usize, mode: Mode, phone: &Phone) -> Vec<Call> {
        let me = self.me;
        let ip = me.ip();
        let media = match mode {
            Mode::Relay => "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n".to_string(),
            Mode::Transcode => format!(
                "m=audio 40000 RTP/AVP {OPUS_PT}\r\na=rtpmap:{OPUS_PT} opus/48000/2\r\n\
                 a=fmtp:{OPUS_PT} useinbandfec=1\r\n"
            ),
        };
        let mut calls: Vec<Call> = (0..n)
            .map(|k| {
                let call_id = format!("bench-{}-{step}-{k}@{ip}", std::process::id());
                let from_tag = format!("pf{step}x{k}");
                let branch = format!("z9hG4bK-bench-{step}-{k}-inv");
                let sdp = format!(
                    "v=0\r\no=peer {k} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
                     {media}a=ptime:20\r\na=sendrecv\r\n"
                );
                let invite = format!(
                    "INVITE sip:{EXT}@{app};fm=peer SIP/2.0\r\n\
                     Via: SIP/2.0/UDP {me};branch={branch};rport\r\n\
                     Max-Forwards: 70\r\n\
                     From: <sip:bench@{ip}>;tag={from_tag}\r\n\
                     To: <sip:{EXT}@{app_ip}>\r\n\
                     Call-ID: {call_id}\r\n\
                     CSeq: 1 INVITE\r\n\
                     Contact: <sip:bench@{me}>\r\n\
                     Content-Type: application/sdp\r\n\
                     Content-Length: {}\r\n\r\n{sdp}",
                    sdp.len(),
                    app = self.appliance,
                    app_ip = self.appliance.ip(),
                );
                Call {
                    call_id,
                    from_tag,
                    branch,
                    invite,
                    ..Call::default()
                }
            })
            .collect();
        let index: HashMap<String, usize> = calls
            .iter()
            .enumerate()
            .map(|(k, c)| (c.call_id.clone(), k))
            .collect();
        let start = Instant::now();
        let deadline = start + Duration::from_secs(20);
        let _ = self.socket.set_read_timeout(Some(Duration::from_millis(2)));
        let mut buf = vec![0u8; 65535];
        loop {
            let now = Instant::now();
            let done = calls.iter().all(|c| c.to.is_some() || c.failed.is_some());
            if done || now >= deadline {
                break;
            }
            // Paced first sends (5 ms apart), then retransmissions of unanswered INVITEs.
            for (k, call) in calls.iter_mut().enumerate() {
                if call.to.is_some() || call.failed.is_some() {
                    continue;
                }
                let due = match call.last_sent {
                    None => start + Duration::from_millis(5) * k as u32,
                    Some(_) if call.trying => continue,
                    Some(at) => at + Duration::from_secs(1),
                };
                if now < due {
                    continue;
                }
                if call.attempts >= 4 {
                    call.failed = Some(408);
                    continue;
                }
                let _ = self.socket.send_to(call.invite.as_bytes(), self.appliance);
                call.attempts += 1;
                call.last_sent = Some(now);
            }
            while let Ok((len, _)) = self.socket.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..len]).into_owned();
                self.on_response(&text, &index, &mut calls);
            }
        }
        for call in &mut calls {
            if call.to.is_none() && call.failed.is_none() {
                call.failed = Some(408);
            }
            if let Some(offered) = phone.offered(&call.call_id) {
                call.phone_target = Some(offered.target);
            }
        }
        let failures: Vec<String> = calls
            .iter()
            .filter(|c| !c.up())
            .take(5)
            .map(|c| format!("{} ({:?})", c.call_id, c.failed))
            .collect();
        if !failures.is_empty() {
            eprintln!("calls that did not come up (first 5): {failures:?}");
        }
        calls
    }

    fn on_response(&mut self, text: &str, index: &HashMap<String, usize>, calls: &mut [Call]) {
        let Some(code) = status_code(text) else {
            return;
        };
        let (head, body) = split_message(text);
        let Some(call_id) = header(head, &["call-id", "i"]) else {
            return;
        };
        let Some(&k) = index.get(&call_id) else {
            return;
        };
        let cseq = header(head, &["cseq"]).unwrap_or_default();
        if !cseq.ends_with("INVITE") {
            return;
        }
        let call = &mut calls[k];
        let to = header(head, &["to", "t"]).unwrap_or_default();
        match code {
            100..=199 => call.trying = true,
            200..=299 => {
                if call.to.is_none() {
                    let mut rr = header_all(head, &["record-route"]);
                    rr.reverse();
                    call.routes = rr;
                    call.contact = header(head, &["contact", "m"]).map(|c| uri_of(&c));
                    let sdp = parse_sdp(body);
                    match sdp.target() {
                        Some(t) => call.peer_target = Some(t),
                        None => call.failed = Some(code),
                    }
                    call.answer_formats = sdp.formats.clone();
                    call.to = Some(to.clone());
                }
                // ACK every 2xx (retransmissions too).
                let ack = self.in_dialog(call, "ACK", 1, &format!("{}-ack", call.branch));
                let _ = self.socket.send_to(ack.as_bytes(), self.next_hop(call));
            }
            _ => {
                if call.failed.is_none() {
                    eprintln!(
                        "call {} refused: {}",
                        call.call_id,
                        head.lines().next().unwrap_or_default()
                    );
                }
                call.failed = Some(code);
                // The ACK of a non-2xx goes hop by hop, with the INVITE's branch.
                let ack = format!(
                    "ACK sip:{EXT}@{app};fm=peer SIP/2.0\r\n\
                     Via: SIP/2.0/UDP {me};branch={branch};rport\r\n\
                     Max-Forwards: 70\r\n\
                     From: <sip:bench@{ip}>;tag={tag}\r\n\
                     To: {to}\r\n\
                     Call-ID: {cid}\r\n\
                     CSeq: 1 ACK\r\n\
                     Content-Length: 0\r\n\r\n",
                    app = self.appliance,
                    me = self.me,
                    ip = self.me.ip(),
                    branch = call.branch,
                    tag = call.from_tag,
                    cid = call.call_id,
                );
                let _ = self.socket.send_to(ack.as_bytes(), self.appliance);
            }
        }
    }

    /// An in-dialog request along the route set.
    fn in_dialog(&self, call: &Call, method: &str, cseq: u32, branch: &str) -> String {
        let target = call
            .contact
            .clone()
            .unwrap_or_else(|| format!("sip:{EXT}@{}", self.appliance));
        let mut routes = String::new();
        for r in &call.routes {
            let _ = write!(routes, "Route: {r}\r\n");
        }
        format!(
            "{method} {target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch={branch};rport\r\n\
             {routes}\
             Max-Forwards: 70\r\n\
             From: <sip:bench@{ip}>;tag={tag}\r\n\
             To: {to}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} {method}\r\n\
             Content-Length: 0\r\n\r\n",
            me = self.me,
            ip = self.me.ip(),
            tag = call.from_tag,
            to = call.to.as_deref().unwrap_or_default(),
            cid = call.call_id,
        )
    }

    /// Where an in-dialog request goes first: the first route, else the Contact.
    fn next_hop(&self, call: &Call) -> SocketAddr {
        call.routes
            .first()
            .map(|r| uri_of(r))
            .or_else(|| call.contact.clone())
            .and_then(|u| uri_addr(&u))
            .unwrap_or(self.appliance)
    }

    /// BYE on every call that came up; waits (≤10 s, BYE resent every second) for the 200s.
    /// Returns how many were answered 200.
    fn bye_all(&mut self, calls: &[Call]) -> usize {
        let mut pending: HashMap<String, (String, SocketAddr, Option<Instant>, u32)> = calls
            .iter()
            .filter(|c| c.to.is_some())
            .map(|c| {
                let bye = self.in_dialog(c, "BYE", 2, &format!("{}-bye", c.branch));
                (c.call_id.clone(), (bye, self.next_hop(c), None, 0))
            })
            .collect();
        let total = pending.len();
        let mut ok = 0;
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let mut buf = vec![0u8; 65535];
        let mut k = 0u32;
        while !pending.is_empty() && Instant::now() < deadline {
            let now = Instant::now();
            for (bye, to, last, attempts) in pending.values_mut() {
                let due = match last {
                    None => start + Duration::from_millis(2) * k,
                    Some(at) => *at + Duration::from_secs(1),
                };
                if now >= due && *attempts < 5 {
                    let _ = self.socket.send_to(bye.as_bytes(), *to);
                    *last = Some(now);
                    *attempts += 1;
                    k += 1;
                }
            }
            while let Ok((len, _)) = self.socket.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..len]);
                let (head, _) = split_message(&text);
                let Some(code) = status_code(&text) else {
                    continue;
                };
                let cseq = header(head, &["cseq"]).unwrap_or_default();
                if code >= 200
                    && cseq.ends_with("BYE")
                    && let Some(call_id) = header(head, &["call-id", "i"])
                    && pending.remove(&call_id).is_some()
                {
                    ok += usize::from(code < 300);
                }
            }
        }
        if ok < total {
            eprintln!("{} of {total} BYEs were not answered 200", total - ok);
        }
        ok
    }
}

// ---- A few lines of SIP and SDP reading (nothing shared with the appliance) ----

fn split_message(text: &str) -> (&str, &str) {
    text.split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .unwrap_or((text, ""))
}

fn status_code(text: &str) -> Option<u16> {
    let line = text.lines().next()?;
    let rest = line.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// The first value of a header (by any of its names, case-insensitive).
fn header(head: &str, names: &[&str]) -> Option<String> {
    header_all(head, names).into_iter().next()
}

/// Every value of a header, top first, comma-separated values split (outside `<>`).
fn header_all(head: &str, names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !names.iter().any(|n| name.trim().eq_ignore_ascii_case(n)) {
            continue;
        }
        let mut depth = 0;
        let mut start = 0;
        let value = value.trim();
        for (i, ch) in value.char_indices() {
            match ch {
                '<' => depth += 1,
                '>' => depth -= 1,
                ',' if depth == 0 && !names.contains(&"cseq") => {
                    out.push(value[start..i].trim().to_string());
                    start = i + 1;
                }
                _ => {}
            }
        }
        out.push(value[start..].trim().to_string());
    }
    out
}

/// `<sip:x@h:p;lr>;foo` → `sip:x@h:p;lr`.
fn uri_of(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].to_string(),
        _ => value.split(';').next().unwrap_or(value).trim().to_string(),
    }
}

/// `sip:user@10.99.0.1:5060;lr` → 10.99.0.1:5060.
fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let rest = uri.strip_prefix("sip:")?;
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let host_port = host_port.split([';', '?', '>']).next()?;
    let (host, port) = match host_port.split_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (host_port, 5060),
    };
    Some(SocketAddr::new(host.parse().ok()?, port))
}

/// The first audio m-line of an SDP body: its connection address, port and formats.
#[derive(Default, Debug)]
struct Sdp {
    ip: Option<IpAddr>,
    port: u16,
    formats: Vec<u8>,
    rtpmaps: Vec<(u8, String)>,
}

impl Sdp {
    fn target(&self) -> Option<SocketAddr> {
        (self.port != 0).then_some(SocketAddr::new(self.ip?, self.port))
    }

    fn pt_of(&self, name: &str) -> Option<u8> {
        self.rtpmaps
            .iter()
            .find(|(_, enc)| {
                enc.split('/')
                    .next()
                    .is_some_and(|e| e.eq_ignore_ascii_case(name))
            })
            .map(|(pt, _)| *pt)
    }
}

fn parse_sdp(body: &str) -> Sdp {
    let mut sdp = Sdp::default();
    let mut in_audio = false;
    let mut seen_audio = false;
    for line in body.lines() {
        let line = line.trim();
        if let Some(m) = line.strip_prefix("m=") {
            in_audio = m.starts_with("audio ") && !seen_audio;
            if in_audio {
                seen_audio = true;
                let mut parts = m.split_whitespace().skip(1);
                sdp.port = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                sdp.formats = parts.skip(1).filter_map(|f| f.parse().ok()).collect();
            }
        } else if let Some(c) = line.strip_prefix("c=IN IP4 ") {
            // Session-level c= applies unless the m-line has its own.
            if in_audio || !seen_audio {
                sdp.ip = c.split('/').next().and_then(|a| a.trim().parse().ok());
            }
        } else if let Some(map) = line.strip_prefix("a=rtpmap:")
            && in_audio
            && let Some((pt, enc)) = map.split_once(' ')
            && let Ok(pt) = pt.parse()
        {
            sdp.rtpmaps.push((pt, enc.trim().to_string()));
        }
    }
    if sdp.pt_of("PCMU").is_none() && sdp.formats.contains(&0) {
        sdp.rtpmaps.push((0, "PCMU/8000".into()));
    }
    sdp
}

fn hash(s: &str) -> u64 {
    // FNV-1a: stable tags across retransmissions.
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

// ---- rtpengine over the ng protocol ----

/// A bencode value (the ng protocol's encoding).
#[derive(Clone, Debug, PartialEq)]
enum Ben {
    Int(i64),
    Str(Vec<u8>),
    List(Vec<Ben>),
    Dict(Vec<(Vec<u8>, Ben)>),
}

impl Ben {
    fn s(v: &str) -> Ben {
        Ben::Str(v.as_bytes().to_vec())
    }

    fn dict(pairs: &[(&str, Ben)]) -> Ben {
        Ben::Dict(
            pairs
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
                .collect(),
        )
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Ben::Int(i) => {
                let _ = write!(Bytes(out), "i{i}e");
            }
            Ben::Str(s) => {
                let _ = write!(Bytes(out), "{}:", s.len());
                out.extend_from_slice(s);
            }
            Ben::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode(out);
                }
                out.push(b'e');
            }
            Ben::Dict(d) => {
                let mut d: Vec<&(Vec<u8>, Ben)> = d.iter().collect();
                d.sort_by(|a, b| a.0.cmp(&b.0));
                out.push(b'd');
                for (k, v) in d {
                    Ben::Str(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Decodes one value; returns it and the rest.
    fn decode(input: &[u8]) -> Option<(Ben, &[u8])> {
        match *input.first()? {
            b'i' => {
                let end = input.iter().position(|&c| c == b'e')?;
                let i = std::str::from_utf8(&input[1..end]).ok()?.parse().ok()?;
                Some((Ben::Int(i), &input[end + 1..]))
            }
            b'l' => {
                let mut rest = &input[1..];
                let mut items = Vec::new();
                while *rest.first()? != b'e' {
                    let (v, r) = Ben::decode(rest)?;
                    items.push(v);
                    rest = r;
                }
                Some((Ben::List(items), &rest[1..]))
            }
            b'd' => {
                let mut rest = &input[1..];
                let mut items = Vec::new();
                while *rest.first()? != b'e' {
                    let (Ben::Str(k), r) = Ben::decode(rest)? else {
                        return None;
                    };
                    let (v, r) = Ben::decode(r)?;
                    items.push((k, v));
                    rest = r;
                }
                Some((Ben::Dict(items), &rest[1..]))
            }
            b'0'..=b'9' => {
                let colon = input.iter().position(|&c| c == b':')?;
                let len: usize = std::str::from_utf8(&input[..colon]).ok()?.parse().ok()?;
                let s = input.get(colon + 1..colon + 1 + len)?;
                Some((Ben::Str(s.to_vec()), &input[colon + 1 + len..]))
            }
            _ => None,
        }
    }

    fn get(&self, key: &str) -> Option<&Ben> {
        match self {
            Ben::Dict(d) => d.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v),
            _ => None,
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            Ben::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
            _ => None,
        }
    }
}

/// `write!` into a byte vector.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// rtpengine, userspace only, in the appliance namespace with its two addresses.
struct Rtpengine {
    child: Option<Child>,
    ng: UdpSocket,
    cookie: u64,
    version: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn rtpengine_binary() -> Option<PathBuf> {
    which("rtpengine")
}

fn rtpengine_why() -> String {
    if rtpengine_binary().is_none() {
        "no `rtpengine` binary: install the Debian package rtpengine-daemon".into()
    } else {
        "it did not start; see the lines above".into()
    }
}

impl Rtpengine {
    fn start(a: &Appliance, mesh_ip: Ipv4Addr) -> Result<Rtpengine, String> {
        let binary = rtpengine_binary().ok_or_else(rtpengine_why)?;
        let version = Command::new(&binary)
            .arg("--version")
            .output()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                text.split_whitespace().last().unwrap_or("?").to_string()
            })
            .unwrap_or_else(|_| "?".into());
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let log = dir.path().join("rtpengine.log");
        let file = fs::File::create(&log).map_err(|e| format!("log file: {e}"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &a.netns])
            .arg(&binary)
            .args([
                "--config-file=none",
                "--foreground",
                "--log-stderr",
                "--log-level=5",
                "--table=-1",
                &format!("--interface=phone/{PHONE_SIDE_IP}"),
                &format!("--interface=mesh/{mesh_ip}"),
                &format!("--listen-ng={NG}"),
                &format!("--port-min={}", RTPENGINE_PORTS.0),
                &format!("--port-max={}", RTPENGINE_PORTS.1),
                "--delete-delay=0",
                "--timeout=60",
            ])
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let ng = in_netns(&a.netns, || UdpSocket::bind("127.0.0.1:0"))
            .map_err(|e| format!("ng socket: {e}"))?;
        let mut re = Rtpengine {
            child: Some(child),
            ng,
            cookie: 0,
            version,
            log,
            _dir: dir,
        };
        let t = Instant::now();
        let mut up = false;
        while t.elapsed() < Duration::from_secs(10) {
            if let Some(status) = re.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let text = fs::read_to_string(&re.log).unwrap_or_default();
                return Err(format!("exited with {status}: {}", text.trim()));
            }
            if let Ok(reply) = re.command(Ben::dict(&[("command", Ben::s("ping"))]), 200)
                && reply.get("result").and_then(Ben::text).as_deref() == Some("pong")
            {
                up = true;
                break;
            }
        }
        if !up {
            return Err("its ng port did not answer ping within 10 s".into());
        }
        eprintln!(
            "rtpengine {} up in {:.2?} (pid {})",
            re.version,
            t.elapsed(),
            re.pid()
        );
        Ok(re)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// One ng command and its answer (retried once).
    fn command(&mut self, request: Ben, timeout_ms: u64) -> Result<Ben, String> {
        self.cookie += 1;
        let cookie = format!("fmb{}", self.cookie);
        let mut datagram = format!("{cookie} ").into_bytes();
        request.encode(&mut datagram);
        let _ = self
            .ng
            .set_read_timeout(Some(Duration::from_millis(timeout_ms)));
        let mut buf = vec![0u8; 65535];
        for _ in 0..2 {
            self.ng
                .send_to(&datagram, NG)
                .map_err(|e| format!("ng send: {e}"))?;
            let until = Instant::now() + Duration::from_millis(timeout_ms);
            while Instant::now() < until {
                let Ok(n) = self.ng.recv(&mut buf) else {
                    break;
                };
                let Some(rest) = buf[..n].strip_prefix(format!("{cookie} ").as_bytes()) else {
                    continue;
                };
                let (reply, _) = Ben::decode(rest).ok_or("undecodable ng reply")?;
                return match reply.get("result").and_then(Ben::text).as_deref() {
                    Some("ok") | Some("pong") => Ok(reply),
                    other => Err(format!(
                        "ng result {other:?}: {:?}",
                        reply.get("error-reason").and_then(Ben::text)
                    )),
                };
            }
        }
        Err("no ng reply".into())
    }

    /// Sets up `n` calls (offer from the mesh side, answer from the phone), streams on them,
    /// deletes them.
    fn step(&mut self, cfg: &Settings, ends: &Ends, n: usize, step: usize) -> Row {
        eprintln!("---- rtpengine relay: {n} calls ----");
        let peer_ip = ends
            .peer
            .local_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let t = Instant::now();
        let mut to_phone_side = Vec::new();
        let mut to_mesh_side = Vec::new();
        let mut ids = Vec::new();
        let mut failed = 0;
        for k in 0..n {
            let call_id = format!("re-{}-{step}-{k}", std::process::id());
            let from_tag = format!("pf{k}");
            let offer = format!(
                "v=0\r\no=peer {k} 1 IN IP4 {peer_ip}\r\ns=-\r\nc=IN IP4 {peer_ip}\r\nt=0 0\r\n\
                 m=audio {RTP_PORT} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n\
                 a=sendrecv\r\n"
            );
            let answer = format!(
                "v=0\r\no=phone {k} 1 IN IP4 {PHONE_IP}\r\ns=-\r\nc=IN IP4 {PHONE_IP}\r\n\
                 t=0 0\r\nm=audio {RTP_PORT} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n\
                 a=ptime:20\r\na=sendrecv\r\n"
            );
            let replace = Ben::List(vec![Ben::s("origin"), Ben::s("session-connection")]);
            let offered = self.command(
                Ben::dict(&[
                    ("command", Ben::s("offer")),
                    ("call-id", Ben::s(&call_id)),
                    ("from-tag", Ben::s(&from_tag)),
                    ("sdp", Ben::s(&offer)),
                    (
                        "direction",
                        Ben::List(vec![Ben::s("mesh"), Ben::s("phone")]),
                    ),
                    ("replace", replace.clone()),
                ]),
                2000,
            );
            let answered = offered.and_then(|o| {
                let sdp = parse_sdp(&o.get("sdp").and_then(Ben::text).unwrap_or_default());
                let phone_target = sdp.target().ok_or("no target in the offer")?;
                let a = self.command(
                    Ben::dict(&[
                        ("command", Ben::s("answer")),
                        ("call-id", Ben::s(&call_id)),
                        ("from-tag", Ben::s(&from_tag)),
                        ("to-tag", Ben::s(&format!("pt{k}"))),
                        ("sdp", Ben::s(&answer)),
                        ("replace", replace.clone()),
                    ]),
                    2000,
                )?;
                let sdp = parse_sdp(&a.get("sdp").and_then(Ben::text).unwrap_or_default());
                let peer_target = sdp.target().ok_or("no target in the answer")?;
                Ok((phone_target, peer_target))
            });
            ids.push((call_id, from_tag));
            match answered {
                Ok((phone_target, peer_target)) => {
                    to_phone_side.push(phone_target);
                    to_mesh_side.push(peer_target);
                }
                Err(e) => {
                    failed += 1;
                    if failed <= 3 {
                        eprintln!("rtpengine call {k}: {e}");
                    }
                }
            }
        }
        eprintln!(
            "rtpengine: {}/{n} calls up in {:.2?} (first: phone → {:?}, mesh → {:?})",
            to_phone_side.len(),
            t.elapsed(),
            to_phone_side.first(),
            to_mesh_side.first()
        );
        let mut row = Row {
            relay: "rtpengine",
            calls: n,
            setup_failed: failed,
            ..Row::default()
        };
        if !to_phone_side.is_empty() {
            let result = stream(
                ends,
                [
                    Flow {
                        dests: to_phone_side,
                        load: Load::Stamped,
                    },
                    Flow {
                        dests: to_mesh_side,
                        load: Load::Stamped,
                    },
                ],
                Duration::from_secs(cfg.secs),
                &[self.pid()],
            );
            result.fill(&mut row);
            row.pss_active = pss_bytes(self.pid());
        }
        for (call_id, from_tag) in ids {
            let _ = self.command(
                Ben::dict(&[
                    ("command", Ben::s("delete")),
                    ("call-id", Ben::s(&call_id)),
                    ("from-tag", Ben::s(&from_tag)),
                ]),
                1000,
            );
        }
        row
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---- CPU ----

/// Pins the calling thread to CPU 1 (the load generator's core).
fn pin_self(pin_it: bool) {
    if !pin_it {
        return;
    }
    let mut set = CpuSet::new();
    if set.set(1).is_ok() {
        let _ = sched_setaffinity(Pid::from_raw(0), &set);
    }
}

// ---- The report ----

struct Render<'a> {
    cfg: &'a Settings,
    binary: &'a Path,
    rtpengine_version: &'a str,
    rtpengine_missing: Option<String>,
    floor: &'a Row,
    relay: &'a [Row],
    transcode: &'a [Row],
    /// PSS before the first call: fieldmesh, rtpengine (bytes).
    pss_idle: (u64, Option<u64>),
    took: Duration,
}

/// The step with the most calls and no loss.
fn best(rows: &[Row], relay: &str) -> Option<Row> {
    rows.iter()
        .filter(|r| r.relay == relay && r.zero_loss())
        .max_by_key(|r| r.calls)
        .cloned()
}

fn render(r: &Render<'_>) -> String {
    let mut out = String::new();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let model = cpu_model();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let f1 = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let f2 = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let f3 = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let _ = writeln!(
        out,
        "## fieldmesh media relay beside rtpengine (unix time {unix})\n"
    );
    let _ = writeln!(out, "- machine: {model}, {cores} cores");
    let _ = writeln!(out, "- fieldmesh: {}", r.binary.display());
    let _ = writeln!(
        out,
        "- rtpengine: {}{}",
        r.rtpengine_version,
        match &r.rtpengine_missing {
            Some(why) => format!(" ({why})"),
            None => " (userspace, --table=-1)".into(),
        }
    );
    let _ = writeln!(
        out,
        "- run: {} s per step; 50 packets/s each way per call (20 ms, 160-byte payload + 12-byte \
         RTP header); pinning {}; took {:.0} s",
        r.cfg.secs,
        if r.cfg.pin {
            "relay on CPU 0, load generator on CPU 1"
        } else {
            "off"
        },
        r.took.as_secs_f64()
    );
    let floor_p50 = percentile(&r.floor.one_way, 0.5);
    let _ = writeln!(
        out,
        "- floor (kernel forwarding, no relay, 10 streams each way): one-way p50 {} ms, p99 {} \
         ms, {} of {} received\n",
        f3(floor_p50),
        f3(percentile(&r.floor.one_way, 0.99)),
        r.floor.received,
        r.floor.sent
    );

    let _ = writeln!(
        out,
        "### Relayed G.711 (PCMU both sides): 100 relayed packets/s per call\n"
    );
    let _ = writeln!(
        out,
        "| relay | calls | pps_in | loss % | cpu_us/pkt | CPU % of a core (ticks) | one-way p50 / p99 ms | added_ms_p50 | fieldmesh/rtpengine |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for row in r.relay {
        let p50 = percentile(&row.one_way, 0.5);
        let added = p50.zip(floor_p50).map(|(a, b)| a - b);
        let ratio = if row.relay == "fieldmesh" {
            r.relay
                .iter()
                .find(|x| x.relay == "rtpengine" && x.calls == row.calls)
                .and_then(|re| Some(row.cpu_us()? / re.cpu_us()?))
        } else {
            None
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {:.1} ({}) | {} / {} | {} | {} |",
            row.relay,
            loss_calls(row),
            row.pps_in(),
            loss_cell(row),
            f2(row.cpu_us()),
            row.cpu_secs * 100.0 / row.window_secs.max(1e-9),
            row.cpu_ticks,
            f3(p50),
            f3(percentile(&row.one_way, 0.99)),
            f3(added),
            f2(ratio),
        );
    }

    let _ = writeln!(
        out,
        "\n### Transcoded (Opus 48 kHz from the mesh side ↔ PCMU at the phone, fieldmesh): 100 frames/s per call\n"
    );
    let _ = writeln!(
        out,
        "| calls | frames/s in | frames/s out | loss % | seq gaps | cpu_us/frame | CPU % of a core (ticks) | tone at the phone |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for row in r.transcode {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {} | {} | {} | {:.1} ({}) | {} dBFS |",
            loss_calls(row),
            row.pps_in(),
            row.received as f64 / row.secs.max(1e-9),
            loss_cell(row),
            row.seq_gaps,
            f1(row.cpu_us()),
            row.cpu_secs * 100.0 / row.window_secs.max(1e-9),
            row.cpu_ticks,
            f1(row.pcmu_dbfs),
        );
    }

    let fm = best(r.relay, "fieldmesh");
    let re = best(r.relay, "rtpengine");
    let tc = best(r.transcode, "fieldmesh");
    let per_core = |us: Option<f64>| us.map(|us| 1e6 / (us * PER_CALL));
    let _ = writeln!(out, "\n### Summary\n");
    let _ = writeln!(
        out,
        "| metric | fieldmesh | rtpengine | ratio fieldmesh/rtpengine |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let n = |r: &Option<Row>| {
        r.as_ref()
            .map_or("none".to_string(), |r| r.calls.to_string())
    };
    let _ = writeln!(
        out,
        "| largest step with 0 loss, relayed G.711 calls (of {:?}) | {} | {} | - |",
        r.cfg.relay_calls,
        n(&fm),
        n(&re)
    );
    let fm_us = fm.as_ref().and_then(Row::cpu_us);
    let re_us = re.as_ref().and_then(Row::cpu_us);
    // Compare at the same step when both have one without loss.
    let same = fm.as_ref().and_then(|f| {
        r.relay
            .iter()
            .find(|x| x.relay == "rtpengine" && x.calls == f.calls && x.zero_loss())
    });
    let _ = writeln!(
        out,
        "| CPU µs per relayed packet (at that step) | {} | {} | {} |",
        f2(fm_us),
        f2(re_us),
        f2(fm_us.zip(same.and_then(Row::cpu_us)).map(|(a, b)| a / b)),
    );
    let _ = writeln!(
        out,
        "| relayed G.711 calls per core = 1e6 / (µs/pkt × 100 pkt/s) | {} | {} | {} |",
        f1(per_core(fm_us).map(f64::round)),
        f1(per_core(re_us).map(f64::round)),
        f2(per_core(fm_us).zip(per_core(re_us)).map(|(a, b)| a / b)),
    );
    let _ = writeln!(
        out,
        "| largest step with 0 loss, transcoded calls (of {:?}) | {} | - | - |",
        r.cfg.transcode_calls,
        n(&tc)
    );
    let tc_us = tc.as_ref().and_then(Row::cpu_us);
    let _ = writeln!(
        out,
        "| CPU µs per transcoded 20 ms frame (at that step) | {} | - | - |",
        f1(tc_us)
    );
    let _ = writeln!(
        out,
        "| transcoded calls per core = 1e6 / (µs/frame × 100 frames/s) | {} | - | - |",
        f1(per_core(tc_us).map(f64::round))
    );
    // Footprint per active call: PSS with the calls of a step up, less the PSS before the
    // first call, per call (the step with 100 calls, as the issue asks, else the largest).
    let per_call_kb = |rows: &[Row], relay: &str, idle: Option<u64>| {
        let of = |row: &Row| row.relay == relay && row.pss_active > 0 && row.setup_failed == 0;
        let row = rows
            .iter()
            .find(|row| of(row) && row.calls == 100)
            .or_else(|| {
                rows.iter()
                    .filter(|row| of(row))
                    .max_by_key(|row| row.calls)
            })?;
        let grown = row.pss_active.saturating_sub(idle?) as f64;
        Some((grown / row.calls as f64 / 1024.0, row.calls, row.pss_active))
    };
    let fm_pc = per_call_kb(r.relay, "fieldmesh", Some(r.pss_idle.0));
    let re_pc = per_call_kb(r.relay, "rtpengine", r.pss_idle.1);
    let tc_pc = per_call_kb(r.transcode, "fieldmesh", Some(r.pss_idle.0));
    let cell = |v: Option<(f64, usize, u64)>| {
        v.map_or("-".to_string(), |(kb, n, pss)| {
            format!("{kb:.1} ({n} calls, PSS {:.1} MB)", pss as f64 / 1e6)
        })
    };
    let _ = writeln!(
        out,
        "| KB of PSS per active relayed call (PSS idle: fieldmesh {:.1} MB{}) | {} | {} | {} |",
        r.pss_idle.0 as f64 / 1e6,
        r.pss_idle.1.map_or(String::new(), |p| format!(
            ", rtpengine {:.1} MB",
            p as f64 / 1e6
        )),
        cell(fm_pc),
        cell(re_pc),
        f2(fm_pc.zip(re_pc).map(|(a, b)| a.0 / b.0)),
    );
    let _ = writeln!(
        out,
        "| KB of PSS per active transcoded call (target ≤ 8 KB per active call) | {} | - | - |",
        cell(tc_pc),
    );
    let notes: Vec<String> = r
        .relay
        .iter()
        .chain(r.transcode)
        .filter(|row| !row.note.is_empty() || row.misrouted > 0 || row.sender_lag_ms > 20.0)
        .map(|row| {
            format!(
                "{} {} calls: {}{}misrouted/unknown packets {}, sender lag max {:.0} ms",
                row.relay,
                row.calls,
                row.note,
                if row.note.is_empty() { "" } else { "; " },
                row.misrouted,
                row.sender_lag_ms
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "\nCPU is the relay process's utime + stime over the streaming window (call setup \
         excluded), divided by the packets (frames) the bench sent into it; ticks are 10 ms, so \
         small steps are coarse. A relayed call is 100 packets/s through the relay (50 each \
         way); a transcoded call is 100 frames/s (50 decoded and re-encoded each way). \
         \"added\" is the relay's one-way p50 minus the kernel-forwarding floor. Loss counts \
         every packet per call; calls that did not come up are shown as failed. fieldmesh \
         takes at most 200 calls (the relay's limit), so relayed calls per core beyond that are \
         extrapolated only. The load generator shares the machine (2 cores, other work may \
         run)."
    );
    for note in notes {
        let _ = writeln!(out, "- {note}");
    }
    out
}

fn loss_calls(row: &Row) -> String {
    if row.setup_failed == 0 {
        row.calls.to_string()
    } else {
        format!("{} ({} failed)", row.calls, row.setup_failed)
    }
}

fn loss_cell(row: &Row) -> String {
    if row.sent == 0 {
        return "-".into();
    }
    format!("{:.3}", row.loss_pct())
}

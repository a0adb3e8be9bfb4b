//! Store and forward (issue 6's benchmark). It prints figures and asserts none of them:
//!
//! ```sh
//! cargo build --release -p fieldmesh
//! cargo bench -p fieldmesh-tests --bench store_forward
//! FIELDMESH_BENCH_MESSAGES=300 FIELDMESH_BENCH_MESSAGE_RATES=500 \
//!   FIELDMESH_BENCH_VOICEMAIL_SECS=10 cargo bench -p fieldmesh-tests --bench store_forward
//! ```
//!
//! Three parts, each on freshly started appliances:
//! - **Messages accepted per second with durable commit.** One appliance on 127.0.0.1 with
//!   `--no-mesh`; sipp's `message` scenario writes to extensions that were never registered,
//!   so every MESSAGE is stored (SQLite, `synchronous = FULL`) before its `202`. For each
//!   offered rate, a fresh appliance takes `FIELDMESH_BENCH_MESSAGES` messages. The appliance
//!   keeps at most 500 waiting messages per extension (`per_aor_cap`, not settable in
//!   fieldmesh.toml; `480 Mailbox Full` beyond), so the messages are split over
//!   `ceil(N / FIELDMESH_BENCH_PER_EXTENSION)` extensions, one sipp per extension, run side by
//!   side at their share of the rate. Printed: messages sent, `202`s and other final answers
//!   (distinct Call-IDs), wall time, accepted/s (over sipp's wall time, and from the first
//!   MESSAGE sent to the last `202` received), and MESSAGE→`202` p50/p99 from the callers'
//!   `-trace_msg` timestamps (µs). Then one sipp `uas_message` phone registers for every
//!   extension, and the messages it receives are counted against the `202`s (a sanity line;
//!   `MISMATCH` if they differ). The delivery notices the appliance then sends to the sender
//!   (`sipp`) are ignored.
//! - **Overlay bytes per stored message.** Three appliances on one bridge of the lab
//!   (`tests/support/lab.rs`). After they see each other and settle, A's mesh interface
//!   counters (`ip -s -j link`, the kernel's rx/tx bytes: every frame with its Ethernet
//!   header) give an idle rate over `FIELDMESH_BENCH_IDLE` seconds (pings, gossip, inventory,
//!   mDNS). Then A's phone writes `FIELDMESH_BENCH_OVERLAY_MESSAGES` messages to an extension
//!   that is nowhere; each is stored on A and replicated to k = 2 holders. Once A has logged
//!   that many "message replicated", the bytes A sent and received, minus the idle rate over
//!   the same time, are divided by the messages replicated. The idle rate is measured again
//!   after, holding the messages.
//! - **Overlay bytes per voicemail minute.** A new lab of three. `yves` registers on C and
//!   unregisters (known, away); a baresip phone on A calls him and plays a 1 kHz tone for
//!   `FIELDMESH_BENCH_VOICEMAIL_SECS` after the greeting. A records it (Opus) and replicates
//!   it when the call ends; the bytes on A's mesh interface from the hang-up to "voicemail
//!   replicated", minus the idle rate, are scaled to one minute of recording, using the length
//!   A logged (`duration_ms`; the greeting is not recorded). The same over the whole call
//!   (dial → replicated) is in the notes: the longer window carries more of the idle rate's
//!   noise. Without baresip the row says so.
//!
//! Knobs (environment, defaults in brackets): `FIELDMESH_BENCH_MESSAGES` [1000],
//! `FIELDMESH_BENCH_MESSAGE_RATES` [200,500,1000,2000,4000], `FIELDMESH_BENCH_PER_EXTENSION`
//! [500], `FIELDMESH_BENCH_OVERLAY_MESSAGES` [200; at most 450, all to one extension],
//! `FIELDMESH_BENCH_OVERLAY_RATE` [50/s], `FIELDMESH_BENCH_IDLE` [10 s],
//! `FIELDMESH_BENCH_VOICEMAIL_SECS` [20]. The heading also gives how many small writes with
//! fdatasync the temp dir (where the appliances keep their state) takes per second, and the
//! first table the appliance's CPU time: what a durable commit costs on this machine, and
//! whether the appliance or the machine ran out.
//!
//! The tables go to stdout, `target/bench/store-forward-<unix time>.md` and
//! `target/bench/store-forward-latest.md`. Uses whatever `fieldmesh` binary
//! `tests/support/node.rs` finds (the newest of target/{release,debug}, or `FIELDMESH_BIN`):
//! build `--release` for figures worth noting. Needs root (network namespaces), `sipp`
//! (sip-tester) and iproute2; `baresip` for the voicemail row. Network only on loopback and
//! inside the lab's namespaces; every sipp run is bounded in count and time; every process is
//! one the support types started, stopped by PID; the labs remove their namespaces on drop.

use fieldmesh_tests::audio;
use fieldmesh_tests::baresip::{Baresip, BaresipOptions};
use fieldmesh_tests::host::{clock_ticks, cpu_model, cpu_ticks, which};
use fieldmesh_tests::lab::{Appliance, Lab, PHONE_IP, PHONE_SIDE_SIP, wait_neighbours};
use fieldmesh_tests::media::MEDIA_PORTS;
use fieldmesh_tests::node::{Node, NodeOptions};
use fieldmesh_tests::sipp::{Outcome, Running, Sipp, header, register};
use fieldmesh_tests::trace::{percentile, timestamp, write_report};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// After the appliances see each other: let the overlay's start-up exchanges pass before the
/// idle window.
const SETTLE: Duration = Duration::from_secs(5);
/// The greeting and beep before the recording starts (the prompt is about 4.5 s).
const GREETING: Duration = Duration::from_secs(5);
/// Delivery is given up when no message arrived at the phone for this long.
const DELIVERY_STALL: Duration = Duration::from_secs(10);

struct Settings {
    messages: u32,
    rates: Vec<u32>,
    per_extension: u32,
    overlay_messages: u32,
    overlay_rate: u32,
    idle: Duration,
    voicemail_secs: u32,
}

impl Settings {
    fn from_env() -> Settings {
        let num = |key: &str, default: u64| {
            fieldmesh_tests::host::env_number("store_forward", key, default)
        };
        let small = |key: &str, default: u64, min: u64, max: u64| -> u32 {
            u32::try_from(num(key, default).clamp(min, max)).unwrap_or(1)
        };
        let rates: Vec<u32> = match std::env::var("FIELDMESH_BENCH_MESSAGE_RATES") {
            Ok(v) => v
                .split(',')
                .map(|r| {
                    r.trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|r| (1..=5000).contains(r))
                        .unwrap_or_else(|| {
                            fail(&format!(
                                "FIELDMESH_BENCH_MESSAGE_RATES={v:?}: whole numbers 1-5000, \
                                 comma-separated"
                            ))
                        })
                })
                .collect(),
            Err(_) => vec![200, 500, 1000, 2000, 4000],
        };
        Settings {
            messages: small("FIELDMESH_BENCH_MESSAGES", 1000, 1, 20_000),
            rates,
            per_extension: small("FIELDMESH_BENCH_PER_EXTENSION", 500, 1, 20_000),
            overlay_messages: small("FIELDMESH_BENCH_OVERLAY_MESSAGES", 200, 1, 450),
            overlay_rate: small("FIELDMESH_BENCH_OVERLAY_RATE", 50, 1, 500),
            idle: Duration::from_secs(num("FIELDMESH_BENCH_IDLE", 10).clamp(1, 120)),
            voicemail_secs: small("FIELDMESH_BENCH_VOICEMAIL_SECS", 20, 5, 90),
        }
    }
}

/// Prints why the bench cannot run and exits with status 2.
fn fail(why: &str) -> ! {
    eprintln!("store_forward bench: {why}");
    std::process::exit(2);
}

fn main() {
    let cfg = Settings::from_env();
    for (tool, package) in [
        ("sipp", "sip-tester"),
        ("ip", "iproute2"),
        ("bridge", "iproute2"),
    ] {
        if which(tool).is_none() {
            fail(&format!("`{tool}` missing (Debian package {package})"));
        }
    }
    let started = Instant::now();
    let binary = Node::binary();
    eprintln!("store_forward bench: binary {}", binary.display());
    let syncs = fsync_rate(Duration::from_secs(1));
    eprintln!("{syncs:.0} write + fdatasync per second in the temp dir");

    let accepted: Vec<Accepted> = cfg.rates.iter().map(|&r| accept_run(&cfg, r)).collect();
    let messages = guarded("overlay bytes per stored message", || {
        overlay_messages(&cfg)
    });
    let voicemail = if which("baresip").is_none() {
        Err("not available (baresip missing)".to_string())
    } else {
        guarded("overlay bytes per voicemail minute", || {
            overlay_voicemail(&cfg)
        })
    };

    let report = render(
        &cfg,
        &binary,
        syncs,
        &accepted,
        &messages,
        &voicemail,
        started.elapsed(),
    );
    println!("\n{report}");
    write_report("store-forward", &report);
    if messages.is_err()
        || voicemail
            .as_ref()
            .is_err_and(|e| !e.contains("baresip missing"))
    {
        std::process::exit(1);
    }
}

/// Runs `f`; a panic in it (a phone or appliance that did not come up) becomes `Err` with its
/// message, so the other parts' figures are still printed.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "panicked".into());
        let first = msg.lines().next().unwrap_or_default().to_string();
        eprintln!("store_forward bench: {what} failed: {msg}");
        format!("failed: {}", first.chars().take(160).collect::<String>())
    })
}

/// Polls `done` every 100 ms until it holds (true) or `limit` passes (false).
fn poll_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many 512-byte appends, each followed by fdatasync, a file in the temp dir (where the
/// appliances' state directories are) takes per second: what a durable commit costs here.
fn fsync_rate(window: Duration) -> f64 {
    let Ok(mut file) = tempfile::tempfile() else {
        return 0.0;
    };
    let block = [0x5a_u8; 512];
    let (t, mut n) = (Instant::now(), 0u32);
    while t.elapsed() < window {
        if file
            .write_all(&block)
            .and_then(|()| file.sync_data())
            .is_err()
        {
            return 0.0;
        }
        n += 1;
    }
    f64::from(n) / t.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// sipp's `-trace_msg` log.

/// One message of a sipp `-trace_msg` log.
struct Traced {
    /// Seconds (local time; only differences are used).
    at: f64,
    sent: bool,
    /// Request or status line.
    start: String,
    call_id: String,
    /// Bytes on the wire, from the log's own count.
    bytes: usize,
    content_length: Option<usize>,
}

impl Traced {
    /// The status code of a response.
    fn code(&self) -> Option<u16> {
        self.start
            .strip_prefix("SIP/2.0 ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

/// Every message of a `-trace_msg` log: blocks that start with a dashed line and a
/// `YYYY-MM-DD HH:MM:SS.ffffff` timestamp, then `UDP message sent (N bytes):` or
/// `UDP message received [N] bytes :`, then the message.
fn traced(log: &str) -> Vec<Traced> {
    let mut out = Vec::new();
    for block in log.split("-----------------------------------------------") {
        let Some((stamp, rest)) = block.split_once('\n') else {
            continue;
        };
        let Some(at) = timestamp(stamp.trim()) else {
            continue;
        };
        let (kind, message) = rest.split_once('\n').unwrap_or((rest, ""));
        let message = message.trim_start();
        let Some(start) = message.lines().next() else {
            continue;
        };
        let Some(call_id) = header(message, "Call-ID").or_else(|| header(message, "i")) else {
            continue;
        };
        let bytes = kind
            .split(|c: char| !c.is_ascii_digit())
            .find(|d| !d.is_empty())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        out.push(Traced {
            at,
            sent: kind.contains("sent"),
            start: start.trim().to_string(),
            call_id: call_id.to_string(),
            bytes,
            content_length: header(message, "Content-Length").and_then(|v| v.parse().ok()),
        });
    }
    out
}

/// What the callers of one run saw, from their trace logs.
#[derive(Default)]
struct Answers {
    /// Distinct Call-IDs of MESSAGEs sent.
    sent: usize,
    /// Distinct Call-IDs answered `202`.
    accepted: usize,
    /// Other final answers: code → distinct Call-IDs.
    other: BTreeMap<u16, usize>,
    /// MESSAGEs with no final answer at all.
    unanswered: usize,
    /// First MESSAGE sent → last `202` received (s).
    span: Option<f64>,
    /// MESSAGE → `202`, ms, sorted.
    latencies: Vec<f64>,
    /// Mean Content-Length and mean size of the MESSAGEs sent (first transmissions).
    body_bytes: f64,
    request_bytes: f64,
}

fn answers(logs: &[String]) -> Answers {
    let mut sent_at: HashMap<String, f64> = HashMap::new();
    let mut finals: HashMap<String, (u16, f64)> = HashMap::new();
    let (mut body, mut request) = (0usize, 0usize);
    for log in logs {
        for m in traced(log) {
            if m.sent && m.start.starts_with("MESSAGE ") {
                if !sent_at.contains_key(&m.call_id) {
                    body += m.content_length.unwrap_or(0);
                    request += m.bytes;
                    sent_at.insert(m.call_id.clone(), m.at);
                }
            } else if !m.sent
                && let Some(code) = m.code().filter(|c| *c >= 200)
            {
                finals.entry(m.call_id.clone()).or_insert((code, m.at));
            }
        }
    }
    let mut a = Answers {
        sent: sent_at.len(),
        ..Answers::default()
    };
    let first = sent_at.values().copied().reduce(f64::min);
    let mut last_202: Option<f64> = None;
    for (call_id, (code, at)) in &finals {
        if *code == 202 {
            a.accepted += 1;
            last_202 = Some(last_202.map_or(*at, |l| l.max(*at)));
            if let Some(sent) = sent_at.get(call_id) {
                a.latencies.push((at - sent) * 1e3);
            }
        } else {
            *a.other.entry(*code).or_default() += 1;
        }
    }
    a.unanswered = sent_at.keys().filter(|c| !finals.contains_key(*c)).count();
    a.span = first.zip(last_202).map(|(f, l)| l - f);
    a.latencies.sort_by(f64::total_cmp);
    if a.sent > 0 {
        a.body_bytes = body as f64 / a.sent as f64;
        a.request_bytes = request as f64 / a.sent as f64;
    }
    a
}

fn retransmissions(out: &Outcome) -> u64 {
    out.stats
        .columns
        .get("Retransmissions(C)")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Distinct Call-IDs of the MESSAGEs a phone received.
fn messages_received(received: &[String]) -> usize {
    received
        .iter()
        .filter(|m| m.starts_with("MESSAGE "))
        .filter_map(|m| header(m, "Call-ID"))
        .collect::<BTreeSet<_>>()
        .len()
}

// ---------------------------------------------------------------------------------------------
// Part 1: messages accepted per second.

struct Accepted {
    rate: u32,
    extensions: usize,
    answers: Answers,
    retransmissions: u64,
    /// sipp failures beyond "no 202" (e.g. timeouts), summed over the callers.
    failures: Vec<String>,
    wall: Duration,
    /// The appliance's CPU time (user + system) while the callers ran (s).
    cpu: f64,
    delivery: Delivery,
}

#[derive(Default)]
struct Delivery {
    /// Distinct MESSAGEs the phone received.
    received: usize,
    /// "stored message delivered" lines in the appliance's log.
    logged: usize,
    /// Messages still kept for the extensions afterwards (status API).
    left: usize,
    /// First REGISTER → the last delivery seen (s).
    took: f64,
}

fn accept_run(cfg: &Settings, rate: u32) -> Accepted {
    eprintln!("---- {} messages at {rate}/s ----", cfg.messages);
    let node = Node::start_with(NodeOptions {
        extra_args: vec!["--no-mesh".into()],
        ..NodeOptions::default()
    });
    // Split the messages over extensions, at most `per_extension` each.
    let n_ext = cfg.messages.div_ceil(cfg.per_extension);
    let share: Vec<(String, u32)> = (0..n_ext)
        .map(|i| {
            let n = cfg.messages / n_ext + u32::from(i < cfg.messages % n_ext);
            (format!("away{rate}x{i}"), n)
        })
        .collect();
    let bound = Duration::from_secs(30 + u64::from(cfg.messages / rate));
    let ticks = cpu_ticks(node.pid());
    let callers: Vec<Running> = share
        .iter()
        .map(|(ext, n)| {
            let r = (u64::from(rate) * u64::from(*n) / u64::from(cfg.messages)).max(1);
            Sipp::new("message")
                .to(node.sip)
                .service(ext)
                .calls(*n)
                .rate(u32::try_from(r).unwrap_or(rate))
                .timeout(bound)
                .spawn()
        })
        .collect();
    let outs: Vec<Outcome> = callers.into_iter().map(Running::wait).collect();
    let cpu = (cpu_ticks(node.pid()) - ticks) as f64 / clock_ticks();
    let wall = outs.iter().map(|o| o.elapsed).max().unwrap_or_default();
    let logs: Vec<String> = outs.iter().map(Outcome::messages_log).collect();
    let answers = answers(&logs);
    let mut failures = Vec::new();
    for out in &outs {
        failures.extend(out.stats.failures());
        if out.code != Some(0) {
            eprintln!("{}: exit {:?}", out.label, out.code);
        }
    }
    eprintln!(
        "{rate}/s: {} sent, {} answered 202, other {:?}, {} unanswered, wall {wall:.2?}",
        answers.sent, answers.accepted, answers.other, answers.unanswered
    );
    if answers.accepted == 0 {
        let reports: Vec<String> = outs.iter().map(Outcome::report).collect();
        panic!(
            "no MESSAGE was accepted at {rate}/s: the bench is broken, not slow\n{}",
            reports.join("\n")
        );
    }
    let delivery = deliver(&node, &share, answers.accepted);
    Accepted {
        rate,
        extensions: share.len(),
        retransmissions: outs.iter().map(retransmissions).sum(),
        failures,
        answers,
        wall,
        cpu,
        delivery,
    }
}

/// Registers one `uas_message` phone for every extension and counts what it receives.
fn deliver(node: &Node, share: &[(String, u32)], expected: usize) -> Delivery {
    let expected_u32 = u32::try_from(expected).unwrap_or(u32::MAX);
    let bound = Duration::from_secs(60) + Duration::from_millis(20) * expected_u32;
    let phone = Sipp::new("uas_message")
        .calls(expected_u32)
        .timeout(bound + Duration::from_secs(10))
        .spawn();
    let delivered = || node.log_text().matches("stored message delivered").count();
    let t = Instant::now();
    for (ext, _) in share {
        register(node.sip, ext, phone.port());
    }
    let deadline = t + bound;
    let (mut seen, mut progress) = (0, Instant::now());
    let mut last_at = t.elapsed();
    loop {
        let now = delivered();
        if now != seen {
            seen = now;
            progress = Instant::now();
            last_at = t.elapsed();
        }
        if seen >= expected || progress.elapsed() > DELIVERY_STALL || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let received = if seen >= expected {
        let out = phone.wait();
        messages_received(&out.received())
    } else {
        eprintln!("delivery stopped at {seen} of {expected}");
        let got = messages_received(&phone.received());
        drop(phone);
        got
    };
    let exts: BTreeSet<&str> = share.iter().map(|(e, _)| e.as_str()).collect();
    let left = node.status()["stored"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["kind"] == "message" && s["aor"].as_str().is_some_and(|a| exts.contains(a)))
        .count();
    Delivery {
        received,
        logged: delivered(),
        left,
        took: last_at.as_secs_f64(),
    }
}

// ---------------------------------------------------------------------------------------------
// Parts 2 and 3: bytes on A's mesh interfaces.

/// Bytes through an appliance's mesh interfaces, summed.
#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    tx: u64,
    rx: u64,
}

/// The kernel's counters of `app`'s mesh interfaces (inside its namespace).
fn counters(app: &Appliance) -> Counters {
    let mut c = Counters::default();
    for port in &app.mesh {
        let out = Command::new("ip")
            .args(["-n", &app.netns, "-s", "-j", "link", "show", "dev"])
            .arg(&port.ifname)
            .output()
            .expect("ip -s -j link show");
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let stats = &links[0]["stats64"];
        c.tx += stats["tx"]["bytes"].as_u64().unwrap_or(0);
        c.rx += stats["rx"]["bytes"].as_u64().unwrap_or(0);
    }
    c
}

/// Bytes per second each way (or per unit, after [`Rate::per`]).
#[derive(Clone, Copy, Debug, Default)]
struct Rate {
    tx: f64,
    rx: f64,
}

impl Rate {
    fn total(&self) -> f64 {
        self.tx + self.rx
    }
}

/// Idle bytes per second through `app`'s mesh interfaces over `window`.
fn idle_rate(app: &Appliance, window: Duration) -> Rate {
    let (before, t) = (counters(app), Instant::now());
    std::thread::sleep(window);
    let after = counters(app);
    let secs = t.elapsed().as_secs_f64();
    Rate {
        tx: (after.tx - before.tx) as f64 / secs,
        rx: (after.rx - before.rx) as f64 / secs,
    }
}

/// Bytes between `before` and `after`, less `idle` over `secs`.
fn above_idle(before: Counters, after: Counters, idle: Rate, secs: f64) -> Rate {
    Rate {
        tx: (after.tx - before.tx) as f64 - idle.tx * secs,
        rx: (after.rx - before.rx) as f64 - idle.rx * secs,
    }
}

struct OverlayMessages {
    idle: Rate,
    idle_after: Rate,
    sent: u32,
    accepted: usize,
    replicated: usize,
    two_holders: usize,
    window: f64,
    raw: Rate,
    per_message: Option<Rate>,
    body_bytes: f64,
    request_bytes: f64,
}

fn overlay_messages(cfg: &Settings) -> OverlayMessages {
    eprintln!("---- overlay bytes per stored message ----");
    let lab = Lab::new("sf-messages");
    let apps = ["a", "b", "c"].map(|n| lab.appliance(n));
    let nodes = apps
        .each_ref()
        .map(|x| lab.start_node(x, NodeOptions::default()));
    wait_neighbours(&nodes.each_ref(), Duration::from_secs(20));
    std::thread::sleep(SETTLE);
    let a = &apps[0];
    let idle = idle_rate(a, cfg.idle);
    eprintln!("A idle: {idle:?} B/s");

    let m = cfg.overlay_messages;
    let replicated = || nodes[0].log_text().matches("message replicated").count();
    let (before, t) = (counters(a), Instant::now());
    let out = a
        .caller("message")
        .service("303")
        .calls(m)
        .rate(cfg.overlay_rate)
        .timeout(Duration::from_secs(30 + u64::from(m / cfg.overlay_rate)))
        .run();
    let answers = answers(&[out.messages_log()]);
    let all = poll_until(Duration::from_secs(30), || replicated() >= answers.accepted);
    let (after, window) = (counters(a), t.elapsed().as_secs_f64());
    let log = nodes[0].log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("message replicated"))
        .collect();
    eprintln!(
        "{} sent, {} answered 202, {} replicated (all: {all}) in {window:.1} s",
        answers.sent,
        answers.accepted,
        lines.len()
    );
    let raw = above_idle(before, after, Rate::default(), window);
    let net = above_idle(before, after, idle, window);
    let n = lines.len();
    let per_message = (n > 0).then(|| Rate {
        tx: net.tx / n as f64,
        rx: net.rx / n as f64,
    });
    let two_holders = lines.iter().filter(|l| l.contains("holders=2")).count();
    let idle_after = idle_rate(a, cfg.idle);
    eprintln!("A idle after: {idle_after:?} B/s");
    OverlayMessages {
        idle,
        idle_after,
        sent: m,
        accepted: answers.accepted,
        replicated: n,
        two_holders,
        window,
        raw,
        per_message,
        body_bytes: answers.body_bytes,
        request_bytes: answers.request_bytes,
    }
}

struct OverlayVoicemail {
    idle: Rate,
    talk: u32,
    /// What A logged as the recording's length (ms).
    recorded_ms: Option<u64>,
    holders: Option<u64>,
    /// Dial → "voicemail replicated" (s).
    window: f64,
    /// Hang-up → "voicemail replicated" (s).
    replication: f64,
    /// Over the whole window, less idle.
    whole_call: Rate,
    /// Over the replication window, before and after subtracting idle.
    raw: Rate,
    per_voicemail: Rate,
    per_minute: Option<Rate>,
}

fn phone(app: &Appliance, user: &str, mic: &Path) -> BaresipOptions {
    BaresipOptions::new(user, IpAddr::V4(PHONE_IP), PHONE_SIDE_SIP, mic).in_netns(&app.phone_netns)
}

/// The number after `key=` in `line`.
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(&format!("{key}="))? + key.len() + 1..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn overlay_voicemail(cfg: &Settings) -> OverlayVoicemail {
    eprintln!("---- overlay bytes per voicemail minute ----");
    let lab = Lab::new("sf-voicemail");
    let apps = ["a", "b", "c"].map(|n| lab.appliance(n));
    let [a, _, c] = &apps;
    let nodes = apps.each_ref().map(|x| {
        lab.start_node(
            x,
            NodeOptions {
                extra_args: vec![
                    "--media-ports".into(),
                    format!("{}-{}", MEDIA_PORTS.0, MEDIA_PORTS.1),
                ],
                ..NodeOptions::default()
            },
        )
    });
    wait_neighbours(&nodes.each_ref(), Duration::from_secs(20));
    let dir = tempfile::tempdir().expect("temp dir");
    let talk = Duration::from_secs(u64::from(cfg.voicemail_secs));
    let tone = dir.path().join("1000.wav");
    let tone_secs = (GREETING + talk).as_secs_f64() + 15.0;
    audio::write_sine(&tone, 48_000, 1000.0, tone_secs, 0.5);

    // yves was on C once and is away.
    c.register("yves", 5099, 300);
    c.register("yves", 5099, 0);
    std::thread::sleep(SETTLE);
    let idle = idle_rate(a, cfg.idle);
    eprintln!("A idle: {idle:?} B/s");

    let mut alice = Baresip::start(phone(a, "alice", &tone).codecs("opus/48000/2"));
    alice.wait_registered();
    let (before, t) = (counters(a), Instant::now());
    alice.dial("yves");
    alice.wait_established();
    std::thread::sleep(GREETING + talk);
    // Recording ends with the call; replication follows. Counting from here keeps the idle
    // rate's noise over the call out of the figure.
    let (at_hangup, t_hangup) = (counters(a), Instant::now());
    alice.hangup();
    alice.wait_terminated();
    let replicated_line = || {
        nodes[0]
            .log_text()
            .lines()
            .find(|l| l.contains("voicemail replicated"))
            .map(str::to_string)
    };
    let done = poll_until(Duration::from_secs(30), || replicated_line().is_some());
    let after = counters(a);
    let (window, replication) = (t.elapsed().as_secs_f64(), t_hangup.elapsed().as_secs_f64());
    drop(alice);
    let log = nodes[0].log_text();
    let recorded_ms = log
        .lines()
        .find(|l| l.contains("voicemail stored"))
        .and_then(|l| field(l, "duration_ms"));
    let holders = replicated_line().and_then(|l| field(&l, "holders"));
    eprintln!(
        "voicemail recorded {recorded_ms:?} ms, replicated: {done} (holders {holders:?}), \
         window {window:.1} s"
    );
    let whole_call = above_idle(before, after, idle, window);
    let raw = above_idle(at_hangup, after, Rate::default(), replication);
    let per_voicemail = above_idle(at_hangup, after, idle, replication);
    let per_minute = recorded_ms.filter(|&ms| ms > 0 && done).map(|ms| {
        let scale = 60_000.0 / ms as f64;
        Rate {
            tx: per_voicemail.tx * scale,
            rx: per_voicemail.rx * scale,
        }
    });
    OverlayVoicemail {
        idle,
        talk: cfg.voicemail_secs,
        recorded_ms,
        holders,
        window,
        replication,
        whole_call,
        raw,
        per_voicemail,
        per_minute,
    }
}

// ---------------------------------------------------------------------------------------------
// The report.

fn render(
    cfg: &Settings,
    binary: &Path,
    syncs: f64,
    accepted: &[Accepted],
    messages: &Result<OverlayMessages, String>,
    voicemail: &Result<OverlayVoicemail, String>,
    took: Duration,
) -> String {
    let mut out = String::new();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let build = if std::env::var_os("FIELDMESH_BIN").is_some() {
        "set by FIELDMESH_BIN, build profile unknown"
    } else if binary.components().any(|c| c.as_os_str() == "release") {
        "release build"
    } else {
        "NOT a release build: build with --release for figures worth noting"
    };
    let tmp = std::env::temp_dir();
    let fs_type = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(&tmp)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into());
    let _ = writeln!(out, "## fieldmesh store and forward (unix time {unix})\n");
    let _ = writeln!(out, "- machine: {}, {cores} cores", cpu_model());
    let _ = writeln!(out, "- fieldmesh: {} ({build})", binary.display());
    let _ = writeln!(
        out,
        "- state directories under {} (file system: {fs_type}; {syncs:.0} small writes with \
         fdatasync per second there, 1 s probe); took {:.0} s\n",
        tmp.display(),
        took.as_secs_f64()
    );

    let _ = writeln!(
        out,
        "### MESSAGEs accepted with durable commit (one appliance, 127.0.0.1, `--no-mesh`)\n"
    );
    let _ = writeln!(
        out,
        "{} messages per rate to extensions never registered (at most {} per extension, one \
         sipp each, side by side), a fresh appliance per rate.\n",
        cfg.messages, cfg.per_extension
    );
    let _ = writeln!(
        out,
        "| offered rate | sent | 202 | other final answers | no answer | sipp retransmissions \
         | wall | accepted/s (wall) | accepted/s (first MESSAGE→last 202) | MESSAGE→202 p50 / \
         p99 | appliance CPU | delivered when the phone registers |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
    for a in accepted {
        let x = &a.answers;
        let other = if x.other.is_empty() {
            "0".to_string()
        } else {
            x.other
                .iter()
                .map(|(code, n)| format!("{n} × {code}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut unanswered = x.unanswered.to_string();
        if !a.failures.is_empty() {
            let _ = write!(unanswered, " ({})", a.failures.join(", "));
        }
        let d = &a.delivery;
        let mut delivered = format!(
            "{} of {} in {:.1} s ({:.0}/s; appliance logged {}, {} left)",
            d.received,
            x.accepted,
            d.took,
            d.received as f64 / d.took.max(1e-3),
            d.logged,
            d.left
        );
        if d.received != x.accepted {
            delivered = format!("**MISMATCH**: {delivered}");
        }
        let _ = writeln!(
            out,
            "| {}/s ({} ext.) | {} | {} | {other} | {unanswered} | {} | {:.2} s | {:.0}/s | {} | {} / {} \
             | {:.2} s ({:.0} µs per 202) | {delivered} |",
            a.rate,
            a.extensions,
            x.sent,
            x.accepted,
            a.retransmissions,
            a.wall.as_secs_f64(),
            x.accepted as f64 / a.wall.as_secs_f64().max(1e-3),
            x.span
                .filter(|s| *s > 0.0)
                .map_or("-".into(), |s| format!("{:.0}/s", x.accepted as f64 / s)),
            ms(percentile(&x.latencies, 0.5)),
            ms(percentile(&x.latencies, 0.99)),
            a.cpu,
            a.cpu * 1e6 / x.accepted.max(1) as f64,
        );
    }
    let _ = writeln!(
        out,
        "\nwall: sipp's run time (start-up included; the longest of the callers). MESSAGE→202 \
         from the callers' -trace_msg timestamps. Each 202 follows a SQLite commit (WAL, \
         synchronous = FULL). Appliance CPU: utime + stime of its process while the callers \
         ran (clock ticks, 10 ms steps); the callers run on the same cores. Delivery: one uas_message phone registered for every extension; \
         the appliance delivers one message at a time per extension.\n"
    );

    let _ = writeln!(
        out,
        "### Overlay traffic at A (3 appliances on one bridge of the lab, k = 2 holders)\n"
    );
    let _ = writeln!(out, "| metric | A sent | A received | total | notes |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    let b = |v: f64| format!("{v:.0} B");
    let bs = |r: Rate| {
        (
            format!("{:.0} B/s", r.tx),
            format!("{:.0} B/s", r.rx),
            format!("{:.0} B/s", r.total()),
        )
    };
    match messages {
        Ok(m) => {
            let (tx, rx, total) = bs(m.idle);
            let _ = writeln!(
                out,
                "| idle, before the messages | {tx} | {rx} | {total} | {} s window |",
                cfg.idle.as_secs()
            );
            let note = format!(
                "{} sent at {}/s, {} answered 202, {} replicated ({} to 2 holders) within \
                 {:.1} s; {:.0} / {:.0} B in that time before subtracting idle; body {:.0} B \
                 (MESSAGE {:.0} B)",
                m.sent,
                cfg.overlay_rate,
                m.accepted,
                m.replicated,
                m.two_holders,
                m.window,
                m.raw.tx,
                m.raw.rx,
                m.body_bytes,
                m.request_bytes
            );
            match m.per_message {
                Some(p) => {
                    let _ = writeln!(
                        out,
                        "| **per stored message** | {} | {} | {} | {note} |",
                        b(p.tx),
                        b(p.rx),
                        b(p.total())
                    );
                }
                None => {
                    let _ = writeln!(out, "| per stored message | - | - | - | {note} |");
                }
            }
            let (tx, rx, total) = bs(m.idle_after);
            let _ = writeln!(
                out,
                "| idle, holding the {} messages | {tx} | {rx} | {total} | {} s window |",
                m.replicated,
                cfg.idle.as_secs()
            );
        }
        Err(e) => {
            let _ = writeln!(out, "| per stored message | - | - | - | {e} |");
        }
    }
    match voicemail {
        Ok(v) => {
            let (tx, rx, total) = bs(v.idle);
            let _ = writeln!(
                out,
                "| idle, before the voicemail (new lab) | {tx} | {rx} | {total} | {} s window |",
                cfg.idle.as_secs()
            );
            let recorded = v
                .recorded_ms
                .map_or("?".into(), |ms| format!("{:.1} s", ms as f64 / 1e3));
            let note = format!(
                "tone {} s after the greeting, A recorded {recorded}, replicated to {} holders; \
                 hang-up → \"voicemail replicated\" {:.2} s, {:.0} / {:.0} B before subtracting \
                 idle; over the whole call (dial → replicated, {:.1} s) less idle: {:.0} / {:.0} B",
                v.talk,
                v.holders.map_or("?".into(), |h| h.to_string()),
                v.replication,
                v.raw.tx,
                v.raw.rx,
                v.window,
                v.whole_call.tx,
                v.whole_call.rx
            );
            let _ = writeln!(
                out,
                "| per voicemail | {} | {} | {} | {note} |",
                b(v.per_voicemail.tx),
                b(v.per_voicemail.rx),
                b(v.per_voicemail.total())
            );
            match v.per_minute {
                Some(p) => {
                    let _ = writeln!(
                        out,
                        "| **per voicemail minute** | {} | {} | {} | per voicemail × 60 s / \
                         recorded length |",
                        b(p.tx),
                        b(p.rx),
                        b(p.total())
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "| per voicemail minute | - | - | - | not replicated, or no length logged |"
                    );
                }
            }
        }
        Err(e) => {
            let _ = writeln!(out, "| per voicemail minute | - | - | - | {e} |");
        }
    }
    let _ = writeln!(
        out,
        "\nBytes: the kernel's counters of A's mesh interface (every frame, Ethernet header \
         included: replication, the overlay lookups A makes for the extension, TCP \
         acknowledgements, pings, gossip, inventory and mDNS), less the idle rate over the \
         same time. A sends each replica to two holders. The recording is Opus (the \
         appliance's 24 kbit/s target is about 180 kB per minute per copy)."
    );
    out
}

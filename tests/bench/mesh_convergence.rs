//! Mesh convergence (issue 4). It prints figures and asserts none of them:
//!
//! ```sh
//! cargo bench -p fieldmesh-tests --bench mesh_convergence          # N = 3, 10, 20
//! FIELDMESH_BENCH_SIZES=3,5 cargo bench -p fieldmesh-tests --bench mesh_convergence
//! ```
//!
//! For each N, N appliances run on one bridge in the lab (`tests/support/lab.rs`), and the
//! benchmark measures:
//! - **convergence**: the time from the start until every appliance lists every other as a
//!   connected peer. It is counted from the first process start and from the last one.
//! - **routable**: for each of `REGISTRATIONS` new registrations (raw REGISTERs from phone
//!   namespaces, round robin over the appliances), the time from the 200 OK until each other
//!   appliance's status API shows a live location record. Given as p50/p99 over all (N-1) x
//!   registrations samples. Every appliance is watched by its own thread every 10 ms, so that
//!   is the resolution.
//! - **mesh bytes per registration**: bytes the appliances sent into the bridge while the
//!   registrations spread, minus the idle rate, per registration. The idle rate is measured over
//!   3 s, starting 5 s after convergence. This counts gossip, kad, anti-entropy, pings and mDNS
//!   together, with their Ethernet headers, so the figure is noisy when the idle rate is high.
//!
//! Uses whatever `fieldmesh` binary `tests/support/node.rs` finds (build it with `--release` for
//! figures worth noting). Needs root (network namespaces).

use fieldmesh_tests::lab::{
    Appliance, Lab, PHONE_IP, PHONE_SIDE_SIP, connected_peers, in_netns, live_routes, statuses,
};
use fieldmesh_tests::node::{Node, NodeOptions};
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

const REGISTRATIONS: usize = 10;
const CONVERGE_LIMIT: Duration = Duration::from_secs(60);
const ROUTE_LIMIT: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_secs(5);
const IDLE_WINDOW: Duration = Duration::from_secs(3);

fn main() {
    let sizes: Vec<usize> = std::env::var("FIELDMESH_BENCH_SIZES")
        .unwrap_or_else(|_| "3,10,20".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    eprintln!("binary: {}", Node::binary().display());
    let mut rows = Vec::new();
    for n in sizes {
        rows.push(run(n));
    }
    println!();
    println!(
        "| N | all see all, from first start | from last start | routable p50 | routable p99 | \
         samples | mesh bytes/registration | idle mesh bytes/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

fn run(n: usize) -> String {
    eprintln!("---- N = {n} ----");
    let lab = Lab::new(&format!("bench-{n}"));
    let apps: Vec<Appliance> = (1..=n)
        .map(|i| lab.appliance(&format!("n{i:02}")))
        .collect();
    let first_start = Instant::now();
    let nodes: Vec<Node> = apps
        .iter()
        .map(|a| lab.start_node(a, NodeOptions::default()))
        .collect();
    let last_start = nodes
        .iter()
        .map(Node::started_at)
        .max()
        .unwrap_or(first_start);
    let refs: Vec<&Node> = nodes.iter().collect();
    let ids: Vec<String> = nodes.iter().map(Node::peer_id).collect();
    let converged = poll_until(CONVERGE_LIMIT, || {
        statuses(&refs).iter().enumerate().all(|(i, s)| {
            let c = connected_peers(s);
            ids.iter()
                .enumerate()
                .all(|(j, id)| i == j || c.contains(id))
        })
    });
    let (from_first, from_last) = match converged {
        Some(at) => (
            format!("{} ms", at.duration_since(first_start).as_millis()),
            format!("{} ms", at.duration_since(last_start).as_millis()),
        ),
        None => (format!("> {CONVERGE_LIMIT:?}"), "-".into()),
    };
    eprintln!("all see all: {from_first} from the first start, {from_last} from the last");

    // The first seconds after convergence carry the overlay's own start-up exchanges.
    std::thread::sleep(SETTLE);
    let before = mesh_bytes(&lab);
    let idle_from = Instant::now();
    std::thread::sleep(IDLE_WINDOW);
    let idle_rate = (mesh_bytes(&lab) - before) as f64 / idle_from.elapsed().as_secs_f64();

    let spread_from = Instant::now();
    let spread_before = mesh_bytes(&lab);
    let mut samples: Vec<Duration> = Vec::new();
    let mut missing = 0;
    for r in 0..REGISTRATIONS {
        let home = r % n;
        let aor = format!("b{n}x{r}");
        let registered = register(&apps[home], &aor, 40000 + r as u16);
        let others: Vec<&Node> = (0..n).filter(|&i| i != home).map(|i| &nodes[i]).collect();
        let seen = watch_routable(&others, &aor, registered);
        missing += seen.iter().filter(|s| s.is_none()).count();
        samples.extend(seen.into_iter().flatten());
    }
    let spread_bytes =
        (mesh_bytes(&lab) - spread_before) as f64 - idle_rate * spread_from.elapsed().as_secs_f64();
    samples.sort();
    let q = |p: f64| {
        samples
            .get(((samples.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or("-".to_string(), |d| {
                format!("{:.1} ms", d.as_secs_f64() * 1e3)
            })
    };
    let row = format!(
        "| {n} | {from_first} | {from_last} | {} | {} | {}{} | {:.0} | {:.0} |",
        q(0.5),
        q(0.99),
        samples.len(),
        if missing > 0 {
            format!(" ({missing} not routable within {ROUTE_LIMIT:?})")
        } else {
            String::new()
        },
        spread_bytes / REGISTRATIONS as f64,
        idle_rate
    );
    eprintln!("{row}");
    row
}

/// Polls `done` every 10 ms until it holds (returns when) or `limit` passes (None).
fn poll_until(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Sends one REGISTER for `aor` from the appliance's phone namespace (retransmitted every
/// 500 ms, at most 4 times) and returns when the 200 OK arrived.
fn register(appliance: &Appliance, aor: &str, contact_port: u16) -> Instant {
    let socket =
        in_netns(&appliance.phone_netns, || UdpSocket::bind((PHONE_IP, 0))).expect("phone socket");
    let port = socket.local_addr().expect("local addr").port();
    let pid = std::process::id();
    let request = format!(
        "REGISTER sip:{PHONE_SIDE_SIP} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {PHONE_IP}:{port};branch=z9hG4bK-bench-{aor}-{pid}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{aor}@{PHONE_SIDE_SIP}>;tag=bench{pid}\r\n\
         To: <sip:{aor}@{PHONE_SIDE_SIP}>\r\n\
         Call-ID: bench-{aor}-{pid}@{PHONE_IP}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:{aor}@{PHONE_IP}:{contact_port}>\r\n\
         Expires: 300\r\n\
         Content-Length: 0\r\n\r\n"
    );
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    for _ in 0..4 {
        socket
            .send_to(request.as_bytes(), PHONE_SIDE_SIP)
            .expect("send REGISTER");
        while let Ok(len) = socket.recv(&mut buf) {
            if buf[..len].starts_with(b"SIP/2.0 200") {
                return Instant::now();
            }
        }
    }
    panic!("no 200 for the REGISTER of {aor} at {}", appliance.name);
}

/// Watches every node in parallel (every 10 ms) until it shows a live record for `aor`;
/// returns each one's delay after `since`, or None past [`ROUTE_LIMIT`].
fn watch_routable(nodes: &[&Node], aor: &str, since: Instant) -> Vec<Option<Duration>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                s.spawn(move || {
                    while since.elapsed() < ROUTE_LIMIT {
                        if !live_routes(&node.status(), aor).is_empty() {
                            return Some(since.elapsed());
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    None
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(None))
            .collect()
    })
}

/// Bytes the appliances sent into the mesh bridges: the sum of rx_bytes of every bridge port
/// that is an appliance's veth end (names `<appliance>-m<k>`).
fn mesh_bytes(lab: &Lab) -> u64 {
    let out = Command::new("ip")
        .args(["-n", &lab.mesh_netns, "-s", "-j", "link", "show"])
        .output()
        .expect("ip -s -j link show");
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j JSON");
    links
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["ifname"].as_str().is_some_and(|n| n.contains("-m")))
        .filter_map(|l| l["stats64"]["rx"]["bytes"].as_u64())
        .sum()
}

//! Calls across the overlay (issue 9, item 3). It prints figures and asserts none of them:
//!
//! ```sh
//! cargo build --release -p fieldmesh
//! cargo bench -p fieldmesh-tests --bench overlay_calls
//! FIELDMESH_BENCH_OVERLAY_CALLS=50 cargo bench -p fieldmesh-tests --bench overlay_calls
//! ```
//!
//! Caller and callee are registered on different appliances, in the lab's namespaces
//! (`tests/support/lab.rs`), with every mesh hop going through the lab's userspace impairment
//! hop (`tests/support/impair.rs`, 5 ms each way; this kernel has no netem):
//! - **2 appliances**: A on `br0`, B on a bridge joined to `br0` through one hop. A's phone
//!   calls B's phone: one hop each way.
//! - **3 appliances, the line A–B–C**: A and C each behind a hop, B on both sides forwarding IP.
//!   A and C share no link, so A learns of C's phones through the overlay. A's phone calls C's
//!   phone: two hops each way.
//!
//! For each, INVITE→180 at the caller (sipp uac → A → ... → sipp uas; the full
//! INVITE/100/180/200/ACK/BYE flow), from the caller's `-trace_msg` timestamps:
//! - **cold, right after REGISTER**: a fresh extension registers at the callee's appliance and
//!   is called as soon as the REGISTER's 200 arrived (plus sipp's start-up), so the caller's
//!   appliance may not have the record yet and must look it up in the overlay.
//! - **cold, routable**: a fresh extension, called once the caller's appliance lists its
//!   record (status API): the first call to it, without the lookup wait.
//! - **warm**: one extension, called once to prime it, then `CALLS` calls at `RATE` per second.
//!
//! The table goes to `target/bench/overlay-calls-<unix time>.md` and
//! `target/bench/overlay-calls-latest.md`. Uses whatever `fieldmesh` binary
//! `tests/support/node.rs` finds (the newest of target/{release,debug}, or `FIELDMESH_BIN`):
//! build `--release` for figures worth noting. Needs root (network namespaces), `sipp`
//! (sip-tester) and iproute2. Network only inside the lab's namespaces; every sipp run is
//! bounded in count and time and stopped by PID; the lab removes its namespaces on drop.

use fieldmesh_tests::host::{cpu_model, which};
use fieldmesh_tests::impair::Impairment;
use fieldmesh_tests::lab::{
    Appliance, Lab, Link, ROUTE_WAIT, live_routes, wait_neighbours, wait_route,
};
use fieldmesh_tests::node::{Node, NodeOptions};
use fieldmesh_tests::sipp::Outcome;
use fieldmesh_tests::trace::{percentile, ringing_latencies};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Hold time of every call (the uac's `<pause/>` before BYE).
const HOLD_MS: u64 = 100;

struct Settings {
    warm_calls: u32,
    rate: u32,
    cold: usize,
    hop_ms: u32,
}

impl Settings {
    fn from_env() -> Settings {
        let num = |key: &str, default: u64| {
            fieldmesh_tests::host::env_number("overlay_calls", key, default)
        };
        let small = |key: &str, default: u64, max: u64| -> u32 {
            u32::try_from(num(key, default).clamp(1, max)).unwrap_or(1)
        };
        Settings {
            warm_calls: small("FIELDMESH_BENCH_OVERLAY_CALLS", 200, 2000),
            rate: small("FIELDMESH_BENCH_OVERLAY_RATE", 20, 100),
            cold: small("FIELDMESH_BENCH_OVERLAY_COLD", 5, 20) as usize,
            hop_ms: small("FIELDMESH_BENCH_HOP_MS", 5, 100),
        }
    }
}

/// One topology's figures.
#[derive(Default)]
struct Figures {
    /// Mesh hops crossed one way, caller's appliance to callee's.
    hops: u32,
    cold_now: Vec<f64>,
    /// Cold calls right after REGISTER whose record the caller's appliance already listed.
    cold_now_known: usize,
    cold_routable: Vec<f64>,
    warm: Vec<f64>,
    /// REGISTER done (its sipp exited) → the record is live at the caller's appliance (ms).
    route_ms: Vec<f64>,
    failed: u64,
    retransmissions: u64,
    /// Achieved delay of each hop, p50 per direction (ms).
    hop_delay: Vec<String>,
    warm_rate: f64,
}

fn main() {
    let cfg = Settings::from_env();
    for (tool, package) in [
        ("sipp", "sip-tester"),
        ("ip", "iproute2"),
        ("bridge", "iproute2"),
    ] {
        if which(tool).is_none() {
            eprintln!("overlay_calls bench: `{tool}` missing (Debian package {package})");
            std::process::exit(2);
        }
    }
    let started = Instant::now();
    let binary = Node::binary();
    eprintln!("overlay_calls bench: binary {}", binary.display());
    let impairment = Impairment {
        delay_ms: cfg.hop_ms,
        seed: 9,
        ..Impairment::default()
    };
    let two = run_two(&cfg, impairment);
    let three = run_line(&cfg, impairment);
    let report = render(&cfg, &binary, &two, &three, started.elapsed());
    println!("\n{report}");
    fieldmesh_tests::trace::write_report("overlay-calls", &report);
}

/// A on `br0`, B behind one hop.
fn run_two(cfg: &Settings, impairment: Impairment) -> Figures {
    eprintln!("---- 2 appliances ----");
    let lab = Lab::new("overlay-2");
    let base = lab.mesh();
    let far = lab.impaired_link(&base, impairment);
    let a = lab.appliance_on("a", &[&base]);
    let b = lab.appliance_on("b", &[&far]);
    let na = lab.start_node(&a, NodeOptions::default());
    let nb = lab.start_node(&b, NodeOptions::default());
    wait_neighbours(&[&na, &nb], Duration::from_secs(20));
    let mut f = measure(cfg, "two", (&a, &na), (&b, &nb));
    f.hops = 1;
    f.hop_delay = vec![hop_delay(&lab, &far)];
    f
}

/// The line A–B–C with a hop in front of A and one in front of C.
fn run_line(cfg: &Settings, impairment: Impairment) -> Figures {
    eprintln!("---- 3 appliances, line A–B–C ----");
    let lab = Lab::new("overlay-3");
    let left = lab.mesh();
    let a_side = lab.impaired_link(&left, impairment);
    let right = lab.link();
    let c_side = lab.impaired_link(&right, impairment);
    let a = lab.appliance_on("a", &[&a_side]);
    let b = lab.appliance_on("b", &[&left, &right]);
    let c = lab.appliance_on("c", &[&c_side]);
    lab.forward(&b);
    lab.route(&a, &right, b.mesh[0].ip);
    lab.route(&c, &left, b.mesh[1].ip);
    let na = lab.start_node(&a, NodeOptions::default());
    let nb = lab.start_node(&b, NodeOptions::default());
    let nc = lab.start_node(&c, NodeOptions::default());
    wait_neighbours(&[&na, &nb], Duration::from_secs(20));
    wait_neighbours(&[&nb, &nc], Duration::from_secs(20));
    let mut f = measure(cfg, "line", (&a, &na), (&c, &nc));
    f.hops = 2;
    f.hop_delay = vec![hop_delay(&lab, &a_side), hop_delay(&lab, &c_side)];
    drop(nb);
    f
}

fn hop_delay(lab: &Lab, link: &Link) -> String {
    let s = lab.hop_stats(link);
    eprintln!("hop {}: {s}", link.bridge);
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    format!(
        "{} / {} ms",
        ms(s.left_to_right.delay_ms(0.5)),
        ms(s.right_to_left.delay_ms(0.5))
    )
}

/// Places the cold and warm calls from `caller`'s phone to phones registered at `callee`.
fn measure(
    cfg: &Settings,
    tag: &str,
    (caller, caller_node): (&Appliance, &Node),
    (callee, callee_node): (&Appliance, &Node),
) -> Figures {
    let mut f = Figures::default();
    let total = 2 * cfg.cold as u32 + 1 + cfg.warm_calls;
    let warm_secs = u64::from(cfg.warm_calls / cfg.rate) + 1;
    let bound = Duration::from_secs(120 + warm_secs + 30 * cfg.cold as u64);
    let phone = callee
        .phone("uas_proxy")
        .calls(total)
        .timeout(bound)
        .spawn();
    let port = phone.port();
    let route = |ext: &str| {
        wait_route(
            caller_node,
            ext,
            callee_node,
            callee.mesh_sip(),
            ROUTE_WAIT,
            |_| true,
        )
    };
    let call = |f: &mut Figures, ext: &str, calls: u32| -> Vec<f64> {
        let mut sipp = caller
            .caller("uac_proxy")
            .service(ext)
            .pause_ms(HOLD_MS)
            .calls(calls)
            .timeout(Duration::from_secs(30 + u64::from(calls / cfg.rate)));
        if calls > 1 {
            sipp = sipp.rate(cfg.rate);
        }
        let out = sipp.run();
        tally(f, &out, calls);
        if calls > 1 {
            f.warm_rate = f64::from(calls) / out.elapsed.as_secs_f64();
        }
        ringing_latencies(&out.messages_log())
    };

    for i in 0..cfg.cold {
        let ext = format!("{tag}n{i}");
        callee.register(&ext, port, 300);
        let registered = Instant::now();
        let known = !live_routes(&caller_node.status(), &ext).is_empty();
        f.cold_now_known += usize::from(known);
        let got = call(&mut f, &ext, 1);
        eprintln!(
            "cold (right after REGISTER, record known: {known}) {ext}: {got:?} ms, {:.0?} after the 200",
            registered.elapsed()
        );
        f.cold_now.extend(got);
    }
    for i in 0..cfg.cold {
        let ext = format!("{tag}r{i}");
        callee.register(&ext, port, 300);
        f.route_ms.push(route(&ext).as_secs_f64() * 1e3);
        let got = call(&mut f, &ext, 1);
        eprintln!("cold (routable) {ext}: {got:?} ms");
        f.cold_routable.extend(got);
    }
    let ext = format!("{tag}w");
    callee.register(&ext, port, 300);
    route(&ext);
    call(&mut f, &ext, 1);
    f.warm = call(&mut f, &ext, cfg.warm_calls);
    eprintln!(
        "warm: {} timed of {} calls at {:.1}/s",
        f.warm.len(),
        cfg.warm_calls,
        f.warm_rate
    );
    if f.failed == 0 {
        let out = phone.wait();
        f.failed += out.stats.failed;
        f.retransmissions += retransmissions(&out);
    } else {
        // Some call never reached the phone: it would wait for it until its bound.
        drop(phone);
    }
    for v in [
        &mut f.cold_now,
        &mut f.cold_routable,
        &mut f.warm,
        &mut f.route_ms,
    ] {
        v.sort_by(f64::total_cmp);
    }
    f
}

fn tally(f: &mut Figures, out: &Outcome, calls: u32) {
    let missing = u64::from(calls).saturating_sub(out.stats.successful + out.stats.failed);
    f.failed += out.stats.failed + missing;
    f.retransmissions += retransmissions(out);
    if out.code != Some(0) {
        eprintln!("{}: exit {:?}\n{}", out.label, out.code, out.report());
    }
}

fn retransmissions(out: &Outcome) -> u64 {
    out.stats
        .columns
        .get("Retransmissions(C)")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn render(cfg: &Settings, binary: &Path, two: &Figures, three: &Figures, took: Duration) -> String {
    let mut out = String::new();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let model = cpu_model();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(
        out,
        "## fieldmesh calls across the overlay (unix time {unix})\n"
    );
    let _ = writeln!(out, "- machine: {model}, {cores} cores");
    let _ = writeln!(out, "- fieldmesh: {}", binary.display());
    let _ = writeln!(
        out,
        "- run: {} ms added each way per mesh hop (userspace hop, no jitter or loss), {} cold \
         calls of each kind, {} warm calls at {}/s, hold {HOLD_MS} ms; took {:.0} s\n",
        cfg.hop_ms,
        cfg.cold,
        cfg.warm_calls,
        cfg.rate,
        took.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "| metric | 2 appliances | 3 appliances (line A–B–C) | target |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let mut row = |metric: &str, cell: &dyn Fn(&Figures) -> String, target: &str| {
        let _ = writeln!(
            out,
            "| {metric} | {} | {} | {target} |",
            cell(two),
            cell(three)
        );
    };
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
    row(
        "mesh hops crossed one way / added round trip (floor)",
        &|f| format!("{} / {} ms", f.hops, 2 * f.hops * cfg.hop_ms),
        "-",
    );
    row(
        "INVITE→180, warm, p50",
        &|f| format!("{} ({} timed)", ms(percentile(&f.warm, 0.5)), f.warm.len()),
        "none set",
    );
    row(
        "INVITE→180, warm, p99",
        &|f| ms(percentile(&f.warm, 0.99)),
        "none set (one appliance: ≤5 ms)",
    );
    row(
        "INVITE→180, cold right after REGISTER, p50",
        &|f| {
            format!(
                "{} ({} timed; record already in the caller's table at the call: {})",
                ms(percentile(&f.cold_now, 0.5)),
                f.cold_now.len(),
                f.cold_now_known
            )
        },
        "none set",
    );
    row(
        "INVITE→180, cold right after REGISTER, p99 (= max)",
        &|f| ms(percentile(&f.cold_now, 0.99)),
        "none set",
    );
    row(
        "INVITE→180, cold once routable (first call), p50",
        &|f| {
            format!(
                "{} ({} timed)",
                ms(percentile(&f.cold_routable, 0.5)),
                f.cold_routable.len()
            )
        },
        "none set",
    );
    row(
        "INVITE→180, cold once routable, p99 (= max)",
        &|f| ms(percentile(&f.cold_routable, 0.99)),
        "none set",
    );
    row(
        "REGISTER done (its sipp exited) → record live at the caller's appliance, p50 / max",
        &|f| {
            format!(
                "{} / {}",
                ms(percentile(&f.route_ms, 0.5)),
                ms(f.route_ms.last().copied())
            )
        },
        "-",
    );
    row(
        "warm calls achieved rate",
        &|f| format!("{:.1}/s", f.warm_rate),
        &format!("{}/s", cfg.rate),
    );
    row(
        "failed calls / sipp retransmissions",
        &|f| format!("{} / {}", f.failed, f.retransmissions),
        "0 / 0",
    );
    row(
        "achieved hop delay p50, each direction",
        &|f| f.hop_delay.join(", "),
        &format!("{} ms", cfg.hop_ms),
    );
    let _ = writeln!(
        out,
        "\nINVITE→180: from the caller's sipp -trace_msg timestamps (µs), so it includes the \
         location lookup at the caller's appliance. \"Routable\" waits are polled through the \
         status API (wait_route). Caller and phones run in the lab's phone namespaces on the \
         same 2 cores as the appliances and the hop thread."
    );
    out
}

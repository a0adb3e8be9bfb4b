//! Signalling and footprint, fieldmesh beside Kamailio in the same run (issue 9, items 1, 2, 4
//! and 5). It prints figures and asserts none of them:
//!
//! ```sh
//! cargo build --release -p fieldmesh
//! cargo bench -p fieldmesh-tests --bench signalling
//! FIELDMESH_BENCH_N=1000 FIELDMESH_BENCH_CALLS=1000 cargo bench -p fieldmesh-tests --bench signalling
//! ```
//!
//! Each system under test (SUT) runs on loopback, freshly started for each part:
//! - **footprint**: PSS after start, after an idle window, after 1,000 registrations; CPU used
//!   while idle.
//! - **REGISTER**: sipp registers N extensions at a fixed rate, then refreshes them (same
//!   Call-ID, higher CSeq). Kamailio keeps usrloc in memory (db_mode 0) at the first rate, and
//!   writes through to SQLite (db_mode 1) at a lower one, with fieldmesh (which always writes
//!   through) run again at that rate.
//! - **calls**: sipp uac -> proxy -> sipp uas (INVITE/100/180/200/ACK/BYE, Record-Route), with
//!   the proxy-aware scenarios of `tests/sipp` (NOTES pitfall 11). INVITE->180 comes from the
//!   caller's `-trace_msg` timestamps (µs): `-trace_rtt` only has 4 ms steps here.
//! - **build**: the stripped size of the release binary, x86_64 and (if built) aarch64.
//!
//! The CPU figure is the SUT's own: utime + stime from `/proc/<pid>/stat`, summed over its
//! processes, before and after a bounded run (NOTES 6.1). Memory is PSS from
//! `/proc/<pid>/smaps_rollup`, summed the same way. The table also goes to
//! `target/bench/signalling-<unix time>.md` and `target/bench/signalling-latest.md`.
//!
//! Safety: every address is on loopback (`FIELDMESH_BENCH_IP` must be in 127.0.0.0/8), every
//! sipp run is bounded in count and time, and only processes this bench started are stopped,
//! by PID. Needs `sipp` (sip-tester), `kamailio` and `kamailio-sqlite-modules`, and `strip`.

use fieldmesh_tests::host::{clock_ticks, cpu_model, cpu_ticks, pin, pss_bytes, which};
use fieldmesh_tests::node::target_dir;
use fieldmesh_tests::ports::free_port;
use fieldmesh_tests::sipp::scenario_path;
use fieldmesh_tests::trace::{percentile, ringing_latencies};
use fieldmesh_tests::wait::wait_until;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Time between a SUT answering its first OPTIONS and the first sample.
const SETTLE: Duration = Duration::from_secs(1);
/// fieldmesh keeps a non-INVITE server transaction for Timer J (64 x T1 = 32 s): wait that long
/// before the "settled" memory sample.
const DRAIN: Duration = Duration::from_secs(34);
/// Registrations behind the footprint's "after registrations" sample.
const FOOTPRINT_REGISTRATIONS: u64 = 1000;
/// Kamailio's shared and private memory (`-m`, `-M`, MB), as in NOTES 6.2.
const KAMAILIO_SHM_MB: u32 = 256;
const KAMAILIO_PKG_MB: u32 = 16;
/// The modules the bench's Kamailio loads (the SQLite run adds db_sqlite).
const KAMAILIO_MODULES: [&str; 9] = [
    "tm",
    "sl",
    "rr",
    "pv",
    "maxfwd",
    "siputils",
    "textops",
    "usrloc",
    "registrar",
];
/// sipp's socket buffers (NOTES pitfall 12); the kernel caps them at net.core.rmem_max.
const SIPP_BUFFER: u32 = 4 << 20;

fn main() {
    let cfg = Settings::from_env();
    let tools = Tools::find();
    remove_stale_work_dirs();
    let work = tempfile::Builder::new()
        .prefix(&format!("{WORK_PREFIX}{}-", std::process::id()))
        .tempdir()
        .expect("temp dir for the bench");
    let bench = Bench {
        cfg,
        tools,
        work: work.path().to_path_buf(),
    };
    let started = Instant::now();
    eprintln!(
        "signalling bench: fieldmesh {} against Kamailio, work dir {}",
        bench.tools.fieldmesh.display(),
        bench.work.display()
    );
    let machine = Machine::describe(&bench.tools);
    let rows = bench.run();
    let report = render(&machine, &bench.cfg, &rows, started.elapsed());
    println!("\n{report}");
    fieldmesh_tests::trace::write_report("signalling", &report);
}

/// The bench's temp dir is `<tmp>/fieldmesh-bench-<pid>-XXXXXX`.
const WORK_PREFIX: &str = "fieldmesh-bench-";

/// Removes the temp dirs of earlier runs that were interrupted (their PID is gone), since an
/// interrupted run skips its own cleanup.
fn remove_stale_work_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(WORK_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!(
                "removing {} (left by an interrupted run)",
                entry.path().display()
            );
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Knobs, from the environment.
struct Settings {
    ip: IpAddr,
    /// Distinct extensions registered (then refreshed).
    n: u64,
    /// REGISTERs per second against the in-memory registrars.
    reg_rate: u32,
    /// REGISTERs per second for the write-through comparison.
    db_rate: u32,
    calls: u64,
    call_rate: u32,
    idle: Duration,
    /// Pin the SUT to the last CPU and sipp to CPU 0 (NOTES 6.1).
    pin: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let num =
            |key: &str, default: u64| fieldmesh_tests::host::env_number("signalling", key, default);
        let ip: IpAddr = match std::env::var("FIELDMESH_BENCH_IP") {
            Ok(v) => v.trim().parse().unwrap_or_else(|_| {
                fail(&format!("FIELDMESH_BENCH_IP={v:?} is not an IP address"));
            }),
            Err(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        if !is_loopback_v4(ip) {
            fail(&format!(
                "FIELDMESH_BENCH_IP={ip} refused: the bench only sends to 127.0.0.0/8"
            ));
        }
        let rate = |key: &str, default: u64| -> u32 {
            u32::try_from(num(key, default).max(1)).unwrap_or(u32::MAX)
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Settings {
            ip,
            n: num("FIELDMESH_BENCH_N", 10_000).max(1),
            reg_rate: rate("FIELDMESH_BENCH_REG_RATE", 2000),
            db_rate: rate("FIELDMESH_BENCH_DB_RATE", 500),
            calls: num("FIELDMESH_BENCH_CALLS", 10_000).max(1),
            call_rate: rate("FIELDMESH_BENCH_CALL_RATE", 500),
            idle: Duration::from_secs(num("FIELDMESH_BENCH_IDLE", 10).max(1)),
            pin: cores >= 2 && num("FIELDMESH_BENCH_PIN", 1) != 0,
        }
    }

    fn sut_cpu(&self) -> Option<usize> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.pin.then_some(cores - 1)
    }

    fn load_cpu(&self) -> Option<usize> {
        self.pin.then_some(0)
    }
}

fn is_loopback_v4(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_loopback())
}

/// Refuses the target unless it is on loopback: the last check before anything is sent.
fn loopback_only(addr: SocketAddr) -> SocketAddr {
    if !is_loopback_v4(addr.ip()) {
        fail(&format!("refusing to send to {addr}: not in 127.0.0.0/8"));
    }
    addr
}

/// Prints why the bench cannot run and exits with status 2.
fn fail(why: &str) -> ! {
    eprintln!("signalling bench: {why}");
    std::process::exit(2);
}

/// The programs and files the bench needs, found before anything starts.
struct Tools {
    fieldmesh: PathBuf,
    kamailio: PathBuf,
    sipp: PathBuf,
    strip: PathBuf,
    /// Kamailio's module directory (holds tm.so).
    kamailio_modules: PathBuf,
    /// Kamailio's SQLite schema directory (`kamailio-sqlite-modules`).
    kamailio_sqlite_sql: PathBuf,
}

impl Tools {
    fn find() -> Tools {
        let mut missing = Vec::new();
        let mut need = |name: &str, package: &str| {
            let found = which(name);
            if found.is_none() {
                missing.push(format!("`{name}` (Debian package {package})"));
            }
            found.unwrap_or_default()
        };
        let sipp = need("sipp", "sip-tester");
        let kamailio = need("kamailio", "kamailio");
        let strip = need("strip", "binutils");
        let kamailio_modules = [
            "/usr/lib/x86_64-linux-gnu/kamailio/modules",
            "/usr/lib/aarch64-linux-gnu/kamailio/modules",
            "/usr/lib/kamailio/modules",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("tm.so").is_file())
        .unwrap_or_default();
        if !kamailio.as_os_str().is_empty() && kamailio_modules.as_os_str().is_empty() {
            missing.push("Kamailio's modules (Debian package kamailio)".into());
        }
        let kamailio_sqlite_sql = PathBuf::from("/usr/share/kamailio/db_sqlite");
        if !kamailio_modules.join("db_sqlite.so").is_file()
            || !kamailio_sqlite_sql.join("usrloc-create.sql").is_file()
        {
            missing
                .push("Kamailio's SQLite module (Debian package kamailio-sqlite-modules)".into());
        }
        let fieldmesh = match std::env::var_os("FIELDMESH_BIN") {
            Some(bin) => PathBuf::from(bin),
            None => target_dir().join("release").join("fieldmesh"),
        };
        if !fieldmesh.is_file() {
            missing.push(format!(
                "{} (build it: cargo build --release -p fieldmesh, or set FIELDMESH_BIN)",
                fieldmesh.display()
            ));
        }
        if !missing.is_empty() {
            fail(&format!(
                "missing {}; e.g. sudo apt-get install sip-tester kamailio kamailio-sqlite-modules binutils",
                missing.join(", ")
            ));
        }
        Tools {
            fieldmesh,
            kamailio,
            sipp,
            strip,
            kamailio_modules,
            kamailio_sqlite_sql,
        }
    }
}

/// The machine and versions, for the table's heading.
struct Machine {
    lines: Vec<String>,
}

impl Machine {
    fn describe(tools: &Tools) -> Machine {
        let model = cpu_model();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let rmem = fs::read_to_string("/proc/sys/net/core/rmem_max").unwrap_or_default();
        let first_line = |program: &Path, arg: &str| -> String {
            Command::new(program)
                .arg(arg)
                .output()
                .map(|o| {
                    let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
                    text.push_str(&String::from_utf8_lossy(&o.stderr));
                    text.lines()
                        .map(str::trim)
                        .find(|l| !l.is_empty())
                        .unwrap_or("?")
                        .to_string()
                })
                .unwrap_or_else(|e| format!("? ({e})"))
        };
        let git = Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "?".into());
        Machine {
            lines: vec![
                format!(
                    "- machine: {model}, {cores} cores, Linux {}, net.core.rmem_max {}, load average at start {}",
                    kernel.trim(),
                    rmem.trim(),
                    loadavg()
                ),
                format!(
                    "- fieldmesh: {} ({}, built {} min before the run; HEAD is git {git})",
                    first_line(&tools.fieldmesh, "--version"),
                    tools.fieldmesh.display(),
                    fs::metadata(&tools.fieldmesh)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .map_or("?".into(), |age| (age.as_secs() / 60).to_string())
                ),
                format!("- Kamailio: {}", first_line(&tools.kamailio, "-v")),
                format!("- sipp: {}", first_line(&tools.sipp, "-v")),
            ],
        }
    }
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Processes: CPU and memory of a SUT, by PID.

/// `pid` and every process below it (`/proc/<pid>/task/<tid>/children`).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        i += 1;
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
            out.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// A SUT's CPU and memory at one moment, summed over its processes.
#[derive(Clone, Copy, Debug)]
struct Sample {
    cpu_s: f64,
    pss: u64,
    processes: usize,
    at: Instant,
    /// Whole-machine busy and total jiffies (`/proc/stat`), for the noise note.
    machine: (u64, u64),
}

fn machine_jiffies() -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

impl Sample {
    /// Whole-machine CPU busy between two samples, in % of all cores.
    fn machine_busy_since(&self, earlier: &Sample) -> f64 {
        let busy = self.machine.0.saturating_sub(earlier.machine.0) as f64;
        let total = self.machine.1.saturating_sub(earlier.machine.1) as f64;
        if total > 0.0 {
            100.0 * busy / total
        } else {
            0.0
        }
    }
}

/// Which system, and how it is set up.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Fieldmesh,
    /// usrloc in memory (db_mode 0), children=2.
    KamailioMemory,
    /// usrloc written through to SQLite (db_mode 1), children=1.
    KamailioSqlite,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Fieldmesh => "fieldmesh",
            Kind::KamailioMemory => "kamailio-mem",
            Kind::KamailioSqlite => "kamailio-sqlite",
        }
    }
}

/// A running SUT. Dropping it stops the processes it started, by PID.
struct Sut {
    kind: Kind,
    sip: SocketAddr,
    child: Option<Child>,
    /// Every PID seen in its process tree, for the stop.
    seen: Vec<u32>,
    log: PathBuf,
    ticks: f64,
}

impl Sut {
    fn start(bench: &Bench, kind: Kind) -> Sut {
        let ip = bench.cfg.ip;
        let sip = loopback_only(SocketAddr::new(ip, free_port(ip)));
        let dir = bench.work.join(format!("{}-{}", kind.name(), sip.port()));
        fs::create_dir_all(&dir).expect("SUT dir");
        let log = dir.join("sut.log");
        let out = fs::File::create(&log).expect("SUT log");
        let mut command = match kind {
            Kind::Fieldmesh => {
                let api = SocketAddr::new(ip, free_port(ip));
                let mut c = Command::new(&bench.tools.fieldmesh);
                c.arg("run")
                    .arg("--state-dir")
                    .arg(dir.join("state"))
                    .arg("--sip-listen")
                    .arg(sip.to_string())
                    .arg("--api-listen")
                    .arg(api.to_string());
                if std::env::var_os("RUST_LOG").is_none() {
                    c.env("RUST_LOG", "info");
                }
                c
            }
            Kind::KamailioMemory | Kind::KamailioSqlite => {
                let cfg = dir.join("kamailio.cfg");
                let db = dir.join("location.sqlite");
                if kind == Kind::KamailioSqlite {
                    create_kamailio_db(&bench.tools.kamailio_sqlite_sql, &db);
                }
                fs::write(&cfg, kamailio_cfg(&bench.tools.kamailio_modules, kind, &db))
                    .expect("write kamailio.cfg");
                let run = dir.join("run");
                fs::create_dir_all(&run).expect("kamailio run dir");
                let mut c = Command::new(&bench.tools.kamailio);
                c.arg("-f")
                    .arg(&cfg)
                    .args(["-DD", "-E", "-Y"])
                    .arg(&run)
                    .arg("-l")
                    .arg(format!("udp:{sip}"))
                    .args(["-m", &KAMAILIO_SHM_MB.to_string()])
                    .args(["-M", &KAMAILIO_PKG_MB.to_string()])
                    .current_dir(&dir);
                c
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", kind.name()));
        let mut sut = Sut {
            kind,
            sip,
            child: Some(child),
            seen: Vec::new(),
            log,
            ticks: clock_ticks(),
        };
        sut.wait_answering();
        std::thread::sleep(SETTLE);
        let pids = sut.pids();
        pin(&pids, bench.cfg.sut_cpu());
        eprintln!(
            "{} up on {sip}: {} process(es), PIDs {pids:?}",
            kind.name(),
            pids.len()
        );
        sut
    }

    fn main_pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn pids(&mut self) -> Vec<u32> {
        let pids = process_tree(self.main_pid());
        for p in &pids {
            if !self.seen.contains(p) {
                self.seen.push(*p);
            }
        }
        pids
    }

    fn sample(&mut self) -> Sample {
        let pids = self.pids();
        let ticks: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
        Sample {
            cpu_s: ticks as f64 / self.ticks,
            pss: pids.iter().map(|&p| pss_bytes(p)).sum(),
            processes: pids.len(),
            at: Instant::now(),
            machine: machine_jiffies(),
        }
    }

    /// Sends OPTIONS until any answer comes back (up to 20 s).
    fn wait_answering(&mut self) {
        let socket = UdpSocket::bind(SocketAddr::new(self.sip.ip(), 0)).expect("probe socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("probe timeout");
        let local = socket.local_addr().expect("probe address");
        let mut n = 0;
        let what = format!("{} to answer OPTIONS on {}", self.kind.name(), self.sip);
        wait_until(&what, Duration::from_secs(20), || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited with {status} during start:\n{}",
                    self.kind.name(),
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            n += 1;
            let sip = self.sip;
            let probe = format!(
                "OPTIONS sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-bench-{n}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:bench@{local}>;tag=bench{n}\r\nTo: <sip:{sip}>\r\n\
                 Call-ID: bench-probe-{n}@{local}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
            );
            socket.send_to(probe.as_bytes(), loopback_only(sip)).ok()?;
            let mut buf = [0u8; 4096];
            let (len, _) = socket.recv_from(&mut buf).ok()?;
            buf[..len].starts_with(b"SIP/2.0 ").then_some(())
        });
    }

    /// SIGTERM to the main process, SIGKILL after 10 s; then SIGKILL to any of its processes
    /// still alive (Kamailio's children), by the PIDs recorded while it ran.
    fn stop(&mut self) {
        let _ = self.pids();
        let Some(mut child) = self.child.take() else {
            return;
        };
        let main = Pid::from_raw(child.id() as i32);
        let _ = kill(main, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status: Option<ExitStatus> = None;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for &pid in &self.seen {
            if pid != child.id() && process_name(pid).as_deref() == Some(self.comm()) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }

    fn comm(&self) -> &'static str {
        match self.kind {
            Kind::Fieldmesh => "fieldmesh",
            Kind::KamailioMemory | Kind::KamailioSqlite => "kamailio",
        }
    }
}

impl Drop for Sut {
    fn drop(&mut self) {
        self.stop();
    }
}

fn process_name(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// A minimal Kamailio 5.6 doing fieldmesh's job: registrar (no auth) and stateful
/// record-routing proxy (tm + rr). In-dialog requests follow their Route (the caller scenario
/// replays Record-Route). `KamailioSqlite` writes usrloc through to SQLite with one worker:
/// with two, SQLite's single writer lock made most REGISTERs fail ("database is locked").
fn kamailio_cfg(modules: &Path, kind: Kind, db: &Path) -> String {
    let (children, db_modules, db_params) = match kind {
        Kind::KamailioSqlite => (
            1,
            "loadmodule \"db_sqlite.so\"\n",
            format!(
                "modparam(\"usrloc\", \"db_mode\", 1)\nmodparam(\"usrloc\", \"db_url\", \"sqlite://{}\")\n",
                db.display()
            ),
        ),
        _ => (2, "", "modparam(\"usrloc\", \"db_mode\", 0)\n".to_string()),
    };
    format!(
        r#"#!KAMAILIO
# Written by tests/bench/signalling.rs: registrar + stateful record-routing proxy, no auth.
debug=1
log_stderror=yes
children={children}
auto_aliases=no
exit_timeout=5
maxbuffer={maxbuffer}
mpath="{modules}/"
{db_modules}{load}{db_params}modparam("rr", "enable_full_lr", 1)
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) t_relay(); exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) t_relay(); exit; }}
    t_check_trans();
    if (is_method("REGISTER")) {{ if (!save("location")) sl_reply_error(); exit; }}
    if (is_method("OPTIONS") && uri==myself && $rU==$null) {{ sl_send_reply("200", "OK"); exit; }}
    if (is_method("INVITE")) record_route();
    if (uri==myself && !lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    if (!t_relay()) sl_reply_error();
}}
"#,
        maxbuffer = 4 << 20,
        modules = modules.display(),
        load = KAMAILIO_MODULES
            .iter()
            .map(|m| format!("loadmodule \"{m}.so\"\n"))
            .collect::<String>(),
    )
}

/// Kamailio's `version` and `location` tables from the package's schema, in WAL mode (as
/// fieldmesh's store; both keep SQLite's default synchronous=FULL).
fn create_kamailio_db(sql_dir: &Path, db: &Path) {
    let read = |name: &str| {
        fs::read_to_string(sql_dir.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", sql_dir.join(name).display()))
    };
    let conn = rusqlite::Connection::open(db).expect("create Kamailio's SQLite file");
    conn.execute_batch(&read("standard-create.sql"))
        .expect("Kamailio standard schema");
    conn.execute_batch(&read("usrloc-create.sql"))
        .expect("Kamailio usrloc schema");
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .expect("WAL mode");
    assert_eq!(mode, "wal", "Kamailio's SQLite file in WAL mode");
}

// ---------------------------------------------------------------------------------------------
// sipp, bounded.

/// What a sipp run left: exit code, its last `-trace_stat` row, and its directory.
struct SippResult {
    label: String,
    code: Option<i32>,
    columns: BTreeMap<String, String>,
    elapsed: Duration,
    dir: PathBuf,
}

impl SippResult {
    fn num(&self, column: &str) -> f64 {
        self.columns
            .get(column)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
    fn successful(&self) -> u64 {
        self.num("SuccessfulCall(C)") as u64
    }
    fn failed(&self) -> u64 {
        self.num("FailedCall(C)") as u64
    }
    fn retransmissions(&self) -> u64 {
        self.num("Retransmissions(C)") as u64
    }
    fn rate(&self) -> f64 {
        self.num("CallRate(C)")
    }
    /// Non-zero failure counters, for the log.
    fn failures(&self) -> Vec<String> {
        self.columns
            .iter()
            .filter(|(k, v)| k.starts_with("Failed") && k.ends_with("(C)") && v.as_str() != "0")
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
    fn summary(&self) -> String {
        format!(
            "{}: exit {:?} after {:.1} s, {} ok, {} failed, {} retransmissions, {:.0}/s {:?}",
            self.label,
            self.code,
            self.elapsed.as_secs_f64(),
            self.successful(),
            self.failed(),
            self.retransmissions(),
            self.rate(),
            self.failures()
        )
    }
}

/// A sipp process in the background.
struct SippProcess {
    label: String,
    child: Option<Child>,
    started: Instant,
    deadline: Instant,
    dir: PathBuf,
}

/// Starts sipp in `dir` (its files land there) with `args`, bounded by `bound` (`-timeout`);
/// the process is killed by its PID 10 s after that.
fn spawn_sipp(bench: &Bench, label: &str, args: &[String], bound: Duration) -> SippProcess {
    let dir = bench.work.join(format!("sipp-{label}"));
    fs::create_dir_all(&dir).expect("sipp dir");
    let mut all: Vec<String> = args.to_vec();
    all.extend([
        "-i".into(),
        bench.cfg.ip.to_string(),
        "-nostdin".into(),
        "-timeout".into(),
        format!("{}s", bound.as_secs().max(1)),
        "-timeout_error".into(),
        "-buff_size".into(),
        SIPP_BUFFER.to_string(),
        "-trace_stat".into(),
        "-stf".into(),
        "stats.csv".into(),
        "-fd".into(),
        "1".into(),
        "-trace_err".into(),
        "-error_file".into(),
        "errors.log".into(),
    ]);
    let out = fs::File::create(dir.join("stdout.log")).expect("sipp stdout");
    let err = fs::File::create(dir.join("stderr.log")).expect("sipp stderr");
    let child = Command::new(&bench.tools.sipp)
        .args(&all)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start sipp: {e}"));
    pin(&[child.id()], bench.cfg.load_cpu());
    SippProcess {
        label: label.to_string(),
        child: Some(child),
        started: Instant::now(),
        deadline: Instant::now() + bound + Duration::from_secs(10),
        dir,
    }
}

impl SippProcess {
    /// Waits until the phone's port is taken (it listens), up to 5 s.
    fn wait_listening(&mut self, addr: SocketAddr) {
        wait_until(
            &format!("sipp {} to listen on {addr}", self.label),
            Duration::from_secs(5),
            || {
                if let Some(s) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!("sipp {} exited with {s} before listening", self.label);
                }
                UdpSocket::bind(addr).is_err().then_some(())
            },
        );
    }

    /// Like [`SippProcess::wait`], but stops it `grace` from now: a phone waiting for calls
    /// that failed at the caller would otherwise wait until its `-timeout`.
    fn wait_at_most(mut self, grace: Duration) -> SippResult {
        self.deadline = self.deadline.min(Instant::now() + grace);
        self.wait()
    }

    fn wait(mut self) -> SippResult {
        let mut code = None;
        if let Some(mut child) = self.child.take() {
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    code = status.code();
                    break;
                }
                if Instant::now() >= self.deadline {
                    eprintln!("sipp {}: stopped (killed) at its deadline", self.label);
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let text = fs::read_to_string(self.dir.join("stats.csv")).unwrap_or_default();
        let mut rows = text.lines().filter(|l| !l.trim().is_empty());
        let header = rows.next().unwrap_or_default();
        let last = rows.next_back().unwrap_or_default();
        let columns = header
            .split(';')
            .zip(last.split(';'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let result = SippResult {
            label: self.label.clone(),
            code,
            columns,
            elapsed: self.started.elapsed(),
            dir: self.dir.clone(),
        };
        eprintln!("  {}", result.summary());
        result
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A run's bound: three times its nominal length plus 30 s.
fn bound(count: u64, rate: u32) -> Duration {
    Duration::from_secs(count * 3 / u64::from(rate.max(1)) + 30)
}

// ---------------------------------------------------------------------------------------------
// The parts of the bench.

struct Bench {
    cfg: Settings,
    tools: Tools,
    work: PathBuf,
}

/// What one REGISTER run measured on one SUT.
#[derive(Debug, Default)]
struct Registers {
    new_us: f64,
    refresh_us: f64,
    achieved_new: f64,
    achieved_refresh: f64,
    failed: u64,
    retransmissions: u64,
    pss_per_binding_new: f64,
    pss_per_binding_refreshed: f64,
    pss_per_binding_drained: Option<f64>,
    machine_busy: f64,
}

/// What one call run measured on one SUT.
#[derive(Debug, Default)]
struct Calls {
    us_per_call: f64,
    achieved: f64,
    failed: u64,
    retransmissions: u64,
    callee_failed: u64,
    ringing_p50_ms: Option<f64>,
    ringing_p99_ms: Option<f64>,
    samples: usize,
    machine_busy: f64,
}

/// What the footprint run measured on one SUT.
#[derive(Debug, Default)]
struct Footprint {
    pss_start: u64,
    pss_idle: u64,
    pss_registered: u64,
    idle_cpu_pct: f64,
    /// One clock tick over the idle window, in % of one core: the figure's resolution.
    idle_cpu_resolution: f64,
    processes: usize,
}

/// Every figure of the run.
struct Rows {
    footprint: [Footprint; 2],
    registers_mem: [Registers; 2],
    registers_db: [Registers; 2],
    calls: [Calls; 2],
    build: Build,
}

impl Bench {
    fn run(&self) -> Rows {
        eprintln!("== footprint (idle {} s) ==", self.cfg.idle.as_secs());
        let footprint = [
            self.footprint(Kind::Fieldmesh),
            self.footprint(Kind::KamailioMemory),
        ];
        eprintln!(
            "== REGISTER, {} extensions at {}/s ==",
            self.cfg.n, self.cfg.reg_rate
        );
        let registers_mem = [
            self.registers(Kind::Fieldmesh, self.cfg.reg_rate, true),
            self.registers(Kind::KamailioMemory, self.cfg.reg_rate, true),
        ];
        eprintln!(
            "== REGISTER written through, {} extensions at {}/s ==",
            self.cfg.n, self.cfg.db_rate
        );
        let registers_db = [
            self.registers(Kind::Fieldmesh, self.cfg.db_rate, false),
            self.registers(Kind::KamailioSqlite, self.cfg.db_rate, false),
        ];
        eprintln!(
            "== calls, {} at {}/s ==",
            self.cfg.calls, self.cfg.call_rate
        );
        let calls = [
            self.calls(Kind::Fieldmesh),
            self.calls(Kind::KamailioMemory),
        ];
        eprintln!("== build ==");
        let build = Build::measure(&self.tools, &self.work);
        Rows {
            footprint,
            registers_mem,
            registers_db,
            calls,
            build,
        }
    }

    fn footprint(&self, kind: Kind) -> Footprint {
        let mut sut = Sut::start(self, kind);
        let start = sut.sample();
        std::thread::sleep(self.cfg.idle);
        let idle = sut.sample();
        let idle_s = idle.at.duration_since(start.at).as_secs_f64();
        let idle_cpu_pct = 100.0 * (idle.cpu_s - start.cpu_s) / idle_s;
        let idle_cpu_resolution = 100.0 / (clock_ticks() * idle_s);
        let reg = self.register_many(&sut, "footprint", FOOTPRINT_REGISTRATIONS, 500, 1, None);
        let registered = sut.sample();
        let f = Footprint {
            pss_start: start.pss,
            pss_idle: idle.pss,
            pss_registered: registered.pss,
            idle_cpu_pct,
            idle_cpu_resolution,
            processes: start.processes,
        };
        eprintln!(
            "{}: {f:?}, machine busy {:.0} % while idle; {}",
            kind.name(),
            idle.machine_busy_since(&start),
            reg.summary()
        );
        f
    }

    /// `count` REGISTERs for u1..u<count> from one sipp port, CSeq `cseq`, Call-ID fixed per
    /// extension, so a second run with a higher CSeq from `port` refreshes the first.
    fn register_many(
        &self,
        sut: &Sut,
        label: &str,
        count: u64,
        rate: u32,
        cseq: u32,
        port: Option<u16>,
    ) -> SippResult {
        let port = port.unwrap_or_else(|| free_port(self.cfg.ip));
        let args: Vec<String> = vec![
            loopback_only(sut.sip).to_string(),
            "-sf".into(),
            scenario_path("register_many_cseq").display().to_string(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            count.to_string(),
            "-r".into(),
            rate.to_string(),
            "-base_cseq".into(),
            cseq.to_string(),
            "-cid_str".into(),
            "bench-%u@%s".into(),
            "-recv_timeout".into(),
            "5000".into(),
        ];
        let label = format!("{}-{label}-{}-cseq{cseq}", sut.kind.name(), sut.sip.port());
        spawn_sipp(self, &label, &args, bound(count, rate)).wait()
    }

    fn registers(&self, kind: Kind, rate: u32, drain: bool) -> Registers {
        let n = self.cfg.n;
        let mut sut = Sut::start(self, kind);
        let port = free_port(self.cfg.ip);
        let s0 = sut.sample();
        let new = self.register_many(&sut, "register", n, rate, 1, Some(port));
        let s1 = sut.sample();
        let refresh = self.register_many(&sut, "refresh", n, rate, 2, Some(port));
        let s2 = sut.sample();
        let drained = drain.then(|| {
            eprintln!("  waiting {} s for transactions to end", DRAIN.as_secs());
            std::thread::sleep(DRAIN);
            sut.sample()
        });
        let per = |a: &Sample, b: &Sample, ops: u64| 1e6 * (b.cpu_s - a.cpu_s) / ops as f64;
        let bytes = |s: &Sample| (s.pss as f64 - s0.pss as f64) / n as f64;
        let r = Registers {
            new_us: per(&s0, &s1, n),
            refresh_us: per(&s1, &s2, n),
            achieved_new: new.rate(),
            achieved_refresh: refresh.rate(),
            // Failed or never completed.
            failed: (2 * n).saturating_sub(new.successful() + refresh.successful()),
            retransmissions: new.retransmissions() + refresh.retransmissions(),
            pss_per_binding_new: bytes(&s1),
            pss_per_binding_refreshed: bytes(&s2),
            pss_per_binding_drained: drained.as_ref().map(bytes),
            machine_busy: s2.machine_busy_since(&s0),
        };
        eprintln!("{}: {r:?}", kind.name());
        r
    }

    fn calls(&self, kind: Kind) -> Calls {
        let calls = self.cfg.calls;
        let rate = self.cfg.call_rate;
        let mut sut = Sut::start(self, kind);
        let ip = self.cfg.ip;
        let callee_port = free_port(ip);
        let tag = format!("{}-{}", kind.name(), sut.sip.port());
        let mut callee = spawn_sipp(
            self,
            &format!("{tag}-callee"),
            &[
                "-sf".into(),
                scenario_path("uas_proxy").display().to_string(),
                "-p".into(),
                callee_port.to_string(),
                "-m".into(),
                calls.to_string(),
            ],
            bound(calls, rate) + Duration::from_secs(10),
        );
        callee.wait_listening(SocketAddr::new(ip, callee_port));
        let registered = spawn_sipp(
            self,
            &format!("{tag}-register-bob"),
            &[
                loopback_only(sut.sip).to_string(),
                "-sf".into(),
                scenario_path("register").display().to_string(),
                "-s".into(),
                "bob".into(),
                "-key".into(),
                "cport".into(),
                callee_port.to_string(),
                "-key".into(),
                "expires".into(),
                "300".into(),
                "-p".into(),
                free_port(ip).to_string(),
                "-m".into(),
                "1".into(),
                "-recv_timeout".into(),
                "3000".into(),
            ],
            Duration::from_secs(10),
        )
        .wait();
        if registered.successful() != 1 {
            panic!(
                "{}: the callee did not register ({})",
                kind.name(),
                registered.summary()
            );
        }
        let caller_scenario = self.work.join("uac_proxy_rtd.xml");
        write_caller_scenario(&caller_scenario);
        let s0 = sut.sample();
        let caller = spawn_sipp(
            self,
            &format!("{tag}-caller"),
            &[
                loopback_only(sut.sip).to_string(),
                "-sf".into(),
                caller_scenario.display().to_string(),
                "-s".into(),
                "bob".into(),
                "-p".into(),
                free_port(ip).to_string(),
                "-m".into(),
                calls.to_string(),
                "-r".into(),
                rate.to_string(),
                "-recv_timeout".into(),
                "5000".into(),
                "-trace_msg".into(),
                "-message_file".into(),
                "messages.log".into(),
            ],
            bound(calls, rate),
        )
        .wait();
        let s1 = sut.sample();
        // The callee ends about a second after the last BYE (its timewait).
        let callee = callee.wait_at_most(Duration::from_secs(5));
        let mut latencies = ringing_latencies(
            &fs::read_to_string(caller.dir.join("messages.log")).unwrap_or_default(),
        );
        latencies.sort_by(f64::total_cmp);
        let c = Calls {
            us_per_call: 1e6 * (s1.cpu_s - s0.cpu_s) / calls as f64,
            achieved: caller.rate(),
            failed: caller.failed() + calls.saturating_sub(caller.successful() + caller.failed()),
            retransmissions: caller.retransmissions() + callee.retransmissions(),
            callee_failed: callee.failed(),
            ringing_p50_ms: percentile(&latencies, 0.50),
            ringing_p99_ms: percentile(&latencies, 0.99),
            samples: latencies.len(),
            machine_busy: s1.machine_busy_since(&s0),
        };
        // The message log is large (about 3.5 KB per call): drop it now.
        let _ = fs::remove_file(caller.dir.join("messages.log"));
        eprintln!("{}: {c:?}", kind.name());
        c
    }
}

/// `tests/sipp/uac_proxy.xml` with response-time marks on the 180 (RTD 1) and 200 (RTD 2).
fn write_caller_scenario(path: &Path) {
    let source = fs::read_to_string(scenario_path("uac_proxy")).expect("tests/sipp/uac_proxy.xml");
    let marked = source
        .replacen(
            r#"<recv response="180" optional="true" />"#,
            r#"<recv response="180" optional="true" rtd="1" />"#,
            1,
        )
        .replacen(
            r#"<recv response="200" rtd="true" rrs="true" />"#,
            r#"<recv response="200" rtd="2" rrs="true" />"#,
            1,
        );
    assert_eq!(
        marked.matches("rtd=").count(),
        2,
        "tests/sipp/uac_proxy.xml changed: update write_caller_scenario"
    );
    fs::write(path, marked).expect("write the caller scenario");
}

// ---------------------------------------------------------------------------------------------
// Build figures.

struct Build {
    x86_64: (Option<u64>, Option<u64>),
    aarch64: (Option<u64>, Option<u64>),
    kamailio: Option<u64>,
}

impl Build {
    fn measure(tools: &Tools, work: &Path) -> Build {
        let aarch64_bin = target_dir()
            .join("aarch64-unknown-linux-gnu")
            .join("release")
            .join("fieldmesh");
        let aarch64_strip = which("aarch64-linux-gnu-strip");
        let build = Build {
            x86_64: stripped(&tools.fieldmesh, Some(&tools.strip), work, "x86_64"),
            aarch64: if aarch64_bin.is_file() {
                stripped(&aarch64_bin, aarch64_strip.as_deref(), work, "aarch64")
            } else {
                (None, None)
            },
            kamailio: kamailio_installed_size(tools),
        };
        eprintln!(
            "x86_64 {:?}, aarch64 {:?}, kamailio {:?}",
            build.x86_64, build.aarch64, build.kamailio
        );
        build
    }
}

/// (size as built, size of a stripped copy).
fn stripped(
    bin: &Path,
    strip: Option<&Path>,
    work: &Path,
    name: &str,
) -> (Option<u64>, Option<u64>) {
    let size = |p: &Path| fs::metadata(p).ok().map(|m| m.len());
    let built = size(bin);
    let copy = work.join(format!("fieldmesh-{name}"));
    let stripped = strip.and_then(|strip| {
        fs::copy(bin, &copy).ok()?;
        let ok = Command::new(strip)
            .arg(&copy)
            .status()
            .is_ok_and(|s| s.success());
        let s = ok.then(|| size(&copy)).flatten();
        let _ = fs::remove_file(&copy);
        s
    });
    (built, stripped)
}

/// `kamailio` plus the modules the bench's configuration loads (Debian ships them stripped).
fn kamailio_installed_size(tools: &Tools) -> Option<u64> {
    let mut total = fs::metadata(&tools.kamailio).ok()?.len();
    for m in KAMAILIO_MODULES {
        total += fs::metadata(tools.kamailio_modules.join(format!("{m}.so")))
            .ok()?
            .len();
    }
    Some(total)
}

// ---------------------------------------------------------------------------------------------
// The table.

fn render(machine: &Machine, cfg: &Settings, rows: &Rows, took: Duration) -> String {
    let mut out = String::new();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let _ = writeln!(
        out,
        "## fieldmesh signalling benchmark (unix time {unix})\n"
    );
    for line in &machine.lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "- run: N = {} extensions, REGISTER at {}/s (memory) and {}/s (written through), {} calls at \
         {}/s, idle window {} s, SUT pinned: {}, took {:.0} s, load average at end {}",
        cfg.n,
        cfg.reg_rate,
        cfg.db_rate,
        cfg.calls,
        cfg.call_rate,
        cfg.idle.as_secs(),
        if cfg.pin {
            "last CPU (sipp on CPU 0)"
        } else {
            "no"
        },
        took.as_secs_f64(),
        loadavg()
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| metric | fieldmesh | Kamailio | ratio | target |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    let mut row = |metric: &str, fm: String, kam: String, ratio: String, target: &str| {
        let _ = writeln!(out, "| {metric} | {fm} | {kam} | {ratio} | {target} |");
    };
    let ratio = |a: f64, b: f64| {
        if b > 0.0 && a.is_finite() && b.is_finite() {
            format!("{:.2}", a / b)
        } else {
            "-".into()
        }
    };
    let us = |v: f64| format!("{v:.0} µs");
    let kb = |v: f64| format!("{:.2} KB", v / 1024.0);
    let mb = |v: u64| format!("{:.1} MB", v as f64 / (1024.0 * 1024.0));
    let faults = |r: &Registers| format!("{} / {}", r.failed, r.retransmissions);
    let per_s = |a: f64, b: f64| format!("{a:.0} / {b:.0}");

    let [fm, kam] = &rows.registers_mem;
    let rate = cfg.reg_rate;
    row(
        &format!(
            "REGISTER, new binding, CPU per REGISTER ({rate}/s; Kamailio usrloc in memory, fieldmesh writes through)"
        ),
        us(fm.new_us),
        us(kam.new_us),
        ratio(fm.new_us, kam.new_us),
        "≤35 µs",
    );
    row(
        &format!("REGISTER, refresh, CPU per REGISTER ({rate}/s, memory)"),
        us(fm.refresh_us),
        us(kam.refresh_us),
        ratio(fm.refresh_us, kam.refresh_us),
        "≤35 µs",
    );
    row(
        &format!("REGISTER achieved rate new / refresh ({rate}/s, memory)"),
        per_s(fm.achieved_new, fm.achieved_refresh),
        per_s(kam.achieved_new, kam.achieved_refresh),
        "-".into(),
        &format!("{rate} / {rate}"),
    );
    row(
        "REGISTER failures / sipp retransmissions (memory)",
        faults(fm),
        faults(kam),
        "-".into(),
        "0 / 0",
    );
    row(
        &format!("PSS per binding, after {} new (memory)", cfg.n),
        kb(fm.pss_per_binding_new),
        kb(kam.pss_per_binding_new),
        ratio(fm.pss_per_binding_new, kam.pss_per_binding_new),
        "≤1 KB",
    );
    row(
        "PSS per binding, after the refresh (memory)",
        kb(fm.pss_per_binding_refreshed),
        kb(kam.pss_per_binding_refreshed),
        ratio(fm.pss_per_binding_refreshed, kam.pss_per_binding_refreshed),
        "≤1 KB",
    );
    let drained = |r: &Registers| r.pss_per_binding_drained.unwrap_or(f64::NAN);
    row(
        &format!(
            "PSS per binding, {} s later (transactions ended; memory)",
            DRAIN.as_secs()
        ),
        kb(drained(fm)),
        kb(drained(kam)),
        ratio(drained(fm), drained(kam)),
        "≤1 KB",
    );

    let [fm, kam] = &rows.registers_db;
    let rate = cfg.db_rate;
    row(
        &format!(
            "REGISTER, new binding, CPU per REGISTER ({rate}/s; both write through to SQLite: Kamailio db_mode 1, children=1)"
        ),
        us(fm.new_us),
        us(kam.new_us),
        ratio(fm.new_us, kam.new_us),
        "≤35 µs",
    );
    row(
        &format!("REGISTER, refresh, CPU per REGISTER ({rate}/s, SQLite)"),
        us(fm.refresh_us),
        us(kam.refresh_us),
        ratio(fm.refresh_us, kam.refresh_us),
        "≤35 µs",
    );
    row(
        &format!("REGISTER achieved rate new / refresh ({rate}/s, SQLite)"),
        per_s(fm.achieved_new, fm.achieved_refresh),
        per_s(kam.achieved_new, kam.achieved_refresh),
        "-".into(),
        &format!("{rate} / {rate}"),
    );
    row(
        "REGISTER failures / sipp retransmissions (SQLite)",
        faults(fm),
        faults(kam),
        "-".into(),
        "0 / 0",
    );
    row(
        &format!("PSS per binding, after {} new + refresh (SQLite)", cfg.n),
        kb(fm.pss_per_binding_refreshed),
        kb(kam.pss_per_binding_refreshed),
        ratio(fm.pss_per_binding_refreshed, kam.pss_per_binding_refreshed),
        "≤1 KB",
    );

    let [fm, kam] = &rows.calls;
    row(
        &format!(
            "Call (INVITE/100/180/200/ACK/BYE/200, Record-Route), proxy CPU per call ({}/s; Kamailio tm + rr)",
            cfg.call_rate
        ),
        us(fm.us_per_call),
        us(kam.us_per_call),
        ratio(fm.us_per_call, kam.us_per_call),
        "≤200 µs",
    );
    row(
        "Calls achieved rate",
        format!("{:.0}/s", fm.achieved),
        format!("{:.0}/s", kam.achieved),
        "-".into(),
        &format!("{}/s", cfg.call_rate),
    );
    row(
        "Call failures caller / callee / retransmissions",
        format!(
            "{} / {} / {}",
            fm.failed, fm.callee_failed, fm.retransmissions
        ),
        format!(
            "{} / {} / {}",
            kam.failed, kam.callee_failed, kam.retransmissions
        ),
        "-".into(),
        "0 / 0 / 0",
    );
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} ms"));
    row(
        &format!(
            "INVITE→180 at the caller, p50 ({} / {} calls timed)",
            fm.samples, kam.samples
        ),
        ms(fm.ringing_p50_ms),
        ms(kam.ringing_p50_ms),
        ratio(
            fm.ringing_p50_ms.unwrap_or(f64::NAN),
            kam.ringing_p50_ms.unwrap_or(f64::NAN),
        ),
        "-",
    );
    row(
        "INVITE→180 at the caller, p99",
        ms(fm.ringing_p99_ms),
        ms(kam.ringing_p99_ms),
        ratio(
            fm.ringing_p99_ms.unwrap_or(f64::NAN),
            kam.ringing_p99_ms.unwrap_or(f64::NAN),
        ),
        "≤5 ms",
    );
    row(
        "Calls across the overlay (2 and 3 appliances), INVITE→180 cold / warm",
        "see `--bench overlay_calls`".into(),
        "-".into(),
        "-".into(),
        "-",
    );

    let [fm, kam] = &rows.footprint;
    // No tick in the window means less than one tick's worth.
    let idle_pct = |f: &Footprint| {
        if f.idle_cpu_pct > 0.0 {
            format!(
                "{:.3} % ({:.3} CPU-s/min)",
                f.idle_cpu_pct,
                f.idle_cpu_pct * 0.6
            )
        } else {
            format!(
                "< {:.3} % (< {:.3} CPU-s/min; no tick)",
                f.idle_cpu_resolution,
                f.idle_cpu_resolution * 0.6
            )
        }
    };
    row(
        &format!(
            "PSS idle, after start (processes: {} / {})",
            fm.processes, kam.processes
        ),
        mb(fm.pss_start),
        mb(kam.pss_start),
        ratio(fm.pss_start as f64, kam.pss_start as f64),
        "≤30 MB",
    );
    row(
        &format!("PSS idle, after {} s idle", cfg.idle.as_secs()),
        mb(fm.pss_idle),
        mb(kam.pss_idle),
        ratio(fm.pss_idle as f64, kam.pss_idle as f64),
        "≤30 MB",
    );
    row(
        &format!("PSS after {FOOTPRINT_REGISTRATIONS} registrations"),
        mb(fm.pss_registered),
        mb(kam.pss_registered),
        ratio(fm.pss_registered as f64, kam.pss_registered as f64),
        "-",
    );
    row(
        &format!(
            "Idle CPU, % of one core and CPU-s per idle minute ({} s window)",
            cfg.idle.as_secs()
        ),
        idle_pct(fm),
        idle_pct(kam),
        ratio(fm.idle_cpu_pct, kam.idle_cpu_pct),
        "≤0.5 %",
    );
    row(
        "PSS per active relayed call (100 calls)",
        "not measured: no media relay yet".into(),
        "-".into(),
        "-".into(),
        "≤8 KB",
    );

    let b = &rows.build;
    let size = |(built, stripped): (Option<u64>, Option<u64>)| match (built, stripped) {
        (_, Some(s)) => mb(s),
        (Some(b), None) => format!("{} (not stripped: no strip tool)", mb(b)),
        (None, None) => "not built".into(),
    };
    row(
        "Release binary, x86_64, stripped (Kamailio: binary + the 9 modules loaded)",
        size(b.x86_64),
        b.kamailio.map_or("-".into(), mb),
        ratio(
            b.x86_64.1.unwrap_or(0) as f64,
            b.kamailio.unwrap_or(0) as f64,
        ),
        "-",
    );
    row(
        "Release binary, aarch64, stripped",
        size(b.aarch64),
        "-".into(),
        "-".into(),
        "-",
    );

    let busy: Vec<f64> = rows
        .registers_mem
        .iter()
        .chain(&rows.registers_db)
        .map(|r| r.machine_busy)
        .chain(rows.calls.iter().map(|c| c.machine_busy))
        .collect();
    let lo = busy.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = busy.iter().copied().fold(0.0, f64::max);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "CPU: utime + stime from /proc/<pid>/stat, summed over the SUT's processes, before and \
         after each bounded run (resolution 1 clock tick). Memory: PSS summed from \
         /proc/<pid>/smaps_rollup. Ratio: fieldmesh / Kamailio (lower is better for fieldmesh). \
         INVITE→180: from the caller's sipp -trace_msg timestamps. fieldmesh runs its default \
         configuration (log level info; no mesh interface, so no overlay) and always writes \
         bindings through to SQLite (WAL, synchronous=FULL); Kamailio's SQLite file is WAL too. \
         The whole machine was {lo:.0}-{hi:.0} % busy (of all cores) during the measured \
         windows, sipp and the SUT included: other load there makes the figures noisier."
    );
    out
}

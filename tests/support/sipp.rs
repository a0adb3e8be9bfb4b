//! sipp (Debian `sip-tester`) driven against a node: run a scenario from `tests/sipp/` bound to
//! 127.0.0.1 on a free port, with every wait bounded (`-recv_timeout`, `-timeout N
//! -timeout_error`, and a kill deadline by PID), keep its logs in a temp dir and read its
//! statistics from `-trace_stat` (a `;`-separated CSV whose last row is the final count).
//!
//! Exit codes (sipp 3.6): 0 every call succeeded, 1 at least one failed, 97 stopped by
//! `-timeout` without `-timeout_error`, 99 no call processed, 254 cannot bind, 255 fatal error
//! or `-timeout_error` fired. See /work/shared/NOTES-clients.md section 2.
//!
//! In the multi-appliance lab a phone runs inside a phone namespace on that namespace's
//! address ([`Sipp::in_netns`], under `ip netns exec`).

use crate::lab::in_netns;
use crate::node::tail;
use crate::ports::free_port;
use crate::wait::wait_until;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Every sipp binds here: tests send only to loopback.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Path of a committed scenario, `tests/sipp/NAME.xml`.
pub fn scenario_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(format!("{name}.xml"))
}

/// One sipp run, built up before it starts. A scenario with a target (`to`) is a caller: it
/// places `calls` calls. Without a target it is a phone (uas) that serves `calls` calls.
#[derive(Clone, Debug)]
pub struct Sipp {
    scenario: String,
    ip: IpAddr,
    netns: Option<String>,
    port: u16,
    target: Option<SocketAddr>,
    calls: u32,
    tcp: bool,
    timeout: Duration,
    recv_timeout: Duration,
    args: Vec<String>,
}

impl Sipp {
    /// Scenario `tests/sipp/NAME.xml` on a fresh loopback port; 1 call, 20 s overall timeout,
    /// 5 s per expected message (callers only).
    pub fn new(scenario: &str) -> Sipp {
        let path = scenario_path(scenario);
        assert!(path.is_file(), "no sipp scenario {}", path.display());
        Sipp {
            scenario: scenario.to_string(),
            ip: LOOPBACK,
            netns: None,
            port: free_port(LOOPBACK),
            target: None,
            calls: 1,
            tcp: false,
            timeout: Duration::from_secs(20),
            recv_timeout: Duration::from_secs(5),
            args: Vec::new(),
        }
    }

    /// The port sipp listens on (a phone's Contact port).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address sipp listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// Runs inside network namespace `netns` (`ip netns exec`), bound to `ip` there.
    pub fn in_netns(mut self, netns: &str, ip: IpAddr) -> Sipp {
        self.netns = Some(netns.to_string());
        self.ip = ip;
        self
    }

    /// Listens on `port` instead of a fresh one (a phone that keeps its Contact port).
    pub fn on_port(mut self, port: u16) -> Sipp {
        self.port = port;
        self
    }

    /// Sends to `target` (the node): makes this run a caller.
    pub fn to(mut self, target: SocketAddr) -> Sipp {
        self.target = Some(target);
        self
    }

    /// The extension `[service]` stands for (`-s`).
    pub fn service(self, user: &str) -> Sipp {
        self.arg("-s").arg(user)
    }

    /// Number of calls to place or serve (`-m`).
    pub fn calls(mut self, n: u32) -> Sipp {
        self.calls = n;
        self
    }

    /// Calls started per second (`-r`).
    pub fn rate(self, per_second: u32) -> Sipp {
        self.arg("-r").arg(&per_second.to_string())
    }

    /// Length of every `<pause/>` in the scenario (`-d`), e.g. the call's hold time.
    pub fn pause_ms(self, ms: u64) -> Sipp {
        self.arg("-d").arg(&ms.to_string())
    }

    /// Sets a scenario keyword `[key]` (`-key`), e.g. `cport` or `expires`.
    pub fn key(self, key: &str, value: impl ToString) -> Sipp {
        self.arg("-key").arg(key).arg(&value.to_string())
    }

    /// Runs over TCP (`-t t1`) instead of UDP.
    pub fn tcp(mut self) -> Sipp {
        self.tcp = true;
        self
    }

    /// Overall bound (`-timeout N -timeout_error`); the process is killed 5 s after it.
    pub fn timeout(mut self, timeout: Duration) -> Sipp {
        self.timeout = timeout;
        self
    }

    /// How long a caller waits for each expected message (`-recv_timeout`); 5 s by default.
    pub fn recv_timeout(mut self, timeout: Duration) -> Sipp {
        self.recv_timeout = timeout;
        self
    }

    /// Any other sipp argument.
    pub fn arg(mut self, arg: &str) -> Sipp {
        self.args.push(arg.to_string());
        self
    }

    /// What the logs call this run.
    fn label(&self) -> String {
        let netns = self
            .netns
            .as_ref()
            .map(|n| format!(" in {n}"))
            .unwrap_or_default();
        match self.target {
            Some(t) => format!("sipp {} {}{netns} -> {t}", self.scenario, self.addr()),
            None => format!("sipp {} on {}{netns}", self.scenario, self.addr()),
        }
    }

    fn command_line(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        if let Some(t) = self.target {
            a.push(t.to_string());
        }
        let path = scenario_path(&self.scenario);
        a.extend(["-sf".into(), path.display().to_string()]);
        a.extend([
            "-i".into(),
            self.ip.to_string(),
            "-p".into(),
            self.port.to_string(),
        ]);
        a.push("-nostdin".into());
        a.extend(["-t".into(), if self.tcp { "t1" } else { "u1" }.into()]);
        a.extend(["-m".into(), self.calls.to_string()]);
        a.extend([
            "-timeout".into(),
            format!("{}s", self.timeout.as_secs().max(1)),
        ]);
        a.push("-timeout_error".into());
        if self.target.is_some() {
            a.extend([
                "-recv_timeout".into(),
                self.recv_timeout.as_millis().to_string(),
            ]);
        }
        a.extend([
            "-trace_stat".into(),
            "-stf".into(),
            "stats.csv".into(),
            "-fd".into(),
            "1".into(),
        ]);
        a.extend([
            "-trace_msg".into(),
            "-message_file".into(),
            "messages.log".into(),
        ]);
        a.extend([
            "-trace_err".into(),
            "-error_file".into(),
            "errors.log".into(),
        ]);
        a.extend(self.args.iter().cloned());
        a
    }

    /// Starts sipp in the background. A phone (no target) is waited for until it holds its
    /// port, so a call placed right after reaches it.
    pub fn spawn(self) -> Running {
        let dir = tempfile::Builder::new()
            .prefix("sipp-")
            .tempdir()
            .expect("sipp temp dir");
        let args = self.command_line();
        let out = fs::File::create(dir.path().join("stdout.log")).expect("sipp stdout log");
        let err = fs::File::create(dir.path().join("stderr.log")).expect("sipp stderr log");
        let mut command = match &self.netns {
            Some(netns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns, "sipp"]);
                c
            }
            None => Command::new("sipp"),
        };
        let child = command
            .args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sipp ({e}): install Debian's sip-tester"));
        let mut running = Running {
            port: self.port,
            netns: self.netns.clone(),
            label: self.label(),
            command: format!("sipp {}", args.join(" ")),
            started: Instant::now(),
            deadline: Instant::now() + self.timeout + Duration::from_secs(5),
            child: Some(child),
            dir,
        };
        if self.target.is_none() {
            running.wait_listening(self.addr(), self.tcp);
        }
        running
    }

    /// Runs sipp to the end (bounded) and returns what happened.
    pub fn run(self) -> Outcome {
        self.spawn().wait()
    }
}

/// A sipp process running in the background; killed (by its PID) when dropped unfinished.
pub struct Running {
    port: u16,
    netns: Option<String>,
    label: String,
    command: String,
    started: Instant,
    deadline: Instant,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Running {
    /// The port this sipp listens on (a phone's Contact port).
    pub fn port(&self) -> u16 {
        self.port
    }

    fn wait_listening(&mut self, addr: SocketAddr, tcp: bool) {
        let what = format!("{} to listen", self.label);
        wait_until(&what, Duration::from_secs(5), || {
            let child = self.child.as_mut().expect("sipp running");
            if let Some(status) = child.try_wait().expect("try_wait sipp") {
                panic!(
                    "{} exited with {status} before listening\n{}",
                    self.label,
                    self.logs()
                );
            }
            let bind_fails = || {
                if tcp {
                    TcpListener::bind(addr).is_err()
                } else {
                    UdpSocket::bind(addr).is_err()
                }
            };
            let taken = match &self.netns {
                Some(netns) => in_netns(netns, bind_fails),
                None => bind_fails(),
            };
            taken.then_some(())
        });
    }

    /// Waits until sipp exits, or kills it at its deadline; returns the outcome.
    pub fn wait(mut self) -> Outcome {
        let mut child = self.child.take().expect("sipp running");
        let deadline = self.deadline;
        let bound = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        let status = wait_until(&format!("{} to exit", self.label), bound, || {
            match child.try_wait().expect("try_wait sipp") {
                Some(status) => Some(Some(status)),
                None if Instant::now() >= deadline => Some(None),
                None => None,
            }
        });
        let killed = status.is_none();
        if killed {
            let _ = child.kill();
            let _ = child.wait();
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        let stats = Stats::read(&dir.path().join("stats.csv"));
        Outcome {
            label: self.label.clone(),
            command: self.command.clone(),
            code: status.and_then(|s| s.code()),
            killed,
            elapsed: self.started.elapsed(),
            stats,
            dir,
        }
    }

    fn logs(&self) -> String {
        logs(&self.dir, &self.command)
    }

    /// The `-trace_msg` log so far (sipp writes it as it goes).
    pub fn messages_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("messages.log")).unwrap_or_default()
    }

    /// The text of every SIP message received so far, in order.
    pub fn received(&self) -> Vec<String> {
        received_messages(&self.messages_log())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("---- {} (killed) ----\n{}", self.label, self.logs());
            }
        }
    }
}

/// The final counters of a run (`-trace_stat`, cumulative `(C)` columns).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub successful: u64,
    pub failed: u64,
    pub unexpected: u64,
    /// Every column of the last row, by name.
    pub columns: BTreeMap<String, String>,
}

impl Stats {
    fn read(path: &std::path::Path) -> Stats {
        let text = fs::read_to_string(path).unwrap_or_default();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let (Some(header), Some(last)) =
            (lines.next(), text.lines().rfind(|l| !l.trim().is_empty()))
        else {
            return Stats::default();
        };
        let columns: BTreeMap<String, String> = header
            .split(';')
            .zip(last.split(';'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let num = |k: &str| columns.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Stats {
            successful: num("SuccessfulCall(C)"),
            failed: num("FailedCall(C)"),
            unexpected: num("FailedUnexpectedMessage(C)"),
            columns,
        }
    }

    /// Non-zero cumulative failure counters, e.g. `FailedTimeoutOnRecv(C)=1`.
    pub fn failures(&self) -> Vec<String> {
        self.columns
            .iter()
            .filter(|(k, v)| k.starts_with("Failed") && k.ends_with("(C)") && v.as_str() != "0")
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

/// How a sipp run ended, with its logs.
pub struct Outcome {
    pub label: String,
    pub command: String,
    /// Exit code; `None` if it was killed at its deadline (or by a signal).
    pub code: Option<i32>,
    pub killed: bool,
    pub elapsed: Duration,
    pub stats: Stats,
    dir: tempfile::TempDir,
}

impl Outcome {
    /// Panics, printing the logs, unless sipp exited 0 with exactly `calls` successful calls,
    /// no failed call and no unexpected message.
    #[track_caller]
    pub fn expect_success(&self, calls: u64) -> &Outcome {
        let s = &self.stats;
        if self.code != Some(0) || s.successful != calls || s.failed != 0 || s.unexpected != 0 {
            panic!(
                "{}: expected {calls} successful calls, exit 0; got exit {:?}{}, {} successful, \
                 {} failed, {} unexpected {:?}\n{}",
                self.label,
                self.code,
                if self.killed {
                    " (killed at deadline)"
                } else {
                    ""
                },
                s.successful,
                s.failed,
                s.unexpected,
                s.failures(),
                self.report()
            );
        }
        eprintln!("{}: {} calls OK in {:?}", self.label, calls, self.elapsed);
        self
    }

    /// Command line, exit, counters and the logs (tails), for a failure message.
    pub fn report(&self) -> String {
        format!(
            "exit {:?} after {:?}{}\n{}",
            self.code,
            self.elapsed,
            if self.killed {
                " (killed at deadline)"
            } else {
                ""
            },
            logs(&self.dir, &self.command)
        )
    }

    /// The `-trace_msg` log: every message sent and received.
    pub fn messages_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("messages.log")).unwrap_or_default()
    }

    /// The text of every SIP message sipp received, in order.
    pub fn received(&self) -> Vec<String> {
        received_messages(&self.messages_log())
    }
}

/// The received messages of a `-trace_msg` log.
fn received_messages(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in log.split("\n-----------------------------------------------") {
        let mut parts = block.splitn(2, "\n\n");
        let (Some(head), Some(body)) = (parts.next(), parts.next()) else {
            continue;
        };
        if head.contains("message received") {
            out.push(body.trim_end().to_string());
        }
    }
    out
}

fn logs(dir: &tempfile::TempDir, command: &str) -> String {
    let read = |name: &str| fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let mut s = String::new();
    let _ = writeln!(s, "command: {command}");
    for (name, lines) in [
        ("errors.log", 40),
        ("stderr.log", 40),
        ("stdout.log", 40),
        ("messages.log", 160),
    ] {
        let text = read(name);
        if !text.trim().is_empty() {
            let _ = writeln!(
                s,
                "---- {name} (last {lines} lines) ----\n{}",
                tail(&text, lines)
            );
        }
    }
    s
}

/// Registers extension `user` with its Contact on `contact_port` (a sipp phone's port),
/// Expires 300, and panics with sipp's logs unless the node answers 200.
#[track_caller]
pub fn register(node: SocketAddr, user: &str, contact_port: u16) {
    Sipp::new("register")
        .to(node)
        .service(user)
        .key("cport", contact_port)
        .key("expires", 300)
        .run()
        .expect_success(1);
}

/// The value of header `name` (full name, case-insensitive) in one SIP message text.
pub fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

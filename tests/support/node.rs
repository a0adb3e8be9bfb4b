//! One `fieldmesh run` process: start it, wait until its status API answers, read its status,
//! kill it by PID (gracefully or with SIGKILL) and start it again on the same state directory.
//! A node can run inside a lab namespace ([`crate::lab::Lab::start_node`]): it is started under
//! `ip netns exec` and its status API is read from a thread inside the namespace.

use crate::http;
use crate::lab::in_netns;
use crate::ports::free_port;
use crate::wait::wait_until;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Configuration for tests that pin the proxy's own `480` (unreachable, unanswered): with
/// voicemail on, those calls are answered by the mailbox instead (`tests/e2e/voicemail.rs`).
pub const NO_VOICEMAIL: &str = "[voicemail]\nenabled = false\n";

/// How to start a node. `Default` gives a node on 127.0.0.1 with fresh ports and state.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Address SIP and the status API listen on.
    pub ip: IpAddr,
    /// Extra TOML written to a file and passed with `--config`.
    pub config_toml: Option<String>,
    /// Extra command-line arguments after `run`.
    pub extra_args: Vec<String>,
    /// Network namespace to run in (`ip netns exec`); `None`: the test's own.
    pub netns: Option<String>,
    /// SIP listen address; `None`: a free port on `ip`.
    pub sip_listen: Option<SocketAddr>,
    /// Status API listen address; `None`: a free port on `ip`.
    pub api_listen: Option<SocketAddr>,
    /// Name in the test's log lines; `None`: the SIP address.
    pub label: Option<String>,
    /// State directory; `None`: a fresh one under the node's temporary directory.
    pub state_dir: Option<PathBuf>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            config_toml: None,
            extra_args: Vec::new(),
            netns: None,
            sip_listen: None,
            api_listen: None,
            label: None,
            state_dir: None,
        }
    }
}

/// A running (or stopped) appliance. Dropping it kills the process it started.
pub struct Node {
    /// SIP address (UDP and TCP).
    pub sip: SocketAddr,
    /// Status API address (HTTP).
    pub api: SocketAddr,
    /// The node's state directory; kept across [`Node::restart`].
    pub state_dir: PathBuf,
    /// Where the node's stderr goes, appended across restarts.
    pub log: PathBuf,
    /// What the test's log lines call it (appliance name, or the SIP address).
    pub label: String,
    opts: NodeOptions,
    child: Option<Child>,
    started_at: Instant,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts a node with default options and waits until it answers.
    pub fn start() -> Node {
        Node::start_with(NodeOptions::default())
    }

    /// Starts a node and waits (up to 20 s) until its status API answers.
    pub fn start_with(opts: NodeOptions) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let sip = opts
            .sip_listen
            .unwrap_or_else(|| SocketAddr::new(opts.ip, free_port(opts.ip)));
        let api = opts
            .api_listen
            .unwrap_or_else(|| SocketAddr::new(opts.ip, free_port(opts.ip)));
        let mut node = Node {
            sip,
            api,
            state_dir: opts
                .state_dir
                .clone()
                .unwrap_or_else(|| dir.path().join("state")),
            log: dir.path().join("fieldmesh.log"),
            label: opts.label.clone().unwrap_or_else(|| sip.to_string()),
            opts,
            child: None,
            started_at: Instant::now(),
            _dir: dir,
        };
        node.spawn();
        node
    }

    /// The `fieldmesh` binary under test: `$FIELDMESH_BIN`, else the newest of
    /// `target/{release,debug}/fieldmesh` (the README's test command builds it first).
    pub fn binary() -> PathBuf {
        if let Some(bin) = std::env::var_os("FIELDMESH_BIN") {
            return PathBuf::from(bin);
        }
        let target = target_dir();
        ["release", "debug"]
            .iter()
            .map(|p| target.join(p).join("fieldmesh"))
            .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
            .max()
            .map(|(_, p)| p)
            .unwrap_or_else(|| {
                panic!(
                    "no fieldmesh binary in {}: run `cargo build -p fieldmesh` first",
                    target.display()
                )
            })
    }

    /// Command-line arguments this node runs with.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "run".to_string(),
            "--state-dir".into(),
            self.state_dir.display().to_string(),
            "--sip-listen".into(),
            self.sip.to_string(),
            "--api-listen".into(),
            self.api.to_string(),
        ];
        if let Some(toml) = &self.opts.config_toml {
            let path = self._dir.path().join("fieldmesh.toml");
            fs::write(&path, toml).expect("write config");
            args.push("--config".into());
            args.push(path.display().to_string());
        }
        if !self.opts.extra_args.iter().any(|a| a == "--media-ports") {
            // Above the ephemeral range and clear of `free_range` (20000..60000), where phones'
            // and sipp's ports come from: the relay binds its whole range at start.
            args.push("--media-ports".into());
            args.push("61000-61199".into());
        }
        args.extend(self.opts.extra_args.iter().cloned());
        args
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut command = match &self.opts.netns {
            Some(netns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns]).arg(Node::binary());
                c
            }
            None => Command::new(Node::binary()),
        };
        self.started_at = Instant::now();
        let child = command
            .args(self.args())
            .env(
                "RUST_LOG",
                std::env::var("FIELDMESH_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn fieldmesh");
        self.child = Some(child);
        let started = Instant::now();
        wait_until(
            &format!(
                "fieldmesh status API on {} (log: {})",
                self.api,
                self.log.display()
            ),
            Duration::from_secs(20),
            || {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!(
                        "fieldmesh exited with {status} during start:\n{}",
                        self.log_text()
                    );
                }
                self.get_status().ok().filter(|r| r.status == 200)
            },
        );
        eprintln!("node {} up in {:?}", self.label, started.elapsed());
    }

    fn get_status(&self) -> std::io::Result<http::Reply> {
        self.try_get("/api/status")
    }

    fn try_get(&self, path: &str) -> std::io::Result<http::Reply> {
        match &self.opts.netns {
            Some(netns) => in_netns(netns, || http::get(self.api, path)),
            None => http::get(self.api, path),
        }
    }

    /// GET `path` from its API (inside its namespace, if any); panics if nothing answers.
    pub fn get(&self, path: &str) -> http::Reply {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", self.label))
    }

    /// POST a JSON body to `path` on its API; panics if nothing answers.
    pub fn post(&self, path: &str, json: &str) -> http::Reply {
        let post = || http::post(self.api, path, json);
        match &self.opts.netns {
            Some(netns) => in_netns(netns, post),
            None => post(),
        }
        .unwrap_or_else(|e| panic!("POST {path} on {}: {e}", self.label))
    }

    /// The status API's JSON (`GET /api/status`).
    pub fn status(&self) -> serde_json::Value {
        self.get_status()
            .unwrap_or_else(|e| panic!("status API of {} answers: {e}", self.label))
            .json()
    }

    /// When the running process was started.
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// The overlay identity from the status API (`peer_id`).
    pub fn peer_id(&self) -> String {
        let status = self.status();
        status["peer_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no peer_id in the status: {status}", self.label))
            .to_string()
    }

    /// The extensions (AORs) that currently have at least one binding.
    pub fn bound_aors(&self) -> Vec<String> {
        let status = self.status();
        let mut aors: Vec<String> = status["bindings"]
            .as_array()
            .expect("bindings array")
            .iter()
            .map(|b| b["aor"].as_str().expect("aor").to_string())
            .collect();
        aors.sort();
        aors.dedup();
        aors
    }

    /// PID of the running process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    /// SIGKILL, as a power cut would: no clean shutdown.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait; returns the exit status and how long the shutdown took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("node running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let t = Instant::now();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let status = wait_until(
            "fieldmesh to exit after SIGTERM",
            Duration::from_secs(10),
            || child.try_wait().expect("wait"),
        );
        (status, t.elapsed())
    }

    /// Starts the process again with the same ports and state directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Everything the node logged so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "---- fieldmesh log of {} ({}) ----\n{}",
                self.label,
                self.log.display(),
                tail(&self.log_text(), 200)
            );
        }
    }
}

/// The cargo target directory: `$CARGO_TARGET_DIR`, else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// A directory for files a test leaves for people to look at (screenshots):
/// `<target>/test-artefacts/<topic>`, created if missing.
pub fn artefacts(topic: &str) -> PathBuf {
    let dir = target_dir().join("test-artefacts").join(topic);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

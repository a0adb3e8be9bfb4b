//! linphonec (Debian `linphone-cli` 5.1) as a test phone: a copy of its rc file (it rewrites
//! it), `HOME` in its temp dir, commands through a pipe on stdin, `soundcard use files` to play
//! one WAV and record what it receives into another. Its debug log (`-d 5`) holds the SIP
//! messages, whose first lines are printed when a test fails. Recipe: NOTES-clients.md §4.
//!
//! It runs under coreutils `timeout`, so a test killed without Drop cannot leave it spinning on
//! a closed stdin: Drop sends `quit`, then SIGTERM to `timeout` (which passes it on), then
//! SIGKILL, always by the PID it started.

use crate::audio;
use crate::node::tail;
use crate::ports::free_range;
use crate::wait::wait_until;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long any single phone event may take (registration takes 0.5-0.8 s on loopback).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a linphonec may live.
const MAX_LIFETIME_SECS: u32 = 120;

/// How to start a [`Linphonec`].
#[derive(Clone, Debug)]
pub struct LinphoneOptions {
    /// Extension it registers as.
    pub user: String,
    /// Loopback address for its SIP and RTP (give each phone its own).
    pub ip: IpAddr,
    /// Registrar and outbound proxy.
    pub registrar: SocketAddr,
    /// WAV it plays into calls (16-bit; 48 kHz mono works for every codec).
    pub play_wav: PathBuf,
    /// Answer incoming calls at once (`-a`).
    pub auto_answer: bool,
    /// Remote provisioning: no account in the rc file, only `[misc] config-uri` with this URL,
    /// which linphonec fetches at start and applies (Linphone's "fetch remote configuration").
    pub provisioning: Option<String>,
}

impl LinphoneOptions {
    /// An auto-answering phone for `user` on `ip` that plays `play_wav`.
    pub fn new(user: &str, ip: IpAddr, registrar: SocketAddr, play_wav: &Path) -> Self {
        Self {
            user: user.to_string(),
            ip,
            registrar,
            play_wav: play_wav.to_path_buf(),
            auto_answer: true,
            provisioning: None,
        }
    }

    /// A phone on `ip` that takes its account (extension `user` at `registrar`) from the
    /// provisioning XML at `url`, and plays `play_wav` into calls.
    pub fn provisioned(
        user: &str,
        ip: IpAddr,
        registrar: SocketAddr,
        url: &str,
        play_wav: &Path,
    ) -> Self {
        Self {
            provisioning: Some(url.to_string()),
            ..Self::new(user, ip, registrar, play_wav)
        }
    }
}

/// A running linphonec.
pub struct Linphonec {
    /// Its extension.
    pub user: String,
    /// Where it listens for SIP (UDP only).
    pub sip: SocketAddr,
    registrar: SocketAddr,
    log: PathBuf,
    debug_log: PathBuf,
    recording: PathBuf,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    started: Instant,
    dir: tempfile::TempDir,
}

impl Linphonec {
    /// Writes its rc file and starts it, playing and recording WAVs; does not wait for
    /// registration.
    pub fn start(opts: LinphoneOptions) -> Linphonec {
        let dir = tempfile::Builder::new()
            .prefix(&format!("linphonec-{}-", opts.user))
            .tempdir()
            .expect("temp dir");
        let sip = SocketAddr::new(opts.ip, free_range(opts.ip, 1));
        let rtp = free_range(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 20);
        let mut rc = format!(
            "[sip]\nbind_address={ip}\nsip_port={port}\nsip_tcp_port=0\nsip_tls_port=0\n{proxy}\
             [rtp]\nbind_address={ip}\naudio_rtp_port={rtp}-{rtp_hi}\n\
             [video]\nenabled=0\n",
            ip = opts.ip,
            port = sip.port(),
            rtp_hi = rtp + 19,
            proxy = if opts.provisioning.is_some() {
                ""
            } else {
                "default_proxy=0\n"
            },
        );
        match &opts.provisioning {
            Some(url) => rc.push_str(&format!("[misc]\nconfig-uri={url}\n")),
            None => rc.push_str(&format!(
                "[proxy_0]\nreg_proxy=<sip:{reg};transport=udp>\n\
                 reg_identity=\"{user}\" <sip:{user}@{reg}>\nreg_expires=600\nreg_sendregister=1\n\
                 publish=0\n",
                reg = opts.registrar,
                user = opts.user,
            )),
        }
        let rc_path = dir.path().join("linphonerc");
        fs::write(&rc_path, rc).expect("write rc");
        let home = dir.path().join("home");
        fs::create_dir_all(home.join(".local/share/linphone")).expect("HOME");
        let log = dir.path().join("linphonec.log");
        let debug_log = dir.path().join("linphonec.debug");
        let recording = dir.path().join("received.wav");
        let out = fs::File::create(&log).expect("log file");
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &MAX_LIFETIME_SECS.to_string(), "linphonec", "-c"])
            .arg(&rc_path)
            .args(["-d", "5", "-l"])
            .arg(&debug_log);
        if opts.auto_answer {
            cmd.arg("-a");
        }
        let mut child = cmd
            .env("HOME", &home)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .expect("spawn timeout linphonec");
        let stdin = child.stdin.take();
        let mut phone = Linphonec {
            user: opts.user,
            sip,
            registrar: opts.registrar,
            log,
            debug_log,
            recording,
            child: Some(child),
            stdin,
            started: Instant::now(),
            dir,
        };
        phone.send("soundcard use files");
        phone.send(&format!("play {}", opts.play_wav.display()));
        let rec = phone.recording.display().to_string();
        phone.send(&format!("record {rec}"));
        phone
    }

    /// The URI of `user` at this phone's registrar.
    pub fn uri_of(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.registrar)
    }

    /// Its temp dir (rc file, logs, recording).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Types one command.
    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("linphonec stdin open");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: write {command:?}: {e}", self.user));
    }

    /// Asks `status register` every 250 ms until it answers `registered, identity=…`; returns
    /// the time since start.
    pub fn wait_registered(&mut self) -> Duration {
        let mut asked: Option<Instant> = None;
        let what = format!("linphonec {} to register", self.user);
        wait_until(&what, EVENT_TIMEOUT, || {
            self.check_alive("registration");
            if self
                .log_text()
                .lines()
                .any(|l| l.contains("registered, identity="))
            {
                return Some(());
            }
            if asked.is_none_or(|t| t.elapsed() >= Duration::from_millis(250)) {
                self.send("status register");
                asked = Some(Instant::now());
            }
            None
        });
        self.started.elapsed()
    }

    /// Calls `user` at the registrar.
    pub fn call(&mut self, user: &str) {
        let uri = self.uri_of(user);
        self.send(&format!("call {uri}"));
    }

    /// Waits until a call is connected and its media is up.
    pub fn wait_connected(&mut self) -> String {
        self.wait_log("Media streams established", EVENT_TIMEOUT)
    }

    /// Hangs up the current call.
    pub fn terminate(&mut self) {
        self.send("terminate");
    }

    /// Waits until the call has ended (`Call 1 with … ended (No error).`).
    pub fn wait_ended(&mut self) -> String {
        self.wait_log(" ended (", EVENT_TIMEOUT)
    }

    /// Sends a MESSAGE to `user`.
    pub fn chat(&mut self, user: &str, text: &str) {
        let uri = self.uri_of(user);
        self.send(&format!("chat {uri} {text}"));
    }

    /// Waits until a line of its console output contains `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        let what = format!("linphonec {} to print {needle:?}", self.user);
        wait_until(&what, timeout, || {
            self.check_alive(needle);
            self.log_text()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_string)
        })
    }

    fn check_alive(&mut self, waiting_for: &str) {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!(
                "linphonec {} exited with {status} while waiting for {waiting_for:?}",
                self.user
            );
        }
    }

    /// Its console output so far.
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The first lines of the SIP messages in its debug log (`INVITE sip:…`, `SIP/2.0 200 OK`).
    pub fn sip_lines(&self) -> Vec<String> {
        let debug =
            String::from_utf8_lossy(&fs::read(&self.debug_log).unwrap_or_default()).into_owned();
        debug
            .lines()
            .map(str::trim_end)
            .filter(|l| {
                l.starts_with("SIP/2.0 ")
                    || l.split_once(' ').is_some_and(|(m, rest)| {
                        m.chars().all(|c| c.is_ascii_uppercase())
                            && !m.is_empty()
                            && rest.starts_with("sip:")
                            && rest.ends_with("SIP/2.0")
                    })
            })
            .map(str::to_string)
            .collect()
    }

    /// Waits until the WAV it recorded is complete and at least `min_seconds` long.
    pub fn recording(&mut self, min_seconds: f64) -> PathBuf {
        let what = format!(
            "linphonec {}'s recording {}",
            self.user,
            self.recording.display()
        );
        let path = self.recording.clone();
        wait_until(&what, EVENT_TIMEOUT, || {
            let audio = audio::read_wav(&path).ok()?;
            (audio.seconds() >= min_seconds).then(|| path.clone())
        })
    }

    /// `quit`, then waits (up to 5 s) for it to exit; then SIGTERM and SIGKILL by PID.
    pub fn quit(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "quit").and_then(|()| stdin.flush());
            if let Some(status) = wait_exit(&mut child, Duration::from_secs(5)) {
                return Some(status);
            }
        }
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("PID fits i32"));
        let _ = kill(pid, Signal::SIGTERM);
        if let Some(status) = wait_exit(&mut child, Duration::from_secs(3)) {
            return Some(status);
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Linphonec {
    fn drop(&mut self) {
        self.quit();
        if std::thread::panicking() {
            eprintln!(
                "---- linphonec {} console ({}) ----\n{}\n---- its SIP messages ----\n{}",
                self.user,
                self.log.display(),
                tail(&self.log_text(), 100),
                self.sip_lines().join("\n")
            );
        }
    }
}

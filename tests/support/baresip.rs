//! A headless baresip (Debian `baresip-core` 1.0) as a test phone: its own config directory,
//! an `aufile` microphone playing a WAV, `sndfile` recording what it receives into `rec/`, and
//! the stdio UI driven through a pipe on stdin (on `/dev/null` it cannot show incoming MESSAGE
//! text). `-s` puts every SIP message it sends or receives in its log, which is printed when a
//! test fails. Recipe and measurements: `/work/shared/NOTES-clients.md` §3.
//!
//! In the multi-appliance lab a phone runs inside its appliance's phone namespace
//! ([`BaresipOptions::in_netns`], under `ip netns exec`, which execs, so the PID is baresip's).
//! Such a namespace is fresh and holds one phone, so it takes fixed ports
//! ([`NETNS_SIP_PORT`], [`NETNS_RTP_PORTS`]) instead of probing the host's for free ones.

use crate::audio;
use crate::node::tail;
use crate::ports::free_range;
use crate::wait::wait_until;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long any single phone event may take on loopback (they take 0.1-0.3 s).
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// SIP port of a phone in its own namespace (TLS takes the next one).
pub const NETNS_SIP_PORT: u16 = 5070;
/// First of the 20 RTP ports of a phone in its own namespace.
pub const NETNS_RTP_PORTS: u16 = 10000;

/// The longest a baresip may live (`-t`): it quits by itself if a test dies without Drop.
const MAX_LIFETIME_SECS: u32 = 120;

/// How to start a [`Baresip`].
#[derive(Clone, Debug)]
pub struct BaresipOptions {
    /// Extension it registers as.
    pub user: String,
    /// Loopback address it binds SIP to (give each phone its own, e.g. 127.0.0.2).
    pub ip: IpAddr,
    /// The registrar and proxy it registers with and sends every request to.
    pub registrar: SocketAddr,
    /// WAV played as its microphone (48 kHz mono; see [`audio::write_sine`]).
    pub mic_wav: PathBuf,
    /// `audio_codecs` of its account, e.g. `pcmu` or `opus/48000/2`; `None`: all (opus first).
    pub codecs: Option<String>,
    /// Extensions in its contact list; `/message` goes to the first.
    pub contacts: Vec<String>,
    /// Answer incoming calls at once.
    pub auto_answer: bool,
    /// Network namespace to run in (`ip netns exec`); `None`: the test's own. Inside one, SIP
    /// binds `ip`:[`NETNS_SIP_PORT`] and RTP [`NETNS_RTP_PORTS`]..+20.
    pub netns: Option<String>,
    /// Debug logging (`-v`).
    pub verbose: bool,
}

impl BaresipOptions {
    /// An auto-answering phone for `user` on `ip`, registering with `registrar`.
    pub fn new(user: &str, ip: IpAddr, registrar: SocketAddr, mic_wav: &Path) -> Self {
        Self {
            user: user.to_string(),
            ip,
            registrar,
            mic_wav: mic_wav.to_path_buf(),
            codecs: None,
            contacts: Vec::new(),
            auto_answer: true,
            netns: None,
            verbose: false,
        }
    }

    /// Logs at debug level (`-v`).
    pub fn verbose(mut self) -> Self {
        self.verbose = true;
        self
    }

    /// Runs the phone inside network namespace `netns` (a lab's phone namespace), bound to
    /// `ip` there, on fixed ports.
    pub fn in_netns(mut self, netns: &str) -> Self {
        self.netns = Some(netns.to_string());
        self
    }

    /// Adds `user` to the contact list (the first one added receives `/message`).
    pub fn contact(mut self, user: &str) -> Self {
        self.contacts.push(user.to_string());
        self
    }

    /// Restricts the account's codecs (`pcmu`, `pcma`, `opus/48000/2`).
    pub fn codecs(mut self, codecs: &str) -> Self {
        self.codecs = Some(codecs.to_string());
        self
    }
}

/// A running baresip. Dropping it sends `/quit`, then kills it by PID if it does not exit.
pub struct Baresip {
    /// Its extension.
    pub user: String,
    /// Where it listens for SIP (UDP and TCP).
    pub sip: SocketAddr,
    registrar: SocketAddr,
    log: PathBuf,
    rec_dir: PathBuf,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    started: Instant,
    dir: tempfile::TempDir,
}

impl Baresip {
    /// Writes the config directory and starts baresip; does not wait for registration.
    pub fn start(opts: BaresipOptions) -> Baresip {
        let dir = tempfile::Builder::new()
            .prefix(&format!("baresip-{}-", opts.user))
            .tempdir()
            .expect("temp dir");
        // SIP binds the port and TLS port+1; RTP binds the wildcard address. Free ports are
        // probed in the test's namespace, so a phone in a fresh namespace takes fixed ones.
        let (sip, rtp) = match opts.netns {
            Some(_) => (SocketAddr::new(opts.ip, NETNS_SIP_PORT), NETNS_RTP_PORTS),
            None => (
                SocketAddr::new(opts.ip, free_range(opts.ip, 2)),
                free_range(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 20),
            ),
        };
        let rec_dir = dir.path().join("rec");
        fs::create_dir_all(&rec_dir).expect("rec dir");
        let config = format!(
            "sip_listen\t\t{sip}\n\
             net_interface\t\t{ip}\n\
             audio_player\t\taubridge,nil\n\
             audio_alert\t\taubridge,nil\n\
             audio_source\t\taufile,{mic}\n\
             ausrc_srate\t\t48000\n\
             ausrc_channels\t\t1\n\
             rtp_ports\t\t{rtp}-{rtp_hi}\n\
             rtp_stats\t\tyes\n\
             module_path\t\t/usr/lib/baresip/modules\n\
             module\t\t\tstdio.so\n\
             module\t\t\topus.so\n\
             module\t\t\tg711.so\n\
             module\t\t\tsndfile.so\n\
             module\t\t\taufile.so\n\
             module\t\t\taubridge.so\n\
             module_tmp\t\tuuid.so\n\
             module_tmp\t\taccount.so\n\
             module_app\t\tcontact.so\n\
             module_app\t\tmenu.so\n\
             snd_path\t\t{rec}\n",
            ip = opts.ip,
            mic = opts.mic_wav.display(),
            rtp_hi = rtp + 19,
            rec = rec_dir.display(),
        );
        fs::write(dir.path().join("config"), config).expect("write config");
        let mut account = format!("<sip:{}@{}>;regint=600", opts.user, opts.registrar);
        if opts.auto_answer {
            account.push_str(";answermode=auto");
        }
        if let Some(codecs) = &opts.codecs {
            account.push_str(&format!(";audio_codecs={codecs}"));
        }
        fs::write(dir.path().join("accounts"), account + "\n").expect("write accounts");
        let contacts: String = opts
            .contacts
            .iter()
            .map(|u| format!("\"{u}\" <sip:{u}@{}>\n", opts.registrar))
            .collect();
        fs::write(dir.path().join("contacts"), contacts).expect("write contacts");

        let log = dir.path().join("baresip.log");
        let out = fs::File::create(&log).expect("log file");
        let mut command = match &opts.netns {
            Some(netns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns, "baresip"]);
                c
            }
            None => Command::new("baresip"),
        };
        if opts.verbose {
            command.arg("-v");
        }
        let mut child = command
            .arg("-s")
            .arg("-f")
            .arg(dir.path())
            .arg("-t")
            .arg(MAX_LIFETIME_SECS.to_string())
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run baresip ({e}): apt-get install baresip baresip-core")
            });
        let stdin = child.stdin.take();
        Baresip {
            user: opts.user,
            sip,
            registrar: opts.registrar,
            log,
            rec_dir,
            child: Some(child),
            stdin,
            started: Instant::now(),
            dir,
        }
    }

    /// The URI of `user` at this phone's registrar, as it dials it.
    pub fn uri_of(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.registrar)
    }

    /// The phone's config directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// PID of the baresip process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("baresip running").id()
    }

    /// Types one UI command (e.g. `/dial sip:bob@…`).
    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("baresip stdin open");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: write {command:?}: {e}", self.user));
    }

    /// Waits until its registration succeeded; returns the time since start.
    pub fn wait_registered(&mut self) -> Duration {
        self.wait_log("registered successfully", EVENT_TIMEOUT);
        self.started.elapsed()
    }

    /// Calls `user` at the registrar.
    pub fn dial(&mut self, user: &str) {
        let uri = self.uri_of(user);
        self.send(&format!("/dial {uri}"));
    }

    /// Waits until a call is established; returns its log line.
    pub fn wait_established(&mut self) -> String {
        self.wait_log("Call established", EVENT_TIMEOUT)
    }

    /// Hangs up the current call.
    pub fn hangup(&mut self) {
        self.send("/hangup");
    }

    /// Waits until a call has ended; returns the line (`… terminated (duration: 3 secs)`).
    pub fn wait_terminated(&mut self) -> String {
        self.wait_log(" terminated (duration", EVENT_TIMEOUT)
    }

    /// Sends a MESSAGE with `text` to its current (first) contact.
    pub fn message(&mut self, text: &str) {
        self.send(&format!("/message {text}"));
    }

    /// Waits until a MESSAGE with exactly `text` arrived; returns the line
    /// (`sip:alice@…: "text"`).
    pub fn wait_message(&mut self, text: &str) -> String {
        self.wait_log(&format!(": \"{text}\""), EVENT_TIMEOUT)
    }

    /// Waits until a line of its log contains `needle`, failing after `timeout` with the log.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        let what = format!("{} to log {needle:?}", self.user);
        wait_until(&what, timeout, || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited with {status} while waiting for {needle:?}",
                    self.user
                );
            }
            self.find_line(needle)
        })
    }

    /// The first log line that contains `needle`.
    pub fn find_line(&self, needle: &str) -> Option<String> {
        self.log_text()
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_string)
    }

    /// Every SIP message in its `-s` trace, in order: each is logged as `UDP FROM -> TO`
    /// followed by the message.
    pub fn sip_trace(&self) -> Vec<TracedMessage> {
        parse_trace(&self.log_text())
    }

    /// The SIP messages it received (those sent to its own SIP address), in order.
    pub fn received_sip(&self) -> Vec<String> {
        let me = self.sip.to_string();
        self.sip_trace()
            .into_iter()
            .filter(|m| m.to == me)
            .map(|m| m.text)
            .collect()
    }

    /// The codec it decodes (`opus 48000Hz 2ch`), once a call has started.
    pub fn decoder(&self) -> Option<String> {
        let line = self.find_line("audio: Set audio decoder: ")?;
        Some(line.split_once("decoder: ")?.1.trim().to_string())
    }

    /// Everything it logged so far, without colour codes and the once-a-tick status line.
    pub fn log_text(&self) -> String {
        clean(&String::from_utf8_lossy(
            &fs::read(&self.log).unwrap_or_default(),
        ))
    }

    /// The WAV files of received (decoded) audio, one per call, oldest first.
    pub fn received_recordings(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.rec_dir)
            .expect("rec dir")
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .collect();
        files.sort();
        files
    }

    /// Waits until the one call's received audio is written and complete (baresip finishes the
    /// WAV header when the call ends) and at least `min_seconds` long; returns its path.
    pub fn received_recording(&mut self, min_seconds: f64) -> PathBuf {
        let what = format!("{}'s recording in {}", self.user, self.rec_dir.display());
        wait_until(&what, EVENT_TIMEOUT, || {
            let files = self.received_recordings();
            assert!(
                files.len() <= 1,
                "{}: more than one call recorded: {files:?}",
                self.user
            );
            let file = files.into_iter().next()?;
            let audio = audio::read_wav(&file).ok()?;
            (audio.seconds() >= min_seconds).then_some(file)
        })
    }

    /// `/quit`, then waits (up to 5 s) for it to exit; kills it by PID if it does not.
    pub fn quit(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "/quit").and_then(|()| stdin.flush());
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(status);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.quit();
        if std::thread::panicking() {
            eprintln!(
                "---- baresip {} log ({}) ----\n{}",
                self.user,
                self.log.display(),
                tail(&self.log_text(), 400)
            );
        }
    }
}

/// One SIP message of baresip's `-s` trace.
#[derive(Clone, Debug)]
pub struct TracedMessage {
    /// `ip:port` it came from and went to.
    pub from: String,
    pub to: String,
    /// Start line, headers and body (body cut to its Content-Length).
    pub text: String,
}

/// Splits a cleaned baresip log into the SIP messages of its trace: a line `UDP A -> B` (or
/// `TCP`), then the message up to the blank line, then Content-Length bytes of body.
fn parse_trace(log: &str) -> Vec<TracedMessage> {
    let mut out = Vec::new();
    let mut rest = log;
    while let Some(i) = rest.find("\n") {
        let line = rest[..i].trim_end_matches('\r');
        rest = &rest[i + 1..];
        let Some((proto, addrs)) = line.split_once(' ') else {
            continue;
        };
        let Some((from, to)) = addrs.split_once(" -> ") else {
            continue;
        };
        if !matches!(proto, "UDP" | "TCP") || from.contains(' ') || to.contains(' ') {
            continue;
        }
        let Some(head_end) = rest.find("\r\n\r\n") else {
            break;
        };
        let head = &rest[..head_end];
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length") || n.trim() == "l")
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let body_start = head_end + 4;
        let mut body_end = (body_start + length).min(rest.len());
        while !rest.is_char_boundary(body_end) {
            body_end -= 1;
        }
        out.push(TracedMessage {
            from: from.to_string(),
            to: to.to_string(),
            text: rest[..body_end].replace('\r', ""),
        });
        rest = &rest[body_end..];
    }
    out
}

/// Removes ANSI colour codes and the stdio UI's status line (`[0:00:01] audio=0/0 (bit/s)`),
/// which it rewrites many times a second.
fn clean(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['\x1b', '[']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with('\x1b') {
            // ESC [ params letter
            let end = rest
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c.is_ascii_alphabetic())
                .map_or(rest.len(), |(j, c)| j + c.len_utf8());
            rest = &rest[end..];
        } else if let Some(end) = status_line_end(rest) {
            rest = rest[end..].trim_start_matches(' ');
        } else {
            out.push('[');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

/// If `s` starts with one status line `[0:00:01] audio=… (bit/s)`, where it ends.
fn status_line_end(s: &str) -> Option<usize> {
    const END: &str = "(bit/s)";
    if !s.starts_with("[0:") {
        return None;
    }
    let line = &s[..s.find('\n').unwrap_or(s.len())];
    Some(line.find(END)? + END.len())
}

#[cfg(test)]
mod tests {
    use super::{clean, parse_trace};

    #[test]
    fn the_sip_trace_splits_into_messages_with_their_bodies() {
        let log = "#\nUDP 10.42.0.1:5060 -> 10.42.0.2:5070\nINVITE sip:b@x SIP/2.0\r\n\
                   Call-ID: 1\r\nContent-Length: 10\r\n\r\nv=0\r\nc=X\r\n\nPopulated 1\n\
                   #\nUDP 10.42.0.2:5070 -> 10.42.0.1:5060\nSIP/2.0 100 Trying\r\n\
                   Content-Length: 0\r\n\r\n\n";
        let m = parse_trace(log);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[0].from, "10.42.0.1:5060");
        assert_eq!(m[0].to, "10.42.0.2:5070");
        assert!(m[0].text.ends_with("\n\nv=0\nc=X\n"), "{:?}", m[0].text);
        assert!(m[1].text.starts_with("SIP/2.0 100 Trying"));
    }

    #[test]
    fn clean_drops_colours_and_status_lines() {
        let raw = "\x1b[32mAll 1 useragent registered successfully! (0 ms)\x1b[;m\n\
                   [0:00:01] audio=0/0 (bit/s)    [0:00:02] audio=99/34 (bit/s)    sip:a: session closed\n\
                   a=rtpmap:[x]\n";
        assert_eq!(
            clean(raw),
            "All 1 useragent registered successfully! (0 ms)\nsip:a: session closed\na=rtpmap:[x]\n"
        );
    }
}

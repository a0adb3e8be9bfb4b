//! Headless Chromium (Debian `chromium`) driven over the Chrome DevTools Protocol, so a test can
//! open the appliance's web page as a phone's browser would: set a phone-sized width, navigate,
//! run JavaScript, wait for the page, take a screenshot.
//!
//! It needs `--no-sandbox` because tests run as root. It picks its own DevTools port
//! (`--remote-debugging-port=0`) and prints it on stderr, so browsers never collide; the test
//! talks to one page target over a plain `ws://` socket on loopback. Chromium runs in a process
//! group of its own with a throwaway profile: Drop kills that group by the PID it started, then
//! removes the profile. Every wait is bounded.

use crate::http;
use crate::lab::in_netns;
use crate::node::tail;
use crate::wait::wait_until_why;
use base64::Engine;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// How long Chromium may take to start, a page to load, or one DevTools command to answer.
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(20);

/// A running headless Chromium with one page open.
pub struct Browser {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    child: Option<Child>,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts Chromium in the test's own network namespace on `about:blank`.
    pub fn start() -> Browser {
        Browser::launch(None)
    }

    /// Starts Chromium inside lab namespace `netns` (`ip netns exec`), so it sees what a phone
    /// there sees; the DevTools socket is opened from a thread inside the namespace.
    pub fn in_netns(netns: &str) -> Browser {
        Browser::launch(Some(netns))
    }

    fn launch(netns: Option<&str>) -> Browser {
        let dir = tempfile::Builder::new()
            .prefix("chromium-")
            .tempdir()
            .expect("temp dir");
        let log = dir.path().join("chromium.log");
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "chromium"]);
                c
            }
            None => Command::new("chromium"),
        };
        let child = cmd
            .args(["--headless=new", "--no-sandbox", "--disable-gpu"])
            .args(["--remote-debugging-port=0", "--no-first-run"])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("chromium log"))
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn chromium: {e} (Debian package `chromium`)"));
        let group = Pid::from_raw(i32::try_from(child.id()).expect("PID fits i32"));
        let mut child = Some(child);
        // A start that fails must not leave Chromium running: kill its group, then fail.
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // `DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID`
            let port: u16 = wait_until_why("chromium's DevTools port", BROWSER_TIMEOUT, || {
                let text = fs::read_to_string(&log).unwrap_or_default();
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    panic!(
                        "chromium exited with {status} during start:\n{}",
                        tail(&text, 30)
                    );
                }
                text.lines()
                    .find_map(|l| l.strip_prefix("DevTools listening on ws://127.0.0.1:"))
                    .and_then(|rest| rest.split('/').next()?.parse().ok())
                    .ok_or_else(|| tail(&text, 30))
            });
            let devtools = SocketAddr::from(([127, 0, 0, 1], port));
            let connect = || {
                // The page target Chromium opened for about:blank (not its own browser_ui pages).
                // Its first answers may be empty while it is still starting: ask until one is JSON.
                let list = wait_until_why("DevTools /json/list", BROWSER_TIMEOUT, || {
                    let reply = http::get(devtools, "/json/list").map_err(|e| e.to_string())?;
                    serde_json::from_str::<Value>(&reply.body)
                        .map_err(|e| format!("{e}: {reply:?}"))
                });
                let url = list
                    .as_array()
                    .and_then(|targets| targets.iter().find(|t| t["type"] == "page"))
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                    .unwrap_or_else(|| panic!("no page target in {list}"))
                    .to_string();
                let stream = TcpStream::connect(devtools).expect("connect DevTools");
                stream
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                let (ws, _) = tungstenite::client(url.as_str(), stream)
                    .unwrap_or_else(|e| panic!("DevTools handshake with {url}: {e}"));
                ws
            };
            match netns {
                Some(ns) => in_netns(ns, connect),
                None => connect(),
            }
        }));
        let ws = match started {
            Ok(ws) => ws,
            Err(panic) => {
                let _ = killpg(group, Signal::SIGKILL);
                if let Some(mut c) = child.take() {
                    let _ = c.wait();
                }
                std::panic::resume_unwind(panic);
            }
        };
        Browser {
            ws,
            next_id: 0,
            child,
            log,
            dir,
        }
    }

    /// Sends one DevTools command and returns its `result`; events in between are dropped.
    /// `Err` carries the protocol's error (e.g. an execution context destroyed by navigation).
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(Message::text(request.to_string()))
            .unwrap_or_else(|e| panic!("DevTools send {method}: {e}"));
        let deadline = Instant::now() + BROWSER_TIMEOUT;
        loop {
            let text = match self.ws.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    assert!(Instant::now() < deadline, "DevTools {method}: no answer");
                    continue;
                }
                Err(e) => panic!("DevTools {method}: {e}\n{}", self.log_tail()),
            };
            let reply: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if reply["id"] == id {
                return match reply.get("error") {
                    Some(error) => Err(format!("{method}: {error}")),
                    None => Ok(reply["result"].clone()),
                };
            }
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("DevTools {e}"))
    }

    /// Emulates a screen `px` CSS pixels wide (800 high); below 600 px also a mobile device
    /// (meta viewport honoured, touch), as a phone's browser at 360 px.
    pub fn set_width(&mut self, px: u32) {
        let params =
            json!({ "width": px, "height": 800, "deviceScaleFactor": 1, "mobile": px < 600 });
        self.call("Emulation.setDeviceMetricsOverride", params);
    }

    /// Opens `url` and waits until its document has loaded (`readyState == "complete"`).
    pub fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({ "url": url }));
        if let Some(error) = result["errorText"].as_str() {
            panic!("navigate to {url}: {error}");
        }
        self.wait_for("document.readyState == 'complete'", BROWSER_TIMEOUT);
    }

    fn try_eval(&mut self, js: &str) -> Result<Value, String> {
        let params = json!({ "expression": js, "returnByValue": true, "awaitPromise": true });
        let result = self.try_call("Runtime.evaluate", params)?;
        if let Some(details) = result.get("exceptionDetails") {
            let exception = &details["exception"]["description"];
            return Err(exception
                .as_str()
                .map_or(details.to_string(), str::to_string));
        }
        Ok(result["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Evaluates `js` in the page (a promise is awaited) and returns its value as JSON
    /// (`null` for `undefined`); panics with the exception if it throws.
    pub fn eval(&mut self, js: &str) -> Value {
        self.try_eval(js)
            .unwrap_or_else(|e| panic!("JavaScript `{js}` failed: {e}"))
    }

    /// Polls `js` until it evaluates to `true`; an exception or a page still navigating counts
    /// as not yet, and the last one is in the failure message.
    pub fn wait_for(&mut self, js: &str, timeout: Duration) {
        wait_until_why(&format!("`{js}` in the browser"), timeout, || {
            match self.try_eval(js)? {
                Value::Bool(true) => Ok(()),
                other => Err(other.to_string()),
            }
        });
    }

    /// The page's current URL.
    pub fn url(&mut self) -> String {
        let href = self.eval("location.href");
        href.as_str()
            .expect("location.href is a string")
            .to_string()
    }

    /// Writes a PNG of the whole page (beyond the viewport) to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let metrics = self.call("Page.getLayoutMetrics", json!({}));
        let size = &metrics["cssContentSize"];
        let clip =
            json!({ "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1 });
        let params = json!({ "format": "png", "captureBeyondViewport": true, "clip": clip });
        let shot = self.call("Page.captureScreenshot", params);
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Its temp dir (profile, log); screenshots can go here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_tail(&self) -> String {
        tail(&fs::read_to_string(&self.log).unwrap_or_default(), 30)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The group is Chromium's own (process_group(0)): its renderers and zygotes go too.
        let group = Pid::from_raw(i32::try_from(child.id()).expect("PID fits i32"));
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Stragglers keep the group (and so its ID) alive, so this cannot hit another group.
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- chromium ({}) ----\n{}",
                self.log.display(),
                self.log_tail()
            );
        }
    }
}

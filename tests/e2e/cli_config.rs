//! Starting and stopping (issue 3): a bad flag or config file stops startup with exit status 2
//! and one line naming the key and value; SIGTERM stops the node cleanly within 2 s.

use fieldmesh_tests::node::Node;
use fieldmesh_tests::ports::free_port;
use fieldmesh_tests::wait::wait_until;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Runs `fieldmesh run` with fresh state and API port plus `args`, expecting it to exit by
/// itself within 10 s; returns its status and stderr.
fn run_until_exit(args: &[String]) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
    let mut all = vec![
        "run".to_string(),
        "--state-dir".into(),
        dir.path().join("state").display().to_string(),
    ];
    all.extend([
        "--api-listen".into(),
        format!("127.0.0.1:{}", free_port(LOOPBACK)),
    ]);
    all.extend(args.iter().cloned());
    let mut child = Command::new(Node::binary())
        .args(&all)
        .env_remove("RUST_LOG")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn fieldmesh");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = wait_until(
        "fieldmesh to exit by itself",
        Duration::from_secs(11),
        || match child.try_wait().expect("try_wait fieldmesh") {
            Some(status) => Some(Some(status)),
            None if Instant::now() >= deadline => Some(None),
            None => None,
        },
    );
    let text = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "fieldmesh {} kept running for 10 s instead of refusing to start:\n{text}",
            all.join(" ")
        );
    };
    eprintln!("fieldmesh {} -> {status}\n{text}", all.join(" "));
    (status, text)
}

/// Exit status 2 and exactly one line on stderr, naming every one of `words`.
#[track_caller]
fn assert_refused_naming(status: ExitStatus, stderr: &str, words: &[&str]) {
    assert_eq!(status.code(), Some(2), "exit status; stderr:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr, got:\n{stderr}"
    );
    for word in words {
        assert!(
            lines[0].contains(word),
            "the line must name {word}: {}",
            lines[0]
        );
    }
}

fn config_file(toml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("fieldmesh.toml");
    std::fs::write(&path, toml).expect("write config");
    let path = path.display().to_string();
    (dir, path)
}

fn sip_listen() -> Vec<String> {
    vec![
        "--sip-listen".into(),
        format!("127.0.0.1:{}", free_port(LOOPBACK)),
    ]
}

#[test]
fn an_invalid_sip_listen_port_stops_startup_with_exit_2_and_one_line_naming_it() {
    let (status, stderr) = run_until_exit(&["--sip-listen".into(), "127.0.0.1:99999".into()]);
    assert_refused_naming(status, &stderr, &["sip.listen", "127.0.0.1:99999"]);
}

#[test]
fn an_unknown_config_key_stops_startup_with_exit_2_naming_the_key() {
    let (_dir, path) = config_file("[sip]\nno_such_key = 1\n");
    let mut args = sip_listen();
    args.extend(["--config".into(), path]);
    let (status, stderr) = run_until_exit(&args);
    assert_refused_naming(status, &stderr, &["sip.no_such_key"]);
}

#[test]
fn a_config_value_of_the_wrong_type_stops_startup_with_exit_2_naming_the_key() {
    let (_dir, path) = config_file("[sip]\nmax_expires = \"soon\"\n");
    let mut args = sip_listen();
    args.extend(["--config".into(), path]);
    let (status, stderr) = run_until_exit(&args);
    assert_refused_naming(status, &stderr, &["sip.max_expires", "soon"]);
}

#[test]
fn sigterm_stops_the_node_cleanly_within_2_seconds() {
    let mut node = Node::start();
    let (status, took) = node.terminate();
    eprintln!("SIGTERM -> {status} in {took:?}");
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{}",
        node.log_text()
    );
    assert!(
        took < Duration::from_secs(2),
        "SIGTERM shutdown took {took:?} (issue 3: within 2 s)"
    );
}

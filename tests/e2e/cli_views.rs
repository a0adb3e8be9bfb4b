//! Issue 8, the command line: `fieldmesh status | peers | phones | calls` against a running
//! daemon, each as a table and as `--json`, and the one clear error when no daemon answers.

use fieldmesh_tests::audio;
use fieldmesh_tests::baresip::{Baresip, BaresipOptions};
use fieldmesh_tests::node::Node;
use fieldmesh_tests::ports::free_port;
use fieldmesh_tests::wait::wait_until_why;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

const PHONE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 31));

/// Runs `fieldmesh VIEW --api API [--json]`; returns exit code, stdout and stderr.
fn cli(view: &str, api: SocketAddr, json: bool) -> (i32, String, String) {
    let mut cmd = Command::new(Node::binary());
    cmd.args([view, "--api", &api.to_string()]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run fieldmesh");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// The table of `view`: exit 0, a header line of upper-case column names, then rows.
fn table(view: &str, api: SocketAddr) -> Vec<String> {
    let (code, out, err) = cli(view, api, false);
    eprintln!("$ fieldmesh {view}\n{out}");
    assert_eq!(code, 0, "fieldmesh {view}: {err}");
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    assert!(
        lines
            .first()
            .is_some_and(|h| h.chars().any(char::is_alphabetic) && *h == h.to_uppercase()),
        "fieldmesh {view}: no header line in {out:?}"
    );
    lines
}

fn json(view: &str, api: SocketAddr) -> Value {
    let (code, out, err) = cli(view, api, true);
    assert_eq!(code, 0, "fieldmesh {view} --json: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("fieldmesh {view} --json ({e}): {out}"))
}

#[test]
fn cli_views_print_tables_and_json_from_the_running_daemon() {
    let node = Node::start();
    let media = tempfile::tempdir().expect("temp dir");
    let tone = media.path().join("tone.wav");
    audio::write_sine(&tone, 48_000, 1000.0, 10.0, 0.5);
    let mut phone = Baresip::start(BaresipOptions::new("2401", PHONE_IP, node.sip, &tone));
    phone.wait_registered();

    // status: one row about this appliance.
    let status = table("status", node.api);
    assert_eq!(status.len(), 2, "{status:?}");
    assert!(status[1].contains(env!("CARGO_PKG_VERSION")), "{status:?}");
    let status_json = json("status", node.api);
    assert_eq!(status_json["bindings"][0]["aor"], "2401");

    // peers: no neighbours on loopback, said as such.
    assert_eq!(table("peers", node.api)[1], "(none)");
    assert_eq!(json("peers", node.api), serde_json::json!([]));

    // phones: the registered phone, here.
    let phones = table("phones", node.api);
    assert!(
        phones
            .iter()
            .any(|l| l.starts_with("2401") && l.contains("here")),
        "{phones:?}"
    );
    let phones_json = json("phones", node.api);
    assert_eq!(phones_json[0]["aor"], "2401", "{phones_json}");

    // calls: none yet; then an echo test call, whose legs are listed with their figures.
    assert_eq!(table("calls", node.api)[1], "(none)");
    phone.dial("*43");
    phone.wait_established();
    wait_until_why(
        "the echo call in `fieldmesh calls` with packets",
        Duration::from_secs(10),
        || {
            let calls = json("calls", node.api);
            let live = calls
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["state"] == "live" && c["packets"].as_u64().unwrap_or(0) > 20);
            if live { Ok(()) } else { Err(calls.to_string()) }
        },
    );
    phone.hangup();
    let calls = wait_until_why("the echo call to end", Duration::from_secs(10), || {
        let rows = table("calls", node.api);
        if rows.iter().skip(1).any(|r| r.contains("ended")) {
            Ok(rows)
        } else {
            Err(rows.join("\n"))
        }
    });
    assert!(
        calls[0].contains("MOS") && calls[0].contains("LOSS"),
        "{calls:?}"
    );
    let calls_json = json("calls", node.api);
    let first = &calls_json[0];
    assert_eq!(first["state"], "ended", "{calls_json}");
    assert_eq!(first["echo"], true, "{calls_json}");
    assert!(
        first["mos"].as_f64().is_some_and(|m| m > 1.0),
        "{calls_json}"
    );
}

#[test]
fn cli_views_say_so_when_no_daemon_answers() {
    let api = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    );
    for view in ["status", "peers", "phones", "calls"] {
        for as_json in [false, true] {
            let (code, out, err) = cli(view, api, as_json);
            assert_eq!(code, 1, "fieldmesh {view}: {out}{err}");
            assert!(out.is_empty(), "{out}");
            assert!(
                err.contains(&format!("no fieldmesh daemon answering on {api}")),
                "fieldmesh {view}: {err}"
            );
        }
    }
}

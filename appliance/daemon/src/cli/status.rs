//! `fieldmesh status | peers | phones | calls`: the local daemon's view, through the same HTTP API the
//! web page and tests use, as tables for people or `--json` for scripts.

use anyhow::{Context, bail};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// Which view to print.
#[derive(Clone, Copy, Debug)]
pub(crate) enum View {
    Status,
    Peers,
    Phones,
    Calls,
}

/// Prints `view` from the daemon whose API listens on `api`.
pub(crate) fn run(view: View, api: SocketAddr, json: bool) -> ExitCode {
    match fetch(api) {
        Ok(status) => {
            let out = if json {
                json_of(view, &status)
            } else {
                table(view, &status)
            };
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fieldmesh: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn fetch(api: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let mut stream = TcpStream::connect_timeout(&api, Duration::from_secs(2))
        .with_context(|| format!("no fieldmesh daemon answering on {api} (is `fieldmesh run` running? --api sets the address)"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET /api/status HTTP/1.0\r\nHost: {api}\r\n\r\n")?;
    let mut raw = String::new();
    stream
        .read_to_string(&mut raw)
        .context("reading the daemon's answer")?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!(
            "the daemon on {api} answered: {}",
            head.lines().next().unwrap_or("")
        );
    }
    serde_json::from_str(body).context("the daemon's answer is not JSON")
}

fn json_of(view: View, status: &serde_json::Value) -> String {
    let value = match view {
        View::Status => status.clone(),
        View::Peers => status["peers"].clone(),
        View::Phones => phones(status),
        View::Calls => calls(status),
    };
    format!(
        "{}\n",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    )
}

/// Every phone the appliance knows of: its own bindings and what other appliances serve.
fn phones(status: &serde_json::Value) -> serde_json::Value {
    let node = status["node"].as_str().unwrap_or("");
    let mut rows: Vec<serde_json::Value> = status["bindings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            serde_json::json!({
                "aor": b["aor"], "node": node, "where": "here", "contact": b["contact"],
                "expires_in": b["expires_in"],
            })
        })
        .collect();
    rows.extend(status["location"].as_array().into_iter().flatten().filter(|r| r["phones"].as_u64() != Some(0)).map(|r| {
        serde_json::json!({
            "aor": r["aor"], "node": r["node"], "where": r["sip"], "contact": serde_json::Value::Null,
            "expires_in": r["expires_in"], "reachable": r["reachable"],
        })
    }));
    serde_json::Value::Array(rows)
}

/// Every leg of the calls this appliance anchors, live ones first, then those that ended
/// (newest first), with their quality figures.
fn calls(status: &serde_json::Value) -> serde_json::Value {
    let live = status["calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| (c, "live"));
    let ended = status["recent_calls"]
        .as_array()
        .into_iter()
        .flat_map(|a| a.iter().rev())
        .map(|c| (c, "ended"));
    let rows = live
        .chain(ended)
        .flat_map(|(c, state)| {
            c["streams"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(move |s| {
                    s["legs"].as_array().into_iter().flatten().map(move |l| {
                        serde_json::json!({
                            "call_id": c["call_id"], "state": state, "duration_s": c["duration_s"],
                            "echo": c["echo"], "media": s["media"], "transcoded": s["transcoded"],
                            "leg": l["leg"], "remote": l["remote"], "packets": l["packets"],
                            "loss_pct": l["loss_pct"], "jitter_ms": l["jitter_ms"],
                            "rtt_ms": l["rtt_ms"], "mos": l["mos"],
                        })
                    })
                })
        })
        .collect();
    serde_json::Value::Array(rows)
}

fn table(view: View, status: &serde_json::Value) -> String {
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let (header, rows): (Vec<&str>, Vec<Vec<String>>) = match view {
        View::Status => (
            vec![
                "node",
                "version",
                "uptime",
                "peer id",
                "sip",
                "phones here",
                "neighbours",
            ],
            vec![vec![
                s(&status["node"]),
                s(&status["version"]),
                format!("{} s", s(&status["uptime_s"])),
                s(&status["peer_id"]),
                status["sip_listen"]
                    .as_array()
                    .map(|a| a.iter().map(&s).collect::<Vec<_>>().join(" "))
                    .unwrap_or_default(),
                status["bindings"]
                    .as_array()
                    .map_or(0, Vec::len)
                    .to_string(),
                status["peers"]
                    .as_array()
                    .map_or(0, |p| p.iter().filter(|p| p["connected"] == true).count())
                    .to_string(),
            ]],
        ),
        View::Peers => (
            vec![
                "node",
                "peer id",
                "addresses",
                "version",
                "compatible",
                "connected",
            ],
            status["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    vec![
                        s(&p["node"]),
                        s(&p["peer_id"]),
                        p["addrs"]
                            .as_array()
                            .map(|a| a.iter().map(&s).collect::<Vec<_>>().join(" "))
                            .unwrap_or_default(),
                        s(&p["version"]),
                        s(&p["compatible"]),
                        s(&p["connected"]),
                    ]
                })
                .collect(),
        ),
        View::Phones => (
            vec!["extension", "appliance", "where", "expires in"],
            phones(status)
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    vec![
                        s(&p["aor"]),
                        s(&p["node"]),
                        s(&p["where"]),
                        format!("{} s", s(&p["expires_in"])),
                    ]
                })
                .collect(),
        ),
        View::Calls => (
            vec![
                "call id", "state", "duration", "media", "leg", "far end", "packets", "loss",
                "jitter", "rtt", "mos",
            ],
            calls(status)
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let fixed = |v: &serde_json::Value, unit: &str| {
                        v.as_f64().map_or("-".into(), |x| format!("{x:.1}{unit}"))
                    };
                    vec![
                        s(&c["call_id"]),
                        s(&c["state"]),
                        fixed(&c["duration_s"], " s"),
                        match c["transcoded"].as_str() {
                            Some(t) => format!("{} ({t})", s(&c["media"])),
                            None => s(&c["media"]),
                        },
                        s(&c["leg"]),
                        s(&c["remote"]),
                        s(&c["packets"]),
                        fixed(&c["loss_pct"], " %"),
                        fixed(&c["jitter_ms"], " ms"),
                        fixed(&c["rtt_ms"], " ms"),
                        c["mos"].as_f64().map_or("-".into(), |m| format!("{m:.2}")),
                    ]
                })
                .collect(),
        ),
    };
    render(&header, &rows)
}

/// A plain-text table with columns as wide as their widest cell.
fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|h| h.to_uppercase()).collect());
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> serde_json::Value {
        serde_json::json!({
            "version": "0.1.0", "node": "a", "uptime_s": 5, "peer_id": "12D3KooWa", "sip_listen": ["0.0.0.0:5060"],
            "bindings": [{"aor": "201", "contact": "sip:201@10.42.0.2:5060", "expires_in": 280}],
            "peers": [{"peer_id": "12D3KooWc", "node": "c", "addrs": ["10.99.0.3"], "version": 1, "compatible": true, "connected": true}],
            "location": [
                {"aor": "303", "peer_id": "12D3KooWc", "node": "c", "sip": "10.99.0.3:5060", "expires_in": 200, "seq": 5, "phones": 1, "reachable": true},
                {"aor": "304", "peer_id": "12D3KooWc", "node": "c", "sip": "10.99.0.3:5060", "expires_in": 0, "seq": 6, "phones": 0, "reachable": true}
            ]
        })
    }

    #[test]
    fn phones_lists_this_appliances_and_the_others_but_not_tombstones() {
        let text = table(View::Phones, &sample());
        assert!(text.starts_with("EXTENSION"), "{text}");
        assert!(
            text.contains("201")
                && text.contains("here")
                && text.contains("303")
                && text.contains("10.99.0.3:5060")
        );
        assert!(!text.contains("304"), "{text}");
        let json = json_of(View::Phones, &sample());
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json)
                .expect("json")
                .as_array()
                .map(Vec::len),
            Some(2)
        );
    }

    #[test]
    fn peers_and_status_render_one_row_each() {
        assert_eq!(table(View::Peers, &sample()).lines().count(), 2);
        let status = table(View::Status, &sample());
        assert!(
            status.contains("12D3KooWa") && status.lines().count() == 2,
            "{status}"
        );
    }

    #[test]
    fn calls_lists_every_leg_live_first() {
        let mut status = sample();
        let leg = |leg: &str, mos: f64| {
            serde_json::json!({"leg": leg, "remote": "10.42.0.2:4000", "packets": 250, "lost": 0,
                "loss_pct": 0.0, "jitter_ms": 1.25, "rtt_ms": null, "mos": mos, "dropped": 0})
        };
        let call = |id: &str| {
            serde_json::json!({"call_id": id, "duration_s": 5.0, "echo": false, "streams": [
                {"media": "audio", "transcoded": "opus<->PCMU", "legs": [leg("caller", 4.4), leg("callee", 4.3)]}]})
        };
        status["calls"] = serde_json::json!([call("live-1")]);
        status["recent_calls"] = serde_json::json!([call("old-1"), call("old-2")]);
        let text = table(View::Calls, &status);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "{text}");
        assert!(lines[0].starts_with("CALL ID"), "{text}");
        assert!(
            lines[1].starts_with("live-1") && lines[1].contains("live"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("old-2"),
            "newest ended call first: {text}"
        );
        assert!(
            text.contains("audio (opus<->PCMU)") && text.contains("4.40"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&json_of(View::Calls, &status)).expect("json");
        assert_eq!(json.as_array().map(Vec::len), Some(6));
        assert_eq!(table(View::Calls, &sample()).lines().nth(1), Some("(none)"));
    }

    #[test]
    fn no_daemon_is_a_clear_error() {
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let err = fetch(free).expect_err("nothing listens");
        assert!(
            format!("{err:#}").contains("no fieldmesh daemon answering on"),
            "{err:#}"
        );
    }
}

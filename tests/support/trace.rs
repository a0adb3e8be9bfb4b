//! What the benchmarks (`bench/`) share: call-setup latency from sipp's `-trace_msg` log, and
//! writing a result table under the target directory.
//! sipp's `-trace_rtt` has 4 ms steps here; the message log has µs timestamps.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Writes a bench's Markdown `report` to `target/bench/<stem>-<unix time>.md` and
/// `target/bench/<stem>-latest.md` (honouring `CARGO_TARGET_DIR`), so runs can be compared.
pub fn write_report(stem: &str, report: &str) {
    let dir = crate::node::target_dir().join("bench");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return;
    }
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for name in [format!("{stem}-{unix}.md"), format!("{stem}-latest.md")] {
        let path = dir.join(name);
        match std::fs::write(&path, report) {
            Ok(()) => eprintln!("wrote {}", path.display()),
            Err(e) => eprintln!("cannot write {}: {e}", path.display()),
        }
    }
}

/// INVITE sent -> first 180 received, per Call-ID, in ms, from the text of sipp's `-trace_msg` log
/// (blocks that start with a dashed line and a `YYYY-MM-DD HH:MM:SS.ffffff` timestamp).
pub fn ringing_latencies(text: &str) -> Vec<f64> {
    let mut invites: HashMap<String, f64> = HashMap::new();
    let mut out = Vec::new();
    for block in text.split("-----------------------------------------------") {
        let mut lines = block.lines();
        let Some(stamp) = lines.next().and_then(|l| timestamp(l.trim())) else {
            continue;
        };
        let Some(kind) = lines.next() else {
            continue;
        };
        let mut body = lines.skip_while(|l| l.trim().is_empty());
        let Some(start) = body.next() else {
            continue;
        };
        let Some(call_id) = body.find_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case("Call-ID") || name == "i").then(|| value.trim().to_string())
        }) else {
            continue;
        };
        if kind.contains("sent") && start.starts_with("INVITE ") {
            invites.entry(call_id).or_insert(stamp);
        } else if kind.contains("received")
            && start.starts_with("SIP/2.0 180")
            && let Some(sent) = invites.remove(&call_id)
        {
            out.push((stamp - sent) * 1e3);
        }
    }
    out
}

/// Seconds since the Unix epoch of `YYYY-MM-DD HH:MM:SS.ffffff` (local time; only differences
/// are used).
pub fn timestamp(s: &str) -> Option<f64> {
    let (date, time) = s.split_once(' ')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min, sec) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

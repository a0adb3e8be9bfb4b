//! The common clock. Appliances have no RTC and no internet, so they keep time among
//! themselves: chrony runs in orphan mode (`rootfs-overlay/etc/chrony/conf.d/fieldmesh.conf`)
//! and needs its neighbours as peers, which it cannot discover; the overlay can. This keeps
//! one `peer ADDRESS iburst` line per connected, compatible neighbour in a chrony sources file
//! (`mesh.chrony_sources`); `systemd/fieldmesh-chrony.path` makes chrony reload it at once
//! (`chronyc reload sources`), and `fieldmesh-chrony.timer` every 30 s.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the neighbours are looked at.
const EVERY: Duration = Duration::from_secs(5);

/// The sources file for these neighbour addresses (sorted, so it changes only when they do).
pub(crate) fn sources(peers: &BTreeSet<IpAddr>) -> String {
    let mut out = String::from(
        "# Written by fieldmesh: the appliances connected over the mesh, as chrony peers.\n",
    );
    for ip in peers {
        out.push_str(&format!("peer {ip} iburst minpoll 4 maxpoll 6\n"));
    }
    out
}

/// The mesh-side address of every connected, compatible neighbour.
fn neighbours(status: &mesh::MeshStatus) -> BTreeSet<IpAddr> {
    status
        .peers
        .iter()
        .filter(|p| p.connected && p.compatible)
        .filter_map(|p| p.addrs.iter().find_map(|a| a.parse::<IpAddr>().ok()))
        .collect()
}

/// Rewrites `path` in place, in one write: closing it is what the path unit sees
/// (`PathChanged=` fires on close after write; a rename over the file went unnoticed), and
/// chrony reads it only when reloaded afterwards. World-readable whatever our umask (the
/// unit's is 0077): chronyd reads it as its own user.
fn write(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let mut file = std::fs::File::create(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    file.write_all(text.as_bytes())
}

/// Runs until `stop` changes, rewriting `path` whenever the set of connected neighbours
/// changes (the first time once the overlay is up: the file lives in /run, so a reboot starts
/// without one).
pub(crate) async fn run(
    mesh: tokio::sync::watch::Receiver<Option<mesh::Mesh>>,
    path: PathBuf,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut written: Option<BTreeSet<IpAddr>> = None;
    loop {
        let handle = mesh.borrow().clone();
        let now = match handle {
            Some(m) => m.status().await.map(|s| neighbours(&s)),
            None => None,
        };
        if let Some(now) = now
            && written.as_ref() != Some(&now)
        {
            match write(&path, &sources(&now)) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), peers = ?now, "clock peers written");
                    written = Some(now);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "clock peers not written");
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(addr: &str, connected: bool, compatible: bool) -> mesh::PeerInfo {
        mesh::PeerInfo {
            peer_id: format!("12D3Koo{addr}"),
            node: String::new(),
            addrs: vec![addr.to_string()],
            version: 1,
            compatible,
            connected,
        }
    }

    #[test]
    fn connected_compatible_neighbours_become_peers_in_a_stable_order() {
        let status = mesh::MeshStatus {
            peer_id: "12D3KooMe".into(),
            peers: vec![
                peer("169.254.7.9", true, true),
                peer("169.254.1.2", true, true),
                peer("169.254.3.3", false, true),
                peer("169.254.4.4", true, false),
            ],
            records: Vec::new(),
        };
        let text = sources(&neighbours(&status));
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            vec![
                "peer 169.254.1.2 iburst minpoll 4 maxpoll 6",
                "peer 169.254.7.9 iburst minpoll 4 maxpoll 6"
            ]
        );
        assert_eq!(sources(&BTreeSet::new()).lines().count(), 1, "comment only");
    }

    #[test]
    fn the_file_is_rewritten_whole() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mesh.sources");
        write(&path, "one longer line\n").expect("write");
        write(&path, "two\n").expect("rewrite");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "two\n");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "chronyd, another user, reads it");
    }
}

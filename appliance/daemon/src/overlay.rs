//! Glue between the SIP core and the overlay (`sip` ↔ `mesh`): the one place that knows both.
//! Local bindings become location records; the overlay's routes, roaming news and lookup
//! answers become commands for the SIP endpoint.

use crate::config::Config;
use crate::storage::SqlStorage;
use mesh::{Mesh, MeshConfig, MeshEvent, PhoneRef};
use sip::{Aor, Command, Endpoint, MeshSide, RemoteRoute};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A running overlay as the SIP driver sees it.
pub(crate) struct Link {
    pub(crate) mesh: Mesh,
    pub(crate) events: mpsc::Receiver<MeshEvent>,
}

/// Why the overlay could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OverlayError {
    #[error("mesh.interface {0:?} has no IPv4 address")]
    NoAddress(String),
    #[error(transparent)]
    Mesh(#[from] mesh::MeshError),
}

/// Starts the overlay when a mesh interface is configured (or `bat0` exists, the appliance's
/// mesh side); without one the appliance serves its own phones alone.
pub(crate) fn start(
    config: &Config,
    sip_port: u16,
) -> Result<Option<(Link, MeshSide)>, OverlayError> {
    let file = &config.file;
    if !file.mesh_enabled {
        return Ok(None);
    }
    let interfaces = mesh_interfaces(config);
    if interfaces.is_empty() {
        tracing::info!(
            "no mesh interface (bat0) and none configured: serving this appliance's phones alone"
        );
        return Ok(None);
    }
    let ips = interfaces
        .iter()
        .map(|name| interface_ipv4(name).ok_or_else(|| OverlayError::NoAddress(name.clone())))
        .collect::<Result<Vec<Ipv4Addr>, _>>()?;
    let ip = ips[0];
    let keypair = mesh::load_or_create_identity(&config.state_dir.join("overlay.key"))?;
    let epoch = mesh::next_epoch(&config.state_dir.join("overlay.epoch"))?;
    let sip = SocketAddr::new(IpAddr::V4(ip), sip_port);
    let listen = SocketAddr::new(
        if file.mesh_listen.ip().is_unspecified() {
            IpAddr::V4(ip)
        } else {
            file.mesh_listen.ip()
        },
        file.mesh_listen.port(),
    );
    let (tx, events) = mpsc::channel(1024);
    let mesh = Mesh::spawn(
        MeshConfig {
            keypair,
            node_name: config.node_name.clone(),
            listen,
            sip,
            mdns: Some((ips.clone(), interfaces.clone())),
            ping_interval: file.ping_interval,
            ping_timeout: file.ping_timeout,
            epoch,
            memory: None,
            replicas: REPLICAS,
            restore_after: file.store_restore_after,
        },
        tx,
    )?;
    tracing::info!(peer_id = %mesh.peer_id(), interfaces = ?interfaces, %sip, overlay = %listen, "overlay started");
    let side = MeshSide {
        local: sip,
        peer_timeout: file.peer_timeout,
        lookup_timeout: Duration::from_secs(2),
    };
    Ok(Some((Link { mesh, events }, side)))
}

/// How many other appliances keep a copy of each stored message (fewer when fewer exist).
pub(crate) const REPLICAS: usize = 2;

/// What the overlay said, as a command for the endpoint (fetch requests are answered by the
/// driver, which owns the store: `None`).
pub(crate) fn command(event: MeshEvent) -> Option<Command> {
    Some(match event {
        MeshEvent::Replicas { replicas } => {
            let (messages, voicemails) = split(replicas);
            Command::StoreReplicas {
                messages,
                voicemails,
            }
        }
        MeshEvent::Delivered { ids } => Command::ForgetMessages { ids },
        MeshEvent::FetchRequest { .. }
        | MeshEvent::Restore { .. }
        | MeshEvent::StatusRequest { .. } => return None,
        MeshEvent::Routes { aor, routes, known } => Command::RemoteRoutes {
            aor,
            routes: remote(routes),
            known,
        },
        MeshEvent::Moved { aor, phones } => Command::PhonesMoved {
            aor,
            call_ids: phones.iter().map(|p| p.call_id.clone()).collect(),
            instances: phones.iter().filter_map(|p| p.instance.clone()).collect(),
        },
    })
}

/// A stored message as the overlay carries it (opaque to the mesh crate).
#[derive(serde::Serialize, serde::Deserialize)]
struct MessagePayload {
    from: String,
    to: String,
    content_type: String,
    body: Vec<u8>,
    date: Option<String>,
}

pub(crate) fn to_replica(m: &sip::StoredMessage) -> mesh::Replica {
    let payload = MessagePayload {
        from: m.from.clone(),
        to: m.to.clone(),
        content_type: m.content_type.clone(),
        body: m.body.to_vec(),
        date: m.date.clone(),
    };
    mesh::Replica {
        id: m.id.clone(),
        aor: m.aor.clone(),
        kind: mesh::ReplicaKind::Message,
        payload: serde_json::to_vec(&payload).expect("a message payload always serialises"),
    }
}

/// A replica back as a message; one that does not decode is dropped with a log line.
pub(crate) fn from_replica(r: mesh::Replica) -> Option<sip::StoredMessage> {
    match serde_json::from_slice::<MessagePayload>(&r.payload) {
        Ok(p) => Some(sip::StoredMessage {
            id: r.id,
            aor: r.aor,
            from: p.from,
            to: p.to,
            content_type: p.content_type,
            body: p.body.into(),
            date: p.date,
        }),
        Err(e) => {
            tracing::warn!(id = %r.id, error = %e, "undecodable message replica dropped");
            None
        }
    }
}

/// Replicas as messages and voicemails; undecodable ones are dropped with a log line.
pub(crate) fn split(
    replicas: Vec<mesh::Replica>,
) -> (Vec<sip::StoredMessage>, Vec<sip::StoredVoicemail>) {
    let (voicemails, messages): (Vec<_>, Vec<_>) = replicas
        .into_iter()
        .filter(|r| {
            let ok = sip::id_belongs_to(&r.id, &r.aor);
            if !ok {
                tracing::warn!(id = %r.id, aor = %r.aor, "replica refused: its id names another extension");
            }
            ok
        })
        .partition(|r| r.kind == mesh::ReplicaKind::Voicemail);
    (
        messages.into_iter().filter_map(from_replica).collect(),
        voicemails
            .into_iter()
            .filter_map(voicemail_from_replica)
            .collect(),
    )
}

/// What travels with a voicemail's audio: its header, as JSON before the audio bytes.
#[derive(serde::Serialize, serde::Deserialize)]
struct VoicemailHeader {
    from: String,
    date: String,
    duration_ms: u64,
}

/// A voicemail as the overlay carries it: a 4-byte length, the JSON header, then the audio
/// as it is (JSON would triple the size of the bytes).
pub(crate) fn voicemail_replica(v: &sip::StoredVoicemail) -> mesh::Replica {
    let header = serde_json::to_vec(&VoicemailHeader {
        from: v.from.clone(),
        date: v.date.clone(),
        duration_ms: v.duration_ms,
    })
    .expect("a voicemail header always serialises");
    let mut payload = Vec::with_capacity(4 + header.len() + v.audio.len());
    payload.extend_from_slice(&u32::try_from(header.len()).unwrap_or(0).to_be_bytes());
    payload.extend_from_slice(&header);
    payload.extend_from_slice(&v.audio);
    mesh::Replica {
        id: v.id.clone(),
        aor: v.aor.clone(),
        kind: mesh::ReplicaKind::Voicemail,
        payload,
    }
}

/// A voicemail replica back; one that does not decode is dropped with a log line.
pub(crate) fn voicemail_from_replica(r: mesh::Replica) -> Option<sip::StoredVoicemail> {
    let decoded = (|| {
        let len = u32::from_be_bytes(r.payload.get(..4)?.try_into().ok()?) as usize;
        let header: VoicemailHeader = serde_json::from_slice(r.payload.get(4..4 + len)?).ok()?;
        let audio = r.payload.get(4 + len..)?;
        Some((header, audio.to_vec()))
    })();
    match decoded {
        Some((h, audio)) if !audio.is_empty() => Some(sip::StoredVoicemail {
            id: r.id,
            aor: r.aor,
            from: h.from,
            date: h.date,
            duration_ms: h.duration_ms,
            audio: audio.into(),
            heard: false,
        }),
        _ => {
            tracing::warn!(id = %r.id, aor = %r.aor, "undecodable voicemail replica dropped");
            None
        }
    }
}

/// Everything kept here for `aor` (messages, then voicemails), as replicas: what a neighbour's
/// fetch is answered with, and where a restore finds the item to copy.
pub(crate) fn held_for(storage: &mut SqlStorage, aor: &str) -> Vec<mesh::Replica> {
    let mut replicas: Vec<mesh::Replica> = sip::Storage::pending_messages(storage, aor)
        .unwrap_or_default()
        .iter()
        .map(to_replica)
        .collect();
    let mailbox = sip::Storage::voicemails(storage, aor).unwrap_or_default();
    replicas.extend(mailbox.iter().map(voicemail_replica));
    replicas
}

/// Copies items whose holder is gone to the neighbours the overlay chose (see
/// `mesh::custody`); the items are read here, sent in the background.
pub(crate) fn restore(mesh: &Mesh, storage: &mut SqlStorage, restores: Vec<mesh::Restore>) {
    for r in restores {
        let found: Vec<mesh::Replica> = held_for(storage, &r.aor)
            .into_iter()
            .filter(|replica| replica.id == r.id)
            .collect();
        if found.is_empty() {
            continue;
        }
        let mesh = mesh.clone();
        tokio::spawn(async move {
            let holders = mesh.replicate_to(found, 0, r.to.clone()).await;
            tracing::info!(id = %r.id, aor = %r.aor, to = ?r.to, holders, "replica count restored");
        });
    }
}

pub(crate) fn remote(routes: Vec<mesh::Route>) -> Vec<RemoteRoute> {
    routes
        .into_iter()
        .map(|r| RemoteRoute {
            peer: r.peer,
            node: r.node,
            sip: r.sip,
        })
        .collect()
}

/// Announces our current bindings of `aor` (none: a tombstone).
pub(crate) fn announce(mesh: &Mesh, endpoint: &Endpoint<SqlStorage>, aor: &Aor, now: Instant) {
    let bindings: Vec<_> = endpoint
        .bindings(now)
        .into_iter()
        .filter(|b| b.aor == *aor)
        .collect();
    let ttl = bindings
        .iter()
        .map(|b| b.expires_at.saturating_duration_since(now).as_secs())
        .max()
        .unwrap_or(0);
    let phones = bindings
        .iter()
        .map(|b| PhoneRef {
            call_id: b.call_id.clone(),
            cseq: b.cseq,
            instance: b.instance.clone(),
            age_secs: now.saturating_duration_since(b.registered_at).as_secs() as u32,
        })
        .collect();
    mesh.announce(aor.0.clone(), phones, ttl.min(u64::from(u32::MAX)) as u32);
}

/// Announces every binding we hold (at start: a restarted appliance is reachable again
/// without its phones re-registering).
pub(crate) fn announce_all(mesh: &Mesh, endpoint: &Endpoint<SqlStorage>, now: Instant) {
    let mut aors: Vec<Aor> = endpoint
        .bindings(now)
        .into_iter()
        .map(|b| b.aor.clone())
        .collect();
    aors.sort();
    aors.dedup();
    for aor in aors {
        announce(mesh, endpoint, &aor, now);
    }
}

/// The mesh interfaces to use: the configured ones, else `bat0` if the machine has it; none
/// means a single appliance.
pub(crate) fn mesh_interfaces(config: &Config) -> Vec<String> {
    let file = &config.file;
    if !file.mesh_enabled {
        return Vec::new();
    }
    match file.mesh_interface.as_slice() {
        [] if interface_exists("bat0") => vec!["bat0".to_string()],
        [] => Vec::new(),
        names => names.to_vec(),
    }
}

/// Starts the overlay as soon as the mesh interfaces have their addresses. On the Pi, bat0's
/// address arrives seconds after the daemon starts; the phones are served meanwhile.
pub(crate) async fn start_when_ready(
    config: Config,
    sip_port: u16,
    ready: tokio::sync::mpsc::Sender<(Link, MeshSide)>,
) {
    let mut waited = 0u32;
    loop {
        match start(&config, sip_port) {
            Ok(Some(started)) => {
                let _ = ready.send(started).await;
                return;
            }
            Ok(None) => return,
            Err(OverlayError::NoAddress(name)) => {
                if waited.is_multiple_of(30) {
                    tracing::info!(interface = %name, "mesh interface has no IPv4 address yet; waiting");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "overlay did not start; serving this appliance's phones alone");
                return;
            }
        }
        waited += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn interface_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// The first IPv4 address of interface `name`.
pub(crate) fn interface_ipv4(name: &str) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        if ifa.interface_name != name {
            return None;
        }
        let addr = ifa.address?;
        let v4 = addr.as_sockaddr_in()?;
        Some(v4.ip())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, aor: &str) -> sip::StoredMessage {
        sip::StoredMessage {
            id: id.into(),
            aor: aor.into(),
            from: "<sip:201@fieldmesh>;tag=1".into(),
            to: format!("<sip:{aor}@fieldmesh>"),
            content_type: "text/plain".into(),
            body: "hi".into(),
            date: None,
        }
    }

    #[test]
    fn replicas_whose_id_names_another_extension_are_refused() {
        let good = to_replica(&message(&sip::item_id("303", 7), "303"));
        let mut forged = to_replica(&message(&sip::item_id("303", 8), "303"));
        forged.aor = "404".into();
        let older = to_replica(&message("00000000000000ff", "303"));
        let (messages, voicemails) = split(vec![good.clone(), forged, older]);
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, vec![good.id.as_str(), "00000000000000ff"]);
        assert!(voicemails.is_empty());
    }

    #[test]
    fn a_voicemail_survives_the_trip_through_a_replica() {
        let v = sip::StoredVoicemail {
            id: sip::item_id("303", 9),
            aor: "303".into(),
            from: "<sip:201@fieldmesh>".into(),
            date: "Wed, 25 Nov 2026 14:02:00 GMT".into(),
            duration_ms: 5000,
            audio: vec![1, 2, 3].into(),
            heard: false,
        };
        let (_, back) = split(vec![voicemail_replica(&v)]);
        assert_eq!(back, vec![v]);
    }
}

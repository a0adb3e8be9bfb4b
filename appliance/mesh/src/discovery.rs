//! Neighbour discovery with mDNS (DNS-SD): every appliance announces `_fieldmesh._udp.local.`
//! on its mesh-side interface, with its overlay peer id, overlay port, SIP port, protocol
//! version and name in TXT, and browses for the others. Phones get `_sip._udp.local.`.
//!
//! Probing is off (measured: 940 ms → ≤1 ms to appear, NOTES §3.1), which is safe because the
//! instance name is the peer id, unique by construction.

use crate::error::MeshError;
use libp2p::PeerId;
use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use std::net::Ipv4Addr;
use tokio::sync::mpsc;

const APPLIANCES: &str = "_fieldmesh._udp.local.";
const PHONES: &str = "_sip._udp.local.";

/// A neighbour appliance as mDNS described it.
#[derive(Debug, Clone)]
pub(crate) struct Discovered {
    pub(crate) peer: PeerId,
    pub(crate) node: String,
    pub(crate) addr: Ipv4Addr,
    pub(crate) port: u16,
    pub(crate) version: u32,
}

/// Registers our services and browses for neighbours; returns their descriptions.
pub(crate) fn start(
    peer: PeerId,
    node: &str,
    ips: &[Ipv4Addr],
    overlay_port: u16,
    sip_port: u16,
    interfaces: &[String],
) -> Result<mpsc::Receiver<Discovered>, MeshError> {
    let mdns = ServiceDaemon::new().map_err(|e| MeshError::Discovery(e.to_string()))?;
    if !interfaces.is_empty() {
        // Everything an appliance tells other appliances uses the mesh side only.
        mdns.disable_interface(IfKind::All)
            .map_err(|e| MeshError::Discovery(e.to_string()))?;
        for name in interfaces {
            mdns.enable_interface(IfKind::Name(name.clone()))
                .map_err(|e| MeshError::Discovery(e.to_string()))?;
        }
    }
    let id = peer.to_base58();
    let host = format!("fm-{}.local.", &id[id.len().saturating_sub(12)..]);
    let version = crate::PROTOCOL_VERSION.to_string();
    // mdns-sd answers on each interface with the addresses of that interface's subnet.
    let ip_text = ips
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let props = [
        ("ver", version.as_str()),
        ("peer", id.as_str()),
        ("port", &overlay_port.to_string()),
        ("sip", &sip_port.to_string()),
        ("node", node),
    ];
    let mut info = ServiceInfo::new(
        APPLIANCES,
        &id,
        &host,
        ip_text.as_str(),
        overlay_port,
        &props[..],
    )
    .map_err(|e| MeshError::Discovery(e.to_string()))?;
    info.set_requires_probe(false);
    mdns.register(info)
        .map_err(|e| MeshError::Discovery(e.to_string()))?;
    let mut sip = ServiceInfo::new(
        PHONES,
        &format!("fieldmesh-{}", &id[id.len().saturating_sub(8)..]),
        &host,
        ip_text.as_str(),
        sip_port,
        &[("node", node)][..],
    )
    .map_err(|e| MeshError::Discovery(e.to_string()))?;
    sip.set_requires_probe(false);
    let _ = mdns.register(sip);
    let browse = mdns
        .browse(APPLIANCES)
        .map_err(|e| MeshError::Discovery(e.to_string()))?;
    let (tx, rx) = mpsc::channel(64);
    // mdns-sd runs its own thread and hands out a blocking receiver; bridge it.
    std::thread::Builder::new()
        .name("fieldmesh-mdns".into())
        .spawn(move || {
            let _daemon = mdns; // kept alive as long as we browse
            while let Ok(event) = browse.recv() {
                match event {
                    ServiceEvent::ServiceResolved(s) => match parse(&s) {
                        Ok(d) => {
                            if tx.blocking_send(d).is_err() {
                                break;
                            }
                        }
                        Err(why) => tracing::warn!(name = %s.fullname, why, "malformed neighbour announcement ignored"),
                    },
                    ServiceEvent::ServiceRemoved(_, name) => tracing::info!(%name, "neighbour announced its departure"),
                    _ => {}
                }
            }
        })
        .map_err(|e| MeshError::Discovery(e.to_string()))?;
    Ok(rx)
}

fn parse(s: &mdns_sd::ResolvedService) -> Result<Discovered, &'static str> {
    let peer: PeerId = s
        .txt_properties
        .get_property_val_str("peer")
        .ok_or("no peer")?
        .parse()
        .map_err(|_| "bad peer id")?;
    let version: u32 = s
        .txt_properties
        .get_property_val_str("ver")
        .ok_or("no ver")?
        .parse()
        .map_err(|_| "bad ver")?;
    let node = s
        .txt_properties
        .get_property_val_str("node")
        .unwrap_or("")
        .chars()
        .take(64)
        .collect();
    let addr = s
        .addresses
        .iter()
        .find_map(|a| match a.to_ip_addr() {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
        .ok_or("no IPv4 address")?;
    if s.port == 0 {
        return Err("port 0");
    }
    Ok(Discovered {
        peer,
        node,
        addr,
        port: s.port,
        version,
    })
}

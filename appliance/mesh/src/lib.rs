//! fieldmesh's overlay: appliances that find each other by mDNS and share one phone book over
//! libp2p, with no server and no enrolment.
//!
//! [`records`] holds the location records and their merge rules as pure functions of `now`;
//! [`node`] runs the swarm (gossipsub, kad, identify, ping, request-response) in one task behind
//! the [`Mesh`] handle; `discovery` announces and browses `_fieldmesh._udp.local.`. This crate
//! knows nothing about SIP: the daemon turns bindings into records and routes into SIP targets.

mod behaviour;
pub mod custody;
mod discovery;
mod error;
pub mod node;
pub mod records;
pub mod replicas;

pub use custody::{Inventory, Restore};
pub use error::MeshError;
pub use libp2p::{Multiaddr, PeerId, identity};
pub use node::{Mesh, MeshConfig, MeshEvent, MeshStatus, PeerInfo, PeerReport};
pub use records::{LocationRecord, PhoneRef, Route};
pub use replicas::{Replica, ReplicaKind};

use std::path::Path;

/// The overlay protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest and newest versions it still works with: appliances flashed months apart must
/// interoperate, and one outside the range is shown, not silently ignored.
pub const COMPATIBLE: std::ops::RangeInclusive<u32> = 1..=1;

pub fn is_compatible(version: u32) -> bool {
    COMPATIBLE.contains(&version)
}

/// The appliance's persistent overlay identity: read from `path`, or created there.
pub fn load_or_create_identity(path: &Path) -> Result<identity::Keypair, MeshError> {
    let err = |why: String| MeshError::Identity {
        path: path.to_path_buf(),
        why,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            identity::Keypair::from_protobuf_encoding(&bytes).map_err(|e| err(e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = identity::Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|e| err(e.to_string()))?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes).map_err(|e| err(e.to_string()))?;
            std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// The next start epoch, kept in `path`: sequence numbers are `epoch << 32 | counter`, so they
/// keep increasing across restarts without a clock.
pub fn next_epoch(path: &Path) -> Result<u64, MeshError> {
    let err = |why: String| MeshError::Identity {
        path: path.to_path_buf(),
        why,
    };
    let current = match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|e| err(e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(err(e.to_string())),
    };
    let next = current + 1;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, next.to_string()).map_err(|e| err(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))?;
    Ok(next)
}

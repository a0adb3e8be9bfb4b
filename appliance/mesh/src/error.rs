//! Errors at the overlay's boundary.

/// Why the overlay could not start.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The libp2p transport or swarm could not be built or bound.
    #[error("overlay transport: {0}")]
    Transport(String),
    /// mDNS could not start (no such interface, no multicast).
    #[error("mDNS discovery: {0}")]
    Discovery(String),
    /// The identity file could not be read or written.
    #[error("overlay identity {path}: {why}")]
    Identity {
        path: std::path::PathBuf,
        why: String,
    },
}

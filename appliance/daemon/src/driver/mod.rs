//! One thin tokio driver per protocol. A driver owns its sockets and moves bytes between them
//! and a sans-IO core; an `if` about the protocol in here belongs in the core instead.

pub(crate) mod media;
pub(crate) mod sip;

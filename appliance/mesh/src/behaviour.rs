//! The libp2p protocols the overlay speaks, and their tuning for a small field mesh.

use crate::node::MeshConfig;
use crate::records::LocationRecord;
use crate::replicas::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, gossipsub, identify, identity, kad, ping, request_response};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a sync request may take: a 1 MiB voicemail over a slow radio link needs seconds,
/// and lookups that must be quick have their own, shorter deadlines in `node.rs`.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Anti-entropy and direct lookups over request-response (bulk data, not gossip).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum SyncRequest {
    /// "Here is (aor, peer, seq) of everything I hold; send me what is newer."
    Digest { digest: Vec<(String, String, u64)> },
    /// "What do you know about this AOR?"
    Lookup { aor: String },
    /// "Keep these replicas" (bulk data goes over request-response, never gossip or kad).
    StoreReplicas { replicas: Vec<crate::Replica> },
    /// "Send me what you hold for this AOR."
    FetchReplicas { aor: String },
    /// "These were delivered: forget them."
    Delivered { ids: Vec<String> },
    /// "This is what I hold" (answered with the receiver's own inventory).
    Inventory { inventory: crate::Inventory },
    /// "How are you?": the operator views ask every appliance directly; the answer is the
    /// appliance's own report (JSON the daemon defines; this crate only carries it).
    Status,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SyncResponse {
    pub(crate) records: Vec<LocationRecord>,
    #[serde(default)]
    pub(crate) replicas: Vec<crate::Replica>,
    #[serde(default)]
    pub(crate) inventory: Option<crate::Inventory>,
    #[serde(default)]
    pub(crate) status: Option<String>,
}

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
}

impl Behaviour {
    pub(crate) fn new(
        key: &identity::Keypair,
        config: &MeshConfig,
    ) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
        let peer_id = key.public().to_peer_id();
        // A small mesh (NOTES §3.2): fewer mesh peers, a fast heartbeat without the 5 s
        // initial delay, signed messages that we validate ourselves before they propagate.
        let gossip_config = gossipsub::ConfigBuilder::default()
            .mesh_n(4)
            .mesh_n_low(2)
            .mesh_n_high(8)
            .mesh_outbound_min(1)
            .heartbeat_interval(Duration::from_millis(500))
            .heartbeat_initial_delay(Duration::from_millis(100))
            .validation_mode(gossipsub::ValidationMode::Strict)
            .validate_messages()
            .max_transmit_size(16 * 1024)
            .build()?;
        let gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )?;
        let mut kad_config = kad::Config::new(StreamProtocol::new("/fieldmesh/kad/1"));
        // Kad's 60 s default would keep a caller waiting; the proxy must answer within 2 s.
        kad_config.set_query_timeout(Duration::from_secs(2));
        kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
        let kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
        let identify = identify::Behaviour::new(identify::Config::new(
            format!("/fieldmesh/{}", crate::PROTOCOL_VERSION),
            key.public(),
        ));
        let ping = ping::Behaviour::new(
            ping::Config::new()
                .with_interval(config.ping_interval)
                .with_timeout(config.ping_timeout),
        );
        // The default 1 MiB request limit would refuse a single full-size voicemail.
        let codec = request_response::cbor::codec::Codec::default()
            .set_request_size_maximum(MAX_REQUEST_BYTES)
            .set_response_size_maximum(MAX_RESPONSE_BYTES);
        let sync = request_response::cbor::Behaviour::with_codec(
            codec,
            [(
                StreamProtocol::new("/fieldmesh/sync/1"),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
        );
        Ok(Behaviour {
            gossipsub,
            kad,
            identify,
            ping,
            sync,
        })
    }
}

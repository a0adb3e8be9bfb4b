//! Bad input from the overlay: a rogue peer gossips malformed, oversized, forged and absurd
//! records, then floods; our node refuses them, never crashes, and keeps the honest
//! appliance's binding.

use fieldmesh_mesh::{LocationRecord, Mesh, MeshConfig, MeshEvent, Multiaddr, PhoneRef, identity};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::swarm::SwarmEvent;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// A rogue speaks enough of the protocols to stay connected (an appliance that does not answer
/// pings is dropped at once), then abuses gossip.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct Rogue {
    gossipsub: gossipsub::Behaviour,
    ping: libp2p::ping::Behaviour,
}

/// Higher than any sequence A uses (epoch << 32 | counter), so only the author check stops it.
const FORGED_SEQ: u64 = 1 << 40;

fn honest(port: u64, n: u8) -> (Mesh, mpsc::Receiver<MeshEvent>) {
    let (tx, rx) = mpsc::channel(4096);
    let config = MeshConfig {
        keypair: identity::Keypair::generate_ed25519(),
        node_name: format!("node{n}"),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        sip: SocketAddr::from(([10, 99, 0, n], 5060)),
        mdns: None,
        ping_interval: Duration::from_millis(500),
        ping_timeout: Duration::from_secs(2),
        epoch: 1,
        replicas: 2,
        restore_after: Duration::from_secs(600),
        memory: Some(port),
    };
    (Mesh::spawn(config, tx).expect("overlay starts"), rx)
}

fn record(aor: &str, peer: &str, seq: u64, ttl: u32) -> Vec<u8> {
    let r = LocationRecord {
        aor: aor.into(),
        peer: peer.into(),
        node: "rogue".into(),
        sip: SocketAddr::from(([10, 99, 0, 66], 5060)),
        seq,
        ttl_secs: ttl,
        phones: vec![PhoneRef {
            call_id: format!("c{seq}"),
            cseq: 1,
            instance: None,
            age_secs: 0,
        }],
    };
    serde_json::to_vec(&r).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_peer_cannot_poison_the_table_or_evict_an_honest_binding() {
    let base = 46_000 + u64::from(std::process::id() % 1000) * 10;
    let (a, _a_events) = honest(base, 1);
    let (b, _b_events) = honest(base + 1, 2);
    b.dial(
        format!("/memory/{base}")
            .parse::<Multiaddr>()
            .expect("addr"),
    )
    .await;
    let key = identity::Keypair::generate_ed25519();
    let rogue_id = key.public().to_peer_id().to_base58();
    let mut rogue = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| {
            use libp2p::Transport;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                libp2p::core::transport::MemoryTransport::default()
                    .upgrade(libp2p::core::upgrade::Version::V1)
                    .authenticate(libp2p::noise::Config::new(key)?)
                    .multiplex(libp2p::yamux::Config::default())
                    .boxed(),
            )
        })
        .expect("transport")
        .with_behaviour(|key| {
            let config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(200))
                .max_transmit_size(1 << 20)
                .build()
                .expect("gossip config");
            Rogue {
                gossipsub: gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    config,
                )
                .expect("gossip"),
                ping: libp2p::ping::Behaviour::new(
                    libp2p::ping::Config::new().with_interval(Duration::from_millis(500)),
                ),
            }
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let topic = IdentTopic::new("fieldmesh/location/1");
    rogue
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .expect("subscribe");
    rogue
        .dial(
            format!("/memory/{}", base + 1)
                .parse::<Multiaddr>()
                .expect("addr"),
        )
        .expect("dial");
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.announce(
        "201".into(),
        vec![PhoneRef {
            call_id: "honest".into(),
            cseq: 1,
            instance: None,
            age_secs: 0,
        }],
        300,
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, rogue.select_next_some())
            .await
            .expect("rogue meshes with B");
        if matches!(
            event,
            SwarmEvent::Behaviour(RogueEvent::Gossipsub(gossipsub::Event::Subscribed { .. }))
        ) {
            break;
        }
    }
    let a_id = a.peer_id().to_base58();
    // The malformed, forged and absurd ones first, so they are sent however soon B cuts the
    // flood off; then the flood.
    let mut messages: Vec<Vec<u8>> = vec![
        b"{not json".to_vec(),
        record("201", &a_id, FORGED_SEQ, 300),
        record("666", &rogue_id, 1, 10_000_000),
        record("a b", &rogue_id, 2, 60),
        vec![b'x'; 40 * 1024],
    ];
    messages.extend((0..2_000u64).map(|i| record(&format!("9{i}"), &rogue_id, 10 + i, 60)));
    let mut published = 0;
    let mut last_error = String::new();
    let started = tokio::time::Instant::now();
    for (n, data) in messages.into_iter().enumerate() {
        if n % 100 == 0 {
            // Let the batch leave, briefly: a flood, not a trickle.
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(2), rogue.next()).await
            {}
        }
        match rogue.behaviour_mut().gossipsub.publish(topic.clone(), data) {
            Ok(_) => published += 1,
            Err(e) => last_error = format!("{e} after {published}"),
        }
    }
    let drain = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < drain {
        let _ = tokio::time::timeout(Duration::from_millis(20), rogue.next()).await;
    }
    let took = started.elapsed();
    // The flood either outran the burst allowance (then the rate limit below is what holds
    // it), or B cut the rogue off first (its rejections and pings), which ends the publishing
    // early: both are B defending itself; a flood that simply stopped is not.
    let cut_off = last_error.contains("NoPeersSubscribedToTopic");
    assert!(
        published > 500 || cut_off,
        "the rogue managed to publish {published}: {last_error}"
    );
    eprintln!(
        "rogue: {published} published{}",
        if cut_off { ", then B cut it off" } else { "" }
    );

    let status = b.status().await.expect("B still answers");
    let honest = status.records.iter().any(|(r, _)| {
        r.aor == "201" && r.peer == a_id && r.phones.iter().any(|p| p.call_id == "honest")
    });
    assert!(
        honest,
        "B lost A's record for 201: {:?} peers {:?}",
        status
            .records
            .iter()
            .filter(|(r, _)| r.aor == "201")
            .collect::<Vec<_>>(),
        status.peers
    );
    assert!(
        !status.records.iter().any(|(r, _)| r.seq == FORGED_SEQ),
        "a forged record got in"
    );
    assert!(
        !status
            .records
            .iter()
            .any(|(r, _)| r.aor == "666" || r.aor == "a b"),
        "a bad record got in"
    );
    let flood = status
        .records
        .iter()
        .filter(|(r, _)| r.peer == rogue_id)
        .count();
    eprintln!("rogue published {published} in {took:?}; B kept {flood} of its 2000 flood records");
    // A burst of 500, then 50 per second for as long as the flood lasted.
    let allowed = 500 + (took.as_secs_f64() * 50.0) as usize + 50;
    assert!(
        flood <= allowed,
        "rate limit: {flood} accepted, at most {allowed} expected"
    );
}

//! The overlay node: one task owns the libp2p `Swarm` and the location [`Table`]; the rest of
//! the appliance talks to it through a cloneable [`Mesh`] handle (commands with oneshot
//! replies, the shape of rust-libp2p's `examples/file-sharing/src/network.rs`) and hears from
//! it through bounded [`MeshEvent`]s.
//!
//! What travels: gossipsub carries each appliance's own records as they change; kad holds the
//! same records (one key per AOR and appliance) and provider entries per AOR so a newcomer can
//! look up what it missed; on every new connection the two sides exchange digests over
//! request-response and fetch the difference (gossip does not replay what a partition missed);
//! ping decides liveness quickly, because mDNS TTLs alone take 120 s to notice a dead appliance.

use crate::behaviour::{Behaviour, BehaviourEvent, REQUEST_TIMEOUT, SyncRequest, SyncResponse};
use crate::custody::{self, Custody, Inventory, distance};
use crate::discovery::{self, Discovered};
use crate::error::MeshError;
use crate::records::{LocationRecord, Merge, PhoneRef, Route, Table};
use crate::replicas::{self, Replica};
use crate::{PROTOCOL_VERSION, is_compatible};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::kad::{self, store::RecordStore};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, identify, identity, ping};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The gossip topic: one coarse topic for all location records (libp2p allows 100 by default).
const TOPIC: &str = "fieldmesh/location/1";
/// How long a lookup for an AOR nobody announced may take before we answer "nobody".
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(1500);
/// Nobody waits on a fetch in a call path, and a voicemail takes seconds over a slow link:
/// answers are collected until all are in, or for as long as a request may take.
const FETCH_TIMEOUT: Duration = REQUEST_TIMEOUT;
/// A peer may publish this many records per second on average (burst `RATE_BURST`); more are
/// rejected, which gossipsub counts against it.
const RATE_PER_SEC: f64 = 50.0;
const RATE_BURST: f64 = 500.0;

/// How the node runs.
pub struct MeshConfig {
    pub keypair: identity::Keypair,
    pub node_name: String,
    /// Overlay listen address (TCP).
    pub listen: SocketAddr,
    /// Our mesh-side SIP address, announced in every record.
    pub sip: SocketAddr,
    /// Our mesh-side IPv4 addresses and the interfaces mDNS runs on (one per mesh link; an
    /// appliance between two links has two); `None` disables mDNS (tests dial).
    pub mdns: Option<(Vec<Ipv4Addr>, Vec<String>)>,
    /// Liveness: ping every `ping_interval`; a peer silent for `ping_timeout` is down.
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Bumped at every start, so sequence numbers keep increasing across restarts.
    pub epoch: u64,
    /// Use the in-process memory transport at this port instead of TCP (tests).
    pub memory: Option<u64>,
    /// Replicas kept besides the accepting appliance's own copy of each stored item.
    pub replicas: usize,
    /// How long a holder may be silent before the others copy its items elsewhere.
    pub restore_after: Duration,
}

/// What the node tells the appliance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshEvent {
    /// Where requests for `aor` may go now (empty: nowhere); `known` if any appliance has
    /// announced it recently (a `480` rather than a `404`).
    Routes {
        aor: String,
        routes: Vec<Route>,
        known: bool,
    },
    /// These phones of ours registered more recently at another appliance: drop their bindings.
    Moved { aor: String, phones: Vec<PhoneRef> },
    /// A peer asks us to keep these replicas.
    Replicas { replicas: Vec<Replica> },
    /// A peer asks what we hold for `aor`: answer with [`Mesh::answer_fetch`] and `token`.
    FetchRequest { token: u64, aor: String },
    /// These replicas were delivered somewhere: forget them.
    Delivered { ids: Vec<String> },
    /// A holder of these items is gone for good: send them to `to` (peer ids) to keep the
    /// count (see [`custody`]).
    Restore { restores: Vec<custody::Restore> },
    /// A peer asks for this appliance's report (operator views): answer with
    /// [`Mesh::answer_status`] and `token`.
    StatusRequest { token: u64 },
}

/// One appliance's answer to a [`Mesh::survey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    pub peer_id: String,
    /// Its name as last heard (identify or its records); empty if never heard.
    pub node: String,
    /// Its report, or why there is none ("no answer within 2 s", "unreachable: ...").
    pub report: Result<String, String>,
}

/// The largest report accepted from a peer: a hostile one must not fill our memory.
pub const MAX_REPORT_BYTES: usize = 512 * 1024;

/// A neighbour as the status API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerInfo {
    pub peer_id: String,
    pub node: String,
    pub addrs: Vec<String>,
    pub version: u32,
    pub compatible: bool,
    pub connected: bool,
}

/// A snapshot for the status API.
#[derive(Debug, Clone)]
pub struct MeshStatus {
    pub peer_id: String,
    pub peers: Vec<PeerInfo>,
    /// Records learnt from other appliances, and whether their appliance is unreachable.
    pub records: Vec<(LocationRecord, bool)>,
}

enum Command {
    Announce {
        aor: String,
        phones: Vec<PhoneRef>,
        ttl_secs: u32,
    },
    Lookup {
        aor: String,
        reply: oneshot::Sender<Vec<Route>>,
    },
    Status {
        reply: oneshot::Sender<MeshStatus>,
    },
    Dial {
        addr: Multiaddr,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
    Replicate {
        replicas: Vec<Replica>,
        k: usize,
        also: Vec<String>,
        reply: oneshot::Sender<usize>,
    },
    Fetch {
        aor: String,
        reply: oneshot::Sender<Vec<Replica>>,
    },
    AnswerFetch {
        token: u64,
        replicas: Vec<Replica>,
    },
    Delivered {
        ids: Vec<String>,
    },
    Hold {
        held: Vec<(String, String)>,
        gone: Vec<String>,
    },
    Survey {
        wait: Duration,
        reply: oneshot::Sender<Vec<PeerReport>>,
    },
    AnswerStatus {
        token: u64,
        report: String,
    },
}

/// The handle the appliance keeps. Cloneable; every call is bounded.
#[derive(Clone)]
pub struct Mesh {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
}

impl Mesh {
    /// Starts the node; events arrive on `events`.
    pub fn spawn(config: MeshConfig, events: mpsc::Sender<MeshEvent>) -> Result<Mesh, MeshError> {
        let peer_id = config.keypair.public().to_peer_id();
        let swarm = build_swarm(&config)?;
        let (commands, rx) = mpsc::channel(256);
        let discovered = match &config.mdns {
            Some((ips, interfaces)) => Some(discovery::start(
                peer_id,
                &config.node_name,
                ips,
                config.listen.port(),
                config.sip.port(),
                interfaces,
            )?),
            None => None,
        };
        let node = Node::new(config, swarm, events);
        tokio::spawn(node.run(rx, discovered));
        Ok(Mesh { commands, peer_id })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Announces our record for `aor` (no phones: a tombstone). Never waits: if the node is
    /// backed up the announcement is dropped and anti-entropy repairs it on the next contact.
    pub fn announce(&self, aor: String, phones: Vec<PhoneRef>, ttl_secs: u32) {
        if self
            .commands
            .try_send(Command::Announce {
                aor,
                phones,
                ttl_secs,
            })
            .is_err()
        {
            tracing::warn!("overlay busy: announcement dropped");
        }
    }

    /// Where `aor` is served, asking the overlay when the table does not know (bounded).
    pub async fn lookup(&self, aor: String) -> Vec<Route> {
        self.ask(LOOKUP_TIMEOUT * 2, |reply| Command::Lookup { aor, reply })
            .await
            .unwrap_or_default()
    }

    pub async fn status(&self) -> Option<MeshStatus> {
        self.ask(Duration::from_secs(2), |reply| Command::Status { reply })
            .await
    }

    /// Sends `replicas` to up to `k` connected neighbours (those whose ids are closest to the
    /// first replica's id, so the same message lands on the same holders); returns how many
    /// took them.
    pub async fn replicate(&self, replicas: Vec<Replica>, k: usize) -> usize {
        self.replicate_to(replicas, k, Vec::new()).await
    }

    /// [`Mesh::replicate`], and also to the neighbours named in `also` (peer ids: where the
    /// replicas' extension is registered now, so that appliance can tell its phone).
    pub async fn replicate_to(&self, replicas: Vec<Replica>, k: usize, also: Vec<String>) -> usize {
        // Every request settles within its timeout, so waiting a little longer always gets
        // the count rather than a 0 for holders that did take a large voicemail.
        self.ask(REQUEST_TIMEOUT + Duration::from_secs(1), |reply| {
            Command::Replicate {
                replicas,
                k,
                also,
                reply,
            }
        })
        .await
        .unwrap_or(0)
    }

    /// What the neighbours hold for `aor` (bounded: whoever answers in time).
    pub async fn fetch(&self, aor: String) -> Vec<Replica> {
        self.ask(FETCH_TIMEOUT + Duration::from_secs(1), |reply| {
            Command::Fetch { aor, reply }
        })
        .await
        .unwrap_or_default()
    }

    /// Sends a command carrying a reply channel and waits at most `wait` for the answer; `None`
    /// if the node is gone or too slow.
    async fn ask<T>(
        &self,
        wait: Duration,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(command(reply)).await.ok()?;
        tokio::time::timeout(wait, rx).await.ok()?.ok()
    }

    /// Answers a [`MeshEvent::FetchRequest`].
    pub async fn answer_fetch(&self, token: u64, replicas: Vec<Replica>) {
        let _ = self
            .commands
            .send(Command::AnswerFetch { token, replicas })
            .await;
    }

    /// What this appliance keeps now ((id, AOR) pairs) and ids recently delivered or deleted,
    /// for the inventories swapped with neighbours. Never waits (the next call repeats it).
    pub fn hold(&self, held: Vec<(String, String)>, gone: Vec<String>) {
        let _ = self.commands.try_send(Command::Hold { held, gone });
    }

    /// Asks every appliance we know of (neighbours, and those whose records we hold) for its
    /// report, each at most `wait`; those that did not answer in time are listed with why.
    /// Nothing is collected centrally: every operator view asks afresh.
    pub async fn survey(&self, wait: Duration) -> Vec<PeerReport> {
        self.ask(wait + Duration::from_secs(1), |reply| Command::Survey {
            wait,
            reply,
        })
        .await
        .unwrap_or_default()
    }

    /// Answers a [`MeshEvent::StatusRequest`].
    pub async fn answer_status(&self, token: u64, report: String) {
        let _ = self
            .commands
            .send(Command::AnswerStatus { token, report })
            .await;
    }

    /// Tells every neighbour these replicas were delivered.
    pub async fn delivered(&self, ids: Vec<String>) {
        let _ = self.commands.send(Command::Delivered { ids }).await;
    }

    /// Stops the node: connections close, so neighbours withdraw our routes at once.
    pub async fn shutdown(&self) {
        let (done, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown { done }).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), rx).await;
        }
    }

    /// Dials an address explicitly (tests on the memory transport; a configured peer).
    pub async fn dial(&self, addr: Multiaddr) {
        let _ = self.commands.send(Command::Dial { addr }).await;
    }
}

fn build_swarm(config: &MeshConfig) -> Result<Swarm<Behaviour>, MeshError> {
    let builder = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone()).with_tokio();
    let mut swarm = if config.memory.is_some() {
        builder
            .with_other_transport(|key| {
                use libp2p::Transport;
                libp2p::core::transport::MemoryTransport::default()
                    .upgrade(libp2p::core::upgrade::Version::V1)
                    .authenticate(libp2p::noise::Config::new(key)?)
                    .multiplex(libp2p::yamux::Config::default())
                    .boxed()
                    .pipe_ok()
            })
            .map_err(|e| MeshError::Transport(e.to_string()))?
            .with_behaviour(|key| Behaviour::new(key, config))
            .map_err(|e| MeshError::Transport(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build()
    } else {
        builder
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .map_err(|e| MeshError::Transport(e.to_string()))?
            .with_behaviour(|key| Behaviour::new(key, config))
            .map_err(|e| MeshError::Transport(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build()
    };
    let listen: Multiaddr = match config.memory {
        Some(port) => Multiaddr::empty().with(Protocol::Memory(port)),
        None => Multiaddr::from(config.listen.ip()).with(Protocol::Tcp(config.listen.port())),
    };
    swarm
        .listen_on(listen)
        .map_err(|e| MeshError::Transport(e.to_string()))?;
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&IdentTopic::new(TOPIC))
        .map_err(|e| MeshError::Transport(e.to_string()))?;
    swarm.behaviour_mut().kad.set_mode(Some(kad::Mode::Server));
    Ok(swarm)
}

/// `Ok` wrapper so the transport closure reads as one expression.
trait PipeOk: Sized {
    fn pipe_ok(self) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self)
    }
}
impl<T> PipeOk for T {}

struct Peer {
    info: PeerInfo,
    /// Where mDNS says it listens (redialled after a partition heals).
    dial: Option<Multiaddr>,
    last_dial: Option<Instant>,
    /// Last sign of life (a ping answered, or the connection coming up).
    last_seen: Instant,
    bucket: (f64, Instant),
}

impl Peer {
    /// A neighbour we know nothing more about yet than its id.
    fn new(peer: PeerId, now: Instant, connected: bool) -> Peer {
        Peer {
            info: PeerInfo {
                peer_id: peer.to_base58(),
                node: String::new(),
                addrs: Vec::new(),
                version: PROTOCOL_VERSION,
                compatible: true,
                connected,
            },
            dial: None,
            last_dial: None,
            last_seen: now,
            bucket: (RATE_BURST, now),
        }
    }
}

struct PendingLookup {
    aor: String,
    reply: oneshot::Sender<Vec<Route>>,
    deadline: Instant,
    outstanding: HashSet<OutboundRequestId>,
}

struct Node {
    config: MeshConfig,
    swarm: Swarm<Behaviour>,
    events: mpsc::Sender<MeshEvent>,
    me: String,
    table: Table,
    /// Our own latest record per AOR (tombstones too, for a while).
    own: HashMap<String, (LocationRecord, Instant)>,
    seq: u64,
    peers: HashMap<PeerId, Peer>,
    /// Records waiting for a gossip peer (publishing before anyone subscribed loses them).
    unpublished: Vec<LocationRecord>,
    lookups: Vec<PendingLookup>,
    kad_lookups: HashMap<kad::QueryId, String>,
    /// Fetches we asked neighbours for: answers collected until all are in or time is up.
    fetches: Vec<PendingFetch>,
    /// Replication requests in flight: (request ids, how many acked, reply).
    replications: Vec<(HashSet<OutboundRequestId>, usize, oneshot::Sender<usize>)>,
    /// Fetch requests from neighbours waiting for the appliance's answer.
    answering: HashMap<u64, request_response::ResponseChannel<SyncResponse>>,
    /// Status requests from peers waiting for the appliance's report, dropped after a while
    /// if it never comes.
    reporting: HashMap<u64, (Instant, request_response::ResponseChannel<SyncResponse>)>,
    surveys: Vec<PendingSurvey>,
    next_token: u64,
    /// Who holds which of our items, to restore the count when a holder is gone.
    custody: Custody,
    /// Ids recently delivered or deleted here, told to neighbours with our inventory.
    gone: Vec<String>,
    next_inventory: Instant,
}

/// A survey waiting for its answers: one slot per appliance asked.
struct PendingSurvey {
    reply: oneshot::Sender<Vec<PeerReport>>,
    deadline: Instant,
    outstanding: HashMap<OutboundRequestId, PeerId>,
    answers: Vec<PeerReport>,
}

struct PendingFetch {
    reply: oneshot::Sender<Vec<Replica>>,
    deadline: Instant,
    outstanding: HashSet<OutboundRequestId>,
    found: Vec<Replica>,
}

impl Node {
    fn new(config: MeshConfig, swarm: Swarm<Behaviour>, events: mpsc::Sender<MeshEvent>) -> Node {
        let me = config.keypair.public().to_peer_id().to_base58();
        let seq = config.epoch << 32;
        let now = Instant::now();
        let custody = Custody::new(me.clone(), config.replicas, config.restore_after, now);
        Node {
            config,
            swarm,
            events,
            me,
            table: Table::default(),
            own: HashMap::new(),
            seq,
            peers: HashMap::new(),
            unpublished: Vec::new(),
            lookups: Vec::new(),
            kad_lookups: HashMap::new(),
            fetches: Vec::new(),
            replications: Vec::new(),
            answering: HashMap::new(),
            reporting: HashMap::new(),
            surveys: Vec::new(),
            next_token: 0,
            custody,
            gone: Vec::new(),
            next_inventory: now,
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut discovered: Option<mpsc::Receiver<Discovered>>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.handle_swarm(event).await,
                command = commands.recv() => match command {
                    Some(Command::Shutdown { done }) => {
                        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                        for p in peers {
                            let _ = self.swarm.disconnect_peer_id(p);
                        }
                        // Let the closes go out before the swarm is dropped.
                        let _ = tokio::time::timeout(Duration::from_millis(200), async {
                            while self.swarm.connected_peers().next().is_some() {
                                self.swarm.select_next_some().await;
                            }
                        }).await;
                        let _ = done.send(());
                        break;
                    }
                    Some(c) => self.handle_command(c).await,
                    None => break,
                },
                Some(d) = async { match discovered.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    self.handle_discovered(d);
                }
                _ = tick.tick() => self.handle_tick().await,
            }
        }
    }

    async fn handle_command(&mut self, command: Command) {
        match command {
            Command::Announce {
                aor,
                phones,
                ttl_secs,
            } => self.announce(aor, phones, ttl_secs),
            Command::Lookup { aor, reply } => {
                let now = Instant::now();
                let routes = self.table.routes(now, &aor, &self.me);
                if !routes.is_empty() || self.swarm.connected_peers().next().is_none() {
                    let _ = reply.send(routes);
                    return;
                }
                // A miss: ask every neighbour and the DHT, answer at the deadline at the latest.
                let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                let outstanding = connected
                    .into_iter()
                    .map(|p| {
                        self.swarm
                            .behaviour_mut()
                            .sync
                            .send_request(&p, SyncRequest::Lookup { aor: aor.clone() })
                    })
                    .collect();
                let q = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(provider_key(&aor));
                self.kad_lookups.insert(q, aor.clone());
                self.lookups.push(PendingLookup {
                    aor,
                    reply,
                    deadline: now + LOOKUP_TIMEOUT,
                    outstanding,
                });
            }
            Command::Status { reply } => {
                let now = Instant::now();
                let mut peers: Vec<PeerInfo> =
                    self.peers.values().map(|p| p.info.clone()).collect();
                peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
                let _ = reply.send(MeshStatus {
                    peer_id: self.me.clone(),
                    peers,
                    records: self.table.all(now),
                });
            }
            Command::Shutdown { .. } => {}
            Command::Replicate {
                replicas,
                k,
                also,
                reply,
            } => {
                let (replicas, left) = replicas::fit(replicas, replicas::MAX_REQUEST_BYTES);
                if left > 0 {
                    tracing::warn!(left, "replicas over the request limit not sent");
                }
                let mut peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                let target = replicas.first().map(|r| r.id.clone()).unwrap_or_default();
                // Closest by a stable distance, so retries and the k holders agree.
                peers.sort_by_key(|p| distance(&p.to_base58(), &target));
                let (mut chosen, rest): (Vec<PeerId>, Vec<PeerId>) = {
                    let mut chosen = peers.clone();
                    chosen.truncate(k);
                    (chosen, peers)
                };
                for p in rest {
                    if also.iter().any(|a| *a == p.to_base58()) && !chosen.contains(&p) {
                        chosen.push(p);
                    }
                }
                let peers = chosen;
                if peers.is_empty() {
                    let _ = reply.send(0);
                    return;
                }
                let ids = peers
                    .iter()
                    .map(|p| {
                        let request = SyncRequest::StoreReplicas {
                            replicas: replicas.clone(),
                        };
                        self.swarm.behaviour_mut().sync.send_request(p, request)
                    })
                    .collect();
                self.replications.push((ids, 0, reply));
            }
            Command::Fetch { aor, reply } => {
                let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                if peers.is_empty() {
                    let _ = reply.send(Vec::new());
                    return;
                }
                let outstanding = peers
                    .iter()
                    .map(|p| {
                        let request = SyncRequest::FetchReplicas { aor: aor.clone() };
                        self.swarm.behaviour_mut().sync.send_request(p, request)
                    })
                    .collect();
                self.fetches.push(PendingFetch {
                    reply,
                    deadline: Instant::now() + FETCH_TIMEOUT,
                    outstanding,
                    found: Vec::new(),
                });
            }
            Command::AnswerFetch { token, replicas } => {
                if let Some(channel) = self.answering.remove(&token) {
                    let (replicas, left) = replicas::fit(replicas, replicas::MAX_RESPONSE_BYTES);
                    if left > 0 {
                        tracing::warn!(left, "replicas over the response limit not sent");
                    }
                    let response = SyncResponse {
                        records: Vec::new(),
                        replicas,
                        inventory: None,
                        status: None,
                    };
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_response(channel, response);
                }
            }
            Command::Delivered { ids } => {
                let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
                for p in peers {
                    let request = SyncRequest::Delivered { ids: ids.clone() };
                    self.swarm.behaviour_mut().sync.send_request(&p, request);
                }
            }
            Command::Survey { wait, reply } => self.survey(wait, reply),
            Command::AnswerStatus { token, report } => {
                if let Some((_, channel)) = self.reporting.remove(&token) {
                    let response = SyncResponse {
                        records: Vec::new(),
                        replicas: Vec::new(),
                        inventory: None,
                        status: Some(report),
                    };
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_response(channel, response);
                }
            }
            Command::Hold { held, gone } => {
                self.custody.hold(held);
                self.gone = gone;
            }
            Command::Dial { addr } => {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    tracing::info!(%addr, error = %e, "dial failed");
                }
            }
        }
    }

    /// Our record for `aor` changed: gossip it, put it in the DHT, provide or stop providing.
    fn announce(&mut self, aor: String, phones: Vec<PhoneRef>, ttl_secs: u32) {
        self.seq += 1;
        let record = LocationRecord {
            aor: aor.clone(),
            peer: self.me.clone(),
            node: self.config.node_name.clone(),
            sip: self.config.sip,
            seq: self.seq,
            ttl_secs: if phones.is_empty() { 0 } else { ttl_secs },
            phones,
        };
        let now = Instant::now();
        let keep = if record.is_tombstone() {
            crate::records::TOMBSTONE_KEEP
        } else {
            Duration::from_secs(u64::from(ttl_secs))
        };
        self.own.insert(aor.clone(), (record.clone(), now + keep));
        self.publish(record.clone());
        let kad = &mut self.swarm.behaviour_mut().kad;
        let value = serde_json::to_vec(&record).expect("a record always serialises");
        let mut kad_record = kad::Record::new(record_key(&aor, &self.me), value);
        kad_record.expires = Some(now + keep);
        let _ = kad.put_record(kad_record, kad::Quorum::One);
        if record.is_tombstone() {
            kad.stop_providing(&provider_key(&aor));
        } else {
            let _ = kad.start_providing(provider_key(&aor));
        }
    }

    fn publish(&mut self, record: LocationRecord) {
        let bytes = serde_json::to_vec(&record).expect("a record always serialises");
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(IdentTopic::new(TOPIC), bytes)
        {
            Ok(_) => {}
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => self.unpublished.push(record),
            Err(e) => tracing::warn!(aor = %record.aor, error = %e, "gossip publish failed"),
        }
    }

    /// Merges one record from the overlay (already checked), and tells the appliance.
    async fn merge(&mut self, record: LocationRecord) -> bool {
        if record.peer == self.me {
            return false; // our own record coming back: ours is the authority
        }
        let now = Instant::now();
        let aor = record.aor.clone();
        let (peer, seq, phones) = (
            record.peer.clone(),
            record.seq,
            format!("{:?}", record.phones),
        );
        if self.table.merge(now, record) == Merge::Stale {
            return false;
        }
        tracing::debug!(aor = %aor, peer_id = %peer, seq, %phones, mine = ?self.own.get(&aor).map(|(r, _)| &r.phones), "record merged");
        self.emit_routes(&aor).await;
        if let Some((mine, _)) = self.own.get(&aor) {
            let moved = self.table.moved_away(now, &aor, &self.me, &mine.phones);
            if !moved.is_empty() {
                tracing::info!(aor = %aor, phones = moved.len(), "phone registered elsewhere since");
                let _ = self
                    .events
                    .send(MeshEvent::Moved { aor, phones: moved })
                    .await;
            }
        }
        true
    }

    async fn emit_routes(&mut self, aor: &str) {
        let routes = self.table.routes(Instant::now(), aor, &self.me);
        let known = self.table.knows(aor);
        let _ = self
            .events
            .send(MeshEvent::Routes {
                aor: aor.to_string(),
                routes,
                known,
            })
            .await;
    }

    async fn handle_tick(&mut self) {
        let now = Instant::now();
        for aor in self.table.expire(now) {
            self.emit_routes(&aor).await;
        }
        self.own.retain(|_, (_, until)| *until > now);
        if !self.unpublished.is_empty() && self.has_gossip_peer() {
            for record in std::mem::take(&mut self.unpublished) {
                self.publish(record);
            }
        }
        // Answer fetches whose time is up with what came.
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.fetches)
            .into_iter()
            .partition(|f| f.deadline <= now);
        self.fetches = waiting;
        for f in due {
            let _ = f.reply.send(dedup(f.found));
        }
        // Answer surveys whose time is up: the silent are named, not waited for.
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.surveys)
            .into_iter()
            .partition(|s| s.deadline <= now);
        self.surveys = waiting;
        for s in due {
            self.finish_survey(s);
        }
        self.reporting
            .retain(|_, (asked, _)| now.duration_since(*asked) < REQUEST_TIMEOUT);
        // Answer lookups whose time is up.
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.lookups)
            .into_iter()
            .partition(|l| l.deadline <= now);
        self.lookups = waiting;
        for l in due {
            let _ = l.reply.send(self.table.routes(now, &l.aor, &self.me));
        }
        // Liveness: libp2p-ping reports its first failure silently and the second only after a
        // new substream's negotiation times out (~15 s on a dead link), so keep our own clock:
        // a neighbour silent for one interval plus the timeout is gone.
        let silent_after = self.config.ping_interval + self.config.ping_timeout;
        let silent: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(id, p)| {
                p.info.connected
                    && now.duration_since(p.last_seen) > silent_after
                    && self.swarm.is_connected(id)
            })
            .map(|(id, _)| *id)
            .collect();
        for peer in silent {
            tracing::info!(peer_id = %peer, "neighbour silent, treating it as gone");
            self.mark_connected(peer, false).await;
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        // Redial appliances mDNS told us about that are not connected (a healed partition).
        let redial: Vec<Multiaddr> = self
            .peers
            .iter_mut()
            .filter(|(id, p)| {
                p.info.compatible
                    && !p.info.connected
                    && p.dial.is_some()
                    && p.last_dial
                        .is_none_or(|t| now.duration_since(t) > Duration::from_secs(2))
                    && !self.swarm.is_connected(id)
            })
            .filter_map(|(_, p)| {
                p.last_dial = Some(now);
                p.dial.clone()
            })
            .collect();
        for addr in redial {
            let _ = self.swarm.dial(addr);
        }
        if now >= self.next_inventory {
            self.next_inventory = now + custody::inventory_period(self.config.restore_after);
            self.swap_inventories(now).await;
        }
    }

    /// Sends our inventory to every connected neighbour (each answers with its own), and asks
    /// the appliance for the copies that restore a lost holder's items.
    async fn swap_inventories(&mut self, now: Instant) {
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        let names: Vec<String> = connected.iter().map(|p| p.to_base58()).collect();
        for name in &names {
            self.custody.alive(name, now);
        }
        let inventory = self.inventory();
        for p in &connected {
            let request = SyncRequest::Inventory {
                inventory: inventory.clone(),
            };
            self.swarm.behaviour_mut().sync.send_request(p, request);
        }
        let restores = self.custody.plan(now, &names);
        if !restores.is_empty() {
            let _ = self.events.send(MeshEvent::Restore { restores }).await;
        }
    }

    fn inventory(&self) -> Inventory {
        Inventory {
            held: self.custody.held_ids(),
            gone: self.gone.clone(),
        }
    }

    /// A neighbour's inventory: remember what it holds, forget what it says is gone.
    async fn heard_inventory(&mut self, peer: PeerId, inventory: Inventory) {
        let gone = self
            .custody
            .heard(&peer.to_base58(), inventory, Instant::now());
        if !gone.is_empty() {
            tracing::info!(peer_id = %peer, count = gone.len(), "items delivered elsewhere while we were apart");
            let _ = self.events.send(MeshEvent::Delivered { ids: gone }).await;
        }
    }

    fn has_gossip_peer(&self) -> bool {
        self.swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .any(|(_, topics)| !topics.is_empty())
    }

    fn handle_discovered(&mut self, d: Discovered) {
        let Discovered {
            peer,
            node,
            addr,
            port,
            version,
        } = d;
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        let compatible = is_compatible(version);
        if !compatible {
            tracing::warn!(peer_id = %peer, version, ours = PROTOCOL_VERSION, "neighbour speaks an incompatible protocol version");
        }
        let dial = Multiaddr::from(addr)
            .with(Protocol::Tcp(port))
            .with(Protocol::P2p(peer));
        let entry = self
            .peers
            .entry(peer)
            .or_insert_with(|| Peer::new(peer, Instant::now(), false));
        entry.info.node = node;
        entry.info.version = version;
        entry.info.compatible = compatible;
        entry.info.addrs = vec![addr.to_string()];
        entry.dial = Some(dial.clone());
        if compatible && !self.swarm.is_connected(&peer) {
            tracing::info!(peer_id = %peer, %addr, "neighbour discovered, dialling");
            entry.last_dial = Some(Instant::now());
            let _ = self.swarm.dial(dial);
        }
    }

    /// Token bucket per peer: `false` when `peer` publishes faster than we accept.
    fn allow(&mut self, peer: PeerId) -> bool {
        let now = Instant::now();
        let entry = self
            .peers
            .entry(peer)
            .or_insert_with(|| Peer::new(peer, now, true));
        let (tokens, at) = entry.bucket;
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * RATE_PER_SEC).min(RATE_BURST);
        if tokens < 1.0 {
            entry.bucket = (tokens, now);
            return false;
        }
        entry.bucket = (tokens - 1.0, now);
        true
    }

    async fn handle_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                let ip = addr.iter().find_map(|p| match p {
                    Protocol::Ip4(ip) => Some(ip.to_string()),
                    Protocol::Ip6(ip) => Some(ip.to_string()),
                    _ => None,
                });
                self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                if num_established.get() == 1 {
                    tracing::info!(peer_id = %peer_id, "overlay connection up");
                    self.mark_connected(peer_id, true).await;
                    // A neighbour that dialled us before we heard its announcement: its
                    // address is the connection's (the views and the clock need one).
                    if let (Some(p), Some(ip)) = (self.peers.get_mut(&peer_id), ip)
                        && p.info.addrs.is_empty()
                    {
                        p.info.addrs = vec![ip];
                    }
                    // Anti-entropy: tell the peer what we have; it sends what we lack.
                    let digest = self.digest();
                    self.swarm
                        .behaviour_mut()
                        .sync
                        .send_request(&peer_id, SyncRequest::Digest { digest });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                tracing::info!(peer_id = %peer_id, cause = ?cause, "overlay connection down");
                self.mark_connected(peer_id, false).await;
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let acceptance = self.handle_gossip(propagation_source, message).await;
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                ..
            })) => {
                for record in std::mem::take(&mut self.unpublished) {
                    self.publish(record);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Err(e),
                ..
            })) => {
                // One missed ping (ping_timeout) is enough: a silent appliance must stop
                // receiving calls within seconds. Its routes go now; closing the connection
                // over a dead link can take as long as TCP's retransmissions.
                tracing::info!(peer_id = %peer, error = %e, "ping failed, dropping the connection");
                self.mark_connected(peer, false).await;
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(_),
                ..
            })) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.last_seen = Instant::now();
                }
                // A link that came back before the connection was torn down.
                if self.peers.get(&peer).is_some_and(|p| !p.info.connected) {
                    self.mark_connected(peer, true).await;
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(event)) => self.handle_sync(event).await,
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.handle_kad(event).await,
            _ => {}
        }
    }

    async fn mark_connected(&mut self, peer: PeerId, connected: bool) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.info.connected = connected;
            if connected {
                p.last_seen = Instant::now();
            }
        } else if connected {
            self.peers
                .insert(peer, Peer::new(peer, Instant::now(), true));
        }
        for aor in self.table.set_suspended(&peer.to_base58(), !connected) {
            self.emit_routes(&aor).await;
        }
    }

    async fn handle_gossip(
        &mut self,
        source: PeerId,
        message: gossipsub::Message,
    ) -> MessageAcceptance {
        let author = message.source.map(|p| p.to_base58());
        if !self.allow(source) {
            tracing::warn!(peer_id = %source, "gossip rate limit exceeded");
            return MessageAcceptance::Reject;
        }
        let record: LocationRecord = match serde_json::from_slice(&message.data) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(peer_id = %source, error = %e, "malformed gossip record");
                return MessageAcceptance::Reject;
            }
        };
        if let Err(why) = record.check(author.as_deref()) {
            tracing::warn!(peer_id = %source, aor = %record.aor, why, "gossip record refused");
            return MessageAcceptance::Reject;
        }
        self.merge(record).await;
        MessageAcceptance::Accept
    }

    async fn handle_sync(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
        use request_response::{Event, Message};
        match event {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let now = Instant::now();
                let records = match request {
                    SyncRequest::StoreReplicas { replicas } => {
                        let good: Vec<Replica> = replicas
                            .into_iter()
                            .take(1000)
                            .filter(|r| match r.check() {
                                Ok(()) => true,
                                Err(why) => {
                                    tracing::warn!(peer_id = %peer, why, "replica refused");
                                    false
                                }
                            })
                            .collect();
                        let _ = self
                            .events
                            .send(MeshEvent::Replicas { replicas: good })
                            .await;
                        Vec::new()
                    }
                    SyncRequest::FetchReplicas { aor } => {
                        self.next_token += 1;
                        self.answering.insert(self.next_token, channel);
                        let event = MeshEvent::FetchRequest {
                            token: self.next_token,
                            aor,
                        };
                        let _ = self.events.send(event).await;
                        return;
                    }
                    SyncRequest::Status => {
                        self.next_token += 1;
                        self.reporting
                            .insert(self.next_token, (Instant::now(), channel));
                        let event = MeshEvent::StatusRequest {
                            token: self.next_token,
                        };
                        let _ = self.events.send(event).await;
                        return;
                    }
                    SyncRequest::Delivered { ids } => {
                        let ids: Vec<String> = ids.into_iter().take(10_000).collect();
                        let _ = self.events.send(MeshEvent::Delivered { ids }).await;
                        Vec::new()
                    }
                    SyncRequest::Inventory { inventory } => {
                        self.heard_inventory(peer, inventory).await;
                        let response = SyncResponse {
                            records: Vec::new(),
                            replicas: Vec::new(),
                            inventory: Some(self.inventory()),
                            status: None,
                        };
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .sync
                            .send_response(channel, response);
                        return;
                    }
                    SyncRequest::Digest { digest } => {
                        let mut records = self.table.newer_than(now, &digest);
                        let theirs: HashMap<(&str, &str), u64> = digest
                            .iter()
                            .map(|(a, p, s)| ((a.as_str(), p.as_str()), *s))
                            .collect();
                        records.extend(self.own_records(now).into_iter().filter(|r| {
                            theirs
                                .get(&(r.aor.as_str(), r.peer.as_str()))
                                .is_none_or(|s| *s < r.seq)
                        }));
                        records
                    }
                    SyncRequest::Lookup { aor } => {
                        let mut records = self.table.records_for(now, &aor);
                        records.extend(self.own_records(now).into_iter().filter(|r| r.aor == aor));
                        records
                    }
                };
                tracing::debug!(peer_id = %peer, count = records.len(), "sync answered");
                let _ = self.swarm.behaviour_mut().sync.send_response(
                    channel,
                    SyncResponse {
                        records,
                        replicas: Vec::new(),
                        inventory: None,
                        status: None,
                    },
                );
            }
            Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                let count = response.records.len();
                for record in response.records.into_iter().take(10_000) {
                    match record.check(None) {
                        Ok(()) => {
                            self.merge(record).await;
                        }
                        Err(why) => tracing::warn!(peer_id = %peer, why, "synced record refused"),
                    }
                }
                tracing::debug!(peer_id = %peer, count, "sync received");
                if let Some(inventory) = response.inventory {
                    self.heard_inventory(peer, inventory).await;
                }
                let report = match response.status {
                    Some(r) if r.len() <= MAX_REPORT_BYTES => Ok(r),
                    Some(r) => Err(format!("report too large ({} bytes)", r.len())),
                    None => Err("answered without a report (older version?)".to_string()),
                };
                self.survey_answered(request_id, report);
                self.replica_settled(request_id, Some(response.replicas));
                self.lookup_answered(request_id);
            }
            Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            } => {
                tracing::debug!(peer_id = %peer, error = %error, "sync request failed");
                self.survey_answered(request_id, Err(format!("unreachable: {error}")));
                self.replica_settled(request_id, None);
                self.lookup_answered(request_id);
            }
            _ => {}
        }
    }

    /// A replication or fetch request settled: `Some` with what came back, `None` if it
    /// failed (counted as answered with nothing, so no caller waits for a dead neighbour).
    fn replica_settled(&mut self, id: OutboundRequestId, answer: Option<Vec<Replica>>) {
        if let Some(i) = self
            .replications
            .iter()
            .position(|(ids, _, _)| ids.contains(&id))
        {
            let (ids, acked, _) = &mut self.replications[i];
            ids.remove(&id);
            *acked += usize::from(answer.is_some());
            if ids.is_empty() {
                let (_, acked, reply) = self.replications.swap_remove(i);
                let _ = reply.send(acked);
            }
        }
        if let Some(i) = self
            .fetches
            .iter()
            .position(|f| f.outstanding.contains(&id))
        {
            let f = &mut self.fetches[i];
            f.outstanding.remove(&id);
            f.found.extend(
                answer
                    .unwrap_or_default()
                    .into_iter()
                    .take(1000)
                    .filter(|r| r.check().is_ok()),
            );
            if f.outstanding.is_empty() {
                let f = self.fetches.swap_remove(i);
                let _ = f.reply.send(dedup(f.found));
            }
        }
    }

    /// Sends a status request to every appliance we know of: neighbours (connected or not:
    /// a gone one must show as unreachable, not vanish) and those whose records we hold.
    fn survey(&mut self, wait: Duration, reply: oneshot::Sender<Vec<PeerReport>>) {
        let now = Instant::now();
        let mut targets: HashMap<PeerId, String> = self
            .peers
            .iter()
            .map(|(id, p)| (*id, p.info.node.clone()))
            .collect();
        for (record, _) in self.table.all(now) {
            if let Ok(id) = record.peer.parse::<PeerId>() {
                targets.entry(id).or_insert(record.node);
            }
        }
        targets.remove(self.swarm.local_peer_id());
        let mut survey = PendingSurvey {
            reply,
            deadline: now + wait,
            outstanding: HashMap::new(),
            answers: Vec::new(),
        };
        for (id, node) in targets {
            if !self.swarm.is_connected(&id)
                && self.peers.get(&id).is_some_and(|p| p.dial.is_none())
            {
                // Known only as a disconnected neighbour with nowhere to dial: say so now
                // rather than after the deadline.
                survey.answers.push(PeerReport {
                    peer_id: id.to_base58(),
                    node,
                    report: Err("unreachable: not connected".to_string()),
                });
                continue;
            }
            let request = self
                .swarm
                .behaviour_mut()
                .sync
                .send_request(&id, SyncRequest::Status);
            survey.outstanding.insert(request, id);
            survey.answers.push(PeerReport {
                peer_id: id.to_base58(),
                node,
                report: Err(format!("no answer within {} ms", wait.as_millis())),
            });
        }
        if survey.outstanding.is_empty() {
            self.finish_survey(survey);
        } else {
            self.surveys.push(survey);
        }
    }

    /// A status request settled: record the answer, and reply once all are in.
    fn survey_answered(&mut self, id: OutboundRequestId, report: Result<String, String>) {
        let Some(i) = self
            .surveys
            .iter()
            .position(|s| s.outstanding.contains_key(&id))
        else {
            return;
        };
        let s = &mut self.surveys[i];
        if let Some(peer) = s.outstanding.remove(&id) {
            let peer = peer.to_base58();
            if let Some(slot) = s.answers.iter_mut().find(|a| a.peer_id == peer) {
                slot.report = report;
            }
        }
        if s.outstanding.is_empty() {
            let s = self.surveys.swap_remove(i);
            self.finish_survey(s);
        }
    }

    fn finish_survey(&self, mut survey: PendingSurvey) {
        for a in &mut survey.answers {
            if a.node.is_empty()
                && let Ok(id) = a.peer_id.parse::<PeerId>()
                && let Some(p) = self.peers.get(&id)
            {
                a.node = p.info.node.clone();
            }
        }
        survey
            .answers
            .sort_by(|a, b| a.node.cmp(&b.node).then(a.peer_id.cmp(&b.peer_id)));
        let _ = survey.reply.send(survey.answers);
    }

    /// A lookup's request was answered (or failed): answer the lookup once all are in.
    fn lookup_answered(&mut self, id: OutboundRequestId) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.lookups.len() {
            let l = &mut self.lookups[i];
            if l.outstanding.remove(&id) && l.outstanding.is_empty() {
                let l = self.lookups.swap_remove(i);
                let routes = self.table.routes(now, &l.aor, &self.me);
                let _ = l.reply.send(routes);
                continue;
            }
            i += 1;
        }
    }

    async fn handle_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => {
                // Filtered inserts: an old replica must not overwrite a tombstone, and an
                // appliance may only store records about itself.
                let Ok(parsed) = serde_json::from_slice::<LocationRecord>(&record.value) else {
                    tracing::warn!(peer_id = %source, "malformed kad record");
                    return;
                };
                let publisher = record.publisher.map(|p| p.to_base58());
                if let Err(why) = parsed.check(publisher.as_deref().or(Some(&source.to_base58()))) {
                    tracing::warn!(peer_id = %source, why, "kad record refused");
                    return;
                }
                if record.key != record_key(&parsed.aor, &parsed.peer) {
                    tracing::warn!(peer_id = %source, "kad record under the wrong key");
                    return;
                }
                if self.merge(parsed).await {
                    let _ = self.swarm.behaviour_mut().kad.store_mut().put(record);
                }
            }
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::AddProvider {
                        record: Some(provider),
                    },
            } => {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .add_provider(provider);
            }
            kad::Event::OutboundQueryProgressed { id, result, .. } => match result {
                kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                    providers,
                    ..
                })) => {
                    if let Some(aor) = self.kad_lookups.get(&id).cloned() {
                        for p in providers {
                            let q = self
                                .swarm
                                .behaviour_mut()
                                .kad
                                .get_record(record_key(&aor, &p.to_base58()));
                            self.kad_lookups.insert(q, aor.clone());
                        }
                    }
                }
                kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) => {
                    if let Ok(parsed) =
                        serde_json::from_slice::<LocationRecord>(&found.record.value)
                    {
                        let publisher = found.record.publisher.map(|p| p.to_base58());
                        if parsed.check(publisher.as_deref()).is_ok() {
                            self.merge(parsed).await;
                        }
                    }
                }
                kad::QueryResult::GetProviders(Err(_)) | kad::QueryResult::GetRecord(Err(_)) => {
                    self.kad_lookups.remove(&id);
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn digest(&self) -> Vec<(String, String, u64)> {
        let mut d = self.table.digest();
        d.extend(
            self.own
                .values()
                .map(|(r, _)| (r.aor.clone(), r.peer.clone(), r.seq)),
        );
        d
    }

    /// Our own records as of now (lifetimes re-aged).
    fn own_records(&self, now: Instant) -> Vec<LocationRecord> {
        self.own
            .values()
            .filter(|(_, until)| *until > now)
            .map(|(r, until)| {
                let mut r = r.clone();
                if !r.is_tombstone() {
                    r.ttl_secs = until.saturating_duration_since(now).as_secs() as u32;
                }
                r
            })
            .collect()
    }
}

/// Replicas once each, by id, in the order first seen.
fn dedup(replicas: Vec<Replica>) -> Vec<Replica> {
    let mut seen = HashSet::new();
    replicas
        .into_iter()
        .filter(|r| seen.insert(r.id.clone()))
        .collect()
}

/// One kad key per (AOR, appliance), so two appliances serving one AOR never collide.
fn record_key(aor: &str, peer: &str) -> kad::RecordKey {
    kad::RecordKey::new(&format!("/fieldmesh/loc/{aor}/{peer}"))
}

/// The provider key per AOR: who serves it, to look up a record key we do not know yet.
fn provider_key(aor: &str) -> kad::RecordKey {
    kad::RecordKey::new(&format!("/fieldmesh/aor/{aor}"))
}

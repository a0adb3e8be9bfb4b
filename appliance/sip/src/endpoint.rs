//! The SIP endpoint: the one machine the daemon's SIP driver talks to. It owns the transaction
//! tables, the location service, the proxy's response contexts and the timer queue.
//!
//! Drive it like quinn-proto's `Endpoint`: after every [`Endpoint::handle_input`], drain
//! [`Endpoint::poll_output`] until it returns `None`, then sleep until
//! [`Endpoint::poll_timeout`] and feed [`Input::Timeout`].

use crate::dialog::AnchoredCall;
use crate::location::{Aor, Binding, BindingRecord, Location, RemoteRoute, Target};
use crate::media::{self, Media, Toward};
use crate::message::ContactList;
use crate::message::{self, Message, Method, ParseError, Request, Response};
use crate::messaging::{DeliveryNotice, MessagingConfig, StoredMessage, WebText};
use crate::mwi::{self, Subscription, Subscriptions};
use crate::proxy::{self, Context, Decision, Us};
use crate::proxy::{
    cancel_for, mark_received, pop_via, prepare_forward, request_branch, stable_hash,
    upstream_target,
};
use crate::registrar::{self, RegistrarConfig};
use crate::reject::Reject;
use crate::response::{build_response, echo_of, echo_response};
use crate::storage::Storage;
use crate::transaction::client::ClientTransaction;
use crate::transaction::client_invite::ClientInviteTransaction;
use crate::transaction::server::ServerTransaction;
use crate::transaction::server_invite::ServerInviteTransaction;
use crate::transaction::{self, Intervals, Step, Timer, TuEvent};
use crate::voicemail::{self, MailboxAction, StoredVoicemail, VoicemailConfig};
use crate::{ALLOW, Transport};
use bytes::Bytes;
use ezk_sip_types::Name;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How the endpoint behaves; every field has the default the README documents.
#[derive(Clone, Debug)]
pub struct Config {
    pub intervals: Intervals,
    pub registrar: RegistrarConfig,
    /// How long an INVITE may ring before the caller gets `480` and the branches are CANCELled.
    pub no_answer: Duration,
    /// Larger messages get `513` (requests) or are dropped (responses).
    pub max_message_bytes: usize,
    /// Names that mean this appliance in a Request-URI or Route (its addresses always do).
    pub domains: Vec<String>,
    /// Addresses we listen on; with packets' arrival addresses they decide what "us" is.
    pub listen: Vec<SocketAddr>,
    /// `Server` header value.
    pub server: String,
    /// Seed for tags and branches, so tests are reproducible.
    pub rng_seed: u64,
    /// The mesh side, when this appliance is part of an overlay.
    pub mesh: Option<MeshSide>,
    /// Store-and-forward for MESSAGE.
    pub messaging: MessagingConfig,
    /// The echo test number (`*43`): answered by the appliance, which plays back what it
    /// hears. `None` turns the service off. Needs a [`Media`] (see [`Endpoint::set_media`]).
    pub echo: Option<String>,
    /// Voicemail for unreachable, busy and unanswered calls, and the mailbox number.
    pub voicemail: VoicemailConfig,
}

/// How the endpoint reaches other appliances.
#[derive(Clone, Debug)]
pub struct MeshSide {
    /// Our mesh-side SIP address: requests to other appliances leave from it and it is what
    /// they Record-Route back to (never a phone-side address, which every appliance shares).
    pub local: SocketAddr,
    /// A branch to another appliance that hears nothing back in this time is given up with
    /// `480`: a caller learns within seconds, not after Timer B's 32 s, that it is gone.
    pub peer_timeout: Duration,
    /// How long a request waits for the overlay to answer a lookup.
    pub lookup_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            intervals: Intervals::default(),
            registrar: RegistrarConfig::default(),
            no_answer: Duration::from_secs(25),
            max_message_bytes: 65536,
            domains: Vec::new(),
            listen: Vec::new(),
            server: concat!("fieldmesh/", env!("CARGO_PKG_VERSION")).to_string(),
            rng_seed: 0,
            mesh: None,
            messaging: MessagingConfig::default(),
            echo: Some("*43".to_string()),
            voicemail: VoicemailConfig::default(),
        }
    }
}

/// One message from the network, or for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub transport: Transport,
    /// Our address: where it arrived (IP_PKTINFO) or where it must leave from.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// One whole SIP message (stream transports are framed by the driver).
    pub bytes: Bytes,
}

/// What the endpoint is fed.
#[derive(Debug)]
pub enum Input {
    Datagram(Datagram),
    /// A stream message whose declared size is over the limit: `bytes` is its head only (the
    /// driver skips the body). Requests get `513`.
    Oversized(Datagram),
    /// The deadline from [`Endpoint::poll_timeout`] passed.
    Timeout,
    /// Something from the daemon: overlay news and answers.
    Command(Command),
}

/// What the daemon tells the endpoint (answers carry the id of the event that asked).
#[derive(Debug)]
pub enum Command {
    /// The overlay's routes for `aor` changed; `known` if any appliance announced it recently.
    RemoteRoutes {
        aor: String,
        routes: Vec<RemoteRoute>,
        known: bool,
    },
    /// These phones registered more recently at another appliance: drop their bindings here.
    PhonesMoved {
        aor: String,
        call_ids: Vec<String>,
        instances: Vec<String>,
    },
    /// The answer to [`Event::Lookup`] `id`.
    LookupResult { id: u64, routes: Vec<RemoteRoute> },
    /// Messages and voicemails another appliance holds for extensions (replicas, or fetched
    /// for a phone that just registered here): keep them, deliver messages to phones
    /// registered here and tell them about new voicemail.
    StoreReplicas {
        messages: Vec<StoredMessage>,
        voicemails: Vec<StoredVoicemail>,
    },
    /// These messages were delivered (or voicemails deleted) somewhere: forget them.
    ForgetMessages { ids: Vec<String> },
    /// The relay finished recording a voicemail left on this appliance: keep it.
    VoicemailRecorded { voicemail: StoredVoicemail },
    /// The owner of a mailbox pressed a key while listening to it.
    Mailbox { action: MailboxAction },
    /// The overlay came up (the mesh interface got its address): this is our mesh side.
    MeshUp { side: MeshSide },
    /// End a call from the middle: BYE to both sides of an anchored call whose media timed
    /// out, or to the caller of a voicemail recording that reached its maximum length.
    EndCall { call_id: String },
    /// Tell a stored message's sender it was delivered (from [`Event::MessageDelivered`]):
    /// `at` is the local time for people ("14:02"), `datetime` the same in RFC 3339.
    SendNotice {
        notice: DeliveryNotice,
        at: String,
        datetime: String,
    },
    /// Send a text typed on the web page; its outcome comes back as [`Event::TextAnswered`]
    /// with `token`.
    SendText { token: u64, text: WebText },
}

/// What the endpoint asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    Transmit(Datagram),
    Event(Event),
}

/// Things the daemon may want to know (and later issues announce to the overlay).
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The bindings of `aor` changed (registered, refreshed, removed or expired).
    BindingsChanged { aor: Aor },
    /// Where is `aor` served? Answer with [`Command::LookupResult`] carrying `id`.
    Lookup { id: u64, aor: Aor },
    /// A message was stored (durably) and acknowledged with `202`: replicate it.
    MessageStored { message: StoredMessage },
    /// A stored message reached a phone (2xx) and left the store. With a `notice`, its sender
    /// may be told: answer with [`Command::SendNotice`] (the daemon knows the time of day).
    MessageDelivered {
        id: String,
        aor: Aor,
        notice: Option<DeliveryNotice>,
    },
    /// A voicemail was recorded and stored durably: replicate it, also to `peers` (the
    /// appliances where its extension is registered now, so they can tell the phone).
    VoicemailStored {
        voicemail: StoredVoicemail,
        peers: Vec<String>,
    },
    /// Its owner deleted a voicemail: forget every copy.
    VoicemailDeleted { id: String, aor: Aor },
    /// The final answer to a [`Command::SendText`]: 200 (a phone took it), 202 (stored for
    /// later), or why not (404, 480, 503...).
    TextAnswered {
        token: u64,
        status: u16,
        reason: String,
    },
}

#[derive(Debug)]
enum ServerMachine {
    Invite(ServerInviteTransaction),
    Plain(ServerTransaction),
}

#[derive(Debug)]
struct ServerEntry {
    machine: ServerMachine,
    /// A request the appliance made itself: its responses go nowhere, and for a web text
    /// (`Some(token)` with token ≠ 0) the final one becomes [`Event::TextAnswered`].
    own: Option<u64>,
    key: String,
    reply: Target,
    request: Request,
    to_tag: String,
}

#[derive(Debug)]
enum ClientMachine {
    Invite(ClientInviteTransaction),
    Plain(ClientTransaction),
}

#[derive(Debug)]
struct ClientEntry {
    machine: ClientMachine,
    key: String,
    target: Target,
    /// The response context and branch index this transaction serves; `None` for CANCELs.
    branch: Option<(u64, usize)>,
    /// Whether anything came back yet (a branch to a silent appliance is given up early).
    heard: bool,
    /// A stored message this transaction delivers: (extension, message id).
    delivery: Option<(Aor, String)>,
    /// The branch crosses the appliance (phone side ↔ mesh side): SDP in its responses is
    /// anchored towards this side.
    crossing: Option<Toward>,
}

impl ClientEntry {
    fn request(&self) -> &Request {
        match &self.machine {
            ClientMachine::Invite(m) => &m.request,
            ClientMachine::Plain(m) => &m.request,
        }
    }
}

/// Where one branch of a forwarded request goes.
enum Hop {
    /// A phone of ours: the Request-URI becomes its contact.
    Contact(String, Target),
    /// Another appliance that serves the AOR.
    Peer(RemoteRoute),
    /// A next hop with the Request-URI unchanged (in-dialog).
    Same(Target),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Server(u64, Timer),
    Client(u64, Timer),
    NoAnswer(u64),
    /// A branch to another appliance has heard nothing (client id).
    PeerSilent(u64),
    /// A parked request waited long enough for the overlay (server id).
    LookupExpired(u64),
    /// A forwarded MESSAGE got no final answer in time: store it (server id).
    MessageDeadline(u64),
    Sweep,
}

/// At most this many anchored calls are remembered for ending them (more than any relay
/// holds).
const MAX_ANCHORED: usize = 10_000;

/// How often expired bindings are swept from memory and disk.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The SIP core: registrar, location service and stateful proxy.
pub struct Endpoint<S: Storage> {
    config: Config,
    rng: SmallRng,
    storage: S,
    location: Location,
    servers: HashMap<u64, ServerEntry>,
    server_keys: HashMap<String, u64>,
    clients: HashMap<u64, ClientEntry>,
    client_keys: HashMap<String, u64>,
    contexts: HashMap<u64, Context>,
    timers: BTreeSet<(Instant, TimerRef)>,
    outputs: VecDeque<Output>,
    addrs: HashSet<SocketAddr>,
    next_id: u64,
    /// Requests parked while the overlay looks their AOR up (server id → AOR).
    lookups: HashMap<u64, Aor>,
    /// Mesh-side IP addresses of other appliances, as the overlay reported them: requests
    /// relayed there leave from our mesh address. Bounded by the number of appliances.
    peer_ips: HashSet<std::net::IpAddr>,
    /// MESSAGEs stored after their phone was too slow (server id → message id): a late 2xx
    /// marks them delivered instead of delivering them twice.
    stored_late: HashMap<u64, (Aor, StoredMessage)>,
    /// Deliveries in progress: per extension, the message in flight and how many of its
    /// branches are still out.
    deliveries: HashMap<Aor, Delivery>,
    /// The media relay, when the daemon has one: SDP that crosses the appliance goes through it.
    media: Option<Box<dyn Media + Send>>,
    /// Calls the appliance answered itself (echo, voicemail recording, mailbox), by Call-ID;
    /// bounded by the relay's calls.
    served: HashMap<String, Served>,
    /// Phones subscribed to their mailbox (RFC 3842).
    subscriptions: Subscriptions,
    /// Established calls whose media we anchor, so we can end them (Call-ID → both sides).
    anchored: HashMap<String, AnchoredCall>,
}

/// Saves each replica; returns the distinct extensions of those kept (a failed write is logged
/// and skipped: the other holders still have it).
fn keep_each<T>(
    items: Vec<T>,
    aor_of: impl Fn(&T) -> &String,
    mut save: impl FnMut(&T) -> Result<(), crate::storage::StorageError>,
) -> Vec<Aor> {
    let mut aors: Vec<Aor> = Vec::new();
    for item in &items {
        let aor = aor_of(item);
        if let Err(e) = save(item) {
            tracing::warn!(aor = %aor, error = %e, "replica not stored");
            continue;
        }
        if !aors.iter().any(|a| a.0 == *aor) {
            aors.push(Aor(aor.clone()));
        }
    }
    aors
}

/// What the appliance itself answers a call with.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Service {
    Echo,
    /// A voicemail for this extension.
    Record(Aor),
    /// This extension's own mailbox.
    Mailbox(Aor),
}

/// A call the appliance answered itself.
#[derive(Debug)]
struct Served {
    /// Our To tag: in-dialog requests carry it.
    tag: String,
    service: Service,
    /// The caller, for the BYE when we end the call.
    caller: Option<crate::dialog::Side>,
}

/// At most this many calls answered by the appliance itself.
const MAX_SERVED: usize = 4096;

/// One stored message being delivered to the phones of its extension.
#[derive(Debug)]
struct Delivery {
    id: String,
    notice: Option<DeliveryNotice>,
    outstanding: usize,
    delivered: bool,
}

impl<S: Storage> Endpoint<S> {
    pub fn new(now: Instant, config: Config, storage: S) -> Self {
        let mut timers = BTreeSet::new();
        timers.insert((now + SWEEP_EVERY, TimerRef::Sweep));
        Endpoint {
            rng: SmallRng::seed_from_u64(config.rng_seed),
            addrs: config
                .listen
                .iter()
                .copied()
                .chain(config.mesh.as_ref().map(|m| m.local))
                .collect(),
            config,
            storage,
            location: Location::default(),
            servers: HashMap::new(),
            server_keys: HashMap::new(),
            clients: HashMap::new(),
            client_keys: HashMap::new(),
            contexts: HashMap::new(),
            timers,
            outputs: VecDeque::new(),
            next_id: 1,
            lookups: HashMap::new(),
            peer_ips: HashSet::new(),
            stored_late: HashMap::new(),
            deliveries: HashMap::new(),
            media: None,
            served: HashMap::new(),
            subscriptions: Subscriptions::default(),
            anchored: HashMap::new(),
        }
    }

    /// Anchors media of calls that cross the appliance (and serves the echo number) from now on.
    pub fn set_media(&mut self, media: Box<dyn Media + Send>) {
        self.media = Some(media);
    }

    /// Puts back bindings and known extensions read from durable storage at start.
    /// `known` is (extension, how much longer it stays known).
    pub fn restore(
        &mut self,
        now: Instant,
        bindings: Vec<BindingRecord>,
        known: Vec<(String, Duration)>,
    ) {
        for (aor, left) in known {
            self.location.remember(Aor(aor), now + left);
        }
        let mut by_aor: HashMap<String, Vec<Binding>> = HashMap::new();
        for record in bindings.into_iter().filter(|r| !r.expires_in.is_zero()) {
            by_aor
                .entry(record.aor.clone())
                .or_default()
                .push(record.into_binding(now));
        }
        for (aor, list) in by_aor {
            let aor = Aor(aor);
            self.location
                .set(&aor, list, now + self.config.registrar.known_for);
        }
    }

    /// Live bindings, for the status API.
    pub fn bindings(&self, now: Instant) -> Vec<&Binding> {
        self.location.all(now).collect()
    }

    /// Transactions and contexts in flight (for status and leak checks in tests).
    pub fn in_flight(&self) -> (usize, usize, usize) {
        (self.servers.len(), self.clients.len(), self.contexts.len())
    }

    /// The durable store, for the daemon's shutdown and tests.
    pub fn storage(&mut self) -> &mut S {
        &mut self.storage
    }

    /// Feeds one input. Afterwards drain [`Endpoint::poll_output`].
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Datagram(d) => self.handle_datagram(now, d),
            Input::Oversized(d) => {
                tracing::warn!(remote = %d.remote, "oversized stream message");
                if let Some(echo) = echo_of(&d.bytes).filter(|_| !d.bytes.starts_with(b"ACK ")) {
                    let (code, reason) = Reject::TooLarge.status();
                    let target = Target {
                        transport: d.transport,
                        local: d.local,
                        remote: d.remote,
                    };
                    self.transmit(
                        target,
                        echo_response(&echo, code, reason, &self.config.server),
                    );
                }
            }
            Input::Timeout => self.handle_timeout(now),
            Input::Command(command) => self.handle_command(now, command),
        }
    }

    /// The next thing to do; call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest deadline; when it passes, feed [`Input::Timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    fn handle_datagram(&mut self, now: Instant, d: Datagram) {
        // The arrival address is ours (IP_PKTINFO): remember it so Route and Request-URI checks
        // recognise it. Bounded by the machine's own addresses.
        if self.addrs.len() < 256 {
            self.addrs.insert(d.local);
        }
        let arrival = Target {
            transport: d.transport,
            local: d.local,
            remote: d.remote,
        };
        let too_large = d.bytes.len() > self.config.max_message_bytes;
        match message::parse(&d.bytes, d.transport == Transport::Tcp) {
            Ok(Message::Request(_)) | Err(ParseError::Request { .. }) if too_large => {
                tracing::warn!(remote = %d.remote, len = d.bytes.len(), "message too large");
                if let Some(echo) = echo_of(&d.bytes) {
                    let (code, reason) = Reject::TooLarge.status();
                    self.transmit(
                        arrival,
                        echo_response(&echo, code, reason, &self.config.server),
                    );
                }
            }
            Ok(Message::Request(request)) => self.handle_request(now, request, arrival),
            Ok(Message::Response(_)) if too_large => {
                tracing::warn!(remote = %d.remote, len = d.bytes.len(), "response too large, dropped");
            }
            Ok(Message::Response(response)) => self.handle_response(now, response),
            Err(ParseError::Request {
                status,
                reason,
                echo,
            }) => {
                // Debug, not info: a flood of garbage must not become a flood of log lines.
                tracing::debug!(remote = %d.remote, status, %reason, "malformed request");
                // ACK is never answered (RFC 3261 §17.2.3).
                if let (Some(echo), false) = (echo, d.bytes.starts_with(b"ACK ")) {
                    self.transmit(
                        arrival,
                        echo_response(&echo, status, &reason, &self.config.server),
                    );
                }
            }
            Err(ParseError::Response(why)) => {
                tracing::info!(remote = %d.remote, %why, "malformed response dropped");
            }
            Err(ParseError::NotSip(why)) => {
                tracing::debug!(remote = %d.remote, why, "not SIP, dropped")
            }
        }
    }

    fn handle_request(&mut self, now: Instant, mut request: Request, arrival: Target) {
        mark_received(&mut request, arrival.remote);
        // A request another appliance relayed to us names that appliance's mesh address.
        if self.config.mesh.is_some()
            && request.uri.uri_params.get(proxy::PEER_PARAM).is_some()
            && self.peer_ips.len() < 4096
        {
            self.peer_ips.insert(arrival.remote.ip());
        }
        let span = tracing::info_span!("request", call_id = %request.common.call_id, method = %request.method);
        let _enter = span.enter();
        if request.method.is(Method::ACK) {
            return self.handle_ack(now, request, arrival);
        }
        if request.method.is(Method::CANCEL) {
            return self.handle_cancel(now, request, arrival);
        }
        let key = transaction::server_key(&request, request.method.as_str());
        if let Some(id) = self.server_keys.get(&key).copied() {
            let step = match &mut self
                .servers
                .get_mut(&id)
                .expect("keys and entries move together")
                .machine
            {
                ServerMachine::Invite(m) => m.handle_retransmission(),
                ServerMachine::Plain(m) => m.handle_retransmission(),
            };
            return self.apply_server_step(now, id, step);
        }
        let id = self.new_server(now, request, arrival, key);
        let request = &self.servers[&id].request;
        if request.method.is(Method::INVITE) {
            // §16.2: a stateful proxy answers INVITE with 100 at once to stop retransmissions.
            self.answer(now, id, 100, "Trying", &[], None);
        }
        self.dispatch(now, id);
    }

    /// Routes a new request (its server transaction `id` exists) and carries the decision out.
    fn dispatch(&mut self, now: Instant, id: u64) {
        if let Some(service) = self.service_for(&self.servers[&id].request) {
            return self.serve(now, id, service);
        }
        let entry = &self.servers[&id];
        if self.is_mailbox_subscribe(&entry.request, entry.reply) {
            return self.subscribe(now, id);
        }
        let arrival = entry.reply;
        let us = Us {
            addrs: &self.addrs,
            domains: &self.config.domains,
            mesh: self.config.mesh.is_some(),
            store_messages: self.config.messaging.store,
        };
        let (routes, _) = proxy::pop_our_routes(&entry.request, &us);
        let decision = proxy::route(now, &entry.request, &routes, arrival, &us, &self.location);
        match decision {
            Decision::Reject(Reject::Unavailable) if let Some(aor) = self.may_divert(id) => {
                self.divert(now, id, aor)
            }
            Decision::Reject(reject) => self.reject(now, id, &reject),
            Decision::Options => {
                let extra = [
                    ("Allow", ALLOW.to_string()),
                    ("Accept", "application/sdp, text/plain".to_string()),
                    ("Supported", String::new()),
                ];
                self.answer(now, id, 200, "OK", &extra, None);
            }
            Decision::Register => self.register(now, id),
            Decision::Fork {
                aor,
                branches,
                peers,
            } => {
                tracing::debug!(aor = %aor, branches = branches.len(), peers = peers.len(), "forking");
                let mut hops: Vec<Hop> = branches
                    .into_iter()
                    .map(|(contact, t)| Hop::Contact(contact, t))
                    .collect();
                hops.extend(peers.into_iter().map(Hop::Peer));
                self.forward(now, id, hops);
            }
            Decision::Lookup { aor } => {
                let wait = self
                    .config
                    .mesh
                    .as_ref()
                    .map_or(Duration::ZERO, |m| m.lookup_timeout);
                tracing::debug!(aor = %aor, "asking the overlay");
                self.timers
                    .insert((now + wait, TimerRef::LookupExpired(id)));
                self.lookups.insert(id, aor.clone());
                self.outputs
                    .push_back(Output::Event(Event::Lookup { id, aor }));
            }
            Decision::Store { aor } => self.store(now, id, aor),
            Decision::Relay { target } => self.forward(now, id, vec![Hop::Same(target)]),
        }
    }

    /// Stores the MESSAGE of server transaction `id` for `aor` and answers `202`, or says why
    /// not (caps, size, a failed write: nothing is acknowledged that is not on disk).
    fn store(&mut self, now: Instant, id: u64, aor: Aor) {
        let Some(entry) = self.servers.get(&id) else {
            return;
        };
        if entry.request.body.len() > self.config.messaging.max_body {
            return self.reject(now, id, &Reject::BodyTooLarge);
        }
        let message = StoredMessage::from_request(
            crate::messaging::item_id(&aor.0, self.rng.next_u64()),
            &aor.0,
            &entry.request,
        );
        match self.storage.message_counts(&aor.0) {
            Ok((mine, _)) if mine >= self.config.messaging.per_aor_cap => {
                return self.reject(now, id, &Reject::MailboxFull);
            }
            Ok((_, total)) if total >= self.config.messaging.total_cap => {
                return self.reject(now, id, &Reject::StoreFull);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(aor = %aor, error = %e, "message store unreadable");
                return self.reject(now, id, &Reject::StoreFull);
            }
        }
        if let Err(e) = self.storage.save_message(&message) {
            tracing::error!(aor = %aor, error = %e, "message not stored");
            return self.reject(now, id, &Reject::StoreFull);
        }
        tracing::info!(aor = %aor, id = %message.id, "message stored for later delivery");
        self.answer(now, id, 202, "Accepted", &[], None);
        self.outputs
            .push_back(Output::Event(Event::MessageStored { message }));
    }

    fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::RemoteRoutes { aor, routes, known } => {
                let aor = Aor(aor);
                if known {
                    self.location
                        .remember(aor.clone(), now + self.config.registrar.known_for);
                }
                self.peer_ips.extend(routes.iter().map(|r| r.sip.ip()));
                self.location.set_remote(aor, routes);
            }
            Command::PhonesMoved {
                aor,
                call_ids,
                instances,
            } => self.drop_moved(now, Aor(aor), &call_ids, &instances),
            Command::StoreReplicas {
                messages,
                voicemails,
            } => {
                let storage = &mut self.storage;
                let mailboxes = keep_each(voicemails, |v| &v.aor, |v| storage.save_voicemail(v));
                for aor in mailboxes {
                    self.mailbox_changed(now, &aor, false);
                }
                let storage = &mut self.storage;
                let aors = keep_each(messages, |m| &m.aor, |m| storage.save_message(m));
                for aor in aors {
                    if !self.location.lookup(now, &aor).is_empty() {
                        self.deliver_pending(now, &aor);
                    }
                }
            }
            Command::MeshUp { side } => {
                self.addrs.insert(side.local);
                self.config.mesh = Some(side);
            }
            Command::EndCall { call_id } => self.end_call(now, &call_id),
            Command::SendNotice {
                notice,
                at,
                datetime,
            } => self.send_notice(now, &notice, &at, &datetime),
            Command::SendText { token, text } => self.send_text(now, token, &text),
            Command::ForgetMessages { ids } => {
                let mut mailboxes: Vec<Aor> = Vec::new();
                for id in ids {
                    if let Err(e) = self.storage.message_delivered(&id) {
                        tracing::warn!(%id, error = %e, "delivered replica not removed");
                    }
                    match self.storage.delete_voicemail(&id) {
                        Ok(Some(aor)) if !mailboxes.iter().any(|m| m.0 == aor) => {
                            mailboxes.push(Aor(aor))
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(%id, error = %e, "deleted voicemail not removed"),
                    }
                }
                for aor in mailboxes {
                    self.mailbox_changed(now, &aor, false);
                }
            }
            Command::VoicemailRecorded { voicemail } => self.voicemail_recorded(now, voicemail),
            Command::Mailbox { action } => self.mailbox_action(now, action),
            Command::LookupResult { id, routes } => {
                self.peer_ips.extend(routes.iter().map(|r| r.sip.ip()));
                let Some(aor) = self.lookups.remove(&id) else {
                    return;
                };
                if !self.servers.contains_key(&id) {
                    return;
                }
                if routes.is_empty() {
                    return self.nobody_serves(now, id, aor);
                }
                self.forward(now, id, routes.into_iter().map(Hop::Peer).collect());
            }
        }
    }

    /// Nobody in the overlay serves `aor` either: store a MESSAGE, refuse anything else.
    fn nobody_serves(&mut self, now: Instant, id: u64, aor: Aor) {
        let message = self
            .servers
            .get(&id)
            .is_some_and(|e| crate::messaging::is_message(&e.request));
        if message && self.config.messaging.store {
            return self.store(now, id, aor);
        }
        let reject = if self.location.is_known(now, &aor) {
            if let Some(aor) = self.may_divert(id) {
                return self.divert(now, id, aor);
            }
            Reject::Unavailable
        } else {
            Reject::NotFound
        };
        self.reject(now, id, &reject);
    }

    /// A forwarded MESSAGE has no final answer yet: the phone is too slow or gone. Store the
    /// message and answer `202`; a late 2xx marks it delivered.
    fn handle_message_deadline(&mut self, now: Instant, id: u64) {
        let Some(context) = self.contexts.get(&id) else {
            return;
        };
        if context.final_sent || !self.servers.contains_key(&id) {
            return;
        }
        let Some(aor) = self.servers[&id]
            .request
            .uri_user()
            .map(|u| Aor(u.to_string()))
        else {
            return;
        };
        let before = self.outputs.len();
        self.store(now, id, aor.clone());
        let stored = self.outputs.iter().skip(before).find_map(|o| match o {
            Output::Event(Event::MessageStored { message }) => Some(message.clone()),
            _ => None,
        });
        if let Some(message) = stored {
            self.stored_late.insert(id, (aor, message));
        }
        if let Some(context) = self.contexts.get_mut(&id) {
            context.final_sent = true;
        }
    }

    /// Sends a delivery notice through our own proxy logic (see [`Self::originate`]).
    fn send_notice(&mut self, now: Instant, notice: &DeliveryNotice, at: &str, datetime: &str) {
        let Some((local, ids)) = self.own_origin() else {
            tracing::info!(sender = %notice.sender, "no address of ours known yet: notice not sent");
            return;
        };
        let Some(request) = notice.request(local, at, datetime, ids) else {
            return;
        };
        tracing::info!(sender = %notice.sender, aor = %notice.aor, imdn = notice.imdn.is_some(), "delivery notice");
        self.originate(now, request, local, 0);
    }

    /// A text from the web page, sent like a delivery notice; its final answer is told back as
    /// [`Event::TextAnswered`] with `token`.
    fn send_text(&mut self, now: Instant, token: u64, text: &WebText) {
        let answer = |status: u16, reason: &str| {
            Output::Event(Event::TextAnswered {
                token,
                status,
                reason: reason.to_string(),
            })
        };
        let Some((local, ids)) = self.own_origin() else {
            self.outputs.push_back(answer(503, "No SIP address yet"));
            return;
        };
        let Some(request) = text.request(local, ids) else {
            self.outputs.push_back(answer(400, "Bad Request"));
            return;
        };
        tracing::info!(to = %text.to, "web text");
        self.originate(now, request, local, token.max(1));
    }

    /// Where a request of our own comes from (our mesh address, else our lowest listening
    /// address) and three fresh ids for its branch, tag and Call-ID.
    fn own_origin(&mut self) -> Option<(SocketAddr, [u64; 3])> {
        let local = self
            .config
            .mesh
            .as_ref()
            .map(|m| m.local)
            .or_else(|| self.addrs.iter().min().copied())?;
        let ids = [
            self.rng.next_u64(),
            self.rng.next_u64(),
            self.rng.next_u64(),
        ];
        Some((local, ids))
    }

    /// Sends a request the appliance makes itself through its own proxy logic, as if one of
    /// its phones had sent it: to the phones here, to the appliance that serves the extension,
    /// or into the store when it is away. Its responses go nowhere, except that a `token` ≠ 0
    /// turns the final one into [`Event::TextAnswered`].
    fn originate(&mut self, now: Instant, request: Request, local: SocketAddr, token: u64) {
        let reply = Target {
            transport: Transport::Udp,
            local,
            remote: local,
        };
        let key = transaction::server_key(&request, request.method.as_str());
        let id = self.new_server(now, request, reply, key);
        if let Some(entry) = self.servers.get_mut(&id) {
            entry.own = Some(token);
        }
        self.dispatch(now, id);
    }

    /// Starts delivering what waits for `aor` to its phones, one message at a time.
    fn deliver_pending(&mut self, now: Instant, aor: &Aor) {
        if self.deliveries.contains_key(aor) {
            return; // one in flight already; it continues with the next when done
        }
        let pending = match self.storage.pending_messages(&aor.0) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(aor = %aor, error = %e, "pending messages unreadable");
                return;
            }
        };
        let Some(message) = pending.into_iter().next() else {
            return;
        };
        let bindings: Vec<(String, Target)> = self
            .location
            .lookup(now, aor)
            .iter()
            .map(|b| (b.contact.clone(), b.target))
            .collect();
        let mut outstanding = 0;
        for (contact, target) in bindings {
            let branch = proxy::branch(self.rng.next_u64(), self.rng.next_u64());
            let call_id = format!("{:016x}@fieldmesh", self.rng.next_u64());
            let Some(request) = message.delivery(&contact, target, &branch, &call_id) else {
                continue;
            };
            let (client, first) = self.new_client(now, request, target, None);
            if let Some(entry) = self.clients.get_mut(&client) {
                entry.delivery = Some((aor.clone(), message.id.clone()));
            }
            self.apply_client_step(now, client, first);
            outstanding += 1;
        }
        if outstanding > 0 {
            tracing::info!(aor = %aor, id = %message.id, "delivering a stored message");
            self.deliveries.insert(
                aor.clone(),
                Delivery {
                    notice: message.notice(),
                    id: message.id,
                    outstanding,
                    delivered: false,
                },
            );
        }
    }

    /// A delivery branch ended with `code` (0: no answer at all).
    fn delivery_ended(&mut self, now: Instant, aor: Aor, id: String, code: u16) {
        let Some(d) = self.deliveries.get_mut(&aor).filter(|d| d.id == id) else {
            return;
        };
        d.outstanding = d.outstanding.saturating_sub(1);
        if (200..300).contains(&code) && !d.delivered {
            d.delivered = true;
            if let Err(e) = self.storage.message_delivered(&id) {
                tracing::warn!(aor = %aor, error = %e, "delivered message not removed from disk");
            }
            tracing::info!(aor = %aor, %id, "stored message delivered");
            self.outputs
                .push_back(Output::Event(Event::MessageDelivered {
                    id: id.clone(),
                    aor: aor.clone(),
                    notice: d.notice.clone(),
                }));
        }
        if d.outstanding > 0 {
            return;
        }
        let delivered = d.delivered;
        self.deliveries.remove(&aor);
        if delivered {
            // Next one, in order. A failed one stays, for the phone's next registration.
            self.deliver_pending(now, &aor);
        }
    }

    /// A phone of ours registered more recently at another appliance (it roamed): its binding
    /// here goes, so nothing is forked to where it no longer is.
    fn drop_moved(&mut self, now: Instant, aor: Aor, call_ids: &[String], instances: &[String]) {
        let old: Vec<Binding> = self
            .location
            .lookup(now, &aor)
            .into_iter()
            .cloned()
            .collect();
        let (gone, kept): (Vec<Binding>, Vec<Binding>) = old.into_iter().partition(|b| {
            call_ids.contains(&b.call_id)
                || b.instance.as_ref().is_some_and(|i| instances.contains(i))
        });
        if gone.is_empty() {
            return;
        }
        let removed: Vec<String> = gone.iter().map(|b| b.contact.clone()).collect();
        let saved: Vec<BindingRecord> = kept.iter().map(|b| b.record(now)).collect();
        if let Err(e) = self.storage.save_registration(&aor.0, &removed, &saved) {
            tracing::warn!(aor = %aor, error = %e, "moved binding not removed from disk");
        }
        tracing::info!(aor = %aor, count = removed.len(), "binding moved to another appliance");
        self.location
            .set(&aor, kept, now + self.config.registrar.known_for);
        self.outputs
            .push_back(Output::Event(Event::BindingsChanged { aor }));
    }

    fn register(&mut self, now: Instant, id: u64) {
        let entry = &self.servers[&id];
        let result = registrar::register(
            now,
            &entry.request,
            entry.reply,
            &self.config.registrar,
            &mut self.location,
            &mut self.storage,
        );
        match result {
            Ok((aor, bindings)) => {
                let contacts: Vec<(&'static str, String)> = bindings
                    .iter()
                    .map(|b| {
                        let left = b.expires_at.saturating_duration_since(now).as_secs();
                        ("Contact", format!("<{}>;expires={left}", b.contact))
                    })
                    .collect();
                tracing::info!(aor = %aor, bindings = bindings.len(), "registered");
                let deliver = !bindings.is_empty();
                self.answer(now, id, 200, "OK", &contacts, None);
                if deliver {
                    self.deliver_pending(now, &aor);
                    if self.subscriptions.of(now, &aor).is_empty() {
                        self.mailbox_changed(now, &aor, true);
                    }
                }
                self.outputs
                    .push_back(Output::Event(Event::BindingsChanged { aor }));
            }
            Err(reject) => self.reject(now, id, &reject),
        }
    }

    /// Forwards the request of server transaction `id` to each hop (§16.6), statefully.
    fn forward(&mut self, now: Instant, id: u64, hops: Vec<Hop>) {
        let request = self.servers[&id].request.clone();
        let invite = request.method.is(Method::INVITE);
        let user = request.uri_user().unwrap_or("").to_string();
        let mesh = self.config.mesh.clone();
        // Resolve every hop to (Request-URI, target, is it another appliance).
        let mut resolved = Vec::new();
        for hop in hops {
            match hop {
                Hop::Contact(contact, target) => {
                    if let Some(uri) = message::parse_all::<ezk_sip_types::uri::SipUri>(&contact) {
                        resolved.push((Some(uri), target, false));
                    }
                }
                Hop::Peer(peer) => {
                    let (Some(mesh), Some(uri)) = (&mesh, proxy::peer_uri(&user, peer.sip)) else {
                        continue;
                    };
                    let target = Target {
                        transport: Transport::Udp,
                        local: mesh.local,
                        remote: peer.sip,
                    };
                    tracing::debug!(peer_id = %peer.peer, node = %peer.node, "branch to another appliance");
                    resolved.push((Some(uri), target, true));
                }
                Hop::Same(target) => {
                    let target = self.with_local(now, target);
                    let to_peer = self.peer_ips.contains(&target.remote.ip());
                    resolved.push((None, target, to_peer));
                }
            }
        }
        if resolved.iter().any(|(_, t, _)| self.is_our_addr(t.remote)) {
            return self.reject(now, id, &Reject::LoopDetected);
        }
        let arrival = self.servers[&id].reply;
        // Media: a branch that crosses between the phone side and the mesh side carries its
        // SDP through the relay; the responses come back anchored towards the sender's side.
        let from_peer = self.peer_ips.contains(&arrival.remote.ip());
        let upstream = Toward {
            ip: arrival.local.ip(),
            phone: !from_peer,
        };
        let mut bodies = Vec::with_capacity(resolved.len());
        for (_, target, to_peer) in &resolved {
            let crossing = self.media.is_some() && from_peer != *to_peer;
            let toward = Toward {
                ip: target.local.ip(),
                phone: !*to_peer,
            };
            let body = match self.anchor_request(now, &request, crossing, toward) {
                Ok(body) => body,
                Err(refusal) => return self.reject(now, id, &Reject::Media(refusal)),
            };
            bodies.push((body, crossing.then_some(upstream)));
        }
        if request.method.is(Method::BYE) {
            self.anchored.remove(request.common.call_id.as_str());
        }
        if request.method.is(Method::BYE)
            && let Some(media) = &mut self.media
        {
            media.end(now, request.common.call_id.as_ref());
        }
        let no_answer_at = invite.then(|| now + self.config.no_answer);
        let mut context = Context::new(invite);
        let us = Us {
            addrs: &self.addrs,
            domains: &self.config.domains,
            mesh: mesh.is_some(),
            store_messages: self.config.messaging.store,
        };
        let (routes, _) = proxy::pop_our_routes(&request, &us);
        let received_hash = proxy::loop_hash(&request);
        let mut started = Vec::new();
        for ((uri, target, to_peer), (body, crossing)) in resolved.into_iter().zip(bodies) {
            let mut out = request.clone();
            if let Some(uri) = uri {
                out.uri = uri;
            }
            if let Some(body) = body {
                out.body = body;
            }
            let random = self.rng.next_u64();
            prepare_forward(&mut out, arrival, target, &routes, received_hash, random);
            let index = context.branches.len();
            let (client, first) = self.new_client(now, out, target, Some((id, index)));
            if let Some(entry) = self.clients.get_mut(&client) {
                entry.crossing = crossing;
            }
            if let (true, Some(mesh)) = (to_peer, &mesh) {
                self.timers
                    .insert((now + mesh.peer_timeout, TimerRef::PeerSilent(client)));
            }
            context.branches.push(proxy::Branch {
                client,
                provisional: false,
                done: false,
                cancel_pending: false,
                cancel_sent: false,
            });
            started.push((client, first));
        }
        if context.branches.is_empty() {
            return self.reject(now, id, &Reject::Unavailable);
        }
        if let Some(at) = no_answer_at {
            self.timers.insert((at, TimerRef::NoAnswer(id)));
        }
        if crate::messaging::is_message(&request)
            && self.config.messaging.store
            && request.uri_user().is_some()
        {
            let at = now + self.config.messaging.answer_within;
            self.timers.insert((at, TimerRef::MessageDeadline(id)));
        }
        self.contexts.insert(id, context);
        for (client, first) in started {
            self.apply_client_step(now, client, first);
        }
    }

    fn handle_ack(&mut self, now: Instant, request: Request, arrival: Target) {
        let key = transaction::server_key(&request, Method::INVITE);
        if let Some(id) = self.server_keys.get(&key).copied()
            && let ServerMachine::Invite(m) = &mut self
                .servers
                .get_mut(&id)
                .expect("server_keys and servers change together")
                .machine
        {
            let step = m.handle_ack(now);
            return self.apply_server_step(now, id, step);
        }
        // An ACK for a 2xx is end to end: forward it statelessly along its Route (§16.11).
        let us = Us {
            addrs: &self.addrs,
            domains: &self.config.domains,
            mesh: self.config.mesh.is_some(),
            store_messages: self.config.messaging.store,
        };
        let (routes, _) = proxy::pop_our_routes(&request, &us);
        match proxy::route(now, &request, &routes, arrival, &us, &self.location) {
            Decision::Relay { target } if !self.is_our_addr(target.remote) => {
                let target = self.with_local(now, target);
                let hash = proxy::loop_hash(&request);
                let from_peer = self.peer_ips.contains(&arrival.remote.ip());
                let to_peer = self.peer_ips.contains(&target.remote.ip());
                let toward = Toward {
                    ip: target.local.ip(),
                    phone: !to_peer,
                };
                let crossing = self.media.is_some() && from_peer != to_peer;
                // An ACK cannot be refused: an answer the relay cannot read goes on as it is.
                let body = self
                    .anchor_request(now, &request, crossing, toward)
                    .ok()
                    .flatten();
                let mut out = request;
                if let Some(body) = body {
                    out.body = body;
                }
                let branch_seed = stable_hash(request_branch(&out));
                prepare_forward(&mut out, arrival, target, &routes, hash, branch_seed);
                self.transmit(target, out.encode());
            }
            Decision::Fork { branches, .. } => {
                // Route-less ACK to an AOR (clients that ignore Record-Route): to every contact.
                for (contact, target) in branches {
                    let mut out = request.clone();
                    if let Some(uri) = message::parse_all::<ezk_sip_types::uri::SipUri>(&contact) {
                        out.uri = uri;
                    }
                    prepare_forward(
                        &mut out,
                        arrival,
                        target,
                        &routes,
                        proxy::loop_hash(&request),
                        stable_hash(request_branch(&request)),
                    );
                    self.transmit(target, out.encode());
                }
            }
            other => tracing::debug!(?other, "ACK not forwarded"),
        }
    }

    fn handle_cancel(&mut self, now: Instant, request: Request, arrival: Target) {
        let key = transaction::server_key(&request, Method::CANCEL);
        if let Some(id) = self.server_keys.get(&key).copied() {
            let step = match &mut self
                .servers
                .get_mut(&id)
                .expect("server_keys and servers change together")
                .machine
            {
                ServerMachine::Plain(m) => m.handle_retransmission(),
                ServerMachine::Invite(m) => m.handle_retransmission(),
            };
            return self.apply_server_step(now, id, step);
        }
        let invite_key = transaction::server_key(&request, Method::INVITE);
        let invite = self.server_keys.get(&invite_key).copied();
        let cancel_id = self.new_server(now, request, arrival, key);
        let Some(invite_id) = invite else {
            return self.reject(now, cancel_id, &Reject::NoTransaction);
        };
        // §16.10: answer the CANCEL itself, then cancel every pending branch; the 487 comes
        // back from the branches (or from us, for branches that never rang).
        self.answer(now, cancel_id, 200, "OK", &[], None);
        if self.lookups.remove(&invite_id).is_some() {
            // Still waiting for the overlay: there is no branch to cancel.
            return self.answer(now, invite_id, 487, "Request Terminated", &[], None);
        }
        let Some(context) = self.contexts.get_mut(&invite_id) else {
            return;
        };
        if context.final_sent {
            return;
        }
        let cancel = context.cancel_all();
        for index in cancel {
            self.cancel_branch(now, invite_id, index);
        }
        self.finish_cancelled_branches(now, invite_id);
    }

    /// After a CANCEL, branches that never rang will not be CANCELled (§9.1); count them as
    /// answered 487 so the caller is not kept waiting for Timer B.
    fn finish_cancelled_branches(&mut self, now: Instant, id: u64) {
        let Some(context) = self.contexts.get(&id) else {
            return;
        };
        let silent: Vec<usize> = context
            .branches
            .iter()
            .enumerate()
            .filter(|(_, b)| b.cancel_pending && !b.provisional && !b.done)
            .map(|(i, _)| i)
            .collect();
        for index in silent {
            if let Some(response) = self.synthetic_response(id, index, 487, "Request Terminated") {
                let step = self
                    .contexts
                    .get_mut(&id)
                    .map(|c| c.handle_response(index, response));
                if let Some(step) = step {
                    self.apply_context_step(now, id, step);
                }
            }
        }
    }

    fn handle_response(&mut self, now: Instant, response: Response) {
        let branch = response
            .top_via()
            .params
            .get_val("branch")
            .map(|b| b.to_string())
            .unwrap_or_default();
        let key = transaction::client_key(&branch, response.common.cseq_method.as_str());
        let Some(id) = self.client_keys.get(&key).copied() else {
            return self.forward_stray_response(now, response, &branch);
        };
        let intervals = self.config.intervals;
        let entry = self
            .clients
            .get_mut(&id)
            .expect("keys and entries move together");
        entry.heard = true;
        let step = match &mut entry.machine {
            ClientMachine::Invite(m) => m.handle_response(now, response, intervals),
            ClientMachine::Plain(m) => m.handle_response(now, response),
        };
        self.apply_client_step(now, id, step);
    }

    /// A response that matches no transaction: if our Via is on top, pass it on statelessly
    /// (§16.11; 2xx retransmissions after the transactions ended), else drop it.
    fn forward_stray_response(&mut self, now: Instant, mut response: Response, branch: &str) {
        if !branch.starts_with(proxy::BRANCH_PREFIX) || response.common.vias.len() < 2 {
            tracing::debug!(code = response.code, "stray response dropped");
            return;
        }
        let Some(target) = upstream_target(
            &response.common.vias[1],
            self.config.listen.first().copied(),
        ) else {
            return;
        };
        let local = self
            .location
            .by_remote(now, target.remote)
            .map(|b| b.target.local)
            .unwrap_or(target.local);
        pop_via(&mut response);
        // A retransmitted 2xx of an anchored call: the relay gives the same rewrite again.
        if self
            .media
            .as_ref()
            .is_some_and(|m| m.has_call(response.common.call_id.as_ref()))
        {
            let toward = Toward {
                ip: local.ip(),
                phone: !self.peer_ips.contains(&target.remote.ip()),
            };
            self.anchor_response(now, &mut response, toward);
        }
        self.transmit(Target { local, ..target }, response.encode());
    }

    /// The SDP of a request that crosses the appliance, anchored; `None` when it does not
    /// cross or carries no SDP.
    fn anchor_request(
        &mut self,
        now: Instant,
        request: &Request,
        crossing: bool,
        toward: Toward,
    ) -> Result<Option<Bytes>, media::MediaRefusal> {
        let Some(relay) = self.media.as_mut().filter(|_| crossing) else {
            return Ok(None);
        };
        let content_type = message::single(&request.headers, &Name::CONTENT_TYPE);
        if !media::is_sdp(content_type, &request.body) {
            return Ok(None);
        }
        let call_id = request.common.call_id.to_string();
        let tag = request.common.from.tag.clone().unwrap_or_default();
        relay
            .rewrite(now, &call_id, &tag, &request.body, toward)
            .map(Some)
    }

    /// Anchors the SDP of a response on a crossing branch. A response cannot be refused: if
    /// the relay cannot read the answer, it goes on as it is and the call has no media.
    fn anchor_response(&mut self, now: Instant, response: &mut Response, toward: Toward) {
        let Some(relay) = self.media.as_mut() else {
            return;
        };
        let content_type = message::single(&response.headers, &Name::CONTENT_TYPE);
        if !media::is_sdp(content_type, &response.body) {
            return;
        }
        let call_id = response.common.call_id.to_string();
        let tag = response.common.to.tag.clone().unwrap_or_default();
        match relay.rewrite(now, &call_id, &tag, &response.body, toward) {
            Ok(body) => response.body = body,
            Err(refusal) => {
                tracing::warn!(call_id, code = response.code, reason = %refusal.reason, "answer SDP not anchored")
            }
        }
    }

    /// A 2xx to an initial INVITE on a crossing branch: keep what it takes to end the call.
    fn remember_anchored(&mut self, server: u64, client: u64, ok: &Response) {
        if !(200..300).contains(&ok.code)
            || !ok.common.cseq_method.is(Method::INVITE)
            || self.anchored.len() >= MAX_ANCHORED
        {
            return;
        }
        let (Some(s), Some(c)) = (self.servers.get(&server), self.clients.get(&client)) else {
            return;
        };
        if s.request.common.to.tag.is_some() {
            return;
        }
        let addrs = &self.addrs;
        if let Some(call) =
            AnchoredCall::capture(&s.request, s.reply, ok, c.target, |a| addrs.contains(&a))
        {
            self.anchored.insert(call.call_id.clone(), call);
        }
    }

    /// Ends an anchored call from the middle: a BYE to each side (their answers are absorbed).
    fn end_call(&mut self, now: Instant, call_id: &str) {
        if let Some(media) = &mut self.media {
            media.end(now, call_id);
        }
        if let Some(served) = self.served.remove(call_id) {
            tracing::info!(call_id, "ending a call the appliance answered");
            if let Some(side) = served.caller {
                let call = AnchoredCall {
                    call_id: call_id.to_string(),
                    caller: side.clone(),
                    callee: side,
                };
                let random = self.rng.next_u64();
                if let Some(bye) = call.bye(
                    &call.caller,
                    random,
                    "SIP;cause=200;text=\"recording complete\"",
                ) {
                    let (id, first) = self.new_client(now, bye, call.caller.target, None);
                    self.apply_client_step(now, id, first);
                }
            }
            return;
        }
        let Some(call) = self.anchored.remove(call_id) else {
            tracing::debug!(call_id, "no dialog to end");
            return;
        };
        tracing::info!(call_id, "ending the call: no media");
        for side in [&call.caller, &call.callee] {
            let random = self.rng.next_u64();
            let Some(bye) = call.bye(side, random, "SIP;cause=408;text=\"media timeout\"") else {
                continue;
            };
            let (id, first) = self.new_client(now, bye, side.target, None);
            self.apply_client_step(now, id, first);
        }
    }

    /// The service an INVITE (or an in-dialog request of a served call) asks for, if the
    /// appliance answers it itself: the echo number, the mailbox number, or a call of ours
    /// already answered.
    fn service_for(&self, request: &Request) -> Option<Service> {
        self.media.as_ref()?;
        if let Some(tag) = &request.common.to.tag {
            return self
                .served
                .get::<str>(request.common.call_id.as_ref())
                .filter(|s| s.tag == *tag)
                .map(|s| s.service.clone());
        }
        if !request.method.is(Method::INVITE) {
            return None;
        }
        let user = request.uri_user()?;
        if self.config.echo.as_deref() == Some(user) {
            return Some(Service::Echo);
        }
        if self.config.voicemail.enabled && self.config.voicemail.number == user {
            // The caller's own mailbox: its From user is the extension.
            let owner = request.common.from.user()?;
            return Some(Service::Mailbox(Aor(owner.to_string())));
        }
        None
    }

    /// The appliance as a tiny UAS: INVITE (and re-INVITE) get our SDP in a `200`, BYE ends
    /// the call; the relay plays back (echo), records (voicemail) or plays the mailbox.
    fn serve(&mut self, now: Instant, id: u64, service: Service) {
        let entry = &self.servers[&id];
        let request = entry.request.clone();
        let reply = entry.reply;
        let local = reply.local;
        let call_id = request.common.call_id.to_string();
        if request.method.is(Method::BYE) {
            self.served.remove(&call_id);
            if let Some(media) = &mut self.media {
                media.end(now, &call_id);
            }
            return self.answer(now, id, 200, "OK", &[], None);
        }
        if !request.method.is(Method::INVITE) {
            return self.answer(now, id, 200, "OK", &[], None);
        }
        let content_type = message::single(&request.headers, &Name::CONTENT_TYPE);
        if !media::is_sdp(content_type, &request.body) {
            // A late offer would need an offer from us; phones in the field send early offers.
            return self.answer(
                now,
                id,
                488,
                "Not Acceptable Here (no SDP offer)",
                &[],
                None,
            );
        }
        let mailbox = match &service {
            Service::Mailbox(aor) => match self.storage.voicemails(&aor.0) {
                Ok(list) => list,
                Err(e) => {
                    tracing::error!(aor = %aor, error = %e, "mailbox unreadable");
                    return self.reject(now, id, &Reject::StoreFull);
                }
            },
            _ => Vec::new(),
        };
        let Some(media) = &mut self.media else {
            return;
        };
        let from = request.header(&Name::FROM).next().unwrap_or("").to_string();
        let answer = match &service {
            Service::Echo => media.echo(now, &call_id, &request.body, local.ip()),
            Service::Record(aor) => {
                media.record(now, &call_id, &request.body, local.ip(), &aor.0, &from)
            }
            Service::Mailbox(_) => media.play(now, &call_id, &request.body, local.ip(), &mailbox),
        };
        match answer {
            Ok(body) => {
                let tag = self.servers[&id].to_tag.clone();
                if request.common.to.tag.is_none() && self.served.len() < MAX_SERVED {
                    let caller = crate::dialog::Side::caller_of(&request, reply, &tag);
                    self.served.insert(
                        call_id.clone(),
                        Served {
                            tag,
                            service: service.clone(),
                            caller,
                        },
                    );
                }
                match &service {
                    Service::Record(aor) => {
                        tracing::info!(aor = %aor, "call answered by voicemail")
                    }
                    Service::Mailbox(aor) => {
                        tracing::info!(aor = %aor, messages = mailbox.len(), "mailbox answered")
                    }
                    Service::Echo => {}
                }
                let user = request.uri_user().unwrap_or("fieldmesh").to_string();
                let contact = ("Contact", format!("<sip:{user}@{local}>"));
                self.answer(
                    now,
                    id,
                    200,
                    "OK",
                    &[contact, ("Allow", crate::ALLOW.to_string())],
                    Some(("application/sdp", body)),
                );
            }
            Err(refusal) => self.reject(now, id, &Reject::Media(refusal)),
        }
    }

    /// Whether the INVITE of server transaction `id` may go to voicemail instead of failing:
    /// an initial INVITE with an offer, from one of our phones (the caller's own appliance
    /// records, so the media stays local), to an extension rather than a service number.
    fn may_divert(&self, id: u64) -> Option<Aor> {
        if !self.config.voicemail.enabled || self.media.is_none() {
            return None;
        }
        let entry = self.servers.get(&id)?;
        let request = &entry.request;
        if !request.method.is(Method::INVITE)
            || request.common.to.tag.is_some()
            || self.peer_ips.contains(&entry.reply.remote.ip())
            || !matches!(entry.machine, ServerMachine::Invite(ref m) if m.state == crate::transaction::server_invite::State::Proceeding)
        {
            return None;
        }
        let user = request.uri_user()?;
        if self.config.echo.as_deref() == Some(user) || self.config.voicemail.number == user {
            return None;
        }
        let content_type = message::single(&request.headers, &Name::CONTENT_TYPE);
        media::is_sdp(content_type, &request.body).then(|| Aor(user.to_string()))
    }

    /// Answers the INVITE of server transaction `id` with the voicemail of `aor`. The caller's
    /// media session of the failed attempt (if it crossed) is released first.
    fn divert(&mut self, now: Instant, id: u64, aor: Aor) {
        let call_id = self.servers[&id].request.common.call_id.to_string();
        if let Some(media) = &mut self.media
            && media.has_call(&call_id)
        {
            media.end(now, &call_id);
        }
        self.anchored.remove(&call_id);
        tracing::info!(aor = %aor, "diverting to voicemail");
        self.serve(now, id, Service::Record(aor));
    }

    // ---- message waiting (RFC 3842) ----

    /// A SUBSCRIBE for message-summary from one of our phones: we are the notifier.
    fn is_mailbox_subscribe(&self, request: &Request, arrival: Target) -> bool {
        request.method.is(Method::SUBSCRIBE)
            && mwi::is_message_summary(request)
            && !self.peer_ips.contains(&arrival.remote.ip())
    }

    fn subscribe(&mut self, now: Instant, id: u64) {
        let entry = &self.servers[&id];
        let request = entry.request.clone();
        let reply = entry.reply;
        let call_id = request.common.call_id.to_string();
        let Some(expires) = mwi::requested_expires(&request) else {
            return self.answer(now, id, 400, "Bad Request (Expires)", &[], None);
        };
        let account = self.mailbox_account(reply);
        if let Some(tag) = request.common.to.tag.clone() {
            // A refresh or an unsubscribe in an existing dialog.
            let Some(sub) = self.subscriptions.get_mut(&call_id, &tag) else {
                return self.answer(now, id, 481, "Subscription Does Not Exist", &[], None);
            };
            sub.expires_at = now + Duration::from_secs(u64::from(expires));
            let aor = sub.aor.clone();
            let extra = [("Expires", expires.to_string())];
            self.answer(now, id, 200, "OK", &extra, None);
            let counts = self.counts(&aor);
            let random = self.rng.next_u64();
            let notify = self
                .subscriptions
                .get_mut(&call_id, &tag)
                .and_then(|s| s.notify(now, counts, &account, random));
            if expires == 0 {
                self.subscriptions.remove(&call_id, &tag);
            }
            return self.send_notify(now, reply, notify);
        }
        let from_user = request.common.from.user().map(str::to_string);
        let target_user = request.uri_user().map(str::to_string);
        // A phone may watch its own mailbox only (by its extension or the mailbox number).
        let aor = match (from_user, target_user) {
            (Some(f), Some(t)) if f == t || t == self.config.voicemail.number => Aor(f),
            _ => return self.answer(now, id, 403, "Forbidden (not your mailbox)", &[], None),
        };
        let Ok(ContactList::Addresses(contacts)) = request.contacts() else {
            return self.answer(now, id, 400, "Bad Request (Contact)", &[], None);
        };
        let Some(contact) = contacts.first().map(|c| message::print(&c.uri.uri)) else {
            return self.answer(now, id, 400, "Bad Request (Contact)", &[], None);
        };
        let tag = self.servers[&id].to_tag.clone();
        let to = request.header(&Name::TO).next().unwrap_or("").to_string();
        let mut sub = Subscription {
            aor: aor.clone(),
            call_id: call_id.clone(),
            target: reply,
            uri: contact,
            from: format!("{to};tag={tag}"),
            to: request.header(&Name::FROM).next().unwrap_or("").to_string(),
            cseq: 0,
            expires_at: now + Duration::from_secs(u64::from(expires)),
        };
        let extra = [
            ("Expires", expires.to_string()),
            ("Contact", format!("<sip:{}@{}>", aor.0, reply.local)),
        ];
        if expires > 0 && !self.subscriptions.insert(tag.clone(), sub.clone()) {
            return self.answer(
                now,
                id,
                503,
                "Service Unavailable (too many subscriptions)",
                &[("Retry-After", "60".to_string())],
                None,
            );
        }
        tracing::info!(aor = %aor, expires, "mailbox subscription");
        self.answer(now, id, 200, "OK", &extra, None);
        // RFC 6665 §4.2.1.2: the current state at once (and a final one for a fetch).
        let counts = self.counts(&aor);
        let random = self.rng.next_u64();
        let notify = match self.subscriptions.get_mut(&call_id, &tag) {
            Some(s) => s.notify(now, counts, &account, random),
            None => sub.notify(now, counts, &account, random),
        };
        self.send_notify(now, reply, notify);
    }

    /// `sip:*98@<our address>`: where the phone calls to hear its messages.
    fn mailbox_account(&self, reply: Target) -> String {
        format!("sip:{}@{}", self.config.voicemail.number, reply.local.ip())
    }

    fn counts(&mut self, aor: &Aor) -> (u64, u64) {
        self.storage.voicemail_counts(&aor.0).unwrap_or_else(|e| {
            tracing::warn!(aor = %aor, error = %e, "mailbox counts unreadable");
            (0, 0)
        })
    }

    fn send_notify(&mut self, now: Instant, target: Target, notify: Option<Request>) {
        if let Some(notify) = notify {
            let (id, first) = self.new_client(now, notify, target, None);
            self.apply_client_step(now, id, first);
        }
    }

    /// The mailbox of `aor` changed: NOTIFY its subscriptions here, or, if its phones here
    /// never subscribed, each of them unsolicited. `only_if_new`: stay quiet about an empty
    /// or fully heard mailbox (a registration refresh says nothing new).
    fn mailbox_changed(&mut self, now: Instant, aor: &Aor, only_if_new: bool) {
        let bindings: Vec<(String, Target)> = self
            .location
            .lookup(now, aor)
            .iter()
            .map(|b| (b.contact.clone(), b.target))
            .collect();
        let subs = self.subscriptions.of(now, aor);
        if bindings.is_empty() && subs.is_empty() {
            return;
        }
        let counts = self.counts(aor);
        if only_if_new && counts.0 == 0 {
            return;
        }
        tracing::info!(aor = %aor, new = counts.0, heard = counts.1, "telling phones about their mailbox");
        if !subs.is_empty() {
            for (call_id, tag) in subs {
                let random = self.rng.next_u64();
                let Some(sub) = self.subscriptions.get_mut(&call_id, &tag) else {
                    continue;
                };
                let target = sub.target;
                let account = format!("sip:{}@{}", self.config.voicemail.number, target.local.ip());
                let notify = sub.notify(now, counts, &account, random);
                self.send_notify(now, target, notify);
            }
            return;
        }
        for (contact, target) in bindings {
            let account = self.mailbox_account(target);
            let (tag, call_id, branch) = (
                self.rng.next_u64(),
                self.rng.next_u64(),
                self.rng.next_u64(),
            );
            let notify = mwi::build_notify(mwi::NotifyParts {
                uri: &contact,
                target,
                from: &format!("<{account}>;tag={tag:016x}"),
                to: &format!("<sip:{}@{}>", aor.0, target.local.ip()),
                call_id: &format!("{call_id:016x}@fieldmesh"),
                cseq: 1,
                state: "active",
                body: &voicemail::message_summary(counts.0, counts.1, &account),
                random: branch,
            });
            self.send_notify(now, target, notify);
        }
    }

    /// A voicemail recorded here: keep it, then replicate and tell its owner.
    fn voicemail_recorded(&mut self, now: Instant, voicemail: StoredVoicemail) {
        let aor = Aor(voicemail.aor.clone());
        if let Err(e) = self.storage.save_voicemail(&voicemail) {
            tracing::error!(aor = %aor, error = %e, "voicemail not stored");
            return;
        }
        tracing::info!(aor = %aor, id = %voicemail.id, duration_ms = voicemail.duration_ms, "voicemail stored");
        let peers = self
            .location
            .remote(&aor)
            .iter()
            .map(|r| r.peer.clone())
            .collect();
        self.outputs
            .push_back(Output::Event(Event::VoicemailStored { voicemail, peers }));
        self.mailbox_changed(now, &aor, false);
    }

    fn mailbox_action(&mut self, now: Instant, action: MailboxAction) {
        match action {
            MailboxAction::Deleted(id) => match self.storage.delete_voicemail(&id) {
                Ok(Some(aor)) => {
                    let aor = Aor(aor);
                    tracing::info!(aor = %aor, %id, "voicemail deleted");
                    self.outputs
                        .push_back(Output::Event(Event::VoicemailDeleted {
                            id,
                            aor: aor.clone(),
                        }));
                    self.mailbox_changed(now, &aor, false);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(%id, error = %e, "voicemail not deleted"),
            },
            MailboxAction::Heard(id) => match self.storage.voicemail_heard(&id) {
                Ok(Some(aor)) => self.mailbox_changed(now, &Aor(aor), false),
                Ok(None) => {}
                Err(e) => tracing::warn!(%id, error = %e, "voicemail not marked heard"),
            },
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, what)) = self.timers.first().copied() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match what {
                TimerRef::Server(id, timer) => {
                    let Some(entry) = self.servers.get_mut(&id) else {
                        continue;
                    };
                    let armed = match &entry.machine {
                        ServerMachine::Invite(m) => m.timers.get(timer),
                        ServerMachine::Plain(m) => m.timers.get(timer),
                    };
                    if armed != Some(at) {
                        continue;
                    }
                    let step = match &mut entry.machine {
                        ServerMachine::Invite(m) => m.handle_timer(now, timer),
                        ServerMachine::Plain(m) => m.handle_timer(timer),
                    };
                    self.apply_server_step(now, id, step);
                }
                TimerRef::Client(id, timer) => {
                    let Some(entry) = self.clients.get_mut(&id) else {
                        continue;
                    };
                    let armed = match &entry.machine {
                        ClientMachine::Invite(m) => m.timers.get(timer),
                        ClientMachine::Plain(m) => m.timers.get(timer),
                    };
                    if armed != Some(at) {
                        continue;
                    }
                    let step = match &mut entry.machine {
                        ClientMachine::Invite(m) => m.handle_timer(now, timer),
                        ClientMachine::Plain(m) => m.handle_timer(now, timer),
                    };
                    self.apply_client_step(now, id, step);
                }
                TimerRef::NoAnswer(id) => self.handle_no_answer(now, id),
                TimerRef::PeerSilent(client) => self.handle_peer_silent(now, client),
                TimerRef::MessageDeadline(id) => self.handle_message_deadline(now, id),
                TimerRef::LookupExpired(id) => {
                    if let Some(aor) = self.lookups.remove(&id) {
                        tracing::info!(aor = %aor, "overlay lookup found nothing in time");
                        self.nobody_serves(now, id, aor);
                    }
                }
                TimerRef::Sweep => {
                    self.sweep(now);
                    self.timers.insert((now + SWEEP_EVERY, TimerRef::Sweep));
                }
            }
        }
    }

    /// A branch to another appliance heard nothing: that appliance is gone or cut off. Give
    /// the branch up as `480` so the caller is answered within seconds.
    fn handle_peer_silent(&mut self, now: Instant, client: u64) {
        let Some(entry) = self.clients.get(&client) else {
            return;
        };
        if entry.heard {
            return;
        }
        let Some((context_id, index)) = entry.branch else {
            return;
        };
        tracing::info!(remote = %entry.target.remote, "another appliance did not answer");
        let response = self.synthetic_response(context_id, index, 480, "Temporarily Unavailable");
        let entry = self.clients.remove(&client).expect("checked above");
        self.client_keys.remove(&entry.key);
        if let Some(response) = response {
            let step = self
                .contexts
                .get_mut(&context_id)
                .map(|c| c.handle_response(index, response));
            if let Some(step) = step {
                self.apply_context_step(now, context_id, step);
            }
        }
        self.drop_context_if_done(context_id);
    }

    /// Nobody answered within the no-answer time: CANCEL the branches, `480` upstream.
    fn handle_no_answer(&mut self, now: Instant, id: u64) {
        let Some(context) = self.contexts.get_mut(&id) else {
            return;
        };
        if context.final_sent {
            return;
        }
        let cancel = context.cancel_all();
        let best = context.take_best();
        context.final_sent = true;
        tracing::info!("no answer in time, cancelling {} branch(es)", cancel.len());
        for index in cancel {
            self.cancel_branch(now, id, index);
        }
        if let Some(aor) = self.may_divert(id) {
            self.divert(now, id, aor);
            return self.drop_context_if_done(id);
        }
        match best {
            Some(response) => {
                let step = proxy::ContextStep {
                    upstream: Some(response),
                    cancel: Vec::new(),
                };
                self.apply_context_step(now, id, step);
            }
            None => {
                let (code, reason) = Reject::Unavailable.status();
                let reason = reason.to_string();
                self.answer(now, id, code, &reason, &[], None);
            }
        }
        self.drop_context_if_done(id);
    }

    fn sweep(&mut self, now: Instant) {
        self.subscriptions.sweep(now);
        let expired = self.location.sweep(now);
        let mut by_aor: HashMap<Aor, Vec<String>> = HashMap::new();
        for b in expired {
            by_aor.entry(b.aor).or_default().push(b.contact);
        }
        for (aor, contacts) in by_aor {
            if let Err(e) = self.storage.remove_expired(&aor.0, &contacts) {
                tracing::warn!(aor = %aor, error = %e, "expired bindings not removed from disk");
            }
            tracing::info!(aor = %aor, count = contacts.len(), "bindings expired");
            self.outputs
                .push_back(Output::Event(Event::BindingsChanged { aor }));
        }
    }

    // ---- transactions ----

    fn new_server(&mut self, _now: Instant, request: Request, reply: Target, key: String) -> u64 {
        let id = self.next_id();
        let reliable = reply.transport == Transport::Tcp;
        let machine = if request.method.is(Method::INVITE) {
            ServerMachine::Invite(ServerInviteTransaction::new(
                reliable,
                self.config.intervals,
            ))
        } else {
            ServerMachine::Plain(ServerTransaction::new(reliable, self.config.intervals))
        };
        let to_tag = format!("{:016x}", self.rng.next_u64());
        self.server_keys.insert(key.clone(), id);
        self.servers.insert(
            id,
            ServerEntry {
                machine,
                own: None,
                key,
                reply,
                request,
                to_tag,
            },
        );
        id
    }

    /// Creates a client transaction; apply the returned step (the first send) once the
    /// transaction's context exists.
    fn new_client(
        &mut self,
        now: Instant,
        request: Request,
        target: Target,
        branch: Option<(u64, usize)>,
    ) -> (u64, Step) {
        let id = self.next_id();
        let reliable = target.transport == Transport::Tcp;
        let branch_param = request
            .top_via()
            .params
            .get_val("branch")
            .map(|b| b.to_string())
            .unwrap_or_default();
        let key = transaction::client_key(&branch_param, request.method.as_str());
        let (machine, first) = if request.method.is(Method::INVITE) {
            let (m, s) =
                ClientInviteTransaction::new(now, request, reliable, self.config.intervals);
            (ClientMachine::Invite(m), s)
        } else {
            let (m, s) = ClientTransaction::new(now, request, reliable, self.config.intervals);
            (ClientMachine::Plain(m), s)
        };
        self.client_keys.insert(key.clone(), id);
        self.clients.insert(
            id,
            ClientEntry {
                machine,
                key,
                target,
                branch,
                heard: false,
                delivery: None,
                crossing: None,
            },
        );
        (id, first)
    }

    fn apply_server_step(&mut self, _now: Instant, id: u64, step: Step) {
        let Some(entry) = self.servers.get(&id) else {
            return;
        };
        match (step.send, entry.own) {
            (Some(bytes), None) => self.transmit(entry.reply, bytes),
            (Some(bytes), Some(token)) if token != 0 => {
                if let Some((status, reason)) = final_status(&bytes) {
                    self.outputs.push_back(Output::Event(Event::TextAnswered {
                        token,
                        status,
                        reason,
                    }));
                }
            }
            _ => {}
        }
        if let Some(TuEvent::NoAck) = step.tu {
            tracing::info!("no ACK for a final response");
        }
        if step.terminated {
            let entry = self.servers.remove(&id).expect("checked above");
            self.server_keys.remove(&entry.key);
            self.drop_context_if_done(id);
        } else {
            self.arm_server(id);
        }
    }

    fn apply_client_step(&mut self, now: Instant, id: u64, step: Step) {
        let Some(entry) = self.clients.get(&id) else {
            return;
        };
        let target = entry.target;
        let branch = entry.branch;
        let delivery = entry.delivery.clone();
        if let Some(bytes) = step.send {
            self.transmit(target, bytes);
        }
        if step.terminated {
            let entry = self.clients.remove(&id).expect("checked above");
            self.client_keys.remove(&entry.key);
        } else {
            self.arm_client(id);
        }
        if let Some((aor, message_id)) = delivery {
            match &step.tu {
                Some(TuEvent::Response(r)) if r.code >= 200 => {
                    self.delivery_ended(now, aor, message_id, r.code)
                }
                Some(TuEvent::Timeout) => self.delivery_ended(now, aor, message_id, 0),
                _ => {}
            }
            return;
        }
        let Some((context_id, index)) = branch else {
            return;
        };
        let crossing = self.clients.get(&id).and_then(|e| e.crossing);
        match step.tu {
            Some(TuEvent::Response(mut response)) => {
                if let Some(toward) = crossing {
                    self.anchor_response(now, &mut response, toward);
                    self.remember_anchored(context_id, id, &response);
                }
                let step = self
                    .contexts
                    .get_mut(&context_id)
                    .map(|c| c.handle_response(index, *response));
                if let Some(step) = step {
                    self.apply_context_step(now, context_id, step);
                }
            }
            Some(TuEvent::Timeout) => {
                if let Some(response) =
                    self.synthetic_response(context_id, index, 408, "Request Timeout")
                {
                    let step = self
                        .contexts
                        .get_mut(&context_id)
                        .map(|c| c.handle_timeout(index, response));
                    if let Some(step) = step {
                        self.apply_context_step(now, context_id, step);
                    }
                }
            }
            Some(TuEvent::NoAck) | None => {}
        }
        if step.terminated {
            self.drop_context_if_done(context_id);
        }
    }

    fn apply_context_step(&mut self, now: Instant, id: u64, step: proxy::ContextStep) {
        for index in step.cancel {
            self.cancel_branch(now, id, index);
        }
        if let Some(response) = &step.upstream
            && (200..300).contains(&response.code)
            && let Some((aor, message)) = self.stored_late.remove(&id)
        {
            // The phone answered after we had stored the message: it is delivered.
            if let Err(e) = self.storage.message_delivered(&message.id) {
                tracing::warn!(aor = %aor, error = %e, "late-delivered message not removed from disk");
            }
            self.outputs
                .push_back(Output::Event(Event::MessageDelivered {
                    notice: message.notice(),
                    id: message.id,
                    aor,
                }));
        }
        if let Some(response) = &step.upstream
            && voicemail::diverts(response.code)
            && response.common.cseq_method.as_str() == Method::INVITE
            && let Some(aor) = self.may_divert(id)
        {
            self.divert(now, id, aor);
            return self.drop_context_if_done(id);
        }
        if let Some(response) = &step.upstream
            && response.code >= 300
            && response.common.cseq_method.as_str() == Method::INVITE
            && self
                .servers
                .get(&id)
                .is_some_and(|e| e.request.common.to.tag.is_none())
            && let Some(media) = &mut self.media
        {
            media.end(now, response.common.call_id.as_ref());
        }
        if let Some(mut response) = step.upstream {
            pop_via(&mut response);
            let code = response.code;
            let bytes = response.encode();
            match self.servers.get_mut(&id) {
                Some(entry) => {
                    let step = match &mut entry.machine {
                        ServerMachine::Invite(m) => m.handle_response(now, code, bytes),
                        ServerMachine::Plain(m) => m.handle_response(now, code, bytes),
                    };
                    self.apply_server_step(now, id, step);
                }
                // The server transaction already ended (a late 2xx): statelessly, by Via.
                None => {
                    if let Some(via) = response.common.vias.get(1)
                        && let Some(target) =
                            upstream_target(via, self.config.listen.first().copied())
                    {
                        self.transmit(target, bytes);
                    }
                }
            }
        }
        self.drop_context_if_done(id);
    }

    /// Sends a CANCEL for branch `index` of context `id` (§9.1), in its own client transaction.
    fn cancel_branch(&mut self, now: Instant, id: u64, index: usize) {
        let Some(branch) = self
            .contexts
            .get_mut(&id)
            .and_then(|c| c.branches.get_mut(index))
        else {
            return;
        };
        if branch.cancel_sent || branch.done {
            return;
        }
        let Some(client) = self.clients.get(&branch.client) else {
            return;
        };
        branch.cancel_sent = true;
        let target = client.target;
        let cancel = cancel_for(client.request());
        let (cancel_id, first) = self.new_client(now, cancel, target, None);
        self.apply_client_step(now, cancel_id, first);
    }

    /// Answers server transaction `id` with a locally generated response.
    fn answer(
        &mut self,
        now: Instant,
        id: u64,
        code: u16,
        reason: &str,
        extra: &[(&'static str, String)],
        body: Option<(&str, Bytes)>,
    ) {
        let Some(entry) = self.servers.get_mut(&id) else {
            return;
        };
        let tag = (code > 100).then_some(entry.to_tag.as_str());
        let bytes = build_response(
            &entry.request,
            code,
            reason,
            tag,
            extra,
            body,
            &self.config.server,
        );
        let step = match &mut entry.machine {
            ServerMachine::Invite(m) => m.handle_response(now, code, bytes),
            ServerMachine::Plain(m) => m.handle_response(now, code, bytes),
        };
        self.apply_server_step(now, id, step);
    }

    fn reject(&mut self, now: Instant, id: u64, reject: &Reject) {
        let (code, reason) = reject.status();
        let reason = reason.to_string();
        if let Some(entry) = self.servers.get(&id) {
            tracing::info!(code, %reason, uri = %message::print_uri(&entry.request.uri), "rejected");
        }
        self.answer(now, id, code, &reason, &reject.extra_headers(), None);
    }

    /// A response we make up for a branch (408 on timeout, 487 for a silent cancelled one).
    fn synthetic_response(
        &self,
        context_id: u64,
        index: usize,
        code: u16,
        reason: &str,
    ) -> Option<Response> {
        let client = self.contexts.get(&context_id)?.branches.get(index)?.client;
        // The client transaction may be gone (Timer B); fall back to the server's request,
        // whose Vias lack ours, so add a placeholder Via that pop_via removes again.
        let request = match self.clients.get(&client) {
            Some(entry) => entry.request().clone(),
            None => {
                let mut r = self.servers.get(&context_id)?.request.clone();
                message::prepend(
                    &mut r.headers,
                    Name::VIA,
                    "SIP/2.0/UDP 0.0.0.0;branch=z9hG4bKfm-synthetic",
                );
                r
            }
        };
        let bytes = build_response(
            &request,
            code,
            reason,
            Some("fm-local"),
            &[],
            None,
            &self.config.server,
        );
        match message::parse(&bytes, false) {
            Ok(Message::Response(r)) => Some(r),
            _ => None,
        }
    }

    fn drop_context_if_done(&mut self, id: u64) {
        let Some(context) = self.contexts.get(&id) else {
            return;
        };
        let server_alive = self.servers.contains_key(&id);
        let clients_alive = context
            .branches
            .iter()
            .any(|b| self.clients.contains_key(&b.client));
        if !server_alive && !clients_alive {
            self.contexts.remove(&id);
        }
    }

    fn arm_server(&mut self, id: u64) {
        if let Some(entry) = self.servers.get(&id) {
            let table = match &entry.machine {
                ServerMachine::Invite(m) => &m.timers,
                ServerMachine::Plain(m) => &m.timers,
            };
            for (timer, at) in table.armed() {
                self.timers.insert((at, TimerRef::Server(id, timer)));
            }
        }
    }

    fn arm_client(&mut self, id: u64) {
        if let Some(entry) = self.clients.get(&id) {
            let table = match &entry.machine {
                ClientMachine::Invite(m) => &m.timers,
                ClientMachine::Plain(m) => &m.timers,
            };
            for (timer, at) in table.armed() {
                self.timers.insert((at, TimerRef::Client(id, timer)));
            }
        }
    }

    fn transmit(&mut self, target: Target, bytes: Bytes) {
        self.outputs.push_back(Output::Transmit(Datagram {
            transport: target.transport,
            local: target.local,
            remote: target.remote,
            bytes,
        }));
    }

    fn is_our_addr(&self, addr: SocketAddr) -> bool {
        self.addrs.contains(&addr)
    }

    /// The local address a relayed request leaves from: our mesh address towards another
    /// appliance (the phone-side address is the same on every appliance, so it means nothing
    /// on the mesh), the address a phone registered to towards that phone, else where the
    /// request arrived.
    fn with_local(&self, now: Instant, target: Target) -> Target {
        if let Some(mesh) = &self.config.mesh
            && self.peer_ips.contains(&target.remote.ip())
        {
            return Target {
                local: mesh.local,
                ..target
            };
        }
        match self.location.by_remote(now, target.remote) {
            Some(b) => Target {
                local: b.target.local,
                ..target
            },
            None => target,
        }
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

/// The status and reason of a final response in `bytes`; `None` for a provisional one.
fn final_status(bytes: &[u8]) -> Option<(u16, String)> {
    let line = bytes.split(|b| *b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.splitn(3, ' ');
    let _version = parts.next()?;
    let status: u16 = parts.next()?.parse().ok()?;
    (status >= 200).then(|| (status, parts.next().unwrap_or("").to_string()))
}

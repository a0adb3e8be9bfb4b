//! The SIP driver: owns the UDP and TCP sockets and moves bytes between them and the sans-IO
//! [`sip::Endpoint`]. It makes no SIP decisions. One task owns the endpoint; socket readers
//! feed it through one bounded channel, and it wakes at `poll_timeout`.
//!
//! UDP sockets have IP_PKTINFO on, so even on a wildcard bind every datagram says which local
//! address it reached, and replies leave from that same address (phones on the AP and peers on
//! the mesh see one consistent address). TCP is framed here by Content-Length, with a hard cap
//! on the size of one message, so nothing is ever buffered without bound.

use crate::storage::SqlStorage;
use bytes::{Bytes, BytesMut};
use nix::sys::socket::{
    self, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, sockopt,
};
use sip::{Datagram, Endpoint, Input, Output, Transport};
use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};

/// Everything that reaches the endpoint's task.
enum NetEvent {
    Datagram(Datagram),
    /// A TCP message whose declared size is over the limit; `bytes` is its head only.
    Oversized(Datagram),
    TcpOpened {
        remote: SocketAddr,
        local: SocketAddr,
        writer: mpsc::Sender<Bytes>,
    },
    TcpClosed {
        remote: SocketAddr,
    },
}

/// A read-only question for the endpoint's task from the status API.
pub(crate) struct StatusRequest {
    pub(crate) reply: oneshot::Sender<(Vec<BindingView>, Vec<StoredView>)>,
}

/// A text typed on the web page, and where its SIP outcome goes: (status, reason).
pub(crate) struct TextRequest {
    pub(crate) text: sip::WebText,
    pub(crate) reply: oneshot::Sender<(u16, String)>,
}

/// A message or voicemail this appliance keeps (its own or a replica), for the status API.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct StoredView {
    pub(crate) id: String,
    pub(crate) aor: String,
    /// `message` or `voicemail`.
    pub(crate) kind: &'static str,
}

/// A binding as the status API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct BindingView {
    pub(crate) aor: String,
    pub(crate) contact: String,
    pub(crate) expires_in: u64,
    pub(crate) q: f32,
    pub(crate) transport: &'static str,
    pub(crate) source: String,
    pub(crate) instance: Option<String>,
    pub(crate) call_id: String,
    /// The display name of the phone's REGISTER, if it sent one.
    pub(crate) display_name: Option<String>,
    /// How long this phone has been registered (across refreshes).
    pub(crate) registered_for_s: u64,
}

/// The bound sockets, created before the driver starts so bind errors stop startup.
pub(crate) struct Sockets {
    udp: Vec<Arc<UdpSocket>>,
    tcp: Vec<TcpListener>,
}

/// Why the SIP sockets could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("sip.listen {addr}: {source}")]
pub(crate) struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Queue depth between socket readers and the endpoint task: enough for a burst, small
/// enough that a flood backs up into the kernel's buffer (which drops) instead of our memory.
const EVENTS: usize = 1024;
/// Messages waiting for one TCP connection's writer.
const WRITER_QUEUE: usize = 64;
/// TCP connections accepted at once; more wait in the listen backlog.
const MAX_TCP: usize = 1024;

impl Sockets {
    /// Binds UDP and TCP on every address.
    pub(crate) fn bind(listen: &[SocketAddr]) -> Result<Sockets, BindError> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for &addr in listen {
            let err = |source| BindError { addr, source };
            udp.push(Arc::new(bind_udp(addr).map_err(err)?));
            tcp.push(bind_tcp(addr, false).map_err(err)?);
        }
        Ok(Sockets { udp, tcp })
    }

    /// The bound addresses (with the real ports when 0 was asked for).
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        socket::setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true).map_err(std::io::Error::from)?;
    } else {
        socket::setsockopt(&s, sockopt::Ipv4PacketInfo, &true).map_err(std::io::Error::from)?;
    }
    // Room for bursts of REGISTERs: the kernel drops first when this is small (NOTES §5.12).
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// A TCP listener on `addr`. With `freebind` the address need not exist yet (`IP_FREEBIND`):
/// the web page listens on the phone-side address, which appears only when the access point
/// comes up, and not at all on a board without Wi-Fi.
pub(crate) fn bind_tcp(addr: SocketAddr, freebind: bool) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        s.set_freebind_v6(freebind)?;
    } else {
        s.set_freebind_v4(freebind)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    TcpListener::from_std(s.into())
}

/// What other tasks ask of the SIP task.
pub(crate) struct Inbox {
    /// The status API's questions.
    pub(crate) status: mpsc::Receiver<StatusRequest>,
    /// What the relay says: calls to end, voicemails recorded, mailbox keys.
    pub(crate) media_news: mpsc::Receiver<crate::driver::media::MediaNews>,
    /// Texts typed on the web page.
    pub(crate) texts: mpsc::Receiver<TextRequest>,
    /// Where the overlay's status requests go (the web side answers them with its report).
    pub(crate) reports: mpsc::Sender<u64>,
}

/// The driver's own settings.
pub(crate) struct Settings {
    /// Largest SIP message read (TCP framing cap).
    pub(crate) max_message_bytes: usize,
    /// `store.restore_after_secs`: paces the inventory told to the overlay.
    pub(crate) restore_after: Duration,
    /// `store.delivery_notice`.
    pub(crate) delivery_notice: bool,
}

/// Runs the driver until `shutdown` turns true.
pub(crate) async fn run(
    mut endpoint: Endpoint<SqlStorage>,
    mut late: mpsc::Receiver<(crate::overlay::Link, sip::MeshSide)>,
    mesh_tx: watch::Sender<Option<mesh::Mesh>>,
    sockets: Sockets,
    settings: Settings,
    inbox: Inbox,
    mut shutdown: watch::Receiver<bool>,
) {
    let Inbox {
        mut status,
        mut media_news,
        mut texts,
        reports,
    } = inbox;
    // Web texts waiting for their final SIP answer, by token.
    let mut texts_waiting: HashMap<u64, oneshot::Sender<(u16, String)>> = HashMap::new();
    let mut next_text = 0u64;
    let Settings {
        max_message_bytes,
        restore_after,
        delivery_notice,
    } = settings;
    let (events_tx, mut events) = mpsc::channel::<NetEvent>(EVENTS);
    let mut readers = tokio::task::JoinSet::new();
    for socket in &sockets.udp {
        readers.spawn(read_udp(socket.clone(), events_tx.clone()));
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    for listener in sockets.tcp {
        readers.spawn(accept_tcp(
            listener,
            events_tx.clone(),
            slots.clone(),
            max_message_bytes,
        ));
    }
    let mut io = Io {
        udp: sockets.udp,
        tcp: HashMap::new(),
        events: events_tx,
        max_message_bytes,
    };

    // Lookup answers come back from their own tasks; bounded like every channel.
    let (lookups_tx, mut lookups) = mpsc::channel::<(u64, Vec<sip::RemoteRoute>)>(64);
    let (replicas_tx, mut fetched) =
        mpsc::channel::<(Vec<sip::StoredMessage>, Vec<sip::StoredVoicemail>)>(64);
    let mut overlay: Option<crate::overlay::Link> = None;
    // What we hold, told to the overlay as often as it swaps inventories with neighbours.
    let mut holdings = tokio::time::interval(mesh::custody::inventory_period(restore_after));
    holdings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = endpoint.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                match event {
                    NetEvent::Datagram(d) => endpoint.handle_input(Instant::now(), Input::Datagram(d)),
                    NetEvent::Oversized(d) => endpoint.handle_input(Instant::now(), Input::Oversized(d)),
                    NetEvent::TcpOpened { remote, local, writer } => {
                        tracing::debug!(%remote, %local, "tcp connection");
                        io.tcp.insert(remote, writer);
                    }
                    NetEvent::TcpClosed { remote } => {
                        io.tcp.remove(&remote);
                    }
                }
            }
            () = sleep => endpoint.handle_input(Instant::now(), Input::Timeout),
            Some(event) = async {
                match overlay.as_mut() {
                    Some(link) => link.events.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let mesh::MeshEvent::Restore { restores } = event {
                    if let Some(link) = &overlay {
                        crate::overlay::restore(&link.mesh, endpoint.storage(), restores);
                    }
                } else if let mesh::MeshEvent::StatusRequest { token } = event {
                    // Unanswered requests expire in the overlay: dropping one here is safe.
                    let _ = reports.try_send(token);
                } else if let mesh::MeshEvent::FetchRequest { token, aor } = &event {
                    // A neighbour asks what waits here for `aor` (its phone just registered).
                    let replicas = crate::overlay::held_for(endpoint.storage(), aor);
                    if let Some(link) = &overlay {
                        let (mesh, token) = (link.mesh.clone(), *token);
                        tokio::spawn(async move { mesh.answer_fetch(token, replicas).await });
                    }
                } else if let Some(command) = crate::overlay::command(event) {
                    endpoint.handle_input(Instant::now(), Input::Command(command));
                }
            }
            Some((link, side)) = late.recv() => {
                // The overlay is up: tell the core where the mesh side is, and everyone what
                // we serve (a restarted appliance is reachable again without re-registrations).
                let _ = mesh_tx.send(Some(link.mesh.clone()));
                endpoint.handle_input(Instant::now(), Input::Command(sip::Command::MeshUp { side }));
                crate::overlay::announce_all(&link.mesh, &endpoint, Instant::now());
                overlay = Some(link);
            }
            Some((messages, voicemails)) = fetched.recv() => {
                endpoint.handle_input(Instant::now(), Input::Command(sip::Command::StoreReplicas { messages, voicemails }));
            }
            _ = holdings.tick(), if overlay.is_some() => {
                if let Some(link) = &overlay {
                    let storage = endpoint.storage();
                    let held = storage.stored().into_iter().map(|(id, aor, _)| (id, aor)).collect();
                    link.mesh.hold(held, storage.gone());
                }
            }
            Some((id, routes)) = lookups.recv() => {
                endpoint.handle_input(Instant::now(), Input::Command(sip::Command::LookupResult { id, routes }));
            }
            Some(request) = status.recv() => {
                let stored = endpoint
                    .storage()
                    .stored()
                    .into_iter()
                    .map(|(id, aor, kind)| StoredView { id, aor, kind })
                    .collect();
                let _ = request.reply.send((views(&endpoint), stored));
            }
            Some(request) = texts.recv() => {
                next_text += 1;
                // A caller that gave up leaves its slot; the map stays small (bounded wait).
                texts_waiting.retain(|_, reply| !reply.is_closed());
                texts_waiting.insert(next_text, request.reply);
                let command = sip::Command::SendText { token: next_text, text: request.text };
                endpoint.handle_input(Instant::now(), Input::Command(command));
            }
            Some(news) = media_news.recv() => {
                endpoint.handle_input(Instant::now(), Input::Command(crate::media::command(news)));
            }
            _ = shutdown.changed() => break,
        }
        while let Some(output) = endpoint.poll_output() {
            match output {
                Output::Transmit(d) => io.send(d),
                Output::Event(sip::Event::BindingsChanged { aor }) => {
                    tracing::debug!(%aor, "bindings changed");
                    if let Some(link) = &overlay {
                        let now = Instant::now();
                        crate::overlay::announce(&link.mesh, &endpoint, &aor, now);
                        // A phone of this extension is here now: collect what other appliances
                        // hold for it, and deliver it here.
                        if endpoint.bindings(now).iter().any(|b| b.aor == aor) {
                            let mesh = link.mesh.clone();
                            let tx = replicas_tx.clone();
                            tokio::spawn(async move {
                                let found = mesh.fetch(aor.0).await;
                                let (messages, voicemails) = crate::overlay::split(found);
                                if !messages.is_empty() || !voicemails.is_empty() {
                                    let _ = tx.send((messages, voicemails)).await;
                                }
                            });
                        }
                    }
                }
                Output::Event(sip::Event::MessageStored { message }) => {
                    if let Some(link) = &overlay {
                        let mesh = link.mesh.clone();
                        let replica = crate::overlay::to_replica(&message);
                        tokio::spawn(async move {
                            let holders = mesh
                                .replicate(vec![replica], crate::overlay::REPLICAS)
                                .await;
                            tracing::info!(id = %message.id, aor = %message.aor, holders, "message replicated");
                        });
                    }
                }
                Output::Event(sip::Event::VoicemailStored { voicemail, peers }) => {
                    if let Some(link) = &overlay {
                        let mesh = link.mesh.clone();
                        let replica = crate::overlay::voicemail_replica(&voicemail);
                        tokio::spawn(async move {
                            let holders = mesh
                                .replicate_to(vec![replica], crate::overlay::REPLICAS, peers)
                                .await;
                            tracing::info!(id = %voicemail.id, aor = %voicemail.aor, holders, "voicemail replicated");
                        });
                    }
                }
                Output::Event(sip::Event::TextAnswered {
                    token,
                    status,
                    reason,
                }) => {
                    if let Some(reply) = texts_waiting.remove(&token) {
                        let _ = reply.send((status, reason));
                    }
                }
                Output::Event(sip::Event::VoicemailDeleted { id, aor }) => {
                    tracing::debug!(%aor, %id, "voicemail deleted");
                    if let Some(link) = &overlay {
                        let mesh = link.mesh.clone();
                        tokio::spawn(async move { mesh.delivered(vec![id]).await });
                    }
                }
                Output::Event(sip::Event::MessageDelivered { id, aor, notice }) => {
                    tracing::debug!(%aor, %id, "message delivered");
                    if let Some(notice) = notice.filter(|_| delivery_notice) {
                        let now = chrono::Local::now();
                        let command = sip::Command::SendNotice {
                            notice,
                            at: now.format("%H:%M").to_string(),
                            datetime: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
                        };
                        endpoint.handle_input(Instant::now(), Input::Command(command));
                    }
                    if let Some(link) = &overlay {
                        let mesh = link.mesh.clone();
                        tokio::spawn(async move { mesh.delivered(vec![id]).await });
                    }
                }
                Output::Event(sip::Event::Lookup { id, aor }) => match &overlay {
                    Some(link) => {
                        let mesh = link.mesh.clone();
                        let tx = lookups_tx.clone();
                        tokio::spawn(async move {
                            let routes = crate::overlay::remote(mesh.lookup(aor.0).await);
                            let _ = tx.send((id, routes)).await;
                        });
                    }
                    None => endpoint.handle_input(
                        Instant::now(),
                        Input::Command(sip::Command::LookupResult {
                            id,
                            routes: Vec::new(),
                        }),
                    ),
                },
            }
        }
    }
    readers.abort_all();
}

fn views(endpoint: &Endpoint<SqlStorage>) -> Vec<BindingView> {
    let now = Instant::now();
    endpoint
        .bindings(now)
        .into_iter()
        .map(|b| BindingView {
            aor: b.aor.0.clone(),
            contact: b.contact.clone(),
            expires_in: b.expires_at.saturating_duration_since(now).as_secs(),
            q: f32::from(b.q) / 1000.0,
            transport: match b.target.transport {
                Transport::Udp => "udp",
                Transport::Tcp => "tcp",
            },
            source: b.source.to_string(),
            instance: b.instance.clone(),
            call_id: b.call_id.clone(),
            display_name: b.display_name.clone(),
            registered_for_s: now.saturating_duration_since(b.since).as_secs(),
        })
        .collect()
}

/// The sending side, owned by the endpoint's task.
struct Io {
    udp: Vec<Arc<UdpSocket>>,
    tcp: HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    events: mpsc::Sender<NetEvent>,
    max_message_bytes: usize,
}

impl Io {
    fn send(&mut self, d: Datagram) {
        match d.transport {
            Transport::Udp => self.send_udp(&d),
            Transport::Tcp => self.send_tcp(d),
        }
    }

    fn send_udp(&self, d: &Datagram) {
        // The socket bound to exactly `local`, else a wildcard one on its port, else any of
        // the right family.
        let family = |s: &&Arc<UdpSocket>| {
            s.local_addr()
                .is_ok_and(|a| a.is_ipv4() == d.remote.is_ipv4())
        };
        let socket = self
            .udp
            .iter()
            .filter(family)
            .find(|s| s.local_addr().is_ok_and(|a| a == d.local))
            .or_else(|| {
                self.udp.iter().filter(family).find(|s| {
                    s.local_addr()
                        .is_ok_and(|a| a.ip().is_unspecified() && a.port() == d.local.port())
                })
            })
            .or_else(|| self.udp.iter().find(family));
        let Some(socket) = socket else {
            tracing::warn!(remote = %d.remote, "no UDP socket for this address family");
            return;
        };
        if let Err(e) = send_from(socket, d.local.ip(), d.remote, &d.bytes) {
            tracing::debug!(remote = %d.remote, error = %e, "UDP send failed");
        }
    }

    fn send_tcp(&mut self, d: Datagram) {
        if let Some(writer) = self.tcp.get(&d.remote) {
            if writer.try_send(d.bytes.clone()).is_ok() {
                return;
            }
            tracing::warn!(remote = %d.remote, "TCP connection backed up or closed; reconnecting");
            self.tcp.remove(&d.remote);
        }
        let events = self.events.clone();
        let max = self.max_message_bytes;
        tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(d.remote)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    serve_tcp(stream, events, max, Some(d.bytes)).await;
                }
                _ => tracing::info!(remote = %d.remote, "TCP connect failed; message dropped"),
            }
        });
    }
}

/// Sends with the source address set through IP_PKTINFO when the socket is a wildcard.
fn send_from(
    socket: &UdpSocket,
    from: IpAddr,
    to: SocketAddr,
    bytes: &[u8],
) -> std::io::Result<()> {
    let bound = socket.local_addr()?;
    let iov = [IoSlice::new(bytes)];
    let dest = SockaddrStorage::from(to);
    let fd = socket.as_raw_fd();
    let result = match (bound.ip().is_unspecified(), from) {
        (true, IpAddr::V4(ip)) if !ip.is_unspecified() => {
            let info = nix::libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: nix::libc::in_addr {
                    s_addr: u32::from(ip).to_be(),
                },
                ipi_addr: nix::libc::in_addr { s_addr: 0 },
            };
            socket::sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&dest),
            )
        }
        (true, IpAddr::V6(ip)) if !ip.is_unspecified() => {
            let info = nix::libc::in6_pktinfo {
                ipi6_addr: nix::libc::in6_addr {
                    s6_addr: ip.octets(),
                },
                ipi6_ifindex: 0,
            };
            socket::sendmsg(
                fd,
                &iov,
                &[ControlMessage::Ipv6PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&dest),
            )
        }
        _ => socket::sendmsg(fd, &iov, &[], MsgFlags::empty(), Some(&dest)),
    };
    result.map(|_| ()).map_err(std::io::Error::from)
}

async fn read_udp(socket: Arc<UdpSocket>, events: mpsc::Sender<NetEvent>) {
    let Ok(bound) = socket.local_addr() else {
        return;
    };
    let mut buf = vec![0u8; 65_536];
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let received = socket.try_io(tokio::io::Interest::READABLE, || {
            recv_with_local(&socket, &mut buf, bound)
        });
        let (len, remote, local) = match received {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive failed");
                continue;
            }
        };
        let d = Datagram {
            transport: Transport::Udp,
            local,
            remote,
            bytes: Bytes::copy_from_slice(&buf[..len]),
        };
        if events.send(NetEvent::Datagram(d)).await.is_err() {
            return;
        }
    }
}

/// One datagram with the local address it arrived on (IP_PKTINFO / IPV6_PKTINFO).
fn recv_with_local(
    socket: &UdpSocket,
    buf: &mut [u8],
    bound: SocketAddr,
) -> std::io::Result<(usize, SocketAddr, SocketAddr)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::libc::in6_pktinfo);
    let msg = socket::recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    let remote = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
                })
        })
        .ok_or_else(|| std::io::Error::other("datagram without a source address"))?;
    let mut local = bound;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    local = SocketAddr::new(
                        IpAddr::from(u32::from_be(info.ipi_addr.s_addr).to_be_bytes()),
                        bound.port(),
                    );
                }
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    local = SocketAddr::new(IpAddr::from(info.ipi6_addr.s6_addr), bound.port());
                }
                _ => {}
            }
        }
    }
    Ok((msg.bytes, remote, local))
}

async fn accept_tcp(
    listener: TcpListener,
    events: mpsc::Sender<NetEvent>,
    slots: Arc<tokio::sync::Semaphore>,
    max: usize,
) {
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let events = events.clone();
        tokio::spawn(async move {
            serve_tcp(stream, events, max, None).await;
            drop(permit);
        });
    }
}

/// Reads framed SIP messages from one connection and writes what the endpoint sends to it.
async fn serve_tcp(
    stream: TcpStream,
    events: mpsc::Sender<NetEvent>,
    max: usize,
    first: Option<Bytes>,
) {
    let (Ok(remote), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
        return;
    };
    let (mut read, mut write) = stream.into_split();
    let (writer_tx, mut writer_rx) = mpsc::channel::<Bytes>(WRITER_QUEUE);
    if let Some(first) = first {
        let _ = writer_tx.try_send(first);
    }
    if events
        .send(NetEvent::TcpOpened {
            remote,
            local,
            writer: writer_tx,
        })
        .await
        .is_err()
    {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(bytes) = writer_rx.recv().await {
            if write.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut framer = Framer::new(max);
    let mut chunk = vec![0u8; 16 * 1024];
    // A connection idle for this long is closed; phones keep theirs alive (RFC 5626).
    let idle = Duration::from_secs(600);
    'conn: loop {
        let n = match tokio::time::timeout(idle, read.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => n,
        };
        framer.push(&chunk[..n]);
        loop {
            match framer.next() {
                Frame::Need => break,
                Frame::Message(bytes) => {
                    let d = Datagram {
                        transport: Transport::Tcp,
                        local,
                        remote,
                        bytes,
                    };
                    if events.send(NetEvent::Datagram(d)).await.is_err() {
                        break 'conn;
                    }
                }
                Frame::Oversized(head) => {
                    let d = Datagram {
                        transport: Transport::Tcp,
                        local,
                        remote,
                        bytes: head,
                    };
                    let _ = events.send(NetEvent::Oversized(d)).await;
                }
                Frame::Garbage(why) => {
                    tracing::info!(%remote, why, "closing TCP connection");
                    break 'conn;
                }
            }
        }
    }
    writer.abort();
    let _ = events.send(NetEvent::TcpClosed { remote }).await;
}

/// What the framer found in the stream.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// More bytes are needed.
    Need,
    /// One whole message (head and Content-Length bytes of body).
    Message(Bytes),
    /// A message over the limit: its head; the body is being skipped.
    Oversized(Bytes),
    /// Not SIP framing: close the connection.
    Garbage(&'static str),
}

/// Content-Length framing for SIP over a stream (RFC 3261 §18.3), bounded by `max`.
struct Framer {
    buf: BytesMut,
    max: usize,
    /// Body bytes of an oversized message still to discard.
    skip: usize,
}

impl Framer {
    fn new(max: usize) -> Self {
        Framer {
            buf: BytesMut::new(),
            max,
            skip: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let skipped = self.skip.min(bytes.len());
        self.skip -= skipped;
        self.buf.extend_from_slice(&bytes[skipped..]);
    }

    fn next(&mut self) -> Frame {
        // Keep-alive CRLFs between messages (RFC 5626 §4.4.1) are not messages.
        let lead = self
            .buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        let _ = self.buf.split_to(lead);
        if self.buf.is_empty() {
            return Frame::Need;
        }
        // A stream that does not start with a SIP start line cannot be framed: give up on it
        // rather than guess where the next message starts.
        let line_end = self
            .buf
            .iter()
            .position(|b| *b == b'\n')
            .unwrap_or(self.buf.len());
        if line_end < self.buf.len() && !is_start_line(&self.buf[..line_end]) {
            return Frame::Garbage("not a SIP start line");
        }
        let Some(head_end) = find_head_end(&self.buf) else {
            return if self.buf.len() > self.max {
                Frame::Garbage("header larger than the limit")
            } else {
                Frame::Need
            };
        };
        let Some(length) = content_length(&self.buf[..head_end]) else {
            return Frame::Garbage("bad Content-Length");
        };
        if head_end + length > self.max {
            let head = self.buf.split_to(head_end).freeze();
            let have = self.buf.len().min(length);
            let _ = self.buf.split_to(have);
            self.skip = length - have;
            return Frame::Oversized(head);
        }
        if self.buf.len() < head_end + length {
            return Frame::Need;
        }
        Frame::Message(self.buf.split_to(head_end + length).freeze())
    }
}

/// `SIP/x.y ...` (a status line) or `... SIP/x.y` (a request line), leniently: the parser
/// gives the exact answer (505, 400); the framer only needs to know it is SIP at all.
fn is_start_line(line: &[u8]) -> bool {
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches('\r');
    line.get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
        || line
            .rsplit(' ')
            .next()
            .and_then(|v| v.get(..4))
            .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The Content-Length of a head (`l` is its compact form); absent means 0, and the parser
/// then answers 400 because stream transports require it.
fn content_length(head: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(head);
    for line in text.lines() {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
                return value.trim().parse().ok();
            }
        }
    }
    Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_framer_splits_messages_skips_keepalives_and_bounds_size() {
        let mut f = Framer::new(100);
        f.push(b"\r\n\r\nOPTIONS x SIP/2.0\r\nContent-Length: 2\r\n\r\nhiREG");
        assert_eq!(
            f.next(),
            Frame::Message(Bytes::from_static(
                b"OPTIONS x SIP/2.0\r\nContent-Length: 2\r\n\r\nhi"
            ))
        );
        assert_eq!(f.next(), Frame::Need);
        f.push(b"ISTER y SIP/2.0\r\nl: 500\r\n\r\n");
        assert!(matches!(f.next(), Frame::Oversized(_)));
        f.push(&[b'x'; 500]);
        f.push(b"BYE z SIP/2.0\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(f.next(), Frame::Message(m) if m.starts_with(b"BYE")));
        let mut g = Framer::new(100);
        g.push(&[b'a'; 200]);
        assert_eq!(g.next(), Frame::Garbage("header larger than the limit"));
        let mut h = Framer::new(100);
        h.push(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(h.next(), Frame::Garbage("not a SIP start line"));
    }
}

//! The media driver: owns the relay's UDP sockets and moves packets in and out of the relay.
//!
//! Every port of the range is bound at start (a port another program holds is left out of
//! the pool), so a port the relay hands out in SDP is always ours. One small task per socket
//! reads; whichever task holds the lock sends what the relay asks for, from the socket it
//! names. One timer task feeds `Timeout` at the relay's deadline.

use crate::media::{MediaPlane, RECENT_CALLS};
use bytes::Bytes;
use media::relay::{Datagram, Event, Input, Output};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// The relay's sockets by local port.
pub(crate) struct MediaSockets {
    sockets: HashMap<u16, Arc<UdpSocket>>,
}

impl MediaSockets {
    /// Binds every port of `first..=last` on all addresses; returns the sockets and the even
    /// ports whose pair (RTP and RTCP) both bound.
    pub(crate) fn bind(first: u16, last: u16) -> (MediaSockets, Vec<u16>) {
        let mut sockets = HashMap::new();
        let mut pairs = Vec::new();
        let mut port = first;
        while port < last {
            let rtp = bind(port);
            let rtcp = bind(port + 1);
            if let (Some(rtp), Some(rtcp)) = (rtp, rtcp) {
                sockets.insert(port, Arc::new(rtp));
                sockets.insert(port + 1, Arc::new(rtcp));
                pairs.push(port);
            }
            port = match port.checked_add(2) {
                Some(p) => p,
                None => break,
            };
        }
        (MediaSockets { sockets }, pairs)
    }
}

fn bind(port: u16) -> Option<UdpSocket> {
    let socket = std::net::UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port))).ok()?;
    socket.set_nonblocking(true).ok()?;
    UdpSocket::from_std(socket).ok()
}

/// What the relay tells the SIP side.
#[derive(Debug)]
pub(crate) enum MediaNews {
    /// End this call with BYE (its media timed out, or a recording reached its maximum).
    End(String),
    /// A voicemail recording ended with audio in it.
    Recorded {
        mailbox: String,
        from: String,
        audio: Vec<u8>,
        duration: std::time::Duration,
    },
    /// The owner of a mailbox pressed a key or heard a message out.
    Mailbox(sip::MailboxAction),
}

/// The channel of [`MediaNews`] to the SIP task.
pub(crate) type News = mpsc::Sender<MediaNews>;

/// Runs until `stop` turns true.
pub(crate) async fn run(
    plane: MediaPlane,
    sockets: MediaSockets,
    news: News,
    mut stop: watch::Receiver<bool>,
) {
    let sockets = Arc::new(sockets);
    let mut readers = Vec::with_capacity(sockets.sockets.len());
    for (&port, socket) in &sockets.sockets {
        let socket = socket.clone();
        let plane = plane.clone();
        let all = sockets.clone();
        let news = news.clone();
        readers.push(tokio::spawn(async move {
            loop {
                if socket.readable().await.is_err() {
                    continue;
                }
                // On the stack and never held across an await: a thousand idle readers cost
                // no buffers.
                let mut buf = [0u8; 2048];
                // Spurious wake-ups, and ICMP errors (port unreachable after a phone left).
                let Ok((n, remote)) = socket.try_recv_from(&mut buf) else {
                    continue;
                };
                let now = Instant::now();
                let mut shared = plane.lock();
                let before = shared.relay.poll_timeout();
                shared.relay.handle_input(
                    now,
                    Input::Datagram(Datagram {
                        local_port: port,
                        remote,
                        bytes: Bytes::copy_from_slice(&buf[..n]),
                    }),
                );
                drain(&mut shared, &all, &news);
                let after = shared.relay.poll_timeout();
                drop(shared);
                if after < before {
                    plane.wake.notify_one();
                }
            }
        }));
    }
    loop {
        let deadline = plane.lock().relay.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {
                let mut shared = plane.lock();
                shared.relay.handle_input(Instant::now(), Input::Timeout);
                drain(&mut shared, &sockets, &news);
            }
            _ = plane.wake.notified() => {
                let mut shared = plane.lock();
                drain(&mut shared, &sockets, &news);
            }
            _ = stop.changed() => break,
        }
    }
    for reader in readers {
        reader.abort();
    }
}

fn drain(shared: &mut crate::media::Shared, sockets: &MediaSockets, news: &News) {
    while let Some(output) = shared.relay.poll_output() {
        match output {
            Output::Transmit(d) => {
                if let Some(socket) = sockets.sockets.get(&d.local_port) {
                    // UDP: a full socket buffer drops the packet, as the network would.
                    let _ = socket.try_send_to(&d.bytes, d.remote);
                }
            }
            Output::Event(Event::TimedOut { call_id } | Event::Finished { call_id }) => {
                if news.try_send(MediaNews::End(call_id.clone())).is_err() {
                    tracing::warn!(call_id, "call end not passed on (SIP task busy)");
                }
            }
            Output::Event(Event::Recorded {
                call_id,
                label,
                audio,
                duration,
            }) => {
                // A voicemail must never be dropped for a busy channel: wait in a task.
                let recorded = MediaNews::Recorded {
                    mailbox: label.mailbox,
                    from: label.from,
                    audio,
                    duration,
                };
                let tx = news.clone();
                tokio::spawn(async move {
                    if tx.send(recorded).await.is_err() {
                        tracing::error!(call_id, "voicemail lost: the SIP task is gone");
                    }
                });
            }
            Output::Event(Event::Mailbox { call_id, action }) => {
                let action = match action {
                    media::relay::MailboxAction::Deleted(id) => sip::MailboxAction::Deleted(id),
                    media::relay::MailboxAction::Heard(id) => sip::MailboxAction::Heard(id),
                };
                let tx = news.clone();
                tokio::spawn(async move {
                    if tx.send(MediaNews::Mailbox(action)).await.is_err() {
                        tracing::warn!(call_id, "mailbox key not passed on");
                    }
                });
            }
            Output::Event(Event::Ended(report)) => {
                if shared.recent.len() >= RECENT_CALLS {
                    shared.recent.pop_front();
                }
                shared.recent.push_back(report);
            }
        }
    }
}

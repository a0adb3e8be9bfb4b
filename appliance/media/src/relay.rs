//! The relay: every anchored call's streams, their two legs, and the packets between them.
//!
//! A **session** is one call (keyed by Call-ID). Each relayed m-line is a **stream** with two
//! **legs**: the one towards the caller and the one towards the callee. A leg owns a pair of
//! our ports (RTP on an even port, RTCP on the next). A packet that arrives on one leg's port
//! leaves from the other leg's port, so each far end sees one address for us (symmetric RTP).
//! Each leg **latches** on the first valid packet: from then on only that source is accepted,
//! and replies go to it rather than to the SDP address (phones behind NAT). A stream whose two
//! sides share no codec is **transcoded**: each direction is decoded into a jitter buffer,
//! resampled and re-encoded on a 20 ms tick; otherwise packets pass untouched, unbuffered.
//!
//! Two kinds of session answer the phone themselves, with one leg of our own ports: the echo
//! service plays packets back, and voicemail ([`Relay::handle_record_offer`],
//! [`Relay::handle_playback_offer`], the media in [`crate::voicemail`]) speaks to the phone
//! on the same 20 ms tick as transcoding.
//!
//! Drive it like the SIP endpoint: [`Relay::handle_input`], then drain [`Relay::poll_output`],
//! then sleep until [`Relay::poll_timeout`]. The SIP side calls [`Relay::handle_sdp`] with every
//! SDP body that crosses the appliance and [`Relay::end`] when the dialog ends.

use crate::codec::Codec;
use crate::dtmf;
use crate::quality::{CodecImpairment, MosModel, Quality, ReceiveStats, RttProbe};
use crate::rtcp;
use crate::rtp::{Header, Packet};
use crate::sdp::{self, Format, SdpError};
use crate::transcode::Transcoder;
use crate::voicemail::{PlaybackItem, Player, Recorder};
use bytes::Bytes;
use ezk_sdp_types::{Direction, SessionDescription};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

pub use crate::voicemail::MailboxAction;

/// How the relay behaves; the daemon fills it from `[media]`.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Even RTP ports the driver has bound (with the odd port above each): the pool.
    pub ports: Vec<u16>,
    /// An active stream silent this long in both directions ends its call (RTP and RTCP both
    /// count; a held or inactive stream is never timed out).
    pub media_timeout: Duration,
    /// At most this many calls at once; more get 503.
    pub max_calls: usize,
    /// How long the echo service waits before it plays back what it heard.
    pub echo_delay: Duration,
    /// Codecs added to offers sent to our own phones, so a phone that shares no codec with
    /// the far end can still answer: we then transcode.
    pub transcode: Vec<Codec>,
    /// Seed for SSRCs of the streams we originate (transcoded legs).
    pub rng_seed: u64,
    /// A voicemail recording stops here ([`Event::Finished`]).
    pub max_recording: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            ports: (20000..21000).step_by(2).collect(),
            media_timeout: Duration::from_secs(60),
            max_calls: 200,
            echo_delay: Duration::from_millis(500),
            transcode: vec![Codec::Opus, Codec::Pcmu, Codec::Pcma],
            rng_seed: 0,
            max_recording: Duration::from_secs(180),
        }
    }
}

/// One packet in or out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Our port: where it arrived, or where it must leave from.
    pub local_port: u16,
    pub remote: SocketAddr,
    pub bytes: Bytes,
}

/// What the relay is fed.
#[derive(Debug)]
pub enum Input {
    Datagram(Datagram),
    /// The deadline from [`Relay::poll_timeout`] passed.
    Timeout,
}

/// What the relay asks for.
#[derive(Debug)]
pub enum Output {
    Transmit(Datagram),
    Event(Event),
}

/// What the daemon should know.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// A stream of this call was silent for the media timeout: the call should end (BYE on
    /// both legs). The session is already released.
    TimedOut { call_id: String },
    /// A session ended (dialog over, timed out or replaced); its figures, for the log and the
    /// operator's views.
    Ended(CallReport),
    /// A voicemail recording session was released (by [`Relay::end`] or a media timeout) and
    /// held a message; store it. Comes before that session's [`Event::Ended`].
    Recorded {
        call_id: String,
        label: RecordingLabel,
        /// Opus frames packed by [`crate::voicemail::pack`].
        audio: Vec<u8>,
        duration: Duration,
    },
    /// A recording reached [`RelayConfig::max_recording`]: end the call (BYE, then
    /// [`Relay::end`], which emits [`Event::Recorded`]). Emitted once.
    Finished { call_id: String },
    /// The listener of a mailbox deleted a message, or heard it.
    Mailbox {
        call_id: String,
        action: MailboxAction,
    },
}

/// Whose voicemail a recording is, carried untouched into [`Event::Recorded`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingLabel {
    pub mailbox: String,
    pub from: String,
}

/// Where an SDP body is going: our address on that side, and whether it is one of our phones
/// (offers to our phones get the codecs we can transcode to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Toward {
    pub ip: IpAddr,
    pub phone: bool,
}

/// The two ends of a call, named after the initial INVITE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Party {
    Caller = 0,
    Callee = 1,
}

impl Party {
    fn other(self) -> Party {
        match self {
            Party::Caller => Party::Callee,
            Party::Callee => Party::Caller,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Party::Caller => "caller",
            Party::Callee => "callee",
        }
    }
}

/// Figures of one leg: what arrived from its far end.
#[derive(Clone, Debug, PartialEq)]
pub struct LegReport {
    pub leg: &'static str,
    /// The far end we latched on, or the SDP address.
    pub remote: Option<SocketAddr>,
    pub quality: Quality,
    /// Packets from other sources after latching, and packets that were not RTP/RTCP.
    pub dropped: u64,
}

/// Figures of one stream.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamReport {
    pub media: String,
    /// `"PCMU<->opus"` when transcoded.
    pub transcoded: Option<String>,
    pub legs: Vec<LegReport>,
}

/// Figures of one call.
#[derive(Clone, Debug, PartialEq)]
pub struct CallReport {
    pub call_id: String,
    pub duration: Duration,
    pub echo: bool,
    /// What the session is: `"relay"`, `"echo"`, `"record"` (voicemail) or `"playback"`.
    pub service: &'static str,
    pub streams: Vec<StreamReport>,
}

#[derive(Debug)]
struct Leg {
    /// Our RTP port; RTCP is `port + 1`.
    port: u16,
    /// Where the SDP says to send (RTP, RTCP).
    sdp_rtp: Option<SocketAddr>,
    sdp_rtcp: Option<SocketAddr>,
    /// Where the first packet came from: the only source accepted afterwards.
    latched_rtp: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    /// The far end multiplexes RTCP on the RTP port (RFC 5761).
    mux: bool,
    stats: ReceiveStats,
    /// Round trips to this leg's far end, from SRs that went out on it.
    rtt: RttProbe,
    last_rtt: Option<Duration>,
    /// Every packet relayed from this leg's far end, across SSRC changes.
    packets: u64,
    bytes: u64,
    dropped: u64,
}

impl Leg {
    fn new(port: u16) -> Leg {
        Leg {
            port,
            sdp_rtp: None,
            sdp_rtcp: None,
            latched_rtp: None,
            latched_rtcp: None,
            mux: false,
            stats: ReceiveStats::default(),
            rtt: RttProbe::default(),
            last_rtt: None,
            packets: 0,
            bytes: 0,
            dropped: 0,
        }
    }

    fn rtp_destination(&self) -> Option<SocketAddr> {
        self.latched_rtp.or(self.sdp_rtp)
    }

    fn rtcp_destination(&self) -> Option<(u16, SocketAddr)> {
        if self.mux {
            return self.rtp_destination().map(|d| (self.port, d));
        }
        self.latched_rtcp
            .or(self.sdp_rtcp)
            .map(|d| (self.port + 1, d))
    }

    /// A new SDP address from this leg's far end: a moved phone is latched afresh.
    fn set_sdp(&mut self, rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>, mux: bool) {
        if rtp.is_some() && rtp != self.sdp_rtp {
            self.latched_rtp = None;
            self.latched_rtcp = None;
        }
        if rtp.is_some() {
            self.sdp_rtp = rtp;
            self.sdp_rtcp = rtcp;
        }
        self.mux = mux;
    }

    fn report(&self, leg: &'static str, codec: Option<Codec>, buffer: Duration) -> LegReport {
        let model = MosModel {
            codec: match codec {
                Some(Codec::Opus) => CodecImpairment::OPUS,
                _ => CodecImpairment::G711_PLC,
            },
            // A relayed leg adds no buffer; the phone's own is unknown.
            jitter_buffer: (!buffer.is_zero()).then_some(buffer),
            frame: TICK,
        };
        let mut quality = self.stats.quality(self.last_rtt, &model);
        // The source's statistics restart with a new SSRC; the leg's counts do not.
        quality.packets = self.packets;
        quality.bytes = self.bytes;
        if self.packets == 0 {
            // Nothing heard: no estimate, rather than a perfect one.
            quality.mos = 0.0;
        }
        LegReport {
            leg,
            remote: self.latched_rtp.or(self.sdp_rtp),
            quality,
            dropped: self.dropped,
        }
    }
}

/// One direction of a transcoded stream: packets arriving on leg `from` leave on the other.
struct Direction1 {
    in_pt: u8,
    out_pt: u8,
    transcoder: Transcoder,
    out: Header,
    /// Samples per 20 ms in the outgoing clock.
    out_frame: u32,
    started: bool,
    events: Option<EventMap>,
    /// What we sent, for our sender reports (we are the RTP sender on a transcoded leg, so the
    /// far end's receiver reports answer ours: that is how its round trip is measured).
    packets_out: u32,
    octets_out: u32,
    next_report: Instant,
}

/// RFC 4733 events re-timed from one leg's clock to the other's.
struct EventMap {
    in_pt: u8,
    out_pt: u8,
    in_rate: u32,
    out_rate: u32,
    /// The event being played: its timestamp in and the one we gave it out.
    current: Option<(u32, u32)>,
}

struct Transcoding {
    /// Indexed by the leg the packets arrive on.
    dirs: [Direction1; 2],
    codecs: [Codec; 2],
    next_tick: Instant,
}

const TICK: Duration = Duration::from_millis(20);
/// How often we send an RTCP sender report on a leg whose RTP we originate (RFC 3550 §6.2's
/// 5 s minimum).
const REPORT_EVERY: Duration = Duration::from_secs(5);

struct Stream {
    media: String,
    /// Indexed by [`Party`].
    legs: [Leg; 2],
    /// Relayed at all (port not 0 on both sides, a transport we carry).
    active: bool,
    hold: bool,
    last_activity: Instant,
    transcoding: Option<Transcoding>,
    /// The codec each leg speaks, when known (for the MOS estimate).
    codecs: [Option<Codec>; 2],
    /// RTP clock rate per payload type, from every SDP of the call, and whether the type is
    /// an RFC 4733 event or comfort noise (no jitter from those).
    clocks: Vec<(u8, u32, bool)>,
}

impl Stream {
    fn learn_clocks(&mut self, md: &ezk_sdp_types::MediaDescription) {
        for m in &md.rtpmap {
            if self.clocks.len() >= 64 || self.clocks.iter().any(|(pt, ..)| *pt == m.payload) {
                continue;
            }
            let untimed = m.encoding.eq_ignore_ascii_case("telephone-event")
                || m.encoding.eq_ignore_ascii_case("CN");
            self.clocks.push((m.payload, m.clock_rate.max(1), untimed));
        }
    }

    /// (clock rate, untimed) of a payload type; RFC 3551's static audio types are 8 kHz
    /// (13 is comfort noise).
    fn clock_of(&self, pt: u8) -> (u32, bool) {
        self.clocks
            .iter()
            .find(|(p, ..)| *p == pt)
            .map_or((8000, pt == 13), |(_, rate, untimed)| (*rate, *untimed))
    }
}

struct Pending {
    offerer: Party,
    offer: SessionDescription,
    /// Per m-line: the payload types we added for transcoding.
    added: Vec<Vec<u8>>,
}

struct Echo {
    queue: VecDeque<(Instant, u16, SocketAddr, Bytes)>,
}

/// A voicemail service on one m-line of a session.
struct Voicemail {
    /// The served stream; its caller leg is the phone.
    stream: usize,
    codec: Codec,
    payload_type: u8,
    next_tick: Instant,
    service: Service,
}

enum Service {
    Record {
        recorder: Box<Recorder>,
        label: RecordingLabel,
        finished: bool,
    },
    Play(Box<Player>),
}

impl Voicemail {
    /// Whether it still has something to do on the tick: playing, or recording.
    fn is_ticking(&self) -> bool {
        match &self.service {
            Service::Record { recorder, .. } => !recorder.is_full(),
            Service::Play(player) => !player.is_done(),
        }
    }

    /// Runs the ticks due at `now`: at most a few, like a transcoded stream, so a stalled
    /// process does not burst audio at the phone.
    fn handle_ticks(
        &mut self,
        now: Instant,
        call_id: &str,
        streams: &mut [Stream],
        outputs: &mut Vec<Output>,
    ) {
        let Some(stream) = streams.get_mut(self.stream) else {
            return;
        };
        let mut ticks = 0;
        while self.is_ticking() && self.next_tick <= now && ticks < 5 {
            ticks += 1;
            self.next_tick += TICK;
            let packet = match &mut self.service {
                Service::Record {
                    recorder, finished, ..
                } => {
                    let packet = recorder.handle_tick(now);
                    if recorder.is_full() && !*finished {
                        *finished = true;
                        tracing::info!(call_id, "voicemail reached its maximum length");
                        outputs.push(Output::Event(Event::Finished {
                            call_id: call_id.to_string(),
                        }));
                    }
                    packet
                }
                Service::Play(player) => {
                    let packet = player.handle_tick();
                    while let Some(action) = player.poll_action() {
                        outputs.push(Output::Event(Event::Mailbox {
                            call_id: call_id.to_string(),
                            action,
                        }));
                    }
                    packet
                }
            };
            // A phone may send nothing while it listens (to the greeting, or to its
            // mailbox): while we play, the call is alive, and the media timeout counts from
            // our last packet.
            if packet.is_some() {
                stream.last_activity = now;
            }
            let leg = &stream.legs[0];
            if let Some(bytes) = packet
                && let Some(dest) = leg.rtp_destination()
            {
                outputs.push(Output::Transmit(Datagram {
                    local_port: leg.port,
                    remote: dest,
                    bytes: Bytes::from(bytes),
                }));
            }
        }
        if self.next_tick <= now {
            self.next_tick = now + TICK;
        }
    }
}

struct Session {
    caller_tag: String,
    started: Instant,
    streams: Vec<Stream>,
    pending: Option<Pending>,
    /// The last SDP in and out per sender, so retransmitted 2xx are rewritten identically.
    last: Vec<(String, Bytes, IpAddr, Bytes)>,
    echo: Option<Echo>,
    voicemail: Option<Voicemail>,
}

/// Which leg a port belongs to.
#[derive(Clone, Debug)]
struct PortUse {
    call_id: String,
    stream: usize,
    party: Party,
}

/// At most this many packets wait in one echo session (10 s of 20 ms audio).
const ECHO_QUEUE: usize = 500;
/// How often silent streams are looked for.
const SWEEP: Duration = Duration::from_secs(1);

/// The media relay. See the module documentation.
pub struct Relay {
    config: RelayConfig,
    free: VecDeque<u16>,
    ports: HashMap<u16, PortUse>,
    sessions: BTreeMap<String, Session>,
    outputs: VecDeque<Output>,
    next_sweep: Instant,
    ssrc_state: u64,
    /// The zero of the NTP timestamps in our sender reports (only their differences matter).
    epoch: Instant,
}

impl Relay {
    pub fn new(now: Instant, config: RelayConfig) -> Relay {
        Relay {
            free: config.ports.iter().copied().collect(),
            ports: HashMap::new(),
            sessions: BTreeMap::new(),
            outputs: VecDeque::new(),
            next_sweep: now + SWEEP,
            epoch: now,
            ssrc_state: config.rng_seed | 1,
            config,
        }
    }

    /// Calls in progress and free port pairs.
    pub fn load(&self) -> (usize, usize) {
        (self.sessions.len(), self.free.len())
    }

    /// Live figures of every call.
    pub fn reports(&self, now: Instant) -> Vec<CallReport> {
        self.sessions
            .iter()
            .map(|(id, s)| report(id, s, now))
            .collect()
    }

    /// Rewrites an SDP body that crosses the appliance so its sender's peer sends media to us.
    /// `sender_tag` is the From tag of the request (or of the request a response answers, for
    /// SDP in responses: then the sender is the other party, whose tag is the To tag, so pass
    /// the To tag). Whether the body is an offer or an answer follows from the session state.
    pub fn handle_sdp(
        &mut self,
        now: Instant,
        call_id: &str,
        sender_tag: &str,
        body: &[u8],
        toward: Toward,
    ) -> Result<Bytes, SdpError> {
        if let Some(session) = self.sessions.get(call_id)
            && let Some((_, _, _, out)) = session.last.iter().find(|(tag, bytes, ip, _)| {
                tag == sender_tag && bytes[..] == body[..] && *ip == toward.ip
            })
        {
            return Ok(out.clone());
        }
        let mut sd = sdp::parse(body)?;
        if !self.sessions.contains_key(call_id) {
            if self.sessions.len() >= self.config.max_calls {
                return Err(SdpError::TooManyCalls);
            }
            self.sessions.insert(
                call_id.to_string(),
                Session {
                    caller_tag: sender_tag.to_string(),
                    started: now,
                    streams: Vec::new(),
                    pending: None,
                    last: Vec::new(),
                    echo: None,
                    voicemail: None,
                },
            );
        }
        let session = self.sessions.get(call_id).expect("inserted above");
        let party = if session.caller_tag == sender_tag {
            Party::Caller
        } else {
            Party::Callee
        };
        let is_answer = session.pending.as_ref().is_some_and(|p| p.offerer != party);
        let result = if is_answer {
            self.answer(now, call_id, party, &mut sd, toward)
        } else {
            self.offer(now, call_id, party, &mut sd, toward)
        };
        match result {
            Ok(()) => {
                let out = sdp::encode(&sd);
                let session = self.sessions.get_mut(call_id).expect("exists");
                if session.last.len() >= 8 {
                    session.last.remove(0);
                }
                session.last.push((
                    sender_tag.to_string(),
                    Bytes::copy_from_slice(body),
                    toward.ip,
                    out.clone(),
                ));
                Ok(out)
            }
            Err(e) => {
                if self
                    .sessions
                    .get(call_id)
                    .is_some_and(|s| s.streams.is_empty())
                {
                    self.release(now, call_id, false);
                }
                Err(e)
            }
        }
    }

    fn offer(
        &mut self,
        now: Instant,
        call_id: &str,
        offerer: Party,
        sd: &mut SessionDescription,
        toward: Toward,
    ) -> Result<(), SdpError> {
        let original = sd.clone();
        let existing = self.sessions[call_id].streams.len();
        let wanted = sd.media_descriptions.len();
        // Ports for the new m-lines first, so exhaustion refuses the offer before anything
        // changes.
        let new_relayed: Vec<bool> = sd.media_descriptions[existing.min(wanted)..]
            .iter()
            .map(|m| m.media.port != 0 && sdp::is_relayable(m))
            .collect();
        let needed = 2 * new_relayed.iter().filter(|r| **r).count();
        if needed > self.free.len() {
            tracing::warn!(
                call_id,
                needed,
                free = self.free.len(),
                "no relay ports free"
            );
            return Err(SdpError::NoPorts);
        }
        for (offset, relayed) in new_relayed.into_iter().enumerate() {
            let index = existing + offset;
            let (a, b) = if relayed {
                (
                    self.claim_pair(call_id, index, Party::Caller),
                    self.claim_pair(call_id, index, Party::Callee),
                )
            } else {
                (0, 0)
            };
            let media = sd.media_descriptions[index].media.media_type.to_string();
            self.sessions
                .get_mut(call_id)
                .expect("exists")
                .streams
                .push(Stream {
                    media,
                    legs: [Leg::new(a), Leg::new(b)],
                    active: relayed,
                    hold: false,
                    last_activity: now,
                    transcoding: None,
                    codecs: [None, None],
                    clocks: Vec::new(),
                });
        }
        let transcode = self.config.transcode.clone();
        let session = self.sessions.get_mut(call_id).expect("exists");
        let mut ports = Vec::with_capacity(wanted);
        let mut added = Vec::with_capacity(wanted);
        for index in 0..wanted {
            let Some(stream) = session.streams.get_mut(index) else {
                ports.push(None);
                added.push(Vec::new());
                continue;
            };
            let md = &sd.media_descriptions[index];
            let relayed = stream.active && md.media.port != 0 && sdp::is_relayable(md);
            let (rtp, rtcp) = sdp::destinations(&original, index);
            stream.learn_clocks(md);
            let leg = &mut stream.legs[offerer as usize];
            leg.set_sdp(rtp, rtcp, md.rtcp_mux);
            stream.hold = sdp::is_hold(&original, index);
            let mut pts = Vec::new();
            if relayed && toward.phone && sdp::is_audio(&original, index) {
                let md = &mut sd.media_descriptions[index];
                let decodable = sdp::formats(md)
                    .iter()
                    .any(|(_, f)| matches!(f, Format::Codec(_)));
                if decodable {
                    pts = sdp::add_codecs(md, &transcode);
                }
            }
            added.push(pts);
            ports.push(relayed.then_some(stream.legs[offerer.other() as usize].port));
        }
        sdp::anchor(sd, toward.ip, &ports);
        session.pending = Some(Pending {
            offerer,
            offer: original,
            added,
        });
        tracing::debug!(
            call_id,
            party = offerer.as_str(),
            streams = wanted,
            "offer anchored"
        );
        Ok(())
    }

    fn answer(
        &mut self,
        now: Instant,
        call_id: &str,
        answerer: Party,
        sd: &mut SessionDescription,
        toward: Toward,
    ) -> Result<(), SdpError> {
        let session = self.sessions.get_mut(call_id).expect("exists");
        let Some(pending) = session.pending.take() else {
            return Err(SdpError::AnswerMismatch);
        };
        if sd.media_descriptions.len() != pending.offer.media_descriptions.len() {
            session.pending = Some(pending);
            return Err(SdpError::AnswerMismatch);
        }
        let original = sd.clone();
        let offerer = pending.offerer;
        let mut ports = Vec::new();
        for index in 0..sd.media_descriptions.len() {
            let Some(stream) = session.streams.get_mut(index) else {
                ports.push(None);
                continue;
            };
            let answered = &original.media_descriptions[index];
            let offered = &pending.offer.media_descriptions[index];
            let relayed = stream.active && answered.media.port != 0 && offered.media.port != 0;
            let (rtp, rtcp) = sdp::destinations(&original, index);
            stream.legs[answerer as usize].set_sdp(rtp, rtcp, answered.rtcp_mux);
            stream.learn_clocks(answered);
            stream.hold = stream.hold || sdp::is_hold(&original, index);
            stream.last_activity = now;
            stream.transcoding = None;
            let answer_codec = sdp::first_codec(answered);
            let offer_codec = sdp::first_codec(offered);
            if let Some((_, Format::Codec(c))) = answer_codec {
                stream.codecs[answerer as usize] = Some(c);
            }
            let added = pending.added.get(index).cloned().unwrap_or_default();
            match answer_codec {
                Some((pt, Format::Codec(answer_c))) if relayed && added.contains(&pt) => {
                    // The answerer chose a codec we added: transcode to the offerer's first
                    // codec we can decode.
                    let Some((offer_pt, offer_c)) =
                        sdp::formats(offered)
                            .into_iter()
                            .find_map(|(pt, f)| match f {
                                Format::Codec(c) => Some((pt, c)),
                                _ => None,
                            })
                    else {
                        ports.push(None);
                        continue;
                    };
                    let events_in =
                        sdp::formats(answered)
                            .into_iter()
                            .find_map(|(pt, f)| match f {
                                Format::Events(rate) => Some((pt, rate)),
                                _ => None,
                            });
                    let events_out =
                        sdp::formats(offered)
                            .into_iter()
                            .find_map(|(pt, f)| match f {
                                Format::Events(rate) => Some((pt, rate)),
                                _ => None,
                            });
                    let md = &mut sd.media_descriptions[index];
                    sdp::answer_with(
                        md,
                        offered,
                        offer_pt,
                        events_in.and(events_out).map(|(pt, _)| pt),
                    );
                    stream.codecs[offerer as usize] = Some(offer_c);
                    let mut codecs = [offer_c, offer_c];
                    codecs[answerer as usize] = answer_c;
                    let mut pts = [offer_pt, offer_pt];
                    pts[answerer as usize] = pt;
                    let mut events = [None, None];
                    if let (Some(a), Some(o)) = (events_in, events_out) {
                        events[answerer as usize] = Some((a, o));
                        events[offerer as usize] = Some((o, a));
                    }
                    let make = |from: usize, ssrc: u32| -> Result<Direction1, SdpError> {
                        let to = 1 - from;
                        let transcoder = Transcoder::new(codecs[from], codecs[to])
                            .map_err(|e| SdpError::Malformed(format!("transcoder: {e}")))?;
                        Ok(Direction1 {
                            in_pt: pts[from],
                            out_pt: pts[to],
                            transcoder,
                            out: Header {
                                marker: true,
                                payload_type: pts[to],
                                sequence: (ssrc >> 16) as u16,
                                timestamp: ssrc.rotate_left(7),
                                ssrc,
                            },
                            out_frame: codecs[to].clock_rate() / 50,
                            started: false,
                            packets_out: 0,
                            octets_out: 0,
                            // The first report early (RFC 3550 §6.2 allows half the
                            // minimum), so even a short call learns its round trip.
                            next_report: now + REPORT_EVERY / 5,
                            events: events[from].map(|((in_pt, in_rate), (out_pt, out_rate))| {
                                EventMap {
                                    in_pt,
                                    out_pt,
                                    in_rate,
                                    out_rate,
                                    current: None,
                                }
                            }),
                        })
                    };
                    self.ssrc_state = xorshift(self.ssrc_state);
                    let s0 = self.ssrc_state as u32;
                    self.ssrc_state = xorshift(self.ssrc_state);
                    let s1 = self.ssrc_state as u32;
                    let dirs = [make(0, s0)?, make(1, s1)?];
                    tracing::info!(
                        call_id,
                        offerer = offer_c.encoding_name(),
                        answerer = answer_c.encoding_name(),
                        "transcoding"
                    );
                    stream.transcoding = Some(Transcoding {
                        dirs,
                        codecs,
                        next_tick: now + TICK,
                    });
                }
                _ => {
                    if let Some((_, Format::Codec(c))) = offer_codec {
                        stream.codecs[offerer as usize] =
                            stream.codecs[answerer as usize].or(Some(c));
                    }
                }
            }
            stream.active = relayed;
            ports.push(relayed.then_some(stream.legs[offerer as usize].port));
        }
        sdp::anchor(sd, toward.ip, &ports);
        tracing::debug!(call_id, party = answerer.as_str(), "answer anchored");
        Ok(())
    }

    /// Answers an offer for the echo service: every relayed stream is played back to its
    /// sender after [`RelayConfig::echo_delay`], in its own codec.
    pub fn handle_echo_offer(
        &mut self,
        now: Instant,
        call_id: &str,
        body: &[u8],
        ip: IpAddr,
    ) -> Result<Bytes, SdpError> {
        if let Some(session) = self.sessions.get(call_id)
            && let Some((_, _, _, out)) = session.last.iter().find(|(_, b, _, _)| b[..] == body[..])
        {
            return Ok(out.clone());
        }
        let mut sd = sdp::parse(body)?;
        let fresh = !self.sessions.contains_key(call_id);
        if fresh {
            if self.sessions.len() >= self.config.max_calls {
                return Err(SdpError::TooManyCalls);
            }
            self.sessions.insert(
                call_id.to_string(),
                Session {
                    caller_tag: String::new(),
                    started: now,
                    streams: Vec::new(),
                    pending: None,
                    last: Vec::new(),
                    echo: Some(Echo {
                        queue: VecDeque::new(),
                    }),
                    voicemail: None,
                },
            );
        }
        let original = sd.clone();
        let existing = self.sessions[call_id].streams.len();
        let needed = sd.media_descriptions[existing.min(sd.media_descriptions.len())..]
            .iter()
            .filter(|m| m.media.port != 0 && sdp::is_relayable(m))
            .count();
        if needed > self.free.len() {
            if fresh {
                self.sessions.remove(call_id);
            }
            return Err(SdpError::NoPorts);
        }
        let mut ports = Vec::new();
        for index in 0..sd.media_descriptions.len() {
            let md = &mut sd.media_descriptions[index];
            let relayable = md.media.port != 0 && sdp::is_relayable(md);
            if index >= existing {
                let port = if relayable {
                    self.claim_pair(call_id, index, Party::Caller)
                } else {
                    0
                };
                let session = self.sessions.get_mut(call_id).expect("exists");
                session.streams.push(Stream {
                    media: md.media.media_type.to_string(),
                    legs: [Leg::new(port), Leg::new(0)],
                    active: relayable,
                    hold: false,
                    last_activity: now,
                    transcoding: None,
                    codecs: [None, None],
                    clocks: Vec::new(),
                });
            }
            let session = self.sessions.get_mut(call_id).expect("exists");
            let stream = &mut session.streams[index];
            let (rtp, rtcp) = sdp::destinations(&original, index);
            stream.legs[0].set_sdp(rtp, rtcp, md.rtcp_mux);
            stream.learn_clocks(md);
            stream.hold = sdp::is_hold(&original, index);
            // Answer with the offerer's first format (and its events) only.
            if let Some((pt, format)) = sdp::first_codec(md) {
                if let Format::Codec(c) = format {
                    stream.codecs[0] = Some(c);
                }
                let events = sdp::formats(md).into_iter().find_map(|(pt, f)| match f {
                    Format::Events(_) => Some(pt),
                    _ => None,
                });
                let offered = md.clone();
                sdp::answer_with(md, &offered, pt, events);
            }
            md.direction = match md.direction {
                Direction::SendOnly => Direction::RecvOnly,
                Direction::RecvOnly => Direction::SendOnly,
                d => d,
            };
            ports.push((stream.active && relayable).then_some(stream.legs[0].port));
        }
        sdp::anchor(&mut sd, ip, &ports);
        sd.origin.username = bytesstr::BytesStr::from_static("fieldmesh");
        let out = sdp::encode(&sd);
        let session = self.sessions.get_mut(call_id).expect("exists");
        session
            .last
            .push((String::new(), Bytes::copy_from_slice(body), ip, out.clone()));
        if session.last.len() > 8 {
            session.last.remove(0);
        }
        tracing::info!(call_id, "echo call answered");
        Ok(out)
    }

    /// Answers an offer for voicemail recording: the phone hears the greeting and a beep,
    /// then what it sends is recorded until [`RelayConfig::max_recording`]
    /// ([`Event::Finished`]) or [`Relay::end`] ([`Event::Recorded`]). The first audio m-line
    /// with a codec we decode is served, in the offerer's first such codec; other lines are
    /// rejected with port 0. A retransmitted offer gets the same answer.
    pub fn handle_record_offer(
        &mut self,
        now: Instant,
        call_id: &str,
        body: &[u8],
        ip: IpAddr,
        label: RecordingLabel,
    ) -> Result<Bytes, SdpError> {
        let max_len = self.config.max_recording;
        self.voicemail_offer(now, call_id, body, ip, move |codec, pt, _, ssrc| {
            Ok(Service::Record {
                recorder: Box::new(Recorder::new(codec, pt, ssrc, max_len)?),
                label,
                finished: false,
            })
        })
    }

    /// Answers an offer for listening to a mailbox: `items` (newest first) are played with
    /// their number in beeps; keys from the phone (RFC 4733, so the answer keeps the offer's
    /// telephone-event) delete (`7`), keep (`9`) or skip (`#`) the current message, each
    /// reported as [`Event::Mailbox`]. Served m-line and retransmissions as in
    /// [`Relay::handle_record_offer`].
    pub fn handle_playback_offer(
        &mut self,
        now: Instant,
        call_id: &str,
        body: &[u8],
        ip: IpAddr,
        items: Vec<PlaybackItem>,
    ) -> Result<Bytes, SdpError> {
        self.voicemail_offer(now, call_id, body, ip, move |codec, pt, events, ssrc| {
            Ok(Service::Play(Box::new(Player::new(
                codec, pt, events, ssrc, items,
            )?)))
        })
    }

    fn voicemail_offer(
        &mut self,
        now: Instant,
        call_id: &str,
        body: &[u8],
        ip: IpAddr,
        make: impl FnOnce(Codec, u8, Option<u8>, u32) -> Result<Service, crate::error::MediaError>,
    ) -> Result<Bytes, SdpError> {
        if let Some(session) = self.sessions.get(call_id)
            && let Some((_, _, _, out)) = session.last.iter().find(|(_, b, _, _)| b[..] == body[..])
        {
            return Ok(out.clone());
        }
        let mut sd = sdp::parse(body)?;
        let original = sd.clone();
        // The line we serve and what we answer it with: the offerer's first codec we can
        // decode (not merely its first codec: we must decode it), and its events at that
        // codec's clock rate if it has them, else any.
        let served = sd
            .media_descriptions
            .iter()
            .enumerate()
            .find_map(|(i, md)| {
                if md.media.port == 0 || !sdp::is_relayable(md) || !sdp::is_audio(&original, i) {
                    return None;
                }
                let formats = sdp::formats(md);
                let (pt, codec) = formats.iter().find_map(|(pt, f)| match f {
                    Format::Codec(c) => Some((*pt, *c)),
                    _ => None,
                })?;
                let events = formats
                    .iter()
                    .filter_map(|(pt, f)| match f {
                        Format::Events(rate) => Some((*pt, *rate)),
                        _ => None,
                    })
                    .min_by_key(|(_, rate)| *rate != codec.clock_rate())
                    .map(|(pt, _)| pt);
                Some((i, pt, codec, events))
            });
        let Some((index, pt, codec, events)) = served else {
            return Err(SdpError::NoCodec);
        };
        let port = match self.sessions.get(call_id) {
            Some(session) => {
                // A re-offer (a moved phone, hold): same line, same codec, same service.
                let Some(vm) = &session.voicemail else {
                    return Err(SdpError::AnswerMismatch);
                };
                if vm.stream != index || vm.codec != codec || vm.payload_type != pt {
                    return Err(SdpError::NoCodec);
                }
                session.streams[index].legs[0].port
            }
            None => {
                if self.sessions.len() >= self.config.max_calls {
                    return Err(SdpError::TooManyCalls);
                }
                if self.free.is_empty() {
                    return Err(SdpError::NoPorts);
                }
                self.ssrc_state = xorshift(self.ssrc_state);
                let ssrc = self.ssrc_state as u32;
                let service = make(codec, pt, events, ssrc)
                    .map_err(|e| SdpError::Malformed(format!("voicemail: {e}")))?;
                let port = self.claim_pair(call_id, index, Party::Caller);
                let streams = sd
                    .media_descriptions
                    .iter()
                    .enumerate()
                    .map(|(i, md)| Stream {
                        media: md.media.media_type.to_string(),
                        legs: [Leg::new(if i == index { port } else { 0 }), Leg::new(0)],
                        active: i == index,
                        hold: false,
                        last_activity: now,
                        transcoding: None,
                        codecs: [(i == index).then_some(codec), None],
                        clocks: Vec::new(),
                    })
                    .collect();
                self.sessions.insert(
                    call_id.to_string(),
                    Session {
                        caller_tag: String::new(),
                        started: now,
                        streams,
                        pending: None,
                        last: Vec::new(),
                        echo: None,
                        voicemail: Some(Voicemail {
                            stream: index,
                            codec,
                            payload_type: pt,
                            next_tick: now + TICK,
                            service,
                        }),
                    },
                );
                port
            }
        };
        let session = self
            .sessions
            .get_mut(call_id)
            .expect("found or inserted above");
        let stream = &mut session.streams[index];
        let (rtp, rtcp) = sdp::destinations(&original, index);
        let md = &mut sd.media_descriptions[index];
        stream.legs[0].set_sdp(rtp, rtcp, md.rtcp_mux);
        stream.learn_clocks(md);
        stream.hold = sdp::is_hold(&original, index);
        let offered = md.clone();
        sdp::answer_with(md, &offered, pt, events);
        md.direction = match md.direction {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        };
        let ports: Vec<Option<u16>> = (0..sd.media_descriptions.len())
            .map(|i| (i == index).then_some(port))
            .collect();
        sdp::anchor(&mut sd, ip, &ports);
        sd.origin.username = bytesstr::BytesStr::from_static("fieldmesh");
        let out = sdp::encode(&sd);
        session
            .last
            .push((String::new(), Bytes::copy_from_slice(body), ip, out.clone()));
        if session.last.len() > 8 {
            session.last.remove(0);
        }
        let service = match session.voicemail.as_ref().map(|v| &v.service) {
            Some(Service::Play(_)) => "playback",
            _ => "record",
        };
        tracing::info!(
            call_id,
            service,
            codec = codec.encoding_name(),
            "voicemail call answered"
        );
        Ok(out)
    }

    /// Takes an RTP/RTCP pair from the pool for one leg; the caller has checked there is one.
    fn claim_pair(&mut self, call_id: &str, stream: usize, party: Party) -> u16 {
        let port = self
            .free
            .pop_front()
            .expect("the caller counted the free pairs");
        for p in [port, port + 1] {
            self.ports.insert(
                p,
                PortUse {
                    call_id: call_id.to_string(),
                    stream,
                    party,
                },
            );
        }
        port
    }

    /// The dialog ended (BYE, a final non-2xx to the INVITE, CANCEL): release its ports and
    /// report its figures.
    pub fn end(&mut self, now: Instant, call_id: &str) {
        self.release(now, call_id, false);
    }

    /// Whether the relay holds a session for this call.
    pub fn has_call(&self, call_id: &str) -> bool {
        self.sessions.contains_key(call_id)
    }

    fn release(&mut self, now: Instant, call_id: &str, timed_out: bool) {
        let Some(session) = self.sessions.remove(call_id) else {
            return;
        };
        for stream in &session.streams {
            for leg in &stream.legs {
                if leg.port != 0 {
                    self.ports.remove(&leg.port);
                    self.ports.remove(&(leg.port + 1));
                    // To the back: a port is reused as late as possible, so stray packets of
                    // the old call do not land in a new one.
                    self.free.push_back(leg.port);
                }
            }
        }
        let report = report(call_id, &session, now);
        log_report(&report, timed_out);
        if timed_out {
            self.outputs.push_back(Output::Event(Event::TimedOut {
                call_id: call_id.to_string(),
            }));
        }
        if let Some(Voicemail {
            service: Service::Record {
                recorder, label, ..
            },
            ..
        }) = session.voicemail
        {
            match recorder.finish() {
                Some(recording) => {
                    tracing::info!(
                        call_id,
                        mailbox = label.mailbox,
                        duration_ms = recording.duration.as_millis(),
                        "voicemail recorded"
                    );
                    self.outputs.push_back(Output::Event(Event::Recorded {
                        call_id: call_id.to_string(),
                        label,
                        audio: recording.audio,
                        duration: recording.duration,
                    }));
                }
                None => tracing::info!(
                    call_id,
                    mailbox = label.mailbox,
                    "voicemail without audio not stored"
                ),
            }
        }
        self.outputs.push_back(Output::Event(Event::Ended(report)));
    }

    /// Feeds one input. Afterwards drain [`Relay::poll_output`].
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        match input {
            Input::Datagram(d) => self.handle_datagram(now, d),
            Input::Timeout => self.handle_timeout(now),
        }
    }

    /// The next thing to do; call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest deadline; when it passes, feed [`Input::Timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.next_sweep;
        for session in self.sessions.values() {
            for stream in &session.streams {
                if let Some(t) = &stream.transcoding {
                    at = at.min(t.next_tick);
                }
            }
            if let Some(echo) = &session.echo
                && let Some((due, ..)) = echo.queue.front()
            {
                at = at.min(*due);
            }
            if let Some(vm) = &session.voicemail
                && vm.is_ticking()
            {
                at = at.min(vm.next_tick);
            }
        }
        Some(at)
    }

    fn handle_datagram(&mut self, now: Instant, d: Datagram) {
        let Some(owner) = self.ports.get(&d.local_port).cloned() else {
            return;
        };
        let Some(session) = self.sessions.get_mut(&owner.call_id) else {
            return;
        };
        let Some(stream) = session.streams.get_mut(owner.stream) else {
            return;
        };
        let from = owner.party as usize;
        let to = 1 - from;
        let on_rtcp_port = d.local_port == stream.legs[from].port + 1;
        let rtcp = on_rtcp_port || rtcp::is_rtcp(&d.bytes);
        // Validate before latching: a stray or malformed packet must not capture the leg.
        let valid = if rtcp {
            rtcp::Compound::parse(&d.bytes).is_ok()
        } else {
            Packet::new_checked(&d.bytes).is_ok()
        };
        let leg = &mut stream.legs[from];
        if !valid {
            leg.dropped += 1;
            return;
        }
        let latch = if on_rtcp_port {
            &mut leg.latched_rtcp
        } else {
            &mut leg.latched_rtp
        };
        match latch {
            Some(source) if *source != d.remote => {
                leg.dropped += 1;
                tracing::trace!(call_id = %owner.call_id, remote = %d.remote, "packet from a foreign source dropped");
                return;
            }
            Some(_) => {}
            None => {
                tracing::debug!(call_id = %owner.call_id, leg = owner.party.as_str(), remote = %d.remote, rtcp = on_rtcp_port, "latched");
                *latch = Some(d.remote);
            }
        }
        stream.last_activity = now;
        if rtcp {
            return self.relay_rtcp(now, &owner, d);
        }
        let Ok(packet) = Packet::new_checked(&d.bytes) else {
            return;
        };
        let (clock, untimed) = stream.clock_of(packet.payload_type());
        let leg = &mut stream.legs[from];
        leg.packets += 1;
        leg.bytes += d.bytes.len() as u64;
        if untimed {
            leg.stats.update_sequence_only(packet.sequence());
        } else {
            leg.stats
                .update(now, packet.sequence(), packet.timestamp(), clock);
        }
        if let Some(echo) = &mut session.echo {
            if echo.queue.len() < ECHO_QUEUE {
                echo.queue.push_back((
                    now + self.config.echo_delay,
                    d.local_port,
                    d.remote,
                    d.bytes.clone(),
                ));
            }
            return;
        }
        if let Some(vm) = &mut session.voicemail {
            if owner.stream == vm.stream {
                match &mut vm.service {
                    Service::Record { recorder, .. } => recorder.handle_rtp(now, &packet),
                    Service::Play(player) => {
                        player.handle_rtp(&packet);
                        while let Some(action) = player.poll_action() {
                            self.outputs.push_back(Output::Event(Event::Mailbox {
                                call_id: owner.call_id.clone(),
                                action,
                            }));
                        }
                    }
                }
            }
            return;
        }
        if let Some(t) = &mut stream.transcoding {
            let dir = &mut t.dirs[from];
            if let Some(events) = &mut dir.events
                && packet.payload_type() == events.in_pt
            {
                // RFC 4733 §2.5.1.3: every packet of one event carries the event's start
                // timestamp; durations are in the clock of the leg.
                let Some(mut event) = dtmf::Event::parse(packet.payload()) else {
                    return;
                };
                let out_ts = match events.current {
                    Some((in_ts, out_ts)) if in_ts == packet.timestamp() => out_ts,
                    _ => {
                        let out_ts = dir.out.timestamp;
                        events.current = Some((packet.timestamp(), out_ts));
                        out_ts
                    }
                };
                event.duration = dtmf::rescale(event.duration, events.in_rate, events.out_rate);
                let header = Header {
                    marker: packet.marker(),
                    payload_type: events.out_pt,
                    sequence: dir.out.sequence,
                    timestamp: out_ts,
                    ssrc: dir.out.ssrc,
                };
                dir.out.sequence = dir.out.sequence.wrapping_add(1);
                let bytes = header.packet(&event.write());
                let out_leg = &stream.legs[to];
                if let Some(dest) = out_leg.rtp_destination() {
                    self.outputs.push_back(Output::Transmit(Datagram {
                        local_port: out_leg.port,
                        remote: dest,
                        bytes: Bytes::from(bytes),
                    }));
                }
                return;
            }
            if packet.payload_type() == dir.in_pt {
                dir.transcoder
                    .push(now, packet.sequence(), packet.timestamp(), packet.payload());
                dir.started = true;
            }
            return;
        }
        let out_leg = &stream.legs[to];
        match out_leg.rtp_destination() {
            Some(dest) if out_leg.port != 0 => self.outputs.push_back(Output::Transmit(Datagram {
                local_port: out_leg.port,
                remote: dest,
                bytes: d.bytes,
            })),
            _ => stream.legs[from].dropped += 1,
        }
    }

    fn relay_rtcp(&mut self, now: Instant, owner: &PortUse, d: Datagram) {
        let Some(stream) = self
            .sessions
            .get_mut(&owner.call_id)
            .and_then(|s| s.streams.get_mut(owner.stream))
        else {
            return;
        };
        let from = owner.party as usize;
        let to = 1 - from;
        if let Ok(compound) = rtcp::Compound::parse(&d.bytes) {
            for packet in &compound.packets {
                match packet {
                    rtcp::Packet::SenderReport {
                        ssrc, ntp, reports, ..
                    } => {
                        // It goes out on the other leg: that leg's far end answers it.
                        stream.legs[to].rtt.on_sender_report(now, *ssrc, *ntp);
                        for block in reports {
                            if let Some(rtt) = stream.legs[from].rtt.on_report_block(now, block) {
                                stream.legs[from].last_rtt = Some(rtt);
                            }
                        }
                    }
                    rtcp::Packet::ReceiverReport { reports, .. } => {
                        for block in reports {
                            if let Some(rtt) = stream.legs[from].rtt.on_report_block(now, block) {
                                stream.legs[from].last_rtt = Some(rtt);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if stream.transcoding.is_some() {
            // The far end's reports describe packets we re-made: they stop here.
            return;
        }
        if let Some((port, dest)) = stream.legs[to].rtcp_destination()
            && stream.legs[to].port != 0
        {
            self.outputs.push_back(Output::Transmit(Datagram {
                local_port: port,
                remote: dest,
                bytes: d.bytes,
            }));
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let mut outputs = Vec::new();
        for (call_id, session) in self.sessions.iter_mut() {
            if let Some(vm) = &mut session.voicemail {
                vm.handle_ticks(now, call_id, &mut session.streams, &mut outputs);
            }
            if let Some(echo) = &mut session.echo {
                while echo.queue.front().is_some_and(|(due, ..)| *due <= now) {
                    let (_, port, remote, bytes) = echo.queue.pop_front().expect("checked");
                    outputs.push(Output::Transmit(Datagram {
                        local_port: port,
                        remote,
                        bytes,
                    }));
                }
            }
            for stream in &mut session.streams {
                let Some(t) = &mut stream.transcoding else {
                    continue;
                };
                // Catch up at most a few ticks: a stalled process must not burst a second
                // of audio at once.
                let mut ticks = 0;
                while t.next_tick <= now && ticks < 5 {
                    ticks += 1;
                    t.next_tick += TICK;
                    for from in 0..2 {
                        let to = 1 - from;
                        let dir = &mut t.dirs[from];
                        if !dir.started {
                            continue;
                        }
                        let frame = dir.transcoder.poll(now);
                        if let Some(frame) = frame {
                            let header = Header {
                                marker: dir.out.marker || frame.marker,
                                payload_type: dir.out_pt,
                                ..dir.out
                            };
                            dir.out.marker = false;
                            dir.out.sequence = dir.out.sequence.wrapping_add(1);
                            dir.packets_out = dir.packets_out.wrapping_add(1);
                            dir.octets_out =
                                dir.octets_out.wrapping_add(frame.payload.len() as u32);
                            let out_leg = &stream.legs[to];
                            if let Some(dest) = out_leg.rtp_destination() {
                                outputs.push(Output::Transmit(Datagram {
                                    local_port: out_leg.port,
                                    remote: dest,
                                    bytes: Bytes::from(header.packet(&frame.payload)),
                                }));
                            }
                        }
                        // The clock runs on through silence, so the far end's jitter buffer
                        // sees the real gap.
                        dir.out.timestamp = dir.out.timestamp.wrapping_add(dir.out_frame);
                        if now >= dir.next_report && dir.packets_out > 0 {
                            dir.next_report = now + REPORT_EVERY;
                            let ntp = ntp_of(self.epoch, now);
                            let report = rtcp::build_sender_report(
                                &rtcp::SenderInfo {
                                    ssrc: dir.out.ssrc,
                                    ntp,
                                    rtp_ts: dir.out.timestamp,
                                    packets: dir.packets_out,
                                    octets: dir.octets_out,
                                },
                                &[],
                                "fieldmesh",
                            );
                            let out_leg = &mut stream.legs[to];
                            out_leg.rtt.on_sender_report(now, dir.out.ssrc, ntp);
                            if let Some((port, dest)) = out_leg.rtcp_destination() {
                                outputs.push(Output::Transmit(Datagram {
                                    local_port: port,
                                    remote: dest,
                                    bytes: Bytes::from(report),
                                }));
                            }
                        }
                    }
                }
                if t.next_tick <= now {
                    t.next_tick = now + TICK;
                }
            }
        }
        self.outputs.extend(outputs);
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP;
            let timeout = self.config.media_timeout;
            let silent: Vec<String> = self
                .sessions
                .iter()
                .filter(|(_, s)| {
                    s.pending.is_none()
                        && s.streams.iter().any(|st| {
                            st.active && !st.hold && now.duration_since(st.last_activity) >= timeout
                        })
                })
                .map(|(id, _)| id.clone())
                .collect();
            for call_id in silent {
                tracing::warn!(
                    call_id,
                    timeout_s = timeout.as_secs(),
                    "no media: ending the call"
                );
                self.release(now, &call_id, true);
            }
        }
    }
}

fn report(call_id: &str, session: &Session, now: Instant) -> CallReport {
    CallReport {
        call_id: call_id.to_string(),
        duration: now.duration_since(session.started),
        echo: session.echo.is_some(),
        service: match &session.voicemail {
            Some(Voicemail {
                service: Service::Record { .. },
                ..
            }) => "record",
            Some(Voicemail {
                service: Service::Play(_),
                ..
            }) => "playback",
            None if session.echo.is_some() => "echo",
            None => "relay",
        },
        streams: session
            .streams
            .iter()
            .filter(|s| s.active)
            .map(|s| {
                let buffers: [Duration; 2] = match &s.transcoding {
                    Some(t) => [
                        t.dirs[0].transcoder.stats().current_delay,
                        t.dirs[1].transcoder.stats().current_delay,
                    ],
                    None => [Duration::ZERO; 2],
                };
                let legs = if session.echo.is_some() || session.voicemail.is_some() {
                    vec![s.legs[0].report("caller", s.codecs[0], buffers[0])]
                } else {
                    vec![
                        s.legs[0].report("caller", s.codecs[0], buffers[0]),
                        s.legs[1].report("callee", s.codecs[1], buffers[1]),
                    ]
                };
                StreamReport {
                    media: s.media.clone(),
                    transcoded: s.transcoding.as_ref().map(|t| {
                        format!(
                            "{}<->{}",
                            t.codecs[0].encoding_name(),
                            t.codecs[1].encoding_name()
                        )
                    }),
                    legs,
                }
            })
            .collect(),
    }
}

fn log_report(report: &CallReport, timed_out: bool) {
    for (i, stream) in report.streams.iter().enumerate() {
        for leg in &stream.legs {
            let q = &leg.quality;
            tracing::info!(
                call_id = %report.call_id,
                stream = i,
                media = %stream.media,
                leg = leg.leg,
                transcoded = stream.transcoded.as_deref().unwrap_or("no"),
                packets = q.packets,
                lost = q.lost,
                loss_pct = format_args!("{:.2}", q.loss_pct),
                jitter_ms = format_args!("{:.1}", q.jitter_ms),
                rtt_ms = ?q.rtt_ms,
                mos = format_args!("{:.2}", q.mos),
                dropped = leg.dropped,
                timed_out,
                "call quality"
            );
        }
    }
}

/// A 32.32 fixed-point timestamp since `epoch`, in the NTP format of RFC 3550 §4.
fn ntp_of(epoch: Instant, now: Instant) -> u64 {
    let since = now.duration_since(epoch);
    (since.as_secs() << 32) | ((u64::from(since.subsec_nanos()) << 32) / 1_000_000_000)
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

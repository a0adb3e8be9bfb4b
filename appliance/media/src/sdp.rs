//! SDP offer/answer as the relay sees it (RFC 3264, RFC 8866), over `ezk-sdp-types`.
//!
//! The relay never writes SDP text itself: it parses with the crate, changes the typed fields
//! (addresses, ports, `a=rtcp`, ICE lines, and for transcoding the payload types) and prints
//! with the crate. Everything here is a pure function of the description.

use crate::codec::Codec;
use bytes::Bytes;
use bytesstr::BytesStr;
use ezk_sdp_types::{
    Connection, Direction, Fmtp, MediaDescription, MediaType, Rtcp, RtpMap, SessionDescription,
    TaggedAddress, TransportProtocol,
};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// More media lines than any real session uses: refused with 488, never allocated.
pub const MAX_STREAMS: usize = 16;
/// An SDP larger than this is refused with 488 before it is parsed.
pub const MAX_SDP_BYTES: usize = 16 * 1024;
/// The telephone-event format parameter we offer: the 16 DTMF events (RFC 4733 §7.1.1).
const DTMF_EVENTS: &str = "0-16";

/// Why an SDP body is refused; the SIP core answers with [`SdpError::status`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body is not SDP the crate can read (syntax, a port over 65535, a bad address).
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// The body is larger than [`MAX_SDP_BYTES`].
    #[error("SDP too large")]
    TooLarge,
    /// More m-lines than [`MAX_STREAMS`].
    #[error("{0} media lines, at most {MAX_STREAMS} are relayed")]
    TooManyStreams(usize),
    /// An m-line asks for a port range (`m=audio 5004/2`), which no phone needs.
    #[error("port ranges in m= lines are not relayed")]
    PortRange,
    /// Every relay port is in use.
    #[error("no relay ports free")]
    NoPorts,
    /// The answer changes the number of media lines, or belongs to no offer.
    #[error("answer does not match the offer")]
    AnswerMismatch,
    /// The relay holds too many calls already.
    #[error("too many calls")]
    TooManyCalls,
    /// A service the appliance answers itself (voicemail) found no audio line with a codec it
    /// can decode.
    #[error("no audio codec we can decode")]
    NoCodec,
}

impl SdpError {
    /// The SIP status line for a request whose SDP is refused (RFC 3261 §21.4.26, §21.5.4).
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            SdpError::Malformed(_) => (488, "Not Acceptable Here (malformed SDP)"),
            SdpError::TooLarge => (488, "Not Acceptable Here (SDP too large)"),
            SdpError::TooManyStreams(_) => (488, "Not Acceptable Here (too many media lines)"),
            SdpError::PortRange => (488, "Not Acceptable Here (port ranges not supported)"),
            SdpError::AnswerMismatch => (488, "Not Acceptable Here (answer does not match)"),
            SdpError::NoPorts => (503, "Service Unavailable (no media ports free)"),
            SdpError::TooManyCalls => (503, "Service Unavailable (too many calls)"),
            SdpError::NoCodec => (488, "Not Acceptable Here (no codec in common)"),
        }
    }

    /// Whether the refusal is temporary (answered with `Retry-After`).
    pub fn is_overload(&self) -> bool {
        matches!(self, SdpError::NoPorts | SdpError::TooManyCalls)
    }
}

/// Parses and checks an SDP body: size, number of m-lines, port ranges.
pub fn parse(bytes: &[u8]) -> Result<SessionDescription, SdpError> {
    if bytes.len() > MAX_SDP_BYTES {
        return Err(SdpError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| SdpError::Malformed("not UTF-8".into()))?;
    // Count m-lines before the crate builds them all: hundreds of m-lines cost nothing.
    let m_lines = text
        .split(['\r', '\n'])
        .filter(|l| l.starts_with("m="))
        .count();
    if m_lines > MAX_STREAMS {
        return Err(SdpError::TooManyStreams(m_lines));
    }
    let sd = SessionDescription::parse(&BytesStr::from(text))
        .map_err(|e| SdpError::Malformed(e.to_string()))?;
    if sd.media_descriptions.len() != m_lines {
        return Err(SdpError::Malformed("unreadable m= line".into()));
    }
    if sd
        .media_descriptions
        .iter()
        .any(|m| m.media.ports_num.is_some_and(|n| n > 1))
    {
        return Err(SdpError::PortRange);
    }
    Ok(sd)
}

/// Prints a description back to bytes.
pub fn encode(sd: &SessionDescription) -> Bytes {
    Bytes::from(sd.to_string())
}

/// Whether the relay carries this m-line: RTP (any profile, SRTP included: the relay never
/// looks inside the payload of a relayed stream) or plain UDP. TCP-based lines (BFCP, MSRP)
/// and SCTP data channels are rejected with port 0.
pub fn is_relayable(md: &MediaDescription) -> bool {
    matches!(
        md.media.proto,
        TransportProtocol::RtpAvp
            | TransportProtocol::RtpAvpf
            | TransportProtocol::RtpSavp
            | TransportProtocol::RtpSavpf
            | TransportProtocol::UdpTlsRtpSavp
            | TransportProtocol::UdpTlsRtpSavpf
            | TransportProtocol::Unspecified
    )
}

/// The connection address in force for m-line `md` (its own `c=`, else the session's).
fn connection_ip(sd: &SessionDescription, md: &MediaDescription) -> Option<IpAddr> {
    let conn = md.connection.as_ref().or(sd.connection.as_ref())?;
    match &conn.address {
        TaggedAddress::IP4(ip) => Some(IpAddr::V4(*ip)),
        TaggedAddress::IP6(ip) => Some(IpAddr::V6(*ip)),
        // A name cannot be resolved here: latching finds the sender anyway.
        TaggedAddress::IP4FQDN(_) | TaggedAddress::IP6FQDN(_) => None,
    }
}

/// Where the sender of this description wants RTP and RTCP for m-line `index`.
pub fn destinations(
    sd: &SessionDescription,
    index: usize,
) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let Some(md) = sd.media_descriptions.get(index) else {
        return (None, None);
    };
    let Some(ip) = connection_ip(sd, md).filter(|ip| !ip.is_unspecified()) else {
        return (None, None);
    };
    let rtp = SocketAddr::new(ip, md.media.port);
    let rtcp = if md.rtcp_mux {
        rtp
    } else {
        match &md.rtcp {
            Some(Rtcp {
                port,
                address: Some(TaggedAddress::IP4(a)),
            }) => SocketAddr::new(IpAddr::V4(*a), *port),
            Some(Rtcp {
                port,
                address: Some(TaggedAddress::IP6(a)),
            }) => SocketAddr::new(IpAddr::V6(*a), *port),
            Some(Rtcp { port, .. }) => SocketAddr::new(ip, *port),
            None => SocketAddr::new(ip, md.media.port.wrapping_add(1)),
        }
    };
    (Some(rtp), Some(rtcp))
}

/// Whether the sender puts m-line `index` on hold: `sendonly`, `inactive` or the RFC 2543
/// `c=0.0.0.0` (RFC 3264 §8.4). A held stream may be silent without being timed out.
pub fn is_hold(sd: &SessionDescription, index: usize) -> bool {
    let Some(md) = sd.media_descriptions.get(index) else {
        return false;
    };
    matches!(md.direction, Direction::SendOnly | Direction::Inactive)
        || connection_ip(sd, md).is_some_and(|ip| ip.is_unspecified())
}

/// Points every relayed m-line at us: `ports[i]` is our RTP port for m-line `i` (RTCP is the
/// next port), `None` rejects the line with port 0. ICE lines go: a phone behind another
/// appliance can never reach the candidates, and we are the only address it needs. A held
/// line keeps `c=0.0.0.0`, so the holder's intent survives.
pub fn anchor(sd: &mut SessionDescription, ip: IpAddr, ports: &[Option<u16>]) {
    let held: Vec<bool> = (0..sd.media_descriptions.len())
        .map(|i| {
            let md = &sd.media_descriptions[i];
            connection_ip(sd, md).is_some_and(|ip| ip.is_unspecified())
        })
        .collect();
    let ours = Connection {
        address: TaggedAddress::from(ip),
        ttl: None,
        num: None,
    };
    let unspecified = Connection {
        address: match ip {
            IpAddr::V4(_) => TaggedAddress::IP4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => TaggedAddress::IP6(std::net::Ipv6Addr::UNSPECIFIED),
        },
        ttl: None,
        num: None,
    };
    sd.origin.address = TaggedAddress::from(ip);
    sd.connection = Some(ours.clone());
    sd.ice_ufrag = None;
    sd.ice_pwd = None;
    sd.ice_lite = false;
    sd.ice_options.options.clear();
    for (i, md) in sd.media_descriptions.iter_mut().enumerate() {
        md.ice_candidates.clear();
        md.ice_end_of_candidates = false;
        md.ice_ufrag = None;
        md.ice_pwd = None;
        md.attributes
            .retain(|a| !a.name.starts_with("ice-") && a.name.as_str() != "remote-candidates");
        match ports.get(i).copied().flatten() {
            Some(port) if md.media.port != 0 && is_relayable(md) => {
                md.media.port = port;
                md.connection = Some(if held[i] {
                    unspecified.clone()
                } else {
                    ours.clone()
                });
                if md.rtcp.is_some() {
                    md.rtcp = Some(Rtcp {
                        port: port + 1,
                        address: None,
                    });
                }
            }
            _ => {
                md.media.port = 0;
                md.connection = None;
                md.rtcp = None;
            }
        }
    }
}

/// What one payload type of an audio m-line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Codec(Codec),
    /// RFC 4733 telephone-event at this clock rate.
    Events(u32),
    /// Something we do not decode (relayed if both sides share it).
    Other,
}

/// The payload types of an m-line in preference order, with what each one is.
pub fn formats(md: &MediaDescription) -> Vec<(u8, Format)> {
    md.media
        .fmts
        .iter()
        .map(|&pt| {
            let map = md.rtpmap.iter().find(|m| m.payload == pt);
            let format = match map {
                Some(m) if m.encoding.eq_ignore_ascii_case("telephone-event") => {
                    Format::Events(m.clock_rate)
                }
                Some(m) => Codec::from_rtpmap(&m.encoding, m.clock_rate)
                    .map_or(Format::Other, Format::Codec),
                None => match pt {
                    0 => Format::Codec(Codec::Pcmu),
                    8 => Format::Codec(Codec::Pcma),
                    _ => Format::Other,
                },
            };
            (pt, format)
        })
        .collect()
}

/// The first codec of an m-line, skipping events, comfort noise and anything unknown that
/// follows a known codec. `None` if the line starts with a codec we cannot decode (then the
/// relay can only pass the stream through).
pub fn first_codec(md: &MediaDescription) -> Option<(u8, Format)> {
    formats(md)
        .into_iter()
        .find(|(_, f)| !matches!(f, Format::Events(_)))
}

/// The payload type `md` uses for `format`, if it offers it.
pub fn payload_type_of(md: &MediaDescription, format: Format) -> Option<u8> {
    formats(md)
        .into_iter()
        .find(|(_, f)| *f == format)
        .map(|(pt, _)| pt)
}

/// Appends the codecs the appliance can transcode to, which the offer lacks, after the
/// offerer's own (so a phone that shares a codec with the offerer still picks it), and a
/// telephone-event at every clock rate now present. Returns the payload types added.
pub fn add_codecs(md: &mut MediaDescription, codecs: &[Codec]) -> Vec<u8> {
    let mut added = Vec::new();
    let had_events = formats(md)
        .iter()
        .any(|(_, f)| matches!(f, Format::Events(_)));
    for &codec in codecs {
        if payload_type_of(md, Format::Codec(codec)).is_some() {
            continue;
        }
        let Some(pt) = codec
            .static_payload_type()
            .filter(|pt| !md.media.fmts.contains(pt))
            .or_else(|| free_dynamic(md))
        else {
            break;
        };
        md.media.fmts.push(pt);
        md.rtpmap.push(RtpMap {
            payload: pt,
            encoding: BytesStr::from_static(codec.encoding_name()),
            clock_rate: codec.clock_rate(),
            params: (codec == Codec::Opus).then(|| BytesStr::from_static("2")),
        });
        if codec == Codec::Opus {
            md.fmtp.push(Fmtp {
                format: pt,
                params: BytesStr::from_static("useinbandfec=1"),
            });
        }
        added.push(pt);
    }
    if had_events {
        let rates: Vec<u32> = formats(md)
            .iter()
            .filter_map(|(_, f)| match f {
                Format::Codec(c) => Some(c.clock_rate()),
                _ => None,
            })
            .collect();
        for rate in rates {
            if payload_type_of(md, Format::Events(rate)).is_some() {
                continue;
            }
            let Some(pt) = free_dynamic(md) else {
                break;
            };
            md.media.fmts.push(pt);
            md.rtpmap.push(RtpMap {
                payload: pt,
                encoding: BytesStr::from_static("telephone-event"),
                clock_rate: rate,
                params: None,
            });
            md.fmtp.push(Fmtp {
                format: pt,
                params: BytesStr::from_static(DTMF_EVENTS),
            });
            added.push(pt);
        }
    }
    added
}

/// A dynamic payload type (RFC 3551 §6: 96–127) the line does not use yet.
fn free_dynamic(md: &MediaDescription) -> Option<u8> {
    (96..=127).find(|pt| !md.media.fmts.contains(pt))
}

/// Rewrites an answer's audio line to use `codec` (and, if `events`, telephone-event) with
/// the payload types and parameters of the offer `offer`: what the offerer gets back when we
/// transcode for it.
pub fn answer_with(
    md: &mut MediaDescription,
    offer: &MediaDescription,
    codec_pt: u8,
    events_pt: Option<u8>,
) {
    let keep: Vec<u8> = std::iter::once(codec_pt).chain(events_pt).collect();
    md.media.fmts = keep.clone();
    md.rtpmap = offer
        .rtpmap
        .iter()
        .filter(|m| keep.contains(&m.payload))
        .cloned()
        .collect();
    md.fmtp = offer
        .fmtp
        .iter()
        .filter(|f| keep.contains(&f.format))
        .cloned()
        .collect();
    // Feedback and header extensions were negotiated for the other codec and leg.
    md.rtcp_fb.clear();
    md.extmap.clear();
    md.ssrc.clear();
}

/// Whether m-line `index` is audio.
pub fn is_audio(sd: &SessionDescription, index: usize) -> bool {
    sd.media_descriptions
        .get(index)
        .is_some_and(|m| m.media.media_type == MediaType::Audio)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.42.0.2\r\ns=-\r\nc=IN IP4 10.42.0.2\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 96 0 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/48000\r\n\
a=fmtp:101 0-16\r\na=rtcp:4001\r\na=candidate:1 1 UDP 2130706431 192.168.1.9 4000 typ host\r\na=x-unknown:keep me\r\n\
m=video 4002 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n\
m=application 9 TCP/BFCP *\r\n";

    #[test]
    fn anchoring_points_relayed_lines_at_us_and_keeps_the_rest() {
        // A TCP line (BFCP) is not relayed: it stays, rejected with port 0. (The crate keeps
        // only numeric formats, so its `*` is not printed back.)
        let mut bfcp = parse(OFFER.as_bytes()).expect("valid");
        let ip: IpAddr = "10.99.0.1".parse().unwrap();
        anchor(&mut bfcp, ip, &[Some(20000), Some(20004), Some(20008)]);
        let bfcp = encode(&bfcp);
        let bfcp = std::str::from_utf8(&bfcp).unwrap();
        assert!(bfcp.contains("m=application 0 TCP/BFCP"), "{bfcp}");
        let offer = OFFER.replace(
            "m=application 9 TCP/BFCP *\r\n",
            "m=text 4004 RTP/AVP 98\r\na=rtpmap:98 t140/1000\r\n",
        );
        let mut sd = parse(offer.as_bytes()).expect("valid");
        assert_eq!(
            destinations(&sd, 0),
            (
                Some("10.42.0.2:4000".parse().unwrap()),
                Some("10.42.0.2:4001".parse().unwrap())
            )
        );
        let ip: IpAddr = "10.99.0.1".parse().unwrap();
        anchor(&mut sd, ip, &[Some(20000), Some(20004), None]);
        let text = encode(&sd);
        let text = std::str::from_utf8(&text).unwrap();
        assert!(text.contains("m=audio 20000 RTP/AVP 96 0 101"), "{text}");
        assert!(text.contains("a=rtcp:20001"), "{text}");
        assert!(text.contains("m=video 20004 RTP/AVP 97"), "{text}");
        assert!(text.contains("m=text 0 RTP/AVP 98"), "{text}");
        assert!(text.contains("x-unknown:keep me"), "{text}");
        assert!(!text.contains("candidate"), "{text}");
        assert!(!text.contains("10.42.0.2"), "{text}");
    }

    #[test]
    fn hold_is_seen_and_kept() {
        let held = OFFER
            .replace("c=IN IP4 10.42.0.2", "c=IN IP4 0.0.0.0")
            .replace("m=application 9 TCP/BFCP *\r\n", "");
        let mut sd = parse(held.as_bytes()).unwrap();
        assert!(is_hold(&sd, 0));
        assert_eq!(destinations(&sd, 0), (None, None));
        anchor(
            &mut sd,
            "10.99.0.1".parse().unwrap(),
            &[Some(20000), Some(20004)],
        );
        let text = encode(&sd);
        assert!(
            std::str::from_utf8(&text)
                .unwrap()
                .contains("c=IN IP4 0.0.0.0")
        );
        let sendonly = OFFER
            .replace("a=rtcp:4001", "a=sendonly")
            .replace("m=application 9 TCP/BFCP *\r\n", "");
        assert!(is_hold(&parse(sendonly.as_bytes()).unwrap(), 0));
        let inactive = OFFER
            .replace("a=rtcp:4001", "a=inactive")
            .replace("m=application 9 TCP/BFCP *\r\n", "");
        assert!(is_hold(&parse(inactive.as_bytes()).unwrap(), 0));
    }

    #[test]
    fn absurd_input_is_refused() {
        let port = OFFER.replace("m=audio 4000", "m=audio 70000");
        assert!(matches!(
            parse(port.as_bytes()),
            Err(SdpError::Malformed(_))
        ));
        let mut many =
            String::from("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n");
        for i in 0..300 {
            many.push_str(&format!("m=audio {} RTP/AVP 0\r\n", 2000 + 2 * i));
        }
        assert_eq!(
            parse(many.as_bytes()).err(),
            Some(SdpError::TooManyStreams(300))
        );
        let range = OFFER.replace("m=audio 4000", "m=audio 4000/2");
        assert_eq!(parse(range.as_bytes()).err(), Some(SdpError::PortRange));
        assert!(parse(&[0xff, 0xfe]).is_err());
        assert_eq!(
            parse(&vec![b'a'; MAX_SDP_BYTES + 1]).err(),
            Some(SdpError::TooLarge)
        );
    }

    #[test]
    fn codecs_are_added_after_the_offerers_own() {
        let offer = OFFER
            .replace("m=application 9 TCP/BFCP *\r\n", "")
            .replace("96 0 101", "96 101");
        let mut sd = parse(offer.as_bytes()).unwrap();
        let md = &mut sd.media_descriptions[0];
        let added = add_codecs(md, &[Codec::Opus, Codec::Pcmu, Codec::Pcma]);
        assert_eq!(md.media.fmts[..2], [96, 101]);
        // PCMU 0, PCMA 8, and telephone-event/8000 on a free dynamic type.
        assert_eq!(added, vec![0, 8, 97]);
        assert_eq!(payload_type_of(md, Format::Events(8000)), Some(97));
        assert_eq!(first_codec(md), Some((96, Format::Codec(Codec::Opus))));
    }
}

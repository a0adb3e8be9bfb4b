//! RTCP compound packets (RFC 3550 §6): parsing for the relay's quality probe, and builders for
//! the reports the appliance sends itself when it terminates RTCP on a transcoded leg.
//!
//! Parsing follows the smoltcp `wire` shape. [`PacketView::new_checked`] checks one packet's
//! version, length field and padding, after which no accessor can panic; [`Packet::parse`]
//! decodes a view into owned fields, checking the declared counts against the length once per
//! packet; [`Compound::parse`] does both for every packet of a datagram. Network input never
//! panics: anything malformed is an [`RtcpError`].
//!
//! The relay forwards RTCP untouched; it parses only to learn loss, jitter and round-trip time
//! (see `quality.rs`). That is why parsing keeps the fields a report carries and drops what the
//! appliance never acts on (feedback messages become [`Packet::Other`]).

use std::time::Duration;

/// Every RTCP packet starts with a 4-byte header: V, P, count, PT, length (RFC 3550 §6.4.1).
pub const HEADER_LEN: usize = 4;
/// A report block is six 32-bit words (RFC 3550 §6.4.1).
pub const REPORT_BLOCK_LEN: usize = 24;
/// SSRC plus the 20-byte sender info of an SR (RFC 3550 §6.4.1).
const SR_FIXED_LEN: usize = 24;
/// The 5-bit count field caps report blocks, SDES chunks and BYE SSRCs per packet (§6.4.1).
const MAX_COUNT: usize = 31;

/// RFC 3550 §12.1: sender report.
pub const PT_SR: u8 = 200;
/// RFC 3550 §12.1: receiver report.
pub const PT_RR: u8 = 201;
/// RFC 3550 §12.1: source description.
pub const PT_SDES: u8 = 202;
/// RFC 3550 §12.1: goodbye.
pub const PT_BYE: u8 = 203;
/// RFC 3550 §12.1: application-defined.
pub const PT_APP: u8 = 204;
/// RFC 4585 §6.1: transport-layer feedback (NACK, TMMBR…), relayed as [`Packet::Other`].
pub const PT_RTPFB: u8 = 205;
/// RFC 4585 §6.1: payload-specific feedback (PLI, FIR…), relayed as [`Packet::Other`].
pub const PT_PSFB: u8 = 206;
/// RFC 3550 §6.5.1: the CNAME item, the one SDES item every compound must carry (§6.1).
pub const SDES_CNAME: u8 = 1;

/// Why bytes are not an RTCP compound we can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RtcpError {
    /// Fewer bytes than a header, or than the header's length field, claims. Also an empty
    /// datagram, which is no compound at all.
    #[error("truncated RTCP packet")]
    Truncated,
    /// The version field is not 2 (RFC 3550 §6.4.1).
    #[error("not RTCP version 2")]
    Version,
    /// The packet's length field leaves no room for the report blocks, chunks, items or SSRCs
    /// that its count field and content declare.
    #[error("RTCP packet type {pt}: content does not fit its length field")]
    Length {
        /// The packet type whose content overran.
        pt: u8,
    },
    /// The padding count is zero or larger than the packet (RFC 3550 §6.4.1, "padding").
    #[error("bad RTCP padding")]
    Padding,
    /// Padding on a packet other than the last of a compound (RFC 3550 §6.4.1: "padding …
    /// is only set on the last packet of a compound"; also Appendix A.2).
    #[error("padding before the last packet of an RTCP compound")]
    PaddingNotLast,
}

/// One report block of an SR or RR (RFC 3550 §6.4.1), about the source `ssrc`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Packets lost since the previous report, as a fixed-point fraction of 256.
    pub fraction_lost: u8,
    /// Expected minus received since the start: a 24-bit signed field, negative when
    /// duplicates outnumber losses (§6.4.1).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received: cycles in the high 16 bits.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units (§6.4.1, Appendix A.8).
    pub jitter: u32,
    /// The middle 32 bits of the NTP timestamp of the last SR from `ssrc` (0: none yet).
    pub lsr: u32,
    /// Delay since that SR was received, in units of 1/65536 s.
    pub dlsr: u32,
}

/// The sender-info part of an SR (RFC 3550 §6.4.1), for [`build_sender_report`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderInfo {
    /// SSRC of the sender.
    pub ssrc: u32,
    /// Wall-clock time of the report as a 64-bit NTP timestamp (32.32 fixed point).
    pub ntp: u64,
    /// The RTP timestamp matching `ntp`, for lip sync and jitter.
    pub rtp_ts: u32,
    /// Packets sent since the start.
    pub packets: u32,
    /// Payload octets sent since the start (RTP headers and padding excluded).
    pub octets: u32,
}

/// One SDES chunk (RFC 3550 §6.5): the items describing one SSRC or CSRC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SdesChunk {
    /// The source described.
    pub ssrc: u32,
    /// Its items in order, the terminating null item excluded.
    pub items: Vec<SdesItem>,
}

/// One SDES item (RFC 3550 §6.5): a type (1 = CNAME, …) and up to 255 octets of UTF-8 text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SdesItem {
    /// Item type, e.g. [`SDES_CNAME`].
    pub kind: u8,
    /// The text as sent; RFC 3550 says UTF-8, but the relay does not rely on it.
    pub text: Vec<u8>,
}

/// One decoded RTCP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// RFC 3550 §6.4.1. Profile-specific extensions after the blocks are ignored (§6.4.3).
    SenderReport {
        ssrc: u32,
        ntp: u64,
        rtp_ts: u32,
        packets: u32,
        octets: u32,
        reports: Vec<ReportBlock>,
    },
    /// RFC 3550 §6.4.2. Profile-specific extensions after the blocks are ignored.
    ReceiverReport {
        ssrc: u32,
        reports: Vec<ReportBlock>,
    },
    /// RFC 3550 §6.5.
    Sdes { chunks: Vec<SdesChunk> },
    /// RFC 3550 §6.6. `reason` is `None` when no octets follow the SSRC list.
    Bye {
        ssrcs: Vec<u32>,
        reason: Option<Vec<u8>>,
    },
    /// RFC 3550 §6.7: `subtype` is the count field, `name` four ASCII octets.
    App {
        subtype: u8,
        ssrc: u32,
        name: [u8; 4],
        data: Vec<u8>,
    },
    /// Any other packet type, e.g. RTPFB (205) and PSFB (206) feedback of RFC 4585, where
    /// `count` is the FMT field. The relay forwards these without looking inside.
    Other { pt: u8, count: u8 },
}

/// A whole RTCP datagram: every packet of the compound, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compound {
    pub packets: Vec<Packet>,
}

/// A borrowed, checked RTCP packet: the first packet of a compound's remaining bytes.
#[derive(Clone, Copy, Debug)]
pub struct PacketView<'a> {
    /// Exactly this packet, header and padding included.
    bytes: &'a [u8],
    /// Where the padding starts (`bytes.len()` without padding).
    body_end: usize,
}

/// Iterator over the packets of a compound; see [`views`].
#[derive(Clone, Debug)]
pub struct Views<'a> {
    rest: &'a [u8],
    failed: bool,
}

/// RFC 5761 §4: with rtcp-mux, a second octet of 192..=223 (RTP payload types 64..=95 with the
/// marker bit set, which RFC 5761 reserves) means RTCP. STUN and DTLS on the same port are told
/// apart by the first octet (RFC 7983) before this is asked.
pub fn is_rtcp(bytes: &[u8]) -> bool {
    matches!(bytes.get(1), Some(192..=223))
}

/// The packets of the compound in `bytes`, each checked by [`PacketView::new_checked`] and
/// against the compound rules of RFC 3550 Appendix A.2 that do not depend on packet types:
/// the lengths must add up to the datagram, and only the last packet may be padded. The
/// iterator yields at most one error and then stops.
pub fn views(bytes: &[u8]) -> Views<'_> {
    Views {
        rest: bytes,
        failed: false,
    }
}

/// The middle 32 bits of a 64-bit NTP timestamp: the compact form used by the LSR field of a
/// report block (RFC 3550 §6.4.1), which is how a report names the SR it answers.
pub fn ntp_compact(ntp: u64) -> u32 {
    // The shift leaves 48 bits; the cast keeps the low 32 of those, i.e. bits 16..48.
    (ntp >> 16) as u32
}

/// A DLSR value (units of 1/65536 s, RFC 3550 §6.4.1) as a duration.
pub fn dlsr_to_duration(dlsr: u32) -> Duration {
    Duration::from_nanos(u64::from(dlsr) * 1_000_000_000 / 65_536)
}

/// A delay as a DLSR value (units of 1/65536 s), saturating at `u32::MAX` (about 18 hours).
pub fn dlsr_from_duration(delay: Duration) -> u32 {
    let units = delay.as_nanos() * 65_536 / 1_000_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}

/// Builds a compound of one RR and an SDES CNAME (RFC 3550 §6.1: every compound starts with a
/// report and carries a CNAME) for a leg where the appliance terminates RTCP and only receives.
/// More than 31 blocks spill into further RRs (§6.4). `cname` is cut to 255 octets.
pub fn build_receiver_report(ssrc: u32, reports: &[ReportBlock], cname: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(8 + REPORT_BLOCK_LEN * reports.len() + 12 + cname.len());
    write_receiver_reports(&mut buf, ssrc, reports);
    write_sdes_cname(&mut buf, ssrc, cname);
    buf
}

/// Builds a compound of one SR, further RRs if more than 31 blocks, and an SDES CNAME
/// (RFC 3550 §6.1, §6.4), for a leg where the appliance terminates RTCP and sends media.
pub fn build_sender_report(sender: &SenderInfo, reports: &[ReportBlock], cname: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(28 + REPORT_BLOCK_LEN * reports.len() + 12 + cname.len());
    let (first, rest) = reports.split_at(reports.len().min(MAX_COUNT));
    let words = (SR_FIXED_LEN + REPORT_BLOCK_LEN * first.len()) / 4;
    write_header(&mut buf, first.len(), PT_SR, words);
    buf.extend_from_slice(&sender.ssrc.to_be_bytes());
    buf.extend_from_slice(&sender.ntp.to_be_bytes());
    buf.extend_from_slice(&sender.rtp_ts.to_be_bytes());
    buf.extend_from_slice(&sender.packets.to_be_bytes());
    buf.extend_from_slice(&sender.octets.to_be_bytes());
    for block in first {
        block.write(&mut buf);
    }
    if !rest.is_empty() {
        write_receiver_reports(&mut buf, sender.ssrc, rest);
    }
    write_sdes_cname(&mut buf, sender.ssrc, cname);
    buf
}

impl ReportBlock {
    /// Decodes 24 bytes; callers have checked the length, and a short slice reads as zeros.
    fn from_bytes(b: &[u8]) -> ReportBlock {
        let word = be32(b, 4);
        ReportBlock {
            ssrc: be32(b, 0),
            fraction_lost: (word >> 24) as u8,
            // Shift the 24-bit field to the top and back to sign-extend it.
            cumulative_lost: ((word << 8) as i32) >> 8,
            highest_seq: be32(b, 8),
            jitter: be32(b, 12),
            lsr: be32(b, 16),
            dlsr: be32(b, 20),
        }
    }

    /// Appends the 24-byte encoding. `cumulative_lost` is clamped to 24 bits signed, as
    /// RFC 3550 Appendix A.3 asks, rather than wrapped into a nonsense value.
    fn write(&self, buf: &mut Vec<u8>) {
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff);
        let word = (u32::from(self.fraction_lost) << 24) | (lost as u32 & 0xff_ffff);
        for field in [
            self.ssrc,
            word,
            self.highest_seq,
            self.jitter,
            self.lsr,
            self.dlsr,
        ] {
            buf.extend_from_slice(&field.to_be_bytes());
        }
    }
}

impl Packet {
    /// Decodes a checked packet. The length field was checked by the view; this checks that the
    /// declared count of blocks, chunks or SSRCs, and every SDES item, fits inside it.
    pub fn parse(view: &PacketView<'_>) -> Result<Packet, RtcpError> {
        let pt = view.packet_type();
        let count = usize::from(view.count());
        let p = view.payload();
        let too_short = RtcpError::Length { pt };
        match pt {
            PT_SR => {
                let end = SR_FIXED_LEN + REPORT_BLOCK_LEN * count;
                let blocks = p.get(SR_FIXED_LEN..end).ok_or(too_short)?;
                Ok(Packet::SenderReport {
                    ssrc: be32(p, 0),
                    ntp: (u64::from(be32(p, 4)) << 32) | u64::from(be32(p, 8)),
                    rtp_ts: be32(p, 12),
                    packets: be32(p, 16),
                    octets: be32(p, 20),
                    reports: report_blocks(blocks),
                })
            }
            PT_RR => {
                let blocks = p.get(4..4 + REPORT_BLOCK_LEN * count).ok_or(too_short)?;
                Ok(Packet::ReceiverReport {
                    ssrc: be32(p, 0),
                    reports: report_blocks(blocks),
                })
            }
            PT_SDES => parse_sdes(p, count).ok_or(too_short),
            PT_BYE => {
                let list = p.get(..4 * count).ok_or(too_short)?;
                let ssrcs = list.chunks_exact(4).map(|s| be32(s, 0)).collect();
                let reason = match p.get(4 * count..) {
                    Some([len, text @ ..]) => {
                        Some(text.get(..usize::from(*len)).ok_or(too_short)?.to_vec())
                    }
                    _ => None,
                };
                Ok(Packet::Bye { ssrcs, reason })
            }
            PT_APP => {
                let name = p.get(4..8).ok_or(too_short)?;
                Ok(Packet::App {
                    subtype: view.count(),
                    ssrc: be32(p, 0),
                    name: [name[0], name[1], name[2], name[3]],
                    data: p.get(8..).unwrap_or_default().to_vec(),
                })
            }
            _ => Ok(Packet::Other {
                pt,
                count: view.count(),
            }),
        }
    }

    /// The report blocks an SR or RR carries; empty for other packets.
    pub fn report_blocks(&self) -> &[ReportBlock] {
        match self {
            Packet::SenderReport { reports, .. } | Packet::ReceiverReport { reports, .. } => {
                reports
            }
            _ => &[],
        }
    }
}

impl Compound {
    /// Parses every packet of an RTCP datagram; any malformed packet fails the whole compound,
    /// since its length fields can no longer be trusted to find the next one.
    ///
    /// The first packet is not required to be an SR or RR (RFC 3550 Appendix A.2 would): reduced-
    /// size RTCP (RFC 5506), which phones use for feedback, sends a PLI or NACK on its own, and
    /// the relay only reads RTCP for statistics.
    pub fn parse(bytes: &[u8]) -> Result<Compound, RtcpError> {
        if bytes.is_empty() {
            return Err(RtcpError::Truncated);
        }
        let packets = views(bytes)
            .map(|view| Packet::parse(&view?))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Compound { packets })
    }

    /// All report blocks of all SRs and RRs in the compound, in order.
    pub fn report_blocks(&self) -> impl Iterator<Item = &ReportBlock> {
        self.packets.iter().flat_map(Packet::report_blocks)
    }
}

impl<'a> PacketView<'a> {
    /// Checks the first packet in `bytes`: version 2, a length field that fits in `bytes`, and a
    /// padding count inside the packet (RFC 3550 §6.4.1). Bytes after the packet are left for
    /// the next one; [`PacketView::total_len`] says where that starts.
    pub fn new_checked(bytes: &'a [u8]) -> Result<PacketView<'a>, RtcpError> {
        let Some(header) = bytes.get(..HEADER_LEN) else {
            return Err(RtcpError::Truncated);
        };
        if header[0] >> 6 != 2 {
            return Err(RtcpError::Version);
        }
        // The length field counts 32-bit words minus one, header included.
        let len = (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1) * 4;
        let Some(packet) = bytes.get(..len) else {
            return Err(RtcpError::Truncated);
        };
        let mut body_end = len;
        if header[0] & 0x20 != 0 {
            // The last octet counts the padding, itself included.
            let pad = usize::from(packet[len - 1]);
            if pad == 0 || pad > len - HEADER_LEN {
                return Err(RtcpError::Padding);
            }
            body_end -= pad;
        }
        Ok(PacketView {
            bytes: packet,
            body_end,
        })
    }

    /// Whether the padding bit is set.
    pub fn padding(&self) -> bool {
        self.bytes[0] & 0x20 != 0
    }

    /// The 5-bit count field: report blocks (SR, RR), chunks (SDES), SSRCs (BYE), the subtype
    /// (APP) or FMT (RFC 4585 feedback).
    pub fn count(&self) -> u8 {
        self.bytes[0] & 0x1f
    }

    /// The packet type, e.g. [`PT_SR`].
    pub fn packet_type(&self) -> u8 {
        self.bytes[1]
    }

    /// The packet's size in bytes as its length field gives it, header and padding included.
    pub fn total_len(&self) -> usize {
        self.bytes.len()
    }

    /// The bytes after the 4-byte header, padding excluded.
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..self.body_end]
    }

    /// The whole packet, header and padding included, e.g. to forward it.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

impl<'a> Iterator for Views<'a> {
    type Item = Result<PacketView<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let checked = PacketView::new_checked(self.rest).and_then(|view| {
            if view.padding() && view.total_len() != self.rest.len() {
                Err(RtcpError::PaddingNotLast)
            } else {
                Ok(view)
            }
        });
        match checked {
            Ok(view) => self.rest = self.rest.get(view.total_len()..).unwrap_or_default(),
            Err(_) => self.failed = true,
        }
        Some(checked)
    }
}

/// A big-endian u32 at `at`, or 0 past the end: callers check lengths first, and a wrong check
/// must cost a wrong number, not a panic on network input.
fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at.saturating_add(4)) {
        Some(&[b0, b1, b2, b3]) => u32::from_be_bytes([b0, b1, b2, b3]),
        _ => 0,
    }
}

fn report_blocks(bytes: &[u8]) -> Vec<ReportBlock> {
    bytes
        .chunks_exact(REPORT_BLOCK_LEN)
        .map(ReportBlock::from_bytes)
        .collect()
}

/// RFC 3550 §6.5: `count` chunks, each an SSRC, items, one or more null octets up to the next
/// 32-bit boundary. `None` when a chunk or item overruns the packet or lacks its terminator.
fn parse_sdes(p: &[u8], count: usize) -> Option<Packet> {
    let mut chunks = Vec::with_capacity(count);
    let mut pos = 0;
    for _ in 0..count {
        let ssrc = be32(p.get(pos..pos + 4)?, 0);
        pos += 4;
        let mut items = Vec::new();
        loop {
            let kind = *p.get(pos)?;
            if kind == 0 {
                // The null item ends the chunk; skip it and its padding. Chunks are 32-bit
                // aligned relative to the payload, which itself starts on a word boundary.
                pos = (pos / 4 + 1) * 4;
                break;
            }
            let len = usize::from(*p.get(pos + 1)?);
            let text = p.get(pos + 2..pos + 2 + len)?.to_vec();
            items.push(SdesItem { kind, text });
            pos += 2 + len;
        }
        chunks.push(SdesChunk { ssrc, items });
    }
    (pos <= p.len()).then_some(Packet::Sdes { chunks })
}

/// Writes a header whose packet, header included, is `words + 1` 32-bit words long.
fn write_header(buf: &mut Vec<u8>, count: usize, pt: u8, words: usize) {
    // count <= 31 and words < 2^16 by construction in the builders.
    buf.push(0x80 | (count as u8 & 0x1f));
    buf.push(pt);
    buf.extend_from_slice(&(words as u16).to_be_bytes());
}

fn write_receiver_reports(buf: &mut Vec<u8>, ssrc: u32, reports: &[ReportBlock]) {
    let mut chunks = reports.chunks(MAX_COUNT).peekable();
    // An RR without blocks is still sent (§6.4.2: "if no data received … RC = 0").
    if chunks.peek().is_none() {
        write_header(buf, 0, PT_RR, 1);
        buf.extend_from_slice(&ssrc.to_be_bytes());
    }
    for chunk in chunks {
        write_header(
            buf,
            chunk.len(),
            PT_RR,
            1 + REPORT_BLOCK_LEN / 4 * chunk.len(),
        );
        buf.extend_from_slice(&ssrc.to_be_bytes());
        for block in chunk {
            block.write(buf);
        }
    }
}

/// One SDES packet with one chunk carrying a CNAME item (RFC 3550 §6.5.1).
fn write_sdes_cname(buf: &mut Vec<u8>, ssrc: u32, cname: &str) {
    let text = &cname.as_bytes()[..cname.floor_char_boundary(255)];
    // SSRC, type, length, text, then 1..=4 null octets to the next word boundary.
    let chunk_len = (4 + 2 + text.len()) / 4 * 4 + 4;
    write_header(buf, 1, PT_SDES, chunk_len / 4);
    buf.extend_from_slice(&ssrc.to_be_bytes());
    buf.push(SDES_CNAME);
    buf.push(text.len() as u8);
    buf.extend_from_slice(text);
    buf.resize(buf.len() + chunk_len - 6 - text.len(), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_lost_is_sign_extended_from_24_bits() {
        let block = ReportBlock {
            cumulative_lost: -3,
            fraction_lost: 7,
            ..ReportBlock::default()
        };
        let mut buf = Vec::new();
        block.write(&mut buf);
        assert_eq!(&buf[4..8], &[7, 0xff, 0xff, 0xfd]);
        assert_eq!(ReportBlock::from_bytes(&buf), block);
    }

    #[test]
    fn cumulative_lost_beyond_24_bits_is_clamped_not_wrapped() {
        let mut buf = Vec::new();
        ReportBlock {
            cumulative_lost: 0x0100_0000,
            ..ReportBlock::default()
        }
        .write(&mut buf);
        assert_eq!(ReportBlock::from_bytes(&buf).cumulative_lost, 0x7f_ffff);
        buf.clear();
        ReportBlock {
            cumulative_lost: i32::MIN,
            ..ReportBlock::default()
        }
        .write(&mut buf);
        assert_eq!(ReportBlock::from_bytes(&buf).cumulative_lost, -0x80_0000);
    }

    #[test]
    fn rtcp_mux_second_octet_range_is_192_to_223() {
        assert!(is_rtcp(&[0x80, 200]));
        assert!(is_rtcp(&[0x80, 192]));
        assert!(is_rtcp(&[0x80, 223]));
        assert!(!is_rtcp(&[0x80, 191]));
        assert!(!is_rtcp(&[0x80, 224]));
        assert!(!is_rtcp(&[0x80, 0x60])); // RTP PT 96, no marker
        assert!(!is_rtcp(&[0x80]));
    }

    #[test]
    fn ntp_compact_takes_the_middle_32_bits() {
        assert_eq!(ntp_compact(0x0123_4567_89ab_cdef), 0x4567_89ab);
    }

    #[test]
    fn dlsr_converts_both_ways() {
        assert_eq!(dlsr_to_duration(65_536), Duration::from_secs(1));
        assert_eq!(dlsr_from_duration(Duration::from_millis(500)), 32_768);
        assert_eq!(dlsr_from_duration(Duration::from_secs(1 << 20)), u32::MAX);
    }

    #[test]
    fn long_cname_is_cut_at_255_octets_on_a_char_boundary() {
        let cname = "é".repeat(200); // 400 octets
        let buf = build_receiver_report(1, &[], &cname);
        let compound = Compound::parse(&buf).expect("builder output parses");
        let Packet::Sdes { chunks } = &compound.packets[1] else {
            panic!("second packet is SDES: {compound:?}");
        };
        assert_eq!(chunks[0].items[0].text.len(), 254);
    }

    #[test]
    fn more_than_31_blocks_spill_into_a_second_receiver_report() {
        let blocks: Vec<_> = (0..40)
            .map(|ssrc| ReportBlock {
                ssrc,
                ..ReportBlock::default()
            })
            .collect();
        let compound = Compound::parse(&build_receiver_report(9, &blocks, "a@b")).expect("parses");
        assert_eq!(compound.packets.len(), 3);
        assert_eq!(
            compound.report_blocks().copied().collect::<Vec<_>>(),
            blocks
        );
    }
}

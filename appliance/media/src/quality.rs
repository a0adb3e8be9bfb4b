//! Call quality as a relay in the middle sees it: receive statistics per RTP stream
//! (RFC 3550 Appendix A.1, A.3, A.8), round-trip time from RTCP passing through
//! ([`RttProbe`]), and a MOS estimate from the simplified ITU-T G.107 E-model.
//!
//! Nothing here reads a clock. Every arrival carries its `now`, so a test replays a call with
//! made-up times and gets exactly the figures a hand computation gives.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::rtcp::{self, ReportBlock};

/// RFC 3550 Appendix A.1: a forward jump of less than this many sequence numbers is loss, not
/// a new source. 3000 is the RFC's value (about a minute of 20 ms packets).
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 Appendix A.1: a backward step of up to this many is a late or duplicate packet.
const MAX_MISORDER: u16 = 100;
/// RFC 3550 Appendix A.1: packets in sequence before a source counts as valid. Two is the
/// RFC's suggestion for audio, where a source must be heard quickly.
const MIN_SEQUENTIAL: u16 = 2;
const RTP_SEQ_MOD: u32 = 1 << 16;

/// RTT samples above this are discarded: a report naming an SR from a previous SSRC epoch, or
/// a peer's bad DLSR, would otherwise poison the estimate (nothing in a call takes 10 s).
const MAX_RTT: Duration = Duration::from_secs(10);
/// SRs remembered per SSRC. A receiver answers the latest SR it saw, normally within one
/// report interval (5 s, RFC 3550 §6.2), so a few cover lost or crossing reports.
const SRS_PER_SSRC: usize = 4;
/// SRs remembered in total, bounding memory whatever SSRCs a peer invents.
const SRS_TOTAL: usize = 32;

/// Assumed round-trip time when no RTCP measurement exists yet: a few Wi-Fi mesh hops each
/// way. Phones that send no SRs never give us one, and a guess beats no MOS at all.
pub const DEFAULT_RTT: Duration = Duration::from_millis(40);

/// Receive statistics of one RTP stream (one SSRC), as RFC 3550 Appendix A keeps them.
///
/// Feed every RTP packet of the stream to [`ReceiveStats::update`]; call
/// [`ReceiveStats::report_block`] when sending an RR, and [`ReceiveStats::quality`] whenever
/// the daemon asks.
#[derive(Clone, Debug)]
pub struct ReceiveStats {
    /// Highest sequence number seen (A.1 `max_seq`).
    max_seq: u16,
    /// Sequence number wraps, shifted left 16 bits (A.1 `cycles`).
    cycles: u32,
    /// First sequence number counted (A.1 `base_seq`).
    base_seq: u32,
    /// After a large jump: the sequence number that would confirm a restart (A.1 `bad_seq`);
    /// `RTP_SEQ_MOD + 1` when none.
    bad_seq: u32,
    /// Sequential packets still needed before the source is valid (A.1 `probation`).
    probation: u16,
    /// Whether any packet arrived: A.1 initialises the source on the first one.
    started: bool,
    /// Packets counted, duplicates and late packets included (A.1 `received`).
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    bytes: u64,
    /// Relative transit time of the previous packet (A.8), in timestamp units.
    transit: Option<u32>,
    /// Interarrival jitter in timestamp units (A.8), kept as a float rather than A.8's ×16
    /// integer so the estimate has no rounding drift.
    jitter: f64,
    clock_rate: u32,
    /// Arrival of the first packet: the zero of the arrival clock in timestamp units.
    epoch: Option<Instant>,
}

/// Round-trip time seen by the relay, from SRs and the report blocks that answer them.
///
/// An SR passing one way is remembered with its arrival time. When a report block passing the
/// other way names it (LSR) and says how long its sender held it (DLSR), the remainder is the
/// round trip from the relay to that receiver and back (RFC 3550 §6.4.1, the figure under
/// "DLSR"): the relay's half of the path, on the receiver's side.
#[derive(Clone, Debug, Default)]
pub struct RttProbe {
    srs: VecDeque<SrSeen>,
    last: Option<Duration>,
}

/// One stream's quality, for the daemon's API and logs (it serialises the fields itself).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Quality {
    /// Packets received, duplicates included (RFC 3550 A.1).
    pub packets: u64,
    /// Bytes as added by [`ReceiveStats::add_bytes`].
    pub bytes: u64,
    /// Packets lost: expected minus received, never negative.
    pub lost: u64,
    /// `lost` as a percentage of expected, in `0.0..=100.0`.
    pub loss_pct: f64,
    /// Interarrival jitter in milliseconds (RFC 3550 A.8).
    pub jitter_ms: f64,
    /// Round-trip time measured through RTCP, if any.
    pub rtt_ms: Option<f64>,
    /// Estimated mean opinion score, 1.0 to 4.5 (ITU-T G.107 Annex B).
    pub mos: f64,
}

/// How a codec stands up to the E-model (ITU-T G.107 §7.3, values from ITU-T G.113
/// Appendix I): `ie` is the impairment with no loss, `bpl` how well it conceals random loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CodecImpairment {
    pub ie: f64,
    pub bpl: f64,
}

/// What [`ReceiveStats::quality`] needs besides the counters to estimate a MOS.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MosModel {
    pub codec: CodecImpairment,
    /// The receiver's playout delay. `None` when the buffer is the phone's and unknown: then
    /// twice the measured jitter is assumed, a common target for adaptive buffers.
    pub jitter_buffer: Option<Duration>,
    /// Packetisation: one frame of audio is buffered before it is sent (20 ms usually).
    pub frame: Duration,
}

impl CodecImpairment {
    /// G.711 with packet-loss concealment: Ie 0, Bpl 25.1 (ITU-T G.113 Appendix I, Table I.3).
    pub const G711_PLC: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };
    /// G.711 without concealment: Ie 0, Bpl 4.3 (ITU-T G.113 Appendix I, Table I.3).
    pub const G711: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 4.3 };
    /// Opus (wideband, with its built-in concealment) scored on the narrowband scale: Ie 11,
    /// Bpl 20. ITU-T publishes no Opus values for G.113, so this is an approximation, one
    /// commonly used and close to G.113 Appendix I's G.729A+VAD (Ie 11, Bpl 19). The
    /// narrowband E-model cannot credit wideband audio or Opus in-band FEC, so these figures
    /// put Opus below G.711 with PLC at any loss and above G.711 without PLC once loss passes
    /// about 1 %: read an Opus MOS as conservative.
    pub const OPUS: CodecImpairment = CodecImpairment {
        ie: 11.0,
        bpl: 20.0,
    };
}

/// MOS from the simplified E-model (ITU-T G.107): R = 93.2 − Id − Ie,eff, with
/// Ie,eff = Ie + (95 − Ie)·Ppl/(Ppl + Bpl) for random loss (G.107 §7.3, BurstR = 1) and the
/// usual piecewise-linear fit of G.107's Idd, Id = 0.024·d + 0.11·(d − 177.3)·H(d − 177.3)
/// (Cole and Rosenbluth, "Voice over IP performance monitoring", 2001), then G.107 Annex B's
/// R-to-MOS mapping, clamped to 1.0..=4.5.
///
/// 93.2 is G.107's R with every default parameter: the best a narrowband call can be. Inputs
/// out of range are clamped (loss to 0–100 %, delay and Bpl to ≥ 0; NaN counts as 0), so the
/// result is always in range.
pub fn mos_estimate(codec_ie: f64, bpl: f64, loss_pct: f64, one_way_delay_ms: f64) -> f64 {
    // clamp alone would keep a NaN.
    let ppl = if loss_pct.is_nan() {
        0.0
    } else {
        loss_pct.clamp(0.0, 100.0)
    };
    let delay = one_way_delay_ms.max(0.0);
    let ie = codec_ie.max(0.0);
    let ie_eff = if ppl > 0.0 {
        ie + (95.0 - ie) * ppl / (ppl + bpl.max(0.0))
    } else {
        ie
    };
    let id = 0.024 * delay
        + if delay > 177.3 {
            0.11 * (delay - 177.3)
        } else {
            0.0
        };
    let r = 93.2 - id - ie_eff;
    if r.is_nan() || r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).clamp(1.0, 4.5)
    }
}

/// Mouth-to-ear delay as the E-model wants it: half the round trip, the playout buffer and one
/// frame of packetisation. `rtt` defaults to [`DEFAULT_RTT`] when nothing was measured.
pub fn one_way_delay(rtt: Option<Duration>, jitter_buffer: Duration, frame: Duration) -> Duration {
    (rtt.unwrap_or(DEFAULT_RTT) / 2)
        .saturating_add(jitter_buffer)
        .saturating_add(frame)
}

impl ReceiveStats {
    pub fn new() -> ReceiveStats {
        ReceiveStats {
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            // Out of the 16-bit range: no restart candidate yet.
            bad_seq: RTP_SEQ_MOD + 1,
            probation: 0,
            started: false,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            bytes: 0,
            transit: None,
            jitter: 0.0,
            clock_rate: 0,
            epoch: None,
        }
    }

    /// Counts one RTP packet of this stream that arrived at `arrival`: sequence tracking with
    /// wrap, probation and restart after a large jump (RFC 3550 Appendix A.1), and
    /// interarrival jitter (A.8). Call it for every packet, duplicates and late ones included,
    /// in arrival order. `clock_rate` is the RTP clock of the packet's payload type.
    ///
    /// Returns whether the packet was counted. It is not while the source is on probation, or
    /// for the first packet after a jump of more than 3000 (A.1: a second, sequential packet
    /// confirms a restarted source). Simplified from A.1: the packets of a completed probation
    /// run, and the packet before a confirmed restart, are counted too, so a stream of N
    /// packets reports N received rather than N − 1.
    pub fn update(&mut self, arrival: Instant, seq: u16, rtp_ts: u32, clock_rate: u32) -> bool {
        let counted = self.update_seq(seq);
        // A.8 compares transit times within one source's timeline; a rejected jump may be
        // another source, and a new clock rate is a new timeline.
        if counted || self.probation > 0 {
            self.update_jitter(arrival, rtp_ts, clock_rate, counted);
        }
        counted
    }

    /// Counts a packet whose timestamp is not a sampling instant (an RFC 4733 event repeats
    /// its start timestamp; comfort noise is sparse): sequence tracking only, no jitter.
    pub fn update_sequence_only(&mut self, seq: u16) -> bool {
        self.update_seq(seq)
    }

    /// Adds to the byte count reported in [`Quality::bytes`]. The caller decides what it counts
    /// (the relay counts whole RTP packets); RTCP's octet count is kept by the sender.
    pub fn add_bytes(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_add(n as u64);
    }

    /// Packets counted, duplicates and late packets included (RFC 3550 A.1).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The extended highest sequence number: wraps in the high 16 bits (RFC 3550 A.1).
    pub fn extended_highest_seq(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }

    /// Packets expected from the first counted to the highest seen (RFC 3550 A.3).
    pub fn expected(&self) -> u64 {
        if self.received == 0 {
            return 0;
        }
        (u64::from(self.extended_highest_seq()) + 1).saturating_sub(u64::from(self.base_seq))
    }

    /// Expected minus received (RFC 3550 A.3): negative when duplicates outnumber losses.
    pub fn cumulative_lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Loss since the start in percent, 0 when duplicates make up for it (never negative).
    pub fn loss_pct(&self) -> f64 {
        let expected = self.expected();
        if expected == 0 {
            return 0.0;
        }
        self.cumulative_lost().max(0) as f64 * 100.0 / expected as f64
    }

    /// Interarrival jitter in timestamp units, as a report block carries it (RFC 3550 A.8).
    pub fn jitter(&self) -> u32 {
        self.jitter as u32
    }

    /// Interarrival jitter in milliseconds of the stream's clock.
    pub fn jitter_ms(&self) -> f64 {
        if self.clock_rate == 0 {
            return 0.0;
        }
        self.jitter * 1000.0 / f64::from(self.clock_rate)
    }

    /// A report block about this stream for an RR we send (RFC 3550 §6.4.1, A.3), with the
    /// fraction lost since the previous call. `lsr` and `dlsr` come from the last SR received
    /// from `ssrc` (0 and 0 if none).
    pub fn report_block(&mut self, ssrc: u32, lsr: u32, dlsr: u32) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        // A.3: a negative interval loss (duplicates) reports as zero.
        let lost_interval = expected_interval.saturating_sub(received_interval);
        // lost_interval <= expected_interval, so the quotient is at most 256; cap at 255.
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |fraction| fraction.min(255) as u8);
        ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: self
                .cumulative_lost()
                .clamp(-0x80_0000, 0x7f_ffff)
                .try_into()
                .expect("clamped to 24 bits, which fit an i32"),
            highest_seq: self.extended_highest_seq(),
            jitter: self.jitter(),
            lsr,
            dlsr,
        }
    }

    /// The stream's quality summary. `rtt` is the latest [`RttProbe`] sample, if any.
    pub fn quality(&self, rtt: Option<Duration>, model: &MosModel) -> Quality {
        let jitter_ms = self.jitter_ms();
        let jitter_buffer = model.jitter_buffer.unwrap_or_else(|| {
            // Finite and non-negative by construction; saturate rather than trust that.
            Duration::try_from_secs_f64(2.0 * jitter_ms / 1000.0).unwrap_or(Duration::MAX)
        });
        let delay = one_way_delay(rtt, jitter_buffer, model.frame);
        let loss_pct = self.loss_pct();
        Quality {
            packets: self.received,
            bytes: self.bytes,
            lost: self.cumulative_lost().max(0) as u64,
            loss_pct,
            jitter_ms,
            rtt_ms: rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
            mos: mos_estimate(
                model.codec.ie,
                model.codec.bpl,
                loss_pct,
                delay.as_secs_f64() * 1000.0,
            ),
        }
    }

    /// RFC 3550 Appendix A.1 `update_seq`, with the counting simplification described on
    /// [`ReceiveStats::update`].
    fn update_seq(&mut self, seq: u16) -> bool {
        if !self.started {
            // A.1 on the first packet: max_seq = seq − 1 and full probation, then the
            // in-sequence branch below consumes one step.
            self.started = true;
            self.max_seq = seq;
            self.probation = MIN_SEQUENTIAL - 1;
            return false;
        }
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    self.restart(seq, MIN_SEQUENTIAL);
                    return true;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return false;
        }
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta < MAX_DROPOUT {
            // In order, possibly with a gap; a smaller number means it wrapped.
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if u32::from(udelta) <= RTP_SEQ_MOD - u32::from(MAX_MISORDER) {
            // A very large jump: the source restarted, or this is a stray packet.
            if u32::from(seq) == self.bad_seq {
                // A new timeline too: the jump's transit says nothing about the old one.
                self.transit = None;
                self.restart(seq, 2);
                return true;
            }
            self.bad_seq = u32::from(seq.wrapping_add(1));
            return false;
        }
        // Otherwise a duplicate or a late packet: counted, max_seq unchanged.
        self.received += 1;
        true
    }

    /// A.1 `init_seq` for a source whose last `run` packets, ending at `seq`, were sequential;
    /// they all count. Jitter survives: it describes the path, not the sequence numbers.
    fn restart(&mut self, seq: u16, run: u16) {
        let first = seq.wrapping_sub(run - 1);
        self.base_seq = u32::from(first);
        self.max_seq = seq;
        // If the run wrapped, the extended highest sequence is in the next cycle.
        self.cycles = if first > seq { RTP_SEQ_MOD } else { 0 };
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.probation = 0;
        self.received = u64::from(run);
        self.expected_prior = 0;
        self.received_prior = 0;
    }

    /// RFC 3550 Appendix A.8: J += (|D| − J)/16, where D is the change in relative transit
    /// time (arrival in timestamp units minus RTP timestamp) between consecutive packets.
    fn update_jitter(&mut self, arrival: Instant, rtp_ts: u32, clock_rate: u32, counted: bool) {
        if clock_rate != self.clock_rate {
            self.clock_rate = clock_rate;
            self.transit = None;
        }
        if clock_rate == 0 {
            return;
        }
        let epoch = *self.epoch.get_or_insert(arrival);
        let elapsed = arrival.saturating_duration_since(epoch).as_nanos();
        // Arrival in timestamp units; both it and the RTP timestamp wrap at 2^32, and the
        // wrapping difference of two transits is still right.
        let arrival_ts = (elapsed * u128::from(clock_rate) / 1_000_000_000) as u32;
        let transit = arrival_ts.wrapping_sub(rtp_ts);
        if let (Some(previous), true) = (self.transit, counted) {
            let d = f64::from((transit.wrapping_sub(previous) as i32).unsigned_abs());
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }
}

impl Default for ReceiveStats {
    fn default() -> ReceiveStats {
        ReceiveStats::new()
    }
}

#[derive(Clone, Copy, Debug)]
struct SrSeen {
    ssrc: u32,
    lsr: u32,
    arrival: Instant,
}

impl RttProbe {
    pub fn new() -> RttProbe {
        RttProbe::default()
    }

    /// Call when an SR from `ssrc` passes through (in either direction), with its 64-bit NTP
    /// timestamp. Keeps the last few per SSRC, and a bounded number in total.
    pub fn on_sender_report(&mut self, now: Instant, ssrc: u32, ntp: u64) {
        let lsr = rtcp::ntp_compact(ntp);
        if self.srs.iter().filter(|sr| sr.ssrc == ssrc).count() >= SRS_PER_SSRC
            && let Some(oldest) = self.srs.iter().position(|sr| sr.ssrc == ssrc)
        {
            self.srs.remove(oldest);
        }
        if self.srs.len() >= SRS_TOTAL {
            self.srs.pop_front();
        }
        self.srs.push_back(SrSeen {
            ssrc,
            lsr,
            arrival: now,
        });
    }

    /// Call for each report block passing through (in the direction opposite to the SRs it
    /// answers). If it names a remembered SR, returns the round trip between the relay and
    /// the block's sender: now − SR arrival − DLSR (RFC 3550 §6.4.1). `None` when LSR is 0
    /// (no SR received yet), unknown, or the result is negative or above 10 s.
    pub fn on_report_block(&mut self, now: Instant, block: &ReportBlock) -> Option<Duration> {
        if block.lsr == 0 {
            return None;
        }
        let sr = self
            .srs
            .iter()
            .rev()
            .find(|sr| sr.ssrc == block.ssrc && sr.lsr == block.lsr)?;
        let rtt = now
            .checked_duration_since(sr.arrival)?
            .checked_sub(rtcp::dlsr_to_duration(block.dlsr))?;
        if rtt > MAX_RTT {
            return None;
        }
        self.last = Some(rtt);
        Some(rtt)
    }

    /// The latest round-trip sample, for [`ReceiveStats::quality`].
    pub fn rtt(&self) -> Option<Duration> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_without_loss_at_20_ms_scores_about_4_4() {
        let mos = mos_estimate(0.0, 25.1, 0.0, 20.0);
        assert!((mos - 4.40).abs() < 0.01, "{mos}");
    }

    #[test]
    fn nonsense_inputs_still_give_a_mos_in_range() {
        for (ie, bpl, loss, delay) in [
            (f64::NAN, f64::NAN, f64::NAN, f64::NAN),
            (0.0, 0.0, 0.0, 0.0),
            (0.0, 0.0, 1.0, 0.0),
            (200.0, 1.0, 500.0, f64::INFINITY),
            (-5.0, -1.0, -3.0, -10.0),
        ] {
            let mos = mos_estimate(ie, bpl, loss, delay);
            assert!(
                (1.0..=4.5).contains(&mos),
                "{ie} {bpl} {loss} {delay} -> {mos}"
            );
        }
    }

    #[test]
    fn restart_over_a_wrap_counts_both_packets() {
        let mut stats = ReceiveStats::new();
        stats.restart(0, 2);
        assert_eq!(stats.base_seq, 65_535);
        assert_eq!(stats.expected(), 2);
        assert_eq!(stats.received(), 2);
    }
}

//! RTCP parsing and building, receive statistics, RTT through the relay and the MOS estimate,
//! all driven with made-up bytes and made-up times.

use std::time::{Duration, Instant};

use fieldmesh_media::quality::{
    CodecImpairment, DEFAULT_RTT, MosModel, ReceiveStats, RttProbe, mos_estimate, one_way_delay,
};
use fieldmesh_media::rtcp::{
    self, Compound, Packet, ReportBlock, RtcpError, SdesChunk, SdesItem, SenderInfo,
};

/// The one real `Instant` of these tests: every other time is an offset from it.
#[allow(clippy::disallowed_methods)]
fn start() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// RTCP

/// SR (one block) + SDES CNAME "a@b", written out by hand from RFC 3550 §6.4.1 and §6.5.
const SR_SDES: &[u8] = &[
    0x81, 0xc8, 0x00, 0x0c, // V=2 RC=1 PT=SR length=12
    0x11, 0x22, 0x33, 0x44, // SSRC of sender
    0xe5, 0xa1, 0xb2, 0xc3, 0x80, 0x00, 0x00, 0x00, // NTP timestamp
    0x00, 0x01, 0x23, 0x45, // RTP timestamp
    0x00, 0x00, 0x00, 0x64, // sender's packet count 100
    0x00, 0x00, 0x3e, 0x80, // sender's octet count 16000
    0xaa, 0xbb, 0xcc, 0xdd, // block: SSRC
    0x40, 0x00, 0x00, 0x05, // fraction lost 64/256, cumulative 5
    0x00, 0x01, 0x00, 0x10, // extended highest seq: cycle 1, seq 16
    0x00, 0x00, 0x00, 0x20, // jitter 32
    0xb2, 0xc3, 0x80, 0x00, // LSR
    0x00, 0x01, 0x00, 0x00, // DLSR 1 s
    0x81, 0xca, 0x00, 0x03, // V=2 SC=1 PT=SDES length=3
    0x11, 0x22, 0x33, 0x44, // chunk SSRC
    0x01, 0x03, b'a', b'@', b'b', 0x00, 0x00, 0x00, // CNAME "a@b", 3 null octets
];

/// RR (one block) + SDES (CNAME and NAME) + BYE with reason + APP + PSFB PLI.
const RR_SDES_BYE_APP_PLI: &[u8] = &[
    0x81, 0xc9, 0x00, 0x07, // V=2 RC=1 PT=RR length=7
    0x01, 0x02, 0x03, 0x04, // SSRC of reporter
    0x0a, 0x0b, 0x0c, 0x0d, // block: SSRC
    0x00, 0xff, 0xff, 0xfe, // fraction 0, cumulative -2 (duplicates)
    0x00, 0x00, 0x12, 0x34, // extended highest seq
    0x00, 0x00, 0x01, 0x00, // jitter 256
    0x00, 0x00, 0x00, 0x00, // LSR: no SR yet
    0x00, 0x00, 0x00, 0x00, // DLSR
    0x81, 0xca, 0x00, 0x04, // V=2 SC=1 PT=SDES length=4
    0x01, 0x02, 0x03, 0x04, // chunk SSRC
    0x01, 0x01, b'x', // CNAME "x"
    0x02, 0x03, b'B', b'o', b'b', // NAME "Bob"
    0x00, 0x00, 0x00, 0x00, // null item and padding to the word
    0x81, 0xcb, 0x00, 0x02, // V=2 SC=1 PT=BYE length=2
    0x01, 0x02, 0x03, 0x04, // SSRC
    0x03, b'b', b'y', b'e', // reason "bye"
    0x83, 0xcc, 0x00, 0x03, // V=2 subtype=3 PT=APP length=3
    0x01, 0x02, 0x03, 0x04, // SSRC
    b'T', b'E', b'S', b'T', // name
    0xde, 0xad, 0xbe, 0xef, // data
    0x81, 0xce, 0x00, 0x02, // V=2 FMT=1 PT=PSFB (PLI) length=2
    0x01, 0x02, 0x03, 0x04, // sender SSRC
    0x0a, 0x0b, 0x0c, 0x0d, // media SSRC
];

fn sr_sdes_parsed() -> Vec<Packet> {
    vec![
        Packet::SenderReport {
            ssrc: 0x1122_3344,
            ntp: 0xe5a1_b2c3_8000_0000,
            rtp_ts: 0x0001_2345,
            packets: 100,
            octets: 16_000,
            reports: vec![ReportBlock {
                ssrc: 0xaabb_ccdd,
                fraction_lost: 0x40,
                cumulative_lost: 5,
                highest_seq: 0x0001_0010,
                jitter: 32,
                lsr: 0xb2c3_8000,
                dlsr: 0x0001_0000,
            }],
        },
        Packet::Sdes {
            chunks: vec![SdesChunk {
                ssrc: 0x1122_3344,
                items: vec![SdesItem {
                    kind: rtcp::SDES_CNAME,
                    text: b"a@b".to_vec(),
                }],
            }],
        },
    ]
}

/// Offsets where each packet of a compound ends, from the length fields.
fn packet_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut end = 0;
    for view in rtcp::views(bytes) {
        end += view.expect("valid compound").total_len();
        ends.push(end);
    }
    ends
}

/// xorshift64: seeded, so a failure names an input that reproduces.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn hand_built_sender_report_with_cname_parses_field_by_field() {
    let compound = Compound::parse(SR_SDES).expect("valid compound");
    assert_eq!(compound.packets, sr_sdes_parsed());
}

#[test]
fn build_sender_report_writes_the_hand_built_bytes_exactly() {
    let Packet::SenderReport {
        ssrc,
        ntp,
        rtp_ts,
        packets,
        octets,
        reports,
    } = &sr_sdes_parsed()[0]
    else {
        unreachable!("first packet is the SR");
    };
    let sender = SenderInfo {
        ssrc: *ssrc,
        ntp: *ntp,
        rtp_ts: *rtp_ts,
        packets: *packets,
        octets: *octets,
    };
    assert_eq!(rtcp::build_sender_report(&sender, reports, "a@b"), SR_SDES);
}

#[test]
fn hand_built_rr_sdes_bye_app_and_pli_parse_field_by_field() {
    let compound = Compound::parse(RR_SDES_BYE_APP_PLI).expect("valid compound");
    assert_eq!(
        compound.packets,
        vec![
            Packet::ReceiverReport {
                ssrc: 0x0102_0304,
                reports: vec![ReportBlock {
                    ssrc: 0x0a0b_0c0d,
                    fraction_lost: 0,
                    cumulative_lost: -2,
                    highest_seq: 0x1234,
                    jitter: 256,
                    lsr: 0,
                    dlsr: 0,
                }],
            },
            Packet::Sdes {
                chunks: vec![SdesChunk {
                    ssrc: 0x0102_0304,
                    items: vec![
                        SdesItem {
                            kind: 1,
                            text: b"x".to_vec()
                        },
                        SdesItem {
                            kind: 2,
                            text: b"Bob".to_vec()
                        },
                    ],
                }],
            },
            Packet::Bye {
                ssrcs: vec![0x0102_0304],
                reason: Some(b"bye".to_vec()),
            },
            Packet::App {
                subtype: 3,
                ssrc: 0x0102_0304,
                name: *b"TEST",
                data: vec![0xde, 0xad, 0xbe, 0xef],
            },
            Packet::Other { pt: 206, count: 1 },
        ]
    );
}

#[test]
fn build_receiver_report_round_trips_through_parse() {
    let blocks = [
        ReportBlock {
            ssrc: 7,
            fraction_lost: 12,
            cumulative_lost: -40,
            highest_seq: 0x0003_fff0,
            jitter: 99,
            lsr: 0x1234_5678,
            dlsr: 6553,
        },
        ReportBlock {
            ssrc: 8,
            cumulative_lost: 0x7f_ffff,
            ..ReportBlock::default()
        },
    ];
    let bytes = rtcp::build_receiver_report(0xfeed, &blocks, "leg-1@fieldmesh");
    assert_eq!(bytes.len() % 4, 0);
    let compound = Compound::parse(&bytes).expect("builder output parses");
    assert_eq!(
        compound.packets[0],
        Packet::ReceiverReport {
            ssrc: 0xfeed,
            reports: blocks.to_vec()
        }
    );
    assert_eq!(
        compound.packets[1],
        Packet::Sdes {
            chunks: vec![SdesChunk {
                ssrc: 0xfeed,
                items: vec![SdesItem {
                    kind: rtcp::SDES_CNAME,
                    text: b"leg-1@fieldmesh".to_vec()
                }],
            }],
        }
    );
}

#[test]
fn receiver_report_without_blocks_is_still_a_report_then_cname() {
    let bytes = rtcp::build_receiver_report(5, &[], "");
    let compound = Compound::parse(&bytes).expect("builder output parses");
    assert_eq!(
        compound.packets[0],
        Packet::ReceiverReport {
            ssrc: 5,
            reports: vec![]
        }
    );
    assert!(matches!(compound.packets[1], Packet::Sdes { .. }));
}

#[test]
fn every_truncation_fails_unless_it_ends_on_a_packet_boundary() {
    for full in [SR_SDES, RR_SDES_BYE_APP_PLI] {
        let whole = Compound::parse(full).expect("valid compound").packets;
        let ends = packet_ends(full);
        for len in 0..full.len() {
            let result = Compound::parse(&full[..len]);
            match ends.iter().position(|&end| end == len) {
                // A cut between packets leaves a shorter, valid compound: its prefix.
                Some(i) => assert_eq!(result.expect("boundary cut").packets, whole[..=i]),
                None => assert!(result.is_err(), "cut at {len} of {} parsed", full.len()),
            }
        }
    }
}

#[test]
fn each_malformation_has_its_own_error() {
    assert_eq!(Compound::parse(&[]), Err(RtcpError::Truncated));
    assert_eq!(
        Compound::parse(&[0x81, 0xc9, 0x00]),
        Err(RtcpError::Truncated)
    );
    assert_eq!(
        Compound::parse(&[0x41, 0xc9, 0x00, 0x00]),
        Err(RtcpError::Version)
    );
    // RC=1 but the length field leaves room for the SSRC only.
    assert_eq!(
        Compound::parse(&[0x81, 0xc9, 0x00, 0x01, 0, 0, 0, 1]),
        Err(RtcpError::Length { pt: 201 })
    );
    // Padding count 0, and padding count beyond the packet.
    assert_eq!(
        Compound::parse(&[0xa0, 0xcb, 0x00, 0x01, 0, 0, 0, 0]),
        Err(RtcpError::Padding)
    );
    assert_eq!(
        Compound::parse(&[0xa0, 0xcb, 0x00, 0x01, 0, 0, 0, 9]),
        Err(RtcpError::Padding)
    );
    // SDES item running past its packet.
    assert_eq!(
        Compound::parse(&[0x81, 0xca, 0x00, 0x02, 0, 0, 0, 1, 1, 9, b'a', b'b']),
        Err(RtcpError::Length { pt: 202 })
    );
    // BYE reason longer than what follows.
    assert_eq!(
        Compound::parse(&[0x81, 0xcb, 0x00, 0x02, 0, 0, 0, 1, 9, b'a', b'b', b'c']),
        Err(RtcpError::Length { pt: 203 })
    );
}

#[test]
fn padding_is_accepted_only_on_the_last_packet() {
    let padded_bye = [0xa1, 0xcb, 0x00, 0x02, 0, 0, 0, 7, 0, 0, 0, 4];
    let mut last = SR_SDES.to_vec();
    last.extend_from_slice(&padded_bye);
    let compound = Compound::parse(&last).expect("padding on the last packet is fine");
    assert_eq!(
        compound.packets[2],
        Packet::Bye {
            ssrcs: vec![7],
            reason: None
        }
    );

    let mut first = padded_bye.to_vec();
    first.extend_from_slice(SR_SDES);
    assert_eq!(Compound::parse(&first), Err(RtcpError::PaddingNotLast));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x5eed_f1e1_d0e5_4a11);
    let mut panics = Vec::new();
    for i in 0..100_000 {
        let len = (rng.next() % 96) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half the inputs get a plausible header, so parsing goes past the version check.
        if i % 2 == 0 && len >= 4 {
            bytes[0] = 0x80 | (bytes[0] & 0x3f);
            bytes[1] = 200 + (bytes[1] % 7);
            bytes[2] = 0;
            bytes[3] %= 24;
        }
        let outcome = std::panic::catch_unwind(|| {
            let parsed = Compound::parse(&bytes);
            let _ = rtcp::is_rtcp(&bytes);
            // When a compound parses, the views must account for every byte.
            if parsed.is_ok() {
                assert_eq!(packet_ends(&bytes).last().copied(), Some(bytes.len()));
            }
        });
        if outcome.is_err() {
            panics.push(bytes);
        }
    }
    assert!(
        panics.is_empty(),
        "{} inputs panicked, e.g. {:02x?}",
        panics.len(),
        panics[0]
    );
}

// ---------------------------------------------------------------------------------------------
// ReceiveStats

/// Feeds `seqs` as a G.711 stream: 20 ms packets, 160 timestamp units each, arriving on time.
fn feed(stats: &mut ReceiveStats, t0: Instant, seqs: impl IntoIterator<Item = u16>) {
    for seq in seqs {
        let index = u64::from(seq.wrapping_sub(1000));
        let ts = 160 * seq.wrapping_sub(1000) as u32;
        stats.update(t0 + ms(20 * index), seq, ts, 8000);
    }
}

#[test]
fn in_order_stream_has_no_loss_and_no_jitter() {
    let t0 = start();
    let mut stats = ReceiveStats::new();
    feed(&mut stats, t0, 1000..1100);
    assert_eq!(stats.received(), 100);
    assert_eq!(stats.expected(), 100);
    assert_eq!(stats.cumulative_lost(), 0);
    assert_eq!(stats.loss_pct(), 0.0);
    assert_eq!(stats.jitter(), 0);
    assert_eq!(stats.extended_highest_seq(), 1099);
}

#[test]
fn six_lost_of_two_hundred_is_exactly_three_percent() {
    let t0 = start();
    let mut stats = ReceiveStats::new();
    let dropped = [1010, 1050, 1090, 1130, 1170, 1190];
    feed(
        &mut stats,
        t0,
        (1000..1200).filter(|s| !dropped.contains(s)),
    );
    assert_eq!(stats.expected(), 200);
    assert_eq!(stats.received(), 194);
    assert_eq!(stats.cumulative_lost(), 6);
    assert_eq!(stats.loss_pct(), 3.0);

    let block = stats.report_block(0xabc, 0, 0);
    assert_eq!(block.cumulative_lost, 6);
    assert_eq!(
        block.fraction_lost, 7,
        "6·256/200 = 7.68, truncated as in A.3"
    );
    assert_eq!(block.highest_seq, 1199);

    // The next interval: 20 more, none lost, so the fraction drops to zero.
    feed(&mut stats, t0, 1200..1220);
    let block = stats.report_block(0xabc, 0, 0);
    assert_eq!(block.fraction_lost, 0);
    assert_eq!(block.cumulative_lost, 6);
}

#[test]
fn duplicates_count_as_received_and_loss_never_goes_negative() {
    let t0 = start();
    let mut stats = ReceiveStats::new();
    feed(&mut stats, t0, 1000..1010);
    feed(&mut stats, t0, [1003, 1005, 1007]);
    assert_eq!(stats.received(), 13);
    assert_eq!(stats.expected(), 10);
    assert_eq!(stats.cumulative_lost(), -3);
    assert_eq!(stats.loss_pct(), 0.0);
    let block = stats.report_block(1, 0, 0);
    assert_eq!(block.cumulative_lost, -3);
    assert_eq!(block.fraction_lost, 0);
}

#[test]
fn a_reordered_packet_is_not_a_loss() {
    let t0 = start();
    let mut stats = ReceiveStats::new();
    feed(&mut stats, t0, [1000, 1001, 1002, 1004, 1003, 1005, 1006]);
    assert_eq!(stats.received(), 7);
    assert_eq!(stats.expected(), 7);
    assert_eq!(stats.cumulative_lost(), 0);
    assert_eq!(stats.extended_highest_seq(), 1006);
}

#[test]
fn sequence_wrap_extends_the_highest_sequence_number() {
    let t0 = start();
    let mut stats = ReceiveStats::new();
    for (i, seq) in (0..20u16).map(|i| (i, 65_530u16.wrapping_add(i))) {
        stats.update(t0 + ms(20 * u64::from(i)), seq, 160 * u32::from(i), 8000);
    }
    assert_eq!(stats.extended_highest_seq(), 65_536 + 13);
    assert_eq!(stats.expected(), 20);
    assert_eq!(stats.received(), 20);
    assert_eq!(stats.cumulative_lost(), 0);
}

#[test]
fn first_packet_waits_for_a_second_in_sequence_before_counting() {
    let t0 = start();
    let mut stats = ReceiveStats::new();
    assert!(!stats.update(t0, 500, 0, 8000));
    assert_eq!(stats.received(), 0);
    assert_eq!(stats.loss_pct(), 0.0);
    assert!(stats.update(t0 + ms(20), 501, 160, 8000));
    assert_eq!(stats.received(), 2);
    assert_eq!(stats.expected(), 2);
}

#[test]
fn a_large_jump_restarts_the_source_only_when_confirmed() {
    let t0 = start();
    let mut stats = ReceiveStats::new();
    feed(&mut stats, t0, 1000..1010);
    // One stray packet far ahead is ignored...
    assert!(!stats.update(t0 + ms(200), 30_000, 0, 8000));
    assert_eq!(stats.received(), 10);
    assert_eq!(stats.extended_highest_seq(), 1009);
    // ...and the next in sequence after it confirms a new sequence from there.
    assert!(stats.update(t0 + ms(220), 30_001, 160, 8000));
    assert_eq!(stats.received(), 2);
    assert_eq!(stats.expected(), 2);
    assert_eq!(stats.extended_highest_seq(), 30_001);
}

#[test]
fn alternating_10_ms_lateness_gives_the_hand_computed_jitter() {
    // Sent every 20 ms (160 units at 8 kHz); every odd packet arrives 10 ms late. Each
    // consecutive pair then differs in transit by 10 ms = 80 units, so after n differences
    // A.8 gives J = 80·(1 − (15/16)^n). Eleven packets, ten differences:
    // (15/16)^10 = 0.524460475…, J = 38.0431620…
    let t0 = start();
    let mut stats = ReceiveStats::new();
    for i in 0..11u32 {
        let late = if i % 2 == 1 { 10 } else { 0 };
        stats.update(t0 + ms(20 * u64::from(i) + late), i as u16, 160 * i, 8000);
    }
    assert_eq!(stats.jitter(), 38);
    assert!(
        (stats.jitter_ms() - 38.043_162 / 8.0).abs() < 1e-5,
        "{}",
        stats.jitter_ms()
    );
    assert_eq!(stats.report_block(1, 0, 0).jitter, 38);
}

#[test]
fn quality_summary_combines_counters_rtt_and_delay_budget() {
    let t0 = start();
    let mut stats = ReceiveStats::new();
    let dropped = [1010, 1050, 1090, 1130, 1170, 1190];
    for seq in (1000..1200).filter(|s| !dropped.contains(s)) {
        stats.add_bytes(172);
        feed(&mut stats, t0, [seq]);
    }
    let model = MosModel {
        codec: CodecImpairment::G711_PLC,
        jitter_buffer: Some(ms(40)),
        frame: ms(20),
    };
    let quality = stats.quality(Some(ms(100)), &model);
    assert_eq!(quality.packets, 194);
    assert_eq!(quality.bytes, 194 * 172);
    assert_eq!(quality.lost, 6);
    assert_eq!(quality.loss_pct, 3.0);
    assert_eq!(quality.jitter_ms, 0.0);
    assert_eq!(quality.rtt_ms, Some(100.0));
    // 100/2 + 40 + 20 = 110 ms one way.
    assert_eq!(quality.mos, mos_estimate(0.0, 25.1, 3.0, 110.0));

    let unmeasured = stats.quality(None, &model);
    assert_eq!(unmeasured.rtt_ms, None);
    let assumed = one_way_delay(None, ms(40), ms(20)).as_secs_f64() * 1000.0;
    assert_eq!(assumed, DEFAULT_RTT.as_secs_f64() * 500.0 + 60.0);
    assert_eq!(unmeasured.mos, mos_estimate(0.0, 25.1, 3.0, assumed));
}

// ---------------------------------------------------------------------------------------------
// RttProbe

#[test]
fn rtt_is_report_arrival_minus_sr_arrival_minus_dlsr() {
    let t0 = start();
    let mut probe = RttProbe::new();
    let ntp = 0xe5a1_b2c3_8000_0000;
    probe.on_sender_report(t0, 0xa, ntp);
    let block = ReportBlock {
        ssrc: 0xa,
        lsr: rtcp::ntp_compact(ntp),
        dlsr: 65_536, // the receiver held it 1 s
        ..ReportBlock::default()
    };
    assert_eq!(probe.on_report_block(t0 + ms(1_500), &block), Some(ms(500)));
    assert_eq!(probe.rtt(), Some(ms(500)));
}

#[test]
fn rtt_ignores_unknown_zero_negative_and_absurd_reports() {
    let t0 = start();
    let mut probe = RttProbe::new();
    let ntp = 0x0000_1234_5678_0000;
    probe.on_sender_report(t0, 0xa, ntp);
    let good = ReportBlock {
        ssrc: 0xa,
        lsr: rtcp::ntp_compact(ntp),
        dlsr: 0,
        ..ReportBlock::default()
    };
    let at = t0 + ms(80);
    // LSR 0 means "no SR received" (RFC 3550 §6.4.1).
    assert_eq!(
        probe.on_report_block(at, &ReportBlock { lsr: 0, ..good }),
        None
    );
    // An LSR we never saw, or the right LSR about another SSRC.
    assert_eq!(
        probe.on_report_block(at, &ReportBlock { lsr: 1, ..good }),
        None
    );
    assert_eq!(
        probe.on_report_block(at, &ReportBlock { ssrc: 0xb, ..good }),
        None
    );
    // DLSR longer than the time since the SR passed: negative.
    assert_eq!(
        probe.on_report_block(
            at,
            &ReportBlock {
                dlsr: 65_536,
                ..good
            }
        ),
        None
    );
    // Answered eleven seconds later with no hold time: absurd.
    assert_eq!(probe.on_report_block(t0 + ms(11_000), &good), None);
    assert_eq!(probe.rtt(), None);
    assert_eq!(probe.on_report_block(at, &good), Some(ms(80)));
}

#[test]
fn rtt_probe_keeps_only_the_last_few_sender_reports() {
    let t0 = start();
    let mut probe = RttProbe::new();
    let block_for = |ntp: u64| ReportBlock {
        ssrc: 1,
        lsr: rtcp::ntp_compact(ntp),
        ..ReportBlock::default()
    };
    for i in 1..=100u64 {
        probe.on_sender_report(t0 + ms(i), 1, i << 32);
    }
    let now = t0 + ms(200);
    assert_eq!(
        probe.on_report_block(now, &block_for(1 << 32)),
        None,
        "oldest forgotten"
    );
    assert_eq!(
        probe.on_report_block(now, &block_for(100 << 32)),
        Some(ms(100))
    );

    // Many other SSRCs push out even a recent SR: the total is bounded too.
    probe.on_sender_report(t0, 2, 7 << 32);
    for ssrc in 10..60 {
        probe.on_sender_report(t0, ssrc, 9 << 32);
    }
    let block = ReportBlock {
        ssrc: 2,
        ..block_for(7 << 32)
    };
    assert_eq!(probe.on_report_block(now, &block), None);
}

// ---------------------------------------------------------------------------------------------
// MOS

#[test]
fn g711_at_zero_loss_and_20_ms_scores_about_4_4() {
    let mos = mos_estimate(0.0, CodecImpairment::G711_PLC.bpl, 0.0, 20.0);
    assert!((mos - 4.4).abs() < 0.02, "{mos}");
}

#[test]
fn five_percent_loss_scores_lower_and_concealment_helps() {
    let clean = mos_estimate(0.0, 25.1, 0.0, 20.0);
    let with_plc = mos_estimate(0.0, CodecImpairment::G711_PLC.bpl, 5.0, 20.0);
    let without_plc = mos_estimate(0.0, CodecImpairment::G711.bpl, 5.0, 20.0);
    assert!(with_plc < clean - 0.3, "{with_plc} vs {clean}");
    assert!(without_plc < with_plc, "{without_plc} vs {with_plc}");
    let opus = CodecImpairment::OPUS;
    assert!(mos_estimate(opus.ie, opus.bpl, 5.0, 20.0) > without_plc);
}

#[test]
fn mos_falls_monotonically_with_loss_and_with_delay() {
    for codec in [
        CodecImpairment::G711_PLC,
        CodecImpairment::G711,
        CodecImpairment::OPUS,
    ] {
        let by_loss: Vec<f64> = (0..=60)
            .map(|i| mos_estimate(codec.ie, codec.bpl, f64::from(i) * 0.5, 20.0))
            .collect();
        assert!(
            by_loss.windows(2).all(|w| w[1] <= w[0]),
            "{codec:?} loss: {by_loss:?}"
        );
        let by_delay: Vec<f64> = (0..=120)
            .map(|i| mos_estimate(codec.ie, codec.bpl, 1.0, f64::from(i) * 5.0))
            .collect();
        assert!(
            by_delay.windows(2).all(|w| w[1] <= w[0]),
            "{codec:?} delay: {by_delay:?}"
        );
        assert!(
            by_loss
                .iter()
                .chain(&by_delay)
                .all(|m| (1.0..=4.5).contains(m))
        );
    }
}

#[test]
fn delay_past_177_ms_costs_more_per_millisecond() {
    let step = |d: f64| mos_estimate(0.0, 25.1, 0.0, d) - mos_estimate(0.0, 25.1, 0.0, d + 50.0);
    assert!(step(250.0) > 2.0 * step(50.0));
}

#[test]
fn every_single_byte_mutation_of_a_valid_compound_parses_or_errs_without_panic() {
    let mut panics = Vec::new();
    let mut parsed = 0;
    for full in [SR_SDES, RR_SDES_BYE_APP_PLI] {
        for at in 0..full.len() {
            for value in 0..=255u8 {
                let mut bytes = full.to_vec();
                bytes[at] = value;
                match std::panic::catch_unwind(|| Compound::parse(&bytes)) {
                    Ok(result) => parsed += usize::from(result.is_ok()),
                    Err(_) => panics.push((at, value)),
                }
            }
        }
    }
    assert!(panics.is_empty(), "panicked at (offset, value): {panics:?}");
    // Most mutations hit payload fields, which any value fills legally.
    assert!(parsed > 10_000, "{parsed}");
}

//! The jitter buffer driven with simulated time through scripted networks: loss, reordering,
//! uniform jitter, stalls followed by bursts, sequence and timestamp wrap, timestamp jumps and
//! a new source. Everything is seeded and simulated, so every number here repeats exactly.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fieldmesh_media::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout};

const FRAME_US: u64 = 20_000;
/// Ticks are out of phase with the sender, as they would be on a real appliance.
const TICK_PHASE_US: u64 = 7_000;

#[allow(
    clippy::disallowed_methods,
    reason = "the one clock reading of the simulation"
)]
fn start() -> Instant {
    Instant::now()
}

/// xorshift64: enough randomness for a network model, no rand dependency.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A scripted network between a sender of 20 ms frames and the buffer.
#[derive(Clone)]
struct Scenario {
    packets: u32,
    seed: u64,
    /// Probability that a packet is lost.
    loss: f64,
    /// Uniform jitter: each packet's delay is base ± this many microseconds.
    jitter_us: u64,
    /// Every `n`th packet swaps places with its successor (arrives just after it).
    swap_every: Option<u32>,
    /// Every `period` packets the network stalls for `stall` packets' worth of time and then
    /// delivers everything at once.
    stall: Option<(u32, u32)>,
    seq_start: u16,
    ts_start: u32,
    /// From packet `at` on, timestamps jump by `by` ticks (and, if `new_seq` is set, the
    /// sequence restarts there too, as a new source would).
    jump: Option<Jump>,
}

#[derive(Clone, Copy)]
struct Jump {
    at: u32,
    ts_by: u32,
    new_seq: Option<u16>,
}

impl Scenario {
    fn new(packets: u32, seed: u64) -> Scenario {
        Scenario {
            packets,
            seed,
            loss: 0.0,
            jitter_us: 0,
            swap_every: None,
            stall: None,
            seq_start: 1000,
            ts_start: 12_345,
            jump: None,
        }
    }
}

struct Run {
    /// Packet indices in the order they were played, with the tick time they played at.
    played: Vec<(u32, u64)>,
    arrival_us: Vec<Option<u64>>,
    lost: u32,
    /// Ticks of `Playout::Missing`, excluding the few after the stream's end (which the
    /// buffer cannot tell from loss).
    missing_ticks: u32,
    /// Stats halfway through, to measure "once adapted" over the second half.
    halfway: JitterStats,
    end: JitterStats,
}

impl Run {
    fn indices(&self) -> Vec<u32> {
        self.played.iter().map(|&(i, _)| i).collect()
    }

    fn assert_each_played_once_in_order(&self) {
        for pair in self.played.windows(2) {
            assert!(
                pair[0].0 < pair[1].0,
                "played out of order or twice: {pair:?}"
            );
        }
    }

    fn mean_added_delay_ms(&self) -> f64 {
        let delays: Vec<u64> = self
            .played
            .iter()
            .map(|&(i, at)| {
                let arrived = self.arrival_us[i as usize].expect("a played packet arrived");
                at - arrived
            })
            .collect();
        delays.iter().sum::<u64>() as f64 / delays.len().max(1) as f64 / 1000.0
    }

    /// Late loss over the second half, as a share of the packets that arrived then.
    fn late_loss_percent_second_half(&self) -> f64 {
        let late = self.end.late_lost - self.halfway.late_lost;
        let arrived = (self.end.received - self.halfway.received).max(1);
        late as f64 * 100.0 / arrived as f64
    }
}

fn simulate(scenario: &Scenario) -> Run {
    let t0 = start();
    let mut rng = XorShift::new(scenario.seed);
    let mut jb = JitterBuffer::new(JitterConfig::voice(8000));
    let base_us = scenario.jitter_us + 5_000;

    let mut arrivals: Vec<(u64, u32)> = Vec::new();
    let mut arrival_us = vec![None; scenario.packets as usize];
    let mut lost = 0;
    for i in 0..scenario.packets {
        // Draw both numbers for every packet so changing the loss rate keeps the jitter
        // sequence of the other packets the same.
        let lose = rng.unit() < scenario.loss;
        let wobble = rng.unit();
        if lose {
            lost += 1;
            continue;
        }
        let sent = u64::from(i) * FRAME_US;
        let jitter = ((wobble * 2.0 - 1.0) * scenario.jitter_us as f64) as i64;
        let mut at = (sent + base_us).saturating_add_signed(jitter);
        if scenario.swap_every.is_some_and(|every| i % every == 0) {
            at += FRAME_US + 1_000;
        }
        if let Some((period, frames)) = scenario.stall {
            let into = i % period;
            if into < frames {
                let stall_end = u64::from(i - into + frames) * FRAME_US + base_us;
                at = at.max(stall_end);
            }
        }
        arrivals.push((at, i));
        arrival_us[i as usize] = Some(at);
    }
    arrivals.sort_unstable();

    let packet = |i: u32| -> (u16, u32) {
        let mut seq = scenario.seq_start.wrapping_add(i as u16);
        let mut ts = scenario.ts_start.wrapping_add(i.wrapping_mul(160));
        if let Some(jump) = scenario.jump
            && i >= jump.at
        {
            ts = ts.wrapping_add(jump.ts_by);
            if let Some(new_seq) = jump.new_seq {
                seq = new_seq.wrapping_add((i - jump.at) as u16);
            }
        }
        (seq, ts)
    };

    let last = arrivals.last().map_or(0, |&(at, _)| at);
    let end_us = last + 500_000;
    let halfway_us = end_us / 2;
    let mut next_arrival = arrivals.iter().peekable();
    let mut played = Vec::new();
    let mut missing_at = Vec::new();
    let mut halfway = None;
    let mut tick_us = TICK_PHASE_US;
    while tick_us <= end_us {
        while let Some(&&(at, i)) = next_arrival.peek() {
            if at > tick_us {
                break;
            }
            let (seq, ts) = packet(i);
            jb.push(
                t0 + Duration::from_micros(at),
                seq,
                ts,
                Bytes::copy_from_slice(&i.to_be_bytes()),
            );
            next_arrival.next();
        }
        match jb.pop(t0 + Duration::from_micros(tick_us)) {
            Playout::Frame { payload, timestamp } => {
                let bytes: [u8; 4] = payload[..]
                    .try_into()
                    .expect("the simulation sends 4-byte payloads");
                let i = u32::from_be_bytes(bytes);
                assert_eq!(timestamp, packet(i).1, "a frame keeps its own timestamp");
                played.push((i, tick_us));
            }
            Playout::Missing { .. } => missing_at.push(tick_us),
            Playout::Empty => {}
        }
        if halfway.is_none() && tick_us >= halfway_us {
            halfway = Some(jb.stats());
        }
        tick_us += FRAME_US;
    }
    let last_played = played.last().map_or(0, |&(_, at)| at);
    let missing_ticks = missing_at.iter().filter(|&&at| at < last_played).count() as u32;
    Run {
        played,
        arrival_us,
        lost,
        missing_ticks,
        halfway: halfway.expect("the loop passes halfway"),
        end: jb.stats(),
    }
}

fn max_delay() -> Duration {
    JitterConfig::voice(8000).max_delay
}

#[test]
fn an_in_order_stream_plays_every_frame_once_and_in_order() {
    let run = simulate(&Scenario::new(500, 1));
    run.assert_each_played_once_in_order();
    assert_eq!(run.indices(), (0..500).collect::<Vec<_>>());
    assert_eq!(run.end.late_lost, 0);
    assert_eq!(run.missing_ticks, 0);
    assert!(
        run.mean_added_delay_ms() <= 40.0,
        "{}",
        run.mean_added_delay_ms()
    );
}

#[test]
fn three_percent_random_loss_becomes_missing_ticks_and_nothing_else() {
    let mut scenario = Scenario::new(3000, 7);
    scenario.loss = 0.03;
    let run = simulate(&scenario);
    run.assert_each_played_once_in_order();
    assert!(run.lost > 50 && run.lost < 130, "lost {}", run.lost);
    assert_eq!(run.end.late_lost, 0);
    assert_eq!(run.played.len() as u32, 3000 - run.lost);
    // Every lost packet is concealed once (one lost after the last played one is not).
    assert!(
        run.missing_ticks <= run.lost && run.missing_ticks + 1 >= run.lost,
        "{} missing vs {} lost",
        run.missing_ticks,
        run.lost
    );
}

#[test]
fn reordered_packets_are_put_back_in_order() {
    let mut scenario = Scenario::new(1000, 3);
    scenario.swap_every = Some(10);
    let run = simulate(&scenario);
    run.assert_each_played_once_in_order();
    let played = run.played.len();
    assert!(played >= 995, "played {played}: {:?}", run.end);
    assert!(run.late_loss_percent_second_half() < 1.0, "{:?}", run.end);
}

#[test]
fn moderate_jitter_loses_under_two_percent_late_once_adapted() {
    for (jitter_ms, seed) in [(10, 11), (30, 12)] {
        let mut scenario = Scenario::new(3000, seed);
        scenario.jitter_us = jitter_ms * 1000;
        let run = simulate(&scenario);
        run.assert_each_played_once_in_order();
        let late = run.late_loss_percent_second_half();
        assert!(
            late < 2.0,
            "±{jitter_ms} ms: {late:.2} % late, {:?}",
            run.end
        );
        assert!(
            run.end.max_delay_seen <= max_delay(),
            "±{jitter_ms} ms: {:?}",
            run.end
        );
        // It adapts to the network, not to the maximum.
        let expected = (2 * jitter_ms + 40) as f64;
        assert!(
            run.mean_added_delay_ms() < expected,
            "±{jitter_ms} ms: {} ms",
            run.mean_added_delay_ms()
        );
    }
}

#[test]
fn heavy_jitter_stays_within_the_maximum_delay() {
    let mut scenario = Scenario::new(3000, 13);
    scenario.jitter_us = 60_000;
    let run = simulate(&scenario);
    run.assert_each_played_once_in_order();
    assert!(run.end.max_delay_seen <= max_delay(), "{:?}", run.end);
    let late = run.late_loss_percent_second_half();
    assert!(late < 5.0, "{late:.2} % late, {:?}", run.end);
}

#[test]
fn stalls_followed_by_bursts_recover_without_replaying_anything() {
    let mut scenario = Scenario::new(2000, 21);
    scenario.jitter_us = 5_000;
    // Every 5 s the network holds 8 packets (160 ms) and then delivers them together.
    scenario.stall = Some((250, 8));
    let run = simulate(&scenario);
    run.assert_each_played_once_in_order();
    assert!(run.end.max_delay_seen <= max_delay(), "{:?}", run.end);
    // Each stall costs at most its frames late, and as many again skipped while the buffer,
    // deepened by the late packets, shrinks back; playback resumes after every one.
    assert!(run.end.late_lost <= 8 * 8, "{:?}", run.end);
    assert!(
        run.played.len() >= 2000 - 2 * 8 * 8,
        "{} played, {:?}",
        run.played.len(),
        run.end
    );
    let last_played = run.played.last().expect("something played").0;
    assert!(
        last_played >= 1995,
        "playback continues to the end: {last_played}"
    );
}

#[test]
fn sequence_and_timestamp_wrap_are_seamless() {
    let mut scenario = Scenario::new(400, 5);
    scenario.seq_start = 65_400;
    scenario.ts_start = u32::MAX - 160 * 150;
    scenario.jitter_us = 10_000;
    let run = simulate(&scenario);
    run.assert_each_played_once_in_order();
    assert_eq!(run.end.resyncs, 0);
    assert!(
        run.played.len() >= 395,
        "{} played, {:?}",
        run.played.len(),
        run.end
    );
}

#[test]
fn a_timestamp_jump_of_seconds_resyncs_and_playback_goes_on() {
    let mut scenario = Scenario::new(600, 8);
    scenario.jump = Some(Jump {
        at: 300,
        ts_by: 8000 * 10,
        new_seq: None,
    });
    let run = simulate(&scenario);
    run.assert_each_played_once_in_order();
    assert_eq!(run.end.resyncs, 1, "{:?}", run.end);
    let after = run.played.iter().filter(|&&(i, _)| i >= 300).count();
    assert!(after >= 295, "{after} frames after the jump, {:?}", run.end);
    assert!(run.end.max_delay_seen <= max_delay(), "{:?}", run.end);
}

#[test]
fn a_new_source_is_believed_after_two_packets() {
    let mut scenario = Scenario::new(600, 9);
    scenario.jump = Some(Jump {
        at: 300,
        ts_by: 0x1234_5678,
        new_seq: Some(40_000),
    });
    let run = simulate(&scenario);
    run.assert_each_played_once_in_order();
    assert_eq!(run.end.resyncs, 1, "{:?}", run.end);
    let after = run.played.iter().filter(|&&(i, _)| i >= 300).count();
    assert!(
        after >= 295,
        "{after} frames after the new source, {:?}",
        run.end
    );
}

#[test]
fn a_second_of_dtx_silence_is_not_loss() {
    // DTX: 1 s of silence (no packets, timestamps keep counting, sequence does not skip).
    let t0 = start();
    let mut jb = JitterBuffer::new(JitterConfig::voice(8000));
    let mut outputs = Vec::new();
    for tick in 0..150u32 {
        let now = t0 + Duration::from_micros(u64::from(tick) * FRAME_US + TICK_PHASE_US);
        let talking = !(50..100).contains(&tick);
        if talking {
            let seq = if tick < 50 { tick } else { tick - 50 };
            jb.push(
                now - Duration::from_millis(2),
                seq as u16,
                tick * 160,
                Bytes::from_static(b"x"),
            );
        }
        outputs.push(jb.pop(now));
    }
    let missing = outputs
        .iter()
        .filter(|o| matches!(o, Playout::Missing { .. }))
        .count();
    let frames = outputs
        .iter()
        .filter(|o| matches!(o, Playout::Frame { .. }))
        .count();
    // The end of a talkspurt looks like loss for a few ticks; the silence does not.
    assert!(missing <= 5, "{missing} missing: {outputs:?}");
    assert!(frames >= 98, "{frames} frames");
    assert_eq!(jb.stats().late_lost, 0);
}

#[test]
fn random_packets_never_panic_and_memory_stays_bounded() {
    let t0 = start();
    let mut rng = XorShift::new(0xDEAD_BEEF);
    let mut jb = JitterBuffer::new(JitterConfig::voice(48000));
    for step in 0..50_000u64 {
        let r = rng.next();
        // Half the time a plausible stream with noise, half the time anything at all.
        let (seq, ts) = if r & 1 == 0 {
            (
                (step / 3) as u16 ^ (r >> 60) as u16,
                (step / 3 * 960) as u32,
            )
        } else {
            ((r >> 8) as u16, (r >> 24) as u32)
        };
        let payload = Bytes::from(vec![(r >> 56) as u8; (r >> 40) as usize % 200]);
        let now = t0 + Duration::from_micros(step * 6_700 + (r >> 50));
        jb.push(now, seq, ts, payload);
        if step % 3 == 0 {
            let _ = jb.pop(now);
        }
        assert!(jb.stats().current_delay <= Duration::from_secs(1));
    }
    let stats = jb.stats();
    assert!(
        stats.played + stats.late_lost + stats.duplicates + stats.overflow + stats.discarded
            <= stats.received + 1
    );
}

/// Prints the adaptation table and compares it with the checked-in snapshot. Run with
/// `UPDATE_SNAPSHOTS=1` after an intended change to the buffer, and commit the new table.
#[test]
fn jitter_table_matches_the_snapshot() {
    let mut table = String::from("jitter±ms  loss%  late-loss%  mean added delay ms\n");
    for jitter_ms in [0u64, 10, 20, 40, 60] {
        for loss in [0.0, 0.03] {
            let mut scenario = Scenario::new(3000, 0x5EED + jitter_ms);
            scenario.jitter_us = jitter_ms * 1000;
            scenario.loss = loss;
            let run = simulate(&scenario);
            run.assert_each_played_once_in_order();
            let arrived = (run.end.received).max(1);
            let late = run.end.late_lost as f64 * 100.0 / arrived as f64;
            table.push_str(&format!(
                "{:>9}  {:>5.1}  {:>10.2}  {:>19.1}\n",
                jitter_ms,
                loss * 100.0,
                late,
                run.mean_added_delay_ms()
            ));
        }
    }
    println!("{table}");

    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/jitter_table.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &table).expect("the snapshot directory is writable");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing; run with UPDATE_SNAPSHOTS=1 to write it",
            path.display()
        )
    });
    assert_eq!(
        table, expected,
        "the jitter table changed; if intended, rerun with UPDATE_SNAPSHOTS=1"
    );
}

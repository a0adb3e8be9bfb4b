//! An adaptive playout buffer for one received RTP stream, sans-IO: every entry point takes
//! `now`, and nothing here reads a clock.
//!
//! The caller feeds each arriving packet to [`JitterBuffer::push`] and calls
//! [`JitterBuffer::pop`] once per frame tick (every 20 ms for a 20 ms ptime); each pop says what
//! to play for that tick. Packets are ordered by RTP timestamp, so reordering, duplicates and
//! sequence wrap-around cost nothing special.
//!
//! How deep to buffer is measured, not configured. Every packet's *transit* (arrival time minus
//! its RTP timestamp as time, RFC 3550 §6.4.1) goes into a window of recent packets; the buffer
//! aims to hold the packets back by the spread between a low and a high percentile of that
//! window plus a small margin, clamped to `[min_delay, max_delay]`. The target grows at once
//! when the network gets worse (a late packet raises it immediately) and decays slowly when it
//! gets better, and the buffer reaches it one frame at a time: to grow it conceals one extra
//! frame, to shrink it skips one frame, preferably a silent one. That is the classic adaptive
//! playout of Ramjee et al. and of WebRTC's NetEq, reduced to what a 20 ms tick needs.
//!
//! Memory is bounded: at most [`JitterBuffer::capacity`] frames are held, and a packet that
//! would exceed that is dropped and counted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How a [`JitterBuffer`] is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// The RTP clock rate of the stream (8000 for G.711, 48000 for Opus).
    pub clock_rate: u32,
    /// The duration of one packet and of one `pop` tick: the negotiated ptime.
    pub frame: Duration,
    /// The least delay the buffer adds, even on a perfect network.
    pub min_delay: Duration,
    /// The most delay the buffer adds; packets later than that are lost rather than waited for,
    /// because conversation suffers above ~150–200 ms mouth-to-ear (ITU-T G.114).
    pub max_delay: Duration,
}

impl JitterConfig {
    /// 20 ms frames, 20–200 ms of delay: what a phone call over Wi-Fi and a mesh needs.
    pub fn voice(clock_rate: u32) -> JitterConfig {
        JitterConfig {
            clock_rate,
            frame: Duration::from_millis(20),
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        }
    }
}

/// What to play for one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// The packet for this tick: decode it.
    Frame {
        /// The RTP payload as received.
        payload: Bytes,
        /// Its RTP timestamp as received.
        timestamp: u32,
    },
    /// The packet for this tick was lost or will come too late: conceal it.
    Missing {
        /// The following packet, when it is already here, so Opus can rebuild the lost frame
        /// from its in-band FEC copy (RFC 6716 §2.1.7).
        next: Option<Bytes>,
    },
    /// Nothing to play: the stream has not started, or the sender is silent (DTX, RFC 3551
    /// §4.1 silence suppression) or gone.
    Empty,
}

/// Counters and the current state of the adaptation, for RTCP reports and the status page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Every packet pushed, whatever became of it.
    pub received: u64,
    /// Packets returned as [`Playout::Frame`].
    pub played: u64,
    /// Packets that arrived after their tick had passed, and were dropped.
    pub late_lost: u64,
    /// Ticks returned as [`Playout::Missing`] because a packet was lost or late.
    pub missing: u64,
    /// Packets pushed twice (the second copy was dropped).
    pub duplicates: u64,
    /// The delay the buffer adds to the fastest packets now.
    pub current_delay: Duration,
    /// The largest `current_delay` so far.
    pub max_delay_seen: Duration,
    /// The delay the buffer is steering towards.
    pub target_delay: Duration,
    /// Interarrival jitter as RFC 3550 §6.4.1 defines it, for RTCP receiver reports.
    pub jitter: Duration,
    /// Ticks concealed on purpose to deepen the buffer.
    pub inserted: u64,
    /// Frames dropped on purpose to make the buffer shallower.
    pub skipped: u64,
    /// Packets dropped because the buffer was full.
    pub overflow: u64,
    /// Times the buffer started over because the stream jumped (new source, big gap).
    pub resyncs: u64,
    /// Packets dropped because their timestamp contradicts their sequence number.
    pub discarded: u64,
}

/// Transits remembered for the delay estimate: about 2.5 s of 20 ms packets.
const WINDOW: usize = 128;
/// The share of recent packets the target delay aims to play on time.
const HIGH_PERCENTILE: usize = 97;
/// The percentile taken as "the fastest packets", robust against one freak packet.
const LOW_PERCENTILE: usize = 2;
/// Added on top of the measured spread, so a packet exactly at the percentile is not late.
const MARGIN: Duration = Duration::from_millis(4);
/// How fast the target shrinks once the network calms down, per tick (25 ms/s at 20 ms).
const DECAY_PER_TICK: Duration = Duration::from_micros(500);
/// While audio plays, at most one frame is skipped per this many ticks, so shrinking is
/// barely audible; during silence a silent tick is skipped whenever needed.
const SHRINK_INTERVAL: u32 = 25;
/// Ticks concealed with nothing buffered before deciding the sender went silent.
const MAX_CONCEALED: u32 = 5;
/// A sequence jump this far ahead is a new or restarted source (RFC 3550 A.1, MAX_DROPOUT).
const MAX_DROPOUT: i64 = 3000;
/// A sequence this far behind is a new or restarted source, not reordering (RFC 3550 A.1).
const MAX_MISORDER: i64 = 100;
/// The cap on configured durations, in microseconds (one minute).
const MAX_SETTING_US: i64 = 60_000_000;
/// A timestamp jump larger than this starts the timeline over.
const RESYNC_JUMP: Duration = Duration::from_secs(3);

/// One buffered packet.
#[derive(Debug)]
struct Entry {
    /// Extended sequence number, relative to the packet the timeline started with.
    seq: i64,
    /// Extended timestamp, relative to the packet the timeline started with.
    ts: i64,
    /// The timestamp as received, returned to the caller.
    rtp_ts: u32,
    payload: Bytes,
}

/// The timeline of the stream since the last (re)synchronisation.
#[derive(Debug)]
struct Timeline {
    highest_seq: i64,
    highest_seq_raw: u16,
    /// Extended timestamp of the packet with the highest sequence number.
    highest_ts: i64,
    highest_ts_raw: u32,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    /// Collecting the first packets until the target delay has passed.
    Buffering,
    /// Playing; the cursor is the timestamp due at the next tick.
    Playing(Cursor),
}

#[derive(Debug)]
struct Cursor {
    ts: i64,
    last_played_seq: Option<i64>,
    /// Lost packets already concealed since the last played one, so a sequence gap of n
    /// packets is concealed n times and the rest of a timestamp gap is treated as silence.
    missing_since_played: i64,
    /// Ticks concealed in a row with nothing buffered.
    concealed_in_a_row: u32,
    /// Whether the last tick produced audio; an insertion during silence is just silence.
    talking: bool,
    ticks_since_shrink: u32,
    /// Highest played sequence number and a bitmap of the 64 before it, for duplicates.
    played_highest: i64,
    played_mask: u64,
}

/// Recent transits, a fixed ring so pushing never allocates.
#[derive(Debug)]
struct Transits {
    values: [i64; WINDOW],
    len: usize,
    next: usize,
    scratch: Vec<i64>,
}

impl Transits {
    fn new() -> Transits {
        Transits {
            values: [0; WINDOW],
            len: 0,
            next: 0,
            scratch: Vec::with_capacity(WINDOW),
        }
    }

    fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
    }

    fn record(&mut self, transit: i64) {
        self.values[self.next] = transit;
        self.next = (self.next + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
    }

    /// The `low` and `high` percentiles of the window, if anything was recorded.
    fn percentiles(&mut self, low: usize, high: usize) -> Option<(i64, i64)> {
        if self.len == 0 {
            return None;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.values[..self.len]);
        let last = self.len - 1;
        let high_index = (last * high).div_ceil(100).min(last);
        let low_index = (last * low / 100).min(high_index);
        let (_, high_value, _) = self.scratch.select_nth_unstable(high_index);
        let high_value = *high_value;
        let (_, low_value, _) = self.scratch[..=high_index].select_nth_unstable(low_index);
        Some((*low_value, high_value))
    }
}

/// An adaptive jitter buffer for one stream; see the module documentation.
#[derive(Debug)]
pub struct JitterBuffer {
    clock_rate: i64,
    frame_ts: i64,
    frame_us: i64,
    min_us: i64,
    max_us: i64,
    capacity: usize,
    /// The instant all internal microsecond times count from.
    epoch: Option<Instant>,
    timeline: Option<Timeline>,
    /// Buffered packets, ordered by extended timestamp.
    buffer: VecDeque<Entry>,
    transits: Transits,
    /// The low percentile of recent transits: when the fastest packets arrive.
    transit_low: i64,
    /// The target the current window asks for.
    window_target_us: i64,
    /// The target being steered towards: jumps up to `window_target_us`, decays down.
    target_us: i64,
    /// RFC 3550 §6.4.1 jitter in microseconds, times 16.
    jitter_x16: i64,
    last_transit: Option<i64>,
    /// A packet that jumped far away, waiting for its successor to confirm a new source.
    probation: Option<(u16, u32, Bytes)>,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer for one stream. Nonsense in `config` is repaired rather than refused: a zero
    /// clock rate or frame becomes 8000 Hz / 20 ms, durations are capped at a minute, and
    /// `max_delay` is at least `min_delay` plus one frame.
    pub fn new(config: JitterConfig) -> JitterBuffer {
        let clock_rate = i64::from(if config.clock_rate == 0 {
            8000
        } else {
            config.clock_rate
        });
        let frame = if config.frame.is_zero() {
            Duration::from_millis(20)
        } else {
            config.frame
        };
        // Caps far beyond any sane setting keep the arithmetic below far from overflow.
        let frame_us = micros(frame).clamp(1, MAX_SETTING_US);
        let frame_ts = (clock_rate.saturating_mul(frame_us) / 1_000_000).max(1);
        let min_us = micros(config.min_delay).min(MAX_SETTING_US);
        let max_us = micros(config.max_delay)
            .min(MAX_SETTING_US)
            .max(min_us + frame_us);
        let frames_in_max = usize::try_from(max_us / frame_us).unwrap_or(usize::MAX);
        let capacity = frames_in_max
            .saturating_mul(2)
            .saturating_add(8)
            .clamp(16, 1024);
        JitterBuffer {
            clock_rate,
            frame_ts,
            frame_us,
            min_us,
            max_us,
            capacity,
            epoch: None,
            timeline: None,
            buffer: VecDeque::with_capacity(capacity),
            transits: Transits::new(),
            transit_low: 0,
            window_target_us: min_us,
            target_us: min_us,
            jitter_x16: 0,
            last_transit: None,
            probation: None,
            stats: JitterStats {
                target_delay: Duration::from_micros(u64::try_from(min_us).unwrap_or(0)),
                ..JitterStats::default()
            },
        }
    }

    /// The most frames this buffer holds at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Counters and the adaptation state.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Forgets the stream, keeping counters and the learnt target delay. Call it when the
    /// source changes (a new SSRC, RFC 3550 §8.2) so old and new timelines never mix.
    pub fn reset(&mut self) {
        self.timeline = None;
        self.buffer.clear();
        self.transits.clear();
        self.last_transit = None;
        self.probation = None;
    }

    /// Feeds one received packet. Call it as each packet arrives, with the arrival time; the
    /// buffer takes ownership of the payload and hands it back from [`JitterBuffer::pop`].
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, payload: Bytes) {
        self.stats.received += 1;
        let arrival = self.elapsed(now);
        let Some(timeline) = &self.timeline else {
            self.start_timeline(arrival, seq, timestamp, payload);
            return;
        };
        let d_seq = i64::from(seq.wrapping_sub(timeline.highest_seq_raw) as i16);
        let d_ts = i64::from(timestamp.wrapping_sub(timeline.highest_ts_raw) as i32);

        // RFC 3550 A.1: a huge sequence jump is a restarted or new source, but one packet is
        // not enough to believe it; its successor confirms it.
        if !(-MAX_MISORDER..=MAX_DROPOUT).contains(&d_seq) {
            match self.probation.take() {
                Some((p_seq, p_ts, p_payload)) if p_seq.wrapping_add(1) == seq => {
                    self.stats.resyncs += 1;
                    self.start_timeline(arrival, p_seq, p_ts, p_payload);
                    self.push_on_timeline(arrival, seq, timestamp, payload);
                }
                _ => self.probation = Some((seq, timestamp, payload)),
            }
            return;
        }
        self.probation = None;
        let leap = d_ts.abs() > self.ticks(RESYNC_JUMP);
        // A timestamp leap on an in-order packet: a long silence, or a source that restarted
        // its clock. Either way the old timeline says nothing useful about the new one.
        if d_seq > 0 && leap {
            self.stats.resyncs += 1;
            self.start_timeline(arrival, seq, timestamp, payload);
            return;
        }
        // An older packet cannot be stamped later than a newer one, nor seconds away from it:
        // such a packet is corrupt or forged, and buffering it would only take up a slot.
        if d_seq < 0 && (d_ts > 0 || leap) {
            self.stats.discarded += 1;
            return;
        }
        self.push_on_timeline(arrival, seq, timestamp, payload);
    }

    /// Says what to play for the tick at `now`. Call it exactly once per frame duration, from
    /// the first packet on; each call advances playout by one frame (or holds it, to deepen
    /// the buffer).
    pub fn pop(&mut self, now: Instant) -> Playout {
        let now_us = self.elapsed(now);
        self.decay_target();
        let Some(timeline) = &mut self.timeline else {
            return Playout::Empty;
        };
        if let Phase::Buffering = timeline.phase {
            let Some(first) = self.buffer.front() else {
                return Playout::Empty;
            };
            let delay = now_us - ts_to_us(first.ts, self.clock_rate) - self.transit_low;
            if delay < self.target_us {
                return Playout::Empty;
            }
            timeline.phase = Phase::Playing(Cursor {
                ts: first.ts,
                last_played_seq: None,
                missing_since_played: 0,
                concealed_in_a_row: 0,
                talking: false,
                ticks_since_shrink: 0,
                played_highest: first.seq - 1,
                played_mask: 0,
            });
        }
        self.play(now_us)
    }

    fn push_on_timeline(&mut self, arrival: i64, seq: u16, timestamp: u32, payload: Bytes) {
        let timeline = self
            .timeline
            .as_mut()
            .expect("push_on_timeline runs only after a timeline exists");
        let d_seq = i64::from(seq.wrapping_sub(timeline.highest_seq_raw) as i16);
        let d_ts = i64::from(timestamp.wrapping_sub(timeline.highest_ts_raw) as i32);
        let ext_seq = timeline.highest_seq + d_seq;
        let ext_ts = timeline.highest_ts + d_ts;
        if d_seq > 0 {
            timeline.highest_seq = ext_seq;
            timeline.highest_seq_raw = seq;
            timeline.highest_ts = ext_ts;
            timeline.highest_ts_raw = timestamp;
        }
        let cursor = match &timeline.phase {
            Phase::Playing(cursor) => Some((cursor.ts, cursor.played_highest, cursor.played_mask)),
            Phase::Buffering => None,
        };
        if let Some((_, played_highest, played_mask)) = cursor {
            let back = played_highest - ext_seq;
            if (0..64).contains(&back) && played_mask & (1 << back) != 0 {
                self.stats.duplicates += 1;
                return;
            }
        }
        if self.buffer.iter().any(|entry| entry.seq == ext_seq) {
            self.stats.duplicates += 1;
            return;
        }
        let transit = arrival - ts_to_us(ext_ts, self.clock_rate);
        self.record_transit(transit);
        if let Some((cursor_ts, ..)) = cursor
            && ext_ts < cursor_ts - self.frame_ts / 2
        {
            self.stats.late_lost += 1;
            // Grow at once to what this packet would have needed.
            let needed = transit - self.transit_low + micros(MARGIN);
            self.target_us = self.target_us.max(self.clamp_target(needed));
            self.stats.target_delay = duration_us(self.target_us);
            return;
        }
        if self.buffer.len() >= self.capacity {
            self.stats.overflow += 1;
            return;
        }
        let position = self.buffer.partition_point(|entry| entry.ts <= ext_ts);
        self.buffer.insert(
            position,
            Entry {
                seq: ext_seq,
                ts: ext_ts,
                rtp_ts: timestamp,
                payload,
            },
        );
    }

    fn start_timeline(&mut self, arrival: i64, seq: u16, timestamp: u32, payload: Bytes) {
        self.reset();
        self.timeline = Some(Timeline {
            highest_seq: 0,
            highest_seq_raw: seq,
            highest_ts: 0,
            highest_ts_raw: timestamp,
            phase: Phase::Buffering,
        });
        self.record_transit(arrival);
        self.buffer.push_back(Entry {
            seq: 0,
            ts: 0,
            rtp_ts: timestamp,
            payload,
        });
    }

    fn record_transit(&mut self, transit: i64) {
        // RFC 3550 §6.4.1: J += (|D| - J) / 16, kept times 16 in integers.
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            self.jitter_x16 += d - (self.jitter_x16 + 8) / 16;
        }
        self.last_transit = Some(transit);
        self.stats.jitter = duration_us(self.jitter_x16 / 16);

        self.transits.record(transit);
        if let Some((low, high)) = self.transits.percentiles(LOW_PERCENTILE, HIGH_PERCENTILE) {
            self.transit_low = low;
            self.window_target_us = self.clamp_target(high - low + micros(MARGIN));
            if self.window_target_us > self.target_us {
                self.target_us = self.window_target_us;
                self.stats.target_delay = duration_us(self.target_us);
            }
        }
    }

    /// Targets stay a frame below `max_delay`, since the played delay overshoots the target
    /// by up to a frame (ticks and packets are not in phase).
    fn clamp_target(&self, target: i64) -> i64 {
        target.clamp(self.min_us, (self.max_us - self.frame_us).max(self.min_us))
    }

    fn decay_target(&mut self) {
        if self.target_us > self.window_target_us {
            let step = micros(DECAY_PER_TICK) * self.frame_us / 20_000;
            self.target_us = (self.target_us - step.max(1)).max(self.window_target_us);
            self.stats.target_delay = duration_us(self.target_us);
        }
    }

    /// One tick while playing: adapt the depth by at most one frame, then play the slot.
    fn play(&mut self, now_us: i64) -> Playout {
        let frame_ts = self.frame_ts;
        let cursor_ts = self.cursor().ts;
        let mut delay = now_us - ts_to_us(cursor_ts, self.clock_rate) - self.transit_low;

        // The caller stalled (or time jumped): catch up in one go instead of a frame per tick.
        if delay > self.max_us + 5 * self.frame_us {
            let frames = (delay - self.target_us) / self.frame_us;
            // Frames passed over are dropped (and counted) as stale by `play_slot`.
            self.cursor().ts += frames * frame_ts;
            delay -= frames * self.frame_us;
        }

        if delay < self.target_us && delay + self.frame_us <= self.max_us {
            // Deepen: hold the cursor and conceal (or stay silent) for one tick.
            self.stats.inserted += 1;
            self.note_delay(delay);
            let cursor = self.cursor();
            cursor.ticks_since_shrink = cursor.ticks_since_shrink.saturating_add(1);
            return if cursor.talking {
                Playout::Missing { next: None }
            } else {
                Playout::Empty
            };
        }

        let over_max = delay > self.max_us;
        if over_max || delay > self.target_us + self.frame_us * 3 / 2 {
            // A silent or lost slot is skipped whenever needed, since that costs nothing
            // audible; a real frame only now and then, or at once above `max_delay`. A skipped
            // frame is dropped as stale by `play_slot`.
            let due = self.due_now();
            let frame_us = self.frame_us;
            let cursor = self.cursor();
            if !due || over_max || cursor.ticks_since_shrink >= SHRINK_INTERVAL {
                cursor.ts += frame_ts;
                cursor.ticks_since_shrink = 0;
                delay -= frame_us;
            }
        }
        self.note_delay(delay);
        let cursor = self.cursor();
        cursor.ticks_since_shrink = cursor.ticks_since_shrink.saturating_add(1);
        self.play_slot()
    }

    /// Whether the packet at the front is the one for the cursor's slot.
    fn due_now(&self) -> bool {
        let Some(Timeline {
            phase: Phase::Playing(cursor),
            ..
        }) = &self.timeline
        else {
            return false;
        };
        self.buffer
            .front()
            .is_some_and(|front| front.ts <= cursor.ts + self.frame_ts / 2)
    }

    fn play_slot(&mut self) -> Playout {
        let half = self.frame_ts / 2;
        let Some(Timeline {
            phase: Phase::Playing(cursor),
            ..
        }) = &mut self.timeline
        else {
            return Playout::Empty;
        };
        // Frames the cursor has moved past (skipped to shrink, or caught up) are dropped.
        while let Some(front) = self.buffer.front() {
            if front.ts >= cursor.ts - half {
                break;
            }
            self.buffer.pop_front();
            self.stats.skipped += 1;
        }
        if self
            .buffer
            .front()
            .is_some_and(|front| front.ts <= cursor.ts + half)
        {
            let entry = self
                .buffer
                .pop_front()
                .expect("the front was just looked at");
            cursor.ts = entry.ts + self.frame_ts;
            cursor.last_played_seq = Some(entry.seq);
            cursor.missing_since_played = 0;
            cursor.concealed_in_a_row = 0;
            cursor.talking = true;
            let shift = entry.seq - cursor.played_highest;
            if shift > 0 {
                cursor.played_mask = if shift >= 64 {
                    0
                } else {
                    cursor.played_mask << shift
                };
                cursor.played_highest = entry.seq;
            }
            let back = cursor.played_highest - entry.seq;
            if (0..64).contains(&back) {
                cursor.played_mask |= 1 << back;
            }
            self.stats.played += 1;
            return Playout::Frame {
                payload: entry.payload,
                timestamp: entry.rtp_ts,
            };
        }
        cursor.ts += self.frame_ts;
        let lost = match self.buffer.front() {
            // A sequence gap means packets were lost; once they are all concealed, the rest of
            // the timestamp gap is the sender's silence.
            Some(front) => {
                let expected = cursor.last_played_seq.map_or(front.seq, |seq| seq + 1);
                front.seq - expected > cursor.missing_since_played
            }
            // Nothing here at all: lost, until it has lasted long enough to be silence.
            None => cursor.talking && cursor.concealed_in_a_row < MAX_CONCEALED,
        };
        if lost {
            cursor.missing_since_played += 1;
            cursor.concealed_in_a_row += 1;
            cursor.talking = true;
            self.stats.missing += 1;
            let next = self
                .buffer
                .front()
                .filter(|front| front.ts <= cursor.ts + half)
                .map(|front| front.payload.clone());
            Playout::Missing { next }
        } else {
            cursor.talking = false;
            cursor.concealed_in_a_row = 0;
            Playout::Empty
        }
    }

    fn cursor(&mut self) -> &mut Cursor {
        match &mut self.timeline {
            Some(Timeline {
                phase: Phase::Playing(cursor),
                ..
            }) => cursor,
            _ => unreachable!("play runs only in the Playing phase"),
        }
    }

    fn note_delay(&mut self, delay: i64) {
        let delay = duration_us(delay);
        self.stats.current_delay = delay;
        self.stats.max_delay_seen = self.stats.max_delay_seen.max(delay);
    }

    fn elapsed(&mut self, now: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(now);
        micros(now.saturating_duration_since(epoch))
    }

    fn ticks(&self, duration: Duration) -> i64 {
        self.clock_rate.saturating_mul(micros(duration)) / 1_000_000
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn duration_us(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

fn ts_to_us(ts: i64, clock_rate: i64) -> i64 {
    ts.saturating_mul(1_000_000) / clock_rate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    fn buffer() -> JitterBuffer {
        JitterBuffer::new(JitterConfig::voice(8000))
    }

    fn payload(n: u32) -> Bytes {
        Bytes::copy_from_slice(&n.to_be_bytes())
    }

    #[test]
    fn pop_before_any_packet_is_empty() {
        let t0 = start();
        let mut jb = buffer();
        assert_eq!(jb.pop(t0), Playout::Empty);
        assert_eq!(
            jb.stats(),
            JitterStats {
                target_delay: Duration::from_millis(20),
                ..JitterStats::default()
            }
        );
    }

    #[test]
    fn in_order_packets_play_in_order_after_the_minimum_delay() {
        let t0 = start();
        let mut jb = buffer();
        let mut played = Vec::new();
        for tick in 0..50u32 {
            let now = t0 + Duration::from_millis(u64::from(tick) * 20);
            jb.push(now, tick as u16, tick * 160, payload(tick));
            if let Playout::Frame { payload, timestamp } = jb.pop(now) {
                assert_eq!(payload, self::payload(timestamp / 160));
                played.push(timestamp / 160);
            }
        }
        assert_eq!(played, (0..played.len() as u32).collect::<Vec<_>>());
        assert!(played.len() >= 48);
        assert_eq!(jb.stats().late_lost, 0);
        assert_eq!(jb.stats().missing, 0);
    }

    #[test]
    fn a_lost_packet_is_missing_with_the_next_one_attached() {
        let t0 = start();
        let mut jb = buffer();
        let mut outputs = Vec::new();
        for tick in 0..10u32 {
            let now = t0 + Duration::from_millis(u64::from(tick) * 20);
            if tick != 5 {
                jb.push(now, tick as u16, tick * 160, payload(tick));
            }
            // Pop 10 ms after the packet so the next one is not here yet, then 30 ms later
            // it is: with a 20 ms delay the missing slot sees packet 6 buffered.
            outputs.push(jb.pop(now + Duration::from_millis(10)));
        }
        let missing: Vec<_> = outputs
            .iter()
            .filter(|out| matches!(out, Playout::Missing { .. }))
            .collect();
        assert_eq!(
            missing,
            [&Playout::Missing {
                next: Some(payload(6))
            }],
            "{outputs:?}"
        );
        assert_eq!(jb.stats().missing, 1);
    }

    #[test]
    fn duplicates_are_counted_and_dropped() {
        let t0 = start();
        let mut jb = buffer();
        jb.push(t0, 7, 0, payload(0));
        jb.push(t0, 7, 0, payload(0));
        assert_eq!(jb.stats().duplicates, 1);
        let later = t0 + Duration::from_millis(40);
        assert!(matches!(jb.pop(later), Playout::Frame { .. }));
        jb.push(later, 7, 0, payload(0));
        assert_eq!(jb.stats().duplicates, 2);
    }

    #[test]
    fn random_input_never_panics_and_stays_bounded() {
        let t0 = start();
        let mut jb = buffer();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for step in 0..20_000u64 {
            let now = t0 + Duration::from_millis(step);
            let r = next();
            jb.push(
                now,
                r as u16,
                (r >> 16) as u32,
                Bytes::from(vec![r as u8; (r >> 48) as usize % 64]),
            );
            if step % 20 == 0 {
                let _ = jb.pop(now);
            }
            assert!(jb.buffer.len() <= jb.capacity());
        }
    }

    #[test]
    fn absurd_configs_are_repaired_not_trusted() {
        let t0 = start();
        for config in [
            JitterConfig {
                clock_rate: 0,
                frame: Duration::ZERO,
                min_delay: Duration::MAX,
                max_delay: Duration::ZERO,
            },
            JitterConfig {
                clock_rate: u32::MAX,
                frame: Duration::MAX,
                min_delay: Duration::ZERO,
                max_delay: Duration::MAX,
            },
        ] {
            let mut jb = JitterBuffer::new(config);
            for tick in 0..50u32 {
                let now = t0 + Duration::from_millis(u64::from(tick) * 20);
                jb.push(now, tick as u16, tick.wrapping_mul(160), payload(tick));
                let _ = jb.pop(now);
            }
            assert!(jb.buffer.len() <= jb.capacity());
        }
    }

    #[test]
    fn an_older_packet_stamped_later_is_discarded() {
        let t0 = start();
        let mut jb = buffer();
        jb.push(t0, 10, 1600, payload(10));
        jb.push(t0, 9, 1600 + 160 * 40, payload(9));
        jb.push(t0, 8, 1_000_000_000, payload(8));
        assert_eq!(jb.stats().discarded, 2);
        assert_eq!(jb.buffer.len(), 1);
    }

    #[test]
    fn a_stalled_caller_catches_up_instead_of_playing_old_audio() {
        let t0 = start();
        let mut jb = buffer();
        for tick in 0..10u32 {
            let now = t0 + Duration::from_millis(u64::from(tick) * 20);
            jb.push(now, tick as u16, tick * 160, payload(tick));
            let _ = jb.pop(now);
        }
        // Two seconds without a pop, packets kept arriving.
        for tick in 10..110u32 {
            let now = t0 + Duration::from_millis(u64::from(tick) * 20);
            jb.push(now, tick as u16, tick * 160, payload(tick));
        }
        let now = t0 + Duration::from_millis(110 * 20);
        let _ = jb.pop(now);
        assert!(
            jb.stats().current_delay <= Duration::from_millis(200),
            "{:?}",
            jb.stats()
        );
    }
}

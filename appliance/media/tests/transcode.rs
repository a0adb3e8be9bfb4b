//! Transcoding end to end with simulated 20 ms ticks: a tone goes in as RTP payloads of one
//! codec, comes out in the other, is decoded by an independent decoder and measured with a
//! Goertzel filter. Loss is seeded, so every run hears the same thing.

use std::time::{Duration, Instant};

use fieldmesh_media::codec::{Codec, Decoder, Encoder};
use fieldmesh_media::transcode::Transcoder;

const FRAME_MS: u64 = 20;
/// Packets arrive 5 ms after they were sent; ticks run 7 ms into each 20 ms period.
const ARRIVAL_US: u64 = 5_000;
const TICK_PHASE_US: u64 = 7_000;
const AMPLITUDE: f64 = 10_000.0;
/// The tone rises and falls three times a second between 30 % and 100 % of `AMPLITUDE`, like
/// syllables. A perfectly steady tone would be wrong input: Opus's voice activity detector
/// learns it as background noise within about two seconds and DTX replaces it with comfort
/// noise, which is what DTX is for.
const SYLLABLES_HZ: f64 = 3.0;

#[allow(
    clippy::disallowed_methods,
    reason = "the one clock reading of the simulation"
)]
fn start() -> Instant {
    Instant::now()
}

#[allow(
    clippy::disallowed_methods,
    reason = "only to report the cost, never to drive the test"
)]
fn wall_clock() -> Instant {
    Instant::now()
}

struct XorShift(u64);

impl XorShift {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn tone(rate: u32, hz: f64, samples: usize, offset: usize) -> Vec<i16> {
    (0..samples)
        .map(|i| {
            let t = (i + offset) as f64 / f64::from(rate);
            let envelope = 0.65 + 0.35 * (2.0 * std::f64::consts::PI * SYLLABLES_HZ * t).sin();
            (AMPLITUDE * envelope * (2.0 * std::f64::consts::PI * hz * t).sin()).round() as i16
        })
        .collect()
}

/// The amplitude of the `hz` component of `pcm` (Goertzel, one bin).
fn goertzel_amplitude(pcm: &[i16], rate: u32, hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in pcm {
        let s = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power.max(0.0).sqrt() / pcm.len() as f64
}

fn rms(pcm: &[i16]) -> f64 {
    let sum: f64 = pcm.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    (sum / pcm.len().max(1) as f64).sqrt()
}

/// The tone's level (RMS of the `hz` component, measured per 20 ms block so the syllable
/// envelope stays inside the filter's bandwidth) and its share of the total power.
fn tone_level(pcm: &[i16], rate: u32, hz: f64) -> (f64, f64) {
    let block = rate as usize / 50;
    let blocks: Vec<&[i16]> = pcm.chunks_exact(block).collect();
    let tone_power: f64 = blocks
        .iter()
        .map(|b| goertzel_amplitude(b, rate, hz).powi(2) / 2.0)
        .sum::<f64>()
        / blocks.len() as f64;
    let total_power: f64 = blocks.iter().map(|b| rms(b).powi(2)).sum::<f64>() / blocks.len() as f64;
    (tone_power.sqrt(), tone_power / total_power)
}

struct Outcome {
    /// Decoded output, one 20 ms frame per tick from the first frame on (a `None` tick is
    /// recorded as a gap and filled with silence).
    pcm: Vec<i16>,
    out_rate: u32,
    /// The PCM that went into the source encoder.
    sent: Vec<i16>,
    in_rate: u32,
    /// Ticks after the first frame that gave no frame while input was still flowing.
    gaps: usize,
    frames: usize,
    markers: usize,
    lost: usize,
    /// Wall time spent in the transcoder's `push` and `poll`.
    spent: Duration,
}

/// Sends `seconds` of a tone at `hz` as `from` packets through a `from`→`to` transcoder.
fn run(from: Codec, to: Codec, hz: f64, seconds: u64, loss: f64, seed: u64) -> Outcome {
    let t0 = start();
    let mut rng = XorShift(seed);
    let mut source = Encoder::new(from).expect("source encoder");
    let mut transcoder = Transcoder::new(from, to).expect("supported pair");
    let mut sink = Decoder::new(to).expect("sink decoder");
    let in_frame = from.frame_samples(20) as usize;
    let out_frame = to.frame_samples(20) as usize;
    let packets = seconds * 1000 / FRAME_MS;

    let mut pcm = Vec::new();
    let mut sent = Vec::new();
    let (mut gaps, mut frames, mut markers, mut lost) = (0, 0, 0, 0);
    let mut started = false;
    let mut spent = Duration::ZERO;
    // Ticks run 300 ms past the last packet so the buffer drains.
    for tick in 0..packets + 15 {
        if tick < packets {
            let frame = tone(from.clock_rate(), hz, in_frame, tick as usize * in_frame);
            sent.extend_from_slice(&frame);
            let payload = source.encode(&frame);
            if rng.unit() < loss {
                lost += 1;
            } else {
                let at = t0 + Duration::from_micros(tick * FRAME_MS * 1000 + ARRIVAL_US);
                let ts = (tick as u32)
                    .wrapping_mul(in_frame as u32)
                    .wrapping_add(0x8000_0000);
                let began = wall_clock();
                transcoder.push(at, (tick as u16).wrapping_add(65_000), ts, &payload);
                spent += began.elapsed();
            }
        }
        let now = t0 + Duration::from_micros(tick * FRAME_MS * 1000 + TICK_PHASE_US);
        let began = wall_clock();
        let polled = transcoder.poll(now);
        spent += began.elapsed();
        match polled {
            Some(frame) => {
                started = true;
                frames += 1;
                markers += usize::from(frame.marker);
                assert_eq!(frame.samples as usize, out_frame);
                let before = pcm.len();
                sink.decode(&frame.payload, &mut pcm)
                    .expect("the transcoder's output decodes");
                assert_eq!(pcm.len() - before, out_frame, "one 20 ms frame per tick");
            }
            None if started && tick < packets => {
                gaps += 1;
                pcm.resize(pcm.len() + out_frame, 0);
            }
            None => {}
        }
    }
    Outcome {
        pcm,
        out_rate: to.clock_rate(),
        sent,
        in_rate: from.clock_rate(),
        gaps,
        frames,
        markers,
        lost,
        spent,
    }
}

impl Outcome {
    /// The output without its first and last 200 ms (start-up and resampler ramp).
    fn middle(&self) -> &[i16] {
        let edge = self.out_rate as usize / 5;
        &self.pcm[edge..self.pcm.len() - edge]
    }

    /// Asserts that `hz` arrives at the level it was sent (±3 dB) and carries more than 90 %
    /// of the output's power.
    fn assert_tone(&self, hz: f64) {
        let edge = self.in_rate as usize / 5;
        let sent = &self.sent[edge..self.sent.len() - edge];
        let (sent_level, _) = tone_level(sent, self.in_rate, hz);
        let (level, share) = tone_level(self.middle(), self.out_rate, hz);
        let level_db = 20.0 * (level / sent_level).log10();
        println!(
            "{hz} Hz: {level_db:+.2} dB, {:.1} % of the power",
            share * 100.0
        );
        assert!(level_db.abs() < 3.0, "{hz} Hz level {level_db:.2} dB");
        assert!(
            share > 0.9,
            "{hz} Hz carries only {:.1} % of the power",
            share * 100.0
        );
    }

    /// The longest run of near-silence (5 ms blocks below -20 dB of the tone) in the middle.
    fn longest_silence_ms(&self) -> usize {
        let block = self.out_rate as usize / 200;
        let threshold = AMPLITUDE / std::f64::consts::SQRT_2 / 10.0;
        let (mut longest, mut current) = (0, 0);
        for chunk in self.middle().chunks(block) {
            if rms(chunk) < threshold {
                current += 5;
                longest = longest.max(current);
            } else {
                current = 0;
            }
        }
        longest
    }
}

#[test]
fn pcmu_to_opus_keeps_a_1_khz_tone() {
    let outcome = run(Codec::Pcmu, Codec::Opus, 1000.0, 3, 0.0, 1);
    assert_eq!(outcome.gaps, 0);
    assert_eq!(outcome.markers, 1, "one talkspurt, one marker");
    assert!(outcome.frames >= 148, "{} frames", outcome.frames);
    outcome.assert_tone(1000.0);
}

#[test]
fn opus_to_pcmu_keeps_a_2_khz_tone() {
    let outcome = run(Codec::Opus, Codec::Pcmu, 2000.0, 3, 0.0, 1);
    assert_eq!(outcome.gaps, 0);
    assert_eq!(outcome.markers, 1);
    outcome.assert_tone(2000.0);
}

#[test]
fn pcma_to_pcmu_keeps_a_1_khz_tone() {
    let outcome = run(Codec::Pcma, Codec::Pcmu, 1000.0, 2, 0.0, 1);
    assert_eq!(outcome.gaps, 0);
    outcome.assert_tone(1000.0);
}

#[test]
fn three_percent_loss_into_opus_leaves_no_gap() {
    let outcome = run(Codec::Pcmu, Codec::Opus, 1000.0, 10, 0.03, 0xC0DEC);
    assert!(
        outcome.lost >= 5,
        "the seed loses packets: {}",
        outcome.lost
    );
    assert_eq!(outcome.gaps, 0, "every tick after the start gives a frame");
    assert_eq!(outcome.markers, 1);
    let silence = outcome.longest_silence_ms();
    println!(
        "{} packets lost, longest near-silence {silence} ms",
        outcome.lost
    );
    assert!(silence <= 60, "{silence} ms of near-silence");
    outcome.assert_tone(1000.0);
}

#[test]
fn three_percent_loss_out_of_opus_leaves_no_gap() {
    let outcome = run(Codec::Opus, Codec::Pcmu, 2000.0, 10, 0.03, 0xFEC);
    assert!(
        outcome.lost >= 5,
        "the seed loses packets: {}",
        outcome.lost
    );
    assert_eq!(outcome.gaps, 0, "every tick after the start gives a frame");
    let silence = outcome.longest_silence_ms();
    println!(
        "{} packets lost, longest near-silence {silence} ms",
        outcome.lost
    );
    assert!(silence <= 60, "{silence} ms of near-silence");
    outcome.assert_tone(2000.0);
}

/// Prints what one transcoded 20 ms frame costs; never asserted, since it depends on the
/// machine and the build profile. `cargo test --release -p fieldmesh-media --test transcode
/// -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a check"]
fn print_microseconds_per_transcoded_frame() {
    for (from, to, hz) in [
        (Codec::Pcmu, Codec::Opus, 1000.0),
        (Codec::Opus, Codec::Pcmu, 2000.0),
        (Codec::Pcmu, Codec::Pcma, 1000.0),
    ] {
        let outcome = run(from, to, hz, 20, 0.0, 1);
        println!(
            "{from}->{to}: {:.0} µs per 20 ms frame",
            outcome.spent.as_secs_f64() * 1e6 / outcome.frames as f64
        );
    }
}

//! One direction of a transcoded leg: RTP payloads in one codec go in as they arrive, and one
//! frame in another codec comes out per 20 ms tick, sans-IO like the rest of the crate.
//!
//! The chain is jitter buffer → decoder (or concealment) → resampler → encoder. The jitter
//! buffer sits before the decoder because concealment needs to know a packet is missing, and
//! Opus FEC needs the *next* packet (RFC 6716 §2.1.7); a relay that only forwards bytes would
//! not need it. Resampling between 8 and 48 kHz is rubato's FFT resampler with a fixed ratio
//! and fixed 20 ms chunks, whose filter state carries across frames so frame edges do not
//! click.

use std::time::Instant;

use bytes::Bytes;
use rubato::{FftFixedInOut, Resampler as _};

use crate::codec::{Codec, Decoder, Encoder};
use crate::error::MediaError;
use crate::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout};

/// One encoded frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The RTP payload in the output codec.
    pub payload: Vec<u8>,
    /// Duration in the output codec's clock units: the RTP timestamp step to the next frame
    /// (RFC 3550 §5.1), 160 for 20 ms of G.711 and 960 for 20 ms of Opus.
    pub samples: u32,
    /// Set on the first frame after silence or at the start: the RTP marker bit of a
    /// talkspurt's first packet (RFC 3551 §4.1).
    pub marker: bool,
}

/// Decoded PCM kept beyond one frame (when packets are longer than a tick): at most 120 ms,
/// the longest Opus packet.
const MAX_PENDING_FRAMES: usize = 6;

/// Transcodes one direction of a leg; see the module documentation.
pub struct Transcoder {
    to: Codec,
    jitter: JitterBuffer,
    decoder: Decoder,
    encoder: Encoder,
    resampler: Option<Resampler>,
    /// Decoded PCM at the input rate not yet encoded.
    decoded: Vec<i16>,
    /// PCM at the output rate for the frame being encoded.
    resampled: Vec<i16>,
    frame_in: usize,
    frame_out: usize,
    /// Whether the previous tick produced a frame (so this one is not a talkspurt's first).
    talking: bool,
}

impl Transcoder {
    /// A transcoder from `from` to `to` with 20 ms frames and a 20–200 ms jitter buffer.
    pub fn new(from: Codec, to: Codec) -> Result<Transcoder, MediaError> {
        Transcoder::with_jitter(from, to, JitterConfig::voice(from.clock_rate()))
    }

    /// Like [`Transcoder::new`] with the jitter buffer's delays and frame (the ptime) chosen
    /// by the caller. The frame must be a legal Opus frame (10, 20, 40 or 60 ms) when either
    /// side is Opus; the clock rate in `jitter` is ignored in favour of `from`'s.
    pub fn with_jitter(
        from: Codec,
        to: Codec,
        jitter: JitterConfig,
    ) -> Result<Transcoder, MediaError> {
        let ptime_ms = u32::try_from(jitter.frame.as_millis()).unwrap_or(20).max(1);
        let frame_in = samples(from, ptime_ms);
        let frame_out = samples(to, ptime_ms);
        let resampler = if from.clock_rate() == to.clock_rate() {
            None
        } else {
            Some(Resampler::new(
                from.clock_rate(),
                to.clock_rate(),
                frame_in,
                frame_out,
            )?)
        };
        Ok(Transcoder {
            to,
            jitter: JitterBuffer::new(JitterConfig {
                clock_rate: from.clock_rate(),
                ..jitter
            }),
            decoder: Decoder::new(from)?,
            encoder: Encoder::new(to)?,
            resampler,
            decoded: Vec::with_capacity(frame_in * (MAX_PENDING_FRAMES + 1)),
            resampled: Vec::with_capacity(frame_out),
            frame_in,
            frame_out,
            talking: false,
        })
    }

    /// Feeds one received RTP payload in the input codec. Call it as each packet arrives.
    pub fn push(&mut self, now: Instant, seq: u16, timestamp: u32, payload: &[u8]) {
        self.jitter
            .push(now, seq, timestamp, Bytes::copy_from_slice(payload));
    }

    /// The frame to send for the tick at `now`. Call it once per frame duration (every 20 ms);
    /// `None` means send nothing this tick: nothing has arrived yet, or the sender is silent.
    pub fn poll(&mut self, now: Instant) -> Option<Frame> {
        match self.jitter.pop(now) {
            Playout::Frame { payload, .. } => {
                if self.decoder.decode(&payload, &mut self.decoded).is_err() {
                    // A corrupt packet is treated as a lost one.
                    self.decoder.conceal(&mut self.decoded, None);
                }
            }
            Playout::Missing { next } => {
                self.decoder.conceal(&mut self.decoded, next.as_deref());
            }
            // Longer packets than ticks leave whole frames behind; play those out.
            Playout::Empty if self.decoded.len() >= self.frame_in => {}
            Playout::Empty => {
                self.decoded.clear();
                self.talking = false;
                return None;
            }
        }
        // A packet shorter than a tick is padded with silence; a backlog beyond the longest
        // packet is dropped from the front, so memory and delay stay bounded.
        if self.decoded.len() < self.frame_in {
            self.decoded.resize(self.frame_in, 0);
        }
        let limit = self.frame_in * MAX_PENDING_FRAMES;
        if self.decoded.len() > limit {
            let excess = self.decoded.len() - limit;
            self.decoded.drain(..excess);
        }

        self.resampled.clear();
        match &mut self.resampler {
            Some(resampler) => {
                resampler.process(&self.decoded[..self.frame_in], &mut self.resampled)
            }
            None => self
                .resampled
                .extend_from_slice(&self.decoded[..self.frame_in]),
        }
        self.resampled.resize(self.frame_out, 0);
        self.decoded.drain(..self.frame_in);

        let marker = !self.talking;
        self.talking = true;
        Some(Frame {
            payload: self.encoder.encode(&self.resampled),
            samples: u32::try_from(self.frame_out).unwrap_or(u32::MAX),
            marker,
        })
    }

    /// Turns the output encoder's discontinuous transmission on or off (Opus only; it is on
    /// by default). A recording turns it off: DTX would store a steady tone as comfort noise.
    pub fn set_dtx(&mut self, on: bool) {
        self.encoder.set_dtx(on);
    }

    /// The output codec.
    pub fn output(&self) -> Codec {
        self.to
    }

    /// The jitter buffer's counters.
    pub fn stats(&self) -> JitterStats {
        self.jitter.stats()
    }
}

fn samples(codec: Codec, ptime_ms: u32) -> usize {
    usize::try_from(codec.frame_samples(ptime_ms)).unwrap_or(usize::MAX)
}

/// rubato's synchronous FFT resampler for mono i16, with buffers allocated once.
pub(crate) struct Resampler {
    inner: FftFixedInOut<f32>,
    input: Vec<Vec<f32>>,
    output: Vec<Vec<f32>>,
}

impl Resampler {
    pub(crate) fn new(
        from: u32,
        to: u32,
        chunk_in: usize,
        chunk_out: usize,
    ) -> Result<Resampler, MediaError> {
        let error = |reason: String| MediaError::Resampler { from, to, reason };
        let rate = |hz: u32| usize::try_from(hz).unwrap_or(usize::MAX);
        let inner = FftFixedInOut::<f32>::new(rate(from), rate(to), chunk_in, 1)
            .map_err(|e| error(e.to_string()))?;
        if inner.input_frames_next() != chunk_in || inner.output_frames_next() != chunk_out {
            return Err(error(format!(
                "wants chunks of {} -> {}, not {chunk_in} -> {chunk_out}",
                inner.input_frames_next(),
                inner.output_frames_next()
            )));
        }
        let input = vec![Vec::with_capacity(chunk_in)];
        let output = inner.output_buffer_allocate(true);
        Ok(Resampler {
            inner,
            input,
            output,
        })
    }

    /// Appends the resampled `pcm` (exactly one input chunk) to `out`.
    pub(crate) fn process(&mut self, pcm: &[i16], out: &mut Vec<i16>) {
        let input = &mut self.input[0];
        input.clear();
        input.extend(pcm.iter().map(|&s| f32::from(s) / 32768.0));
        match self
            .inner
            .process_into_buffer(&self.input, &mut self.output, None)
        {
            Ok((_, written)) => {
                let written = written.min(self.output[0].len());
                out.extend(self.output[0][..written].iter().map(|&s| to_i16(s)));
            }
            Err(error) => {
                // Cannot happen with the chunk sizes checked in `new`; silence beats a panic.
                tracing::warn!(%error, "resampler refused a chunk");
            }
        }
    }
}

fn to_i16(sample: f32) -> i16 {
    // `as` saturates at the i16 range, and NaN becomes 0.
    (sample * 32768.0).round() as i16
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn start() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    #[test]
    fn every_pair_of_codecs_builds() {
        for from in [Codec::Pcmu, Codec::Pcma, Codec::Opus] {
            for to in [Codec::Pcmu, Codec::Pcma, Codec::Opus] {
                let transcoder = Transcoder::new(from, to).expect("all pairs are supported");
                assert_eq!(transcoder.output(), to);
            }
        }
    }

    #[test]
    fn nothing_comes_out_before_anything_went_in() {
        let t0 = start();
        let mut transcoder = Transcoder::new(Codec::Pcmu, Codec::Opus).expect("supported");
        for tick in 0..5 {
            assert_eq!(transcoder.poll(t0 + Duration::from_millis(tick * 20)), None);
        }
    }

    #[test]
    fn pcmu_to_pcma_keeps_the_signal_and_marks_the_first_frame() {
        let t0 = start();
        let mut transcoder = Transcoder::new(Codec::Pcmu, Codec::Pcma).expect("supported");
        let silence_mu = vec![0xFF; 160];
        let mut frames = Vec::new();
        for tick in 0..10u16 {
            let now = t0 + Duration::from_millis(u64::from(tick) * 20);
            transcoder.push(now, tick, u32::from(tick) * 160, &silence_mu);
            frames.extend(transcoder.poll(now));
        }
        assert!(frames.len() >= 8);
        assert!(frames[0].marker);
        assert!(frames[1..].iter().all(|f| !f.marker && f.samples == 160));
        assert!(
            frames.iter().all(|f| f.payload == vec![0xD5; 160]),
            "µ-law silence is A-law silence"
        );
    }

    #[test]
    fn garbage_payloads_still_give_one_frame_per_tick() {
        let t0 = start();
        let mut transcoder = Transcoder::new(Codec::Opus, Codec::Pcmu).expect("supported");
        let mut produced = 0;
        for tick in 0..20u16 {
            let now = t0 + Duration::from_millis(u64::from(tick) * 20);
            let garbage = vec![tick as u8 ^ 0xA5; usize::from(tick) * 7];
            transcoder.push(now, tick, u32::from(tick) * 960, &garbage);
            if let Some(frame) = transcoder.poll(now) {
                assert_eq!(frame.payload.len(), 160);
                produced += 1;
            }
        }
        assert!(produced >= 18);
    }
}

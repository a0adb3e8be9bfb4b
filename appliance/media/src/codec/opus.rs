//! Opus (RFC 6716) over RTP (RFC 7587), mono at 48 kHz, tuned for speech over a lossy mesh.
//!
//! The SDP says `opus/48000/2` (RFC 7587 §7 requires it), but we decode with one channel:
//! libopus downmixes a stereo stream itself, and everything downstream is mono.

use ::opus as libopus;

use crate::error::MediaError;

/// Opus always runs at 48 kHz on the wire (RFC 7587 §4.1); we never ask libopus for less.
const SAMPLE_RATE: u32 = 48000;
/// The longest Opus packet: 120 ms at 48 kHz (RFC 6716 §3.2.5).
const MAX_PACKET_SAMPLES: usize = 5760;
/// 20 ms, the frame size before the first packet told us otherwise.
const DEFAULT_FRAME: usize = 960;
/// Frame sizes libopus encodes, in samples at 48 kHz: 2.5, 5, 10, 20, 40 and 60 ms.
const LEGAL_FRAMES: [usize; 6] = [120, 240, 480, 960, 1920, 2880];
/// Enough for any packet at our bitrate; libopus caps packets at 1275 bytes per frame.
const MAX_PAYLOAD: usize = 1500;
/// ~24 kbit/s gives wideband speech with room for the in-band FEC copy.
const BITRATE: i32 = 24_000;
/// Middle complexity: the appliance is a small ARM board that may transcode several calls.
const COMPLEXITY: i32 = 5;
/// Expected loss on the mesh, which makes libopus spend bits on FEC (RFC 6716 §2.1.7).
const EXPECTED_LOSS_PERCENT: i32 = 8;

/// An Opus decoder for one stream, remembering the last frame size so concealment produces
/// frames of the same length.
pub struct Decoder {
    inner: libopus::Decoder,
    /// Samples per frame of the last decoded packet: what a lost packet most likely held.
    frame: usize,
    /// Scratch space for one packet, reused so decoding does not allocate per frame.
    scratch: Vec<i16>,
}

impl Decoder {
    /// A 48 kHz mono decoder.
    pub fn new() -> Result<Decoder, MediaError> {
        Ok(Decoder {
            inner: libopus::Decoder::new(SAMPLE_RATE, libopus::Channels::Mono)?,
            frame: DEFAULT_FRAME,
            scratch: vec![0; MAX_PACKET_SAMPLES],
        })
    }

    /// Appends the PCM of one packet and returns how many samples it appended. libopus checks
    /// the packet's structure (RFC 6716 §3.4), so garbage is an error, never a crash.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, MediaError> {
        if payload.is_empty() {
            // An empty payload would mean "lost" to libopus; on the wire it is malformed.
            return Err(malformed(payload));
        }
        let samples = self
            .inner
            .decode(payload, &mut self.scratch, false)
            .map_err(|_| malformed(payload))?;
        let samples = samples.min(self.scratch.len());
        out.extend_from_slice(&self.scratch[..samples]);
        if LEGAL_FRAMES.contains(&samples) {
            self.frame = samples;
        }
        Ok(samples)
    }

    /// Appends one frame standing in for a lost packet: the in-band FEC copy carried in
    /// `next` when there is one (RFC 6716 §2.1.7), else libopus's own concealment (which
    /// fades into comfort noise), else silence if libopus refuses both.
    pub fn conceal(&mut self, out: &mut Vec<i16>, next: Option<&[u8]>) -> usize {
        // For FEC and PLC libopus produces exactly as many samples as the buffer holds, which
        // must be a multiple of 2.5 ms; `self.frame` always is.
        let frame = self.frame;
        let buffer = &mut self.scratch[..frame];
        let recovered = next
            .filter(|packet| !packet.is_empty())
            .and_then(|packet| self.inner.decode(packet, buffer, true).ok())
            .or_else(|| self.inner.decode(&[], buffer, false).ok());
        match recovered {
            Some(samples) => {
                let samples = samples.min(frame);
                out.extend_from_slice(&buffer[..samples]);
                out.resize(out.len() + (frame - samples), 0);
            }
            None => out.resize(out.len() + frame, 0),
        }
        frame
    }
}

fn malformed(payload: &[u8]) -> MediaError {
    MediaError::MalformedPayload {
        codec: "opus",
        len: payload.len(),
    }
}

/// An Opus encoder for one stream: 48 kHz mono VoIP mode with in-band FEC and DTX.
pub struct Encoder {
    inner: libopus::Encoder,
    /// Zero-padded copy of a frame whose length libopus would refuse.
    padded: Vec<i16>,
    /// Output buffer, reused; the returned payload is copied out of it.
    buffer: Vec<u8>,
}

impl Encoder {
    /// Configured for speech over a lossy mesh: `Voip` favours intelligibility, in-band FEC
    /// lets the receiver rebuild a lost frame from the next packet, DTX sends almost nothing
    /// during silence (RFC 7587 §3.1.3). DTX has a price for non-speech: libopus's voice
    /// activity detector takes a perfectly steady tone for background noise after about two
    /// seconds and replaces it with comfort noise.
    pub fn new() -> Result<Encoder, MediaError> {
        let mut inner = libopus::Encoder::new(
            SAMPLE_RATE,
            libopus::Channels::Mono,
            libopus::Application::Voip,
        )?;
        inner.set_bitrate(libopus::Bitrate::Bits(BITRATE))?;
        inner.set_complexity(COMPLEXITY)?;
        inner.set_inband_fec(true)?;
        inner.set_packet_loss_perc(EXPECTED_LOSS_PERCENT)?;
        inner.set_dtx(true)?;
        inner.set_signal(libopus::Signal::Voice)?;
        Ok(Encoder {
            inner,
            padded: Vec::with_capacity(LEGAL_FRAMES[LEGAL_FRAMES.len() - 1]),
            buffer: vec![0; MAX_PAYLOAD],
        })
    }

    /// Turns DTX on or off. A failure leaves the setting as it was: libopus only refuses a
    /// bad argument, and a bool cannot be one.
    pub fn set_dtx(&mut self, on: bool) {
        if let Err(error) = self.inner.set_dtx(on) {
            tracing::warn!(%error, "opus: DTX setting refused");
        }
    }

    /// Encodes one frame. A length libopus would refuse is zero-padded up to the next legal
    /// frame size (or cut to 60 ms), since the caller's framing bug must not end the call.
    /// If libopus still fails, the payload is empty and the failure is logged.
    pub fn encode(&mut self, pcm: &[i16]) -> Vec<u8> {
        let input = if LEGAL_FRAMES.contains(&pcm.len()) {
            pcm
        } else {
            let target = LEGAL_FRAMES
                .iter()
                .copied()
                .find(|&legal| legal >= pcm.len())
                .unwrap_or(LEGAL_FRAMES[LEGAL_FRAMES.len() - 1]);
            tracing::debug!(
                samples = pcm.len(),
                target,
                "opus: padding an odd-sized frame"
            );
            self.padded.clear();
            self.padded.extend_from_slice(&pcm[..pcm.len().min(target)]);
            self.padded.resize(target, 0);
            &self.padded
        };
        match self.inner.encode(input, &mut self.buffer) {
            Ok(len) => self.buffer[..len.min(self.buffer.len())].to_vec(),
            Err(error) => {
                tracing::warn!(%error, "opus: encoding failed");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(samples: usize, offset: usize) -> Vec<i16> {
        (0..samples)
            .map(|i| {
                let t = (i + offset) as f32 / SAMPLE_RATE as f32;
                (8000.0 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()) as i16
            })
            .collect()
    }

    #[test]
    fn encoded_frames_decode_to_twenty_ms() {
        let mut encoder = Encoder::new().expect("libopus accepts our settings");
        let mut decoder = Decoder::new().expect("libopus builds a mono decoder");
        let mut out = Vec::new();
        for n in 0..10 {
            let payload = encoder.encode(&tone(960, n * 960));
            assert!(
                !payload.is_empty() && payload.len() < 200,
                "{} bytes",
                payload.len()
            );
            out.clear();
            assert_eq!(
                decoder.decode(&payload, &mut out).expect("our own packet"),
                960
            );
        }
    }

    #[test]
    fn odd_sized_input_is_padded_not_refused() {
        let mut encoder = Encoder::new().expect("libopus accepts our settings");
        let mut decoder = Decoder::new().expect("libopus builds a mono decoder");
        let mut out = Vec::new();
        for (len, expected) in [(900, 960), (0, 120), (10_000, 2880)] {
            let payload = encoder.encode(&tone(len, 0));
            out.clear();
            assert_eq!(
                decoder.decode(&payload, &mut out).expect("padded packet"),
                expected
            );
        }
    }

    #[test]
    fn concealment_uses_fec_and_keeps_the_frame_size() {
        let mut encoder = Encoder::new().expect("libopus accepts our settings");
        let mut decoder = Decoder::new().expect("libopus builds a mono decoder");
        let packets: Vec<Vec<u8>> = (0..20)
            .map(|n| encoder.encode(&tone(960, n * 960)))
            .collect();
        let mut out = Vec::new();
        for packet in &packets[..10] {
            decoder.decode(packet, &mut out).expect("our own packet");
        }
        out.clear();
        assert_eq!(decoder.conceal(&mut out, Some(&packets[11])), 960);
        assert_eq!(out.len(), 960);
        let energy: i64 = out.iter().map(|&s| i64::from(s) * i64::from(s)).sum();
        assert!(energy > 0, "FEC or PLC gives sound, not silence");
        out.clear();
        assert_eq!(decoder.conceal(&mut out, None), 960);
        out.clear();
        assert_eq!(decoder.conceal(&mut out, Some(&[0xFF, 0xFF, 0xFF])), 960);
    }

    #[test]
    fn empty_payload_is_malformed_not_loss() {
        let mut decoder = Decoder::new().expect("libopus builds a mono decoder");
        let mut out = Vec::new();
        assert!(decoder.decode(&[], &mut out).is_err());
        assert!(out.is_empty());
    }
}

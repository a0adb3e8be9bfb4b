//! G.711 µ-law and A-law (ITU-T G.711, RTP payload RFC 3551 §4.5.14): one byte per sample at
//! 8 kHz, so every byte string is a valid payload and decoding cannot fail.
//!
//! Decoding uses two 256-entry tables built at compile time; encoding is the segment search
//! of the reference implementation (Sun's public-domain `g711.c`), which is exact and needs no
//! 64 KiB table. Concealment follows the idea of G.711 Appendix I in its simplest form: repeat
//! the last frame, fading it out over 60 ms, because silence after a lost packet is more
//! audible than a short, quieter echo of the previous 20 ms.

/// The two G.711 companding laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law, used in North America and Japan (PCMU).
    Mu,
    /// A-law, used in Europe and most of the world (PCMA).
    A,
}

/// µ-law's bias: shifts the segment boundaries so that each segment doubles in width.
const MU_BIAS: i32 = 0x84;
/// The largest magnitude µ-law can represent once the bias is added.
const MU_CLIP: i32 = 32635;

/// Compresses one linear sample to µ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut magnitude = i32::from(sample);
    let sign: u8 = if magnitude < 0 {
        magnitude = -magnitude;
        0x80
    } else {
        0
    };
    magnitude = magnitude.min(MU_CLIP) + MU_BIAS;
    // The segment is the position of the highest set bit above bit 7 (the bias guarantees
    // bit 7 is the lowest possible leading bit).
    let leading = 31 - magnitude.leading_zeros();
    let exponent = leading.saturating_sub(7).min(7);
    let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
    let exponent = u8::try_from(exponent).expect("segment is at most 7");
    let mantissa = u8::try_from(mantissa).expect("masked to four bits");
    !(sign | (exponent << 4) | mantissa)
}

/// Expands one µ-law byte to a linear sample.
pub fn ulaw_to_linear(byte: u8) -> i16 {
    ULAW_TABLE[usize::from(byte)]
}

const fn ulaw_expand(byte: u8) -> i16 {
    let u = !byte;
    let mut t = (((u & 0x0F) as i32) << 3) + MU_BIAS;
    t <<= (u & 0x70) >> 4;
    let value = if u & 0x80 != 0 {
        MU_BIAS - t
    } else {
        t - MU_BIAS
    };
    value as i16
}

/// Compresses one linear sample to A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    // A-law codes 13-bit magnitudes; the reference code drops the three low bits first.
    let mut value = i32::from(sample) >> 3;
    let mask: u8 = if value >= 0 {
        0xD5
    } else {
        value = -value - 1;
        0x55
    };
    // Segment = number of doublings above 0x1F; values past 0xFFF clip to the top code.
    let segment = if value <= 0x1F {
        0
    } else {
        (31 - value.leading_zeros()) - 4
    };
    if segment >= 8 {
        return 0x7F ^ mask;
    }
    let shift = if segment < 2 { 1 } else { segment };
    let mantissa = (value >> shift) & 0x0F;
    let segment = u8::try_from(segment).expect("segment is below 8");
    let mantissa = u8::try_from(mantissa).expect("masked to four bits");
    ((segment << 4) | mantissa) ^ mask
}

/// Expands one A-law byte to a linear sample.
pub fn alaw_to_linear(byte: u8) -> i16 {
    ALAW_TABLE[usize::from(byte)]
}

const fn alaw_expand(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let segment = (a & 0x70) >> 4;
    match segment {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= segment - 1;
        }
    }
    let value = if a & 0x80 != 0 { t } else { -t };
    value as i16
}

static ULAW_TABLE: [i16; 256] = {
    let mut out = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        out[i] = ulaw_expand(i as u8);
        i += 1;
    }
    out
};

static ALAW_TABLE: [i16; 256] = {
    let mut out = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        out[i] = alaw_expand(i as u8);
        i += 1;
    }
    out
};

/// Appends the G.711 encoding of `pcm` to `out`.
pub fn encode(law: Law, pcm: &[i16], out: &mut Vec<u8>) {
    match law {
        Law::Mu => out.extend(pcm.iter().map(|&s| linear_to_ulaw(s))),
        Law::A => out.extend(pcm.iter().map(|&s| linear_to_alaw(s))),
    }
}

/// Appends the linear expansion of `payload` to `out`.
pub fn decode(law: Law, payload: &[u8], out: &mut Vec<i16>) {
    let table = match law {
        Law::Mu => &ULAW_TABLE,
        Law::A => &ALAW_TABLE,
    };
    out.extend(payload.iter().map(|&b| table[usize::from(b)]));
}

/// A frame length to conceal with before any frame arrived: 20 ms, the RFC 3551 default ptime.
const DEFAULT_FRAME: usize = 160;
/// How long concealment lasts before it is silence: 60 ms, as in G.711 Appendix I.
const FADE_SAMPLES: usize = 480;
/// The gain of the first concealed sample. Starting below 1 makes the repetition less buzzy.
const FADE_START: f32 = 0.8;
/// The longest frame kept for repetition: 120 ms, more than any ptime a phone uses.
const MAX_FRAME: usize = 960;

/// A G.711 stream decoder that remembers the last frame for concealment.
pub struct Decoder {
    law: Law,
    /// The last decoded frame, repeated (faded) when a packet is lost.
    last: Vec<i16>,
    /// Samples concealed since the last real frame; drives the fade.
    concealed: usize,
}

impl Decoder {
    /// A decoder for one stream.
    pub fn new(law: Law) -> Decoder {
        Decoder {
            law,
            last: Vec::with_capacity(MAX_FRAME),
            concealed: 0,
        }
    }

    /// The law this decoder expands.
    pub fn law(&self) -> Law {
        self.law
    }

    /// Appends the samples of `payload` and returns how many; every byte is one sample.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> usize {
        let start = out.len();
        decode(self.law, payload, out);
        self.last.clear();
        let frame = &out[start..];
        let keep = frame.len().min(MAX_FRAME);
        self.last.extend_from_slice(&frame[frame.len() - keep..]);
        self.concealed = 0;
        frame.len()
    }

    /// Appends one frame (the length of the last real one) of the last frame repeated and
    /// fading to silence over 60 ms; after that, silence.
    pub fn conceal(&mut self, out: &mut Vec<i16>) -> usize {
        let len = if self.last.is_empty() {
            DEFAULT_FRAME
        } else {
            self.last.len()
        };
        for i in 0..len {
            let position = self.concealed + i;
            let sample = if position >= FADE_SAMPLES || self.last.is_empty() {
                0
            } else {
                // Positions are below 480, so the casts are exact; |gain| < 1 keeps the
                // product in range.
                let gain = FADE_START * (1.0 - position as f32 / FADE_SAMPLES as f32);
                (f32::from(self.last[i % self.last.len()]) * gain) as i16
            };
            out.push(sample);
        }
        self.concealed = self.concealed.saturating_add(len);
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values_match_g711() {
        // Digital silence, the code points either side of zero and full scale.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        // Segment boundaries from the G.711 µ-law table (bias 132).
        assert_eq!(linear_to_ulaw(-1), 0x7F);
        assert_eq!(ulaw_to_linear(0xEF), 132);
        assert_eq!(linear_to_ulaw(1000), 0xCE);
        assert_eq!(ulaw_to_linear(0xCE), 988);
    }

    #[test]
    fn alaw_known_values_match_g711() {
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_alaw(1000), 0xFA);
        assert_eq!(alaw_to_linear(0xFA), 1008);
    }

    #[test]
    fn every_code_survives_expand_then_compress() {
        for byte in 0..=255u8 {
            assert_eq!(
                linear_to_ulaw(ulaw_to_linear(byte)),
                fold_ulaw_zero(byte),
                "µ {byte:#04x}"
            );
            assert_eq!(linear_to_alaw(alaw_to_linear(byte)), byte, "A {byte:#04x}");
        }
    }

    /// µ-law has two zeros (0x7F and 0xFF); compressing 0 always gives 0xFF.
    fn fold_ulaw_zero(byte: u8) -> u8 {
        if byte == 0x7F { 0xFF } else { byte }
    }

    #[test]
    fn round_trip_error_stays_within_the_segment_step() {
        for sample in (i16::MIN..=i16::MAX).step_by(7) {
            let value = i32::from(sample);
            let mu = i32::from(ulaw_to_linear(linear_to_ulaw(sample)));
            let a = i32::from(alaw_to_linear(linear_to_alaw(sample)));
            // Half the widest step (1024 for µ-law, 1024 for A-law) plus clipping at the top.
            assert!((mu - value).abs() <= 1024 + 700, "µ {sample} -> {mu}");
            assert!((a - value).abs() <= 1024 + 600, "A {sample} -> {a}");
            // Relative error is what companding promises: under ~7 % above the linear segment.
            if value.abs() > 256 && value.abs() < 32000 {
                assert!(
                    (mu - value).abs() * 100 <= value.abs() * 7,
                    "µ {sample} -> {mu}"
                );
                assert!(
                    (a - value).abs() * 100 <= value.abs() * 7,
                    "A {sample} -> {a}"
                );
            }
        }
    }

    #[test]
    fn concealment_repeats_then_fades_to_silence() {
        let mut decoder = Decoder::new(Law::Mu);
        let mut out = Vec::new();
        let frame: Vec<u8> = (0..160)
            .map(|i| linear_to_ulaw(if i % 2 == 0 { 8000 } else { -8000 }))
            .collect();
        assert_eq!(decoder.decode(&frame, &mut out), 160);
        let level = |s: &[i16]| s.iter().map(|&x| i32::from(x).abs()).max().unwrap_or(0);
        let full = level(&out);
        out.clear();
        assert_eq!(decoder.conceal(&mut out), 160);
        let first = level(&out);
        assert!(
            first > full / 2 && first < full,
            "first concealed frame is quieter: {first} vs {full}"
        );
        for _ in 0..2 {
            out.clear();
            decoder.conceal(&mut out);
        }
        out.clear();
        decoder.conceal(&mut out);
        assert_eq!(level(&out), 0, "silence after 60 ms");
        // A real frame ends concealment.
        out.clear();
        decoder.decode(&frame, &mut out);
        out.clear();
        decoder.conceal(&mut out);
        assert!(level(&out) > full / 2);
    }

    #[test]
    fn concealment_before_any_frame_is_twenty_ms_of_silence() {
        let mut decoder = Decoder::new(Law::A);
        let mut out = Vec::new();
        assert_eq!(decoder.conceal(&mut out), 160);
        assert!(out.iter().all(|&s| s == 0));
    }
}

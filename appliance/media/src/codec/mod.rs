//! The audio codecs the appliance speaks: G.711 µ-law and A-law for the phones that know nothing
//! else (RFC 3551 §4.5.14), and Opus for the mesh, where bandwidth and loss matter (RFC 6716,
//! RTP payload format RFC 7587).
//!
//! [`Decoder`] and [`Encoder`] hide which codec is behind them, so a leg that transcodes holds one
//! of each and never matches on the codec per frame. Both work on mono i16 PCM at the codec's
//! own clock rate (8 kHz for G.711, 48 kHz for Opus); resampling between them is
//! [`crate::transcode`]'s job.

pub mod g711;
pub mod opus;

use crate::error::MediaError;

/// A codec named by an SDP `a=rtpmap` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law, static payload type 0 (RFC 3551 §6).
    Pcmu,
    /// G.711 A-law, static payload type 8 (RFC 3551 §6).
    Pcma,
    /// Opus, always a dynamic payload type (RFC 7587 §7).
    Opus,
}

impl Codec {
    /// The RTP clock rate. Opus is always 48000 on the wire whatever the audio bandwidth, so
    /// timestamps stay comparable across mode switches (RFC 7587 §4.1).
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 48000,
        }
    }

    /// The encoding name as written in `a=rtpmap` (RFC 3551 §6, RFC 7587 §7).
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::Opus => "opus",
        }
    }

    /// The channel count to write after the clock rate in `a=rtpmap`. RFC 7587 §7 requires
    /// `opus/48000/2` even for mono streams; G.711 omits it (one channel).
    pub fn channels_in_sdp(self) -> Option<u8> {
        match self {
            Codec::Pcmu | Codec::Pcma => None,
            Codec::Opus => Some(2),
        }
    }

    /// The static payload type, which lets a peer omit the rtpmap line (RFC 3551 §6).
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::Opus => None,
        }
    }

    /// Recognises an rtpmap encoding name and clock rate. Names are case-insensitive
    /// (RFC 4855 §3); a known name at another rate is a different format and is refused.
    pub fn from_rtpmap(name: &str, rate: u32) -> Option<Codec> {
        [Codec::Pcmu, Codec::Pcma, Codec::Opus]
            .into_iter()
            .find(|codec| {
                codec.encoding_name().eq_ignore_ascii_case(name) && codec.clock_rate() == rate
            })
    }

    /// Samples (per channel, in RTP clock units) in a packet of `ptime_ms` milliseconds, which
    /// is also the RTP timestamp step between packets (RFC 3550 §5.1).
    pub fn frame_samples(self, ptime_ms: u32) -> u32 {
        let samples = u64::from(self.clock_rate()) * u64::from(ptime_ms) / 1000;
        u32::try_from(samples).unwrap_or(u32::MAX)
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.encoding_name())
    }
}

/// Turns RTP payloads of one codec into mono PCM at the codec's clock rate, and makes up audio
/// for packets that never came.
pub struct Decoder {
    inner: DecoderInner,
}

enum DecoderInner {
    G711(g711::Decoder),
    Opus(opus::Decoder),
}

impl Decoder {
    /// A fresh decoder: one per received stream, because Opus and the G.711 concealment keep
    /// state from frame to frame.
    pub fn new(codec: Codec) -> Result<Decoder, MediaError> {
        let inner = match codec {
            Codec::Pcmu => DecoderInner::G711(g711::Decoder::new(g711::Law::Mu)),
            Codec::Pcma => DecoderInner::G711(g711::Decoder::new(g711::Law::A)),
            Codec::Opus => DecoderInner::Opus(opus::Decoder::new()?),
        };
        Ok(Decoder { inner })
    }

    /// The codec this decoder reads.
    pub fn codec(&self) -> Codec {
        match &self.inner {
            DecoderInner::G711(d) => match d.law() {
                g711::Law::Mu => Codec::Pcmu,
                g711::Law::A => Codec::Pcma,
            },
            DecoderInner::Opus(_) => Codec::Opus,
        }
    }

    /// Appends the PCM in `payload` to `out` and returns how many samples it appended. A
    /// malformed payload appends nothing and is an error; the caller usually conceals instead.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<usize, MediaError> {
        match &mut self.inner {
            DecoderInner::G711(d) => Ok(d.decode(payload, out)),
            DecoderInner::Opus(d) => d.decode(payload, out),
        }
    }

    /// Appends one frame of made-up audio for a packet that was lost or came too late, and
    /// returns how many samples it appended. `next` is the packet after the lost one when the
    /// jitter buffer already holds it: Opus recovers the lost frame from the in-band FEC copy
    /// inside it (RFC 6716 §2.1.7); G.711 has none and ignores it.
    pub fn conceal(&mut self, out: &mut Vec<i16>, next: Option<&[u8]>) -> usize {
        match &mut self.inner {
            DecoderInner::G711(d) => d.conceal(out),
            DecoderInner::Opus(d) => d.conceal(out, next),
        }
    }
}

/// Turns mono PCM at the codec's clock rate into RTP payloads of one codec.
pub struct Encoder {
    inner: EncoderInner,
}

enum EncoderInner {
    G711(g711::Law),
    Opus(opus::Encoder),
}

impl Encoder {
    /// A fresh encoder, one per sent stream: Opus predicts from the previous frames.
    pub fn new(codec: Codec) -> Result<Encoder, MediaError> {
        let inner = match codec {
            Codec::Pcmu => EncoderInner::G711(g711::Law::Mu),
            Codec::Pcma => EncoderInner::G711(g711::Law::A),
            Codec::Opus => EncoderInner::Opus(opus::Encoder::new()?),
        };
        Ok(Encoder { inner })
    }

    /// The codec this encoder writes.
    pub fn codec(&self) -> Codec {
        match &self.inner {
            EncoderInner::G711(g711::Law::Mu) => Codec::Pcmu,
            EncoderInner::G711(g711::Law::A) => Codec::Pcma,
            EncoderInner::Opus(_) => Codec::Opus,
        }
    }

    /// Turns Opus's discontinuous transmission on or off; G.711 has none, so this does
    /// nothing there.
    pub fn set_dtx(&mut self, on: bool) {
        if let EncoderInner::Opus(e) = &mut self.inner {
            e.set_dtx(on);
        }
    }

    /// Encodes one packet's worth of PCM. For Opus, `pcm` should be a legal Opus frame
    /// (2.5, 5, 10, 20, 40 or 60 ms at 48 kHz); any other length is zero-padded or cut to the
    /// nearest legal one rather than failing, because a short frame must not stop a call.
    pub fn encode(&mut self, pcm: &[i16]) -> Vec<u8> {
        match &mut self.inner {
            EncoderInner::G711(law) => {
                let mut out = Vec::with_capacity(pcm.len());
                g711::encode(*law, pcm, &mut out);
                out
            }
            EncoderInner::Opus(e) => e.encode(pcm),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_table_matches_rfc_3551_and_7587() {
        assert_eq!(Codec::Pcmu.clock_rate(), 8000);
        assert_eq!(Codec::Pcma.clock_rate(), 8000);
        assert_eq!(Codec::Opus.clock_rate(), 48000);
        assert_eq!(Codec::Pcmu.static_payload_type(), Some(0));
        assert_eq!(Codec::Pcma.static_payload_type(), Some(8));
        assert_eq!(Codec::Opus.static_payload_type(), None);
        assert_eq!(Codec::Opus.channels_in_sdp(), Some(2));
        assert_eq!(Codec::Pcmu.channels_in_sdp(), None);
        assert_eq!(Codec::Pcmu.frame_samples(20), 160);
        assert_eq!(Codec::Opus.frame_samples(20), 960);
        assert_eq!(Codec::Opus.frame_samples(u32::MAX), u32::MAX);
    }

    #[test]
    fn rtpmap_names_are_case_insensitive_and_rate_checked() {
        assert_eq!(Codec::from_rtpmap("pcmu", 8000), Some(Codec::Pcmu));
        assert_eq!(Codec::from_rtpmap("PCMA", 8000), Some(Codec::Pcma));
        assert_eq!(Codec::from_rtpmap("OPUS", 48000), Some(Codec::Opus));
        assert_eq!(Codec::from_rtpmap("opus", 8000), None);
        assert_eq!(Codec::from_rtpmap("G722", 8000), None);
        assert_eq!(Codec::from_rtpmap("", 0), None);
    }

    #[test]
    fn decoders_and_encoders_report_their_codec() {
        for codec in [Codec::Pcmu, Codec::Pcma, Codec::Opus] {
            let decoder = Decoder::new(codec).expect("every codec has a decoder");
            let encoder = Encoder::new(codec).expect("every codec has an encoder");
            assert_eq!(decoder.codec(), codec);
            assert_eq!(encoder.codec(), codec);
        }
    }

    /// A tiny xorshift, so the fuzz-ish tests need no rand dependency and repeat exactly.
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
    fn random_payloads_never_panic_any_decoder() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for codec in [Codec::Pcmu, Codec::Pcma, Codec::Opus] {
            let mut decoder = Decoder::new(codec).expect("every codec has a decoder");
            let mut out = Vec::new();
            for round in 0..2000 {
                let len = usize::try_from(rng.next() % 1600).expect("below 1600");
                let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                out.clear();
                let _ = decoder.decode(&payload, &mut out);
                assert!(out.len() <= 5760, "{codec}: at most 120 ms per packet");
                if round % 7 == 0 {
                    out.clear();
                    let appended = decoder.conceal(&mut out, Some(&payload));
                    assert_eq!(appended, out.len());
                    out.clear();
                    decoder.conceal(&mut out, None);
                }
            }
        }
    }
}

//! Errors of the media plane.
//!
//! An error is bad or impossible input (a codec pair we cannot bridge, a codec state libopus
//! refuses to build); a broken internal invariant is a bug and panics with an `expect` that says
//! why it cannot happen. Malformed network payloads are not errors of this type at the API
//! surface that plays audio: they are concealed like a lost packet, because a call must not
//! stop for one bad datagram.

/// What went wrong in the media plane.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// libopus refused to create or configure an encoder or decoder (RFC 6716).
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    /// rubato could not build a fixed-ratio resampler for this pair of clock rates.
    #[error("resampler for {from} Hz to {to} Hz: {reason}")]
    Resampler {
        /// Input clock rate in Hz.
        from: u32,
        /// Output clock rate in Hz.
        to: u32,
        /// rubato's explanation.
        reason: String,
    },
    /// A payload was not a valid frame of its codec (a corrupt or truncated Opus packet).
    #[error("malformed {codec} payload of {len} bytes")]
    MalformedPayload {
        /// The codec's SDP encoding name.
        codec: &'static str,
        /// Length of the rejected payload.
        len: usize,
    },
    /// A stored voicemail recording is not a valid `FMVM1` container (wrong magic, or a frame
    /// cut short).
    #[error("stored recording: {0}")]
    Recording(&'static str),
}

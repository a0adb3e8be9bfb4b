//! fieldmesh's media plane: the RTP relay that anchors calls crossing between appliances,
//! the SDP rewriting that points phones at it, and the decoded path (jitter buffer, Opus and
//! G.711, resampling) for calls whose two sides share no codec.
//!
//! This crate has no networking code and reads no timestamps from the operating system: the
//! daemon's media driver owns the sockets and feeds [`relay::Relay`] packets and `now`; tests
//! drive the same code with a fake clock.
//!
//! Map: [`rtp`] and [`rtcp`] are packet views; [`sdp`] is offer/answer rewriting over
//! `ezk-sdp-types`; [`relay`] is the machine (sessions, streams, legs, latching, timeouts);
//! [`jitter`], [`codec`] and [`transcode`] are the decoded path; [`dtmf`] re-times RFC 4733
//! events between clock rates; [`quality`] turns RTP/RTCP into loss, jitter, RTT and MOS;
//! [`voicemail`] records messages after a greeting and plays mailboxes back.

pub mod relay;
pub mod rtp;
pub mod sdp;

// BEGIN quality-helper
pub mod quality;
pub mod rtcp;
// END quality-helper

// BEGIN codec-helper
pub mod codec;
pub mod dtmf;
pub mod error;
pub mod jitter;
pub mod transcode;
pub mod voicemail;
// END codec-helper

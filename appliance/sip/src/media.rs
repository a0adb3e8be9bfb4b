//! The media plane as the proxy sees it. Phones on different appliances cannot reach each
//! other, so every SDP body that crosses the appliance (phone side ↔ mesh side) is handed to
//! the relay, which points it at our own ports. The daemon implements [`Media`] over
//! `fieldmesh-media`'s relay; tests use a fake. A call between two phones of the same
//! appliance never crosses, and its SDP stays untouched (media flows directly).

use bytes::Bytes;
use std::net::IpAddr;
use std::time::Instant;

/// Where an SDP body is going.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Toward {
    /// Our address on that side: the SDP will name it.
    pub ip: IpAddr,
    /// The body goes to one of our phones (not to another appliance).
    pub phone: bool,
}

/// A refused SDP body, answered to the sender of the request that carried it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRefusal {
    pub code: u16,
    pub reason: String,
    /// For temporary refusals (no ports): seconds for `Retry-After`.
    pub retry_after: Option<u32>,
}

/// The relay, as the SIP core drives it (synchronously, inside one input).
pub trait Media {
    /// `body` is SDP from the party whose dialog tag is `sender_tag` (the From tag of a
    /// request, the To tag of a response); returns the body to forward instead.
    fn rewrite(
        &mut self,
        now: Instant,
        call_id: &str,
        sender_tag: &str,
        body: &[u8],
        toward: Toward,
    ) -> Result<Bytes, MediaRefusal>;

    /// Answers an offer to the echo service with our SDP.
    fn echo(
        &mut self,
        now: Instant,
        call_id: &str,
        body: &[u8],
        ip: IpAddr,
    ) -> Result<Bytes, MediaRefusal>;

    /// Answers a call diverted to voicemail: the relay plays the greeting, then records the
    /// caller for `mailbox`; the recording comes back to the daemon when the call ends.
    fn record(
        &mut self,
        now: Instant,
        call_id: &str,
        body: &[u8],
        ip: IpAddr,
        mailbox: &str,
        from: &str,
    ) -> Result<Bytes, MediaRefusal>;

    /// Answers a call to the voicemail number: the relay plays `messages` (newest first) and
    /// reports the keys pressed.
    fn play(
        &mut self,
        now: Instant,
        call_id: &str,
        body: &[u8],
        ip: IpAddr,
        messages: &[crate::voicemail::StoredVoicemail],
    ) -> Result<Bytes, MediaRefusal>;

    /// The call ended (BYE, or a final non-2xx to its INVITE): release its media.
    fn end(&mut self, now: Instant, call_id: &str);

    /// Whether media is anchored for this call.
    fn has_call(&self, call_id: &str) -> bool;
}

/// Whether a body is SDP (RFC 3261 §20.15 Content-Type, or no type and an SDP first line).
pub fn is_sdp(content_type: Option<&str>, body: &[u8]) -> bool {
    if body.is_empty() {
        return false;
    }
    match content_type {
        Some(t) => t
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp")),
        None => body.starts_with(b"v=0"),
    }
}

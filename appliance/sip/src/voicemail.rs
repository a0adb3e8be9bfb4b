//! Voicemail as the SIP core sees it: when a call from one of our phones cannot reach its
//! extension (nobody serves it, it is busy, it declines, or nobody answers in time), the
//! appliance answers the call itself and the relay records the caller after a greeting; the
//! voicemail number (`*98`) plays a phone's own mailbox back, driven by DTMF. The audio never
//! passes through this crate's logic: the relay records and plays it, the daemon stores and
//! replicates it, and this module only names what is kept and says who is told (RFC 3842
//! message summaries, in `mwi.rs`).

use bytes::Bytes;

/// One recorded voice message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredVoicemail {
    /// Unique id: deduplicates replicas, and deletions travel by it.
    pub id: String,
    /// The extension it was left for.
    pub aor: String,
    /// The caller's From header value, as it called.
    pub from: String,
    /// When it was recorded (RFC 2822 date, as MESSAGE's Date).
    pub date: String,
    pub duration_ms: u64,
    /// Opus frames in the relay's container (opaque here).
    pub audio: Bytes,
    /// Played to its owner at least once (RFC 3842 "old").
    pub heard: bool,
}

/// What the relay reports while a mailbox is played back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailboxAction {
    /// The owner pressed 7: delete it everywhere.
    Deleted(String),
    /// The owner listened to it (or pressed 9 or #): it is no longer new.
    Heard(String),
}

/// When and how calls go to voicemail.
#[derive(Clone, Debug)]
pub struct VoicemailConfig {
    /// Divert unreachable, busy and unanswered calls to voicemail. Needs the media relay.
    pub enabled: bool,
    /// The number a phone dials to hear its own mailbox.
    pub number: String,
}

impl Default for VoicemailConfig {
    fn default() -> Self {
        VoicemailConfig {
            enabled: true,
            number: "*98".to_string(),
        }
    }
}

/// Final responses from the callee's side that send a call to voicemail: busy everywhere,
/// declined, unavailable, or timed out (a `404` means the extension does not exist: no
/// mailbox to leave a message in).
pub(crate) fn diverts(code: u16) -> bool {
    matches!(code, 408 | 480 | 486 | 600 | 603)
}

/// An RFC 3842 `application/simple-message-summary` body.
pub(crate) fn message_summary(new: u64, old: u64, account: &str) -> String {
    let waiting = if new > 0 { "yes" } else { "no" };
    format!(
        "Messages-Waiting: {waiting}\r\nMessage-Account: {account}\r\nVoice-Message: {new}/{old} (0/0)\r\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_follows_rfc_3842_section_5_2() {
        assert_eq!(
            message_summary(2, 8, "sip:*98@10.42.0.1"),
            "Messages-Waiting: yes\r\nMessage-Account: sip:*98@10.42.0.1\r\nVoice-Message: 2/8 (0/0)\r\n"
        );
        assert!(message_summary(0, 1, "sip:x@y").starts_with("Messages-Waiting: no\r\n"));
    }

    #[test]
    fn only_unreachable_busy_declined_or_unanswered_calls_divert() {
        for code in [408, 480, 486, 600, 603] {
            assert!(diverts(code), "{code}");
        }
        for code in [200, 301, 404, 484, 487, 488, 500, 503] {
            assert!(!diverts(code), "{code}");
        }
    }
}

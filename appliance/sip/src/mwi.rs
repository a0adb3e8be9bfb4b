//! Message waiting (RFC 3842 over RFC 6665): the appliance is the notifier for its phones'
//! mailboxes. A phone's SUBSCRIBE for `message-summary` is answered here, not forked to its
//! own bindings; every mailbox change NOTIFYs the subscriptions of that extension, and phones
//! that never subscribed get an unsolicited NOTIFY, as most PBXs send.
//!
//! Subscriptions live in memory: after a restart the phone's next refresh gets `481` and it
//! subscribes again (RFC 6665 §4.1.2.2), which is what a restarted PBX does too.

use crate::location::{Aor, Target};
use crate::message::{self, Message, Request};
use crate::proxy::BRANCH_PREFIX;
use crate::{Transport, voicemail};
use std::collections::HashMap;
use std::time::Instant;

/// The event package.
pub(crate) const PACKAGE: &str = "message-summary";
/// Subscriptions last at most this long without a refresh (and this is the default).
pub(crate) const MAX_EXPIRES: u32 = 3600;
/// More subscriptions than this are refused: bounded like everything fed by the network.
const MAX_SUBSCRIPTIONS: usize = 4096;

/// One phone's subscription to its mailbox; we are the notifier (UAS of the dialog).
#[derive(Clone, Debug)]
pub(crate) struct Subscription {
    pub(crate) aor: Aor,
    pub(crate) call_id: String,
    /// Where NOTIFYs go: the phone's address, from where the SUBSCRIBE came.
    pub(crate) target: Target,
    /// Request-URI of NOTIFYs: the subscriber's Contact.
    pub(crate) uri: String,
    /// From of our NOTIFYs (the SUBSCRIBE's To, with our tag) and To (its From).
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) cseq: u32,
    pub(crate) expires_at: Instant,
}

/// Whether a request's Event header names the message-summary package.
pub(crate) fn is_message_summary(request: &Request) -> bool {
    request.header(&ezk_sip_types::Name::EVENT).any(|v| {
        v.split(';')
            .next()
            .is_some_and(|p| p.trim().eq_ignore_ascii_case(PACKAGE))
    })
}

/// The Expires a subscriber asked for, capped; `None` if unreadable.
pub(crate) fn requested_expires(request: &Request) -> Option<u32> {
    match request.header(&ezk_sip_types::Name::EXPIRES).next() {
        None => Some(MAX_EXPIRES),
        Some(v) => v.trim().parse::<u32>().ok().map(|e| e.min(MAX_EXPIRES)),
    }
}

/// The subscriptions this appliance serves, keyed by (Call-ID, our tag).
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    by_key: HashMap<(String, String), Subscription>,
}

impl Subscriptions {
    pub(crate) fn get_mut(&mut self, call_id: &str, tag: &str) -> Option<&mut Subscription> {
        self.by_key.get_mut(&(call_id.to_string(), tag.to_string()))
    }

    /// Adds a subscription; `false` when full.
    pub(crate) fn insert(&mut self, tag: String, s: Subscription) -> bool {
        if self.by_key.len() >= MAX_SUBSCRIPTIONS {
            return false;
        }
        self.by_key.insert((s.call_id.clone(), tag), s);
        true
    }

    pub(crate) fn remove(&mut self, call_id: &str, tag: &str) -> Option<Subscription> {
        self.by_key.remove(&(call_id.to_string(), tag.to_string()))
    }

    /// Drops the ones nobody refreshed.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.by_key.retain(|_, s| s.expires_at > now);
    }

    /// Keys of the live subscriptions to `aor`.
    pub(crate) fn of(&self, now: Instant, aor: &Aor) -> Vec<(String, String)> {
        self.by_key
            .iter()
            .filter(|(_, s)| s.aor == *aor && s.expires_at > now)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

impl Subscription {
    /// The next NOTIFY in this dialog with the given summary counts.
    pub(crate) fn notify(
        &mut self,
        now: Instant,
        counts: (u64, u64),
        account: &str,
        random: u64,
    ) -> Option<Request> {
        self.cseq = self.cseq.saturating_add(1);
        let left = self.expires_at.saturating_duration_since(now);
        let state = if left.is_zero() {
            "terminated;reason=timeout".to_string()
        } else {
            format!("active;expires={}", left.as_secs().max(1))
        };
        build_notify(NotifyParts {
            uri: &self.uri,
            target: self.target,
            from: &self.from,
            to: &self.to,
            call_id: &self.call_id,
            cseq: self.cseq,
            state: &state,
            body: &voicemail::message_summary(counts.0, counts.1, account),
            random,
        })
    }
}

/// What a NOTIFY is made of.
pub(crate) struct NotifyParts<'a> {
    pub(crate) uri: &'a str,
    pub(crate) target: Target,
    pub(crate) from: &'a str,
    pub(crate) to: &'a str,
    pub(crate) call_id: &'a str,
    pub(crate) cseq: u32,
    pub(crate) state: &'a str,
    pub(crate) body: &'a str,
    pub(crate) random: u64,
}

/// A NOTIFY for the message-summary package; also used for unsolicited ones (a fresh Call-ID
/// and tags, outside any dialog).
pub(crate) fn build_notify(p: NotifyParts<'_>) -> Option<Request> {
    let transport = match p.target.transport {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
    };
    let text = format!(
        "NOTIFY {uri} SIP/2.0\r\nVia: SIP/2.0/{transport} {local};branch={BRANCH_PREFIX}mwi.{random:016x}\r\n\
         Max-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} NOTIFY\r\n\
         Contact: <sip:{local}>\r\nEvent: {PACKAGE}\r\nSubscription-State: {state}\r\n\
         Content-Type: application/simple-message-summary\r\nContent-Length: {len}\r\n\r\n{body}",
        uri = p.uri,
        local = p.target.local,
        random = p.random,
        from = p.from,
        to = p.to,
        call_id = p.call_id,
        cseq = p.cseq,
        state = p.state,
        len = p.body.len(),
        body = p.body,
    );
    match message::parse(text.as_bytes(), false) {
        Ok(Message::Request(r)) => Some(r),
        _ => {
            tracing::warn!(uri = p.uri, "message-summary NOTIFY did not build");
            None
        }
    }
}
